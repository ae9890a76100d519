"""The worker pool a demo's supervisor trains on (mgr/demo_queue.py runs the queue): workers that import torch
once and train run after run, stopping the runs on a pool, and ending the workers of a pool that broke or lost
a worker without noticing.

Importing this module loads nothing heavy (torch comes with .launch and .runstore, imported where they are used):
mgr/demo_supervisor.py starts a pool with new_pool before the supervisor loads torch.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor

# A run on the pool whose trainer has been gone this long lost its worker. The pool itself notices a dead worker
# within a second; a run that shows "killed" on a healthy pool does not exist (its trainer holds the run's lock
# until it has written its last state), so the margin only covers a slow machine's pool noticing late, and if the
# two recoveries race, both resume the same runs from their checkpoints.
LOST_S = 10.0


def _worker_init(supervisor: int) -> None:
    """A pool worker: one torch thread (the workers share the cores), and torch imported once, here. It ends with
    the supervisor that started it, however that one ends."""
    _die_with(supervisor)
    os.environ["MGR_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    from . import trainer  # noqa: F401 (the import a run would otherwise pay)


def _die_with(supervisor: int) -> None:
    """SIGKILL this worker when `supervisor`, its parent, dies (Linux's parent-death signal), as a reboot or the
    OOM killer would end both: its run then reads `killed`, and the next supervisor (the app starts one as it polls)
    resumes it from its last checkpoint, instead of a trainer training on unwatched, holding its run and writing
    probes to its last step. (SIGTERM would save the run `stopped`, which reads as a user's Stop and stays so.)
    Elsewhere a worker outlives a killed supervisor until its run ends."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor:  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def train_one(runs_dir: str, run_id: str, values: dict, resume: bool) -> str:
    """In a pool worker: train (or resume) one run of the demo, as `python -m mgr train` would; what
    happened is in its run directory, and a line for the supervisor's log is returned."""
    from .launch import build_config
    from .runstore import run_path
    from .trainer import resume as resume_run, train
    try:
        if resume:
            run = resume_run(run_path(runs_dir, run_id), quiet=True)
        else:
            run = train(build_config(values), runs_dir, run_id, quiet=True)
        return f"{run_id}: {run.status().get('state')}"
    except Exception as e:  # noqa: BLE001 (the run directory holds the failure; the queue goes on)
        return f"{run_id}: {type(e).__name__}: {e}"


def new_pool(parallel: int) -> ProcessPoolExecutor:
    """`parallel` workers, each started by _worker_init in a fresh interpreter (spawn)."""
    return ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(os.getpid(),))


def stop_inflight(runs_dir, inflight: dict[str, Future], wait_s: float = 60.0) -> None:
    """SIGTERM the trainers of the runs on the pool (each saves and ends `stopped`), waiting for a run that
    is still loading until its trainer has written its status, at most wait_s."""
    from .launch import LaunchError, Launcher
    from .runstore import Run, run_path
    launcher = Launcher(runs_dir)
    deadline = time.time() + wait_s
    for run_id, fut in inflight.items():
        run = Run(run_path(runs_dir, run_id))
        while not fut.done() and time.time() < deadline:
            try:
                launcher.stop(run)
                break
            except LaunchError:  # not running yet (loading, resuming) or already ended
                time.sleep(0.1)


def end_broken_workers(runs_dir, run_ids, wait_s: float = 120.0) -> None:
    """A broken pool SIGTERMs its surviving workers; one that was training stops its run cleanly (the trainer
    catches SIGTERM) and then waits forever for work from the dead pool. Once each of those runs has ended
    (its trainer let go of the run), SIGKILL the worker that trained it, so the pool can be shut down."""
    from .processes import is_trainer
    from .runstore import Run, run_path
    deadline = time.time() + wait_s
    for run_id in run_ids:
        run = Run(run_path(runs_dir, run_id))
        while run.state() == "running" and time.time() < deadline:
            time.sleep(0.1)
        st = run.status()
        if is_trainer(st.get("pid"), run_id, st.get("started")):  # alive, and the worker that trained it
            try:
                os.kill(st["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def lost_runs(runs_dir, inflight: dict[str, Future], lost_since: dict[str, float], now: float) -> dict[str, float]:
    """The runs on the pool whose trainer is gone while their task has not ended, each with when it was first seen
    so (kept from `lost_since`, else `now`): a worker can die without the pool noticing (seen under a loaded full
    test suite: the killed run's task never ended, so the queue waited forever)."""
    from .runstore import Run, run_path
    return {run_id: lost_since.get(run_id, now) for run_id, fut in inflight.items()
            if not fut.done() and Run(run_path(runs_dir, run_id)).state() == "killed"}
