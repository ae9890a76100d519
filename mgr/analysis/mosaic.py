"""Image tiles for the pages: uint8 probe images side by side in one picture."""
from __future__ import annotations

import math

import numpy as np


def mosaic(images: np.ndarray, ncols: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """uint8 N×C×H×W -> one H'×W'×3 image, row-major, `pad` white pixels between tiles; nearest
    upscaling by `scale` shows the real pixels of small images."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    if c == 1:
        images = np.repeat(images, 3, axis=1)
    images = images.repeat(scale, 2).repeat(scale, 3)
    h, w = h * scale, w * scale
    rows = max(1, math.ceil(n / ncols))
    out = np.full((rows * (h + pad) - pad, ncols * (w + pad) - pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, ncols)
        out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = img.transpose(1, 2, 0)
    return out
