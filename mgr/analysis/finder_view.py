"""The Latents page's view of the finder F: does it follow a signal (the trainer's online hg_cos),
what it pushes toward (amplified shifts through G), how its shift grows and how consistent its
direction is over training, and how its samples differ from uniform ones.

hg_cos is the cosine of the hypergradient's lookahead part (the KL term's pull left out) with the
previous step's; kl_share, the KL term's share of its length, says when the finder is only being pulled
back to uniform sampling. The reading of hg_cos is the project's rule (docs/method.md#the-signal): a signal when the 95%
interval of its mean over the run's last quarter lies above 0.1, noise when it contains 0 or lies
below 0.1. At digits 10%, step 60, bench/meta_signal.py measured hg_cos 0.06 with a held-out test
at chance: noise. "Noise" is said of single steps only: on Fashion-MNIST 10% the steps agreed as little
(0.01-0.05) while the direction the finder accumulated lowered held-out CE for 16 of 16 draws, so the
reading points to that measurement instead of calling the finder's samples meaningless.

Data only: the page's sentences about these readings live in pages/_text.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runstore import Run, RunError

SIGNAL_THRESHOLD = 0.1  # a mean cosine above this between independent draws: a direction common to draws
SIGNAL_DOC = "docs/method.md#the-signal"
AMPLIFY = (0, 1, 2, 4, 8)


@dataclass
class SignalReading:
    steps: np.ndarray  # hg_cos per scalars.jsonl line (each a mean over --log-every steps)
    hg_cos: np.ndarray
    verdict: str | None  # "signal", "noise", "weak" (interval above 0 but not above 0.1), None: cannot say
    why: str | None = None  # verdict None: "no hg_cos" (the run logs none) or "too few" (one log line so far)
    mean: float = float("nan")  # over the last quarter's log lines
    low: float = float("nan")  # its 95% interval (Student t over those lines)
    high: float = float("nan")
    n: int = 0  # log lines in the last quarter
    kl_share: np.ndarray | None = None  # the KL term's share of the hypergradient per log line (None: not logged)
    kl_share_last: float = float("nan")  # its mean over the last quarter
    first: int = 0  # the first and last step of the last quarter
    last: int = 0


def signal_reading(scalars: dict[str, np.ndarray]) -> SignalReading:
    """The reading of a run's hg_cos from its scalars.jsonl columns (`curves.scalar_curves`). Runs
    that log no hg_cos (pcr, base, gda, runs older than the field) get a reading with verdict None."""
    from scipy import stats
    if "hg_cos" not in scalars or not np.isfinite(scalars["hg_cos"]).any():
        return SignalReading(np.array([]), np.array([]), None, "no hg_cos")
    ok = np.isfinite(scalars["hg_cos"])
    steps, cos = scalars["step"][ok], scalars["hg_cos"][ok]
    share = scalars["kl_share"][ok] if "kl_share" in scalars and np.isfinite(scalars["kl_share"][ok]).any() else None
    # the last quarter of the steps logged so far (a running run is read as it stands), at least 2 lines
    last = steps >= steps[-1] - (steps[-1] - steps[0]) / 4 if len(steps) > 1 else np.ones(1, bool)
    if last.sum() < 2:
        last = np.arange(len(steps)) >= len(steps) - 2
    x = cos[last]
    n = len(x)
    if n < 2:
        return SignalReading(steps, cos, None, "too few", n=n)
    mean = float(x.mean())
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
    low, high = mean - half, mean + half
    if low > SIGNAL_THRESHOLD:
        verdict = "signal"
    elif low <= 0 <= high or high < SIGNAL_THRESHOLD:
        verdict = "noise"
    else:
        verdict = "weak"
    share_last = float(np.nanmean(share[last])) if share is not None else float("nan")
    return SignalReading(steps, cos, verdict, None, mean, low, high, n, share, share_last, first=int(steps[last][0]),
                         last=int(steps[last][-1]))


def _static(run: Run) -> dict:
    static = run.load_probe("static")
    return {"z": static["probe_z"].astype(np.float64), "y": static["probe_y"].astype(int),
            "classes": [str(c) for c in static["classes"]]}


def _unit(v: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; a zero row (no shift) stays NaN, so no cosine is made up for it."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 1e-9, v / norm, np.nan)


def amplified_shifts(run: Run, step: int, per_class: int = 3, ks=AMPLIFY, device: str = "cpu") -> dict:
    """What the finder pushes toward: for the first `per_class` probe latents of each class,
    G(z + k·(F(z) − z), y) for each k (k = 0 the uniform sample, k = 1 the finder's). The shift is
    the probe's finder_z at `step`, so any evaluation step works with the run's generator.
    Returns ks, y and classes of the rows, the shift norms and images (rows × len(ks) × C×H×W, uint8)."""
    import torch

    from .models import loaded_models
    if per_class < 1:
        raise ValueError(f"per_class={per_class}: show at least 1 probe latent per class")
    ks = tuple(float(k) for k in ks)
    if not ks or min(ks) < 0:
        raise ValueError(f"amplification factors {ks} must be a non-empty list of numbers >= 0")
    st, p = _static(run), run.load_probe(step)
    y = st["y"]
    rows = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    z, shift = st["z"][rows], p["finder_z"][rows].astype(np.float64) - st["z"][rows]
    G = loaded_models(run, device)["G"]
    zs = np.concatenate([z + k * shift for k in ks])  # k-major: all rows at k0, then at k1, ...
    with torch.no_grad():
        x = G(torch.as_tensor(zs, dtype=torch.float32, device=device),
              torch.as_tensor(np.tile(y[rows], len(ks)), device=device))
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    images = images.reshape(len(ks), len(rows), *images.shape[1:]).swapaxes(0, 1)
    return {"ks": ks, "y": y[rows], "classes": st["classes"], "shift": np.linalg.norm(shift, axis=1),
            "images": images, "step": step}


def _mean_pairwise_cos(u: np.ndarray) -> float:
    """Mean cosine over distinct pairs of unit rows (NaN rows left out)."""
    u = u[np.isfinite(u).all(1)]
    if len(u) < 2:
        return float("nan")
    c = u @ u.T
    return float(c[np.triu_indices(len(u), 1)].mean())


def shift_history(run: Run) -> dict:
    """How the shift F(z) − z grows over training and how consistent its direction is, per evaluation
    step of the probes: mean and std of ‖F(z) − z‖; its part that depends on z (`spread`: mean ‖shift −
    the probes' mean shift‖, 0 for a finder that moves every latent by one vector); the mean pairwise
    cosine of the shifts of probes of the same class (averaged over classes), and of any two probes (the
    baseline: a shift that ignores z and y, such as a drifted bias, is as consistent across classes as
    within one); the mean cosine
    between a probe's shift and its shift at the previous evaluation (NaN at the first: a random walk
    scores high here too, since each shift holds the steps already taken). Cosines are NaN where there
    is no shift (uniform runs)."""
    st = _static(run)
    z, y = st["z"], st["y"]
    out = {k: [] for k in ("steps", "shift_mean", "shift_std", "spread", "same_class_cos", "any_probes_cos",
                           "successive_cos")}
    prev = None
    for step in run.probe_steps():
        try:
            shift = run.load_probe(step)["finder_z"].astype(np.float64) - z
        except (RunError, KeyError):  # a probe being written or damaged: the others still tell the story
            continue
        norm, u = np.linalg.norm(shift, axis=1), _unit(shift)
        per_class = [_mean_pairwise_cos(u[y == c]) for c in np.unique(y)]
        out["steps"].append(step)
        out["shift_mean"].append(float(norm.mean()))
        out["shift_std"].append(float(norm.std()))
        out["spread"].append(float(np.linalg.norm(shift - shift.mean(0), axis=1).mean()))
        out["same_class_cos"].append(float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"))
        out["any_probes_cos"].append(_mean_pairwise_cos(u))
        succ = np.sum(u * prev, axis=1) if prev is not None else np.array([np.nan])
        out["successive_cos"].append(float(np.nanmean(succ)) if np.isfinite(succ).any() else float("nan"))
        prev = u
    return {k: np.asarray(v, dtype=float) for k, v in out.items()} | {"steps": np.asarray(out["steps"], dtype=int)}


ONE_VECTOR = 0.1  # spread / shift below this: the shift is nearly the same vector for every probe
ONE_VECTOR_DOC = "docs/method.md#a-finder-that-adds-one-vector"


@dataclass
class OneVector:
    step: int
    shift: float  # mean ‖F(z) − z‖ of the probes at `step`
    spread: float  # its part that depends on z


def one_vector_reading(hist: dict, step: int) -> OneVector | None:
    """Whether, at `step`, the finder moves every probe latent by nearly the same vector (F(z) ≈ z + b):
    it then shifts the whole latent distribution and picks no latents, whatever the amplified images show.
    None when the shift depends on z, or there is no shift to judge."""
    at = np.flatnonzero(hist["steps"] == step)
    if not len(at):
        return None
    shift, spread = hist["shift_mean"][at[0]], hist["spread"][at[0]]
    if not shift > 1e-6 or spread >= ONE_VECTOR * shift:
        return None
    return OneVector(step, float(shift), float(spread))


SAMPLE_STATS = ("confidence", "margin", "diversity")


def sample_stats(run: Run, step: int) -> dict:
    """Uniform vs finder samples at one evaluation, per probe: the classifier's probability of the
    intended class y (confidence), that minus the best other class's (margin), and the mean feature
    distance to the other probes of its class (diversity: the class's mean pairwise distance, per
    probe so that it has a spread). Returns rows {class, kind, <stat>_mean, <stat>_std} for each class
    and for all probes ("all"), and the per-probe values {kind: {stat: array}} with y."""
    st, p = _static(run), run.load_probe(step)
    y = st["y"]
    if "uniform_probs" not in p:
        raise ValueError(f"run {run.id} uses no generator (method base): it has no synthetic samples to compare")
    idx = np.arange(len(y))
    per_probe = {}
    for kind in ("uniform", "finder"):
        probs, feats = p[f"{kind}_probs"].astype(np.float64), p[f"{kind}_features"].astype(np.float64)
        conf = probs[idx, y]
        other = probs.copy()
        other[idx, y] = -np.inf
        div = np.full(len(y), np.nan)
        for c in np.unique(y):
            m = np.flatnonzero(y == c)
            if len(m) > 1:
                d = np.linalg.norm(feats[m, None] - feats[None, m], axis=-1)
                div[m] = d.sum(1) / (len(m) - 1)
        per_probe[kind] = {"confidence": conf, "margin": conf - other.max(1), "diversity": div}
    rows = []
    for c in [*np.unique(y).tolist(), "all"]:
        m = np.ones(len(y), bool) if c == "all" else y == c
        for kind in ("uniform", "finder"):
            row = {"class": "all" if c == "all" else st["classes"][c], "kind": kind, "probes": int(m.sum())}
            for s in SAMPLE_STATS:
                v = per_probe[kind][s][m]
                v = v[np.isfinite(v)]
                row[f"{s}_mean"] = float(v.mean()) if len(v) else float("nan")
                row[f"{s}_std"] = float(v.std()) if len(v) else float("nan")
            rows.append(row)
    return {"rows": rows, "per_probe": per_probe, "y": y, "classes": st["classes"], "step": step}
