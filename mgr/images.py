"""Image grids for people to look at: one row per class, labelled."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] (N, C, H, W) -> uint8 (N, H, W, C)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def grid_image(images: torch.Tensor, labels: list[str], cell: int = 40, label_width: int = 90):
    """images: (rows, cols, C, H, W) in [-1, 1] -> a PIL image, each row titled by labels[row]."""
    from PIL import Image, ImageDraw
    rows, cols = images.shape[:2]
    pad = 2
    canvas = Image.new("RGB", (label_width + cols * (cell + pad), rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        draw.text((4, r * (cell + pad) + cell // 2 - 6), labels[r][:14], fill="black")
        for c, arr in enumerate(to_uint8(images[r])):
            tile = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
            tile = tile.resize((cell, cell), Image.NEAREST)  # nearest: show the real pixels of 8x8 digits
            canvas.paste(tile, (label_width + c * (cell + pad), r * (cell + pad)))
    return canvas


@torch.no_grad()
def class_grid(G, classes: list[str], per_class: int = 10, seed: int = 0):
    """Samples of an eval-mode generator, one row per class, fixed latents (comparable across steps)."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(per_class, G.z_dim, generator=gen).to(device)
    rows = [G(z, torch.full((per_class,), c, device=device)) for c in range(len(classes))]
    return grid_image(torch.stack(rows), classes)


def save_image(img, path: str | Path) -> None:
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
