"""The run directory: the only contract between the trainer and everything that reads runs.

    runs/<run id>/
      config.json      the full resolved training config (written once, at creation)
      status.json      {"state": running|finished|failed|stopped, "step", "total_steps", "error",
                        "pid", "started", "updated", "best_val_acc", "best_step", "paused"}
      metrics.jsonl    one JSON object per evaluation (fields: METRIC_FIELDS below)
      scalars.jsonl    training scalars (losses, lr, throughput) every log_every steps
      probes/static.npz         arrays that never change: probe latents, real subset images
      probes/step_0000050.npz   arrays of one evaluation (PROBE_FIELDS below)
      last.pt, best.pt checkpoints (weights-only loadable)
      weights/step_0000050.pt   classifier, finder and co-learner of one evaluation (keep_weights)
      data_report.json the images the dataset loader skipped, each with its reason (image folders)
      pause            present while the run is asked to hold between two steps (Run.pause)

Every write is atomic: whole files by temp-file + rename, metrics by appending one complete,
flushed line. A reader therefore sees a file's old or new version, never half of one; a line
without its newline (a writer killed mid-append) is ignored. docs/run-directory.md says the same
for people.

One process writes a run at a time: it holds an exclusive lock on `.lock` in the run directory
(flock, released by the OS however the process ends, SIGKILL included), so a second `--resume` of
a live run is refused, and a dead run is resumable even when its old pid was reused. The same lock
lets a reader tell a live run from a killed one (`Run.state`).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
import zipfile
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: fall back to the pid in status.json
    fcntl = None

from .checkpoint import atomic_write, atomic_write_text

STATES = ("running", "finished", "failed", "stopped")
METRIC_FIELDS = ("step", "epoch", "lr", "loss", "ce", "pcr", "syn_ce", "kl", "latent_shift", "shift_spread",
                 "meta_val_ce",
                 # the finder's hypergradient: its lookahead part's cosine with the previous step's (≈ 0: it
                 # follows noise), and the KL term's share of its length (≈ 1: only pulled back to the prior)
                 "hg_cos", "kl_share",
                 # MLTP: CE on B_j at w', cos(∇C(w; B_i), ∇C(w'; B_j)), the steps α per layer group
                 "mltp_ce_j", "mltp_grad_cos",
                 *(f"alpha_{g}_{s}" for g in ("conv", "bn", "fc", "other") for s in ("mean", "min", "max")),
                 # CML co-learner: its CE and accuracy on its batch, cos of its and the main gradient on ψ
                 "co_ce", "co_acc", "co_grad_cos",
                 "train_acc", "val_acc", "val_loss", "test_acc", "test_loss", "img_per_s", "elapsed",
                 # the test accuracy of each class (a list, in the dataset's class order; None for a class not in it)
                 "test_class_acc")
PROBE_FIELDS = {
    "static": ("probe_z", "probe_y", "real_images", "real_labels", "real_split", "classes"),
    "step": ("finder_z", "uniform_images", "finder_images", "uniform_features", "finder_features",
             "uniform_probs", "finder_probs", "uniform_gap", "finder_gap", "augmented_uniform",
             "augmented_finder", "real_features"),
}
PAUSE_FILE = "pause"  # its presence holds the trainer between two steps; removing it lets the run go on
DATA_REPORT = "data_report.json"
WEIGHTS_DIR = "weights"  # weights/step_0000050.pt: the models of one evaluation (mgr/trainer/checkpoints.py)
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


def run_path(runs_dir: str | Path, run_id: str) -> Path:
    """The directory of run `run_id` in runs_dir, for an id that came from a user or a URL: the id must be
    a plain name, and the path must resolve inside runs_dir (a link pointing elsewhere is refused too)."""
    check_run_id(run_id)
    root = Path(runs_dir).resolve()
    path = (root / run_id).resolve()
    if not path.is_relative_to(root) or path == root:
        raise RunError(f"run {run_id!r} resolves to {path}, outside the runs directory {root}; refused")
    return root / run_id


def ensure_writable(runs_dir: str | Path) -> Path:
    """Create runs_dir if needed and prove a file can be written there (fails at start, not mid-run)."""
    runs_dir = Path(runs_dir)
    probe = runs_dir / f".write-test-{secrets.token_hex(4)}"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_bytes(b"x" * 4096)
        finally:
            probe.unlink(missing_ok=True)  # also when the write failed half-way (a full disk)
    except OSError as e:
        raise RunError(f"runs directory {runs_dir} is not writable ({e.strerror or e}); "
                       "choose another with --runs-dir or $MGR_RUNS_DIR") from e
    return runs_dir


def new_run_id(dataset: str, method: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset).strip("-")[:24]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{method}-{secrets.token_hex(2)}"


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.id = self.path.name
        self._lock_fd = None

    # -------------------------------------------------------------- creation

    @classmethod
    def create(cls, runs_dir: str | Path, config: dict, run_id: str | None = None) -> "Run":
        """A new run directory, locked for writing by this process (release with unlock())."""
        runs_dir = ensure_writable(runs_dir)
        for _ in range(100):
            rid = check_run_id(run_id or new_run_id(config["data"]["dataset"], config["method"]))
            path = runs_dir / rid
            try:
                path.mkdir()  # exclusive: two launches never share a directory
                break
            except FileExistsError:
                if run_id is not None:
                    raise RunError(f"run {run_id!r} already exists in {runs_dir}") from None
                # a generated id taken by a launch in the same second: draw another suffix
        else:
            raise RunError(f"could not find a free run id in {runs_dir}")
        run = cls(path)
        run.lock()
        (path / "probes").mkdir()
        atomic_write_text(path / "config.json", json.dumps(config, indent=1))
        return run

    # -------------------------------------------------------------- the writer's lock

    def lock(self) -> None:
        """Become the run's only writer, or fail naming the process that is."""
        if fcntl is None:
            st = self.status()
            if st.get("state") == "running" and pid_alive(st.get("pid")):
                raise RunError(f"run {self.id} is still running (pid {st['pid']})")
            return
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot write in run directory {self.path} ({e.strerror or e})") from e
        for attempt in range(10):  # readers probe the lock for microseconds (writer_alive): outwait them
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt < 9:
                    time.sleep(0.01)
        else:
            os.close(fd)
            raise RunError(f"run {self.id} is still running (pid {self.status().get('pid', '?')}): "
                           "another process is writing it; stop that one first") from None
        self._lock_fd = fd

    def writer_alive(self) -> bool | None:
        """Whether a process holds the run's writer lock right now: a non-blocking shared flock probe
        that never waits and never creates the file. True: a live trainer is writing the run (also one
        frozen by SIGSTOP); False: nobody is (a `running` status then means the trainer was killed);
        None: cannot tell (no flock on this OS, or a run made before `.lock` existed): ask the pid."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        finally:
            os.close(fd)  # also drops the shared lock at once, so a --resume is not kept waiting
        return False

    def trainer_alive(self, status: dict | None = None) -> bool:
        """Whether the run's trainer is alive: the writer's flock on `.lock` decides (SIGKILL, a crash or
        a reboot all release it; a recycled pid cannot hold it); where that cannot be told, the pid in
        status.json, checked to be this run's trainer (mgr/processes.py)."""
        alive = self.writer_alive()
        if alive is not None:
            return alive
        from .processes import is_trainer  # psutil: readers only, never the trainer
        st = status if status is not None else self.status()
        return is_trainer(st.get("pid"), self.id, st.get("started"))

    def state(self, status: dict | None = None) -> str:
        """The run's state: status.json's (running, finished, failed, stopped; unknown when unreadable),
        with `running` turned into `killed` when its trainer is gone. A held trainer (status.json's
        `"paused": true`) is alive and stays `running`. `status`: an already read status.json."""
        st = status if status is not None else self.status()
        state = st.get("state", "unknown")
        if state == "running" and not self.trainer_alive(st):
            return "killed"
        return state

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -------------------------------------------------------------- files

    @property
    def config(self) -> dict:
        path = self.path / "config.json"
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{path}: not valid JSON ({e})") from e
        except UnicodeDecodeError as e:
            raise RunError(f"{path}: not a text file ({e.reason})") from e
        if not isinstance(config, dict):
            raise RunError(f"{path}: expected a JSON object, got {type(config).__name__}")
        return config

    def status(self) -> dict:
        """The status, or {"state": "unknown", "error": ...} when it cannot be read."""
        try:
            status = json.loads((self.path / "status.json").read_text())
        except FileNotFoundError:
            return {"state": "unknown", "error": "status.json is missing"}
        except (OSError, ValueError) as e:  # ValueError: JSON and Unicode decoding errors
            return {"state": "unknown", "error": f"status.json unreadable: {e}"}
        if not isinstance(status, dict) or status.get("state") not in STATES:
            return {"state": "unknown", "error": "status.json holds no valid state"}
        return status

    def write_status(self, **fields) -> None:
        current = self.status()
        if current.get("state") == "unknown":
            current = {}
        current.update(fields, updated=time.time())
        atomic_write_text(self.path / "status.json", json.dumps(current, indent=1))

    # -------------------------------------------------------------- pause

    def pause(self) -> None:
        """Ask the run's trainer to hold after its current step (status.json then says `"paused": true`). A
        held trainer keeps its lock and its place, costs no CPU, and still stops cleanly on SIGTERM."""
        atomic_write_text(self.path / PAUSE_FILE, "")

    def unpause(self) -> None:
        """Let a held run go on (nothing happens if it was not held)."""
        (self.path / PAUSE_FILE).unlink(missing_ok=True)

    def pause_requested(self) -> bool:
        return os.path.exists(self.path / PAUSE_FILE)

    # -------------------------------------------------------------- data report

    def write_data_report(self, skipped: list[dict], summary: str) -> None:
        """data_report.json: what the dataset loader left out, each file with its reason."""
        atomic_write_text(self.path / DATA_REPORT, json.dumps({"summary": summary, "skipped": skipped}, indent=1))

    def data_report(self) -> dict:
        """{"summary": str, "skipped": [{"path", "reason"}, ...]}; empty for a run whose loader skipped nothing."""
        try:
            report = json.loads((self.path / DATA_REPORT).read_text())
        except (OSError, ValueError):
            return {}
        return report if isinstance(report, dict) else {}

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
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):  # skip garbage lines
                records.append(record)
        return records

    def truncate_after(self, step: int) -> None:
        """Forget what a resumed run will redo: metric and scalar lines, probes and step weights after
        `step`, and the temporary files of writes a killed process left unfinished."""
        for folder in (self.path, self.path / "probes", self.path / WEIGHTS_DIR):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        for name in ("metrics.jsonl", "scalars.jsonl"):
            kept = [r for r in self._records(name) if r["step"] <= step]
            atomic_write_text(self.path / name, "".join(json.dumps(r) + "\n" for r in kept))
        for s in self.probe_steps():
            if s > step:
                (self.path / "probes" / f"step_{s:07d}.npz").unlink(missing_ok=True)
        for s in self.weight_steps():
            if s > step:
                (self.path / WEIGHTS_DIR / f"step_{s:07d}.pt").unlink(missing_ok=True)

    def weight_steps(self) -> list[int]:
        """The evaluation steps with a weights/step_N.pt (none for keep_weights last, or a run made before
        step weights existed)."""
        return sorted(int(p.stem[5:]) for p in (self.path / WEIGHTS_DIR).glob("step_*.pt") if p.stem[5:].isdigit())

    # -------------------------------------------------------------- probes

    def save_probe(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """probes/<name>.npz, atomically (np.savez never pickles plain arrays)."""
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        atomic_write(self.path / "probes" / f"{name}.npz", write)

    def probe_steps(self) -> list[int]:
        return sorted(int(p.stem[5:]) for p in (self.path / "probes").glob("step_*.npz") if p.stem[5:].isdigit())

    def load_probe(self, step: int | str) -> dict[str, np.ndarray]:
        """The arrays of one probe file. Plain arrays only: an object array (which would need pickle
        to load) or a damaged file is a RunError naming the file."""
        name = step if isinstance(step, str) else f"step_{step:07d}"
        path = self.path / "probes" / f"{name}.npz"
        if not path.is_file():
            raise RunError(f"{path}: no such probe file (probes of this run: {', '.join(map(str, self.probe_steps())) or 'none'})")
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive of arrays")
            with z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            why = ("it holds pickled objects, which are never unpickled here" if "allow_pickle" in str(e)
                   else f"{type(e).__name__}: {e}")
            raise RunError(f"{path}: not a readable probe file ({why}); the file may be truncated or "
                           "not written by MGR Lab") from e


def list_runs(runs_dir: str | Path | None = None) -> list[Run]:
    """Runs under runs_dir, newest first: by creation time, which is when config.json was written
    (once, by Run.create), ties by name. Not by name: a run id the user chose (--run-id) need not
    start with its launch time."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    created = {}
    for p in runs_dir.iterdir():
        try:
            if p.is_dir():
                created[p] = (p / "config.json").stat().st_mtime_ns
        except OSError:  # no config.json (not a run), or deleted meanwhile
            continue
    return [Run(p) for p in sorted(created, key=lambda p: (-created[p], p.name))]


def numeric_fields(record: dict):
    """(field, value) of a metrics.jsonl line's numbers, a list field one per entry as field/i (the per-class
    test accuracy: test_class_acc/0, ...), the step left out."""
    for k, v in record.items():
        if k == "step" or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            yield k, v
        elif isinstance(v, list):
            yield from ((f"{k}/{i}", x) for i, x in enumerate(v) if isinstance(x, (int, float)) and not isinstance(x, bool))
