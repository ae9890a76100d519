"""A generator's own training images, rebuilt from its checkpoint's metadata, and the data-copying test
against them: what bench/generators.py measures for every shipped generator and the Data page for the one
a user picks (with the oracle's reading of the same samples, mgr/analysis/oracle.py).

A generator records the split it was trained on (dataset, ratio or per_class, data seed, val_fraction where
not the default) and that split's fingerprint (`split_hash`); the split is rebuilt from the first and checked
against the second, so a copying test never runs against other images than the generator saw. Its
training images are the split's `x_train` (the validation part is never shown to it); the fresh real
images of the test are the dataset's test images, which neither the generator nor any run trains on.
"""
from __future__ import annotations

from pathlib import Path

from ..data import Data, DataConfig, DataError, load
from .memorization import CopyingTest, data_copying


def split_config(meta: dict, download: bool = True) -> DataConfig:
    """The DataConfig of the split a generator's metadata names."""
    subset = {"ratio": meta["ratio"]} if meta.get("ratio") is not None else {"per_class": meta["per_class"]}
    val = {"val_fraction": meta["val_fraction"]} if meta.get("val_fraction") is not None else {}
    return DataConfig(meta["dataset"], data_seed=meta["data_seed"], download=download, **subset, **val)


def training_split(path: str | Path, meta: dict, download: bool = True) -> Data:
    """The split generator `path` (metadata `meta`) was trained on. Raises DataError where its data is not on
    this machine (and `download` is off or fails), or where the split rebuilt here is not the generator's."""
    data = load(split_config(meta, download))
    if data.split_hash != meta["split_hash"]:
        raise DataError(f"{path}: its split could not be rebuilt here (split_hash {data.split_hash}, the "
                        f"generator's {meta['split_hash']})")
    return data


def copying_test(images, data: Data, heldout: int) -> CopyingTest:
    """The three-sample test (memorization.data_copying) of generated `images` against the split's training
    images, with the dataset's first `heldout` test images as the fresh real data."""
    return data_copying(images, data.x_train.numpy(), data.x_test.numpy()[:heldout])
