"""A demo's runs train on a pool of persistent workers (mgr/demo_queue.py): a worker trains run after run
in one process, and a worker that dies loses no run: the runs it held (and those of the pool it broke)
are resumed from their checkpoints."""
import os
import signal

from mgr import demo_queue
from mgr.runstore import Run
from tests.waiting import wait_for

TINY = {"data.dataset": "digits", "data.ratio": 0.1, "data.test_subset": None, "steps": 4, "eval_every": 2,
        "batch_size": 16, "probes_per_class": 2, "probe_real": 40, "device": "cpu"}


def test_two_workers_train_a_demos_four_runs_in_two_processes(tmp_path):
    launch_id = demo_queue.launch("gda-hurts", 2, tmp_path, TINY, parallel=2)
    m = demo_queue.read_manifest(tmp_path, launch_id)
    wait_for(lambda: demo_queue.outcome(tmp_path, m).done and not demo_queue.supervisor_alive(tmp_path, launch_id),
             "the demo's four runs")
    pids = {Run(tmp_path / r["run_id"]).status()["pid"] for r in m["runs"]}
    assert len(pids) <= 2 and os.getpid() not in pids  # run after run in the same worker processes
    assert demo_queue.outcome(tmp_path, m).failed == ()


def test_a_worker_killed_mid_run_loses_no_run(tmp_path):
    endless = {**TINY, "steps": 100_000, "eval_every": 5}  # no run can finish while the test acts on it
    launch_id = demo_queue.launch("pcr-repairs", 2, tmp_path, endless, parallel=2)
    m = demo_queue.read_manifest(tmp_path, launch_id)
    runs = [Run(tmp_path / r["run_id"]) for r in m["runs"][:2]]  # the two on the pool; two more queued

    def steps():
        return [r.status().get("step", 0) for r in runs]
    try:
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:2] == ["running"] * 2 and min(steps()) >= 5,
                 "both runs to train")
        os.kill(runs[0].status()["pid"], signal.SIGKILL)  # as the OOM killer would
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[0] != "running", "the killed run to show it")
        before = steps()
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:2] == ["running"] * 2
                 and all(now > then for now, then in zip(steps(), before)), "both runs to train again")
        assert demo_queue.run_states(tmp_path, m)[2:] == ["queued"] * 2  # still two at a time
        log = (tmp_path / demo_queue.DEMOS_DIR / f"{launch_id}.log").read_text()
        assert f"{m['runs'][0]['run_id']}: its worker died; it resumes" in log, log
        assert runs[0].metrics()[0]["step"] == 5  # resumed from its checkpoint, not restarted
    finally:
        demo_queue.stop(tmp_path, launch_id)
    wait_for(lambda: demo_queue.run_states(tmp_path, m) == ["stopped"] * 2 + ["queued"] * 2, "the stop")
