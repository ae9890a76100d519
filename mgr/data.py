"""Datasets by name, the reduced (train / val) split of a data seed, and the full test set.

Every image the project touches is a float tensor in [-1, 1], shape (N, C, H, W): the range of
the generator's tanh output, so real and synthetic images need no conversion between them.
Images are normalised once, at load time, and small datasets then live on the training device.

Splits are a function of (dataset, ratio or per_class, data_seed) only, never of the training
seed: seeds of a benchmark vary the initialisation on the same subset, and a generator trained
on a subset can be checked against a classifier run by the subset's fingerprint (`split_hash`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import fashion_mnist

DEBIAN_FASHION_MNIST = fashion_mnist.DEBIAN_DIR  # where Debian's package puts it (read through fashion_mnist)
VAL_FRACTION = 0.1  # the default share of each kept class that becomes the validation split
MAX_VAL_FRACTION = 0.5  # above it a class of 2 or 3 kept images would have no training image left
HOLDOUT_FRACTION = 0.3  # test share for datasets without an official split (digits, imagefolder)


class DataError(ValueError):
    """A dataset request that cannot be served; the message says what was wrong and what works."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    resolution: int  # default side length; fixed-size datasets ignore --resolution
    hflip: bool  # whether a horizontal flip keeps an image in its class (augmentation default)
    source: str  # how the files are obtained, shown in errors and in the app
    fixed_size: bool = True


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 1, 8, False, "bundled with scikit-learn (no download)"),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, True, fashion_mnist.SOURCE),
    "cifar10": DatasetInfo("cifar10", 3, 32, True, "torchvision download"),
    "cifar100": DatasetInfo("cifar100", 3, 32, True, "torchvision download"),
    "svhn": DatasetInfo("svhn", 3, 32, False, "torchvision download"),
    "cars": DatasetInfo("cars", 3, 64, True, "torchvision download (StanfordCars)", False),
    "aircraft": DatasetInfo("aircraft", 3, 64, True, "torchvision download (FGVCAircraft)", False),
    "dtd": DatasetInfo("dtd", 3, 64, True, "torchvision download (DTD)", False),
    "flowers102": DatasetInfo("flowers102", 3, 64, True, "torchvision download (Flowers102)", False),
    "pets": DatasetInfo("pets", 3, 64, True, "torchvision download (OxfordIIITPet)", False),
}
IMAGEFOLDER_PREFIX = "imagefolder:"


def known_datasets() -> list[str]:
    return [*DATASETS, IMAGEFOLDER_PREFIX + "<path>"]


def dataset_info(name: str) -> DatasetInfo:
    if name in DATASETS:
        return DATASETS[name]
    if name.startswith(IMAGEFOLDER_PREFIX):
        path = name[len(IMAGEFOLDER_PREFIX):]
        return DatasetInfo(name, 3, 32, True, f"your class-per-folder images in {path}", False)
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(known_datasets())}")


