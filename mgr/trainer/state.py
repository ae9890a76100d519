"""Everything a run holds while it trains (State) and how it is built from a TrainConfig: data on
the device, the classifier and its optimizer and schedule, the frozen generator, the finder,
MLTP's learnable steps α and the CML co-learner. State also sums the step's scalars on the
device and brings them to the host once per log interval (its only host sync)."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import torch

from .. import checkpoint, optim, paths
from ..augment import Augment
from ..data import load
from ..finder import Finder
from ..gan import check_val_fraction, load_generator, train_command
from ..models.classifier import build_classifier
from ..models.co_learner import CoLearner
from ..runtime import resolve_device, seed_everything
from . import distributed
from .config import TrainConfig

# The finder's guard: a mean latent shift ‖F(z) − z‖ beyond this many prior standard deviations per
# coordinate (i.e. > MAX_LATENT_SHIFT·√z_dim) puts F(z) where the generator never was trained; its
# images are then garbage and the run stops as failed (docs/decisions.md).
MAX_LATENT_SHIFT = 4.0


@dataclass
class State:
    cfg: TrainConfig  # under torchrun: the run's config with this rank's share of the batch (build)
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
    batch_gen: torch.Generator | None = None  # real and validation batch draws only: every method sees the same batches
    prev_hg: torch.Tensor | None = None  # the finder's last hypergradient, flattened (for hg_cos)
    sums: dict = field(default_factory=dict)  # sums of the step's scalars since the last log line (on device)
    counts: dict = field(default_factory=dict)  # steps that logged each scalar since then (host side)
    first_bad: torch.Tensor | None = None  # first step whose loss was not finite, -1 if none (on device)
    first_far: torch.Tensor | None = None  # (step, latent shift) where the finder left the prior, -1 if none (on device)
    eval_sums: dict = field(default_factory=dict)  # host-side sums since the last evaluation
    eval_counts: dict = field(default_factory=dict)
    world: int = 1  # processes training this run (torchrun), and this one's rank among them
    rank: int = 0

    @property
    def images_per_step(self) -> int:
        """Real training images one iteration consumes, over all ranks."""
        return self.cfg.images_per_step * self.world

    def remember_hypergradient(self, grads: list[torch.Tensor]) -> torch.Tensor | None:
        """Cosine between this step's finder hypergradient and the last one: two independent draws
        (batches, latents, T) one step apart, the trainer's cheap online estimate of whether the
        finder follows a signal (≈ 0: noise). None at the first meta step. No host sync."""
        flat = torch.cat([g.detach().float().flatten() for g in grads])
        prev, self.prev_hg = self.prev_hg, flat
        if prev is None:
            return None
        return (flat @ prev) / (flat.norm() * prev.norm()).clamp_min(1e-30)

    def accumulate(self, loss: torch.Tensor, **values):
        """Sum the step's scalars on the device; remember the first step with a non-finite loss. No host sync.
        A value of None is a scalar this step does not have (hg_cos at the first meta step)."""
        values = {k: v for k, v in values.items() if v is not None}
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
            self.counts[k] = self.counts.get(k, 0) + 1
        self.sums["n"] = self.sums.get("n", 0) + 1

    def flush(self) -> dict:
        """Means of the scalars since the last flush, brought to the host in one sync (every log_every
        steps), and added to the evaluation's sums. Raises if a loss was not finite."""
        keys = [k for k in self.sums if k != "n"]
        n = self.sums.get("n", 0)
        if self.first_bad is None or n == 0:
            return {}
        far = self.first_far if self.first_far is not None else torch.full((2,), -1.0, device=self.device)
        # under torchrun every rank's sums and guards, so that every rank logs and stops alike
        rows = distributed.gather(torch.cat([torch.stack([self.sums[k] for k in keys] + [self.first_bad.float()]),
                                             far])).tolist()
        *values, bad, far_step, far_shift = rows[0] if len(rows) == 1 else combine_ranks(rows)
        counts, self.sums, self.counts = self.counts, {}, {}
        if bad >= 0:
            parts = ", ".join(f"{k}={v / counts[k]:.4g}" for k, v in zip(keys, values))
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
            self.eval_counts[k] = self.eval_counts.get(k, 0) + counts[k]
        return {k: v / counts[k] for k, v in zip(keys, values)}


