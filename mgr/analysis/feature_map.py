"""The Feature space page's map: g_ψ features of real probe images and of the uniform and finder
samples at one evaluation, projected to 2-D together and cached on disk per (step, projection,
parameters), refitted when the probe file changes."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..checkpoint import atomic_write
from ..runstore import Run
from .files import cache_dir, file_signature, params_key
from .projection import project


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
    cache = cache_dir(run) / f"map_step{step:07d}_{params_key(params)}.npz"
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
