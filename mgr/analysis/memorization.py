"""Does a generator copy its training images? The three-sample data-copying test (Meehan, Chaudhuri and
Dasgupta, AISTATS 2020): compare the distances from generated images to their nearest training image with
the distances from held-out real images (never seen by the generator) to their nearest training image.

A generator that copies sits closer to its training images than fresh real data does: the Mann-Whitney U
statistic of the two distance samples, as a z-score, is then strongly negative (the paper's C_T; about 0
means "as close as new real data", positive means farther: underfitting). Distances are Euclidean in pixel
space of images in [-1, 1] (the paper also uses a feature space; pixels are what a viewer compares).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CopyingTest:
    generated_to_train: np.ndarray  # (N,) each generated image's distance to its nearest training image
    generated_nearest: np.ndarray   # (N,) the index of that training image
    heldout_to_train: np.ndarray    # (M,) each held-out real image's distance to its nearest training image
    z: float                        # Mann-Whitney z of generated vs held-out distances (< 0: closer, copying)

    def closest_pairs(self, k: int = 8) -> list[tuple[int, int, float]]:
        """(generated index, training index, distance) of the k generated images nearest a training image."""
        order = np.argsort(self.generated_to_train, kind="stable")[:k]
        return [(int(i), int(self.generated_nearest[i]), float(self.generated_to_train[i])) for i in order]


def nearest(queries, references, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, each query's nearest reference (images flattened, Euclidean)."""
    q = torch.as_tensor(np.asarray(queries), dtype=torch.float32).flatten(1)
    r = torch.as_tensor(np.asarray(references), dtype=torch.float32).flatten(1)
    if len(r) == 0 or q.shape[1:] != r.shape[1:]:
        raise ValueError(f"need reference images of the queries' shape; got {tuple(q.shape)} and {tuple(r.shape)}")
    dist, idx = [], []
    for i in range(0, len(q), batch):
        d = torch.cdist(q[i:i + batch], r)
        m = d.min(1)
        dist.append(m.values)
        idx.append(m.indices)
    return (torch.cat(dist).numpy(), torch.cat(idx).numpy()) if dist else (np.zeros(0), np.zeros(0, dtype=np.int64))


def mann_whitney_z(a: np.ndarray, b: np.ndarray) -> float:
    """z-score of the Mann-Whitney U statistic of samples a and b (normal approximation with the tie
    correction): negative when a tends to be smaller than b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("the Mann-Whitney test needs two non-empty samples")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    i = 0
    while i < len(both):  # average ranks over ties
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    _, counts = np.unique(both, return_counts=True)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - (counts ** 3 - counts).sum() / (n * (n - 1)))
    return float((u - n1 * n2 / 2) / math.sqrt(var)) if var > 0 else 0.0


def data_copying(generated, train, heldout) -> CopyingTest:
    """The three-sample test: generated and held-out images, each against the generator's training images."""
    g_dist, g_idx = nearest(generated, train)
    h_dist, _ = nearest(heldout, train)
    return CopyingTest(g_dist, g_idx, h_dist, mann_whitney_z(g_dist, h_dist))