def combine_ranks(rows: list[list[float]]) -> list[float]:
    """The ranks' flush rows as one: the means of the scalars (every rank logged the same ones the
    same number of times), the first non-finite step of any rank, the first runaway finder of any."""
    values = [sum(col) / len(rows) for col in list(zip(*rows))[:-3]]
    bads = [r[-3] for r in rows if r[-3] >= 0]
    fars = sorted((r[-2], r[-1]) for r in rows if r[-2] >= 0)
    return [*values, min(bads) if bads else -1.0, *(fars[0] if fars else (-1.0, -1.0))]


def reseed(s: State) -> None:
    """Under torchrun, this rank's random streams (latents, augmentations, batches) from s.step on:
    rank- and step-dependent, so ranks draw different data and a resume from an evaluation's
    checkpoint continues the same streams (distributed.rank_seed). Nothing in a single process."""
    if s.world > 1:
        seed = distributed.rank_seed(s.cfg.seed, s.step)
        torch.manual_seed(seed)
        s.batch_gen.manual_seed(seed + 1)


def split_batch(cfg: TrainConfig, n_val: int, world: int) -> TrainConfig:
    """The config a rank trains with: global batch --batch-size, B/N images per rank. meta_val "auto" is
    decided on the global batch, so the finder's validation term is the same one the run asked for."""
    if world == 1:
        return cfg
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split across {world} processes: --batch-size is "
                         f"the global batch, each process takes batch_size / {world}; use a multiple of {world}")
    meta_val = ("full" if cfg.full_validation(n_val) else "batch") if cfg.meta_val == "auto" else cfg.meta_val
    return dataclasses.replace(cfg, batch_size=cfg.batch_size // world, meta_val=meta_val)


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


def generator_path_of(cfg: TrainConfig) -> str:
    """Which generator file a run names, whether or not it exists: --generator as given, or, when that is
    a bare file name that does not exist here, the file of that name in checkpoints/generators/ (the
    teaching demos name their shipped generator so, and their configs then say the same on every clone);
    without --generator the default one of its split (dataset, size, data seed and, where it is not the
    default, val_fraction: generators/<dataset>_ratio<r>_seed<s>[_val<f>].pt). The trainer and the app's
    views both ask this."""
    if not cfg.generator:
        return str(paths.generator_path(cfg.data.subset))
    shipped = paths.checkpoints_dir() / "generators" / cfg.generator
    if os.path.exists(cfg.generator) or os.path.dirname(cfg.generator) or not shipped.exists():
        return cfg.generator
    return str(shipped)


def find_generator(cfg: TrainConfig) -> str:
    """The generator file of a run (`generator_path_of`), or a FileNotFoundError that says how to train it."""
    path = generator_path_of(cfg)
    if not os.path.exists(path):
        other = ""
        if not cfg.generator and "val_fraction" in cfg.data.subset:
            default = paths.generator_path({k: v for k, v in cfg.data.subset.items() if k != "val_fraction"})
            if default.exists():  # say why the default split's generator is not taken
                other = (f" ({default} was trained on the split with the default val_fraction, not "
                         f"val_fraction={cfg.data.val_fraction}: other training images)")
        raise FileNotFoundError(
            f"method {cfg.method!r} needs a generator trained on this split, and {path} does not exist{other}; "
            f"train it with: {train_command(cfg.data)}")
    return path


def checked_generator(cfg: TrainConfig) -> tuple[str, dict]:
    """The run's generator file (`find_generator`) and its metadata, refused from the metadata alone, before
    any data is loaded, when it is unreadable or was made for another val_fraction. The trainer and the
    app's pre-launch check both ask this."""
    path = find_generator(cfg)
    meta = checkpoint.load_meta(path, "mgr-generator", 1)
    if not cfg.leaky_generator:  # another split's generator saw images this run must not (the leakage demo)
        check_val_fraction(path, meta, cfg.data)
    return path, meta


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
    world, rank = distributed.world(), distributed.rank()
    if world > 1 and cfg.batch_size % world:
        split_batch(cfg, 0, world)  # raises, before any data is loaded
    if world > 1 and device.type == "cuda":  # one GPU per process (torchrun's LOCAL_RANK)
        device = torch.device("cuda", distributed.local_rank())
    if cfg.uses_generator:
        gen_path, _ = checked_generator(cfg)  # fails before data loading
    data = load(cfg.data, device=device)
    cfg = split_batch(cfg, len(data.y_val), world)
    if cfg.procedure == "mltp" and len(data.y_train) < 2:
        raise ValueError(f"procedure 'mltp' draws two disjoint batches and needs at least 2 training images; "
                         f"this split has {len(data.y_train)}: use a larger --ratio or --per-class")
    seed_everything(cfg.seed)
    model = build_classifier(cfg.model, data.num_classes, data.channels, cfg.pretrained, cfg.width).to(device)
    # channels_last (NHWC) on every device: cuDNN's fast layout on a GPU; on a CPU oneDNN's NHWC kernels make
    # a demo's gda run 0.9× and its mgr run 0.8× as long, mostly in G (docs/trainer.md#memory-layout)
    model = model.to(memory_format=torch.channels_last)
    data.x_train, data.x_val, data.x_test = (x.contiguous(memory_format=torch.channels_last)
                                             for x in (data.x_train, data.x_val, data.x_test))
    groups = [{"params": list(model.parameters())}]
    alpha = mltp_steps(cfg, model, device) if cfg.procedure == "mltp" else {}
    if alpha:  # α ← α − r ∂J/∂α: plain SGD at the weights' scheduled rate r (the same scheduler)
        groups.append({"params": list(alpha.values()), "momentum": 0.0, "nesterov": False, "weight_decay": 0.0})
    opt = optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    s = State(cfg, device, data, model, torch.compile(model) if cfg.compile else model, opt, sched,
              world=world, rank=rank)
    if alpha:
        kinds = layer_group(model)
        s.alpha = alpha
        s.alpha_groups = {g: [n for n in alpha if kinds[n] == g] for g in ("conv", "bn", "fc", "other")}
        s.alpha_groups = {g: names for g, names in s.alpha_groups.items() if names}

    if cfg.uses_generator:
        expect = {"dataset": cfg.data.dataset, "split_hash": data.split_hash, "resolution": data.resolution,
                  "channels": data.channels, "num_classes": data.num_classes}
        if cfg.leaky_generator:
            del expect["split_hash"]
        s.G, _ = load_generator(gen_path, device=device, expect=expect)
        s.G = s.G.to(memory_format=torch.channels_last)  # its convolutions, as the classifier's
        s.T = Augment(cfg.pcr_aug)
    s.batch_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    if cfg.uses_finder:
        with torch.random.fork_rng(devices=[]):  # its init draws nothing from the run's stream: pcr and mgr stay paired
            torch.manual_seed(cfg.seed)
            s.finder = Finder(s.G.z_dim, cfg.finder, activation=cfg.finder_activation).to(device)
        s.finder_opt = optim.Adam(s.finder.parameters(), lr=cfg.finder_lr)
    if cfg.co_learner:
        with torch.random.fork_rng(devices=[]):  # same init and batches as the run without it: a paired comparison
            torch.manual_seed(cfg.seed)
            s.co_learner = CoLearner(model.feature_dim, data.num_classes, cfg.co_learner_arch).to(device)
        s.co_learner = s.co_learner.to(memory_format=torch.channels_last)
        s.co_opt = optim.Adam(s.co_learner.parameters(), lr=cfg.co_learner_lr)
    reseed(s)  # the models above are the same on every rank (same seed); the data each draws is not
    return s
