"""From run directories to the data behind the app's figures. No Streamlit here: pages call these
functions and draw what they return, and the functions are tested without a browser.

Every reader tolerates a run that is still being written, has failed, or was deleted or corrupted
while a page is open: it returns what it can, with a message, instead of raising.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write, atomic_write_text
from .runstore import Run, default_runs_dir, list_runs

ANALYSIS = "analysis"  # <run>/analysis/: the app's cache (projections, FID); safe to delete
NOT_CURVES = ("step", "epoch", "elapsed")


# Fields that do not change what is trained: runs differing only in these are seeds of one configuration.
NOT_CONFIG = ("seed", "device", "compile", "eval_every", "log_every", "probes_per_class", "probe_real")
NOT_CONFIG_DATA = ("root", "download")


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING and not dataclasses.is_dataclass(f.type):
            out[f.name] = f.default_factory()
    return out


def resolved_config(raw: dict) -> dict:
    """A run's config.json with every field a run made by an older version lacks filled in: the
    TrainConfig as the trainer resolves it (lr, warm-up, α, T), or, where config.json does not
    validate any more, its own values over the dataclasses' defaults. Never raises KeyError."""
    from .data import DataConfig
    from .train import TrainConfig
    try:
        return TrainConfig.from_dict({"data": {}, "method": TrainConfig.method, "model": TrainConfig.model,
                                      "steps": TrainConfig.steps, **raw}).to_dict()
    except (ValueError, TypeError, KeyError, AttributeError):
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        return {**_defaults(TrainConfig), **raw, "data": {**_defaults(DataConfig), **data}}


def config_name(cfg: dict) -> str:
    """A configuration's short name: method, hypergradient order where a finder uses one, MLTP variant,
    co-learner; e.g. "mgr (first) + co", "base · mltp-fo", "pcr"."""
    name = str(cfg.get("method", "?"))
    if cfg.get("method") in ("gda-mps", "mgr"):
        name += f" ({cfg.get('order', '?')})"
    if cfg.get("procedure") == "mltp":
        name += f" · mltp-{cfg.get('mltp_variant', '?')}"
    if cfg.get("co_learner"):
        name += " + co" + ("" if cfg.get("co_learner_arch", "conv") == "conv" else f"-{cfg['co_learner_arch']}")
    return name


def _applies(name: str, cfg: dict) -> bool:
    """Whether a field changes what this run trains (λ_KL does nothing without a finder, α without MLTP)."""
    method = cfg.get("method")
    if name in ("lam_kl", "finder", "finder_lr", "order"):
        return method in ("gda-mps", "mgr")
    if name == "fd_eps":
        return method in ("gda-mps", "mgr") and cfg.get("order") == "first"
    if name in ("lam", "generator", "pcr_aug"):
        return method != "base" and (name != "pcr_aug" or method in ("pcr", "mgr"))
    if name.startswith("mltp_"):
        return cfg.get("procedure") == "mltp"
    if name.startswith("co_learner_"):
        return bool(cfg.get("co_learner"))
    return True


def config_items(cfg: dict) -> tuple:
    """Everything that defines what a run trains, except its seed: (name, value) pairs, hashable.
    Fields that do not apply to the run (λ_KL of a base run, α of a standard one) are left out."""
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    items = [(f"data.{k}", v) for k, v in sorted(data.items()) if k not in NOT_CONFIG_DATA]
    items += [(k, v) for k, v in sorted(cfg.items()) if k != "data" and k not in NOT_CONFIG and _applies(k, cfg)]
    return tuple((k, json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v) for k, v in items)


# what the short name already says, or what a label needs no more of
_NAMED = {"method", "order", "procedure", "mltp_variant", "co_learner", "co_learner_arch"}


