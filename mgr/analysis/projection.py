"""2-D pictures of high-dimensional points: PCA, UMAP (numba compiles its kernels for about 12 s of a
core the first time, then loads them from numba's disk cache; imported lazily), and the placement of new
points on a fitted map."""
from __future__ import annotations

import functools
import sys
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsRegressor


def pca(x: np.ndarray, k: int = 2) -> PCA:
    """sklearn's PCA fitted to x (exact SVD, in float64). Its sign convention makes each component's
    largest loading positive, so the same data always gives the same picture, not a mirror of it."""
    x = np.asarray(x, dtype=np.float64)
    return PCA(n_components=min(k, *x.shape), svd_solver="full").fit(x)


def project(x: np.ndarray, method: str, n_neighbors: int = 15, min_dist: float = 0.1,
            seed: int | None = None) -> np.ndarray:
    if method == "pca" or len(x) < 10:
        return pca(x).transform(np.asarray(x, dtype=np.float64))
    umap = _umap()
    # No random_state by default: it makes UMAP single-threaded, 4.6x slower on the 7 000-point map here
    # (bench/app_speed.py: 318 s vs 69 s, contended 2-core CPU). The map a user sees again is the one
    # cached on disk, so a re-fit being slightly different costs little.
    return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist, random_state=seed,
                     init="pca").fit_transform(x)


@functools.cache  # once per process: the kernels' dispatchers are module globals
def _umap():
    """The umap module, its numba kernels cached on disk. umap-learn compiles most of them without numba's
    cache=True, so every process paid about 12 s of a core (2-core AMD EPYC) to compile them again; with the
    cache, numba compiles them once per installation, and a later process's warm-up, the import included,
    takes about 1 s. numba keeps the cache beside umap's sources, or in the user's cache folder when those
    are read-only, and recompiles a kernel whose source changed."""
    import umap  # lazily: numba compilation is slow, and the trainer never needs it
    from numba.core.dispatcher import Dispatcher
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("umap", "pynndescent") and module is not None:
            for f in list(vars(module).values()):
                if isinstance(f, Dispatcher) and type(f._cache).__name__ == "NullCache":
                    f.enable_caching()
    return umap


def warm_umap() -> float:
    """Compile (or load from numba's cache) UMAP's kernels once per process; returns the seconds spent."""
    t0 = time.time()
    project(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32), "umap")
    return time.time() - t0


def map_placer(features: np.ndarray, xy: np.ndarray, k: int = 5) -> KNeighborsRegressor:
    """The fitted placement of `place_on_map`, to keep when many new points come one at a time
    (its .predict(new_features) places them)."""
    return KNeighborsRegressor(n_neighbors=min(k, len(features)), weights="distance").fit(features, xy)


def place_on_map(features: np.ndarray, xy: np.ndarray, new_features: np.ndarray, k: int = 5) -> np.ndarray:
    """2-D positions for new points on a fitted map: the inverse-distance-weighted mean of the map
    positions of their k nearest fitted points in feature space (UMAP's own initialisation for new
    data); a point that coincides with a fitted one lands exactly on it."""
    return map_placer(features, xy, k).predict(new_features)
