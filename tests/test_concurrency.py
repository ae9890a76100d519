"""Runs launched at once share nothing but the runs directory: each writes only its own folder,
gives the numbers it gives alone, and a signal to one stops only that one. Readers of one run see
the same data; a run has one writer at a time."""
import json
import os
import signal
import sys
import threading
import time


from mgr.__main__ import main
from mgr.data import DataConfig
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train
from tests.waiting import wait_paused

CLI = [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--device", "cpu", "--quiet",
       "--steps", "12", "--eval-every", "3", "--log-every", "3", "--batch-size", "16", "--probes-per-class", "2",
       "--probe-real", "40"]
TIMING = ("img_per_s", "elapsed")
drop = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731


class Reader(threading.Thread):
    """Polls one run's metrics and status like an app session does."""

    def __init__(self, run):
        super().__init__(daemon=True)
        self.run_, self.stop, self.seen = run, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            self.seen.append(drop(self.run_.metrics()))
            time.sleep(0.01)


def test_three_runs_at_once_keep_to_their_own_directories_and_a_sigterm_stops_only_its_run(tmp_path, spawn):
    runs = tmp_path / "runs"
    launches = [("base", 0), ("pcr", 1), ("base", 2)]
    hold = {1: ["--pause-at", "3"]}  # the pcr run holds after its first evaluation until it is stopped
    procs = [spawn([*CLI, "--runs-dir", str(runs), "--method", m, "--seed", str(seed), *hold.get(i, [])])
             for i, (m, seed) in enumerate(launches)]
    dirs = [p.stdout.readline().strip() for p in procs]
    watched = [Reader(Run(dirs[0])), Reader(Run(dirs[0]))]  # two sessions watching the same run
    for r in watched:
        r.start()
    wait_paused(Run(dirs[1]), procs[1])
    procs[1].send_signal(signal.SIGTERM)  # Stop: only the pcr run
    codes = [p.wait(600) for p in procs]
    for r in watched:
        r.stop.set()
        r.join()

    assert codes == [0, 0, 0], [p.stderr.read() for p in procs]
    assert len(set(dirs)) == 3 and sorted(os.listdir(runs)) == sorted(os.path.basename(d) for d in dirs)
    for d, (method, seed), p in zip(dirs, launches, procs):
        run = Run(d)
        assert run.config["method"] == method and run.config["seed"] == seed  # its own config, nobody else's
        assert run.status()["pid"] == p.pid
        assert not [f for f in run.path.rglob(".*") if f.name != ".lock"]  # no stray temporary files
    states = [Run(d).status()["state"] for d in dirs]
    assert states == ["finished", "stopped", "finished"]
    for d in (dirs[0], dirs[2]):
        assert [m["step"] for m in Run(d).metrics()] == [3, 6, 9, 12] and Run(d).probe_steps() == [3, 6, 9, 12]
    assert Run(dirs[1]).status()["step"] == 3 and (Run(dirs[1]).path / "last.pt").exists()

    # run 0 gives exactly the numbers it gives when run alone: no cross-talk through files or seeds
    alone = train(TrainConfig(data=DataConfig("digits", ratio=0.1), method="base", steps=12, eval_every=3, log_every=3,
                              batch_size=16, probes_per_class=2, probe_real=40, device="cpu"), tmp_path / "alone",
                  quiet=True)
    final = drop(Run(dirs[0]).metrics())
    assert final == drop(alone.metrics()) and final != drop(Run(dirs[2]).metrics())
    # both watchers saw the same growing record: every snapshot a prefix of the final one
    for r in watched:
        assert r.seen and all(snap == final[:len(snap)] for snap in r.seen) and r.seen[-1] == final

    # two resumes of the stopped run at once: one writer continues, the other is refused
    both = [spawn([*CLI[:4], "--resume", dirs[1], "--quiet"]) for _ in range(2)]
    results = sorted((p.wait(600), p.stderr.read()) for p in both)
    assert results[0][0] == 0 and results[1][0] == 2, results
    assert "is still running" in results[1][1] or "has finished" in results[1][1], results[1][1]
    assert [m["step"] for m in Run(dirs[1]).metrics()] == [3, 6, 9, 12] and Run(dirs[1]).status()["state"] == "finished"


def test_a_live_run_refuses_a_second_writer_and_a_reused_pid_does_not_block_resume(tmp_path, capsys, spawn):
    p = spawn([*CLI, "--runs-dir", str(tmp_path), "--method", "base", "--pause-at", "3"])
    run = wait_paused(Run(p.stdout.readline().strip()), p)  # alive, mid-run, while a second writer tries
    try:
        assert main(["train", "--resume", str(run.path), "--quiet"]) == 2
        assert f"run {run.id} is still running (pid {p.pid})" in capsys.readouterr().err
        assert p.poll() is None
    finally:
        p.kill()
        p.wait(60)
    # the dead run's pid now belongs to another live process (here: pytest's parent): the OS released the
    # run's lock with its writer, so the run resumes; a pid check alone would call it still running
    status = json.loads((run.path / "status.json").read_text())
    (run.path / "status.json").write_text(json.dumps({**status, "state": "running", "pid": os.getppid()}))
    assert main(["train", "--resume", str(run.path), "--quiet"]) == 0, capsys.readouterr().err
    assert [m["step"] for m in run.metrics()] == [3, 6, 9, 12] and run.status()["state"] == "finished"


def test_generated_run_ids_never_collide_even_within_one_second(tmp_path):
    cfg = TrainConfig(data=DataConfig("digits", ratio=0.1), method="base").to_dict()
    made = []
    for _ in range(40):
        run = Run.create(tmp_path, cfg)
        run.unlock()
        made.append(run.id)
    assert len(set(made)) == 40 and sorted(os.listdir(tmp_path)) == sorted(made)
