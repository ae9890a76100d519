"""Where samples sit between the real class clusters in g_ψ feature space (PCR's premise: synthetic
samples fill the space between classes): each sample's margin between its two nearest class
centroids, the counts of samples between each pair of classes, and the same fraction for real
held-out images as the reference that turns the premise into a measurement."""
from __future__ import annotations

import math

import numpy as np

from ..runstore import Run


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


def cluster_basis(static: dict, real_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The real images whose class centroids define the clusters: the probe's training-split half
    (the images the classifier learns from), so its held-out test half can serve as a reference.
    All real probe images where the training half misses a class (a tiny probe), or for probes
    written before real_split existed."""
    labels = static["real_labels"]
    split = static.get("real_split")
    if split is not None:
        train = split == "train"
        if set(np.unique(labels[train])) == set(np.unique(labels)):
            return real_features[train], labels[train]
    return real_features, labels


def margin_table(run: Run, step: int, threshold: float = 0.1) -> dict:
    """How synthetic samples sit between the real class clusters at `step`, against a reference:
    per class pair, how many uniform and finder samples lie between the pair (centroid margin <
    threshold); per class the mean margin of each kind; and the fraction of uniform samples, of
    finder samples and of real held-out test images (the probe's real_split == "test" half, which
    the centroids never saw) that lie between two clusters, with a one-line reading."""
    static, p = run.load_probe("static"), run.load_probe(step)
    if "uniform_features" not in p:
        return {"pairs": [], "classes": [], "threshold": threshold}
    classes = [str(c) for c in static["classes"]]
    real, labels = cluster_basis(static, p["real_features"])
    y = static["probe_y"]
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
    split = static.get("real_split")
    test = split == "test" if split is not None else np.zeros(len(static["real_labels"]), bool)
    real_test = centroid_margins(real, labels, p["real_features"][test])["margin"] if test.any() else np.zeros(0)
    out = {"pairs": rows, "classes": per_class, "threshold": threshold,
           "uniform_total": int((m["uniform"]["margin"] < threshold).sum()),
           "finder_total": int((m["finder"]["margin"] < threshold).sum()), "n": len(y),
           "real_test_total": int((real_test < threshold).sum()), "n_real_test": len(real_test)}
    return {**out, **between_fractions(out)}


def compared_with(k: int, n: int, k_ref: int, n_ref: int) -> str:
    """"more often", "less often" or "about as often": k/n against k_ref/n_ref by a two-proportion z
    test at the 5% level, so a handful of probe samples is not read as an effect."""
    pooled = (k + k_ref) / (n + n_ref)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n_ref))
    z = (k / n - k_ref / n_ref) / se if se else 0.0
    return "more often" if z > 1.96 else "less often" if z < -1.96 else "about as often"


def between_fractions(table: dict) -> dict:
    """The fractions of uniform, finder and real test samples between two clusters in a margin table, and how
    each kind of sample compares with the real held-out images (compared_with: PCR's premise, "synthetic samples
    sit between the real clusters", as a measurement against real images, which sit there by chance only).
    pages/_text.between_reading says it in words."""
    n, n_ref = table["n"], table["n_real_test"]
    fu, ff = table["uniform_total"] / n, table["finder_total"] / n
    if not n_ref:
        return {"uniform_fraction": fu, "finder_fraction": ff, "real_test_fraction": None}
    return {"uniform_fraction": fu, "finder_fraction": ff, "real_test_fraction": table["real_test_total"] / n_ref,
            **{f"{kind}_vs_real": compared_with(table[f"{kind}_total"], n, table["real_test_total"], n_ref)
               for kind in ("uniform", "finder")}}
