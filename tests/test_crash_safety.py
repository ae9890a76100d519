"""A run killed with SIGKILL at random moments (mid-step, mid-checkpoint, mid-probe, mid-resume)
resumes into exactly the run it would have been: same metric and scalar lines, same probes, same
best.pt, nothing duplicated or half-written; and readers polling it meanwhile never see a broken
status.json, metrics line or probe file."""
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from mgr import checkpoint
from mgr.runstore import Run
from tests.waiting import TIMEOUT, wait_paused

STEPS, EVAL, LOG = 15, 3, 1
CLI = [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--device", "cpu", "--quiet",
       "--method", "pcr", "--steps", str(STEPS), "--eval-every", str(EVAL), "--log-every", str(LOG),
       "--batch-size", "16", "--probes-per-class", "2", "--probe-real", "40"]
TIMING = ("img_per_s", "elapsed")


class Watcher(threading.Thread):
    """A reader that polls the run the whole time, as the app does, and records anything broken."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.dir, self.stop, self.problems, self.reads = run_dir, threading.Event(), [], {"status": 0, "probe": 0, "metrics": 0}

    def run(self):
        while not self.stop.is_set():
            text = None
            try:
                text = (self.dir / "status.json").read_text()
                json.loads(text)
                self.reads["status"] += 1
            except FileNotFoundError:
                pass
            except ValueError as e:
                self.problems.append(f"status.json invalid: {e}: {text!r}")
            try:
                complete = (self.dir / "metrics.jsonl").read_text().split("\n")[:-1]
                for line in complete:
                    json.loads(line)
                self.reads["metrics"] += 1
            except FileNotFoundError:
                pass
            except ValueError as e:
                self.problems.append(f"metrics.jsonl has a broken complete line: {e}")
            probes = sorted((self.dir / "probes").glob("step_*.npz"))
            if probes:
                try:
                    with np.load(probes[-1], allow_pickle=False) as z:
                        assert "real_features" in z.files and all(z[k].size for k in z.files)
                    self.reads["probe"] += 1
                except FileNotFoundError:
                    pass  # removed by a resume between listing and reading: gone whole, never half
                except Exception as e:  # noqa: BLE001 (any failure to read a listed probe is the bug)
                    self.problems.append(f"{probes[-1].name} unreadable: {type(e).__name__}: {e}")
            time.sleep(0.03)


def _wait(cond, proc, timeout=TIMEOUT):
    t = time.time()
    while not cond():
        assert proc.poll() is None, f"exited early: {proc.stderr.read()}"
        assert time.time() - t < timeout, "timed out"
        time.sleep(0.002)


def _stops_before(pattern: str) -> dict:
    """The environment of a trainer that stops itself (SIGSTOP) before renaming a file matching `pattern` into
    place, its temporary copy written (mgr/checkpoint.py's fault-injection point)."""
    return {checkpoint.STOP_BEFORE_RENAME: pattern}


def _kill_mid_write(proc, run_dir: Path, tmp_pattern: str, when=lambda: True) -> bool:
    """`proc` runs with _stops_before(a file): at each of its writes of that file it stops itself mid-write. SIGKILL
    it at the first such stop where `when()` holds (the temporary copy, `tmp_pattern`, is there), and let the others
    go on; False if the run ended first."""
    while True:
        while _state(proc.pid) != "T":  # a stop it gave itself: a write held before its rename
            if proc.poll() is not None:
                return False
            time.sleep(0.002)
        if any(run_dir.glob(tmp_pattern)) and when():
            proc.kill()
            proc.wait(60)
            return True
        proc.send_signal(signal.SIGCONT)
        while _state(proc.pid) == "T" and proc.poll() is None:
            time.sleep(0.002)


def _state(pid) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _scalars_step(run):
    rows = run.scalars()
    return rows[-1]["step"] if rows else 0


def _check_killed_state(run: Run):
    """Right after a kill, before any resume: the files a user would open are whole and consistent."""
    st = json.loads((run.path / "status.json").read_text())
    assert st["state"] == "running"  # SIGKILL leaves no chance to write more; the dead pid tells readers
    if (run.path / "best.pt").exists():
        best = checkpoint.load(run.path / "best.pt", "mgr-classifier", 1)["meta"]["step"]
        last = checkpoint.load(run.path / "last.pt", "mgr-run-checkpoint", 1)["meta"]["step"] \
            if (run.path / "last.pt").exists() else 0
        assert best <= last, f"best.pt is from step {best}, which the resume from step {last} will redo"


def test_random_sigkills_resume_into_exactly_the_uninterrupted_run(tmp_path, spawn):
    reference = spawn([*CLI, "--runs-dir", str(tmp_path / "reference")])  # the same run, never interrupted
    rng = random.Random(2026)
    runs = tmp_path / "runs"
    p = spawn([*CLI, "--runs-dir", str(runs)], env=_stops_before("*/last.pt"))
    run = Run(p.stdout.readline().strip())
    watcher = Watcher(run.path)
    watcher.start()
    kills = []

    # 1: during the write of last.pt at an evaluation that set a new best (the first one always does):
    # best.pt of that step must not outlive the kill, since the resume redoes the step
    def new_best():
        acc = [m["val_acc"] for m in run.metrics()]
        return len(acc) > 0 and all(acc[-1] > a for a in acc[:-1])
    assert _kill_mid_write(p, run.path, ".last.pt.*.tmp", when=new_best), "never caught a write of last.pt"
    kills.append(f"during the write of last.pt at step {run.metrics()[-1]['step']}, a new best")
    _check_killed_state(run)

    # 2: mid-step, at a random step;  3: during the write of a probe
    target = _scalars_step(run) + rng.randint(1, 5)  # held there, so the kill lands before the run can end
    p = spawn([*CLI[:4], "--resume", str(run.path), "--quiet", "--pause-at", str(target)])
    assert p.stdout.readline().strip() == str(run.path)
    wait_paused(run, p)
    p.kill()
    p.wait(60)
    kills.append(f"mid-training after step {_scalars_step(run)}")
    _check_killed_state(run)
    p = spawn([*CLI[:4], "--resume", str(run.path), "--quiet"], env=_stops_before("*/probes/step_*.npz"))
    assert p.stdout.readline().strip() == str(run.path)
    assert _kill_mid_write(p, run.path, "probes/.step_*.tmp"), "never caught a write of a probe"
    kills.append("during the write of a probe")
    _check_killed_state(run)

    # 4: at a random moment of the resume itself (loading, truncating, or the first steps)
    # (with one fast thread the few steps left can finish inside the window: then the kill is moot)
    p = spawn([*CLI[:4], "--resume", str(run.path), "--quiet"])
    p.stdout.readline()
    time.sleep(rng.uniform(0, 1.0))
    if p.poll() is None:
        p.kill()
        kills.append("early in a resume")
    p.wait(60)

    if run.status()["state"] != "finished":
        r = subprocess.run([*CLI[:4], "--resume", str(run.path), "--quiet"], capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert r.returncode == 0, r.stderr
    watcher.stop.set()
    watcher.join()
    ref = Run(reference.stdout.readline().strip())
    assert reference.wait(600) == 0, reference.stderr.read()

    assert not watcher.problems, watcher.problems
    assert min(watcher.reads.values()) > 0, watcher.reads
    assert run.config == ref.config and run.status()["state"] == "finished"
    drop = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert [m["step"] for m in run.metrics()] == list(range(EVAL, STEPS + 1, EVAL))
    assert drop(run.metrics()) == drop(ref.metrics()), "the killed run's numbers differ from the uninterrupted one"
    assert drop(run.scalars()) == drop(ref.scalars()) and [s["step"] for s in run.scalars()] == list(range(1, STEPS + 1))
    assert (run.path / "metrics.jsonl").read_text().endswith("\n")
    assert run.probe_steps() == ref.probe_steps()
    for step in run.probe_steps():
        a, b = run.load_probe(step), ref.load_probe(step)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    best, ref_best = (checkpoint.load(r.path / "best.pt", "mgr-classifier", 1) for r in (run, ref))
    assert best["meta"] == ref_best["meta"] and all(torch.equal(best["model"][k], ref_best["model"][k]) for k in best["model"])
    leftovers = [p.name for p in run.path.rglob(".*") if p.name != ".lock"]
    assert not leftovers, f"temporary or staged files left: {leftovers}"
    print("kills:", kills, "reads:", watcher.reads)
