"""Probes: at each evaluation the trainer saves what the app's views need and only it can compute
cheaply (uniform and finder images of fixed probe latents, their features, predictions and PCR
gaps; features of a fixed real subset), so the views read arrays, not models."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .state import State

def probe_static(s: State) -> dict:
    """The fixed probe latents (per class) and the fixed real subset, drawn once per run."""
    d, gen = s.data, torch.Generator().manual_seed(1234)
    k, C = s.cfg.probes_per_class, d.num_classes
    real = {}
    n_train = min(len(d.y_train), s.cfg.probe_real // 2)
    n_test = min(len(d.y_test), s.cfg.probe_real - n_train)
    train_idx = torch.randperm(len(d.y_train), generator=gen)[:n_train].to(s.device)
    test_idx = torch.randperm(len(d.y_test), generator=gen)[:n_test].to(s.device)
    real["images"] = torch.cat([d.x_train[train_idx], d.x_test[test_idx]])
    real["labels"] = torch.cat([d.y_train[train_idx], d.y_test[test_idx]])
    out = {"real_images": _u8(real["images"]), "real_labels": real["labels"].cpu().numpy(),
           "real_split": np.array(["train"] * n_train + ["test"] * n_test), "classes": np.array(d.classes)}
    if s.G is not None:
        out["probe_z"] = (torch.randn(k * C, s.G.z_dim, generator=gen) * s.cfg.latent_psi).numpy()  # as the run draws
        out["probe_y"] = np.repeat(np.arange(C), k)
    return out


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def probe(s: State, static: dict) -> dict:
    """What the views need at this step, computed once here so they read arrays, not models."""
    model = s.model.eval()
    out = {}
    real = torch.from_numpy(static["real_images"]).to(s.device).float().div(127.5).sub(1)
    out["real_features"] = torch.cat([model.features(c) for c in real.split(500)]).float().cpu().numpy()
    if s.G is not None:
        z = torch.from_numpy(static["probe_z"]).to(s.device)
        y = torch.from_numpy(static["probe_y"]).to(s.device)
        z_f = s.finder(z) if s.finder is not None else z
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(99)
            t = s.T.draw(torch.empty(len(z), s.data.channels, s.data.resolution, s.data.resolution))
        t = [tuple(p.to(s.device) for p in params) for params in t]  # the same T at every step
        out["finder_z"] = z_f.float().cpu().numpy()
        for name, lat in (("uniform", z), ("finder", z_f)):
            x = s.G(lat, y)
            xt = s.T.apply(x, t)
            f, ft = model.features(x), model.features(xt)
            out[f"{name}_images"] = _u8(x)
            out[f"augmented_{name}"] = _u8(xt)
            out[f"{name}_features"] = f.float().cpu().numpy()
            out[f"{name}_probs"] = F.softmax(model.head(f).float(), 1).cpu().numpy()
            out[f"{name}_gap"] = (ft - f).float().pow(2).mean(1).cpu().numpy()
    model.train()
    return out
