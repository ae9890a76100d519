"""`python -m mgr export RUN --tensorboard DIR`: a run's files as TensorBoard reads them.

    scalars     every numeric field of metrics.jsonl as metrics/<field> (a list, the per-class test accuracy, as
                metrics/test_class_acc/<class index>) and of scalars.jsonl as
                train/<field>, at their steps (so `metrics/test_acc`, `train/ce`, ...)
    projector   each probe's features as an embedding (tag "features", one per probe step): the
                real subset, the uniform samples G(z, y) and, with a finder, the finder samples
                G(F(z), y); every point's image in the sprite and its class, kind (real,
                uniform-synthetic, finder-synthetic) and split (train, test, synthetic) as metadata

DIR must be new or empty: an export never mixes with another one's event files. It is written to
a hidden folder beside DIR and renamed into place at the end, so a failed export leaves nothing.
Only this module imports tensorboard (via torch.utils.tensorboard); the trainer never does.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import torch

from .runstore import Run, RunError, numeric_fields

KINDS = ("real", "uniform-synthetic", "finder-synthetic")
FINDER_METHODS = ("gda-mps", "mgr")  # runs whose probes hold finder samples distinct from the uniform ones


def export_tensorboard(run_dir, out_dir) -> dict:
    """Write the run's scalars and probe embeddings under out_dir; returns what was written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch.utils.tensorboard needs the tensorboard package
        raise RunError("exporting for TensorBoard needs the tensorboard package: pip install tensorboard==2.21.0") from e
    run = Run(run_dir)
    if not (run.path / "config.json").is_file():
        raise RunError(f"{run.path} is not a run directory (no config.json)")
    config = run.config
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} exists and is not an empty folder; export into a new folder (an export never "
                       "mixes its event files with another's)")
    probes = [(step, run.load_probe(step)) for step in run.probe_steps()]  # a damaged probe fails here, before writing
    static = run.load_probe("static") if probes else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    written = {"scalars": 0, "embeddings": 0}
    try:
        with SummaryWriter(log_dir=str(tmp)) as w:
            for prefix, records in (("metrics", run.metrics()), ("train", run.scalars())):
                for r in records:
                    for k, v in numeric_fields(r):
                        w.add_scalar(f"{prefix}/{k}", v, global_step=r["step"])
                        written["scalars"] += 1
            for step, arrays in probes:
                feats, images, meta = embedding(config, static, arrays)
                w.add_embedding(torch.from_numpy(feats), metadata=meta, label_img=torch.from_numpy(images),
                                global_step=step, tag="features", metadata_header=["class", "kind", "split"])
                written["embeddings"] += 1
        if out.exists():
            out.rmdir()  # empty (checked above); the rename below needs the name free
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def embedding(config: dict, static: dict, arrays: dict) -> tuple[np.ndarray, np.ndarray, list]:
    """One probe as (features N×D float32, images N×C×H×W in [0, 1], metadata rows [class, kind, split])."""
    classes = [str(c) for c in static["classes"]]
    feats = [arrays["real_features"]]
    images = [static["real_images"]]
    meta = [[classes[int(y)], "real", str(s)] for y, s in zip(static["real_labels"], static["real_split"])]
    sources = [("uniform", "uniform-synthetic")] if "uniform_features" in arrays else []
    if config.get("method") in FINDER_METHODS and "finder_features" in arrays:
        sources.append(("finder", "finder-synthetic"))
    for name, kind in sources:
        feats.append(arrays[f"{name}_features"])
        images.append(arrays[f"{name}_images"])
        meta += [[classes[int(y)], kind, "synthetic"] for y in static["probe_y"]]
    x = np.concatenate(images).astype(np.float32) / 255.0
    return np.concatenate(feats).astype(np.float32), x, meta
