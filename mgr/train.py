"""The classifier trainer: base, gda, gda-mps, pcr and mgr (METHOD.md §1) on one loop, under the
standard procedure or MLTP (§2), optionally with the CML co-learner (§3).

Read `plain_step` (base, gda, pcr), `mps_step` (gda-mps, mgr) and `mltp_step` (any method under
MLTP): each is one iteration, top to bottom. Everything else here is set-up, evaluation, probes
and bookkeeping of the run directory.
"""
from __future__ import annotations

import math
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, meta, paths, typecheck
from .augment import Augment, parse_policy
from .data import DataConfig, dataset_info, load
from .finder import FINDERS, Finder, kl_batch
from .gan import load_generator
from .models.classifier import MODELS, build_classifier
from .models.co_learner import CO_LEARNER_ARCHS, CoLearner
from .runstore import Run, RunError, check_run_id, default_runs_dir, ensure_writable
from .runtime import DEVICES, Progress, autocast, resolve_device, seed_everything

METHODS = ("base", "gda", "gda-mps", "pcr", "mgr")
PROCEDURES = ("standard", "mltp")
MLTP_VARIANTS = ("fo", "full", "conv", "fc")  # first order; second order on all, conv or fully-connected tensors
ORDERS = ("second", "first")
SCHEDULES = ("cosine", "step", "constant")
DEFAULT_LR = {"smallcnn": 0.05, "resnet18": 0.1}
CKPT_KIND, CKPT_VERSION = "mgr-run-checkpoint", 1
STATUS_EVERY_S = 1.0  # status.json (progress, throughput) is rewritten at most this often
# The finder's guard: a mean latent shift ‖F(z) − z‖ beyond this many prior standard deviations per
# coordinate (i.e. > MAX_LATENT_SHIFT·√z_dim) puts F(z) where the generator never was trained; its
# images are then garbage and the run stops as failed (docs/decisions.md).
MAX_LATENT_SHIFT = 4.0
MODEL_KIND, MODEL_VERSION = "mgr-classifier", 1
CO_KIND, CO_VERSION = "mgr-co-learner", 1


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig("digits", ratio=0.1))
    method: str = "mgr"
    model: str = "smallcnn"
    pretrained: bool = False
    steps: int = 500
    batch_size: int = 128
    lr: float | None = None  # None: 0.05 for smallcnn, 0.1 for resnet18
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_steps: int | None = None  # None: 5% of steps
    lam: float = 1.0  # λ, weight of the synthetic term
    lam_kl: float = 0.1  # λ_KL
    finder: str = "residual"
    finder_lr: float = 1e-4
    order: str = "second"  # hypergradient
    fd_eps: float = 0.01  # first order: the finite difference steps fd_eps / ‖v‖ along v
    pcr_aug: str | None = None  # None: the dataset's default T
    eval_every: int = 50
    log_every: int = 10  # steps between training-scalar lines (scalars.jsonl): one host sync each
    probes_per_class: int = 16
    probe_real: int = 1000  # real images whose features each probe stores
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    generator: str | None = None  # None: checkpoints/generators/ for the dataset, ratio and data seed
    procedure: str = "standard"  # or "mltp": two real batches per iteration, learnable steps α (METHOD.md §2)
    mltp_variant: str = "fo"
    mltp_eta: float = 1.0  # η, weight of the looked-ahead task C(w'; B_j) in J
    mltp_alpha: float | None = None  # initial α; None: the classifier's base lr
    co_learner: bool = False  # the CML co-learner on the looked-ahead features (METHOD.md §3)
    co_learner_arch: str = "conv"
    co_learner_gamma: float = 1.0  # γ, weight of its CE in the outer objective
    co_learner_lr: float = 1e-3  # its own Adam

    def __post_init__(self):
        def bad(name, allowed):
            return ValueError(f"{name}={getattr(self, name)!r} is not allowed; {allowed}")
        for name, options in (("method", METHODS), ("model", MODELS), ("finder", FINDERS), ("order", ORDERS),
                              ("schedule", SCHEDULES), ("procedure", PROCEDURES), ("mltp_variant", MLTP_VARIANTS),
                              ("co_learner_arch", CO_LEARNER_ARCHS)):
            if getattr(self, name) not in options:
                raise bad(name, f"choose one of {', '.join(options)}")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d{1,3}", str(self.device)):
            raise bad("device", f"choose one of {', '.join(DEVICES)} or cuda:N")
        for name in ("steps", "batch_size", "eval_every", "log_every", "probes_per_class"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise bad(name, "it must be a positive integer")
        for name in ("lr", "finder_lr", "fd_eps", "co_learner_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise bad(name, "it must be a number > 0")
        for name in ("lam", "lam_kl", "weight_decay", "probe_real", "seed", "mltp_eta", "mltp_alpha",
                     "co_learner_gamma"):
            v = getattr(self, name)
            if name == "mltp_alpha" and v is None:
                continue
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise bad(name, "it must be a number >= 0")
        if not isinstance(self.co_learner, bool):
            raise bad("co_learner", "it must be true or false")
        if self.co_learner and not self.uses_lookahead:
            raise bad("co_learner", f"the co-learner reads looked-ahead features, and method {self.method!r} under "
                                    "procedure 'standard' takes no lookahead; use method gda-mps or mgr, or "
                                    "procedure mltp")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "it must be in [0, 1)")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.steps:
            raise bad("warmup_steps", f"it must be in [0, steps={self.steps})")
        if self.pretrained and self.model != "resnet18":
            raise bad("pretrained", "pretrained weights exist only for model resnet18")
        # resolve the defaults, so config.json holds what actually ran
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.lr is None:
            set_("lr", DEFAULT_LR[self.model])
        if self.warmup_steps is None:
            set_("warmup_steps", int(0.05 * self.steps))
        if self.procedure == "mltp" and self.mltp_alpha is None:
            set_("mltp_alpha", self.lr)
        if self.pcr_aug is None:
            flip = dataset_info(self.data.dataset).hflip
            set_("pcr_aug", "translation,flip,color,cutout" if flip else "translation,color,cutout")
        parse_policy(self.pcr_aug)

    @property
    def uses_generator(self) -> bool:
        return self.method != "base"

    @property
    def uses_finder(self) -> bool:
        return self.method in ("gda-mps", "mgr")

    @property
    def uses_lookahead(self) -> bool:
        return self.uses_finder or self.procedure == "mltp"

    @property
    def images_per_step(self) -> int:
        """Real training images one iteration consumes (MLTP draws two batches)."""
        return self.batch_size * (2 if self.procedure == "mltp" else 1)

    @property
    def synthetic_kind(self) -> str:
        return "pcr" if self.method in ("pcr", "mgr") else "ce"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        """From config.json: unknown, ill-typed or invalid fields are refused, naming the field."""
        return typecheck.from_json(cls, d, where, required=("data", "method", "model", "steps"))


# ----------------------------------------------------------------------------- state

@dataclass
class State:
    cfg: TrainConfig
    device: torch.device
    data: object
    model: torch.nn.Module
    forward: object  # the model's plain forward, compiled with --compile
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    G: torch.nn.Module | None = None
    finder: Finder | None = None
    finder_opt: torch.optim.Optimizer | None = None
    T: Augment | None = None
    alpha: dict = field(default_factory=dict)  # MLTP: {parameter name: learnable step α ≥ 0}, 0-dim tensors
    alpha_groups: dict = field(default_factory=dict)  # {"conv" | "bn" | "fc": names in alpha}, for logging
    co_learner: CoLearner | None = None
    co_opt: torch.optim.Optimizer | None = None
    step: int = 0
    best_val_acc: float = -1.0
    best_step: int = -1
    sums: dict = field(default_factory=dict)  # sums of the step's scalars since the last log line (on device)
    first_bad: torch.Tensor | None = None  # first step whose loss was not finite, -1 if none (on device)
    first_far: torch.Tensor | None = None  # (step, latent shift) where the finder left the prior, -1 if none (on device)
    eval_sums: dict = field(default_factory=dict)  # host-side sums since the last evaluation

    def accumulate(self, loss: torch.Tensor, **values):
        """Sum the step's scalars on the device; remember the first step with a non-finite loss. No host sync."""
        if self.first_bad is None:
            self.first_bad = torch.tensor(-1, device=self.device)
        # every scalar, not just the loss: an infinite meta-loss leaves the loss finite for a step but the finder NaN
        finite = torch.stack([loss.detach().float(), *(v.detach().float() for v in values.values())]).isfinite().all()
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, self.step + 1, self.first_bad)
        if "latent_shift" in values:  # the finder's guard: F(z) far from where G was trained (NaN counts as far)
            if self.first_far is None:
                self.first_far = torch.full((2,), -1.0, device=self.device)
            shift = values["latent_shift"].detach().float()
            far = (self.first_far[0] < 0) & ~(shift <= MAX_LATENT_SHIFT * self.G.z_dim ** 0.5)
            # full_like, not a tensor from a Python number: a host-to-device copy would sync the step
            self.first_far = torch.where(far, torch.stack([torch.full_like(shift, self.step + 1.0), shift]),
                                         self.first_far)
        for k, v in {"loss": loss, **values}.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.sums["n"] = self.sums.get("n", 0) + 1

    def flush(self) -> dict:
        """Means of the scalars since the last flush, brought to the host in one sync (every log_every
        steps), and added to the evaluation's sums. Raises if a loss was not finite."""
        keys = [k for k in self.sums if k != "n"]
        n = self.sums.get("n", 0)
        if self.first_bad is None or n == 0:
            return {}
        far = self.first_far if self.first_far is not None else torch.full((2,), -1.0, device=self.device)
        *values, bad, far_step, far_shift = torch.cat(
            [torch.stack([self.sums[k] for k in keys] + [self.first_bad.float()]), far]).tolist()
        self.sums = {}
        if bad >= 0:
            parts = ", ".join(f"{k}={v / n:.4g}" for k, v in zip(keys, values))
            raise FloatingPointError(f"the loss or a training scalar became non-finite at step {int(bad)} (means over the last {n} "
                                     f"steps: {parts}); the run stopped without saving the broken weights")
        if far_step >= 0:
            z_dim = self.G.z_dim
            raise FloatingPointError(
                f"the finder's latents left the prior at step {int(far_step)}: mean latent shift ‖F(z) − z‖ = "
                f"{far_shift:.4g} > {MAX_LATENT_SHIFT:g}·√z_dim = {MAX_LATENT_SHIFT * z_dim ** 0.5:.4g}, where the "
                f"generator was never trained; lower --finder-lr or raise --lam-kl. The run stopped without saving "
                "the finder's garbage")
        for k, v in zip(keys, values):
            self.eval_sums[k] = self.eval_sums.get(k, 0.0) + v
        self.eval_sums["n"] = self.eval_sums.get("n", 0) + n
        return {k: v / n for k, v in zip(keys, values)}


