"""A demo's runs train on a pool of persistent workers (mgr/demo_queue.py): a worker trains run after run
in one process, and a worker that dies loses no run: the runs it held (and those of the pool it broke)
are resumed from their checkpoints."""
import os
import signal

from mgr import demo_queue
from mgr.runstore import Run
from tests.conftest import ENDLESS_DEMO, TINY_DEMO
from tests.waiting import wait_for

TINY = TINY_DEMO  # tests/conftest.py: digits, 4 steps, 2 evaluations


def test_two_workers_train_a_demos_four_runs_in_two_processes(tiny_demo):
    tmp_path, m, _ = tiny_demo
    pids = {Run(tmp_path / r["run_id"]).status()["pid"] for r in m["runs"]}
    assert len(pids) <= 2 and os.getpid() not in pids  # run after run in the same worker processes
    assert demo_queue.outcome(tmp_path, m).failed == ()


def test_a_worker_killed_mid_run_loses_no_run(tmp_path):
    launch_id = demo_queue.launch("pcr-repairs", 2, tmp_path, ENDLESS_DEMO, parallel=2)
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
        # the pool noticed the death, or (it does not always) the supervisor's watchdog did, LOST_S later
        killed = m["runs"][0]["run_id"]
        assert (f"{killed}: its worker died; it resumes" in log
                or f"{killed}: its worker is gone and the pool did not notice" in log), log
        assert runs[0].metrics()[0]["step"] == 5  # resumed from its checkpoint, not restarted
    finally:
        demo_queue.stop(tmp_path, launch_id)
    wait_for(lambda: demo_queue.run_states(tmp_path, m) == ["stopped"] * 2 + ["queued"] * 2, "the stop")


def test_a_supervisor_killed_mid_run_takes_its_workers_along(tmp_path):
    """The pool's workers die with their supervisor, however it dies (a reboot or the OOM killer would end them all
    alike): their runs read `killed`, which the next supervisor resumes from their checkpoints (the app starts one as
    it polls: test_demos.py), instead of unwatched trainers holding their runs and writing probes to their last step."""
    from mgr.processes import is_trainer
    launch_id = demo_queue.launch("pcr-repairs", 2, tmp_path, ENDLESS_DEMO, parallel=2)
    m = demo_queue.read_manifest(tmp_path, launch_id)
    runs = [Run(tmp_path / r["run_id"]) for r in m["runs"][:2]]
    try:
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:2] == ["running"] * 2
                 and min(r.status().get("step", 0) for r in runs) >= 5, "both runs to train")
        trainers = [(r.status()["pid"], r.path.name, r.status()["started"]) for r in runs]
        os.kill(int((tmp_path / demo_queue.DEMOS_DIR / f"{launch_id}.pid").read_text()), signal.SIGKILL)
        # (a dying process loses its command line a moment before it lets go of its run's lock)
        wait_for(lambda: not any(is_trainer(*t) for t in trainers)
                 and demo_queue.run_states(tmp_path, m) == ["killed"] * 2 + ["queued"] * 2,
                 "both workers to die with their supervisor")
        assert all(demo_queue._continues(tmp_path, m, r, "killed") for r in m["runs"][:2])
    finally:
        demo_queue.stop(tmp_path, launch_id)


def test_the_supervisor_takes_a_run_whose_trainer_is_gone_while_its_task_never_ends_as_lost(tmp_path):
    """The watchdog behind LOST_S (mgr.demo_pool.lost_runs), on real run directories: a run on the pool whose
    status says running while no process holds it is lost from when it was first seen so, even though its task
    never ended (the pool missed the death); a run whose trainer lives, or whose task ended, is not."""
    from concurrent.futures import Future

    from mgr.demo_pool import lost_runs
    runs = {}
    for name in ("gone", "alive", "ended"):
        runs[name] = Run.create(tmp_path, {"data": {"dataset": "digits"}, "method": "base"}, name)
        runs[name].write_status(state="running", pid=os.getpid())
    runs["gone"].unlock()  # its writer's lock released, as a SIGKILL releases it; "alive" keeps its writer
    runs["ended"].unlock()
    assert (runs["gone"].state(), runs["alive"].state()) == ("killed", "running")
    pending, ended = Future(), Future()
    ended.set_result("ended: finished")
    inflight = {"gone": pending, "alive": Future(), "ended": ended}
    first = lost_runs(tmp_path, inflight, {}, now=100.0)
    assert first == {"gone": 100.0}
    assert lost_runs(tmp_path, inflight, first, now=170.0) == {"gone": 100.0}  # since when, not since the last look



def test_a_supervisors_early_pool_starts_every_worker_before_its_first_run(tmp_path):
    """The supervisor starts its pool before importing torch so that the workers load theirs meanwhile: all
    `parallel` of them, not one (a spawn pool starts a worker per task that finds none idle), or the second
    run started ~2 s after the first, once the supervisor had loaded torch and submitted it."""
    import json

    import psutil

    from mgr.demo_supervisor import early_pool, manifest_parallel
    manifest = tmp_path / "launch.json"
    manifest.write_text(json.dumps({"parallel": 2}))

    def cmdline(p) -> str:
        try:
            return " ".join(p.cmdline())
        except psutil.Error:  # gone, or a zombie another test's process left
            return ""

    before = {p.pid for p in psutil.Process().children()}

    def workers():
        return [p for p in psutil.Process().children() if p.pid not in before and "spawn_main" in cmdline(p)]
    pool = early_pool(manifest_parallel(str(manifest)))
    try:
        wait_for(lambda: len(workers()) == 2, "both workers to start", timeout=120)
    finally:
        pool.shutdown(wait=True)
