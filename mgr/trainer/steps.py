"""One training iteration, top to bottom: `plain_step` (base, gda, pcr), `mps_step` (gda-mps,
mgr: the finder's meta step through a one-step lookahead, then the classifier's step) and
`mltp_step` (any method under MLTP). `train_step` draws the batches and picks one. The maths is
in docs/method.md; the meta-gradient engine they share is mgr/meta.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import meta
from ..finder import kl_batch
from ..models.second_order import differentiated_twice
from ..runtime import autocast
from . import distributed
from .state import State

def batches(s: State):
    """A real training batch and a validation batch, sampled on the device (no host sync) from the
    run's own batch generator, so that every method with the same seed sees the same batches."""
    d, B = s.data, s.cfg.batch_size
    i = torch.randint(len(d.y_train), (B,), device=s.device, generator=s.batch_gen)
    return d.x_train[i], d.y_train[i], *validation_batch(s)


def validation_batch(s: State):
    """The finder's validation data: a batch drawn from the split, or the whole split (meta_val
    "full"; "auto", the default, when the split holds at most two batches): on a small split a
    drawn batch only adds noise (measured: docs/method.md#the-signal). The draw is made either way,
    so every setting sees the same training batches."""
    d = s.data
    j = torch.randint(len(d.y_val), (min(s.cfg.batch_size, len(d.y_val)),), device=s.device, generator=s.batch_gen)
    if s.cfg.full_validation(len(d.y_val)):
        return d.x_val, d.y_val
    return d.x_val[j], d.y_val[j]


def mltp_indices(s: State):
    """Indices of MLTP's two disjoint real batches B_i and B_j into the training split. Each step a
    random permutation splits the split into two halves and each batch is drawn (with replacement,
    like `batches`) from its own half: no image is in both, even when the split is smaller than one
    batch (digits 10%: 116 images, batch 128). On the device, no host sync."""
    n, B, gen = len(s.data.y_train), s.cfg.batch_size, s.batch_gen
    perm, half = torch.randperm(n, device=s.device, generator=gen), n // 2
    return (perm[torch.randint(half, (B,), device=s.device, generator=gen)],
            perm[half + torch.randint(n - half, (B,), device=s.device, generator=gen)])


def mltp_batches(s: State):
    """B_i, B_j (disjoint, `mltp_indices`) and a validation batch (used by the finder's MPS step)."""
    d = s.data
    i, j = mltp_indices(s)
    return d.x_train[i], d.y_train[i], d.x_train[j], d.y_train[j], *validation_batch(s)


def latents(s: State, n: int):
    """n latents z ~ N(0, ψ² I) (ψ = latent_psi, 1 by default) and their classes, uniform."""
    z = torch.randn(n, s.G.z_dim, device=s.device)
    if s.cfg.latent_psi != 1:
        z = z * s.cfg.latent_psi
    return z, torch.randint(s.data.num_classes, (n,), device=s.device)  # y uniform over classes


def told(s: State, y: torch.Tensor) -> torch.Tensor:
    """The labels the synthetic CE is told for images generated for classes y: y itself, or with
    syn_label_noise p a class drawn uniformly instead (draws nothing when p is 0, so runs stay paired)."""
    p = s.cfg.syn_label_noise
    if p == 0:
        return y
    swap = torch.rand(len(y), device=y.device) < p
    return torch.where(swap, torch.randint_like(y, s.data.num_classes), y)


@dataclass
class Synthetic:
    z: torch.Tensor  # latents drawn
    z_f: torch.Tensor  # the finder's latents F_φ(z) (z without a finder)
    x: torch.Tensor  # G(z_f, y)
    y: torch.Tensor
    t: list | None  # one draw of T, reused by every evaluation of ℓ_PCR this step


def synthetic(s: State, n: int, through_finder: bool) -> Synthetic | None:
    """n synthetic samples (one per real sample) for a task's loss; None for base. Latents go
    through the finder when there is one, differentiable in φ only if `through_finder`."""
    if not s.cfg.uses_generator:
        return None
    z, y = latents(s, n * s.cfg.syn_per_real)
    with torch.set_grad_enabled(through_finder and s.finder is not None):
        z_f = s.finder(z) if s.finder is not None else z
        x = s.G(z_f, y)
    return Synthetic(z, z_f, x, told(s, y), s.T.draw(x) if s.cfg.synthetic_kind == "pcr" else None)


