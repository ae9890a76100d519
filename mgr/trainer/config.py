"""TrainConfig: every option of a training run, validated at construction, with the defaults
resolved so that config.json holds what actually ran. The maths behind the options is in
docs/method.md."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from .. import typecheck
from ..augment import parse_policy
from ..data import DataConfig, dataset_info
from ..finder import FINDER_ACTIVATIONS, FINDERS
from ..models.classifier import MODELS
from ..models.co_learner import CO_LEARNER_ARCHS
from ..runtime import DEVICES

METHODS = ("base", "gda", "gda-mps", "pcr", "mgr")
PROCEDURES = ("standard", "mltp")
MLTP_VARIANTS = ("fo", "full", "conv", "fc")  # first order; second order on all, conv or fully-connected tensors
META_VALS = ("auto", "batch", "full")  # auto: the full split when it holds at most two batches
META_PRECISIONS = ("float32", "bf16")  # the meta step's arithmetic on CUDA (the CPU always runs float32)
SCHEDULES = ("cosine", "step", "constant")
LAM_KL_SCHEDULES = ("constant", "lr")  # lr: λ_KL scaled like the classifier's learning rate
FINDER_LR_SCHEDULES = ("constant", "lr")  # lr: the finder's Adam lr scaled like the classifier's learning rate
# What a config.json written before a field existed ran, where that differs from today's default: such a
# config must resume, compare and be labelled as what it ran, not as today's default
BEFORE_FIELD = {"meta_every": 1, "finder_lr_schedule": "constant", "finder_activation": "relu"}
# Fields a config.json written before their removal holds: `order` ("second", the exact hypergradient, is
# what every run computes now; "first", the finite-difference hypergradient, was removed) and its `fd_eps`
REMOVED_FIELDS = ("order", "fd_eps")
FINITE_DIFFERENCE_REMOVED = (
    "order='first': this run used the finite-difference hypergradient (--order first), which was removed "
    "(it is wrong on ReLU networks; docs/method.md#hypergradient-modes). Its files still read, but it cannot be "
    "resumed or rebuilt: train it again with the exact hypergradient (the only mode: the same config without "
    "`order` and `fd_eps`), or resume it with a checkout from before the removal (the commits before the one "
    "`git log -S fd_eps -- mgr/trainer/config.py` lists first)")
DEFAULT_LR = {"smallcnn": 0.05, "resnet18": 0.1}
KEEP_WEIGHTS = ("auto", "all", "last")  # weights per evaluation: auto = all while the classifier's state is small
KEEP_WEIGHTS_AUTO_MIB = 8  # auto: SmallCNN (1.1 MiB at width 32) keeps every evaluation, ResNet-18 (42.7 MiB) does not


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig("digits", ratio=0.1))
    method: str = "mgr"
    model: str = "smallcnn"
    pretrained: bool = False
    width: int | None = None  # SmallCNN's first-stage channels; None: 32
    steps: int = 500
    batch_size: int = 128
    lr: float | None = None  # None: 0.05 for smallcnn, 0.1 for resnet18
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_steps: int | None = None  # None: 5% of steps
    lam: float = 1.0  # λ, weight of the synthetic term
    lam_kl: float = 0.1  # λ_KL
    # "lr": λ_KL × η/η_peak. The lookahead part of the hypergradient is proportional to η, the KL's pull is
    # not, so under a decaying schedule the KL alone is left at the end and returns the finder to uniform
    # sampling; scaled like η, the two keep their ratio (docs/method.md#the-signal)
    lam_kl_schedule: str = "constant"
    finder: str = "residual"
    # The finder's defaults, chosen together (docs/method.md#a-finder-that-keeps-what-it-learnt): SiLU hidden
    # units, Adam lr 1e-3, and that lr × η/η_peak ("lr"), so the finder slows down with the classifier and
    # keeps what it learnt instead of being pulled back to uniform sampling at the end. Measured on
    # Fashion-MNIST 1%: what it holds at step 450 lowers the held-out CE of 23 of 24 draws (3 seeds); a
    # ReLU finder at lr 1e-2 loses its z-dependence in its first ten updates
    finder_lr: float = 1e-3
    finder_lr_schedule: str = "lr"
    finder_activation: str = "silu"  # the hidden units of the residual and mlp finders (the linear one has none)
    syn_per_real: int = 1  # synthetic samples per real sample in the synthetic term (and the finder's meta step)
    # Dials of the failure-mode demos (docs/demos.md). latent_psi: synthetic latents z ~ N(0, ψ² I); below 1 the
    # truncation trick, typical samples of less variety (Brock et al. 2019). syn_label_noise: the fraction of the
    # synthetic CE's labels replaced by a class drawn uniformly (the asked-for one 1/K of the time): wrong-class
    # samples, for the methods whose synthetic term is a CE (gda, gda-mps). leaky_generator: accept a generator
    # trained on another split of the dataset, i.e. on images this run's classifier must not see; the run is
    # then marked leaky everywhere it is shown (the leakage demo)
    latent_psi: float = 1.0
    syn_label_noise: float = 0.0
    leaky_generator: bool = False
    # the finder's meta step every k-th iteration; None: 2 (measured: held-out quality within noise of every
    # step's at two thirds of the cost, 2.29× instead of 3.43× a pcr step, docs/method.md#the-signal), 1 under MLTP, whose finder steps within each MLTP iteration
    meta_every: int | None = None
    meta_val: str = "auto"  # the finder's validation term: a "batch" drawn from the split, the "full" split, or auto
    meta_precision: str = "float32"  # bf16 autocast drifts the hypergradient to cosine 0.97 (docs/method.md)
    pcr_aug: str | None = None  # None: the dataset's default T
    eval_every: int = 50
    log_every: int = 10  # steps between training-scalar lines (scalars.jsonl): one host sync each
    probes_per_class: int = 16
    probe_real: int = 1000  # real images whose features each probe stores
    train_acc_images: int = 2000  # training images each evaluation's train_acc is measured on; 0: no train_acc
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    generator: str | None = None  # None: checkpoints/generators/ for the dataset, ratio and data seed
    procedure: str = "standard"  # or "mltp": two real batches per iteration, learnable steps α (docs/method.md#mltp)
    mltp_variant: str = "fo"
    mltp_eta: float = 1.0  # η, weight of the looked-ahead task C(w'; B_j) in J
    mltp_alpha: float | None = None  # initial α; None: the classifier's base lr
    co_learner: bool = False  # the CML co-learner on the looked-ahead features (docs/method.md#cml-co-learner)
    co_learner_arch: str = "conv"
    co_learner_gamma: float = 1.0  # γ, weight of its CE in the outer objective
    co_learner_lr: float = 1e-3  # its own Adam
    keep_weights: str = "auto"  # weights/step_N.pt at every evaluation: all, last (only last.pt, best.pt), or auto

    def __post_init__(self):
        def bad(name, allowed):
            return ValueError(f"{name}={getattr(self, name)!r} is not allowed; {allowed}")
        for name, options in (("method", METHODS), ("model", MODELS), ("finder", FINDERS), ("schedule", SCHEDULES), ("procedure", PROCEDURES), ("mltp_variant", MLTP_VARIANTS),
                              ("co_learner_arch", CO_LEARNER_ARCHS), ("lam_kl_schedule", LAM_KL_SCHEDULES),
                              ("finder_lr_schedule", FINDER_LR_SCHEDULES),
                              ("finder_activation", FINDER_ACTIVATIONS)):
            if getattr(self, name) not in options:
                raise bad(name, f"choose one of {', '.join(options)}")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d{1,3}", str(self.device)):
            raise bad("device", f"choose one of {', '.join(DEVICES)} or cuda:N")
        if self.meta_val not in META_VALS:
            raise bad("meta_val", f"choose one of {', '.join(META_VALS)}")
        if self.meta_precision not in META_PRECISIONS:
            raise bad("meta_precision", f"choose one of {', '.join(META_PRECISIONS)}")
        if self.keep_weights not in KEEP_WEIGHTS:
            raise bad("keep_weights", "choose one of all (weights at every evaluation), last (last.pt and best.pt "
                                      f"only) or auto (all while the classifier's state is at most {KEEP_WEIGHTS_AUTO_MIB} MiB)")
        for name in ("steps", "batch_size", "eval_every", "log_every", "probes_per_class", "syn_per_real",
                     "meta_every"):
            if name == "meta_every" and self.meta_every is None:
                continue
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise bad(name, "it must be a positive integer")
        for name in ("lr", "finder_lr", "co_learner_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise bad(name, "it must be a number > 0")
        if isinstance(self.train_acc_images, bool) or not isinstance(self.train_acc_images, int) \
                or self.train_acc_images < 0:
            raise bad("train_acc_images", "it must be a whole number of images >= 0 (0: no train accuracy)")
        for name in ("lam", "lam_kl", "weight_decay", "probe_real", "seed", "mltp_eta", "mltp_alpha",
                     "co_learner_gamma"):
            v = getattr(self, name)
            if name == "mltp_alpha" and v is None:
                continue
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise bad(name, "it must be a number >= 0")
        if not isinstance(self.co_learner, bool):
            raise bad("co_learner", "it must be true or false")
        if isinstance(self.latent_psi, bool) or not (isinstance(self.latent_psi, (int, float))
                                                     and math.isfinite(self.latent_psi) and 0 < self.latent_psi <= 4):
            raise bad("latent_psi", "it must be a number in (0, 4]: the scale of the synthetic latents (1: the prior)")
        if isinstance(self.syn_label_noise, bool) or not (isinstance(self.syn_label_noise, (int, float))
                                                          and 0 <= self.syn_label_noise <= 1):
            raise bad("syn_label_noise", "it must be a fraction in [0, 1]")
        if self.syn_label_noise > 0 and self.synthetic_kind != "ce":
            raise bad("syn_label_noise", f"method {self.method!r} uses no synthetic labels (PCR's consistency loss "
                                         "reads none); use method gda or gda-mps")
        if not isinstance(self.leaky_generator, bool):
            raise bad("leaky_generator", "it must be true or false")
        if self.leaky_generator and not self.generator:
            raise bad("leaky_generator", "it accepts a generator of another split, so name one with --generator")
        if self.co_learner and not self.uses_lookahead:
            raise bad("co_learner", f"the co-learner reads looked-ahead features, and method {self.method!r} under "
                                    "procedure 'standard' takes no lookahead; use method gda-mps or mgr, or "
                                    "procedure mltp")
        if self.meta_every not in (None, 1) and self.procedure == "mltp":
            raise bad("meta_every", "under procedure 'mltp' the finder steps with every MLTP iteration; use 1")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "it must be in [0, 1)")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.steps:
            raise bad("warmup_steps", f"it must be in [0, steps={self.steps})")
        if self.width is not None and (isinstance(self.width, bool) or not isinstance(self.width, int)
                                       or not 1 <= self.width <= 1024):
            raise bad("width", "it must be an integer in [1, 1024], or None for the model's default")
        if self.width is not None and self.model != "smallcnn":
            raise bad("width", f"model {self.model!r} has fixed widths; width is only for smallcnn")
        if self.pretrained and self.model != "resnet18":
            raise bad("pretrained", "pretrained weights exist only for model resnet18")
        # resolve the defaults, so config.json holds what actually ran
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.lr is None:
            set_("lr", DEFAULT_LR[self.model])
        if self.warmup_steps is None:
            set_("warmup_steps", int(0.05 * self.steps))
        if self.meta_every is None:
            set_("meta_every", 1 if self.procedure == "mltp" else 2)
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

    def full_validation(self, n_val: int) -> bool:
        """Whether the finder's validation term takes the whole split of n_val images: "full", or "auto"
        when the split holds at most two batches (a drawn batch only adds noise there)."""
        return self.meta_val == "full" or (self.meta_val == "auto" and n_val <= 2 * self.batch_size)

    @property
    def synthetic_kind(self) -> str:
        return "pcr" if self.method in ("pcr", "mgr") else "ce"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        """From config.json: unknown, ill-typed or invalid fields are refused, naming the field. A config
        written before a field existed gets what it ran (BEFORE_FIELD), not today's default: e.g. the
        finder's meta step every iteration (meta_every 1), a constant finder lr and a ReLU finder."""
        if isinstance(d, dict):
            d = {**BEFORE_FIELD, **without_removed_fields(d, where)}
        return typecheck.from_json(cls, d, where, required=("data", "method", "model", "steps"))


def without_removed_fields(d: dict, where: str = "config") -> dict:
    """A config dict without the fields that were removed (REMOVED_FIELDS); a ValueError saying what to do
    for a run that used the removed finite-difference hypergradient (order 'first')."""
    order = d.get("order", "second")
    if order == "first":
        raise ValueError(f"{where}: {FINITE_DIFFERENCE_REMOVED}")
    if order != "second":
        raise ValueError(f"{where}: order={order!r} is not allowed; the field was removed: every run uses the "
                         "exact hypergradient (leave the field out)")
    return {k: v for k, v in d.items() if k not in REMOVED_FIELDS}
