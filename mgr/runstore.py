"""The run directory: the only contract between the trainer and everything that reads runs.

    runs/<run id>/
      config.json      the full resolved training config (written once, at creation)
      status.json      {"state": running|finished|failed|stopped, "step", "total_steps", "error",
                        "pid", "started", "updated", "best_val_acc", "best_step"}
      metrics.jsonl    one JSON object per evaluation (fields: METRIC_FIELDS below)
      scalars.jsonl    training scalars (losses, lr, throughput) every log_every steps
      probes/static.npz         arrays that never change: probe latents, real subset images
      probes/step_0000050.npz   arrays of one evaluation (PROBE_FIELDS below)
      last.pt, best.pt checkpoints (weights-only loadable)

Every write is atomic: whole files by temp-file + rename, metrics by appending one complete,
flushed line. A reader therefore sees a file's old or new version, never half of one; a line
without its newline (a writer killed mid-append) is ignored. docs/run-directory.md says the same
for people.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write, atomic_write_text

STATES = ("running", "finished", "failed", "stopped")
METRIC_FIELDS = ("step", "epoch", "lr", "loss", "ce", "pcr", "syn_ce", "kl", "latent_shift", "meta_val_ce",
                 # MLTP: CE on B_j at w', cos(∇C(w; B_i), ∇C(w'; B_j)), the steps α per layer group
                 "mltp_ce_j", "mltp_grad_cos",
                 *(f"alpha_{g}_{s}" for g in ("conv", "bn", "fc", "other") for s in ("mean", "min", "max")),
                 # CML co-learner: its CE and accuracy on its batch, cos of its and the main gradient on ψ
                 "co_ce", "co_acc", "co_grad_cos",
                 "train_acc", "val_acc", "val_loss", "test_acc", "test_loss", "img_per_s", "elapsed")
PROBE_FIELDS = {
    "static": ("probe_z", "probe_y", "real_images", "real_labels", "real_split", "classes"),
    "step": ("finder_z", "uniform_images", "finder_images", "uniform_features", "finder_features",
             "uniform_probs", "finder_probs", "uniform_gap", "finder_gap", "augmented_uniform",
             "augmented_finder", "real_features"),
}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunError(ValueError):
    pass


def default_runs_dir() -> Path:
    return Path(os.environ.get("MGR_RUNS_DIR", "runs"))


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise RunError(f"run id {run_id!r} is not allowed: use letters, digits, '.', '_' and '-' "
                       "(no path separators, no '..', at most 128 characters)")
    return run_id


def ensure_writable(runs_dir: str | Path) -> Path:
    """Create runs_dir if needed and prove a file can be written there (fails at start, not mid-run)."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        probe = runs_dir / f".write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise RunError(f"runs directory {runs_dir} is not writable ({e.strerror or e}); "
                       "choose another with --runs-dir or $MGR_RUNS_DIR") from e
    return runs_dir


def new_run_id(dataset: str, method: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset).strip("-")[:24]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{method}-{secrets.token_hex(2)}"


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.id = self.path.name

    # -------------------------------------------------------------- creation

    @classmethod
    def create(cls, runs_dir: str | Path, config: dict, run_id: str | None = None) -> "Run":
        runs_dir = ensure_writable(runs_dir)
        run_id = check_run_id(run_id or new_run_id(config["data"]["dataset"], config["method"]))
        path = runs_dir / run_id
        try:
            path.mkdir()  # exclusive: two launches never share a directory
        except FileExistsError:
            raise RunError(f"run {run_id!r} already exists in {runs_dir}") from None
        run = cls(path)
        (path / "probes").mkdir()
        atomic_write_text(path / "config.json", json.dumps(config, indent=1))
        return run

    # -------------------------------------------------------------- files

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def status(self) -> dict:
        """The status, or {"state": "unknown", "error": ...} when it cannot be read."""
        try:
            return json.loads((self.path / "status.json").read_text())
        except FileNotFoundError:
            return {"state": "unknown", "error": "status.json is missing"}
        except (OSError, json.JSONDecodeError) as e:
            return {"state": "unknown", "error": f"status.json unreadable: {e}"}

    def write_status(self, **fields) -> None:
        current = self.status()
        if current.get("state") == "unknown":
            current = {}
        current.update(fields, updated=time.time())
        atomic_write_text(self.path / "status.json", json.dumps(current, indent=1))

    def append_metrics(self, record: dict) -> None:
        self._append("metrics.jsonl", record, fsync=True)

    def append_scalars(self, record: dict) -> None:
        self._append("scalars.jsonl", record, fsync=False)  # frequent, and redone on resume anyway

    def _append(self, name: str, record: dict, fsync: bool) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        with open(self.path / name, "a") as f:
            f.write(line)  # one write of a whole line: a reader sees all of it or none
            f.flush()
            if fsync:
                os.fsync(f.fileno())

    def metrics(self) -> list[dict]:
        return self._records("metrics.jsonl")

    def scalars(self) -> list[dict]:
        return self._records("scalars.jsonl")

    def _records(self, name: str) -> list[dict]:
        try:
            text = (self.path / name).read_text()
        except FileNotFoundError:
            return []
        records = []
        for line in text.split("\n")[:-1]:  # the part after the last newline is unfinished
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Forget what a resumed run will redo: metric and scalar lines and probes after `step`."""
        for name in ("metrics.jsonl", "scalars.jsonl"):
            kept = [r for r in self._records(name) if r["step"] <= step]
            atomic_write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in kept))
        for s in self.probe_steps():
            if s > step:
                (self.path / "probes" / f"step_{s:07d}.npz").unlink(missing_ok=True)

    # -------------------------------------------------------------- probes

    def save_probe(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """probes/<name>.npz, atomically (np.savez never pickles plain arrays)."""
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        atomic_write(self.path / "probes" / f"{name}.npz", write)

    def probe_steps(self) -> list[int]:
        return sorted(int(p.stem[5:]) for p in (self.path / "probes").glob("step_*.npz"))

    def load_probe(self, step: int | str) -> dict[str, np.ndarray]:
        name = step if isinstance(step, str) else f"step_{step:07d}"
        with np.load(self.path / "probes" / f"{name}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def list_runs(runs_dir: str | Path | None = None) -> list[Run]:
    """Runs under runs_dir, newest first (by directory name, which starts with the launch time)."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    return sorted((Run(p) for p in runs_dir.iterdir() if p.is_dir() and (p / "config.json").exists()),
                  key=lambda r: r.id, reverse=True)