def group_labels(keys: list[tuple]) -> dict[tuple, str]:
    """Readable names for configuration keys shown together: the short name, then dataset and size,
    then every other field whose value differs between the groups, e.g. "mgr (first) + co · digits 0.1 · lam=0.5"."""
    dicts = [dict(k) for k in keys]
    varying = [f for f in dict.fromkeys(f for d in dicts for f in d)  # among the groups where the field applies
               if f not in _NAMED and f not in ("data.dataset", "data.ratio")
               and len({json.dumps(d[f], sort_keys=True, default=str) for d in dicts if f in d}) > 1]
    out = {}
    for key, d in zip(keys, dicts):
        cfg = {k: v for k, v in d.items() if not k.startswith("data.")}
        ratio = d.get("data.ratio")
        size = f" {ratio:g}" if isinstance(ratio, (int, float)) else (f" {d['data.per_class']}/class" if d.get("data.per_class") else "")
        extra = "".join(f" · {f.removeprefix('data.')}={d[f]}" for f in varying if f in d)
        out[key] = f"{config_name(cfg)} · {d.get('data.dataset', '?')}{size}{extra}"
    return out


@dataclass
class RunSummary:
    id: str
    path: Path
    state: str  # running, finished, failed, stopped, killed (running, trainer gone), unknown (unreadable)
    dataset: str = "?"
    ratio: float | None = None
    method: str = "?"
    model: str = "?"
    order: str = "?"
    seed: int | None = None
    step: int = 0
    total_steps: int = 0
    best_val_acc: float | None = None
    best_step: int | None = None
    test_at_best: float | None = None  # test accuracy at the best validation step (model selection)
    final_test_acc: float | None = None
    error: str | None = None
    batch_size: int = 0
    status: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # resolved: every TrainConfig field, defaults where config.json lacks one

    @property
    def name(self) -> str:
        return config_name(self.config) if self.config else self.method

    @property
    def label(self) -> str:
        return f"{self.name} · {self.dataset} {self.ratio:g} · seed {self.seed}" if self.ratio else self.id

    @property
    def config_key(self) -> tuple:
        """Runs that differ only in their training seed (and how they were logged) share this key."""
        return config_items(self.config) if self.config else (("method", self.method),)


def summarize(run: Run) -> RunSummary:
    try:
        return _summarize(run)
    except (OSError, ValueError) as e:
        return RunSummary(run.id, run.path, "unknown", error=f"config.json unreadable: {e}")
    except (KeyError, TypeError, AttributeError) as e:
        return RunSummary(run.id, run.path, "unknown", error=f"run files are malformed ({type(e).__name__}: {e})")


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _summarize(run: Run) -> RunSummary:
    cfg = resolved_config(run.config)
    from .launch import run_state
    st = run.status()
    rows = [r for r in run.metrics() if _num(r.get("val_acc")) is not None]
    data = cfg["data"]
    s = RunSummary(run.id, run.path, run_state(run, st), dataset=str(data.get("dataset")),
                   ratio=data.get("ratio") or (1.0 if data.get("per_class") is None else None),
                   method=str(cfg.get("method")), model=str(cfg.get("model")), order=str(cfg.get("order")),
                   seed=cfg.get("seed"), step=rows[-1]["step"] if rows else st.get("step", 0),
                   total_steps=cfg.get("steps") or 0, error=st.get("error"), batch_size=cfg.get("batch_size") or 0,
                   status=st, config=cfg)
    if s.state == "killed":
        s.error = (f"the trainer (pid {st.get('pid')}) is gone without finishing (killed, or the machine restarted) "
                   f"at step {st.get('step', s.step)}; Resume continues it from its last checkpoint")
    if rows:
        best = max(rows, key=lambda r: (r["val_acc"], -r["step"]))  # the earliest of the best
        s.best_val_acc, s.best_step, s.test_at_best = best["val_acc"], best["step"], _num(best.get("test_acc"))
        s.final_test_acc = _num(rows[-1].get("test_acc"))
    return s


