"""A class-conditional GAN sized to the image resolution (BigGAN-style, small).

Generator: z -> linear to a b x b map -> n up-sampling residual blocks with conditional batch norm
(the class picks each BN's gain and bias) -> BN, ReLU, 3x3 conv, tanh. One forward pass, so MGR
can differentiate G(z, y) with respect to z. y is class indices, or soft labels (N × classes) whose
rows mix the class embeddings: the app's interpolation between two classes passes those, so it never
modifies a generator that other sessions share.

Discriminator: residual down-sampling blocks with spectral norm, global sum pooling, and a
projection term <embed(y), h> (Miyato & Koyama, 2018).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm as SN


def layout(resolution: int) -> tuple[int, int]:
    """(bottom, n_up): resolution = bottom * 2**n_up, with bottom >= 4 where possible, and at
    least two up-sampling blocks (8 -> 2x2 base, 28 -> 7x7, 32 -> 4x4, 64 -> 4x4)."""
    bottom, n_up = resolution, 0
    while bottom % 2 == 0 and bottom // 2 >= 4:
        bottom, n_up = bottom // 2, n_up + 1
    while n_up < 2 and bottom % 2 == 0 and bottom // 2 >= 2:
        bottom, n_up = bottom // 2, n_up + 1
    if n_up == 0:
        raise ValueError(f"resolution {resolution} cannot be built by doubling; use an even size such as 28, 32 or 64")
    return bottom, n_up


def class_embedding(emb: nn.Embedding, y: torch.Tensor) -> torch.Tensor:
    """The embedding of labels y: a lookup for class indices (N,), the label-weighted mix of the
    class embeddings for a soft label matrix (N × classes), e.g. an interpolation between two classes.
    A one-hot row gives exactly its class's embedding (1·w + 0·others is exact in floating point)."""
    return y @ emb.weight if y.is_floating_point() else emb(y)


class CBN(nn.BatchNorm2d):
    """Batch norm whose affine gain and bias are looked up per class (or mixed, for soft labels)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(channels, affine=False)
        self.class_gain = nn.Embedding(num_classes, channels)
        self.class_bias = nn.Embedding(num_classes, channels)
        nn.init.zeros_(self.class_gain.weight)  # gain = 1 + embedding: starts as plain BN
        nn.init.zeros_(self.class_bias.weight)

    def forward(self, x, y):
        x = super().forward(x)
        gain, bias = class_embedding(self.class_gain, y), class_embedding(self.class_bias, y)
        return x * (1 + gain)[:, :, None, None] + bias[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = CBN(cin, num_classes), CBN(cout, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x, y):
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    def __init__(self, num_classes: int, resolution: int, channels: int, z_dim: int = 64, width: int = 64):
        super().__init__()
        self.num_classes, self.resolution, self.channels, self.z_dim = num_classes, resolution, channels, z_dim
        self.bottom, n_up = layout(resolution)
        # channel widths halve as resolution doubles, from 4*width down to width
        widths = [width * min(4, 2 ** (n_up - i)) for i in range(n_up + 1)]
        self.linear = nn.Linear(z_dim, widths[0] * self.bottom ** 2)
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], num_classes) for i in range(n_up))
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images for latents z (N × z_dim) and labels y: class indices (N,), or soft labels
        (N × num_classes, float; rows are class weights, e.g. a mix of two classes)."""
        self.check_labels(z, y)
        h = self.linear(z).view(len(z), -1, self.bottom, self.bottom)
        # in its convolutions' layout (channels_last in the trainer): else each convolution reorders its input, on a
        # CPU a copy that took a third of a demo generator's forward (docs/trainer.md#memory-layout)
        h = h.contiguous(memory_format=self.memory_format())
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))

    def memory_format(self) -> torch.memory_format:
        """channels_last once `.to(memory_format=torch.channels_last)` has put its convolutions' weights in it."""
        w = self.blocks[0].conv1.weight
        return torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format

    def check_labels(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Shapes only (no value check, so no host sync in the training step)."""
        want = (len(z), self.num_classes) if y.is_floating_point() else (len(z),)
        if tuple(y.shape) != want:
            kind = "soft labels (float)" if y.is_floating_point() else "class indices"
            raise ValueError(f"labels of shape {tuple(y.shape)} for {len(z)} latents: {kind} must have shape {want} "
                             f"(class indices (N,) or soft labels (N, {self.num_classes}))")

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(len(y), self.z_dim, generator=generator, device=y.device)
        return self(z, y)


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, first: bool):
        super().__init__()
        self.conv1 = SN(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = SN(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = SN(nn.Conv2d(cin, cout, 1))
        self.down, self.first = down, first

    def forward(self, x):
        h = x if self.first else F.relu(x)  # no ReLU on the raw image (BigGAN's first block)
        h = self.conv2(F.relu(self.conv1(h)))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, resolution: int, channels: int, width: int = 64):
        super().__init__()
        _, n_down = layout(resolution)
        widths = [channels] + [width * min(4, 2 ** i) for i in range(n_down + 1)]
        # n_down down-sampling blocks, then one at the bottom resolution
        self.blocks = nn.Sequential(*(DBlock(widths[i], widths[i + 1], down=i < n_down, first=i == 0)
                                      for i in range(n_down + 1)))
        self.linear = SN(nn.Linear(widths[-1], 1))
        self.embed = SN(nn.Embedding(num_classes, widths[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)
