"""The finder's hypergradient on the real models at the defaults (docs/method.md#hypergradient-modes).

A toy smooth model cannot catch what fails here (ReLU and max-pool kinks broke the finite-difference
mode), so these run the trainer's own code path (build + mps_step's pieces) on the real SmallCNN and
ResNet-18 with the shipped digits generator, and compare the trainer's exact hypergradient with an
independent computation: autograd straight through the lookahead objective
J(φ) = CE(f_θ'(φ)(B_val)) + λ_KL KL(F_φ(z)), θ'(φ) = θ − η ∇_θ [CE(B) + λ ℓ_PCR(G(F_φ(z), y))],
differentiated twice through the whole inner loss in float64.
"""
import contextlib
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mgr import meta
from mgr.data import DataConfig
from mgr.finder import kl_batch
from mgr.trainer import TrainConfig
from mgr.trainer.state import build
from mgr.trainer.steps import batches, latents, mps_grads, step_finder, train_step

DIGITS = DataConfig("digits", ratio=0.1)


def trained_state(model="smallcnn", steps=8, batch_size=128, total=100, **kw):
    """A real mgr run's state after `steps` of its `total` steps (the finder has left the identity)."""
    s = build(TrainConfig(data=DIGITS, method="mgr", model=model, steps=total, batch_size=batch_size, device="cpu",
                          **kw))
    for _ in range(steps):
        train_step(s)
        s.step += 1
    return s


def decayed_state():
    """A state well into the cosine decay, past the warm-up (1 step of 20): 12 of 20 steps, η/η_peak = 0.38, as
    at step 60 of 100; the schedules' properties hold at any batch size, so a small one keeps it quick."""
    return trained_state(steps=12, total=20, batch_size=32)


@pytest.fixture(scope="module")
def smallcnn():
    """One trained SmallCNN state, a fixed draw and its float64 reference, shared by the tests below
    (each test that changes the state's config restores it)."""
    s = trained_state()
    d = draw(s)
    ref, (model, finder) = independent_hypergradient(s, d)
    return s, d, ref, model, finder


def draw(s):
    torch.manual_seed(123)
    x, y, x_val, y_val = batches(s)
    z, y_p = latents(s, len(x) * s.cfg.syn_per_real)
    t = s.T.draw(torch.empty(len(z), s.data.channels, s.data.resolution, s.data.resolution))
    return x, y, x_val, y_val, z, y_p, t


def trainer_hypergradient(s, d, autocast=None):
    """The trainer's own computation (mps_grads) for a fixed draw."""
    x, y, x_val, y_val, z, y_p, t = d
    with autocast or contextlib.nullcontext():
        g = mps_grads(s, x, y, x_val, y_val, z, y_p, t)
    return torch.cat([p.float().flatten() for p in g.phi])


def lookahead_objective(model, finder, s, d, dtype):
    """J(φ) from scratch in `dtype`, with the graph kept through the whole inner gradient."""
    x, y, x_val, y_val, z, y_p, t = d
    cfg, lr = s.cfg, s.sched.get_last_lr()[0]
    G = copy.deepcopy(s.G).to(dtype)
    z_f = finder(z.to(dtype))
    params = dict(model.named_parameters())
    t = [tuple(p.to(dtype) if p.is_floating_point() else p for p in op) for op in t]
    inner = (F.cross_entropy(meta.call(model, params, meta.clone_buffers(model), x.to(dtype)), y)
             + cfg.lam * meta.synthetic_loss(model, params, G(z_f, y_p), y_p, t, s.T, "pcr"))
    ahead = meta.lookahead(params, meta.grads_of(inner, params, create_graph=True), lr)
    return meta.val_ce(model, ahead, x_val.to(dtype), y_val) + cfg.lam_kl * kl_batch(z_f)


def independent_hypergradient(s, d):
    model, finder = copy.deepcopy(s.model).double(), copy.deepcopy(s.finder).double()
    J = lookahead_objective(model, finder, s, d, torch.float64)
    return torch.cat([g.flatten() for g in torch.autograd.grad(J, list(finder.parameters()))]).float(), (model, finder)


