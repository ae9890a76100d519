"""The Latents page's data: for the same probe latents z, the uniform samples G(z, y) and the
finder's G(F(z), y), the classifier's confidence in each, and z and F(z) in the plane where the
finder moves latents most."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runstore import Run
from .projection import pca


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
        fitted = pca(shift)
        xy = (np.concatenate([z, fz]) - z.mean(0)) @ fitted.components_.T
    else:  # no finder: the plane of largest variance of z
        both = np.concatenate([z, fz]).astype(np.float64)
        fitted = pca(both)
        xy = fitted.transform(both)
    ratio = fitted.explained_variance_ratio_
    idx = np.arange(len(y))
    return LatentView(step, [str(c) for c in static["classes"]], y, p["uniform_images"], p["finder_images"],
                      p["uniform_probs"][idx, y], p["finder_probs"][idx, y], p["uniform_probs"].argmax(1),
                      p["finder_probs"].argmax(1), xy[:len(z)], xy[len(z):], ratio, np.linalg.norm(fz - z, axis=1))
