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

    def text(self, mean: float, ci95=None) -> str:
        """A mean over seeds as people read it, "+1.63 points" or "×38" (a ratio statistic's typical factor),
        and its 95% interval when given."""
        if self.ratio:
            value = f"×{self.shown(mean):.3g}"
            if ci95 is not None:
                lo, hi = (self.shown(x) for x in ci95)
                value += f" (95% interval ×{lo:.3g} to ×{hi:.3g})"
            return value
        value = f"{mean:+.2f} {self.unit}".rstrip()
        return value + (f" (95% interval {ci95[0]:+.2f} to {ci95[1]:+.2f})" if ci95 is not None else "")


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
    if stat is FINDER_LABEL_ACC:
        return finder_label_accuracy(run) if st.get("state") in ("finished", "failed") else None
    if st.get("state") == "finished" and metrics:
        last = metrics[-1]
        if stat is TEST_ACC:
            return 100.0 * last["test_acc"]
        return last.get(stat.name)
    if stat is LATENT_SHIFT and st.get("state") == "failed":
        m = _GUARD.search(st.get("error") or "")
        return float(m.group(1)) if m else None
    return None


_LABEL_ACC_CACHE: dict = {}


def finder_label_accuracy(run: Run) -> float | None:
    """The oracle's label accuracy (%) of the finder's probe samples at the run's last evaluation (None when it
    has none): how many of the images the moved latents give are still of the class asked for. The oracle is a
    measuring instrument (mgr.analysis.oracle); this reads a finished run's files and trains nothing."""
    from .analysis.demo_why import arm_samples, judge_samples
    from .analysis.files import probe_steps
    steps = probe_steps(run)
    if not steps:
        return None
    key = (str(run.path), steps[-1], (run.path / "probes" / f"step_{steps[-1]:07d}.npz").stat().st_mtime_ns)
    if key not in _LABEL_ACC_CACHE:
        samples = arm_samples(run.path.parent, [run.path.name], "finder")
        if samples is None:
            return None
        _LABEL_ACC_CACHE[key] = 100.0 * judge_samples(samples).label_accuracy
    return _LABEL_ACC_CACHE[key]


def seed_difference(stat: Statistic, a: float, b: float) -> float | None:
    """One seed's number from its two arms' values: A − B, or log(A / B) for a ratio statistic (None
    where a value is not positive: a ratio of it means nothing, and that seed is left out)."""
    if stat.ratio:
        return math.log(a / b) if a > 0 and b > 0 else None
    return a - b


def pair_values(demo: Demo, pair: Pair, values) -> list[tuple]:
    """Per seed, the (A, B) values of one pair, from per-seed values over the demo's arms (demo.arms order)."""
    ia, ib = demo.arm_index(pair.a), demo.arm_index(pair.b)
    return [(v[ia], v[ib]) for v in values]


def summarize_pairs(demo: Demo, values, stat: Statistic | None = None) -> tuple:
    """One paired summary per pair of the demo (its statistic, or `stat`) from per-seed values over its arms."""
    stat = stat or demo.statistic
    return tuple(summarize_seeds(stat, pair_values(demo, p, values)) for p in demo.pairs)


def overall_verdict(summaries) -> str:
    """A demo's headline: a two-arm demo's verdict; a sweep "holds" where any of its pairs holds (the pairs
    that do are named beside it), "opposite" where pairs are decided and all the other way."""
    verdicts = [s.verdict for s in summaries]
    if "holds" in verdicts:
        return "holds"
    return "opposite" if "opposite" in verdicts else "inconclusive"


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
    label: str  # short, used in run ids and legends: letters, digits, '.', '-'
    values: dict  # Train-form values (mgr.launch.form_fields names), the demo's setting included


@dataclass(frozen=True)
class Pair:
    """One comparison of a demo: each seed gives statistic(a) − statistic(b) (or log(a / b)). A sweep has
    one pair per dose and family: the dial's value `dose` in arm b, on the curve `family` (e.g. "gda")."""
    a: Arm
    b: Arm
    dose: float | None = None
    family: str = ""


KINDS = ("failure", "repair", "method")  # what a demo teaches: a way augmentation fails, its repair, a method