@pytest.mark.parametrize("model", ["smallcnn", "resnet18"])
def test_exact_hypergradient_matches_autograd_through_the_lookahead_on_the_real_models(model, smallcnn):
    if model == "smallcnn":
        s, d, ref, _, _ = smallcnn
    else:
        s = trained_state(model, steps=2, batch_size=16)
        d = draw(s)
        ref, _ = independent_hypergradient(s, d)
    ours = trainer_hypergradient(s, d)  # float32, as the trainer runs on the CPU
    cos = F.cosine_similarity(ours, ref, dim=0)
    if model == "smallcnn":
        assert ref.norm() > 0 and cos > 0.9999, cos
        assert (ours.norm() / ref.norm() - 1).abs() < 1e-3
        return
    # ResNet-18 at batch 16: float32 rounding alone leaves 0.987-0.991 on an AMD EPYC CPU (above 0.9999
    # on an Intel Xeon), so exactness is checked in float64, where the trainer's own code must give the
    # independent value; float32 must still point the same way
    assert ref.norm() > 0 and cos > 0.98, cos
    s.model.double(), s.finder.double(), s.G.double()
    f64 = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    d64 = tuple([f64(u) for u in t] if isinstance(t, list) else f64(t) for t in d)
    ours64 = trainer_hypergradient(s, d64).double()
    cos64 = F.cosine_similarity(ours64, ref.double(), dim=0)
    assert cos64 > 1 - 1e-9 and (ours64.norm() / ref.norm() - 1).abs() < 1e-6, cos64


