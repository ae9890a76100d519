"""The models of a run, loaded for views that generate new samples (interpolation, FID, Explore):
the generator, and the finder and classifier of its last checkpoint or of any evaluation step that
kept weights (weights/step_N.pt; else last.pt or best.pt at their own steps)."""
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
    from ..trainer.state import generator_path_of
    cfg = cfg or TrainConfig.from_dict(run.config)
    if not cfg.uses_generator:
        raise ValueError(f"run {run.id} uses no generator (method base)")
    gen = Path(generator_path_of(cfg))
    if not _inside(gen, [paths.checkpoints_dir(), run.path.parent]):
        raise ValueError(f"generator {gen} is outside the checkpoints and runs folders; the app does not read it")
    return gen


class NoWeights(ValueError):
    """The chosen step has a probe but no weights (keep_weights last, a classifier too big for auto,
    or a run made before step weights existed: only last.pt and best.pt)."""


_STEP_OF: dict = {}  # (path, signature) -> the step a last.pt / best.pt holds (read once per version of the file)


def _step_of(path: Path, kind: str, version: int) -> int | None:
    from .. import checkpoint
    key = (str(path), file_signature(path))
    if key not in _STEP_OF:
        try:
            _STEP_OF[key] = int(checkpoint.load(path, kind, version)["meta"]["step"])
        except (checkpoint.CheckpointError, KeyError, TypeError, ValueError, OSError):
            _STEP_OF[key] = None  # unreadable: missing for every purpose here
        while len(_STEP_OF) > 64:
            _STEP_OF.pop(next(iter(_STEP_OF)))
    return _STEP_OF[key]


def weight_sources(run: Run) -> dict[int, str]:
    """{step: file, relative to the run} of every step with weights: weights/step_N.pt (classifier,
    finder, co-learner), else last.pt (the same, at its step), else best.pt (the classifier only)."""
    from ..runstore import WEIGHTS_DIR
    from ..trainer.checkpoints import CKPT_KIND, CKPT_VERSION, MODEL_KIND, MODEL_VERSION
    out = {}
    for name, kind, version in (("best.pt", MODEL_KIND, MODEL_VERSION), ("last.pt", CKPT_KIND, CKPT_VERSION)):
        if (run.path / name).exists() and (step := _step_of(run.path / name, kind, version)) is not None:
            out[step] = name
    try:
        out |= {step: f"{WEIGHTS_DIR}/step_{step:07d}.pt" for step in run.weight_steps()}
    except OSError:
        pass
    return out


def weights_signature(run: Run) -> tuple:
    """Cache key of which weights a run has: a new evaluation, a resume or a retrained generator changes it."""
    from ..runstore import WEIGHTS_DIR
    return file_signature(run.path / "last.pt", run.path / "best.pt", run.path / WEIGHTS_DIR, generator_file(run))


def run_models(run: Run, device: str = "cpu", step: int | None = None) -> dict:
    """The generator (`generator_file`), finder and classifier of a run's last checkpoint (last.pt), or
    with `step` of that evaluation (`weight_sources`; NoWeights for a step without any), for views
    that must generate new samples. `source` names the file; under best.pt `finder` is None (it keeps
    the classifier alone). The models are only ever read (interpolation passes soft labels as an
    input), so one loaded copy can serve every app session."""
    from .. import checkpoint
    from ..finder import Finder
    from ..gan import load_generator
    from ..models.classifier import build_classifier
    from ..trainer import CKPT_KIND, CKPT_VERSION, TrainConfig, load_classifier
    from ..trainer.checkpoints import load_step_weights
    cfg = TrainConfig.from_dict(run.config)
    source = "last.pt"
    if step is not None:
        have = weight_sources(run)
        if step not in have:
            kept = ", ".join(f"{s} ({f})" for s, f in sorted(have.items())) or "none yet"
            raise NoWeights(f"No weights at step {step}: this run has no weights/step_{step:07d}.pt (trained with "
                            f"keep_weights last, or auto with a classifier over 8 MiB, or before step weights "
                            f"existed), and last.pt and best.pt hold other steps. Steps with weights: {kept}.")
        source = have[step]
    G, gmeta = load_generator(generator_file(run, cfg), device=device)
    path = run.path / source
    finder, co = None, None
    if source == "last.pt":
        ck = checkpoint.load(path, CKPT_KIND, CKPT_VERSION, map_location=device)
        model = build_classifier(cfg.model, gmeta["num_classes"], gmeta["channels"], width=cfg.width)
        checkpoint.load_state(model, ck["model"], path)
        model, at = model.to(device).eval(), ck["meta"]["step"]
        if "finder" in ck:
            finder = Finder(G.z_dim, cfg.finder, activation=cfg.finder_activation)
            checkpoint.load_state(finder, ck["finder"], path)
            finder = finder.to(device).eval().requires_grad_(False)
    elif source == "best.pt":
        model, meta = load_classifier(path, device)
        at = meta["step"]
    else:
        w = load_step_weights(path, device)
        model, finder, co, at = w["model"], w["finder"], w["co_learner"], w["meta"]["step"]
    return {"G": G, "finder": finder, "model": model, "co_learner": co, "step": at, "cfg": cfg,
            "classes": gmeta["classes"], "source": source}


_LOADED: OrderedDict = OrderedDict()  # (run, device, files' signatures) -> models; the last few, per process
_LOADED_MAX = 8
_LOADING = threading.Lock()


def loaded_models(run: Run, device: str = "cpu", step: int | None = None) -> dict:
    """`run_models`, loaded once per process for each (run, device, step, weights file): kept while that
    file (last.pt without `step`) and the generator file are unchanged (a new evaluation, a resume or
    a generator retrained in place loads them again), the last 8 kept. Shared by every session: the
    models are only read."""
    source = "last.pt" if step is None else weight_sources(run).get(step)
    if source is None:
        return run_models(run, device, step)  # raises NoWeights, naming the steps that have weights
    if source == "last.pt":
        step = None  # the same models as loaded_models(run): one copy
    key = (str(run.path.resolve()), device, step, source, file_signature(run.path / source, generator_file(run)))
    with _LOADING:  # one load per key, even when two sessions ask at once
        if key not in _LOADED:
            _LOADED[key] = run_models(run, device, step)
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
