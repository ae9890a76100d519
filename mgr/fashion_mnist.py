"""Fashion-MNIST's files, wherever this machine has them: Debian's package, a torchvision download,
or the subset bundled with the repository.

The bundle (checkpoints/datasets/fashion-mnist/, built by scripts/build_fashion_mnist_bundle.py)
lets a fresh clone train offline and without root on the splits of the shipped generators. It
holds the labels of all 60 000 training images, so that `data.reduce_split` computes exactly the
indices it computes on the full data (the same `split_hash` the generators record), the images
at the indices those splits use, and the full 10 000-image test set. A split that needs an image
outside the bundle is not served from it.
"""
from __future__ import annotations

import gzip
import io
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paths import REPO

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLE_DIR = REPO / "checkpoints" / "datasets" / "fashion-mnist"  # shipped with the code, like its tests
BUNDLE_INDEX = "index.npz"  # labels of the full training set + which of its images the bundle holds
BUNDLE_IMAGES = "images.npz.xz"  # those images and the test set (xz: 14% smaller than the npz's zlib)
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FULL_TRAIN = 60000
GET_FULL = ("install Debian's package (sudo apt-get install dataset-fashion-mnist), or run once with network "
            "access so that torchvision downloads it into --data-root")


def full_dir(root: str | Path) -> Path | None:
    """The folder holding all four original files: Debian's package first, then a torchvision
    download under `root` (FashionMNIST/raw); None if neither is complete."""
    for folder in (DEBIAN_DIR, Path(root) / "FashionMNIST" / "raw"):
        if all((folder / n).is_file() for n in FILES):
            return folder
    return None


_IDX_CACHE: dict = {}  # (path, mtime, size) -> its read-only array, for a process that trains run after run


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the original MNIST format, gzipped) as a read-only uint8 array. Kept per process: a demo's
    worker trains run after run, and decompressing the 47 MB training set took 0.27 s of each run's start."""
    st = Path(path).stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _IDX_CACHE:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        _IDX_CACHE[key] = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)  # read-only: bytes
    return _IDX_CACHE[key]


def read_full(folder: Path):
    """(x_train, y_train, x_test, y_test): uint8 images (N, 28, 28) and their labels."""
    return tuple(read_idx(folder / n) for n in FILES)


class PartialTrainSet:
    """Some images of the 60 000-image training set, indexed by their indices in the full set
    (so `x[train_idx]` reads like a slice of the full array)."""

    def __init__(self, index: np.ndarray, images: np.ndarray):
        self.index, self.images = index, images

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        pos = np.clip(np.searchsorted(self.index, idx), 0, len(self.index) - 1)
        if not np.array_equal(self.index[pos], idx):
            raise IndexError(f"{int(np.sum(self.index[pos] != idx))} of these images are not in the bundle")
        return self.images[pos]


@dataclass
class Bundle:
    train_labels: np.ndarray  # (60 000,) the label of every original training image
    train_index: np.ndarray  # sorted indices (into those 60 000) of the images the bundle holds

    def covers(self, indices: np.ndarray) -> bool:
        return bool(np.isin(indices, self.train_index).all())


def read_bundle_index(folder: Path | None = None) -> Bundle | None:
    """The bundle's labels and index (small, read without the images), None if there is no bundle."""
    path = (folder or BUNDLE_DIR) / BUNDLE_INDEX
    if not path.is_file() or not ((folder or BUNDLE_DIR) / BUNDLE_IMAGES).is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return Bundle(z["train_labels"].astype(np.int64), z["train_index"].astype(np.int64))


def read_bundle(folder: Path | None = None):
    """(PartialTrainSet, y_train for all 60 000, x_test, y_test) from the bundle."""
    folder = folder or BUNDLE_DIR
    b = read_bundle_index(folder)
    with np.load(io.BytesIO(lzma.decompress((folder / BUNDLE_IMAGES).read_bytes())), allow_pickle=False) as z:
        train_images, x_test, y_test = z["train_images"], z["test_images"], z["test_labels"]
    return PartialTrainSet(b.train_index, train_images), b.train_labels, x_test, y_test.astype(np.int64)


def write_bundle(folder: Path, y_train: np.ndarray, keep: np.ndarray, train_images: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Write the two bundle files (scripts/build_fashion_mnist_bundle.py). `keep`: sorted indices."""
    from .checkpoint import atomic_write
    buf = io.BytesIO()
    np.savez(buf, train_images=train_images.astype(np.uint8), test_images=x_test.astype(np.uint8),
             test_labels=y_test.astype(np.uint8))
    atomic_write(folder / BUNDLE_IMAGES,
                 lambda tmp: Path(tmp).write_bytes(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME)))

    def write_index(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, train_labels=y_train.astype(np.uint8), train_index=keep.astype(np.int32))
    atomic_write(folder / BUNDLE_INDEX, write_index)


SOURCE = ("Debian package dataset-fashion-mnist, else a torchvision download in --data-root, else the subset "
          "bundled in checkpoints/datasets/fashion-mnist (offline: the shipped generators' splits + the full test set)")


def available_here(root: str | Path) -> str:
    """What this machine has, in words (the app's Data page, `python -m mgr datasets`)."""
    folder = full_dir(root)
    if folder == DEBIAN_DIR:
        return "installed (Debian package)"
    if folder is not None:
        return f"downloaded ({folder})"
    b = read_bundle_index()
    if b is not None:
        return (f"bundled subset: {len(b.train_index)} of {FULL_TRAIN} training images (the shipped generators' splits) "
                "+ the 10 000 test images; other splits need the full data")
    return "needs the full data: " + GET_FULL
