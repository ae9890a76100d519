"""Batched, differentiable image augmentations on the device (images in [-1, 1]).

Each op draws its own per-sample randomness from torch's generator and is differentiable with
respect to the images, so the same ops serve DiffAugment for GAN training (applied to real and
fake images alike, Zhao et al. 2020) and the PCR transformation T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[b, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of side ratio * size at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


def hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(3), x)


OPS = {"color": (brightness, saturation, contrast), "translation": (translation,),
       "cutout": (cutout,), "flip": (hflip,)}


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p for p in policy.split(",") if p)
    unknown = [p for p in names if p not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, unknown))} in policy {policy!r}; "
                         f"known: {', '.join(OPS)} (comma-separated, or empty for none)")
    return names


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    for name in parse_policy(policy):
        for op in OPS[name]:
            x = op(x)
    return x