def lr_lambda(cfg: TrainConfig):
    def f(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * p))
        if cfg.schedule == "step":
            return 0.1 ** int(p >= 0.5) * 0.1 ** int(p >= 0.75)
        return 1.0
    return f


def find_generator(cfg: TrainConfig) -> str:
    path = cfg.generator or str(paths.generator_path(cfg.data.subset))
    if not os.path.exists(path):
        size = (f"--per-class {cfg.data.per_class}" if cfg.data.per_class is not None
                else f"--ratio {cfg.data.subset['ratio']:g}")
        raise FileNotFoundError(
            f"method {cfg.method!r} needs a generator trained on this split, and {path} does not exist; train it with: "
            f"python -m mgr train-generator --dataset {cfg.data.dataset} {size} --data-seed {cfg.data.data_seed}")
    return path


def layer_group(model: torch.nn.Module) -> dict[str, str]:
    """{parameter name: "conv" | "bn" | "fc" | "other"}, by the kind of module that owns it."""
    kinds = {}
    for prefix, m in model.named_modules():
        kind = ("conv" if isinstance(m, torch.nn.modules.conv._ConvNd) else
                "bn" if isinstance(m, torch.nn.modules.batchnorm._NormBase) else
                "fc" if isinstance(m, torch.nn.Linear) else "other")
        for name, _ in m.named_parameters(recurse=False):
            kinds[f"{prefix}.{name}" if prefix else name] = kind
    return kinds