@dataclass(frozen=True)
class Demo:
    """A question answered by paired runs. `pairs` holds its comparisons (one for a two-arm demo, one per
    dose and family for a sweep); the runs are its distinct arms, each trained once per seed."""
    id: str
    question: str
    pairs: tuple
    statistic: Statistic
    about: str  # what differs between the arms, and what a positive difference means
    kind: str = "method"
    subject: str = "augmentation"  # what fails or is repaired: generative augmentation itself, or "the finder"
    dose: str = ""  # a sweep's dial for people, e.g. "synthetic weight λ" ("" for a demo without doses)
    log_dose: bool = False  # draw the dose axis on a log scale
    also: tuple = ()  # further statistics shown beside the verdict, compared the same way (the finder's harm)
    why: tuple = ("classes",)  # the pictures of its "why" panel (pages/_why.py): classes, oracle, grids
    datasets: tuple = ("fashion-mnist", "digits")  # the data it runs on (one whose arms name its generators: its own)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"demo {self.id}: kind={self.kind!r}; use one of {', '.join(KINDS)}")
        seen = {}
        for arm in (x for p in self.pairs for x in (p.a, p.b)):
            if seen.setdefault(arm.label, arm.values) != arm.values:
                raise ValueError(f"demo {self.id}: two arms are labelled {arm.label!r} with different values")

    @property
    def arms(self) -> tuple:
        """The distinct arms, in the order the pairs name them: what each seed trains."""
        return tuple({arm.label: arm for p in self.pairs for arm in (p.a, p.b)}.values())

    def arm_index(self, arm: Arm) -> int:
        return [a.label for a in self.arms].index(arm.label)

    @property
    def sweep(self) -> bool:
        return len(self.pairs) > 1

    @property
    def doses(self) -> tuple:
        return tuple(sorted({p.dose for p in self.pairs if p.dose is not None}))

    @property
    def families(self) -> tuple:
        return tuple(dict.fromkeys(p.family for p in self.pairs))

    def pair_label(self, pair: Pair) -> str:
        return f"{pair.a.label} {'/' if self.statistic.ratio else '−'} {pair.b.label}"

    @property
    def diff_label(self) -> str:
        return self.pair_label(self.pairs[0])

    @property
    def setting(self) -> dict:
        return self.pairs[0].a.values


def two_arms(id: str, question: str, a: Arm, b: Arm, statistic: Statistic, about: str, **kw) -> Demo:
    return Demo(id, question, (Pair(a, b),), statistic, about, **kw)


