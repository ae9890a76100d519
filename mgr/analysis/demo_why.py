"""Why a demo's verdict came out as it did, read from the demo's own runs (no Streamlit: pages/_why.py draws
it): which test classes a pair's difference falls on, what the oracle says of the synthetic images the runs
trained on, and each arm's samples with their label accuracy and within-class variety.

Every picture comes from files the runs wrote: metrics.jsonl's per-class test accuracy at the last evaluation
and the probe images of the last evaluation (probes/step_*.npz: the generator's images of fixed probe latents,
uniform and through the finder). The oracle (mgr.analysis.oracle) is a measuring instrument only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runstore import Run, RunError, run_path
from .files import probe_steps


@dataclass(frozen=True)
class ClassCosts:
    """A pair's difference A − B of per-class test accuracy (points) at the last evaluation, over the seeds
    whose two runs have it."""
    classes: list
    per_seed: np.ndarray  # (seeds, K)

    @property
    def mean(self) -> np.ndarray:
        return self.per_seed.mean(0) if len(self.per_seed) else np.full(len(self.classes), np.nan)

    @property
    def n(self) -> int:
        return len(self.per_seed)


def last_class_accuracy(run: Run) -> list | None:
    """The per-class test accuracy of a finished run's last evaluation (None without one)."""
    try:
        metrics = run.metrics()
    except (OSError, RunError, ValueError):
        return None
    return metrics[-1].get("test_class_acc") if metrics and run.status().get("state") == "finished" else None


def class_names(run: Run) -> list:
    """The class names a run's probes record (its dataset's), else their indices."""
    try:
        return [str(c) for c in run.load_probe("static")["classes"]]
    except (OSError, RunError, KeyError, ValueError):
        return []


def class_costs(runs_dir, run_ids_a, run_ids_b) -> ClassCosts | None:
    """Per-class A − B over paired runs (run_ids_a[k] with run_ids_b[k]); None when no seed has both."""
    rows, classes = [], []
    for ia, ib in zip(run_ids_a, run_ids_b):
        if ia is None or ib is None:
            continue
        ra, rb = Run(run_path(runs_dir, ia)), Run(run_path(runs_dir, ib))
        a, b = last_class_accuracy(ra), last_class_accuracy(rb)
        if a is None or b is None or len(a) != len(b) or None in a or None in b:
            continue
        rows.append(100.0 * (np.asarray(a, float) - np.asarray(b, float)))
        classes = classes or class_names(ra) or [str(k) for k in range(len(a))]
    return ClassCosts(classes, np.array(rows)) if rows else None


@dataclass(frozen=True)
class Samples:
    """An arm's probe images of its last evaluation, pooled over its runs: uint8 N×C×H×W and the class each was
    generated for."""
    images: np.ndarray
    asked: np.ndarray
    classes: list
    dataset: str
    which: str  # "uniform" (latents as drawn) or "finder" (through the finder)

    @property
    def n(self) -> int:
        return len(self.asked)


def arm_samples(runs_dir, run_ids, which: str = "uniform") -> Samples | None:
    """The `which` probe images of each run's last evaluation, pooled (runs without probes are left out). Runs
    that share a generator and probe latents repeat each other's images: only the distinct ones are kept."""
    images, asked, classes, dataset, seen = [], [], [], None, set()
    for run_id in run_ids:
        if run_id is None:
            continue
        run = Run(run_path(runs_dir, run_id))
        steps = probe_steps(run)
        if not steps:
            continue
        try:
            step, static = run.load_probe(steps[-1]), run.load_probe("static")
        except (OSError, RunError, ValueError):
            continue
        key = f"{which}_images"
        if key not in step or "probe_y" not in static:
            continue
        fingerprint = hash(step[key].tobytes())
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        images.append(step[key])
        asked.append(static["probe_y"])
        classes = classes or [str(c) for c in static["classes"]]
        dataset = dataset or run.config["data"]["dataset"]
    if not images:
        return None
    return Samples(np.concatenate(images), np.concatenate(asked), classes, dataset, which)


def judge_samples(samples: Samples):
    """The oracle's reading (mgr.analysis.oracle.OracleReading) of an arm's pooled probe images."""
    from .oracle import judge
    return judge(samples.dataset, samples.images.astype(np.float32) / 127.5 - 1, samples.asked)


def within_class_spread(samples: Samples) -> float:
    """Within-class variety: the mean pixel distance between two images generated for the same class (images in
    [-1, 1], averaged over classes with at least two images). Truncated latents crowd each class together."""
    x = samples.images.reshape(samples.n, -1).astype(np.float32) / 127.5 - 1
    spreads = []
    for k in np.unique(samples.asked):
        xi = x[samples.asked == k]
        if len(xi) < 2:
            continue
        d = np.sqrt(np.maximum(((xi[:, None, :] - xi[None, :, :]) ** 2).sum(-1), 0))
        spreads.append(d[np.triu_indices(len(xi), 1)].mean())
    return float(np.mean(spreads)) if spreads else float("nan")


def first_run(run_ids) -> str | None:
    """The first run id of an arm that has a directory (for a link to its pages)."""
    return next((r for r in run_ids if r is not None), None)


def exists(runs_dir, run_id: str | None) -> bool:
    return run_id is not None and (Path(runs_dir) / run_id / "config.json").exists()
