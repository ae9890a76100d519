"""Where shipped and produced files live. The checkpoints folder can be moved with $MGR_CHECKPOINTS."""
from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def checkpoints_dir() -> Path:
    return Path(os.environ.get("MGR_CHECKPOINTS", REPO / "checkpoints"))


def _slug(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_")


def generator_path(subset: dict) -> Path:
    """Default file of the generator for a split: e.g. generators/fashion-mnist_ratio0.01_seed0.pt, and
    generators/digits_ratio0.1_seed0_val0.3.pt for a split whose val_fraction is not the default (a
    subset records it only then), so that such a run never finds the default split's generator."""
    size = f"pc{subset['per_class']}" if "per_class" in subset else f"ratio{subset['ratio']:g}"
    val = f"_val{subset['val_fraction']}" if "val_fraction" in subset else ""
    return checkpoints_dir() / "generators" / f"{_slug(subset['dataset'])}_{size}_seed{subset['data_seed']}{val}.pt"


def extractor_path(dataset: str) -> Path:
    return checkpoints_dir() / "feature_extractors" / f"{_slug(dataset)}.pt"
