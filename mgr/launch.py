"""Starting, stopping and resuming trainer processes from the app (no Streamlit here).

Training always runs in its own OS process, `python -m mgr train ... --run-id ID --runs-dir DIR`,
started in a new session so that a page reload, a closed tab or a restarted app never kills it.
The run directory stays the only source of truth: this module keeps the child handles only to
reap finished children, and a second app process sees the same runs through their files.

A launch writes, before the trainer exists (its run directory does not until its checks pass):

    <runs dir>/.launches/<run id>.json   {"run_id", "pid", "command", "started"} (atomic)
    <runs dir>/.launches/<run id>.log    the trainer's stdout and stderr (appended by --resume)

so a launch that fails before creating its run directory (bad data, missing generator) is shown
with its error instead of vanishing. `list_runs` ignores the hidden folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import atomic_write_text
from .data import DataConfig, DataError, dataset_info, fashion_mnist_missing
from . import processes
from .paths import REPO
from .runstore import Run, RunError, check_run_id, default_runs_dir, ensure_writable, list_runs, new_run_id, run_path

LAUNCHES = ".launches"


class LaunchError(ValueError):
    """A launch, stop or resume that cannot be done; `field` names the form field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# ----------------------------------------------------------------------------- the form

@dataclass(frozen=True)
class Field:
    """One input of the Train form. `name` is the TrainConfig field (or `data.<DataConfig field>`);
    the CLI flag is derived from it, so a new config field needs one line here and nothing else.
    `when(values)` says whether the field applies given the fields above it; a field that does not
    apply is not shown and keeps its default (`shown_fields`)."""
    name: str
    label: str
    kind: str  # select, int, float, optional_float, bool (a toggle), text
    default: object = None
    options: tuple = ()
    help: str = ""
    group: str = "method"  # data, method, schedule, run
    when: object = None  # callable(values so far) -> bool; None: always

    def applies(self, values: dict) -> bool:
        return self.when is None or bool(self.when(values))


IMAGEFOLDER = "imagefolder"  # the dataset choice whose images are in the folder of field `data.folder`
FORM_ONLY = ("data.folder", "run_id")  # form fields that are not config fields: folded in by build_config / launch


def _finder(v):
    return v.get("method") in ("gda-mps", "mgr")


def _lookahead(v):
    return _finder(v) or v.get("procedure") == "mltp"