# The demos' settings: the data, a half-width SmallCNN (16-32-64 channels: 1.7× faster than the
# default 32 on this CPU, same for both arms) and a schedule short enough that 5 seeds × 2 arms take
# about a minute on 2 cores (docs/demos.md: the measurements behind these choices).
# - fashion-mnist (the default): 1% of Fashion-MNIST (540 training and 60 validation images of 28×28
#   clothing), where a generator's mistakes are visible; evaluated on a fixed stratified subset of 2 000
#   test images, the same for every run (all 10 000 at every evaluation cost more than a demo's training),
#   at steps 100 and 200 only: the statistic reads the last evaluation, and each one costs 0.7 s of a 12 s
#   gda run. No demo view reads train_acc, which cost 0.18 s of each evaluation (540 images): it is left out.
#   Seed k trains on the split of data seed k mod 3 (SPLITS), with that split's demo-sized generator (base
#   width 16, trained on the same split): a verdict then covers a split drawn at random, not one draw of
#   540 images. A width-32 G's forward was 15 of a demo pcr run's 35 s of training steps, the width-16 one's
#   is 3.3× faster;
# - digits: 10% of the 8×8 digits (116 training and 10 validation images), the fastest fallback, on its
#   default generator (None: the split's shipped one), which exists for data seed 0 only.
DEMO_GENERATOR = "fashion-mnist_ratio0.01_seed{data_seed}_w16.pt"  # in checkpoints/generators/, per data seed
WEAK_GENERATOR = "fashion-mnist_ratio0.01_seed{data_seed}_w16_step500.pt"  # the same recipe stopped at step 500
LEAKY_GENERATOR = "fashion-mnist_ratio0.1_seed0.pt"  # trained on 10% of the training set: 10× the 1% split
SPLITS = {"fashion-mnist": 3, "digits": 1}  # data seeds a demo's seeds cycle through, by dataset
SETTINGS = {
    "fashion-mnist": {"data.dataset": "fashion-mnist", "data.ratio": 0.01, "data.test_subset": 2000, "width": 16,
                      "steps": 200, "eval_every": 100, "batch_size": 32, "probes_per_class": 4, "probe_real": 200,
                      "train_acc_images": 0, "device": "auto", "generator": DEMO_GENERATOR},
    "digits": {"data.dataset": "digits", "data.ratio": 0.1, "data.test_subset": None, "width": 16, "steps": 200,
               "eval_every": 50, "batch_size": 64, "probes_per_class": 4, "probe_real": 200, "device": "auto",
               "train_acc_images": 0, "generator": None},
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
# The finder demos measure how far the finder moves the latents, which on Fashion-MNIST shows within the first
# evaluations, so there they run half the schedule: both arms train MGR, the slowest step, and at 200 steps they
# took 262-469 s, at 100 steps 118-119 s with the same verdicts. On digits (69 s at 200 steps) the setting's own
# 200 steps stay: at 100 the finder-lr effect was gone (docs/demos.md). They keep 10 probe latents per class, so
# the oracle's label accuracy of the finder's samples rests on 100 images per run.
SHORT = {"steps": 100, "eval_every": 25, "probes_per_class": 10}


def _arm(label: str, **values) -> Arm:
    return Arm(label, {**SETTING, **{k.replace("__", "."): v for k, v in values.items()}})


FINDER_LABEL_ACC = Statistic("finder_label_acc", "oracle label accuracy of the finder's probe samples at the last "
                                                 "evaluation", "points")

# Dose ranges (docs/demos.md#choosing-doses: each measured from a pilot on other seeds, wide enough that an effect
# shows if it exists)
WEIGHTS = (0.25, 1.0, 4.0)  # λ, the synthetic term's weight (the trainer's default is 1)
LABEL_NOISE = (0.25, 0.5, 1.0)  # share of synthetic labels replaced by a uniformly random class
NOISE_LAM = 4.0  # wrong-labels' synthetic weight: at λ = 1 no share of random labels measurably cost accuracy
PSI = (0.5, 0.25)  # latents z ~ N(0, ψ² I): the truncation trick, less variety at smaller ψ

BASE, GDA, PCR = _arm("base", method="base"), _arm("gda", method="gda"), _arm("pcr", method="pcr")
GDA_W4 = _arm("gda-w4", method="gda", lam=NOISE_LAM)

DEMOS = {d.id: d for d in (
    # ---------------------------------------------------------------- how generative augmentation fails
    two_arms("gda-hurts", "Does GDA hurt a small-data classifier?", BASE, GDA, TEST_ACC,
             "base trains on the real images only; gda adds the generator's images to the cross-entropy. "
             "A positive difference base − gda means the synthetic images hurt.",
             kind="failure", why=("oracle", "classes")),
    Demo("synthetic-weight", "Does more synthetic weight hurt more?",
         tuple(Pair(BASE, _arm(f"{m}-w{lam:g}", method=m, lam=lam), lam, m) for m in ("gda", "pcr") for lam in WEIGHTS),
         TEST_ACC,
         "GDA and PCR with the synthetic term weighted λ, each against base (real images only). A positive "
         "difference base − arm means that weight of synthetic images costs accuracy.",
         kind="failure", dose="synthetic weight λ", log_dose=True, why=("oracle", "classes")),
    Demo("weak-generator", "Does a weaker generator hurt more?",
         tuple(Pair(arm, _arm(f"{arm.label}-weak", method=arm.label, generator=WEAK_GENERATOR), family=arm.label)
               for arm in (GDA, PCR)),
         TEST_ACC,
         "The same training with the split's generator stopped at step 500 of its 2 000 (the shipped "
         "…_w16_step500.pt: blurrier, mostly off-class samples) against the final one. A positive difference "
         "final − weak means the weaker generator costs accuracy.",
         kind="failure", why=("grids", "classes"), datasets=("fashion-mnist",)),
    Demo("wrong-labels", "Do wrong-class samples hurt?",
         tuple(Pair(GDA_W4, _arm(f"gda-w4-noise{p:g}", method="gda", lam=NOISE_LAM, syn_label_noise=p), p, "gda-w4")
               for p in LABEL_NOISE),
         TEST_ACC,
         "GDA at synthetic weight λ = 4 with a share of its synthetic images' labels replaced by a random class, "
         "against the same GDA as it is. The generator already gets about a third of its samples wrong (the "
         "oracle's reading); the dose adds more. At λ = 1 no share measurably costs accuracy: the weight decides "
         "how much a wrong label is heard. A positive difference gda-w4 − noisy means wrong labels cost accuracy.",
         kind="failure", dose="share of synthetic labels made random", why=("oracle", "classes")),
    Demo("low-diversity", "Does low diversity hurt?",
         tuple(Pair(arm, _arm(f"{arm.label}-psi{psi:g}", method=arm.label, latent_psi=psi), psi, arm.label)
               for arm in (GDA, PCR) for psi in PSI),
         TEST_ACC,
         "Latents drawn as z ~ N(0, ψ² I) with ψ < 1 (the truncation trick: each class's samples crowd around "
         "its typical image) against ψ = 1. A positive difference ψ=1 − ψ means the lost variety costs accuracy.",
         kind="failure", dose="latent scale ψ (smaller: less variety)", log_dose=True, why=("grids", "classes")),
    Demo("leaky-generator", "Does a leaky generator inflate the accuracy?",
         tuple(Pair(_arm("gda-leaky", method="gda", generator=LEAKY_GENERATOR, leaky_generator=True), ref,
                    family=ref.label) for ref in (GDA, BASE)),
         TEST_ACC,
         "gda-leaky uses a generator trained on 10% of the training set, ten times the images this 1% "
         "classifier may see (the trainer refuses it unless told --leaky-generator); gda and base play by the "
         "rules. A positive difference means the leak makes the reported accuracy look better than the 1% of "
         "data allows: why the trainer checks a generator's split.",
         kind="failure", why=("oracle", "classes"), datasets=("fashion-mnist",)),
    # ---------------------------------------------------------------- repairs and methods
    two_arms("pcr-repairs", "Does PCR repair it?", PCR, GDA, TEST_ACC,
             "pcr uses the same synthetic images only through the consistency loss, gda in the cross-entropy. "
             "A positive difference pcr − gda means consistency uses them better.", kind="repair"),
    two_arms("finder-helps-pcr", "Does the finder help PCR?", _arm("mgr", **MGR), PCR, TEST_ACC,
             "mgr is pcr plus the finder (MPS, exact hypergradient), which meta-learns where to sample the "
             "latents. A positive difference mgr − pcr means the finder helps.", kind="repair"),
    two_arms("mltp-helps", "Does MLTP help?", _arm("mltp", **MLTP), BASE, TEST_ACC,
             "mltp is plain training under MLTP's first-order meta step (two real batches a step, a learnt step "
             "per tensor). A positive difference mltp − base means MLTP helps.", kind="method"),
    # Under MLTP, not MGR: MLTP's lookahead trains the classifier's weights, so the co-learner's gradient
    # reaches the shared feature extractor, as CML's reaches MAML's initialisation; under MPS it would reach
    # only the finder (docs/trainer.md#mltp-and-the-cml-co-learner). Both arms are also 3× cheaper than MGR's.
    two_arms("co-learner-helps", "Does the co-learner help MLTP?",
             _arm("mltp-co", **MLTP, co_learner=True), _arm("mltp", **MLTP), TEST_ACC,
             "mltp-co adds CML's co-learner head on MLTP's looked-ahead features (training only); its loss joins "
             "MLTP's objective, so its gradient reaches the classifier's features. A positive difference "
             "mltp-co − mltp means the co-learner helps.", kind="method"),
    # ---------------------------------------------------------------- how the finder fails
    two_arms("mlp-finder-leaves-support", "Does a plain MLP finder leave the generator's support?",
             _arm("mlp", **MGR, **SHORT, finder="mlp"), _arm("residual", **MGR, **SHORT), LATENT_SHIFT,
             "F(z) = MLP(z) against the residual F(z) = z + MLP(z). The statistic is how far the finder moves the "
             "latents; beyond 4·√z_dim the trainer's guard stops the run as failed (its garbage samples are not "
             "trained on). A factor mlp / residual above ×1 means the MLP finder moves them further. Beside it: "
             "what the moved latents do to the samples (their label accuracy) and to the classifier.",
             kind="failure", subject="the finder", also=(FINDER_LABEL_ACC, TEST_ACC), why=("grids", "classes")),
    two_arms("finder-lr-too-high", "Does a finder learning rate set too high move the latents too far?",
             _arm("lr-1e-1", **MGR, **SHORT, finder_lr=0.1), _arm("lr-1e-3", **MGR, **SHORT), LATENT_SHIFT,
             "The finder's Adam at learning rate 1e-1 against the default 1e-3. The statistic is how far the finder "
             "moves the latents; beyond 4·√z_dim the trainer's guard stops the run as failed. A factor lr-1e-1 / "
             "lr-1e-3 above ×1 means the high rate moves them further. Beside it: what the moved latents do to the "
             "samples (their label accuracy) and to the classifier.",
             kind="failure", subject="the finder", also=(FINDER_LABEL_ACC, TEST_ACC), why=("grids", "classes")),
)}


def get_demo(demo_id: str) -> Demo:
    if demo_id not in DEMOS:
        raise LaunchError(f"unknown demo {demo_id!r}; the demos are: {', '.join(DEMOS)}")
    return DEMOS[demo_id]


def check_data(demo: Demo, values: dict) -> None:
    """Refuse a demo on data it cannot run on (its arms name generators of Fashion-MNIST's 1% splits)."""
    if values.get("data.dataset") not in demo.datasets:
        raise LaunchError(f"demo {demo.id} runs on {', '.join(demo.datasets)} only (its arms use that data's shipped "
                          f"generators), not on {values.get('data.dataset')}", "data")


def check_seeds(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 2 <= seeds <= paired.MAX_SEEDS:
        raise LaunchError(f"seeds={seeds!r} is not allowed: a demo needs 2 to {paired.MAX_SEEDS} seeds "
                          "(an interval needs at least two differences)", "seeds")
    return seeds


def data_seed_of(values: dict, seed: int) -> int:
    """The data seed of a demo's seed k: k mod SPLITS of its dataset, so the seeds cover several splits (both
    arms of a seed share it, so the pairing holds); a data seed the overrides name stays."""
    return seed % SPLITS.get(values.get("data.dataset"), 1)


def arm_values(demo: Demo, arm: Arm, seed: int, overrides: dict | None = None) -> dict:
    """One run's form values: the arm's, then `overrides` (e.g. fewer steps), then the seed, and the seed's
    data split (data_seed_of) with that split's generator. Overriding `steps` alone keeps the demo's number of
    evaluations; overriding the data (another split) drops the setting's generator for that split's default
    one, unless `overrides` names a generator too."""
    overrides = overrides or {}
    values = {**arm.values, **overrides, "seed": seed}
    if "data.data_seed" not in overrides:
        values["data.data_seed"] = data_seed_of(values, seed)
    moved = [k for k in overrides if k.startswith("data.") and values[k] != arm.values.get(k)]
    if moved and "generator" not in overrides:
        values["generator"] = None  # the setting's generator fits its own split only; another split takes its own
    if isinstance(values.get("generator"), str):
        values["generator"] = values["generator"].format(data_seed=values.get("data.data_seed", 0))
    if "steps" in overrides and "eval_every" not in overrides:
        values["eval_every"] = max(1, round(arm.values["eval_every"] * values["steps"] / arm.values["steps"]))
    return values


# ----------------------------------------------------------------------------- results

def describe(demo: Demo, summary: paired.Paired, pair: Pair | None = None, stat: Statistic | None = None) -> str:
    """One line for people: the mean difference (or, for a ratio statistic, the typical factor: the
    exponential of the mean log ratio), its interval, wins, and the verdict in words (of the demo's first
    pair and its statistic unless told another)."""
    stat = stat or demo.statistic
    label = demo.pair_label(pair or demo.pairs[0])
    if summary.n == 0:
        return "no seed has both arms finished yet"
    if summary.ci95 is None:
        return f"{label} = {stat.text(summary.mean)} on 1 seed: no interval yet (it needs 2)"
    value = stat.text(summary.mean, summary.ci95)
    if stat.ratio:
        none, what, larger = "×1", "direction", "larger"
        value += ", the geometric mean over seeds"
    else:
        none, what, larger = "0", "sign", "positive"
    words = {"holds": f"holds: the whole interval is above {none}",
             "opposite": f"the opposite holds: the whole interval is below {none}",
             "inconclusive": f"inconclusive: the interval contains {none}, so these seeds allow either {what}"}
    return (f"{label} = {value}, {larger} in {summary.holds_in} of {summary.n} seeds → "
            f"{words[summary.verdict]}")