def synthetic_term(s: State, params: dict, syn: Synthetic | None):
    """The method's synthetic term of C at `params`, before λ (0 for base)."""
    return 0.0 if syn is None else meta.synthetic_loss(s.model, params, syn.x, syn.y, syn.t, s.T, s.cfg.synthetic_kind)


def co_learner_loss(s: State, feature_map, y):
    """The co-learner's CE and accuracy on (looked-ahead) features; (None, None) without one."""
    if s.co_learner is None:
        return None, None
    logits = s.co_learner(feature_map).float()
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


def meta_autocast(s: State):
    """The meta steps' precision: float32 (autocast off, also inside a caller's autocast) unless the run
    asks for bf16, where plain steps use it on CUDA (runtime.autocast)."""
    if s.cfg.meta_precision == "bf16":
        return autocast(s.device)
    return torch.autocast(s.device.type, enabled=False)


def step_with(opt: torch.optim.Optimizer, params, grads) -> None:
    """An optimizer step on gradients taken by hand (torch.autograd.grad in the meta steps),
    detached from any graph they carry; under torchrun, their mean over the ranks."""
    for p, g in zip(params, distributed.all_reduce_mean(g.detach() for g in grads)):
        p.grad = g
    opt.step()


def step_finder(s: State, grads) -> None:
    """The finder's Adam step, at its learning rate for this step (`finder_lr_now`)."""
    for group in s.finder_opt.param_groups:
        group["lr"] = finder_lr_now(s)
    step_with(s.finder_opt, s.finder.parameters(), grads)


def plain_step(s: State, x, y) -> None:
    """base: CE. gda: CE + λ CE(synthetic). pcr: CE + λ ℓ_PCR(synthetic). Uniform latents; the
    finder's (fixed this step) for gda-mps and mgr between meta steps (meta_every > 1)."""
    cfg = s.cfg
    with autocast(s.device):
        ce = F.cross_entropy(s.forward(x), y)
        loss = ce
        if cfg.uses_generator:
            with torch.no_grad():
                z, y_p = latents(s, len(x) * cfg.syn_per_real)
                z_f = z if s.finder is None else s.finder(z)
                x_p = s.G(z_f, y_p)  # syn_per_real per real sample
            params = dict(s.model.named_parameters())
            t = s.T.draw(x_p) if cfg.synthetic_kind == "pcr" else None
            syn = meta.synthetic_loss(s.model, params, x_p, told(s, y_p), t, s.T, cfg.synthetic_kind)
            loss = ce + cfg.lam * syn
            # between meta steps the finder's latents are still watched (the guard) and logged
            finder = {} if s.finder is None else finder_logs(z, z_f)
            s.accumulate(loss, ce=ce, **finder, **{"pcr" if cfg.synthetic_kind == "pcr" else "syn_ce": syn})
        else:
            s.accumulate(loss, ce=ce)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    params = list(s.model.parameters())
    for p, g in zip(params, distributed.all_reduce_mean(p.grad for p in params)):  # torchrun: the ranks' mean
        p.grad = g
    s.opt.step()
    s.sched.step()


def mps_step(s: State, x, y, x_val, y_val) -> None:
    """gda-mps and mgr: the finder takes one meta step through a one-step lookahead of the
    classifier, then the classifier takes its step with the same ∇_θ L(θ; φ). With the co-learner,
    its CE (×γ) on the looked-ahead features of B_val joins the finder's meta-loss and trains it."""
    z, y_p = latents(s, len(x) * s.cfg.syn_per_real)
    g = mps_grads(s, x, y, x_val, y_val, z, y_p)
    hg_cos = s.remember_hypergradient(g.phi_data)  # the data's part: the KL pull is no signal (meta.py)
    step_finder(s, g.phi)
    if s.co_learner is not None:
        step_with(s.co_opt, s.co_learner.parameters(), g.co)
    step_with(s.opt, s.model.parameters(), g.theta)  # the classifier's step
    s.sched.step()
    with torch.no_grad():  # the real batch's BatchNorm statistics, as a plain step would update them
        for name, b in s.model.named_buffers():
            b.copy_(g.buffers[name])
    s.accumulate(g.loss, hg_cos=hg_cos, **g.logged)