def runs_overview(runs_dir=None) -> list[RunSummary]:
    """Every run in runs_dir, summarised. A run directory that is a link to somewhere outside runs_dir
    is listed as `unknown` and never read: what the app shows comes from the runs folder only."""
    root = (Path(runs_dir) if runs_dir else default_runs_dir()).resolve()
    out = []
    for r in list_runs(root):
        if not r.path.resolve().is_relative_to(root):
            out.append(RunSummary(r.id, r.path, "unknown", error=f"{r.path} links to {r.path.resolve()}, outside the "
                                  f"runs directory {root}; the app reads runs only inside it (move or copy the run there)"))
        else:
            out.append(summarize(r))
    return out


def curves(run: Run) -> dict[str, np.ndarray]:
    """metrics.jsonl as columns; a field a line lacks is NaN there (methods log different fields)."""
    return columns(run.metrics())


def scalar_curves(run: Run) -> dict[str, np.ndarray]:
    """scalars.jsonl (training scalars every log_every steps) as columns, like `curves`."""
    return columns(run.scalars())


def columns(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) or v is None})
    return {k: np.array([r.get(k) if r.get(k) is not None else math.nan for r in rows], dtype=float) for k in keys}


def curve_fields(cols: dict[str, np.ndarray]) -> list[str]:
    """Every numeric field with at least one finite value: a new metric shows up with no code."""
    return [k for k, v in cols.items() if k not in NOT_CURVES and np.isfinite(v).any()]


def file_signature(*paths) -> tuple:
    """(mtime, size) of files, for cache keys: a rewritten or deleted file changes it."""
    sig = []
    for p in paths:
        try:
            st = Path(p).stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append(None)
    return tuple(sig)


# Series that follow a schedule or are learnt state, not noisy per-batch estimates: an EMA would only make
# them lag (the lr after a warm-up, MLTP's α), so the app draws them raw whatever the smoothing slider says.
RAW_FIELDS = ("lr", "epoch", "elapsed", "step")
RAW_PREFIXES = ("alpha_",)


def smoothable(name: str) -> bool:
    return name not in RAW_FIELDS and not name.startswith(RAW_PREFIXES)


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (weight 0 = raw); NaNs are skipped."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight {weight} must be in [0, 1)")
    out, last, n = np.full(len(values), np.nan), 0.0, 0
    for i, v in enumerate(values):
        if math.isnan(v):
            continue
        last, n = last * weight + (1 - weight) * v, n + 1
        out[i] = last / (1 - weight ** n)
    return out


def seed_table(summaries: list[RunSummary]) -> list[dict]:
    """Mean ± std of test accuracy (at best val, and final) over the seeds of each configuration
    (everything that defines a run but its seed: `RunSummary.config_key`), in first-seen order, each
    row named readably (`group_labels`) and listing its runs."""
    groups: dict[tuple, list[RunSummary]] = {}
    for s in summaries:
        if s.test_at_best is not None:
            groups.setdefault(s.config_key, []).append(s)
    labels = group_labels(list(groups))
    table = []
    for key, runs in groups.items():
        best = [r.test_at_best for r in runs]
        final = [r.final_test_acc for r in runs if r.final_test_acc is not None]
        first = runs[0]
        table.append({"config": labels[key], "name": first.name, "dataset": first.dataset, "ratio": first.ratio,
                      "method": first.method, "model": first.model, "order": first.order,
                      "procedure": first.config.get("procedure", "standard"),
                      "mltp_variant": first.config.get("mltp_variant") if first.config.get("procedure") == "mltp" else None,
                      "co_learner": bool(first.config.get("co_learner")), "seeds": len(runs),
                      "seed_list": [r.seed for r in runs], "runs": [r.id for r in runs], "key": key,
                      "test_at_best_mean": float(np.mean(best)),
                      "test_at_best_std": float(np.std(best, ddof=1)) if len(best) > 1 else 0.0,
                      "final_test_mean": float(np.mean(final)) if final else math.nan,
                      "final_test_std": float(np.std(final, ddof=1)) if len(final) > 1 else 0.0})
    return table


