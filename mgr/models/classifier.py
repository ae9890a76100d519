"""Classifiers f = h_ω ∘ g_ψ with the two halves exposed: `features(x)` is g_ψ (pooled
penultimate features), `head` is h_ω (the final linear layer). Methods use them separately:
PCR regularises g_ψ only, so ω must never see its gradient. `feature_map(x)` is the last conv
feature map before pooling, which the CML co-learner reads.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .second_order import BatchNorm2d, Conv2d, use_cheap_second_derivative

MODELS = ("smallcnn", "resnet18")


class Classifier(nn.Module):
    """Base class: subclasses define `body` (image -> pooled features), `feature_map` (image -> the
    last feature map, which `body` average-pools) and `head`."""
    feature_dim: int  # channels of the last feature map = dimension of g_ψ

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, features: bool = False, feature_map: bool = False):
        # torch.func.functional_call can only call forward, hence the flags: `features=True` returns
        # g_ψ(x); `feature_map=True` returns (logits, last feature map) from one pass
        if feature_map:
            m = self.feature_map(x)
            return self.head(torch.flatten(F.adaptive_avg_pool2d(m, 1), 1)), m
        f = self.features(x)
        return f if features else self.head(f)


class SmallCNN(Classifier):
    """Three conv stages (32-64-128 channels, BN, ReLU), max-pool between stages, global average
    pool. ~0.3M parameters: a few hundred images/s per core at 28x28, enough for CPU demos."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32):
        super().__init__()
        w = (width, 2 * width, 4 * width)

        def stage(cin, cout, pool):
            layers = [Conv2d(cin, cout, 3, padding=1, bias=False), BatchNorm2d(cout), nn.ReLU(inplace=True),
                      Conv2d(cout, cout, 3, padding=1, bias=False), BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.body = nn.Sequential(*stage(in_channels, w[0], True), *stage(w[0], w[1], True),
                                  *stage(w[1], w[2], False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = w[2]
        self.head = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body[:-2](x)  # all but the average pool and flatten


class ResNet18(Classifier):
    """torchvision's ResNet-18 adapted to small images as in the MGR paper: a 3x3 stride-1 stem,
    no max-pool, any number of input channels."""

    def __init__(self, num_classes: int, in_channels: int = 3, pretrained: bool = False):
        super().__init__()
        import torchvision
        net = torchvision.models.resnet18(num_classes=1000 if pretrained else num_classes)
        if pretrained:
            net.load_state_dict(_cached_imagenet_weights())
            net.fc = nn.Linear(net.fc.in_features, num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.feature_dim = net.fc.in_features
        self.head = net.fc
        net.fc = nn.Identity()
        # with fc removed, torchvision's forward ends at the flattened avg-pool; its convolutions and BatchNorm
        # layers get the cheap second derivatives the meta steps need (second_order.py)
        self.body = use_cheap_second_derivative(net)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        b = self.body  # torchvision's forward, stopped before its average pool
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))


def _cached_imagenet_weights() -> dict:
    """ImageNet weights from torch's hub cache (never downloaded at run time here: the stem is
    replaced anyway, and an offline machine would fail mid-run)."""
    from torchvision.models import ResNet18_Weights
    url = ResNet18_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.exists():
        raise FileNotFoundError(
            f"pretrained ResNet-18 weights are not cached at {path}; fetch them once while online "
            "(python -c 'import torchvision; torchvision.models.resnet18(weights=\"IMAGENET1K_V1\")') "
            "or train from scratch (drop --pretrained)")
    return torch.load(path, map_location="cpu", weights_only=True)


def build_classifier(name: str, num_classes: int, in_channels: int, pretrained: bool = False,
                     width: int | None = None) -> Classifier:
    """`width`: SmallCNN's first-stage channels (default 32); a demo-sized 8 or 16 trains several
    times faster on a CPU. ResNet-18 has torchvision's fixed widths."""
    if name == "smallcnn":
        if pretrained:
            raise ValueError("model 'smallcnn' has no pretrained weights; pretrained is only for 'resnet18'")
        return SmallCNN(num_classes, in_channels, width or 32)
    if name == "resnet18":
        if width is not None:
            raise ValueError("model 'resnet18' has torchvision's fixed widths; width is only for 'smallcnn'")
        return ResNet18(num_classes, in_channels, pretrained)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


# On a CPU a forward over 1 000 images takes 1.6× as long as over four slices of 250 (SmallCNN at 28×28, width 16
# and 32: 596 against 372 ms and 1 925 against 1 183 ms for 2 000 images on one core): oneDNN's working set then
# fits the cache. The slices' logits are bitwise those of the whole batch, so every evaluation's numbers are too.
CPU_SLICE = 250  # images per forward of an evaluation on a CPU


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy in eval mode (restores the model's previous mode)."""
    acc, loss, _ = evaluate_by_class(model, x, y, 0, batch_size)
    return acc, loss


@torch.no_grad()
def evaluate_by_class(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                      batch_size: int = 1000) -> tuple[float, float, list]:
    """`evaluate`, and the accuracy of each of the first `num_classes` classes (None for a class with no
    image): which classes a change costs."""
    was_training = model.training
    model.eval()
    loss, hits = 0.0, []
    per_forward = CPU_SLICE if x.device.type == "cpu" else batch_size
    for i in range(0, len(y), batch_size):
        logits = torch.cat([model(part) for part in x[i:i + batch_size].split(per_forward)]).float()
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        hits.append(logits.argmax(1) == y[i:i + batch_size])
    model.train(was_training)
    hit = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool, device=y.device)
    per_class = []
    if num_classes:
        n = torch.bincount(y, minlength=num_classes)[:num_classes].tolist()
        right = torch.bincount(y[hit], minlength=num_classes)[:num_classes].tolist()
        per_class = [round(r / c, 6) if c else None for r, c in zip(right, n)]
    return hit.sum().item() / max(1, len(y)), loss / max(1, len(y)), per_class



def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in eval mode: `evaluate` without the loss."""
    return evaluate(model, x, y)[0]