@dataclass
class MetaGrads:
    phi: list  # the finder's hypergradient
    phi_data: list  # its lookahead part, without the KL term's pull toward the prior
    theta: list  # ∇_θ L(θ; φ): the classifier's own step
    co: list  # the co-learner's gradient (empty without one)
    buffers: dict  # BatchNorm statistics after the real batch
    loss: torch.Tensor  # L(θ; φ)
    logged: dict  # the step's scalars, on the device


def mps_grads(s: State, x, y, x_val, y_val, z, y_p, t=None) -> MetaGrads:
    """Every gradient of one MPS iteration, for given batches, latents and draw of T."""
    cfg = s.cfg
    lr = s.sched.get_last_lr()[0]  # η, the classifier's current learning rate
    # the finder and G always in float32: the hypergradient flows back through G (in bf16 it drifts to
    # cosine 0.987 with the exact value); the classifier's part too unless meta_precision is bf16, whose
    # rounding of the validation gradient leaves cosine 0.966-0.992 (docs/method.md#hypergradient-modes)
    with torch.autocast(s.device.type, enabled=False):
        z_f = s.finder(z)  # F_φ(z)
        x_p = s.G(z_f, y_p)  # synthetic images, differentiable in φ
    with meta_autocast(s), differentiated_twice():  # cheap second derivatives (models/second_order.py)
        t = s.T.draw(x_p) if t is None else t  # one draw of T, reused by every evaluation of ℓ_PCR this step
        params, buffers = dict(s.model.named_parameters()), meta.clone_buffers(s.model)
        ce = F.cross_entropy(meta.call(s.model, params, buffers, x), y)
        with differentiated_twice(weights=False):  # its second derivative goes to φ only, through x_p
            syn = meta.synthetic_loss(s.model, params, x_p, told(s, y_p), t, s.T, cfg.synthetic_kind)
        # ∇_θ L(θ; φ) in two parts: φ enters θ' only through the synthetic term's gradient, so only
        # that one keeps a graph for the hypergradient's second derivative
        g_ce = meta.grads_of(ce, params)
        g_syn = meta.grads_of(syn, params, create_graph=True)
        grads = [a + cfg.lam * b.detach() for a, b in zip(g_ce, g_syn)]
        ahead = meta.lookahead(params, grads, lr)  # θ' = θ − η ∇_θ L(θ; φ)
        logits, fmap = meta.call(s.model, ahead, meta.clone_buffers(s.model), x_val, feature_map=True)
        ce_val = F.cross_entropy(logits, y_val)
        co_ce, co_acc = co_learner_loss(s, fmap, y_val)
        out = meta.outer_grads(ce_val, ahead, None if co_ce is None else cfg.co_learner_gamma * co_ce,
                               list(s.co_learner.parameters()) if s.co_learner else [])
        phi, phi_data = finder_grads(s, g_syn, out.v, lr, z_f)
    logged = {"ce": ce, **finder_logs(z, z_f), "meta_val_ce": ce_val,
              "pcr" if cfg.synthetic_kind == "pcr" else "syn_ce": syn, "kl_share": kl_share(phi, phi_data)}
    if co_ce is not None:
        logged.update(co_ce=co_ce, co_acc=co_acc, co_grad_cos=out.co_cos)
    return MetaGrads(phi, phi_data, grads, out.co_grads, buffers, ce + cfg.lam * syn, logged)


def finder_grads(s: State, g_syn, v, lr: float, z_f):
    """The finder's exact hypergradient given v = ∇_θ' of its meta-loss, and its lookahead part alone
    (the KL term's pull left out)."""
    data, kl = meta.finder_hypergradient_parts(g_syn, v, lr, s.cfg.lam, s.finder, z_f, lam_kl_now(s))
    return [a + b for a, b in zip(data, kl)], data


