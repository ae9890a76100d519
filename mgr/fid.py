"""FID with clean-fid, online or offline.

clean-fid's standard Inception network is downloaded on first use, which an offline machine
cannot do. So FID uses one of two feature extractors, always named next to the number:

- `inception`: clean-fid's Inception-V3 (the comparable, published-scale FID), used when its
  weights file is already on disk ($MGR_INCEPTION_WEIGHTS or clean-fid's /tmp location);
- `classifier`: the pooled features of a SmallCNN trained once on the dataset's full training
  set and shipped in checkpoints/feature_extractors/ (passed to clean-fid as
  `custom_feat_extractor`). Its FIDs are comparable with each other, not with Inception FIDs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint, optim, paths
from .augment import hflip, translation
from .data import Data, DataConfig, load
from .models.classifier import SmallCNN, accuracy
from .runtime import Progress, resolve_device, seed_everything

EXTRACTOR_KIND, EXTRACTOR_VERSION = "mgr-feature-extractor", 1
INCEPTION_FILE = "inception-2015-12-05.pt"
EXTRACTORS = ("auto", "inception", "classifier")


# ----------------------------------------------------------------------------- classifier extractor

def train_extractor(dataset: str, out: str | Path | None = None, steps: int = 3000, batch_size: int = 128,
                    device: str = "auto", seed: int = 0, quiet: bool = False, data_root: str | None = None) -> dict:
    """Train the FID feature extractor on the full training set (it never trains a classifier
    of a run; it only measures images) and save it."""
    dev = resolve_device(device)
    cfg = DataConfig(dataset, ratio=1.0, **({"root": data_root} if data_root else {}))
    data = load(cfg, device=dev)
    seed_everything(seed)
    model = SmallCNN(data.num_classes, data.channels).to(dev)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps, pct_start=0.15)
    bar = Progress(steps, desc=f"extractor {dataset}", disable=quiet)
    for step in range(steps):
        idx = torch.randint(len(data.y_train), (batch_size,), device=dev)
        x = translation(data.x_train[idx])
        x = hflip(x) if data.hflip else x
        loss = F.cross_entropy(model(x), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.update(step - bar.n, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    meta = {"dataset": dataset, "model": "smallcnn", "channels": data.channels, "resolution": data.resolution,
            "num_classes": data.num_classes, "feature_dim": model.feature_dim, "steps": steps,
            "val_acc": round(accuracy(model, data.x_val, data.y_val), 4),
            "test_acc": round(accuracy(model, data.x_test, data.y_test), 4)}
    checkpoint.save(out or paths.extractor_path(dataset), EXTRACTOR_KIND, EXTRACTOR_VERSION, meta,
                    state_dict=model.state_dict())
    return meta


def load_extractor(dataset: str, path: str | Path | None = None, device="cpu") -> tuple[SmallCNN, dict]:
    path = Path(path) if path else paths.extractor_path(dataset)
    if not path.exists():
        raise FileNotFoundError(f"no FID feature extractor for {dataset!r} at {path}; train one with "
                                f"`python -m mgr train-extractor --dataset {dataset}`")
    ckpt = checkpoint.load(path, EXTRACTOR_KIND, EXTRACTOR_VERSION)
    meta = ckpt["meta"]
    checkpoint.check_meta(path, meta, {"channels": int, "num_classes": int, "feature_dim": int, "test_acc": (int, float)},
                          {"dataset": dataset})
    try:
        model = SmallCNN(meta["num_classes"], meta["channels"])
    except (ValueError, RuntimeError) as e:
        raise checkpoint.CheckpointError(f"{path}: metadata describes no extractor this MGR Lab builds ({e})") from e
    checkpoint.load_state(model, ckpt["state_dict"], path)
    return model.eval().requires_grad_(False).to(device), meta


# ----------------------------------------------------------------------------- FID

def inception_weights() -> Path | None:
    """clean-fid's Inception file: $MGR_INCEPTION_WEIGHTS, else clean-fid's copy in /tmp. It is a
    TorchScript archive, which torch.jit.load runs as code, so the copy in the world-writable /tmp
    counts only when this user (or root) owns it and nobody else can write it: anyone on the machine
    could have put a file there."""
    env = os.environ.get("MGR_INCEPTION_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    tmp = Path("/tmp") / INCEPTION_FILE
    return tmp if tmp.is_file() and trusted_file(tmp) else None


def trusted_file(path: Path) -> bool:
    """Owned by this user (or root) and writable by nobody else, in a folder that others cannot swap it in."""
    if not hasattr(os, "getuid"):
        return True
    for p, is_dir in ((path, False), (path.parent, True)):
        st = p.stat()
        others_write = st.st_mode & 0o022
        sticky = is_dir and st.st_mode & 0o1000  # /tmp: others may write the folder but not replace our file
        if st.st_uid not in (os.getuid(), 0) or (others_write and not sticky):
            return False
    return True


class Pipeline:
    """clean-fid's three pieces: an image transform, a resizer and the feature network.
    Images enter as float tensors in [0, 255], (N, C, H, W), as clean-fid passes them."""

    def __init__(self, extractor: str, dataset: str, device):
        if extractor not in EXTRACTORS:
            raise ValueError(f"FID extractor {extractor!r} is not one of {', '.join(EXTRACTORS)}")
        weights = inception_weights()
        if extractor == "inception" and weights is None:
            raise FileNotFoundError(
                f"FID with Inception needs clean-fid's {INCEPTION_FILE} on disk (set MGR_INCEPTION_WEIGHTS or "
                f"put it in /tmp); this machine cannot download it. Use extractor 'classifier' instead")
        self.device = torch.device(device)
        if extractor == "inception" or (extractor == "auto" and weights is not None):
            from cleanfid.resize import build_resizer
            from cleanfid.inception_torchscript import InceptionV3W
            net = InceptionV3W(str(weights.parent), download=False).to(self.device).eval()
            self.model = lambda x: net(x)
            self.resize = build_resizer("clean")
            self.transform = lambda img: np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
            self.name = "clean-fid Inception-V3 (pool3, 2048-d)"
        else:
            net, meta = load_extractor(dataset, device=self.device)
            self.model = lambda x: net.features(x / 127.5 - 1)
            self.resize = lambda img: img  # the extractor reads the native resolution
            self.transform = None
            self.name = f"SmallCNN trained on full {dataset} train (test acc {meta['test_acc']:.3f}, {meta['feature_dim']}-d)"

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """Features of real images in [-1, 1], through the same per-image path clean-fid uses."""
        from cleanfid.fid import get_batch_features
        u8 = ((images.float().cpu().clamp(-1, 1) + 1) * 127.5).round()
        feats = []
        for i in range(0, len(u8), batch_size):
            batch = [self._prepare(img) for img in u8[i:i + batch_size]]
            feats.append(get_batch_features(torch.stack(batch), self.model, self.device))
        return np.concatenate(feats)

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        arr = img.permute(1, 2, 0).numpy()
        if self.transform is not None:
            arr = self.transform(arr)
        return torch.from_numpy(np.ascontiguousarray(self.resize(arr).transpose(2, 0, 1))).float()

    @torch.no_grad()
    def sampler_features(self, sample, z_dim: int, num: int, batch_size: int = 500) -> np.ndarray:
        """Features of `num` images from sample(z) -> images in [-1, 1], via clean-fid's
        get_model_features (its own z ~ N(0, I) loop)."""
        from cleanfid.fid import get_model_features

        def gen(z):  # clean-fid expects [0, 255]; quantise like the real images
            return ((sample(z.to(self.device)).float().clamp(-1, 1) + 1) * 127.5).round()

        return get_model_features(gen, self.model, mode="clean", z_dim=z_dim, num_gen=num, batch_size=batch_size,
                                  device=self.device, verbose=False, custom_fn_resize=self.resize,
                                  custom_image_tranform=self.transform)


def frechet(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    from cleanfid.fid import fid_from_feats
    return float(fid_from_feats(feats_a, feats_b))


def class_sampler(G, num_classes: int, finder=None):
    """sample(z) for clean-fid: class labels cycle through the classes so every FID sample set is
    class-balanced; `finder` (F_φ) rewrites the latents first when given."""
    device = next(G.parameters()).device

    def sample(z):
        y = torch.arange(len(z), device=device) % num_classes
        return G(finder(z) if finder is not None else z, y)
    return sample


@torch.no_grad()
def evaluate_generator(G, data: Data, data_cfg: DataConfig, extractor: str = "auto", num: int | None = None,
                       seed: int = 0) -> dict:
    """FID of G's class-balanced samples against the held-out test images, and the extractor
    classifier's accuracy on them (do samples look like their class?)."""
    pipe = Pipeline(extractor, data_cfg.dataset, next(G.parameters()).device)
    num = num or max(len(data.y_test), 2000)
    seed_everything(seed)
    fake = pipe.sampler_features(class_sampler(G, data.num_classes), G.z_dim, num)
    real = pipe.features(data.x_test)
    result = {"fid": round(frechet(fake, real), 3), "fid_extractor": pipe.name,
              "fid_n_fake": int(num), "fid_n_real": int(len(data.y_test)), "fid_reference": "test split"}
    try:
        net, _ = load_extractor(data_cfg.dataset, device=next(G.parameters()).device)
        y = torch.arange(2000, device=data.y_test.device) % data.num_classes
        x = G(torch.randn(len(y), G.z_dim, device=y.device), y)
        result["label_acc"] = round(accuracy(net, x, y), 4)
    except FileNotFoundError:
        pass
    return result