def form_fields() -> list[Field]:
    from .finder import FINDERS
    from .models.classifier import MODELS
    from .models.co_learner import CO_LEARNER_ARCHS
    from .runtime import DEVICES
    from .trainer import (FINDER_ACTIVATIONS, FINDER_LR_SCHEDULES, LAM_KL_SCHEDULES, META_VALS, METHODS, MLTP_VARIANTS,
                          PROCEDURES, TrainConfig)
    return [
        Field("data.dataset", "dataset", "select", "digits",
              ("digits", "fashion-mnist", "cifar10", "cifar100", "svhn", IMAGEFOLDER),
              "digits is bundled; the others need their files (see Data & generators); imagefolder: your own images, "
              "one sub-folder per class", "data"),
        Field("data.folder", "image folder", "text", "", (), "a folder with one sub-folder of images per class "
              "(or train/ and test/ each so)", "data", lambda v: v.get("data.dataset") == IMAGEFOLDER),
        Field("data.ratio", "ratio", "float", 0.1, (), "fraction of each class kept; a generator must exist for it", "data"),
        Field("data.data_seed", "data seed", "int", 0, (), "which subset (the generator is tied to it)", "data"),
        Field("data.val_fraction", "validation fraction", "float", 0.1, (), "share of each kept class held out for "
              "validation and model selection, in (0, 0.5]; the same images are kept, and a generator must exist "
              "for it", "data"),
        Field("method", "method", "select", "mgr", METHODS, "base: real only; gda: CE on synthetic; pcr: consistency; "
              "mgr: pcr + finder (MPS); gda-mps: gda + finder"),
        Field("model", "model", "select", "smallcnn", MODELS, "smallcnn is the fast CPU model"),
        Field("lam", "λ", "float", 1.0, (), "weight of the synthetic term", when=lambda v: v.get("method") != "base"),
        Field("latent_psi", "latent scale ψ", "float", 1.0, (), "synthetic latents z ~ N(0, ψ² I): below 1 the "
              "truncation trick, typical samples of less variety", when=lambda v: v.get("method") != "base"),
        Field("syn_label_noise", "wrong synthetic labels", "float", 0.0, (), "fraction of the synthetic CE's "
              "labels replaced by a random class", when=lambda v: v.get("method") in ("gda", "gda-mps")),
        Field("lam_kl", "λ_KL", "float", 0.1, (), "weight of the finder's batch KL", when=_finder),
        Field("lam_kl_schedule", "λ_KL schedule", "select", "constant", LAM_KL_SCHEDULES, "lr: λ_KL scaled like the "
              "classifier's learning rate, so the KL's pull does not outweigh the finder's signal as η decays",
              when=_finder),
        Field("finder", "finder", "select", "residual", FINDERS, "F(z) = z + MLP(z) is the paper's best", when=_finder),
        Field("finder_lr", "finder learning rate", "float", TrainConfig.finder_lr, (), "the finder's Adam; too high "
              "and its latents leave the prior (the run then stops as failed)", when=_finder),
        Field("finder_lr_schedule", "finder lr schedule", "select", TrainConfig.finder_lr_schedule, FINDER_LR_SCHEDULES,
              "lr: the finder's learning rate scaled like the classifier's, so the finder slows down with it as η "
              "decays and keeps what it learnt", when=_finder),
        Field("finder_activation", "finder activation", "select", TrainConfig.finder_activation, FINDER_ACTIVATIONS,
              "the finder's hidden units: a silu unit cannot fall silent for good, a relu unit can (at lr 1e-2 most "
              "do, leaving F(z) = z + b)",
              when=lambda v: _finder(v) and v.get("finder") != "linear"),
        Field("meta_val", "finder's validation term", "select", "auto", META_VALS,
              "full: the whole validation split each meta step (less noise on small splits); auto: full when the "
              "split holds at most two batches", when=_finder),
        Field("procedure", "procedure", "select", "standard", PROCEDURES,
              "mltp (Deng & Zhang 2020): two real batches a step, a learnt step α per tensor, rewards gradient "
              "agreement between the batches; wraps any method"),
        Field("mltp_variant", "MLTP variant", "select", "fo", MLTP_VARIANTS,
              "fo: first order (cheapest, usually best); full: second order; conv / fc: meta step on those layers only",
              when=lambda v: v.get("procedure") == "mltp"),
        Field("mltp_eta", "MLTP η", "float", 1.0, (), "weight of the looked-ahead batch C(w'; B_j) in J",
              when=lambda v: v.get("procedure") == "mltp"),
        Field("co_learner", "CML co-learner", "bool", False, (),
              "a co-learner head on the looked-ahead features (Shin et al. 2024); training only, never at inference",
              when=_lookahead),
        Field("co_learner_arch", "co-learner", "select", "conv", CO_LEARNER_ARCHS,
              "conv: two conv blocks + linear on the last feature map; linear: on the pooled features",
              when=lambda v: _lookahead(v) and v.get("co_learner")),
        Field("co_learner_gamma", "co-learner γ", "float", 1.0, (), "weight of its CE in the outer objective",
              when=lambda v: _lookahead(v) and v.get("co_learner")),
        Field("steps", "steps", "int", 300, (), "training iterations", "schedule"),
        Field("eval_every", "evaluate every", "int", 25, (), "steps between evaluations, probes and checkpoints", "schedule"),
        Field("batch_size", "batch size", "int", 64, (), "", "schedule"),
        Field("lr", "learning rate", "optional_float", None, (), "empty: 0.05 smallcnn, 0.1 resnet18", "schedule"),
        Field("seed", "seed", "int", 0, (), "training seed (the subset has the data seed)", "run"),
        Field("device", "device", "select", "auto", DEVICES, "auto: CUDA when present", "run"),
        Field("probes_per_class", "probes per class", "int", 16, (), "probe latents per class (Latents, Feature space)", "run"),
        Field("probe_real", "real probe images", "int", 1000, (), "real images whose features each probe keeps", "run"),
        Field("train_acc_images", "train accuracy images", "int", 2000, (),
              "training images each evaluation's train accuracy is measured on (0: none)", "run"),
        Field("run_id", "run id", "text", "", (), "empty: generated (time, dataset, method); letters, digits, '.', "
              "'_' and '-' only: a run id is never a path", "run"),
    ]