def mltp_steps(cfg: TrainConfig, model: torch.nn.Module, device) -> dict[str, torch.Tensor]:
    """MLTP's α: one learnable step per parameter tensor that takes the meta step (all of them for
    fo and full, conv or fully-connected ones for conv and fc), initialised to mltp_alpha."""
    take = {"fo": None, "full": None, "conv": "conv", "fc": "fc"}[cfg.mltp_variant]
    return {n: torch.tensor(float(cfg.mltp_alpha), device=device, requires_grad=True)
            for n, kind in layer_group(model).items() if take is None or kind == take}


def build(cfg: TrainConfig) -> State:
    """Everything a run needs, checked before any training starts."""
    device = resolve_device(cfg.device)
    if cfg.uses_generator:
        gen_path = find_generator(cfg)
        checkpoint.load(gen_path, "mgr-generator", 1)  # readable at all? (fails before data loading)
    data = load(cfg.data, device=device)
    if cfg.procedure == "mltp" and len(data.y_train) < 2:
        raise ValueError(f"procedure 'mltp' draws two disjoint batches and needs at least 2 training images; "
                         f"this split has {len(data.y_train)}: use a larger --ratio or --per-class")
    seed_everything(cfg.seed)
    model = build_classifier(cfg.model, data.num_classes, data.channels, cfg.pretrained).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        data.x_train, data.x_val, data.x_test = (x.contiguous(memory_format=torch.channels_last)
                                                 for x in (data.x_train, data.x_val, data.x_test))
    groups = [{"params": list(model.parameters())}]
    alpha = mltp_steps(cfg, model, device) if cfg.procedure == "mltp" else {}
    if alpha:  # α ← α − r ∂J/∂α: plain SGD at the weights' scheduled rate r (the same scheduler)
        groups.append({"params": list(alpha.values()), "momentum": 0.0, "nesterov": False, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    s = State(cfg, device, data, model, torch.compile(model) if cfg.compile else model, opt, sched)
    if alpha:
        kinds = layer_group(model)
        s.alpha = alpha
        s.alpha_groups = {g: [n for n in alpha if kinds[n] == g] for g in ("conv", "bn", "fc", "other")}
        s.alpha_groups = {g: names for g, names in s.alpha_groups.items() if names}

    if cfg.uses_generator:
        s.G, _ = load_generator(gen_path, device=device, expect={
            "dataset": cfg.data.dataset, "split_hash": data.split_hash, "resolution": data.resolution,
            "channels": data.channels, "num_classes": data.num_classes})
        s.T = Augment(cfg.pcr_aug)
    if cfg.uses_finder:
        s.finder = Finder(s.G.z_dim, cfg.finder).to(device)
        s.finder_opt = torch.optim.Adam(s.finder.parameters(), lr=cfg.finder_lr)
    if cfg.co_learner:
        with torch.random.fork_rng(devices=[]):  # same init and batches as the run without it: a paired comparison
            torch.manual_seed(cfg.seed)
            s.co_learner = CoLearner(model.feature_dim, data.num_classes, cfg.co_learner_arch).to(device)
        if device.type == "cuda":
            s.co_learner = s.co_learner.to(memory_format=torch.channels_last)
        s.co_opt = torch.optim.Adam(s.co_learner.parameters(), lr=cfg.co_learner_lr)
    return s


# ----------------------------------------------------------------------------- steps

def batches(s: State):
    """A real training batch and a validation batch, sampled on the device (no host sync)."""
    d, B = s.data, s.cfg.batch_size
    i = torch.randint(len(d.y_train), (B,), device=s.device)
    j = torch.randint(len(d.y_val), (min(B, len(d.y_val)),), device=s.device)
    return d.x_train[i], d.y_train[i], d.x_val[j], d.y_val[j]


def mltp_indices(s: State):
    """Indices of MLTP's two disjoint real batches B_i and B_j into the training split. Each step a
    random permutation splits the split into two halves and each batch is drawn (with replacement,
    like `batches`) from its own half: no image is in both, even when the split is smaller than one
    batch (digits 10%: 116 images, batch 128). On the device, no host sync."""
    n, B = len(s.data.y_train), s.cfg.batch_size
    perm, half = torch.randperm(n, device=s.device), n // 2
    return perm[torch.randint(half, (B,), device=s.device)], perm[half + torch.randint(n - half, (B,), device=s.device)]


def mltp_batches(s: State):
    """B_i, B_j (disjoint, `mltp_indices`) and a validation batch (used by the finder's MPS step)."""
    d = s.data
    i, j = mltp_indices(s)
    v = torch.randint(len(d.y_val), (min(s.cfg.batch_size, len(d.y_val)),), device=s.device)
    return d.x_train[i], d.y_train[i], d.x_train[j], d.y_train[j], d.x_val[v], d.y_val[v]


def latents(s: State, n: int):
    z = torch.randn(n, s.G.z_dim, device=s.device)
    return z, torch.randint(s.data.num_classes, (n,), device=s.device)  # y uniform over classes


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
    z, y = latents(s, n)
    with torch.set_grad_enabled(through_finder and s.finder is not None):
        z_f = s.finder(z) if s.finder is not None else z
        x = s.G(z_f, y)
    return Synthetic(z, z_f, x, y, s.T.draw(x) if s.cfg.synthetic_kind == "pcr" else None)


def synthetic_term(s: State, params: dict, syn: Synthetic | None):
    """The method's synthetic term of C at `params`, before λ (0 for base)."""
    return 0.0 if syn is None else meta.synthetic_loss(s.model, params, syn.x, syn.y, syn.t, s.T, s.cfg.synthetic_kind)


def co_learner_loss(s: State, feature_map, y):
    """The co-learner's CE and accuracy on (looked-ahead) features; (None, None) without one."""
    if s.co_learner is None:
        return None, None
    logits = s.co_learner(feature_map).float()
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


def step_with(opt: torch.optim.Optimizer, params, grads) -> None:
    """An optimizer step on gradients taken by hand (torch.autograd.grad in the meta steps),
    detached from any graph they carry."""
    for p, g in zip(params, grads):
        p.grad = g.detach()
    opt.step()


def plain_step(s: State, x, y) -> None:
    """base: CE. gda: CE + λ CE(synthetic). pcr: CE + λ ℓ_PCR(synthetic). Uniform latents."""
    cfg = s.cfg
    with autocast(s.device):
        ce = F.cross_entropy(s.forward(x), y)
        loss = ce
        if cfg.uses_generator:
            with torch.no_grad():
                z, y_p = latents(s, len(x))
                x_p = s.G(z, y_p)  # one synthetic sample per real sample
            params = dict(s.model.named_parameters())
            t = s.T.draw(x_p) if cfg.synthetic_kind == "pcr" else None
            syn = meta.synthetic_loss(s.model, params, x_p, y_p, t, s.T, cfg.synthetic_kind)
            loss = ce + cfg.lam * syn
            s.accumulate(loss, ce=ce, **{"pcr" if cfg.synthetic_kind == "pcr" else "syn_ce": syn})
        else:
            s.accumulate(loss, ce=ce)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    s.opt.step()
    s.sched.step()


def mps_step(s: State, x, y, x_val, y_val) -> None:
    """gda-mps and mgr: the finder takes one meta step through a one-step lookahead of the
    classifier, then the classifier takes its step with the same ∇_θ L(θ; φ). With the co-learner,
    its CE (×γ) on the looked-ahead features of B_val joins the finder's meta-loss and trains it."""
    cfg = s.cfg
    lr = s.sched.get_last_lr()[0]  # η, the classifier's current learning rate
    second = cfg.order == "second"
    z, y_p = latents(s, len(x))
    with autocast(s.device):
        z_f = s.finder(z)  # F_φ(z)
        x_p = s.G(z_f, y_p)  # synthetic images, differentiable in φ
        t = s.T.draw(x_p)  # one draw of T, reused by every evaluation of ℓ_PCR this step
        params, buffers = dict(s.model.named_parameters()), meta.clone_buffers(s.model)
        ce = F.cross_entropy(meta.call(s.model, params, buffers, x), y)
        syn = meta.synthetic_loss(s.model, params, x_p, y_p, t, s.T, cfg.synthetic_kind)
        loss = ce + cfg.lam * syn  # L(θ; φ)
        grads = meta.grads_of(loss, params, create_graph=second)
        ahead = meta.lookahead(params, grads if second else [g.detach() for g in grads], lr)  # θ'(φ)
        logits, fmap = meta.call(s.model, ahead, meta.clone_buffers(s.model), x_val, feature_map=True)
        ce_val = F.cross_entropy(logits, y_val)
        co_ce, co_acc = co_learner_loss(s, fmap, y_val)
        out = meta.outer_grads(ce_val, ahead, None if co_ce is None else cfg.co_learner_gamma * co_ce,
                               list(s.co_learner.parameters()) if s.co_learner else [])
        phi_grads = meta.finder_hypergradient(
            s.model, params, ahead, out.v, lr, s.finder, z_f, x_p, y_p, t, s.T,
            kind=cfg.synthetic_kind, lam=cfg.lam, lam_kl=cfg.lam_kl, order=cfg.order, fd_eps=cfg.fd_eps)
    step_with(s.finder_opt, s.finder.parameters(), phi_grads)
    if s.co_learner is not None:
        step_with(s.co_opt, s.co_learner.parameters(), out.co_grads)
    step_with(s.opt, params.values(), grads)  # the classifier's step, without the graph
    s.sched.step()
    with torch.no_grad():  # the real batch's BatchNorm statistics, as a plain step would update them
        for name, b in s.model.named_buffers():
            b.copy_(buffers[name])
        shift = (z_f - z).norm(dim=1).mean()
    co = {} if co_ce is None else {"co_ce": co_ce, "co_acc": co_acc, "co_grad_cos": out.co_cos}
    s.accumulate(loss, ce=ce, kl=kl_batch(z_f), latent_shift=shift, meta_val_ce=ce_val, **co,
                 **{"pcr" if cfg.synthetic_kind == "pcr" else "syn_ce": syn})


def mltp_step(s: State, x_i, y_i, x_j, y_j, x_val, y_val) -> None:
    """MLTP around any method (METHOD.md §2). Task i at w; one lookahead w' = w − α ⊙ ∇C(w; B_i) on
    the variant's tensors; task j at w'; J = C(w; B_i) + η C(w'; B_j) (+ γ CE of the co-learner on
    the looked-ahead features of B_j) gives w its gradient (taken by the trainer's optimizer) and α
    its own. C is the method's loss: CE, plus λ times its synthetic term on a fresh synthetic batch
    per task. Under gda-mps/mgr the finder also takes its MPS step, through θ' = w − η ∇C(w; B_i)
    with the same gradient and η the learning rate (docs/decisions.md)."""
    cfg = s.cfg
    lr = s.sched.get_last_lr()[0]
    second = cfg.mltp_variant != "fo"  # full, conv, fc: through the Hessian; fo: without it
    with autocast(s.device):
        params, buffers = dict(s.model.named_parameters()), meta.clone_buffers(s.model)
        syn_i, syn_j = synthetic(s, len(x_i), through_finder=True), synthetic(s, len(x_j), through_finder=False)
        # task i at w: its forward gives the step's only BatchNorm update (copied back below)
        ce_i = F.cross_entropy(meta.call(s.model, params, buffers, x_i), y_i)
        syn_term = synthetic_term(s, params, syn_i)
        c_i = ce_i + cfg.lam * syn_term
        g_i = meta.grads_of(c_i, params, create_graph=second or (s.finder is not None and cfg.order == "second"))
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
            mps_ahead = meta.lookahead(params, g_i if cfg.order == "second" else [g.detach() for g in g_i], lr)
            ce_val = F.cross_entropy(meta.call(s.model, mps_ahead, meta.clone_buffers(s.model), x_val), y_val)
            phi_grads = meta.finder_hypergradient(
                s.model, params, mps_ahead, meta.outer_grads(ce_val, mps_ahead).v, lr, s.finder, syn_i.z_f,
                syn_i.x, syn_i.y, syn_i.t, s.T, kind=cfg.synthetic_kind, lam=cfg.lam, lam_kl=cfg.lam_kl,
                order=cfg.order, fd_eps=cfg.fd_eps)
    if s.finder is not None:
        step_with(s.finder_opt, s.finder.parameters(), phi_grads)
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
        logged.update(kl=kl_batch(syn_i.z_f), latent_shift=(syn_i.z_f - syn_i.z).norm(dim=1).mean(), meta_val_ce=ce_val)
    if co_ce is not None:
        logged.update(co_ce=co_ce, co_acc=co_acc, co_grad_cos=out.co_cos)
    s.accumulate(J, **logged)


def train_step(s: State) -> None:
    """One iteration of the configured procedure and method, batches included."""
    if s.cfg.procedure == "mltp":
        mltp_step(s, *mltp_batches(s))
        return
    x, y, x_val, y_val = batches(s)
    if s.cfg.uses_finder:
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


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size]).float()
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    model.train()
    return correct / len(y), loss / len(y)


