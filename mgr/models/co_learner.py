"""The CML co-learner c_χ (Shin, Han, Kim, UAI 2024; docs/method.md#cml-co-learner): a second classification head
on the classifier's shared feature extractor. It reads the looked-ahead features, is trained only
by the outer objective (its own optimizer), never takes the lookahead step, and is dropped after
training: it is not part of the classifier and never of its checkpoint or reported accuracy.
"""
from __future__ import annotations

import torch
import torch.nn as nn

CO_LEARNER_ARCHS = ("conv", "linear")


class CoLearner(nn.Module):
    """`conv` (the authors' choice): two conv blocks (3x3 conv, BN, ReLU) and a linear layer on the
    last feature map. No pooling between the blocks, unlike the authors' 84x84 maps: ours are as
    small as 1x1 (ResNet-18 on 8x8 digits), so the blocks keep the size and a global average pool
    feeds the linear layer. `linear`: one linear layer on the pooled features g_ψ(x)."""

    def __init__(self, in_channels: int, num_classes: int, arch: str = "conv", width: int = 64):
        super().__init__()
        if arch not in CO_LEARNER_ARCHS:
            raise ValueError(f"co-learner arch {arch!r} is not one of {', '.join(CO_LEARNER_ARCHS)}")
        self.arch = arch
        blocks = []
        if arch == "conv":
            for cin in (in_channels, width):
                blocks += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(width if arch == "conv" else in_channels, num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Logits from the classifier's last feature map (N, C, H, W)."""
        return self.linear(self.blocks(feature_map))
