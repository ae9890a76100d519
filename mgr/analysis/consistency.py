"""The Consistency page's data: the PCR gaps ‖g(T(x_p)) − g(x_p)‖² of the probe samples over
training, and the samples with the largest and smallest gaps."""
from __future__ import annotations

import zipfile

import numpy as np

from ..runstore import Run
from .files import probe_steps


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