@dataclass(frozen=True)
class DataConfig:
    """Which images a run (or a generator) may see. Validated on construction."""
    dataset: str = "digits"
    ratio: float | None = None  # fraction of each class kept; default 1.0 when per_class is unset
    per_class: int | None = None  # alternatively, images kept per class
    data_seed: int = 0
    resolution: int | None = None  # only for datasets of variable image size; None = default
    root: str = field(default_factory=lambda: os.environ.get("MGR_DATA_ROOT", "data"))
    download: bool = True
    # test images a run evaluates at each evaluation: a fixed stratified subset, the same for every run
    # and seed (test_subset_indices); None: the whole test set. Demos use it: Fashion-MNIST's 10 000 test
    # images cost more per evaluation on a CPU than a demo-sized run's training
    test_subset: int | None = None
    # share of each kept class that becomes the validation split (round(val_fraction * n), at least 1);
    # the kept images stay the same, only where the train / val cut falls moves
    val_fraction: float = VAL_FRACTION

    def __post_init__(self):
        info = dataset_info(self.dataset)  # raises for an unknown name
        if self.ratio is not None and self.per_class is not None:
            raise DataError("give either ratio or per_class, not both "
                            f"(got ratio={self.ratio}, per_class={self.per_class})")
        if self.ratio is not None and not (0 < self.ratio <= 1):
            raise DataError(f"ratio={self.ratio} is outside (0, 1]; use e.g. 0.1 for 10% of each class")
        if self.per_class is not None and self.per_class < 2:
            raise DataError(f"per_class={self.per_class} is too small; each class needs at least 2 "
                            "images (one for training, one for validation)")
        if self.resolution is not None and not (4 <= self.resolution <= 256):
            raise DataError(f"resolution={self.resolution} is outside [4, 256]")
        if self.resolution is not None and info.fixed_size and self.resolution != info.resolution:
            raise DataError(f"dataset {self.dataset!r} has a fixed size of {info.resolution}x{info.resolution}; "
                            "resolution applies only to cars, aircraft, dtd, flowers102, pets and imagefolder:")
        if self.data_seed < 0:
            raise DataError(f"data_seed={self.data_seed} must be >= 0")
        if self.test_subset is not None and (isinstance(self.test_subset, bool) or not isinstance(self.test_subset, int)
                                             or self.test_subset < 10):
            raise DataError(f"test_subset={self.test_subset!r} is not allowed; give a number of test images >= 10, "
                            "or leave it unset for the whole test set")
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0 < vf <= MAX_VAL_FRACTION):
            raise DataError(f"val_fraction={vf!r} is not allowed; give a number in (0, {MAX_VAL_FRACTION:g}], the share "
                            f"of each kept class that becomes the validation split (default {VAL_FRACTION:g}): every "
                            "class keeps at least 1 validation and 1 training image")

    @property
    def subset(self) -> dict:
        """The part of the config that fixes which images are seen (checkpoint metadata). val_fraction
        only where it is not the default, so that generators made before it existed still match."""
        if self.per_class is not None:
            out = {"dataset": self.dataset, "per_class": self.per_class, "data_seed": self.data_seed}
        else:
            out = {"dataset": self.dataset, "ratio": self.ratio if self.ratio is not None else 1.0,
                   "data_seed": self.data_seed}
        if self.val_fraction != VAL_FRACTION:
            out["val_fraction"] = float(self.val_fraction)
        return out


@dataclass
class Data:
    """A dataset in memory: reduced train, val and full test, images in [-1, 1]."""
    name: str
    classes: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_idx: np.ndarray  # indices into the dataset's full training set
    val_idx: np.ndarray
    hflip: bool
    source: str = ""  # where the images were read from (e.g. Debian's package, the bundled subset)
    skipped: list = field(default_factory=list)  # (file, reason) of what an image folder had but was not used

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def resolution(self) -> int:
        return self.x_train.shape[-1]

    @property
    def split_hash(self) -> str:
        return split_hash(self.train_idx, self.val_idx)

    def to(self, device) -> "Data":
        for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def summary(self) -> str:
        from .imagefolder import skipped_summary
        return (f"{self.name}: {self.num_classes} classes, {self.channels}x{self.resolution}x"
                f"{self.resolution}, train {len(self.y_train)}, val {len(self.y_val)}, "
                f"test {len(self.y_test)}" + (f" (from {self.source})" if self.source else "")
                + (f"; {skipped_summary(self.skipped)}" if self.skipped else ""))


