"""The run's checkpoints: last.pt (everything a resume needs), best.pt (the classifier alone, for
inference) and co_learner.pt (the CML head, for analysis). best.pt is staged and promoted only
once last.pt records its step, so a killed run never keeps a best.pt from steps its resume redoes.
All hold tensors and plain metadata, loaded with weights_only=True (mgr/checkpoint.py)."""
from __future__ import annotations

import os

import torch

from .. import checkpoint
from ..models.classifier import MODELS, build_classifier
from ..models.co_learner import CoLearner
from ..runstore import Run
from .state import State

CKPT_KIND, CKPT_VERSION = "mgr-run-checkpoint", 1
MODEL_KIND, MODEL_VERSION = "mgr-classifier", 1
CO_KIND, CO_VERSION = "mgr-co-learner", 1


def save_checkpoint(run: Run, s: State) -> None:
    tensors = {"model": s.model.state_dict(), "opt": s.opt.state_dict(), "sched": s.sched.state_dict(),
               "rng": torch.get_rng_state(), "batch_rng": s.batch_gen.get_state()}
    if s.device.type == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(s.device)
    if s.finder is not None:
        tensors["finder"], tensors["finder_opt"] = s.finder.state_dict(), s.finder_opt.state_dict()
    if s.alpha:  # α's own optimizer state is in "opt" (its second parameter group)
        tensors["alpha"] = {n: a.detach() for n, a in s.alpha.items()}
    if s.co_learner is not None:
        tensors["co_learner"], tensors["co_opt"] = s.co_learner.state_dict(), s.co_opt.state_dict()
    checkpoint.save(run.path / "last.pt", CKPT_KIND, CKPT_VERSION,
                    {"step": s.step, "best_val_acc": s.best_val_acc, "best_step": s.best_step, **identity(s)},
                    **tensors)
    promote_best(run, s.step)  # last.pt is the commit point: only now is a new best.pt part of the run


def identity(s: State) -> dict:
    """What a last.pt must share with the run that resumes from it."""
    return {"method": s.cfg.method, "model": s.cfg.model, "dataset": s.data.name, "split_hash": s.data.split_hash}


def load_checkpoint(run: Run, s: State) -> None:
    path = run.path / "last.pt"
    ck = checkpoint.load(path, CKPT_KIND, CKPT_VERSION, map_location=s.device)
    checkpoint.check_meta(path, ck["meta"], {"step": int, "best_val_acc": (int, float), "best_step": int},
                          identity(s), why="it belongs to another run")
    if not 0 <= ck["meta"]["step"] <= s.cfg.steps:
        raise checkpoint.CheckpointError(f"{path}: step {ck['meta']['step']} is outside [0, steps={s.cfg.steps}]")
    parts = [("model", s.model), ("opt", s.opt), ("sched", s.sched)]
    if s.finder is not None:
        parts += [("finder", s.finder), ("finder_opt", s.finder_opt)]
    if s.co_learner is not None:
        parts += [("co_learner", s.co_learner), ("co_opt", s.co_opt)]
    try:
        for key, obj in parts:
            if not isinstance(ck.get(key), dict):
                raise KeyError(f"no {key!r} state")
            obj.load_state_dict(ck[key])
        with torch.no_grad():
            for n, a in s.alpha.items():
                a.copy_(ck["alpha"][n])
        torch.set_rng_state(ck["rng"].cpu())
        if "batch_rng" in ck:  # absent in checkpoints made before the batch generator: it restarts from the seed
            s.batch_gen.set_state(ck["batch_rng"].cpu())
        if "cuda_rng" in ck and s.device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), s.device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise checkpoint.CheckpointError(f"{path}: does not fit this run's model and optimizers "
                                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    s.step, s.best_val_acc, s.best_step = ck["meta"]["step"], ck["meta"]["best_val_acc"], ck["meta"]["best_step"]


def load_co_learner(path, device="cpu"):
    """The co-learner saved beside best.pt (co_learner.pt): for analysis only, never for inference."""
    ck = checkpoint.load(path, CO_KIND, CO_VERSION, map_location=device)
    m = ck["meta"]
    co = CoLearner(m["in_channels"], m["num_classes"], m["arch"])
    checkpoint.load_state(co, ck["co_learner"], path)
    return co.to(device).eval(), m


def load_classifier(path, device="cpu"):
    """A trained classifier (best.pt) for inference: the model only, no G, finder or co-learner."""
    ck = checkpoint.load(path, MODEL_KIND, MODEL_VERSION, map_location=device)
    m = ck["meta"]
    checkpoint.check_meta(path, m, {"model": str, "num_classes": int, "channels": int, "resolution": int})
    if m["model"] not in MODELS or not 2 <= m["num_classes"] <= 100_000 or m["channels"] not in (1, 3):
        raise checkpoint.CheckpointError(f"{path}: metadata describes no classifier this MGR Lab builds "
                                         f"(model={m['model']!r}, num_classes={m['num_classes']}, channels={m['channels']})")
    width = m.get("width")  # absent in checkpoints older than the width option: the default
    if width is not None and not (isinstance(width, int) and 1 <= width <= 1024):
        raise checkpoint.CheckpointError(f"{path}: metadata width={width!r} is not an integer in [1, 1024]")
    model = build_classifier(m["model"], m["num_classes"], m["channels"], width=width)
    checkpoint.load_state(model, ck["model"], path)
    return model.to(device).eval(), m



def save_best(run: Run, s: State, record: dict) -> None:
    """Stage best.pt as .best-<step>.pt; save_checkpoint promotes it once last.pt records this step, so a
    run killed in between never keeps a best.pt from steps that its resume will redo differently."""
    d = s.data
    checkpoint.save(run.path / f".best-{s.step:07d}.pt", MODEL_KIND, MODEL_VERSION,
                    {"model": s.cfg.model, "width": s.cfg.width, "num_classes": d.num_classes, "channels": d.channels,
                     "resolution": d.resolution, "classes": d.classes, "step": s.step, "val_acc": record["val_acc"],
                     "test_acc": record["test_acc"], "dataset": d.name}, model=s.model.state_dict())
    if s.co_learner is not None:  # its own file, staged the same way: the classifier's checkpoint never holds it
        checkpoint.save(run.path / f".co_learner-{s.step:07d}.pt", CO_KIND, CO_VERSION,
                        {"arch": s.cfg.co_learner_arch, "in_channels": s.model.feature_dim,
                         "num_classes": d.num_classes, "step": s.step, "classifier": "best.pt"},
                        co_learner=s.co_learner.state_dict())


def promote_best(run: Run, step: int) -> None:
    """best.pt (and co_learner.pt) := the newest staged one at or before `step`; staged ones after it
    are from undone steps."""
    for name in ("best", "co_learner"):
        staged = sorted(run.path.glob(f".{name}-*.pt"))
        keep = [p for p in staged if p.stem[len(name) + 2:].isdigit() and int(p.stem[len(name) + 2:]) <= step]
        if keep:
            os.replace(keep[-1], run.path / f"{name}.pt")
        for p in staged:
            if p not in keep[-1:]:
                p.unlink(missing_ok=True)
