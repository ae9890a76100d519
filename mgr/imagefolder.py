"""A user's own images, one sub-folder per class, as such folders really come.

One scanner, `scan`, decides everything; the trainer's loader (`data`, dataset `imagefolder:PATH`)
and the app's image-folder field (`launch.check_folder`) both call it, so they give the same answers.

Layout: PATH/<class>/... ; or PATH/train/<class>/... and PATH/test/<class>/... when both exist.
A class's images may sit in nested sub-folders of its folder (cat/2019/a.jpg is a cat).

What is used, skipped (listed with the reason, the run trains on the rest) or refused (a
DataError naming the file or folder, before any training):

- files are judged by their content, not their name: a PNG named .jpg is read; notes.txt,
  Thumbs.db or a .jpg that is not an image are skipped as "not an image";
- hidden files and folders (.DS_Store, .thumbnails/) are skipped;
- a truncated or corrupt image is skipped, with the decoder's complaint;
- an image over MAX_PIXELS (a decompression bomb, or a photo far beyond any training size) is
  skipped before it is decoded;
- symlinked files are read where they point; symlinked folders are not followed (a link to a
  parent would read images twice, or forever), and broken links are skipped;
- a class folder with no usable image is not a class (skipped, reported); a class with too few
  images to hold out a test image and keep a train and a validation image is refused, as are
  fewer than 2 classes, a test/ whose classes differ from train/'s, and images with no class folder.

Pixels, the same rule for every image: EXIF orientation applied; the first frame of an animation;
transparency (RGBA, LA, P or L with a transparent colour) composited on white; CMYK and other
colour spaces converted to RGB by Pillow (ICC profiles ignored); 16-bit and 32-bit grey (I;16, I)
scaled from 0..65535 to 0..255, floats (F) clipped to 0..255; grey replicated to 3 channels. Then
the centred square of side min(width, height) is cut out and resized to res x res (bicubic), so
varying sizes and aspect ratios all become res x res without distortion (the edges of a long
image are lost).
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_PIXELS = 40_000_000  # 40 MP, e.g. 8000 x 5000: larger files are skipped unread
MIN_TRAIN_WITHOUT_SPLIT = 3  # one held out for test (data.HOLDOUT_FRACTION, at least 1), two for train and val


class FolderError(ValueError):
    """An image folder that cannot be trained on; the message names the file or folder and why."""


@dataclass
class Scan:
    classes: list[str]
    x_train: np.ndarray  # uint8 (N, 3, res, res)
    y_train: np.ndarray
    x_test: np.ndarray | None  # None: no test/ folder; the loader holds out part of train
    y_test: np.ndarray | None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to the folder, reason)

    def counts(self) -> dict[str, int]:
        return {c: int((self.y_train == i).sum()) for i, c in enumerate(self.classes)}


def scan(path: str | Path, res: int = 32) -> Scan:
    """Read the folder at `path` by the rules above, or raise FolderError."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FolderError(f"image folder {str(root)!r} does not exist or is not a directory; expected "
                          "one sub-folder of images per class")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    skipped: list[tuple[str, str]] = []
    if split:
        skipped += [(e.name, "outside train/ and test/") for e in sorted(root.iterdir()) if e.name not in ("train", "test")]
        train = _read_split(root, root / "train", res, skipped, minimum=2)
        test = _read_split(root, root / "test", res, skipped, minimum=1, classes=list(train))
    else:
        train = _read_split(root, root, res, skipped, minimum=MIN_TRAIN_WITHOUT_SPLIT)
        test = None
    classes = list(train)
    x, y = _stack(train)
    xt, yt = _stack(test) if test is not None else (None, None)
    return Scan(classes, x, y, xt, yt, skipped)


def _read_split(root: Path, top: Path, res: int, skipped: list, minimum: int, classes: list[str] | None = None):
    """{class: [images]} of the class folders of `top`, in name order."""
    folders, loose = [], []
    try:
        entries = sorted(top.iterdir())
    except OSError as e:
        raise FolderError(f"image folder {str(top)!r} cannot be listed: {e.strerror or e}") from None
    for entry in entries:
        rel = str(entry.relative_to(root))
        if entry.name.startswith("."):
            skipped.append((rel, "hidden"))
        elif entry.is_symlink() and entry.is_dir():
            skipped.append((rel, "symlinked folder, not followed"))
        elif entry.is_dir():
            folders.append(entry)
        else:
            loose.append(entry)
    if not folders:
        what = f"; its {len(loose)} file(s) sit directly in it" if loose else ""
        raise FolderError(f"image folder {str(top)!r} has no class folders{what}: put each class's images in "
                          "a sub-folder named after the class")
    for f in loose:
        skipped.append((str(f.relative_to(root)), "not in a class folder"))

    found: dict[str, list[np.ndarray]] = {}
    for folder in folders:
        images = []
        for f in _files(folder, root, skipped):
            arr, reason = read_image(f, res)
            if arr is None:
                skipped.append((str(f.relative_to(root)), reason))
            else:
                images.append(arr)
        if images:
            found[folder.name] = images
        else:
            skipped.append((str(folder.relative_to(root)), "no usable image: not a class"))
    _refuse_unusable(top, found, skipped, minimum, classes)
    return {c: found[c] for c in (classes or sorted(found))}


