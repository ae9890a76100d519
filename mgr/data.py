"""Datasets by name, the reduced (train / val) split of a data seed, and the full test set.

Every image the project touches is a float tensor in [-1, 1], shape (N, C, H, W): the range of
the generator's tanh output, so real and synthetic images need no conversion between them.
Images are normalised once, at load time, and small datasets then live on the training device.

Splits are a function of (dataset, ratio or per_class, data_seed) only, never of the training
seed: seeds of a benchmark vary the initialisation on the same subset, and a generator trained
on a subset can be checked against a classifier run by the subset's fingerprint (`split_hash`).
"""
from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VAL_FRACTION = 0.1
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
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, True,
                                 f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST}), "
                                 "else torchvision download"),
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

    @property
    def subset(self) -> dict:
        """The part of the config that fixes which images are seen (checkpoint metadata)."""
        if self.per_class is not None:
            return {"dataset": self.dataset, "per_class": self.per_class, "data_seed": self.data_seed}
        return {"dataset": self.dataset, "ratio": self.ratio if self.ratio is not None else 1.0,
                "data_seed": self.data_seed}


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
        return (f"{self.name}: {self.num_classes} classes, {self.channels}x{self.resolution}x"
                f"{self.resolution}, train {len(self.y_train)}, val {len(self.y_val)}, "
                f"test {len(self.y_test)}")


def split_hash(train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.sort(train_idx).astype(np.int64).tobytes())
    h.update(b"|")
    h.update(np.sort(val_idx).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- splits

def reduce_split(labels: np.ndarray, *, ratio: float | None = None, per_class: int | None = None,
                 data_seed: int = 0, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified reduced training set, then a stratified validation part carved from it.

    Returns (train_idx, val_idx), disjoint, sorted, indexing `labels`. Each class is shuffled
    once by the data seed and its first n images are kept, so the subsets of one seed are nested
    (the 1% subset lies inside the 10% one). Validation takes round(10%) of each kept class, at
    least one image.
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
        n_val = max(1, int(round(VAL_FRACTION * n)))
        val.append(kept[:n_val])
        train.append(kept[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ----------------------------------------------------------------------------- loading

def load(cfg: DataConfig, device: str | torch.device = "cpu") -> Data:
    """Load the dataset, carve the reduced train / val split of cfg and move it to `device`."""
    info = dataset_info(cfg.dataset)
    x_full, y_full, x_test, y_test, classes = _load_raw(cfg, info)
    train_idx, val_idx = reduce_split(y_full, ratio=cfg.ratio, per_class=cfg.per_class,
                                      data_seed=cfg.data_seed, classes=classes)
    data = Data(
        name=cfg.dataset, classes=classes,
        x_train=_normalise(x_full[train_idx]), y_train=torch.as_tensor(y_full[train_idx]).long(),
        x_val=_normalise(x_full[val_idx]), y_val=torch.as_tensor(y_full[val_idx]).long(),
        x_test=_normalise(x_test), y_test=torch.as_tensor(y_test).long(),
        train_idx=train_idx, val_idx=val_idx, hflip=info.hflip,
    )
    return data.to(device)


def _normalise(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    return torch.from_numpy(np.require(x_uint8, requirements=["C", "W"])).float().div_(127.5).sub_(1.0)


def _load_raw(cfg: DataConfig, info: DatasetInfo):
    """Return (x_train, y_train, x_test, y_test, classes) with x as uint8 (N, C, H, W)."""
    if cfg.dataset == "digits":
        return _load_digits()
    if cfg.dataset == "fashion-mnist":
        return _load_fashion_mnist(cfg)
    if cfg.dataset.startswith(IMAGEFOLDER_PREFIX):
        return _load_imagefolder(cfg.dataset[len(IMAGEFOLDER_PREFIX):], cfg.resolution or info.resolution)
    return _load_torchvision(cfg, info)


def _load_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    is_test = _holdout(y, HOLDOUT_FRACTION)
    return x[~is_test], y[~is_test], x[is_test], y[is_test], [str(c) for c in range(10)]


def _holdout(y: np.ndarray, fraction: float) -> np.ndarray:
    """A fixed (seed 0, never the data seed) stratified test mask for datasets without a split."""
    rng = np.random.default_rng(0)
    is_test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        is_test[rng.permutation(idx)[: max(1, int(round(fraction * len(idx))))]] = True
    return is_test


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_fashion_mnist(cfg: DataConfig):
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for folder in (DEBIAN_FASHION_MNIST, Path(cfg.root) / "FashionMNIST" / "raw"):
        if all((folder / n).exists() for n in names):
            xtr, ytr, xte, yte = (_read_idx(folder / n) for n in names)
            return xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64), FASHION_CLASSES
    import torchvision
    try:
        torchvision.datasets.FashionMNIST(cfg.root, train=True, download=cfg.download)
        torchvision.datasets.FashionMNIST(cfg.root, train=False, download=cfg.download)
    except Exception as e:
        raise _unavailable(cfg, e, "or install Debian's package: sudo apt-get install dataset-fashion-mnist") from e
    return _load_fashion_mnist(cfg)


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
    return xtr, ytr, xte, yte, [str(c) for c in classes]


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
    xs, ys = [], []
    for img, label in ds:
        xs.append(_square(img, res))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def _square(img, res: int) -> np.ndarray:
    """Centre-crop a PIL image to a square, resize to res x res, return uint8 (3, res, res)."""
    from PIL import Image
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    img = img.resize((res, res), Image.BICUBIC)
    return np.asarray(img).transpose(2, 0, 1).copy()


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _load_imagefolder(path: str, res: int):
    """`path/<class>/*.png`; if `path/train` and `path/test` exist they are the two splits,
    otherwise a fixed stratified 30% of the images is held out as the test set."""
    from PIL import Image
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder path {str(root)!r} does not exist or is not a directory; expected "
                        "one sub-folder of images per class")

    def scan(folder: Path, classes=None):
        found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        classes = classes or found
        if len(classes) < 2:
            raise DataError(f"imagefolder {str(folder)!r} has {len(classes)} class folder(s); "
                            "a classifier needs at least 2 (one sub-folder of images per class)")
        xs, ys = [], []
        for c, name in enumerate(classes):
            files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"class folder {str(folder / name)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            for p in files:
                with Image.open(p) as im:
                    xs.append(_square(im, res))
                ys.append(c)
        return np.stack(xs), np.asarray(ys, np.int64), classes

    if (root / "train").is_dir() and (root / "test").is_dir():
        xtr, ytr, classes = scan(root / "train")
        xte, yte, _ = scan(root / "test", classes)
        return xtr, ytr, xte, yte, classes
    x, y, classes = scan(root)
    is_test = _holdout(y, HOLDOUT_FRACTION)
    return x[~is_test], y[~is_test], x[is_test], y[is_test], classes