def group_curves(series: list[tuple[tuple, np.ndarray, np.ndarray]]) -> list[dict]:
    """Curves of the runs of each configuration on their common steps: [{key, steps, mean, std, n}]
    in first-seen order (a step only some seeds reached yet is left out, so a band never mixes n)."""
    groups: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
    for key, x, y in series:
        ok = np.isfinite(y)
        groups.setdefault(key, []).append((np.asarray(x)[ok], np.asarray(y)[ok]))
    out = []
    for key, members in groups.items():
        common = sorted(set.intersection(*(set(x.tolist()) for x, _ in members)))
        if not common:
            continue
        ys = np.stack([np.array([dict(zip(x.tolist(), y.tolist()))[c] for c in common]) for x, y in members])
        out.append({"key": key, "steps": np.array(common), "mean": ys.mean(0),
                    "std": ys.std(0, ddof=1) if len(members) > 1 else np.zeros(len(common)), "n": len(members)})
    return out


def centroid_margins(real_features: np.ndarray, real_labels: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
    """Where samples sit between the real class clusters.

    For each sample: its nearest and second-nearest real class centroid, and the margin
    (d2 − d1) / (d2 + d1) in [0, 1]: near 0 the sample lies on the boundary between two classes,
    near 1 deep inside one cluster."""
    classes = np.unique(real_labels)
    centroids = np.stack([real_features[real_labels == c].mean(0) for c in classes])
    d = np.linalg.norm(features[:, None, :] - centroids[None], axis=2)
    order = np.argsort(d, axis=1)
    d1, d2 = np.take_along_axis(d, order[:, :1], 1)[:, 0], np.take_along_axis(d, order[:, 1:2], 1)[:, 0]
    return {"nearest": classes[order[:, 0]], "second": classes[order[:, 1]],
            "margin": (d2 - d1) / np.maximum(d2 + d1, 1e-12)}


def between_pairs(margins: dict[str, np.ndarray], threshold: float = 0.1) -> dict[tuple[int, int], int]:
    """How many samples lie between each pair of classes (margin below threshold), by unordered pair."""
    counts: dict[tuple[int, int], int] = {}
    for a, b, m in zip(margins["nearest"], margins["second"], margins["margin"]):
        if m < threshold:
            key = (int(min(a, b)), int(max(a, b)))
            counts[key] = counts.get(key, 0) + 1
    return counts


# ----------------------------------------------------------------------------- probes: latents

def probe_steps(run: Run) -> list[int]:
    try:
        return run.probe_steps()
    except OSError:
        return []


def pca_fit(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA by SVD: (coords, mean, components k×d, explained variance ratio)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:k]
    # a fixed sign per component (largest |loading| positive): the same data gives the same picture
    comps = comps * np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]
    var = s ** 2
    return (x - mean) @ comps.T, mean, comps, var[:k] / max(var.sum(), 1e-12)


@dataclass
class LatentView:
    step: int
    classes: list[str]
    y: np.ndarray  # probe class per sample
    uniform_images: np.ndarray  # uint8 N×C×H×W, G(z, y)
    finder_images: np.ndarray  # G(F(z), y)
    uniform_conf: np.ndarray  # classifier's probability of the intended class
    finder_conf: np.ndarray
    uniform_pred: np.ndarray
    finder_pred: np.ndarray
    z_2d: np.ndarray  # z and F(z) in one basis: the top-2 principal directions of the shifts F(z) − z
    fz_2d: np.ndarray
    explained: np.ndarray  # variance ratio of the shifts (or of z without a finder) along each axis
    shift: np.ndarray  # ‖F(z) − z‖ per sample