def shown_fields(values: dict) -> list[Field]:
    """The fields that apply to `values` (each decided by the fields before it)."""
    return [f for f in form_fields() if f.applies(values)]


# The Home page's teaching demos (paired experiments over seeds) live in mgr/demos.py and run through
# mgr/demo_queue.py, which starts their trainers with Launcher.launch.


def build_config(values: dict):
    """The TrainConfig of the form's values, checked like the CLI checks it before any work:
    config fields, dataset availability, the generator for this split. Raises LaunchError naming
    the field at fault."""
    from .trainer import TrainConfig
    values = {k: v for k, v in values.items() if k != "run_id"}
    folder = values.pop("data.folder", None)
    if values.get("data.dataset") == IMAGEFOLDER:
        values["data.dataset"] = check_folder(folder)
    data_kw = {k[5:]: v for k, v in values.items() if k.startswith("data.")}
    train_kw = {k: v for k, v in values.items() if not k.startswith("data.")}
    try:
        data = DataConfig(**data_kw)
    except (DataError, ValueError, TypeError) as e:
        raise LaunchError(str(e), _field_of(str(e), [f"data.{k}" for k in data_kw], "data.dataset")) from None
    try:
        cfg = TrainConfig(data=data, **train_kw)
    except (ValueError, TypeError) as e:
        raise LaunchError(str(e), _field_of(str(e), list(train_kw))) from None
    check_available(cfg)
    return cfg


def check_folder(folder) -> str:
    """The dataset name `imagefolder:<resolved folder>` of a typed folder, or a LaunchError on the field."""
    return folder_report(folder)[0]


def folder_report(folder) -> tuple[str, list[tuple[str, str]]]:
    """(dataset name, skipped files with their reasons) of a typed image folder, read by the trainer's
    own scanner (mgr.imagefolder.scan: the same answers as `python -m mgr train`), or a LaunchError
    on the field naming the file or folder at fault. It decodes every image, as the trainer will."""
    from .imagefolder import FolderError, scan
    text = str(folder or "").strip()
    if not text:
        raise LaunchError("image folder is empty: give the folder that holds one sub-folder per class", "data.folder")
    path = Path(text).expanduser()
    try:
        found = scan(path, dataset_info("imagefolder:" + text).resolution)
    except FolderError as e:
        raise LaunchError(str(e), "data.folder") from None
    return f"imagefolder:{path.resolve()}", found.skipped


def _field_of(message: str, names: list[str], fallback: str | None = None) -> str | None:
    for name in sorted(names, key=len, reverse=True):  # lam_kl before lam
        if message.startswith(f"{name.split('.')[-1]}="):
            return name
    return fallback


def check_available(cfg) -> None:
    """What `python -m mgr train` would find missing only after starting: the data and the generator."""
    from . import checkpoint
    from .runtime import resolve_device
    from .trainer.state import checked_generator
    name = cfg.data.dataset
    if name == "fashion-mnist":
        try:
            missing = fashion_mnist_missing(cfg.data)  # full data here, or a split the bundled subset holds?
        except DataError as e:  # e.g. per_class larger than a class
            raise LaunchError(str(e), "data.ratio") from None
        if missing:
            raise LaunchError(missing, "data.ratio")
    if name not in ("digits", "fashion-mnist") and not name.startswith("imagefolder:") and not Path(cfg.data.root).exists():
        raise LaunchError(f"{name} is not downloaded ({dataset_info(name).source}); this machine may be offline",
                          "data.dataset")
    try:
        resolve_device(cfg.device)
    except ValueError as e:
        raise LaunchError(str(e), "device") from None
    if cfg.uses_generator:
        try:
            path, meta = checked_generator(cfg)
        except (FileNotFoundError, checkpoint.CheckpointError) as e:
            raise LaunchError(str(e), "data.val_fraction" if "val_fraction" in str(e) else "data.ratio") from None
        want = cfg.data.subset
        have = {k: meta.get(k) for k in want}
        if have != want and not cfg.leaky_generator:  # the leakage demo's override, marked on every view of the run
            raise LaunchError(f"generator {path} was trained on {have}, not on this split {want}", "data.ratio")