def probe_static(s: State) -> dict:
    """The fixed probe latents (per class) and the fixed real subset, drawn once per run."""
    d, gen = s.data, torch.Generator().manual_seed(1234)
    k, C = s.cfg.probes_per_class, d.num_classes
    real = {}
    n_train = min(len(d.y_train), s.cfg.probe_real // 2)
    n_test = min(len(d.y_test), s.cfg.probe_real - n_train)
    train_idx = torch.randperm(len(d.y_train), generator=gen)[:n_train].to(s.device)
    test_idx = torch.randperm(len(d.y_test), generator=gen)[:n_test].to(s.device)
    real["images"] = torch.cat([d.x_train[train_idx], d.x_test[test_idx]])
    real["labels"] = torch.cat([d.y_train[train_idx], d.y_test[test_idx]])
    out = {"real_images": _u8(real["images"]), "real_labels": real["labels"].cpu().numpy(),
           "real_split": np.array(["train"] * n_train + ["test"] * n_test), "classes": np.array(d.classes)}
    if s.G is not None:
        out["probe_z"] = torch.randn(k * C, s.G.z_dim, generator=gen).numpy()
        out["probe_y"] = np.repeat(np.arange(C), k)
    return out


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def probe(s: State, static: dict) -> dict:
    """What the views need at this step, computed once here so they read arrays, not models."""
    model = s.model.eval()
    out = {}
    real = torch.from_numpy(static["real_images"]).to(s.device).float().div(127.5).sub(1)
    out["real_features"] = torch.cat([model.features(c) for c in real.split(500)]).float().cpu().numpy()
    if s.G is not None:
        z = torch.from_numpy(static["probe_z"]).to(s.device)
        y = torch.from_numpy(static["probe_y"]).to(s.device)
        z_f = s.finder(z) if s.finder is not None else z
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(99)
            t = s.T.draw(torch.empty(len(z), s.data.channels, s.data.resolution, s.data.resolution))
        t = [tuple(p.to(s.device) for p in params) for params in t]  # the same T at every step
        out["finder_z"] = z_f.float().cpu().numpy()
        for name, lat in (("uniform", z), ("finder", z_f)):
            x = s.G(lat, y)
            xt = s.T.apply(x, t)
            f, ft = model.features(x), model.features(xt)
            out[f"{name}_images"] = _u8(x)
            out[f"augmented_{name}"] = _u8(xt)
            out[f"{name}_features"] = f.float().cpu().numpy()
            out[f"{name}_probs"] = F.softmax(model.head(f).float(), 1).cpu().numpy()
            out[f"{name}_gap"] = (ft - f).float().pow(2).mean(1).cpu().numpy()
    model.train()
    return out


# ----------------------------------------------------------------------------- the loop

class Stop(Exception):
    pass


def save_checkpoint(run: Run, s: State) -> None:
    tensors = {"model": s.model.state_dict(), "opt": s.opt.state_dict(), "sched": s.sched.state_dict(),
               "rng": torch.get_rng_state()}
    if s.device.type == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(s.device)
    if s.finder is not None:
        tensors["finder"], tensors["finder_opt"] = s.finder.state_dict(), s.finder_opt.state_dict()
    if s.alpha:  # α's own optimizer state is in "opt" (its second parameter group)
        tensors["alpha"] = {n: a.detach() for n, a in s.alpha.items()}
    if s.co_learner is not None:
        tensors["co_learner"], tensors["co_opt"] = s.co_learner.state_dict(), s.co_opt.state_dict()
    checkpoint.save(run.path / "last.pt", CKPT_KIND, CKPT_VERSION,
                    {"step": s.step, "best_val_acc": s.best_val_acc, "best_step": s.best_step, **_identity(s)},
                    **tensors)
    _promote_best(run, s.step)  # last.pt is the commit point: only now is a new best.pt part of the run


def _identity(s: State) -> dict:
    """What a last.pt must share with the run that resumes from it."""
    return {"method": s.cfg.method, "model": s.cfg.model, "dataset": s.data.name, "split_hash": s.data.split_hash}


def load_checkpoint(run: Run, s: State) -> None:
    path = run.path / "last.pt"
    ck = checkpoint.load(path, CKPT_KIND, CKPT_VERSION, map_location=s.device)
    checkpoint.check_meta(path, ck["meta"], {"step": int, "best_val_acc": (int, float), "best_step": int},
                          _identity(s), why="it belongs to another run")
    if not 0 <= ck["meta"]["step"] <= s.cfg.steps:
        raise checkpoint.CheckpointError(f"{path}: step {ck['meta']['step']} is outside [0, steps={s.cfg.steps}]")
    parts = [("model", s.model), ("opt", s.opt), ("sched", s.sched)]
    if s.finder is not None:
        parts += [("finder", s.finder), ("finder_opt", s.finder_opt)]
    if s.co_learner is not None:
        parts += [("co_learner", s.co_learner), ("co_opt", s.co_opt)]
    try:
        for key, obj in parts:
            if not isinstance(ck.get(key), dict):
                raise KeyError(f"no {key!r} state")
            obj.load_state_dict(ck[key])
        with torch.no_grad():
            for n, a in s.alpha.items():
                a.copy_(ck["alpha"][n])
        torch.set_rng_state(ck["rng"].cpu())
        if "cuda_rng" in ck and s.device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), s.device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise checkpoint.CheckpointError(f"{path}: does not fit this run's model and optimizers "
                                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    s.step, s.best_val_acc, s.best_step = ck["meta"]["step"], ck["meta"]["best_val_acc"], ck["meta"]["best_step"]


def load_co_learner(path, device="cpu"):
    """The co-learner saved beside best.pt (co_learner.pt): for analysis only, never for inference."""
    ck = checkpoint.load(path, CO_KIND, CO_VERSION, map_location=device)
    m = ck["meta"]
    co = CoLearner(m["in_channels"], m["num_classes"], m["arch"])
    checkpoint.load_state(co, ck["co_learner"], path)
    return co.to(device).eval(), m


def load_classifier(path, device="cpu"):
    """A trained classifier (best.pt) for inference: the model only, no G, finder or co-learner."""
    ck = checkpoint.load(path, MODEL_KIND, MODEL_VERSION, map_location=device)
    m = ck["meta"]
    checkpoint.check_meta(path, m, {"model": str, "num_classes": int, "channels": int, "resolution": int})
    if m["model"] not in MODELS or not 2 <= m["num_classes"] <= 100_000 or m["channels"] not in (1, 3):
        raise checkpoint.CheckpointError(f"{path}: metadata describes no classifier this MGR Lab builds "
                                         f"(model={m['model']!r}, num_classes={m['num_classes']}, channels={m['channels']})")
    model = build_classifier(m["model"], m["num_classes"], m["channels"])
    checkpoint.load_state(model, ck["model"], path)
    return model.to(device).eval(), m


def train(cfg: TrainConfig, runs_dir=None, run_id: str | None = None, quiet: bool = False, on_start=None) -> Run:
    """Create a run directory and train in it. `on_start(run)` is called once it exists."""
    runs_dir = runs_dir or default_runs_dir()
    if run_id is not None:
        check_run_id(run_id)
    ensure_writable(runs_dir)
    if run_id is not None and os.path.lexists(os.path.join(runs_dir, run_id)):
        raise RunError(f"run {run_id!r} already exists in {runs_dir}; resume it with --resume or choose another id")
    s = build(cfg)  # every check that can fail does so before the run directory exists
    run = Run.create(runs_dir, cfg.to_dict(), run_id)  # locked: this process is its only writer
    try:
        if on_start:
            on_start(run)
        return _loop(run, s, quiet)
    finally:
        run.unlock()


def resume(run_dir, quiet: bool = False, on_start=None) -> Run:
    run = Run(run_dir)
    if not (run.path / "config.json").is_file():
        raise RunError(f"{run.path} is not a run directory (no config.json)")
    run.lock()  # refuses a run that another process is still writing
    try:
        if run.status().get("state") == "finished":
            raise RunError(f"run {run.id} has finished; nothing to resume")
        ensure_writable(run.path)  # a full disk fails here, not mid-run
        s = build(TrainConfig.from_dict(run.config, where=str(run.path / "config.json")))
        if (run.path / "last.pt").exists():
            load_checkpoint(run, s)
        _promote_best(run, s.step)
        run.truncate_after(s.step)  # what happened after the checkpoint is redone, never duplicated
        if on_start:
            on_start(run)
        return _loop(run, s, quiet)
    finally:
        run.unlock()


def _loop(run: Run, s: State, quiet: bool) -> Run:
    cfg = s.cfg
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails a write (a clear WriteError), not the process
        old[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    run.write_status(state="running", step=s.step, total_steps=cfg.steps, pid=os.getpid(), error=None,
                     started=time.time(), device=str(s.device),
                     best_val_acc=s.best_val_acc if s.best_step >= 0 else None, best_step=s.best_step)
    static = probe_static(s)
    run.save_probe("static", static)
    bar = Progress(cfg.steps, s.step, desc=run.id, disable=quiet)
    t_eval = t_log = t_status = time.time()
    since_eval = since_log = 0
    try:
        while s.step < cfg.steps:
            train_step(s)
            s.step += 1
            since_eval, since_log = since_eval + 1, since_log + 1
            evaluating = s.step % cfg.eval_every == 0 or s.step == cfg.steps
            if s.step % cfg.log_every == 0 or evaluating:
                means = s.flush()  # the host sync: queued GPU work is done before the clock is read
                now = time.time()
                img_per_s = since_log * cfg.images_per_step / max(now - t_log, 1e-9)
                run.append_scalars({"step": s.step, "lr": s.sched.get_last_lr()[0],
                                    **{k: round(v, 6) for k, v in means.items()}, "img_per_s": round(img_per_s, 1)})
                t_log, since_log = now, 0
                bar.update(s.step - bar.n)
                if now - t_status >= STATUS_EVERY_S and not evaluating:
                    run.write_status(step=s.step, img_per_s=round(img_per_s, 1))
                    t_status = now
            if evaluating:
                elapsed = time.time() - t_eval
                record = _eval_record(s, since_eval, elapsed)
                run.save_probe(f"step_{s.step:07d}", probe(s, static))
                run.append_metrics(record)
                if record["val_acc"] > s.best_val_acc:
                    s.best_val_acc, s.best_step = record["val_acc"], s.step
                    _save_best(run, s, record)
                save_checkpoint(run, s)
                run.write_status(step=s.step, best_val_acc=s.best_val_acc, best_step=s.best_step,
                                 img_per_s=record["img_per_s"])
                bar.update(s.step - bar.n, val=f"{record['val_acc']:.3f}", test=f"{record['test_acc']:.3f}")
                t_eval = t_status = time.time()
                since_eval = 0
            if stop["signal"]:
                raise Stop(stop["signal"])
        run.write_status(state="finished", step=s.step)
    except Stop as e:
        try:
            save_checkpoint(run, s)
        except checkpoint.WriteError as err:
            _final_status(run, state="failed", step=s.step, error=f"stopped by {e}, but {err}")
            raise
        _final_status(run, state="stopped", step=s.step, error=f"stopped by {e}")
    except (FloatingPointError, checkpoint.WriteError) as e:
        _final_status(run, state="failed", step=s.step, error=str(e))
        raise
    except BaseException as e:
        _final_status(run, state="failed", step=s.step, error=f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return run


def _final_status(run: Run, **fields) -> None:
    """The last status of a run; on a full disk even that may fail, and the reason must still reach the user."""
    try:
        run.write_status(**fields)
    except OSError as e:
        print(f"could not record state {fields.get('state')!r} in {run.path / 'status.json'} ({e}); "
              f"reason: {fields.get('error')}", file=sys.stderr, flush=True)


def _eval_record(s: State, steps: int, elapsed: float) -> dict:
    n = max(1, s.eval_sums.pop("n", 0))
    means = {k: v / n for k, v in s.eval_sums.items()}
    s.eval_sums = {}
    d = s.data
    val_acc, val_loss = evaluate(s.forward, d.x_val, d.y_val)
    test_acc, test_loss = evaluate(s.forward, d.x_test, d.y_test)
    train_acc, _ = evaluate(s.forward, d.x_train[:2000], d.y_train[:2000])
    record = {"step": s.step, "epoch": round(s.step * s.cfg.images_per_step / len(d.y_train), 3),
              "lr": s.sched.get_last_lr()[0], **{k: round(v, 6) for k, v in means.items()},
              "train_acc": train_acc, "val_acc": val_acc, "val_loss": round(val_loss, 6),
              "test_acc": test_acc, "test_loss": round(test_loss, 6),
              "img_per_s": round(steps * s.cfg.images_per_step / max(elapsed, 1e-9), 1), "elapsed": round(elapsed, 3)}
    return record


def _save_best(run: Run, s: State, record: dict) -> None:
    """Stage best.pt as .best-<step>.pt; save_checkpoint promotes it once last.pt records this step, so a
    run killed in between never keeps a best.pt from steps that its resume will redo differently."""
    d = s.data
    checkpoint.save(run.path / f".best-{s.step:07d}.pt", MODEL_KIND, MODEL_VERSION,
                    {"model": s.cfg.model, "num_classes": d.num_classes, "channels": d.channels,
                     "resolution": d.resolution, "classes": d.classes, "step": s.step, "val_acc": record["val_acc"],
                     "test_acc": record["test_acc"], "dataset": d.name}, model=s.model.state_dict())
    if s.co_learner is not None:  # its own file, staged the same way: the classifier's checkpoint never holds it
        checkpoint.save(run.path / f".co_learner-{s.step:07d}.pt", CO_KIND, CO_VERSION,
                        {"arch": s.cfg.co_learner_arch, "in_channels": s.model.feature_dim,
                         "num_classes": d.num_classes, "step": s.step, "classifier": "best.pt"},
                        co_learner=s.co_learner.state_dict())


def _promote_best(run: Run, step: int) -> None:
    """best.pt (and co_learner.pt) := the newest staged one at or before `step`; staged ones after it
    are from undone steps."""
    for name in ("best", "co_learner"):
        staged = sorted(run.path.glob(f".{name}-*.pt"))
        keep = [p for p in staged if p.stem[len(name) + 2:].isdigit() and int(p.stem[len(name) + 2:]) <= step]
        if keep:
            os.replace(keep[-1], run.path / f"{name}.pt")
        for p in staged:
            if p not in keep[-1:]:
                p.unlink(missing_ok=True)
