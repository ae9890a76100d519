"""The FID floor of docs/generators.md: real training images of each split (N as the split holds,
at most 10 000) against the test set, with the same SmallCNN extractor the generator FIDs use."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr.data import DataConfig, load  # noqa: E402
from mgr.fid import Pipeline, frechet  # noqa: E402
torch.set_num_threads(1)
for ds, ratios in (("digits", (0.1, 0.25, 1.0)), ("fashion-mnist", (0.01, 0.05, 0.1, 1.0))):
    pipe = None
    for r in ratios:
        d = load(DataConfig(ds, ratio=r), device="cpu")
        pipe = pipe or Pipeline("classifier", ds, "cpu")
        real = pipe.features(d.x_test)
        x = d.x_train
        if len(x) > 10000:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:10000]]
        print(ds, r, len(x), round(frechet(pipe.features(x), real), 3), flush=True)