def cli_args(cfg) -> list[str]:
    """`python -m mgr train` flags for a TrainConfig: --name-with-dashes per non-default field."""
    from .trainer import TrainConfig
    args = []
    data_defaults = DataConfig(cfg.data.dataset)
    for f in dataclasses.fields(cfg.data):
        v = getattr(cfg.data, f.name)
        if f.name == "dataset" or (f.name != "ratio" and v == getattr(data_defaults, f.name)):
            continue
        if f.name == "download":
            args += [] if v else ["--no-download"]
        elif v is not None:
            args += [f"--{'data-root' if f.name == 'root' else f.name.replace('_', '-')}", str(v)]
    args = ["--dataset", cfg.data.dataset] + args
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "data" or v is None or (f.name in defaults and v == defaults[f.name] and not isinstance(v, bool)):
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(v, bool):
            args += [flag] if v else []
        else:
            args += [flag, str(v)]
    return args


# ----------------------------------------------------------------------------- processes

def is_trainer(pid, run: Run, started: float | None = None) -> bool:
    """Whether `pid` is alive and is this run's trainer, never a recycled pid (mgr/processes.py)."""
    return processes.is_trainer(pid, run.id, started)


def trainer_threads(runs_dir: str | Path | None = None) -> str:
    """Torch threads of an app-launched trainer: $MGR_THREADS, else the cores left over by the trainers
    already training in the runs folder (a held one costs no CPU), at least 1: a trainer alone uses every
    core. The app's own process computes on one thread (app.py) in short bursts between them; more threads
    than free cores make small convolutions many times slower (mgr/runtime.py: set_threads)."""
    if os.environ.get("MGR_THREADS"):
        return os.environ["MGR_THREADS"]
    busy = 0
    for run in list_runs(runs_dir):
        st = run.status()
        if not st.get("paused") and run.state(st) == "running":
            busy += 1
    return str(max(1, (os.cpu_count() or 1) - busy))