def finder_logs(z: torch.Tensor, z_f: torch.Tensor) -> dict:
    """What is logged of the finder's latents: their batch KL, the mean shift ‖F(z) − z‖, and the part of the
    shift that depends on z, mean ‖(F(z) − z) − the batch's mean shift‖. The last is ≈ 0 when the finder moves
    every latent by one vector (F(z) = z + b: its hidden units silent), which the mean shift alone cannot tell
    from a finder that picks latents (docs/method.md#a-finder-that-adds-one-vector)."""
    shift = (z_f - z).detach()
    return {"kl": kl_batch(z_f), "latent_shift": shift.norm(dim=1).mean(),
            "shift_spread": (shift - shift.mean(0)).norm(dim=1).mean()}


def lr_fraction(s: State) -> float:
    """η/η_peak: the classifier's learning rate at this step over its schedule's peak (the configured lr),
    which the "lr" schedules of λ_KL and of the finder's learning rate follow."""
    return s.sched.get_last_lr()[0] / s.sched.base_lrs[0]


def lam_kl_now(s: State) -> float:
    """λ_KL at this step: the configured value, or under lam_kl_schedule "lr" that value × η/η_peak, so
    that the KL's pull keeps its ratio to the lookahead part (∝ η) as the learning rate decays."""
    if s.cfg.lam_kl_schedule == "lr":
        return s.cfg.lam_kl * lr_fraction(s)
    return s.cfg.lam_kl


def finder_lr_now(s: State) -> float:
    """The finder's learning rate at this step: the configured one, or under finder_lr_schedule "lr" that
    value × η/η_peak, so that the finder slows down with the classifier as η decays (measured: it then ends
    further from the prior than under the constant lr, docs/method.md#the-signal)."""
    if s.cfg.finder_lr_schedule == "lr":
        return s.cfg.finder_lr * lr_fraction(s)
    return s.cfg.finder_lr


@torch.no_grad()
def kl_share(total: list[torch.Tensor], data: list[torch.Tensor]) -> torch.Tensor:
    """‖KL part‖ / (‖KL part‖ + ‖lookahead part‖) of the finder's hypergradient: near 1 when the finder is
    only pulled back toward the prior (late in a cosine schedule, where η → 0). No host sync."""
    kl = torch.sqrt(sum((a - b).float().pow(2).sum() for a, b in zip(total, data)))
    d = torch.sqrt(sum(b.float().pow(2).sum() for b in data))
    return kl / (kl + d).clamp_min(1e-30)


