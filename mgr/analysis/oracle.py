"""The oracle: a classifier trained on the dataset's *full* training set (checkpoints/feature_extractors/, the
same network that FID uses) judges synthetic images. It answers "is this sample a member of the class it was
asked for?": label accuracy per class, the confusion of asked-for against judged-as, and the off-class samples.

It is a measuring instrument that saw data no run may see, so nothing that trains or selects a model reads it
(tests/test_oracle.py checks that the trainer never imports this module); a view that shows its readings says
what it is. Label accuracy judged this way is the "GAN-test" of Shmelkov et al., ECCV 2018.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..fid import load_extractor

ORACLE_NOTE = "judged by the oracle: a classifier trained on the full training set (a measuring instrument only)"


@dataclass(frozen=True)
class OracleReading:
    """What the oracle says of N images, each asked for one class."""
    asked: np.ndarray        # (N,) the class each image was generated for
    judged: np.ndarray       # (N,) the oracle's class
    confidence: np.ndarray   # (N,) the oracle's probability of its own class
    num_classes: int
    oracle_test_acc: float   # the oracle's accuracy on the real test set (how far to trust it)

    @property
    def label_accuracy(self) -> float:
        return float((self.asked == self.judged).mean()) if len(self.asked) else float("nan")

    def per_class(self) -> np.ndarray:
        """(K,) label accuracy of each asked-for class (nan for a class with no image)."""
        out = np.full(self.num_classes, np.nan)
        for k in range(self.num_classes):
            mine = self.asked == k
            if mine.any():
                out[k] = (self.judged[mine] == k).mean()
        return out

    def confusion(self) -> np.ndarray:
        """(K, K) counts: row = asked for, column = judged as."""
        m = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        np.add.at(m, (self.asked, self.judged), 1)
        return m

    def off_class(self, limit: int | None = None) -> np.ndarray:
        """Indices of the images judged as another class, the most confidently wrong first."""
        idx = np.flatnonzero(self.asked != self.judged)
        idx = idx[np.argsort(-self.confidence[idx], kind="stable")]
        return idx[:limit] if limit is not None else idx


@torch.no_grad()
def judge(dataset: str, images, asked, path: str | Path | None = None, batch_size: int = 500) -> OracleReading:
    """The oracle's reading of `images` (N×C×H×W in [-1, 1], numpy or torch) generated for classes `asked`."""
    model, meta = load_extractor(dataset, path)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    asked = np.asarray(asked, dtype=np.int64)
    if x.ndim != 4 or len(x) != len(asked):
        raise ValueError(f"the oracle judges N images (N x C x H x W) with N labels; got {tuple(x.shape)} images "
                         f"and {len(asked)} labels")
    if x.shape[1] != meta["channels"] or (len(asked) and not 0 <= asked.min() <= asked.max() < meta["num_classes"]):
        raise ValueError(f"{dataset}'s oracle reads {meta['channels']}-channel images of {meta['num_classes']} "
                         f"classes; got {x.shape[1]} channels and labels {asked.min()}..{asked.max()}")
    probs = torch.cat([model(x[i:i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)]) if len(x) \
        else torch.zeros(0, meta["num_classes"])
    conf, judged = probs.max(1)
    return OracleReading(asked, judged.numpy(), conf.numpy(), int(meta["num_classes"]), float(meta["test_acc"]))


@torch.no_grad()
def sample_and_judge(G, dataset: str, per_class: int = 100, seed: int = 0, psi: float = 1.0,
                     path: str | Path | None = None) -> tuple[np.ndarray, OracleReading]:
    """`per_class` images of every class from generator G, latents z ~ N(0, psi² I) drawn from `seed`, and the
    oracle's reading of them. psi < 1 is the truncation trick (less variety); the images come back too."""
    if not psi > 0:
        raise ValueError(f"psi={psi!r} is not allowed; it must be a number > 0 (1: the prior itself)")
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(G.num_classes).repeat_interleave(per_class)
    z = torch.randn(len(y), G.z_dim, generator=gen) * psi
    images = torch.cat([G(z[i:i + 500], y[i:i + 500]) for i in range(0, len(y), 500)]).clamp(-1, 1)
    return images.numpy(), judge(dataset, images, y.numpy(), path)
