"""A full disk or an unwritable runs directory: refused at start with a message; and when the
disk fills mid-run, the run fails naming the file it could not write, keeps what it had written
whole, and resumes once there is space again. The faults are real OS ones: a file-size limit
(RLIMIT_FSIZE, as `ulimit -f` sets) and, where this machine lets tests mount one, a small tmpfs."""
import json
import re
import resource
import signal
import subprocess
import sys

import pytest

from mgr import checkpoint
from mgr.runstore import Run
from tests.waiting import TIMEOUT, wait_paused

CLI = [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--device", "cpu", "--quiet",
       "--method", "base", "--batch-size", "16", "--probes-per-class", "2", "--probe-real", "40", "--log-every", "2"]


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs folder of that size; skips where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(options):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                        "the file-size-limit tests cover a full disk")
        return mnt
    yield mount
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _limit_file_size(nbytes):
    def preexec():  # in the child: a file-size limit, and SIGXFSZ ignored so Python's own start-up survives it
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return preexec


def _fill(folder, leave: int) -> None:
    """Fill the (tmpfs) filesystem of `folder`, then free `leave` bytes."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 65536):
                pass
        except OSError:
            pass
        f.truncate(max(0, f.tell() - leave))


@pytest.mark.parametrize("fault", ["file-size limit", "full tmpfs", "read-only tmpfs"])
def test_a_full_or_read_only_runs_dir_is_refused_at_start(tmp_path, tmpfs, fault):
    preexec, runs = None, tmp_path / "runs"
    if fault == "file-size limit":
        preexec = _limit_file_size(1000)  # smaller than the 4 KiB write test
        expected = "File too large"
    elif fault == "full tmpfs":
        runs = tmpfs("size=256k")
        _fill(runs, leave=0)
        expected = "No space left on device"
    else:
        runs = tmpfs("ro,size=256k")
        expected = "Read-only file system"
    r = subprocess.run([*CLI, "--steps", "4", "--runs-dir", str(runs / "runs")], capture_output=True, text=True,
                       timeout=TIMEOUT, preexec_fn=preexec)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert f"runs directory {runs / 'runs'} is not writable ({expected})" in r.stderr and "Traceback" not in r.stderr
    assert not (runs / "runs").exists() or not any((runs / "runs").iterdir())


@pytest.mark.parametrize("fault", ["file-size limit", "full tmpfs"])
def test_a_disk_that_fills_mid_run_fails_it_naming_the_file_and_loses_nothing(tmp_path, tmpfs, spawn, fault):
    runs = tmpfs("size=32m") if fault == "full tmpfs" else tmp_path / "runs"
    p = spawn([*CLI, "--steps", "10", "--eval-every", "2", "--runs-dir", str(runs), "--pause-at", "4"])
    run = wait_paused(Run(p.stdout.readline().strip()), p)  # the disk fills between two writes of the run
    if fault == "file-size limit":
        resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (16384, 16384))  # below a probe file, above status.json
    else:
        _fill(runs, leave=32768)
    run.unpause()
    code, err = p.wait(300), p.stderr.read()

    assert code == 1 and "Traceback" not in err, err
    m = re.search(r"failed: could not write (\S+): (File too large|No space left on device)", err)
    assert m and m.group(1).startswith(str(run.path)), err
    st = json.loads((run.path / "status.json").read_text())
    assert st["state"] == "failed" and f"could not write {m.group(1)}" in st["error"]
    # everything written before the fault is whole and consistent; no temporary file is left behind
    steps = [r["step"] for r in run.metrics()]
    assert steps == list(range(2, steps[-1] + 1, 2)) and (run.path / "metrics.jsonl").read_text().endswith("\n")
    last = checkpoint.load(run.path / "last.pt", "mgr-run-checkpoint", 1)["meta"]
    assert last["step"] in (steps[-1], steps[-2]) and last["step"] < 10
    assert checkpoint.load(run.path / "best.pt", "mgr-classifier", 1)["meta"]["step"] <= last["step"]
    assert all(run.load_probe(s)["real_features"].size for s in run.probe_steps())
    assert not list(run.path.rglob("*.tmp"))

    if fault == "full tmpfs":
        (runs / "filler").unlink()  # space again
    r = subprocess.run([*CLI[:4], "--resume", str(run.path), "--quiet"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert [m["step"] for m in run.metrics()] == list(range(2, 11, 2)) and run.status()["state"] == "finished"
    assert run.probe_steps() == list(range(2, 11, 2))


def test_resume_on_a_read_only_disk_is_refused_at_start(tmp_path, tmpfs, spawn):
    mnt = tmpfs("size=32m")
    p = spawn([*CLI, "--steps", "40", "--eval-every", "2", "--runs-dir", str(mnt), "--pause-at", "2"])
    run = wait_paused(Run(p.stdout.readline().strip()), p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(120) == 0
    before = {f: f.read_bytes() for f in run.path.rglob("*") if f.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    r = subprocess.run([*CLI[:4], "--resume", str(run.path), "--quiet"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot write in run directory {run.path} (Read-only file system)" in r.stderr
    assert {f: f.read_bytes() for f in run.path.rglob("*") if f.is_file()} == before