def latent_view(run: Run, step: int) -> LatentView:
    static, p = run.load_probe("static"), run.load_probe(step)
    if "uniform_images" not in p:
        raise ValueError(f"run {run.id} uses no generator (method base): it has no synthetic samples to show")
    z, fz, y = static["probe_z"], p["finder_z"], static["probe_y"]
    shift = fz - z
    if np.abs(shift).max() > 1e-6:  # the plane in which the finder moves latents most
        _, _, comps, ratio = pca_fit(shift)
        xy = (np.concatenate([z, fz]) - z.mean(0)) @ comps.T
    else:  # no finder: the plane of largest variance of z
        xy, _, _, ratio = pca_fit(np.concatenate([z, fz]))
    idx = np.arange(len(y))
    return LatentView(step, [str(c) for c in static["classes"]], y, p["uniform_images"], p["finder_images"],
                      p["uniform_probs"][idx, y], p["finder_probs"][idx, y], p["uniform_probs"].argmax(1),
                      p["finder_probs"].argmax(1), xy[:len(z)], xy[len(z):], ratio, np.linalg.norm(fz - z, axis=1))


def mosaic(images: np.ndarray, ncols: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """uint8 N×C×H×W -> one H'×W'×3 image, row-major, `pad` white pixels between tiles; nearest
    upscaling by `scale` shows the real pixels of small images."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    if c == 1:
        images = np.repeat(images, 3, axis=1)
    images = images.repeat(scale, 2).repeat(scale, 3)
    h, w = h * scale, w * scale
    rows = max(1, math.ceil(n / ncols))
    out = np.full((rows * (h + pad) - pad, ncols * (w + pad) - pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, ncols)
        out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = img.transpose(1, 2, 0)
    return out


# ----------------------------------------------------------------------------- feature space

@dataclass
class FeatureMap:
    step: int
    method: str  # umap or pca
    params: dict
    real_xy: np.ndarray
    real_idx: np.ndarray  # indices into probes/static.npz real_* arrays
    real_labels: np.ndarray
    uniform_xy: np.ndarray  # empty for base runs
    finder_xy: np.ndarray
    probe_y: np.ndarray
    n_real_total: int
    seconds: float  # fit time
    cached: bool = False

    @property
    def subsampled(self) -> bool:
        return len(self.real_idx) < self.n_real_total


def _cache_dir(run: Run) -> Path:
    return run.path / ANALYSIS


def _key(params: dict) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def feature_map(run: Run, step: int, method: str = "umap", max_real: int = 5000, n_neighbors: int = 15,
                min_dist: float = 0.1, seed: int = 0) -> FeatureMap:
    """A 2-D map of g_ψ features at `step`: real probe images and the uniform and finder samples,
    fitted together. Cached on disk in <run>/analysis/ per (step, method, parameters), and
    refitted when the probe file changed (a resumed run rewrites it)."""
    if method not in ("umap", "pca"):
        raise ValueError(f"projection {method!r} is not one of umap, pca")
    params = {"method": method, "max_real": max_real, "seed": seed,
              **({"n_neighbors": n_neighbors, "min_dist": min_dist} if method == "umap" else {})}
    probe_file = run.path / "probes" / f"step_{step:07d}.npz"
    source = file_signature(probe_file)[0]
    if source is None:
        raise FileNotFoundError(f"run {run.id} has no probe at step {step}")
    cache = _cache_dir(run) / f"map_step{step:07d}_{_key(params)}.npz"
    static = run.load_probe("static")
    labels = static["real_labels"]
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if tuple(z["source"]) == tuple(source):
                    return FeatureMap(step, method, params, z["real_xy"], z["real_idx"], labels[z["real_idx"]],
                                      z["uniform_xy"], z["finder_xy"], z["probe_y"], len(labels), float(z["seconds"]),
                                      cached=True)
        except (OSError, ValueError, KeyError):
            pass  # a broken cache is refitted
    p = run.load_probe(step)
    rng = np.random.default_rng(seed)
    idx = np.arange(len(labels)) if len(labels) <= max_real else np.sort(rng.choice(len(labels), max_real, replace=False))
    parts = [p["real_features"][idx]]
    has_syn = "uniform_features" in p
    if has_syn:
        parts += [p["uniform_features"], p["finder_features"]]
    x = np.concatenate(parts).astype(np.float32)
    t0 = time.time()
    xy = project(x, method, n_neighbors=n_neighbors, min_dist=min_dist).astype(np.float32)
    seconds = time.time() - t0
    n, k = len(idx), len(p["uniform_features"]) if has_syn else 0
    probe_y = static["probe_y"] if has_syn else np.zeros(0, int)
    out = FeatureMap(step, method, params, xy[:n], idx, labels[idx], xy[n:n + k], xy[n + k:], probe_y, len(labels),
                     seconds)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, real_xy=out.real_xy, real_idx=idx, uniform_xy=out.uniform_xy, finder_xy=out.finder_xy,
                     probe_y=probe_y, seconds=seconds, source=np.array(source))
    try:
        atomic_write(cache, write)
    except OSError:
        pass  # a read-only run still gets its map, just not cached
    return out


def project(x: np.ndarray, method: str, n_neighbors: int = 15, min_dist: float = 0.1,
            seed: int | None = None) -> np.ndarray:
    if method == "pca" or len(x) < 10:
        return pca_fit(x)[0]
    import umap  # lazily: numba compilation is slow, and the trainer never needs it
    # No random_state by default: it makes UMAP single-threaded, 4.6x slower on the 7 000-point map here
    # (bench/app_speed.py: 318 s vs 69 s, contended 2-core CPU). The map a user sees again is the one
    # cached on disk, so a re-fit being slightly different costs little.
    return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist, random_state=seed,
                     init="pca").fit_transform(x)


def warm_umap() -> float:
    """Compile UMAP's numba kernels once per process (about 20 s cold); returns the seconds spent."""
    t0 = time.time()
    project(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32), "umap")
    return time.time() - t0