def split_hash(train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.sort(train_idx).astype(np.int64).tobytes())
    h.update(b"|")
    h.update(np.sort(val_idx).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- splits

def reduce_split(labels: np.ndarray, *, ratio: float | None = None, per_class: int | None = None,
                 data_seed: int = 0, classes: list[str] | None = None,
                 val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Stratified reduced training set, then a stratified validation part carved from it.

    Returns (train_idx, val_idx), disjoint, sorted, indexing `labels`. Each class is shuffled
    once by the data seed and its first n images are kept, so the subsets of one seed are nested
    (the 1% subset lies inside the 10% one). Validation takes round(val_fraction · n) of each kept
    class (default 10%), at least one image, and at least one must be left for training. The kept
    images do not depend on val_fraction: it moves only where the train / val cut falls.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(data_seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        name = classes[c] if classes is not None else str(c)
        if per_class is not None:
            if per_class > len(idx):
                raise DataError(f"per_class={per_class} but class {name!r} has only {len(idx)} "
                                f"training images; use at most {min(np.bincount(labels))}")
            n = per_class
        else:
            n = int(round((1.0 if ratio is None else ratio) * len(idx)))
            if n < 2:
                raise DataError(f"ratio={ratio} keeps {n} image(s) of class {name!r} (of {len(idx)}); "
                                "each class needs at least 2 (one for training, one for validation), "
                                f"so use ratio >= {2 / len(idx):.4f}")
        kept = rng.permutation(idx)[:n]
        n_val = max(1, int(round(val_fraction * n)))
        if n_val >= n:
            raise DataError(f"val_fraction={val_fraction} takes {n_val} of the {n} kept image(s) of class {name!r} "
                            "for validation and leaves none for training; use a smaller val_fraction "
                            f"(at most {MAX_VAL_FRACTION:g}) or keep more images per class")
        val.append(kept[:n_val])
        train.append(kept[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ----------------------------------------------------------------------------- loading

@dataclass
class Raw:
    """A dataset as read: x as uint8 (N, C, H, W) (or a fashion_mnist.PartialTrainSet indexed like one)."""
    x_train: object
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    source: str = ""
    skipped: list = field(default_factory=list)


def load(cfg: DataConfig, device: str | torch.device = "cpu") -> Data:
    """Load the dataset, carve the reduced train / val split of cfg (and its test subset) and move it to `device`."""
    info = dataset_info(cfg.dataset)
    raw = _load_raw(cfg, info)
    train_idx, val_idx = _split(cfg, raw.y_train, raw.classes)
    x_full, y_full = raw.x_train, raw.y_train
    test = slice(None) if cfg.test_subset is None else test_subset_indices(raw.y_test, cfg.test_subset)
    data = Data(
        name=cfg.dataset, classes=raw.classes,
        x_train=_normalise(x_full[train_idx]), y_train=torch.as_tensor(y_full[train_idx]).long(),
        x_val=_normalise(x_full[val_idx]), y_val=torch.as_tensor(y_full[val_idx]).long(),
        x_test=_normalise(raw.x_test[test]), y_test=torch.as_tensor(raw.y_test[test]).long(),
        train_idx=train_idx, val_idx=val_idx, hflip=info.hflip, source=raw.source, skipped=raw.skipped,
    )
    return data.to(device)


def test_subset_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """A fixed, stratified subset of n test images (sorted indices): each class keeps its share of n
    (largest remainders), taken from one permutation per class under a seed of its own, so the subset
    does not depend on a run's seeds and a smaller subset lies inside a larger one."""
    labels = np.asarray(labels)
    if n > len(labels):
        raise DataError(f"test_subset={n} is more than the {len(labels)} test images; give at most {len(labels)}, "
                        "or leave it unset for the whole test set")
    classes, counts = np.unique(labels, return_counts=True)
    share = n * counts / len(labels)
    k = np.floor(share).astype(int)
    k[np.argsort(k - share)[: n - k.sum()]] += 1  # the largest remainders take what rounding down left
    rng = np.random.default_rng(20261202)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:m] for c, m in zip(classes, k)]))


def _split(cfg: DataConfig, labels: np.ndarray, classes: list[str]):
    return reduce_split(labels, ratio=cfg.ratio, per_class=cfg.per_class, data_seed=cfg.data_seed, classes=classes,
                        val_fraction=cfg.val_fraction)


def _normalise(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    return torch.from_numpy(np.require(x_uint8, requirements=["C", "W"])).float().div_(127.5).sub_(1.0)


def _load_raw(cfg: DataConfig, info: DatasetInfo) -> Raw:
    if cfg.dataset == "digits":
        return _load_digits()
    if cfg.dataset == "fashion-mnist":
        return _load_fashion_mnist(cfg)
    if cfg.dataset.startswith(IMAGEFOLDER_PREFIX):
        return _load_imagefolder(cfg.dataset[len(IMAGEFOLDER_PREFIX):], cfg.resolution or info.resolution)
    return _load_torchvision(cfg, info)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (1797, 8, 8) images in 0..16 and their labels, read from the CSV file that
    sklearn.datasets.load_digits reads, without importing scikit-learn (1.8 s of every trainer's start on a
    2-core CPU); load_digits itself where the file is not where it is expected."""
    import gzip
    import importlib.util
    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images, d.target


def _load_digits() -> Raw:
    images, target = _digits_arrays()
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = target.astype(np.int64)
    is_test = _holdout(y, HOLDOUT_FRACTION)
    return Raw(x[~is_test], y[~is_test], x[is_test], y[is_test], [str(c) for c in range(10)], "scikit-learn")


def _holdout(y: np.ndarray, fraction: float) -> np.ndarray:
    """A fixed (seed 0, never the data seed) stratified test mask for datasets without a split."""
    rng = np.random.default_rng(0)
    is_test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        is_test[rng.permutation(idx)[: max(1, int(round(fraction * len(idx))))]] = True
    return is_test


def _load_fashion_mnist(cfg: DataConfig) -> Raw:
    """The full data (Debian's package, else a torchvision download in cfg.root); else the bundled
    subset if it holds every image of cfg's split; else a download; else an error saying how."""
    folder = fashion_mnist.full_dir(cfg.root)
    if folder is not None:
        xtr, ytr, xte, yte = fashion_mnist.read_full(folder)
        return Raw(xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64), fashion_mnist.CLASSES,
                   str(folder))
    if fashion_mnist_missing(cfg) is None:
        xtr, ytr, xte, yte = fashion_mnist.read_bundle()
        return Raw(_AddChannel(xtr), ytr, xte[:, None], yte, fashion_mnist.CLASSES,
                   f"the bundled subset in {fashion_mnist.BUNDLE_DIR}")
    import torchvision
    try:
        torchvision.datasets.FashionMNIST(cfg.root, train=True, download=cfg.download)
        torchvision.datasets.FashionMNIST(cfg.root, train=False, download=cfg.download)
    except Exception as e:
        why = "--no-download is set" if not cfg.download else f"the download failed: {type(e).__name__}: {e}"
        raise DataError(f"{fashion_mnist_missing(cfg)} ({why})") from e
    return _load_fashion_mnist(cfg)


def fashion_mnist_missing(cfg: DataConfig) -> str | None:
    """None if cfg's Fashion-MNIST split can be read without a download (full data or the bundle);
    otherwise why not and how to get the full data."""
    if fashion_mnist.full_dir(cfg.root) is not None:
        return None
    bundle = fashion_mnist.read_bundle_index()
    if bundle is not None and bundle.covers(np.concatenate(_split(cfg, bundle.train_labels, fashion_mnist.CLASSES))):
        return None
    size = f"per_class={cfg.per_class}" if cfg.per_class is not None else f"ratio={cfg.subset['ratio']}"
    held = ("" if bundle is None else f"; the subset bundled in {fashion_mnist.BUNDLE_DIR} holds only the "
            f"{len(bundle.train_index)} training images of the shipped generators' splits")
    return (f"fashion-mnist {size} data_seed={cfg.data_seed} needs the full dataset, which is not on this "
            f"machine (not in {fashion_mnist.DEBIAN_DIR}, nor downloaded into {cfg.root}){held}; "
            + fashion_mnist.GET_FULL)


class _AddChannel:
    """x[idx][:, None] of an indexable image set: (N, 28, 28) -> (N, 1, 28, 28)."""

    def __init__(self, images):
        self.images = images

    def __getitem__(self, idx):
        return self.images[idx][:, None]


def _unavailable(cfg: DataConfig, err: Exception, extra: str = "") -> DataError:
    how = (f"run once with network access (download into --data-root {cfg.root})" if not cfg.download
           else f"the download into {cfg.root} failed ({type(err).__name__}: {err}); connect to the "
                f"internet and retry, or copy the dataset files into {cfg.root}")
    return DataError(f"dataset {cfg.dataset!r} is not in {cfg.root} and needs a download: {how}"
                     + (f"; {extra}" if extra else ""))


def _load_torchvision(cfg: DataConfig, info: DatasetInfo):
    import torchvision.datasets as tvd
    res = cfg.resolution or info.resolution
    ctor = {
        "cifar10": lambda split: tvd.CIFAR10(cfg.root, train=split == "train", download=cfg.download),
        "cifar100": lambda split: tvd.CIFAR100(cfg.root, train=split == "train", download=cfg.download),
        "svhn": lambda split: tvd.SVHN(cfg.root, split=split, download=cfg.download),
        "cars": lambda split: tvd.StanfordCars(cfg.root, split=split, download=cfg.download),
        "aircraft": lambda split: tvd.FGVCAircraft(cfg.root, split="trainval" if split == "train" else "test",
                                                   download=cfg.download),
        "dtd": lambda split: _concat_splits(tvd.DTD, cfg, ("train", "val") if split == "train" else ("test",)),
        "flowers102": lambda split: _concat_splits(tvd.Flowers102, cfg, ("train", "val") if split == "train" else ("test",)),
        "pets": lambda split: tvd.OxfordIIITPet(cfg.root, split="trainval" if split == "train" else "test",
                                                download=cfg.download),
    }[cfg.dataset]
    try:
        train, test = ctor("train"), ctor("test")
    except Exception as e:
        raise _unavailable(cfg, e) from e
    xtr, ytr = _to_arrays(train, res, info.fixed_size)
    xte, yte = _to_arrays(test, res, info.fixed_size)
    classes = getattr(train, "classes", None) or [str(c) for c in range(int(ytr.max()) + 1)]
    return Raw(xtr, ytr, xte, yte, [str(c) for c in classes], f"torchvision ({cfg.root})")


def _concat_splits(cls, cfg, splits):
    parts = [cls(cfg.root, split=s, download=cfg.download) for s in splits]
    return _Concat(parts)


class _Concat(torch.utils.data.ConcatDataset):
    @property
    def classes(self):
        return self.datasets[0].classes


def _to_arrays(ds, res: int, fixed_size: bool):
    """A torchvision dataset -> uint8 (N, C, H, W) and int64 labels."""
    if fixed_size and hasattr(ds, "data"):  # CIFAR (NHWC), SVHN (NCHW): no decoding needed
        x = np.asarray(ds.data)
        if x.shape[-1] == 3:
            x = x.transpose(0, 3, 1, 2)
        y = np.asarray(getattr(ds, "targets", None) if hasattr(ds, "targets") else ds.labels)
        return x, y.astype(np.int64)
    from .imagefolder import square
    xs, ys = [], []
    for img, label in ds:
        xs.append(square(img, res))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def _load_imagefolder(path: str, res: int) -> Raw:
    """`path/<class>/...` (or `path/train/` and `path/test/` each so), read by mgr.imagefolder's rules;
    without test/, a fixed stratified 30% of the images is held out as the test set."""
    from .imagefolder import FolderError, scan
    try:
        found = scan(path, res)
    except FolderError as e:
        raise DataError(str(e)) from None
    source = f"image folder {path}"
    if found.x_test is not None:
        return Raw(found.x_train, found.y_train, found.x_test, found.y_test, found.classes, source, found.skipped)
    x, y = found.x_train, found.y_train
    is_test = _holdout(y, HOLDOUT_FRACTION)
    return Raw(x[~is_test], y[~is_test], x[is_test], y[is_test], found.classes, source, found.skipped)