def mltp_step(s: State, x_i, y_i, x_j, y_j, x_val, y_val) -> None:
    """MLTP around any method (docs/method.md#mltp). Task i at w; one lookahead w' = w − α ⊙ ∇C(w; B_i) on
    the variant's tensors; task j at w'; J = C(w; B_i) + η C(w'; B_j) (+ γ CE of the co-learner on
    the looked-ahead features of B_j) gives w its gradient (taken by the trainer's optimizer) and α
    its own. C is the method's loss: CE, plus λ times its synthetic term on a fresh synthetic batch
    per task. Under gda-mps/mgr the finder also takes its MPS step, through θ' = w − η ∇C(w; B_i)
    with the same gradient and η the learning rate (docs/decisions.md)."""
    cfg = s.cfg
    lr = s.sched.get_last_lr()[0]
    second = cfg.mltp_variant != "fo"  # full, conv, fc: through the Hessian; fo: without it
    with torch.autocast(s.device.type, enabled=False):  # G and the finder in float32, as in mps_grads
        syn_i, syn_j = synthetic(s, len(x_i), through_finder=True), synthetic(s, len(x_j), through_finder=False)
    with meta_autocast(s), differentiated_twice():
        params, buffers = dict(s.model.named_parameters()), meta.clone_buffers(s.model)
        # task i at w: its forward gives the step's only BatchNorm update (copied back below)
        ce_i = F.cross_entropy(meta.call(s.model, params, buffers, x_i), y_i)
        syn_term = synthetic_term(s, params, syn_i)
        c_i = ce_i + cfg.lam * syn_term
        if s.finder is None:
            g_i = meta.grads_of(c_i, params, create_graph=second)
        else:  # the finder's hypergradient needs the synthetic term's gradient apart, with its graph
            g_syn_i = meta.grads_of(syn_term, params, create_graph=True)
            g_i = [a + cfg.lam * b for a, b in zip(meta.grads_of(ce_i, params, create_graph=second), g_syn_i)]
        ahead = meta.lookahead(params, g_i if second else [g.detach() for g in g_i], s.alpha)  # w'
        # task j at w' (throwaway BatchNorm buffers); the co-learner reads the same looked-ahead features
        logits_j, fmap_j = meta.call(s.model, ahead, meta.clone_buffers(s.model), x_j, feature_map=True)
        ce_j = F.cross_entropy(logits_j, y_j)
        c_j = ce_j + cfg.lam * synthetic_term(s, ahead, syn_j)
        co_ce, co_acc = co_learner_loss(s, fmap_j, y_j)
        co = None if co_ce is None else cfg.co_learner_gamma * co_ce
        out = meta.outer_grads(cfg.mltp_eta * c_j, ahead, co, list(s.co_learner.parameters()) if s.co_learner else [])
        back = meta.pullback(ahead, out.v, [*params.values(), *s.alpha.values()])
        w_grads = [g.detach() + b for g, b in zip(g_i, back)]  # ∂J/∂w = ∇C_i(w) + (∂w'/∂w)ᵀ v
        alpha_grads = back[len(params):]  # ∂J/∂α_l = −⟨v_l, ∇_l C_i(w)⟩
        J = c_i + cfg.mltp_eta * c_j + (0.0 if co is None else co)
        if s.finder is not None:  # MPS: the finder's meta step, through the lookahead at the learning rate
            mps_ahead = meta.lookahead(params, [g.detach() for g in g_i], lr)
            ce_val = F.cross_entropy(meta.call(s.model, mps_ahead, meta.clone_buffers(s.model), x_val), y_val)
            phi_grads, phi_data = finder_grads(s, g_syn_i, meta.outer_grads(ce_val, mps_ahead).v, lr, syn_i.z_f)
    if s.finder is not None:
        hg_cos = s.remember_hypergradient(phi_data)
        step_finder(s, phi_grads)
    if s.co_learner is not None:
        step_with(s.co_opt, s.co_learner.parameters(), out.co_grads)
    step_with(s.opt, [*params.values(), *s.alpha.values()], w_grads + alpha_grads)  # w and α, at one rate r
    s.sched.step()
    with torch.no_grad():
        for a in s.alpha.values():
            a.clamp_(min=0)
        for name, b in s.model.named_buffers():  # task i's BatchNorm statistics, as a plain step would
            b.copy_(buffers[name])
    logged = {"ce": ce_i, "mltp_ce_j": ce_j, "mltp_grad_cos": meta.cosine(g_i, out.main), **alpha_stats(s)}
    if syn_i is not None:
        logged["pcr" if cfg.synthetic_kind == "pcr" else "syn_ce"] = syn_term
    if s.finder is not None:
        logged.update(**finder_logs(syn_i.z, syn_i.z_f), meta_val_ce=ce_val, hg_cos=hg_cos,
                      kl_share=kl_share(phi_grads, phi_data))
    if co_ce is not None:
        logged.update(co_ce=co_ce, co_acc=co_acc, co_grad_cos=out.co_cos)
    s.accumulate(J, **logged)


def train_step(s: State) -> None:
    """One iteration of the configured procedure and method, batches included."""
    if s.cfg.procedure == "mltp":
        mltp_step(s, *mltp_batches(s))
        return
    x, y, x_val, y_val = batches(s)
    if s.cfg.uses_finder and s.step % s.cfg.meta_every == 0:
        mps_step(s, x, y, x_val, y_val)
    else:
        plain_step(s, x, y)


def alpha_stats(s: State) -> dict:
    """Mean, min and max of MLTP's α per layer group (conv, bn, fc), on the device."""
    out = {}
    for group, names in s.alpha_groups.items():
        a = torch.stack([s.alpha[n] for n in names]).detach()
        out.update({f"alpha_{group}_mean": a.mean(), f"alpha_{group}_min": a.min(), f"alpha_{group}_max": a.max()})
    return out
