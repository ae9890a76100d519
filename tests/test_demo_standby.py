"""The warm standby (mgr/demo_standby.py): a supervisor whose workers load torch before the click. A launch hands
itself to it; it trains the demo as a supervisor started for the launch would, takes one launch, and ends with its
owner (the app's server), taking its workers along."""
import os
import signal
import subprocess
import sys

import psutil
import pytest

from mgr import demo_queue, demo_standby
from mgr.processes import start_and_argv
from mgr.runstore import Run
from tests.conftest import ENDLESS_DEMO, REPO, TINY_DEMO
from tests.test_app import open_page
from tests.waiting import wait_for


@pytest.fixture
def owner(monkeypatch):
    """The standby switched on (tests/conftest.py turns it off), and a stand-in for the app's server that owns it."""
    monkeypatch.setenv("MGR_DEMO_STANDBY", "1")
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])
    yield p
    p.kill()
    p.wait()


def start_standby(runs_dir, owner) -> dict:
    demo_queue.ensure_standby(runs_dir, owner.pid)
    wait_for(lambda: demo_standby.waiting(runs_dir) is not None, "the standby to wait for a launch")
    return demo_standby.waiting(runs_dir)


def supervisor_argv(runs_dir, launch_id: str) -> list[str]:
    pid = int((runs_dir / demo_queue.DEMOS_DIR / f"{launch_id}.pid").read_text())
    return start_and_argv(pid)[1]


def run_to_end(runs_dir, launch_id: str) -> dict:
    m = demo_queue.read_manifest(runs_dir, launch_id)
    wait_for(lambda: all(s in demo_queue.DONE for s in demo_queue.run_states(runs_dir, m))
             and not demo_queue.supervisor_alive(runs_dir, launch_id), f"demo launch {launch_id} to end")
    return m


def test_a_launch_hands_its_runs_to_the_warm_standby_which_trains_them_as_a_new_supervisor_would(tmp_path, owner):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    info = start_standby(warm, owner)
    launch_id = demo_queue.launch("gda-hurts", 2, warm, TINY_DEMO, parallel=info["parallel"])
    m = demo_queue.read_manifest(warm, launch_id)
    wait_for(lambda: demo_queue.supervisor_alive(warm, launch_id) and not (warm / ".demos/standby.claim").exists(),
             "the standby to take the launch")
    workers = {c.pid for c in psutil.Process(info["pid"]).children()}  # its pool, started before it takes one
    assert demo_standby.hand_over(warm, "another-launch", info["parallel"]) is None  # one launch per standby
    run_to_end(warm, launch_id)
    assert {Run(warm / r["run_id"]).status()["pid"] for r in m["runs"]} <= workers  # trained by its warm workers
    assert int((warm / demo_queue.DEMOS_DIR / f"{launch_id}.pid").read_text()) == info["pid"]
    assert "every run has ended" in (warm / demo_queue.DEMOS_DIR / f"{launch_id}.log").read_text()
    wait_for(lambda: not demo_standby.lock_held(warm), "the standby to end with its launch")

    cold_id = demo_queue.launch("gda-hurts", 2, cold, TINY_DEMO, parallel=info["parallel"])  # no standby there
    assert "run" in supervisor_argv(cold, cold_id)
    run_to_end(cold, cold_id)
    warm_values = demo_queue.outcome(warm, m).values
    assert warm_values == demo_queue.outcome(cold, demo_queue.read_manifest(cold, cold_id)).values
    assert all(v is not None for seed in warm_values for v in seed)


def test_one_standby_per_folder_and_a_launch_it_cannot_take_starts_its_own_supervisor(tmp_path, owner):
    info = start_standby(tmp_path, owner)
    again = subprocess.run([sys.executable, "-m", "mgr.demo_supervisor", "standby", str(tmp_path), str(owner.pid)],
                           cwd=REPO, capture_output=True, timeout=120)
    assert again.returncode == 0 and demo_standby.waiting(tmp_path)["pid"] == info["pid"]  # it left at once
    launch_id = demo_queue.launch("gda-hurts", 2, tmp_path, TINY_DEMO, parallel=info["parallel"] + 1)
    assert "run" in supervisor_argv(tmp_path, launch_id)  # not the standby: it runs another number of workers
    run_to_end(tmp_path, launch_id)
    assert demo_standby.waiting(tmp_path)["pid"] == info["pid"]  # still waiting for a launch it can take


def test_the_standby_ends_with_its_owner_taking_its_workers_along(tmp_path, owner):
    info = start_standby(tmp_path, owner)
    wait_for(lambda: len(psutil.Process(info["pid"]).children()) >= info["parallel"], "its workers to start")
    procs = [psutil.Process(info["pid"]), *psutil.Process(info["pid"]).children()]
    owner.kill()
    owner.wait()

    def gone(p):
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for(lambda: all(gone(p) for p in procs), "the standby and its workers to end")
    assert demo_standby.waiting(tmp_path) is None and not demo_standby.lock_held(tmp_path)


def test_a_standby_killed_with_its_launch_is_replaced_by_a_supervisor_that_loses_no_run(tmp_path, owner):
    info = start_standby(tmp_path, owner)
    launch_id = demo_queue.launch("pcr-repairs", 2, tmp_path, ENDLESS_DEMO, parallel=info["parallel"])
    m = demo_queue.read_manifest(tmp_path, launch_id)
    k = min(info["parallel"], len(m["runs"]))  # the runs on the pool (a worker per core); the others queued
    runs = [Run(tmp_path / r["run_id"]) for r in m["runs"][:k]]
    try:
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:k] == ["running"] * k
                 and min(r.status().get("step", 0) for r in runs) >= 5, "the pool's runs to train")
        os.kill(info["pid"], signal.SIGKILL)  # its workers die with it
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:k] == ["killed"] * k, "the pool's runs to read killed")
        assert not demo_queue.supervisor_alive(tmp_path, launch_id)
        assert demo_queue.ensure_supervisor(tmp_path, launch_id)  # as the app's poll does
        assert "run" in supervisor_argv(tmp_path, launch_id)
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:k] == ["running"] * k
                 and all(r.metrics()[0]["step"] == 5 for r in runs), "the pool's runs to resume from their checkpoints")
    finally:
        demo_queue.stop(tmp_path, launch_id)


def test_home_starts_the_standby_while_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MGR_DEMO_STANDBY", "1")
    open_page(None, tmp_path, monkeypatch)
    try:
        wait_for(lambda: demo_standby.waiting(tmp_path) is not None, "Home's standby to wait for a launch")
        assert demo_standby.waiting(tmp_path)["owner"] == os.getpid()  # the app's process (here, this test's)
    finally:
        if demo_standby.waiting(tmp_path):
            os.kill(demo_standby.waiting(tmp_path)["pid"], signal.SIGKILL)


def test_of_two_launches_handed_over_at_once_one_gets_the_standby(tmp_path, owner):
    info = start_standby(tmp_path, owner)
    first = demo_standby.hand_over(tmp_path, "launch-a", info["parallel"])
    second = demo_standby.hand_over(tmp_path, "launch-b", info["parallel"])  # before the standby has taken the first
    assert first == info["pid"] and second is None  # the second launch starts a supervisor of its own
