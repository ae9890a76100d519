"""The run's checkpoints: last.pt (everything a resume needs), best.pt (the classifier alone, for
inference), co_learner.pt (the CML head, for analysis) and, with keep_weights all (or auto and a
small classifier), weights/step_N.pt at every evaluation (classifier, finder, co-learner: for the
app's Explore page). best.pt is staged and promoted only once last.pt records its step, so a killed
run never keeps a best.pt from steps its resume redoes; step weights after the resumed checkpoint
are removed by Run.truncate_after, like the probes. All hold tensors and plain metadata, loaded with
weights_only=True (mgr/checkpoint.py)."""
from __future__ import annotations

import os

import torch

from .. import checkpoint
from ..models.classifier import MODELS, build_classifier
from ..models.co_learner import CoLearner
from ..runstore import WEIGHTS_DIR, Run
from .config import BEFORE_FIELD, KEEP_WEIGHTS_AUTO_MIB
from .state import State

CKPT_KIND, CKPT_VERSION = "mgr-run-checkpoint", 1
MODEL_KIND, MODEL_VERSION = "mgr-classifier", 1
CO_KIND, CO_VERSION = "mgr-co-learner", 1
STEP_KIND, STEP_VERSION = "mgr-step-weights", 1


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
    return _classifier(path, ck, device), ck["meta"]


def _classifier(path, ck: dict, device):
    """The classifier that a best.pt or step-weights file's metadata describes, with its weights."""
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
    return model.to(device).eval()


# ----------------------------------------------------------------------------- weights of every evaluation

def state_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def keeps_step_weights(s: State) -> bool:
    """Whether this run writes weights/step_N.pt at every evaluation (config keep_weights): all; last
    never; auto while the classifier's state (parameters and BatchNorm buffers) is at most
    KEEP_WEIGHTS_AUTO_MIB (SmallCNN width 32: 1.1 MiB; ResNet-18: 42.7 MiB)."""
    if s.cfg.keep_weights == "auto":
        return state_bytes(s.model) <= KEEP_WEIGHTS_AUTO_MIB * 2**20
    return s.cfg.keep_weights == "all"


def step_weights_path(run_path, step: int):
    return run_path / WEIGHTS_DIR / f"step_{step:07d}.pt"


def save_step_weights(run: Run, s: State, record: dict) -> None:
    """weights/step_<step>.pt: the classifier (with its BatchNorm buffers), the finder and the
    co-learner at this evaluation, written atomically before last.pt (a resume from an earlier
    last.pt removes it and writes it again, like the step's probe)."""
    d = s.data
    meta = {"step": s.step, "model": s.cfg.model, "width": s.cfg.width, "num_classes": d.num_classes,
            "channels": d.channels, "resolution": d.resolution, "classes": d.classes, "dataset": d.name,
            "method": s.cfg.method, "val_acc": record["val_acc"], "test_acc": record["test_acc"]}
    tensors = {"model": s.model.state_dict()}
    if s.finder is not None:
        meta |= {"finder": s.cfg.finder, "finder_activation": s.cfg.finder_activation, "z_dim": s.G.z_dim}
        tensors["finder"] = s.finder.state_dict()
    if s.co_learner is not None:
        meta |= {"co_learner_arch": s.cfg.co_learner_arch, "co_in_channels": s.model.feature_dim}
        tensors["co_learner"] = s.co_learner.state_dict()
    checkpoint.save(step_weights_path(run.path, s.step), STEP_KIND, STEP_VERSION, meta, **tensors)


def load_step_weights(path, device="cpu") -> dict:
    """A weights/step_N.pt: {"model": the classifier (eval mode), "finder": the finder or None,
    "co_learner": the co-learner or None, "meta": its metadata}; every fault a CheckpointError
    naming the file."""
    from ..finder import FINDER_ACTIVATIONS, FINDERS, Finder
    ck = checkpoint.load(path, STEP_KIND, STEP_VERSION, map_location=device)
    m = ck["meta"]
    checkpoint.check_meta(path, m, {"step": int})
    out = {"model": _classifier(path, ck, device), "finder": None, "co_learner": None, "meta": m}
    if "finder" in ck:
        checkpoint.check_meta(path, m, {"finder": str, "z_dim": int})
        activation = m.get("finder_activation", BEFORE_FIELD["finder_activation"])  # files from before the option
        if m["finder"] not in FINDERS or activation not in FINDER_ACTIVATIONS or not 1 <= m["z_dim"] <= 100_000:
            raise checkpoint.CheckpointError(f"{path}: metadata describes no finder this MGR Lab builds "
                                             f"(finder={m['finder']!r}, activation={activation!r}, z_dim={m['z_dim']})")
        finder = Finder(m["z_dim"], m["finder"], activation=activation)
        checkpoint.load_state(finder, ck["finder"], path)
        out["finder"] = finder.to(device).eval().requires_grad_(False)
    if "co_learner" in ck:
        checkpoint.check_meta(path, m, {"co_learner_arch": str, "co_in_channels": int})
        co = CoLearner(m["co_in_channels"], m["num_classes"], m["co_learner_arch"])
        checkpoint.load_state(co, ck["co_learner"], path)
        out["co_learner"] = co.to(device).eval()
    return out



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