def place_on_map(features: np.ndarray, xy: np.ndarray, new_features: np.ndarray, k: int = 5) -> np.ndarray:
    """2-D positions for new points on a fitted map: the inverse-distance-weighted mean of their
    k nearest fitted points (UMAP's own initialisation for new data); exact for a point that
    coincides with a fitted one."""
    d = np.linalg.norm(new_features[:, None, :] - features[None], axis=2)
    nn = np.argsort(d, axis=1)[:, :k]
    dn = np.take_along_axis(d, nn, 1)
    w = 1.0 / np.maximum(dn, 1e-9)
    w = np.where(dn[:, :1] < 1e-9, (dn < 1e-9).astype(float), w)
    return (w[:, :, None] * xy[nn]).sum(1) / w.sum(1, keepdims=True)


def margin_table(run: Run, step: int, threshold: float = 0.1) -> dict:
    """How synthetic samples sit between the real class clusters at `step`: per class pair, how
    many uniform and finder samples lie between the pair (centroid margin < threshold), and per
    class the mean margin of each kind."""
    static, p = run.load_probe("static"), run.load_probe(step)
    if "uniform_features" not in p:
        return {"pairs": [], "classes": [], "threshold": threshold}
    classes = [str(c) for c in static["classes"]]
    real, labels, y = p["real_features"], static["real_labels"], static["probe_y"]
    m = {kind: centroid_margins(real, labels, p[f"{kind}_features"]) for kind in ("uniform", "finder")}
    counts = {kind: between_pairs(m[kind], threshold) for kind in m}
    pairs = sorted(set(counts["uniform"]) | set(counts["finder"]),
                   key=lambda k: -(counts["uniform"].get(k, 0) + counts["finder"].get(k, 0)))
    rows = [{"pair": f"{classes[a]} – {classes[b]}", "uniform": counts["uniform"].get((a, b), 0),
             "finder": counts["finder"].get((a, b), 0)} for a, b in pairs]
    per_class = [{"class": classes[c], "uniform margin": float(m["uniform"]["margin"][y == c].mean()),
                  "finder margin": float(m["finder"]["margin"][y == c].mean()),
                  "uniform between": int((m["uniform"]["margin"][y == c] < threshold).sum()),
                  "finder between": int((m["finder"]["margin"][y == c] < threshold).sum())}
                 for c in range(len(classes)) if (y == c).any()]
    return {"pairs": rows, "classes": per_class, "threshold": threshold,
            "uniform_total": int((m["uniform"]["margin"] < threshold).sum()),
            "finder_total": int((m["finder"]["margin"] < threshold).sum()), "n": len(y)}


