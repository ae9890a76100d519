"""Teaching demos as paired experiments: what each demo asks, its two arms, its statistic, and the
summary of its seeds (no Streamlit, no processes here: mgr/demo_queue.py runs demos, pages/home.py
shows them, bench/demos.py measures them with the same code, mgr/demo_records.py reads its records).

A demo asks one question ("Does GDA hurt a small-data classifier?") and answers it with two arms
(two Train-form configurations) run for N seeds each. Seed k of both arms shares the data split
and the classifier's initialisation (docs/demos.md says where the arms' random streams part).
Each seed gives one difference of the demo's statistic, arm A − arm B (for a size that spans orders of
magnitude, the latent shift, the log of the ratio A / B), and mgr.paired turns them into a mean, a 95%
interval and a verdict.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from . import paired
from .launch import LaunchError
from .runstore import Run

# ----------------------------------------------------------------------------- what a demo is

@dataclass(frozen=True)
class Statistic:
    """What one run contributes to its seed's difference. `value(run)` is None while it has none."""
    name: str
    label: str  # for people: what is measured, and when
    unit: str
    # How a seed's two values become one number: "difference" A − B, or "log ratio" log(A / B), for a size
    # whose failures span orders of magnitude: a run the finder's guard stops at a shift of 40 beside 0.3 is
    # ×130, and as a difference (+40) one such seed swamps the others' +0.5 in a t-interval, so a failure
    # that happens in every seed, only worse in some, reads "inconclusive" (docs/demos.md).
    compare: str = "difference"

    def __post_init__(self):
        if self.compare not in ("difference", "log ratio"):
            raise ValueError(f"Statistic {self.name}: compare={self.compare!r}; use 'difference' or 'log ratio'")

    @property
    def ratio(self) -> bool:
        return self.compare == "log ratio"

    def shown(self, d: float) -> float:
        """A seed's number (or their mean, or an end of its interval) as people read it: the difference
        itself, or for a ratio statistic the factor exp(log ratio)."""
        return math.exp(d) if self.ratio else d


TEST_ACC = Statistic("test_acc", "test accuracy at the last step", "points")
LATENT_SHIFT = Statistic("latent_shift", "mean latent shift ‖F(z) − z‖ over the last evaluation interval", "",
                         compare="log ratio")
# the trainer's guard error: "... mean latent shift ‖F(z) − z‖ = 37.2 > 4·√z_dim = 32 ..."
_GUARD = re.compile(r"latent shift ‖F\(z\) − z‖ = ([0-9.eE+-]+) >")


def statistic_value(stat: Statistic, run: Run) -> float | None:
    """The statistic of a run that has one: a finished run's last evaluation; for the latent shift
    also a run the finder's guard stopped (the shift it stopped at: that is the failure shown)."""
    st = run.status()
    metrics = run.metrics()
    if st.get("state") == "finished" and metrics:
        last = metrics[-1]
        if stat is TEST_ACC:
            return 100.0 * last["test_acc"]
        return last.get(stat.name)
    if stat is LATENT_SHIFT and st.get("state") == "failed":
        m = _GUARD.search(st.get("error") or "")
        return float(m.group(1)) if m else None
    return None


def seed_difference(stat: Statistic, a: float, b: float) -> float | None:
    """One seed's number from its two arms' values: A − B, or log(A / B) for a ratio statistic (None
    where a value is not positive: a ratio of it means nothing, and that seed is left out)."""
    if stat.ratio:
        return math.log(a / b) if a > 0 and b > 0 else None
    return a - b


def summarize_seeds(stat: Statistic, values) -> paired.Paired:
    """The paired summary of per-seed values [(A, B), ...] (None where a run has no value yet): the
    seeds with both values, each as `seed_difference` compares them."""
    return paired.summarize([d for a, b in values if a is not None and b is not None
                             and (d := seed_difference(stat, a, b)) is not None])


def stopped_by_guard(run: Run) -> bool:
    """Whether the finder's guard ended the run (its latents left the generator's prior)."""
    st = run.status()
    return st.get("state") == "failed" and _GUARD.search(st.get("error") or "") is not None


@dataclass(frozen=True)
class Arm:
    label: str  # short, used in run ids and legends: letters, digits, '-'
    values: dict  # Train-form values (mgr.launch.form_fields names), the demo's setting included


@dataclass(frozen=True)
class Demo:
    id: str
    question: str
    arms: tuple  # (A, B): each seed's difference is statistic(A) − statistic(B); "holds" when it is > 0
    statistic: Statistic
    about: str  # what differs between the arms, and what a positive difference means
    failure_mode: bool = False

    @property
    def diff_label(self) -> str:
        return f"{self.arms[0].label} {'/' if self.statistic.ratio else '−'} {self.arms[1].label}"

    @property
    def setting(self) -> dict:
        return self.arms[0].values