def _refuse_unusable(top: Path, found: dict, skipped: list, minimum: int, classes: list[str] | None) -> None:
    """FolderError if the classes found under `top` cannot be trained on (or tested, for test/)."""
    if classes is not None and sorted(found) != sorted(classes):
        only_test, only_train = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise FolderError(f"{str(top)!r} must have the classes of {str(top.parent / 'train')!r}: "
                          + "; ".join(p for p in (f"only in test: {', '.join(only_test)}" if only_test else "",
                                                  f"no usable test image for: {', '.join(only_train)}" if only_train else "")
                                      if p)
                          + (f" ({_reasons(skipped)})" if skipped else ""))
    if classes is None and len(found) < 2:
        raise FolderError(f"image folder {str(top)!r} has {len(found)} class folder(s) with usable images "
                          f"({', '.join(found) or 'none'}); a classifier needs at least 2"
                          + (f". Skipped: {_reasons(skipped)}" if skipped else ""))
    few = {c: len(v) for c, v in found.items() if len(v) < minimum}
    if few:
        c, n = next(iter(few.items()))
        why = ("one is held out for the test set, one for validation, one for training" if minimum == 3
               else "one for training and one for validation" if minimum == 2 else "")
        raise FolderError(f"class folder {str(top / c)!r} has {n} usable image(s); each class needs at least "
                          f"{minimum} ({why})" + (f"; also too few: {', '.join(list(few)[1:])}" if len(few) > 1 else ""))


def _files(folder: Path, root: Path, skipped: list):
    """Every non-hidden file under `folder`, nested sub-folders included, never through a symlinked folder."""
    def unlistable(e: OSError):
        skipped.append((str(Path(e.filename).relative_to(root)), f"cannot be listed ({e.strerror})"))

    for here, dirs, files in os.walk(folder, onerror=unlistable, followlinks=False):
        here = Path(here)
        for d in sorted(dirs):
            if d.startswith("."):
                skipped.append((str((here / d).relative_to(root)), "hidden"))
            elif (here / d).is_symlink():
                skipped.append((str((here / d).relative_to(root)), "symlinked folder, not followed"))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        for name in sorted(files):
            f = here / name
            if name.startswith("."):
                skipped.append((str(f.relative_to(root)), "hidden"))
            elif f.is_symlink() and not f.exists():
                skipped.append((str(f.relative_to(root)), "broken symlink"))
            elif not f.is_file():
                skipped.append((str(f.relative_to(root)), "not a regular file"))
            else:
                yield f


def read_image(path: Path, res: int) -> tuple[np.ndarray | None, str]:
    """(uint8 (3, res, res), "") of an image file by the pixel rules above, or (None, why not)."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    return None, f"too large: {w}x{h} = {w * h / 1e6:.0f} MP > {MAX_PIXELS / 1e6:.0f} MP (not decoded)"
                if img.format == "JPEG":
                    img.draft("RGB", (2 * res, 2 * res))  # decode at a reduced scale, still >= 2x the target
                img.load()  # decodes every byte: a truncated or corrupt file fails here
                img = ImageOps.exif_transpose(img)
                return square(to_rgb(img), res), ""
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            return None, "not an image (no format Pillow reads)"
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) if isinstance(e, Image.DecompressionBombError) else Image.MAX_IMAGE_PIXELS
        return None, f"too large: over Pillow's decompression-bomb limit of {limit / 1e6:.0f} MP (not decoded)"
    except PermissionError as e:
        return None, f"cannot be read ({e.strerror})"
    except Exception as e:  # any decoder's complaint about the user's file: skip that file, never crash the run
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"truncated or corrupt ({msg})"


def to_rgb(img):
    """Any Pillow mode -> RGB, by the rules above (alpha over white, 16-bit scaled, CMYK converted)."""
    from PIL import Image
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode != "F":
            arr = arr * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" or (img.mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")  # a palette or colour key with a transparent entry becomes an alpha channel
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGB


def square(img, res: int) -> np.ndarray:
    """Centre-crop a PIL image to a square, resize to res x res (bicubic), return uint8 (3, res, res)."""
    from PIL import Image
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    img = img.resize((res, res), Image.BICUBIC)
    return np.asarray(img).transpose(2, 0, 1).copy()


def _stack(found: dict[str, list[np.ndarray]]):
    xs = [a for images in found.values() for a in images]
    ys = [c for c, images in enumerate(found.values()) for _ in images]
    return np.stack(xs), np.asarray(ys, np.int64)


def _reasons(skipped: list[tuple[str, str]]) -> str:
    """'3 not an image, 1 hidden' : the skipped files counted by reason (reason's detail dropped)."""
    counts = Counter(r.split(" (")[0].split(":")[0] for _, r in skipped)
    return ", ".join(f"{n} {r}" for r, n in counts.most_common())


def skipped_summary(skipped: list[tuple[str, str]], show: int = 5) -> str:
    """One line for a run's log: how many were skipped, why, and the first few by name."""
    if not skipped:
        return "nothing skipped"
    names = "; ".join(f"{p}: {r}" for p, r in skipped[:show]) + ("; ..." if len(skipped) > show else "")
    return f"skipped {len(skipped)} ({_reasons(skipped)}): {names}"