class Launcher:
    """Spawns trainers and keeps their handles (to reap them). Hold one per app process
    (st.cache_resource); everything it reports comes from the files, not from the handles."""

    def __init__(self, runs_dir: str | Path | None = None):
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.children: dict[str, subprocess.Popen] = {}

    def _spawn(self, run_id: str, args: list[str]) -> subprocess.Popen:
        logs = self.runs_dir / LAUNCHES
        logs.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mgr", "train", *args, "--quiet", "--threads", trainer_threads(self.runs_dir)]
        with open(logs / f"{run_id}.log", "ab") as log:
            p = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.children[run_id] = p
        atomic_write_text(logs / f"{run_id}.json", json.dumps(
            {"run_id": run_id, "pid": p.pid, "command": cmd, "started": time.time()}))
        return p

    def launch(self, values: dict, run_id: str | None = None, pause_at: int | None = None) -> str:
        """Validate the form's values, then start the trainer detached; returns the run id. `pause_at`: the
        trainer holds after that step until Run.unpause (mgr train --pause-at)."""
        run_id = run_id or str(values.get("run_id") or "").strip() or None
        if run_id is not None:
            try:
                check_run_id(run_id)
            except RunError as e:
                raise LaunchError(str(e), "run_id") from None
            try:
                taken = run_path(self.runs_dir, run_id).exists() or (self.runs_dir / LAUNCHES / f"{run_id}.json").exists()
            except RunError as e:
                raise LaunchError(str(e), "run_id") from None
            if taken:
                raise LaunchError(f"run {run_id} already exists in {self.runs_dir}; choose another id", "run_id")
        cfg = build_config(values)
        try:
            ensure_writable(self.runs_dir)
        except RunError as e:
            raise LaunchError(str(e)) from None
        run_id = run_id or new_run_id(cfg.data.dataset, cfg.method)
        hold = ["--pause-at", str(pause_at)] if pause_at is not None else []
        self._spawn(run_id, cli_args(cfg) + ["--run-id", run_id, "--runs-dir", str(self.runs_dir.resolve()), *hold])
        return run_id

    def stop(self, run: Run) -> None:
        """SIGTERM to the run's trainer (it saves last.pt and ends as `stopped`), only if the pid
        in status.json really is that trainer."""
        st = run.status()
        if st.get("state") != "running":
            raise LaunchError(f"run {run.id} is {st.get('state')}, not running")
        pid = st.get("pid")
        if not run.trainer_alive(st) or not is_trainer(pid, run, st.get("started")):
            raise LaunchError(f"run {run.id}'s trainer (pid {pid}) is gone: it was killed; Resume continues it "
                              "from its last checkpoint")
        os.kill(pid, signal.SIGTERM)

    def resume(self, run: Run) -> None:
        from .trainer import TrainConfig
        st = run.status()
        state = run.state(st)
        if state not in ("stopped", "failed", "killed"):
            raise LaunchError(f"run {run.id} is {state}; only a stopped, failed or killed run can be resumed")
        try:
            check_available(TrainConfig.from_dict(run.config))
        except (ValueError, TypeError, OSError) as e:
            raise LaunchError(f"run {run.id} cannot be resumed: {e}") from None
        self._spawn(run.id, ["--resume", str(run.path.resolve())])

    def reap(self) -> None:
        for run_id, p in list(self.children.items()):
            if p.poll() is not None:
                del self.children[run_id]

    def pending(self) -> list[dict]:
        """Launches whose run directory does not exist (yet): starting, or failed before it could
        create one (with the log's tail)."""
        self.reap()
        out = []
        for meta_path in sorted((self.runs_dir / LAUNCHES).glob("*.json"), reverse=True):
            try:
                meta = json.loads(meta_path.read_text())
                run_dir = run_path(self.runs_dir, meta["run_id"])  # a crafted record never names another path
                if not isinstance(meta.get("pid"), int):
                    continue
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if (run_dir / "config.json").exists():
                continue
            alive = processes.runs_command(meta["pid"], meta["run_id"])
            out.append({**meta, "state": "starting" if alive else "failed to start",
                        "log": log_tail(self.runs_dir, meta["run_id"])})
        return out

    def dismiss(self, run_id: str) -> None:
        """Forget a failed launch (its log and record)."""
        run_path(self.runs_dir, run_id)
        for ext in (".json", ".log"):
            (self.runs_dir / LAUNCHES / f"{run_id}{ext}").unlink(missing_ok=True)


def log_tail(runs_dir: str | Path, run_id: str, lines: int = 30) -> str:
    run_path(runs_dir, run_id)
    try:
        with open(Path(runs_dir) / LAUNCHES / f"{run_id}.log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def eta_seconds(status: dict, images_per_step: int) -> float | None:
    """Seconds left at the trainer's current throughput (evaluations not counted). img_per_s counts
    every real image a step consumes, so pass the same: the batch size, twice it under MLTP (two
    batches a step; TrainConfig.images_per_step). The batch size alone halved MLTP's ETA."""
    ips, step, total = status.get("img_per_s"), status.get("step", 0), status.get("total_steps")
    if not ips or not total or step >= total:
        return None
    return (total - step) * images_per_step / ips


__all__ = ["Field", "IMAGEFOLDER", "LaunchError", "check_folder", "folder_report", "shown_fields", "Launcher", "RunError", "build_config", "check_available", "cli_args",
           "eta_seconds", "form_fields", "is_trainer", "log_tail"]