# The demos' settings: the data, a half-width SmallCNN (16-32-64 channels: 1.7× faster than the
# default 32 on this CPU, same for both arms) and a schedule short enough that 5 seeds × 2 arms take
# minutes on 2 cores (docs/demos.md: the measurements behind these choices).
# - fashion-mnist (the default): 1% of Fashion-MNIST (540 training and 60 validation images of 28×28
#   clothing), where a generator's mistakes are visible; evaluated on a fixed stratified subset of 2 000
#   test images, the same for every run (all 10 000 at every evaluation cost more than a demo's training).
#   Its generator is the demo-sized one (base width 16, trained on the same split): a width-32 G's forward
#   was 15 of a demo pcr run's 35 s of training steps, the width-16 one's is 3.3× faster;
# - digits: 10% of the 8×8 digits (116 training and 10 validation images), the fastest fallback, on its
#   default generator (None: the split's shipped one).
DEMO_GENERATOR = "fashion-mnist_ratio0.01_seed0_w16.pt"  # a name in checkpoints/generators/: the same on every clone
SETTINGS = {
    "fashion-mnist": {"data.dataset": "fashion-mnist", "data.ratio": 0.01, "data.test_subset": 2000, "width": 16,
                      "steps": 200, "eval_every": 50, "batch_size": 32, "probes_per_class": 4, "probe_real": 200,
                      "device": "auto", "generator": DEMO_GENERATOR},
    "digits": {"data.dataset": "digits", "data.ratio": 0.1, "data.test_subset": None, "width": 16, "steps": 200,
               "eval_every": 50, "batch_size": 64, "probes_per_class": 4, "probe_real": 200, "device": "auto",
               "generator": None},
}
DEFAULT_DATA = "fashion-mnist"
SETTING = SETTINGS[DEFAULT_DATA]
DATA_LABELS = {"fashion-mnist": "Fashion-MNIST 1% (28×28 clothing)", "digits": "digits 10% (8×8, fastest)"}


def data_overrides(data: str) -> dict:
    """The overrides that move a demo from its default data to `data` (a key of SETTINGS): the whole
    setting, schedule included, so a failure-mode demo's shorter Fashion-MNIST run is 200 steps on digits
    (at 100 steps the finder-lr demo lost its effect there: docs/demos.md)."""
    if data not in SETTINGS:
        raise LaunchError(f"unknown demo data {data!r}; choose one of {', '.join(SETTINGS)}", "data")
    return {} if data == DEFAULT_DATA else dict(SETTINGS[data])


MLTP = {"method": "base", "procedure": "mltp", "mltp_variant": "fo"}  # plain training under MLTP's first-order step
MGR = {"method": "mgr"}  # the exact hypergradient (the finite-difference order is retired: docs/method.md)
# The failure-mode demos measure how far the finder moves the latents, which on Fashion-MNIST shows within
# the first evaluations, so there they run half the schedule: both arms train MGR, the slowest step, and at
# 200 steps they took 262-469 s, at 100 steps 118-119 s with the same verdicts. On digits (69 s at 200 steps)
# the setting's own 200 steps stay: at 100 the finder-lr effect was gone (docs/demos.md).
SHORT = {"steps": 100, "eval_every": 25}


def _arm(label: str, **values) -> Arm:
    return Arm(label, {**SETTING, **{k.replace("__", "."): v for k, v in values.items()}})


