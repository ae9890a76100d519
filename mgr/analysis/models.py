"""The models of a run, loaded for views that generate new samples (interpolation, FID): the
generator, finder and classifier of its last checkpoint."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..runstore import Run
from .files import file_signature


def _inside(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(r.resolve()) for r in roots)


def generator_file(run: Run, cfg=None) -> Path:
    """The generator checkpoint a run trains with: its config's, else the shipped one of its data
    split. It must lie in the checkpoints folder or the runs folder: a run's config never makes the
    app read other paths."""
    from .. import paths
    from ..trainer import TrainConfig
    cfg = cfg or TrainConfig.from_dict(run.config)
    if not cfg.uses_generator:
        raise ValueError(f"run {run.id} uses no generator (method base)")
    gen = Path(cfg.generator) if cfg.generator else paths.generator_path(cfg.data.subset)
    if not _inside(gen, [paths.checkpoints_dir(), run.path.parent]):
        raise ValueError(f"generator {gen} is outside the checkpoints and runs folders; the app does not read it")
    return gen


def run_models(run: Run, device: str = "cpu") -> dict:
    """The generator (`generator_file`), finder and classifier of a run's last checkpoint (last.pt),
    for views that must generate new samples. The models are only ever read (interpolation passes
    soft labels as an input), so one loaded copy can serve every app session."""
    from .. import checkpoint
    from ..finder import Finder
    from ..gan import load_generator
    from ..models.classifier import build_classifier
    from ..trainer import CKPT_KIND, CKPT_VERSION, TrainConfig
    cfg = TrainConfig.from_dict(run.config)
    G, gmeta = load_generator(generator_file(run, cfg), device=device)
    ck = checkpoint.load(run.path / "last.pt", CKPT_KIND, CKPT_VERSION, map_location=device)
    model = build_classifier(cfg.model, gmeta["num_classes"], gmeta["channels"], width=cfg.width)
    checkpoint.load_state(model, ck["model"], run.path / "last.pt")
    finder = None
    if "finder" in ck:
        finder = Finder(G.z_dim, cfg.finder)
        checkpoint.load_state(finder, ck["finder"], run.path / "last.pt")
        finder = finder.to(device).eval().requires_grad_(False)
    return {"G": G, "finder": finder, "model": model.to(device).eval(), "step": ck["meta"]["step"], "cfg": cfg,
            "classes": gmeta["classes"]}


_LOADED: OrderedDict = OrderedDict()  # (run, device, files' signatures) -> models; the last few, per process
_LOADED_MAX = 4
_LOADING = threading.Lock()


def loaded_models(run: Run, device: str = "cpu") -> dict:
    """`run_models`, loaded once per process for each (run, device, checkpoint): kept while last.pt and
    the generator file are unchanged (a new evaluation, a resume or a generator retrained in place
    loads them again), the last 4 kept. Shared by every session: the models are only read."""
    key = (str(run.path.resolve()), device, file_signature(run.path / "last.pt", generator_file(run)))
    with _LOADING:  # one load per key, even when two sessions ask at once
        if key not in _LOADED:
            _LOADED[key] = run_models(run, device)
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        return _LOADED[key]


def interpolation(models: dict, z_a: np.ndarray, class_a: int, class_b: int, mode: str = "label", n: int = 9,
                  z_b: np.ndarray | None = None) -> dict:
    """Walk G from class a to class b in n steps: `label` keeps z and mixes the labels, (1 − t)·a + t·b,
    which G takes as soft labels (the class embeddings mixed); `latent` also moves z from z_a to z_b
    (e.g. a probe latent of each class). Returns t, the label mix (n × classes), the images (uint8),
    the classifier's features g_ψ and its probabilities along the path. G is only read, so sessions
    sharing one loaded generator can walk it at once."""
    import torch
    C = models["G"].num_classes
    if mode not in ("label", "latent"):
        raise ValueError(f"interpolation mode {mode!r} is not one of label, latent")
    for name, c in (("class_a", class_a), ("class_b", class_b)):
        if not 0 <= int(c) < C:
            raise ValueError(f"{name}={c} is not a class of this generator (0 … {C - 1})")
    if n < 2:
        raise ValueError(f"n={n} steps cannot join two classes; use n >= 2")
    G, model = models["G"], models["model"]
    t = torch.linspace(0, 1, n)[:, None]
    za = torch.as_tensor(z_a, dtype=torch.float32)[None]
    zb = torch.as_tensor(z_b if (mode == "latent" and z_b is not None) else z_a, dtype=torch.float32)[None]
    z = (1 - t) * za + t * zb
    one_hot = torch.eye(C)
    labels = (1 - t) * one_hot[int(class_a)] + t * one_hot[int(class_b)]
    with torch.no_grad():
        x = G(z, labels)
        f = model.features(x)
        probs = torch.softmax(model.head(f), 1)
    return {"t": t[:, 0].numpy(), "labels": labels.numpy(),
            "images": ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy(),
            "features": f.numpy(), "probs": probs.numpy()}