# ----------------------------------------------------------------------------- consistency (PCR gaps)

def gap_history(run: Run) -> dict:
    """The per-sample PCR gaps ‖g(T(x_p)) − g(x_p)‖² of the probe samples at every evaluation:
    {"steps", "uniform": [array per step], "finder": [...], "y", "classes"}."""
    static = run.load_probe("static")
    out = {"steps": [], "uniform": [], "finder": [], "y": static.get("probe_y"),
           "classes": [str(c) for c in static["classes"]], "unreadable": []}
    for step in probe_steps(run):
        try:
            p = run.load_probe(step)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            out["unreadable"].append(step)  # deleted by a resume meanwhile, or corrupt
            continue
        if "uniform_gap" not in p:
            continue
        out["steps"].append(step)
        out["uniform"].append(p["uniform_gap"])
        out["finder"].append(p["finder_gap"])
    return out


def gap_extremes(run: Run, step: int, kind: str, k: int = 8) -> dict:
    """The k samples of one kind (uniform or finder) with the largest and the smallest PCR gap at
    `step`: their images x_p, augmented views T(x_p), gaps and classes."""
    if kind not in ("uniform", "finder"):
        raise ValueError(f"kind {kind!r} is not one of uniform, finder")
    static, p = run.load_probe("static"), run.load_probe(step)
    if f"{kind}_gap" not in p:
        raise ValueError(f"run {run.id} has no synthetic samples (method base)")
    gap = p[f"{kind}_gap"]
    order = np.argsort(gap)
    out = {}
    for name, idx in (("largest", order[::-1][:k]), ("smallest", order[:k])):
        out[name] = {"idx": idx, "gap": gap[idx], "y": static["probe_y"][idx],
                     "images": p[f"{kind}_images"][idx], "augmented": p[f"augmented_{kind}"][idx]}
    return out


# ----------------------------------------------------------------------------- models of a run

def _inside(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(r.resolve()) for r in roots)


def run_models(run: Run, device: str = "cpu") -> dict:
    """The generator, finder and classifier of a run's last checkpoint (last.pt), for views that
    must generate new samples. The generator must lie in the checkpoints folder or the runs
    folder: a run's config never makes the app read other paths."""
    import torch

    from . import checkpoint, paths
    from .finder import Finder
    from .gan import load_generator
    from .models.classifier import build_classifier
    from .train import CKPT_KIND, CKPT_VERSION, TrainConfig
    cfg = TrainConfig.from_dict(run.config)
    if not cfg.uses_generator:
        raise ValueError(f"run {run.id} uses no generator (method base)")
    gen = Path(cfg.generator) if cfg.generator else paths.generator_path(cfg.data.subset)
    if not _inside(gen, [paths.checkpoints_dir(), run.path.parent]):
        raise ValueError(f"generator {gen} is outside the checkpoints and runs folders; the app does not read it")
    G, gmeta = load_generator(gen, device=device)
    ck = checkpoint.load(run.path / "last.pt", CKPT_KIND, CKPT_VERSION, map_location=device)
    model = build_classifier(cfg.model, gmeta["num_classes"], gmeta["channels"])
    checkpoint.load_state(model, ck["model"], run.path / "last.pt")
    finder = None
    if "finder" in ck:
        finder = Finder(G.z_dim, cfg.finder)
        checkpoint.load_state(finder, ck["finder"], run.path / "last.pt")
        finder = finder.to(device).eval().requires_grad_(False)
    return {"G": G, "finder": finder, "model": model.to(device).eval(), "step": ck["meta"]["step"], "cfg": cfg,
            "classes": gmeta["classes"]}