def test_exact_hypergradient_agrees_with_a_finite_difference_of_the_objective_in_float64(smallcnn):
    """A derivative-free check: (J(φ + h·u) − J(φ − h·u)) / 2h = ⟨∇_φ J, u⟩ on the real SmallCNN, along
    the trainer's own hypergradient (its size) and along a random unit direction (with the float64
    reference: a random direction's component is ~1/√#φ of the norm, below the trainer's float32
    rounding, measured 0.24% off at the default finder lr)."""
    s, d, ref, model, finder = smallcnn
    ours = trainer_hypergradient(s, d).double()
    torch.manual_seed(7)
    rand = torch.randn(ours.numel(), dtype=torch.float64)
    # a unit direction and a small step: J is piecewise smooth with jumps where a ReLU or max-pool of the
    # inner gradient flips. Measured on this state along the hypergradient: steps 1e-4 and 1e-5 land on
    # jumps (16x and 95x the derivative), 1e-6 to 1e-8 agree with it to 4-5 digits (float64 keeps 1e-6 clean)
    h = 1e-6

    def directional(u: torch.Tensor) -> float:
        def J(sign):
            f, offset = copy.deepcopy(finder), 0
            with torch.no_grad():
                for p in f.parameters():
                    p.add_(sign * h * u[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
            return lookahead_objective(model, f, s, d, torch.float64).item()
        return (J(+1) - J(-1)) / (2 * h)

    along = directional(ours / ours.norm())
    assert abs(float(ours.norm()) - along) < 1e-3 * abs(along), (float(ours.norm()), along)
    rand = rand / rand.norm()
    numeric, exact = directional(rand), float(ref.double() @ rand)
    assert abs(numeric) > 1e-8
    assert abs(exact - numeric) < 1e-3 * abs(numeric), (exact, numeric)


def test_meta_step_stays_exact_inside_bf16_autocast_by_default(smallcnn):
    """The trainer runs bf16 autocast on CUDA; on the CPU the same autocast exercises the same casts.
    The default meta_precision (float32) turns it off for the meta step, so the hypergradient is the
    float32 one even inside an autocast region."""
    s, d, ref, _, _ = smallcnn
    assert s.cfg.meta_precision == "float32"
    ours = trainer_hypergradient(s, d, torch.autocast("cpu", dtype=torch.bfloat16))
    assert F.cosine_similarity(ours, ref, dim=0) > 0.9999


def test_bf16_meta_step_keeps_its_direction(smallcnn):
    """meta_precision bf16 (opt-in, faster on CUDA): measured with G and the finder in float32, cosine
    0.992 and 0.966 with the float64 value on two trained states, 0.974 with the synthetic branch in
    float32 too: the rest is the validation gradient's bf16 rounding. That misses the 0.99 target,
    which is why it is not the default (docs/method.md#hypergradient-modes); this guards against worse."""
    s, d, ref, _, _ = smallcnn
    cfg = s.cfg
    s.cfg = dataclasses.replace(cfg, meta_precision="bf16")
    try:
        bf16 = trainer_hypergradient(s, d, torch.autocast("cpu", dtype=torch.bfloat16))
    finally:
        s.cfg = cfg
    cos = F.cosine_similarity(bf16, ref, dim=0)
    assert 0.95 < cos < 0.9999, cos  # rounded, and only rounded


def test_exact_hypergradient_is_exact_for_a_silu_finder():
    """The hypergradient goes through the finder as a module: with SiLU hidden units (finder_activation) the
    trainer's float32 value matches the float64 autograd reference as the ReLU finder's does."""
    s = trained_state(steps=4, finder_activation="silu")
    d = draw(s)
    ref, _ = independent_hypergradient(s, d)
    ours = trainer_hypergradient(s, d)
    assert ref.norm() > 0 and F.cosine_similarity(ours, ref, dim=0) > 0.9999
    assert (ours.norm() / ref.norm() - 1).abs() < 1e-3


def test_lam_kl_schedule_lr_scales_the_kl_pull_like_the_learning_rate_and_leaves_the_lookahead_part():
    """Under lam_kl_schedule "lr" the KL part of the hypergradient is λ_KL η/η_peak ∇KL: at a step where
    the cosine schedule has decayed η, it is that fraction of the constant schedule's, and the
    lookahead part is the same, so the two keep the ratio they have at η_peak."""
    s = decayed_state()
    d = draw(s)
    ratio = s.sched.get_last_lr()[0] / s.sched.base_lrs[0]
    assert 0.2 < ratio < 0.8
    constant = mps_grads(s, *d)
    s.cfg = dataclasses.replace(s.cfg, lam_kl_schedule="lr")
    scaled = mps_grads(s, *d)
    flat = lambda g: torch.cat([p.flatten() for p in g])  # noqa: E731
    kl_part = lambda g: flat(g.phi) - flat(g.phi_data)  # noqa: E731
    assert torch.allclose(flat(scaled.phi_data), flat(constant.phi_data), rtol=1e-5, atol=1e-9)
    assert kl_part(constant).norm() > 0
    assert torch.allclose(kl_part(scaled), ratio * kl_part(constant), rtol=1e-4, atol=1e-9)


def test_finder_lr_schedule_lr_scales_the_finders_step_like_the_learning_rate():
    """Under finder_lr_schedule "lr" the finder's Adam step is finder_lr η/η_peak: from the same state and
    hypergradient its update is that fraction of the constant schedule's (Adam's step is linear in its lr)."""
    s = decayed_state()
    ratio = s.sched.get_last_lr()[0] / s.sched.base_lrs[0]
    assert 0.2 < ratio < 0.8
    g = mps_grads(s, *draw(s))
    phi0 = [p.detach().clone() for p in s.finder.parameters()]
    opt0 = copy.deepcopy(s.finder_opt.state_dict())

    def update(schedule):
        with torch.no_grad():
            for p, p0 in zip(s.finder.parameters(), phi0):
                p.copy_(p0)
        s.finder_opt.load_state_dict(copy.deepcopy(opt0))
        s.cfg = dataclasses.replace(s.cfg, finder_lr_schedule=schedule)
        step_finder(s, g.phi)
        return torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(s.finder.parameters(), phi0)])

    constant, scaled = update("constant"), update("lr")
    assert s.finder_opt.param_groups[0]["lr"] == pytest.approx(s.cfg.finder_lr * ratio)
    # the updates are differences of float32 parameters (≈ 0.1) moved by ≈ 1e-3: good to about 1e-7 absolute
    assert constant.norm() > 0 and torch.allclose(scaled, ratio * constant, rtol=1e-3, atol=1e-6)
    assert not torch.allclose(scaled, constant, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("classifier_schedule, same", [("constant", True), ("cosine", False)])
def test_finder_lr_schedule_changes_a_run_exactly_when_the_learning_rate_moves(classifier_schedule, same):
    """A whole run through mps_step: under a constant classifier lr (after warm-up) the "lr" finder schedule is
    the constant one, bit for bit; under a cosine one the finder ends elsewhere."""
    finders = []
    for schedule in ("constant", "lr"):
        s = trained_state(steps=12, batch_size=32, schedule=classifier_schedule, warmup_steps=0,
                          finder_lr_schedule=schedule)
        finders.append(torch.cat([p.detach().flatten() for p in s.finder.parameters()]))
    assert torch.equal(finders[0], finders[1]) == same
