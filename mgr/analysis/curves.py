"""Curves: a run's metrics.jsonl and scalars.jsonl as columns, TensorBoard's smoothing, the mean ± std
of a configuration's seeds on their common steps, and the long-form CSV of Compare."""
from __future__ import annotations

import math

import numpy as np

from ..runstore import Run, numeric_fields

NOT_CURVES = ("step", "epoch", "elapsed")


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


def long_metrics(runs: list[Run]) -> list[dict]:
    """Every metrics.jsonl line of the runs in long form (run, step, field, value): the CSV of Compare."""
    return [{"run": run.id, "step": r.get("step"), "field": k, "value": v}
            for run in runs for r in run.metrics() for k, v in numeric_fields(r)]