@contextlib.contextmanager
def soft_labels(G):
    """Let G take a soft label matrix (N × classes) in place of class indices: each class
    embedding becomes the label-weighted mix of the classes' embeddings."""
    import torch

    class Soft(torch.nn.Module):
        def __init__(self, emb):
            super().__init__()
            self.emb = emb

        def forward(self, y):
            return y @ self.emb.weight if y.is_floating_point() else self.emb(y)

    swapped = []
    for m in G.modules():
        for name in ("class_gain", "class_bias"):
            emb = getattr(m, name, None)
            if isinstance(emb, torch.nn.Embedding):
                swapped.append((m, name, emb))
                setattr(m, name, Soft(emb))
    try:
        yield G
    finally:
        for m, name, emb in swapped:
            setattr(m, name, emb)


def interpolation(models: dict, z_a: np.ndarray, class_a: int, class_b: int, mode: str = "label", n: int = 9,
                  z_b: np.ndarray | None = None) -> dict:
    """Walk G from class a to class b: `label` keeps z and mixes the class embeddings; `latent`
    also moves z from z_a to z_b (e.g. a probe latent of each class). Returns the images
    (uint8), the classifier's features g_ψ and probabilities along the path."""
    import torch
    if mode not in ("label", "latent"):
        raise ValueError(f"interpolation mode {mode!r} is not one of label, latent")
    G, model = models["G"], models["model"]
    t = torch.linspace(0, 1, n)[:, None]
    za = torch.as_tensor(z_a, dtype=torch.float32)[None]
    zb = torch.as_tensor(z_b if (mode == "latent" and z_b is not None) else z_a, dtype=torch.float32)[None]
    z = (1 - t) * za + t * zb
    C = G.num_classes
    w = (1 - t) * torch.nn.functional.one_hot(torch.tensor(class_a), C) + t * torch.nn.functional.one_hot(
        torch.tensor(class_b), C)
    with torch.no_grad(), soft_labels(G):
        x = G(z, w.float())
        f = model.features(x)
        probs = torch.softmax(model.head(f), 1)
    return {"t": t[:, 0].numpy(), "images": ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy(),
            "features": f.numpy(), "probs": probs.numpy()}


def fid_uniform_vs_finder(run: Run, num: int = 2000, extractor: str = "auto") -> dict:
    """FID against the test split of `num` uniform samples G(z, y) and `num` finder samples
    G(F(z), y) at the run's last checkpoint, class-balanced, with the feature extractor named.
    Cached in <run>/analysis/fid_step<step>.json."""
    import torch

    from .data import load
    from .fid import Pipeline, class_sampler, frechet
    models = run_models(run)
    cache = _cache_dir(run) / f"fid_step{models['step']:07d}_{num}_{extractor}.json"
    try:
        return {**json.loads(cache.read_text()), "cached": True}
    except (OSError, ValueError):
        pass
    cfg = models["cfg"]
    data = load(cfg.data)
    pipe = Pipeline(extractor, cfg.data.dataset, "cpu")
    t0 = time.time()
    real = pipe.features(data.x_test)
    out = {"step": models["step"], "extractor": pipe.name, "num": num, "n_real": len(data.y_test), "reference": "test split"}
    for kind, finder in (("uniform", None), ("finder", models["finder"])):
        if kind == "finder" and finder is None:
            out["finder"] = None
            continue
        torch.manual_seed(0)  # the same z for both kinds
        fake = pipe.sampler_features(class_sampler(models["G"], data.num_classes, finder), models["G"].z_dim, num)
        out[kind] = round(frechet(fake, real), 3)
    out["seconds"] = round(time.time() - t0, 1)
    try:
        atomic_write_text(cache, json.dumps(out))
    except OSError:
        pass
    return {**out, "cached": False}


# ----------------------------------------------------------------------------- compare

def long_metrics(runs: list[Run]) -> list[dict]:
    """Every metrics.jsonl line of the runs in long form (run, step, field, value): the CSV of Compare."""
    rows = []
    for run in runs:
        for r in run.metrics():
            for k, v in r.items():
                if k != "step" and isinstance(v, (int, float)):
                    rows.append({"run": run.id, "step": r.get("step"), "field": k, "value": v})
    return rows
