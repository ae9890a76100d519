"""Batched, differentiable image augmentations on the device (images in [-1, 1]).

Each op is a pair: `draw` picks per-sample random parameters, `apply` uses them and is
differentiable in the images. Splitting the two lets one random transformation be applied
several times, which PCR needs: the finite-difference hypergradient evaluates the same
T(x_p) at two parameter points. The same ops serve DiffAugment for GAN training (applied to
real and fake images alike, Zhao et al. 2020).
"""
from __future__ import annotations

import torch


def _uniform(n, lo, hi, x):
    return torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * (hi - lo) + lo


def _brightness(x, b):
    return x + b


def _saturation(x, s):
    if x.shape[1] == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * s + mean


def _contrast(x, c):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def _shifts(x, ratio):
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    return (torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device),
            torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device))


def _translate(x, ty, tx):
    """Shift image i by (ty[i], tx[i]) pixels, filling with zeros: out[y, x] = in[y + ty, x + tx].
    A gather with a validity mask, so the step needs no host sync for the largest shift."""
    n, _, h, w = x.shape
    gy = torch.arange(h, device=x.device).view(1, h, 1) + ty
    gx = torch.arange(w, device=x.device).view(1, 1, w) + tx
    inside = ((gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)).unsqueeze(1).to(x.dtype)
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    out = x.permute(0, 2, 3, 1)[b, gy.clamp(0, h - 1), gx.clamp(0, w - 1)].permute(0, 3, 1, 2)
    return out * inside


def _cutout_centres(x, ratio):
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    return (torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device),
            torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device))


def _cutout(x, oy, ox, ratio=0.5):
    """Zero a square of side ratio * size centred at (oy[i], ox[i]) in image i."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


def _flip(x, f):
    return torch.where(f, x.flip(3), x)


# name -> list of (draw(x) -> params tuple, apply(x, *params))
OPS = {
    "color": [(lambda x: (_uniform(len(x), -0.5, 0.5, x),), _brightness),
              (lambda x: (_uniform(len(x), 0.0, 2.0, x),), _saturation),
              (lambda x: (_uniform(len(x), 0.5, 1.5, x),), _contrast)],
    "translation": [(lambda x: _shifts(x, 0.125), _translate)],
    "cutout": [(lambda x: _cutout_centres(x, 0.5), _cutout)],
    "flip": [(lambda x: (torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5,), _flip)],
}


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, unknown))} in policy {policy!r}; "
                         f"known: {', '.join(OPS)} (comma-separated, or empty for none)")
    return names


class Augment:
    """A random augmentation policy, e.g. Augment("translation,flip,color,cutout").

    aug(x) draws fresh randomness; aug.apply(x, aug.draw(x)) lets the caller reuse one draw."""

    def __init__(self, policy: str):
        self.policy = policy
        self.ops = [op for name in parse_policy(policy) for op in OPS[name]]

    def draw(self, x: torch.Tensor) -> list[tuple]:
        return [draw(x) for draw, _ in self.ops]

    def apply(self, x: torch.Tensor, params: list[tuple]) -> torch.Tensor:
        for (_, apply), p in zip(self.ops, params):
            x = apply(x, *p)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.draw(x))


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    return Augment(policy)(x)


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    return _translate(x, *_shifts(x, ratio))


def hflip(x: torch.Tensor) -> torch.Tensor:
    return Augment("flip")(x)
