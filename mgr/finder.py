"""The finder F_φ: rewrites latents z ~ N(0, I) into the latents MPS samples from.

`residual` (default): F(z) = z + MLP(z) with the MLP's last layer zero-initialised, so MPS starts
as uniform sampling; the MLP's hidden units are SiLU by default (or ReLU). `linear`: F(z) = Wz + b
from the identity. `mlp`: F(z) = MLP(z), which the paper reports moves latents too far (offered for
that comparison).
"""
from __future__ import annotations

import torch
import torch.nn as nn

FINDERS = ("residual", "mlp", "linear")
# the hidden layers' activation. silu (the default): a unit that a large update pushes below zero still
# passes a gradient, where a ReLU unit that fires for no latent stays silent for good (measured: at lr 1e-2
# most ReLU units fall silent in the first updates, leaving F(z) = z + b;
# docs/method.md#a-finder-that-adds-one-vector)
FINDER_ACTIVATIONS = ("relu", "silu")


class Finder(nn.Module):
    def __init__(self, z_dim: int, kind: str = "residual", hidden: int = 256, activation: str = "silu"):
        super().__init__()
        if kind not in FINDERS:
            raise ValueError(f"finder {kind!r} is not one of {', '.join(FINDERS)}")
        if activation not in FINDER_ACTIVATIONS:
            raise ValueError(f"finder activation {activation!r} is not one of {', '.join(FINDER_ACTIVATIONS)}")
        self.kind = kind
        if kind == "linear":
            self.net = nn.Linear(z_dim, z_dim)
            nn.init.eye_(self.net.weight)
            nn.init.zeros_(self.net.bias)
        else:
            act = nn.ReLU if activation == "relu" else nn.SiLU  # no parameters: same state_dict either way
            self.net = nn.Sequential(nn.Linear(z_dim, hidden), act(), nn.Linear(hidden, hidden), act(),
                                     nn.Linear(hidden, z_dim))
            if kind == "residual":
                nn.init.zeros_(self.net[-1].weight)
                nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.net(z) if self.kind == "residual" else self.net(z)


def kl_batch(z: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, I)) of a diagonal Gaussian fitted to the batch, mean over dimensions:
    keeps the finder's latents where the generator was trained."""
    z = z.to(torch.promote_types(z.dtype, torch.float32))  # bf16 would lose the small deviations that matter
    mu, var = z.mean(0), z.var(0, unbiased=False).clamp_min(1e-8)
    return 0.5 * (var + mu.pow(2) - 1 - var.log()).mean()
