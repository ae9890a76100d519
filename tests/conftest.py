"""Session-wide real runs for the app and analysis tests: short digits trainings made by the
trainer itself (no fake run files), one of each state the pages must handle."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgr.data import DataConfig
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent

# One CPU thread for torch in this process and in every trainer a test spawns (they inherit MGR_THREADS):
# the suite runs trainers side by side on 2 cores, where two threads per process thrash (10-100x slower).
os.environ["MGR_THREADS"] = "1"
torch.set_num_threads(1)


def tiny_config(method: str, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(data=DataConfig("digits", ratio=0.1), method=method, steps=20, eval_every=10,
                                 batch_size=32, probes_per_class=4, probe_real=100, device="cpu"), **kw})


@pytest.fixture(scope="session")
def app_runs(tmp_path_factory):
    """A runs folder with finished base, pcr, mgr and mgr-under-MLTP-with-co-learner runs, a failed run and a running one
    (a real trainer process, paused with SIGSTOP after its first evaluation so it costs no CPU)."""
    d = tmp_path_factory.mktemp("app-runs")
    proc = subprocess.Popen(  # started first: its start-up overlaps the trainings below
        [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--method", "mgr",
         "--steps", "100000", "--eval-every", "5", "--batch-size", "16", "--probes-per-class", "4",
         "--probe-real", "100", "--device", "cpu", "--runs-dir", str(d), "--run-id", "t-running", "--quiet"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for method in ("base", "pcr", "mgr"):
        train(tiny_config(method), d, f"t-{method}", quiet=True)
    # MLTP around mgr with the co-learner: α, both gradient cosines and the co-learner's scalars are logged
    train(tiny_config("mgr", order="first", procedure="mltp", co_learner=True, steps=10, eval_every=5, log_every=2),
          d, "t-mltp", quiet=True)
    with pytest.raises(FloatingPointError):
        train(tiny_config("pcr", lr=1e12), d, "t-failed", quiet=True)
    running = Run(d / "t-running")
    deadline = time.time() + 300
    while not (running.metrics() and running.probe_steps() and (running.path / "last.pt").exists()):
        assert proc.poll() is None and time.time() < deadline, "the running fixture's trainer did not get going"
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGSTOP)
    yield d
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(60)


@pytest.fixture
def runs_copy(app_runs, tmp_path):
    """A private copy of the finished runs (tests may corrupt or delete them)."""
    d = tmp_path / "runs"
    d.mkdir()
    for name in ("t-base", "t-pcr", "t-mgr"):
        shutil.copytree(app_runs / name, d / name, ignore=shutil.ignore_patterns("analysis"))
    return d


@pytest.fixture
def spawn():
    """Popen for training processes, each killed at teardown if a failed test left it running."""
    procs = []

    def start(argv):
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return procs[-1]
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
