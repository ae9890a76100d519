"""From run directories to the data behind the app's figures. No Streamlit here: pages call these
functions and draw what they return, and the functions are tested without a browser.

Every reader tolerates a run that is still being written, has failed, or was deleted or corrupted
while a page is open: it returns what it can, with a message, instead of raising.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runstore import Run, list_runs


@dataclass
class RunSummary:
    id: str
    path: Path
    state: str  # running, finished, failed, stopped, unknown (unreadable)
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

    @property
    def label(self) -> str:
        return f"{self.method} · {self.dataset} {self.ratio:g} · seed {self.seed}" if self.ratio else self.id

    @property
    def config_key(self) -> tuple:
        """Runs that differ only in their training seed share this key (mean ± std over seeds)."""
        return (self.dataset, self.ratio, self.method, self.model, self.order)


def summarize(run: Run) -> RunSummary:
    try:
        cfg = run.config
    except (OSError, ValueError) as e:
        return RunSummary(run.id, run.path, "unknown", error=f"config.json unreadable: {e}")
    st = run.status()
    rows = run.metrics()
    s = RunSummary(run.id, run.path, st.get("state", "unknown"), dataset=cfg["data"]["dataset"],
                   ratio=cfg["data"].get("ratio") or (1.0 if cfg["data"].get("per_class") is None else None),
                   method=cfg["method"], model=cfg["model"], order=cfg.get("order", "?"), seed=cfg.get("seed"),
                   step=rows[-1]["step"] if rows else st.get("step", 0), total_steps=cfg["steps"], error=st.get("error"))
    if rows:
        best = max(rows, key=lambda r: (r["val_acc"], -r["step"]))  # the earliest of the best
        s.best_val_acc, s.best_step, s.test_at_best = best["val_acc"], best["step"], best["test_acc"]
        s.final_test_acc = rows[-1]["test_acc"]
    return s


def runs_overview(runs_dir=None) -> list[RunSummary]:
    return [summarize(r) for r in list_runs(runs_dir)]


def curves(run: Run) -> dict[str, np.ndarray]:
    """metrics.jsonl as columns; a field a line lacks is NaN there (methods log different fields)."""
    rows = run.metrics()
    keys = sorted({k for r in rows for k in r})
    return {k: np.array([r.get(k, math.nan) for r in rows], dtype=float) for k in keys}


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
    """Mean ± std of test accuracy (at best val, and final) over the seeds of each configuration."""
    groups: dict[tuple, list[RunSummary]] = {}
    for s in summaries:
        if s.test_at_best is not None:
            groups.setdefault(s.config_key, []).append(s)
    table = []
    for (dataset, ratio, method, model, order), runs in groups.items():
        best, final = [r.test_at_best for r in runs], [r.final_test_acc for r in runs]
        table.append({"dataset": dataset, "ratio": ratio, "method": method, "model": model, "order": order,
                      "seeds": len(runs), "test_at_best_mean": float(np.mean(best)),
                      "test_at_best_std": float(np.std(best, ddof=1)) if len(runs) > 1 else 0.0,
                      "final_test_mean": float(np.mean(final)),
                      "final_test_std": float(np.std(final, ddof=1)) if len(runs) > 1 else 0.0})
    return table


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