DEMOS = {d.id: d for d in (
    Demo("gda-hurts", "Does GDA hurt a small-data classifier?",
         (_arm("base", method="base"), _arm("gda", method="gda")), TEST_ACC,
         "base trains on the real images only; gda adds the generator's images to the cross-entropy. "
         "A positive difference base − gda means the synthetic images hurt."),
    Demo("pcr-repairs", "Does PCR repair it?",
         (_arm("pcr", method="pcr"), _arm("gda", method="gda")), TEST_ACC,
         "pcr uses the same synthetic images only through the consistency loss, gda in the cross-entropy. "
         "A positive difference pcr − gda means consistency uses them better."),
    Demo("finder-helps-pcr", "Does the finder help PCR?",
         (_arm("mgr", **MGR), _arm("pcr", method="pcr")), TEST_ACC,
         "mgr is pcr plus the finder (MPS, exact hypergradient), which meta-learns where to sample the "
         "latents. A positive difference mgr − pcr means the finder helps."),
    Demo("mltp-helps", "Does MLTP help?",
         (_arm("mltp", **MLTP), _arm("base", method="base")), TEST_ACC,
         "mltp is plain training under MLTP's first-order meta step (two real batches a step, a learnt step "
         "per tensor). A positive difference mltp − base means MLTP helps."),
    # Under MLTP, not MGR: MLTP's lookahead trains the classifier's weights, so the co-learner's gradient
    # reaches the shared feature extractor, as CML's reaches MAML's initialisation; under MPS it would reach
    # only the finder (docs/trainer.md#mltp-and-the-cml-co-learner). Both arms are also 3× cheaper than MGR's.
    Demo("co-learner-helps", "Does the co-learner help MLTP?",
         (_arm("mltp-co", **MLTP, co_learner=True), _arm("mltp", **MLTP)), TEST_ACC,
         "mltp-co adds CML's co-learner head on MLTP's looked-ahead features (training only); its loss joins "
         "MLTP's objective, so its gradient reaches the classifier's features. A positive difference "
         "mltp-co − mltp means the co-learner helps."),
    Demo("mlp-finder-leaves-support", "A plain MLP finder leaves the generator's support",
         (_arm("mlp", **MGR, **SHORT, finder="mlp"), _arm("residual", **MGR, **SHORT)), LATENT_SHIFT,
         "F(z) = MLP(z) against the residual F(z) = z + MLP(z). The statistic is how far the finder moves the "
         "latents; beyond 4·√z_dim the trainer's guard stops the run as failed (its garbage samples are not "
         "trained on). A factor mlp / residual above ×1 means the MLP finder moves them further.", True),
    Demo("finder-lr-too-high", "A finder learning rate set too high",
         (_arm("lr-1e-1", **MGR, **SHORT, finder_lr=0.1), _arm("lr-1e-3", **MGR, **SHORT)), LATENT_SHIFT,
         "The finder's Adam at learning rate 1e-1 against the default 1e-3. The statistic is how far the finder "
         "moves the latents; beyond 4·√z_dim the trainer's guard stops the run as failed. A factor lr-1e-1 / "
         "lr-1e-3 above ×1 means the high rate moves them further.", True),
)}


def get_demo(demo_id: str) -> Demo:
    if demo_id not in DEMOS:
        raise LaunchError(f"unknown demo {demo_id!r}; the demos are: {', '.join(DEMOS)}")
    return DEMOS[demo_id]


def check_seeds(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 2 <= seeds <= paired.MAX_SEEDS:
        raise LaunchError(f"seeds={seeds!r} is not allowed: a demo needs 2 to {paired.MAX_SEEDS} seeds "
                          "(an interval needs at least two differences)", "seeds")
    return seeds


def arm_values(demo: Demo, arm: Arm, seed: int, overrides: dict | None = None) -> dict:
    """One run's form values: the arm's, then `overrides` (e.g. fewer steps), then the seed. Overriding
    `steps` alone keeps the demo's number of evaluations; overriding the data (another split) drops the
    setting's generator for that split's default one, unless `overrides` names a generator too."""
    overrides = overrides or {}
    values = {**arm.values, **overrides, "seed": seed}
    moved = [k for k in overrides if k.startswith("data.") and values[k] != arm.values.get(k)]
    if moved and "generator" not in overrides:
        values["generator"] = None  # the setting's generator fits its own split only; another split takes its own
    if "steps" in overrides and "eval_every" not in overrides:
        values["eval_every"] = max(1, round(arm.values["eval_every"] * values["steps"] / arm.values["steps"]))
    return values


# ----------------------------------------------------------------------------- results

def describe(demo: Demo, summary: paired.Paired) -> str:
    """One line for people: the mean difference (or, for a ratio statistic, the typical factor: the
    exponential of the mean log ratio), its interval, wins, and the verdict in words."""
    unit = f" {demo.statistic.unit}" if demo.statistic.unit else ""
    ratio = demo.statistic.ratio
    if summary.n == 0:
        return "no seed has both arms finished yet"
    if summary.ci95 is None:
        value = f"×{demo.statistic.shown(summary.mean):.3g}" if ratio else f"{summary.mean:+.2f}{unit}"
        return f"{demo.diff_label} = {value} on 1 seed: no interval yet (it needs 2)"
    lo, hi = summary.ci95
    if ratio:
        none, what, larger = "×1", "direction", "larger"
        mean, lo, hi = (demo.statistic.shown(x) for x in (summary.mean, lo, hi))
        value = f"×{mean:.3g} (95% interval ×{lo:.3g} to ×{hi:.3g}, the geometric mean over seeds)"
    else:
        none, what, larger = "0", "sign", "positive"
        value = f"{summary.mean:+.2f}{unit} (95% interval {lo:+.2f} to {hi:+.2f})"
    words = {"holds": f"holds: the whole interval is above {none}",
             "opposite": f"the opposite holds: the whole interval is below {none}",
             "inconclusive": f"inconclusive: the interval contains {none}, so these seeds allow either {what}"}
    return (f"{demo.diff_label} = {value}, {larger} in {summary.holds_in} of {summary.n} seeds → "
            f"{words[summary.verdict]}")
