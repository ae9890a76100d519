"""Is a process alive, and is it the one we think: live-process checks by pid (psutil), for the run
store's state of a run whose writer lock cannot tell, and for the app's launches and demo supervisors.

The trainer never imports this module (it needs no psutil): the run store imports it lazily, only
where a reader asks whether a run's trainer is alive.
"""
from __future__ import annotations


def lock_held(path) -> bool:
    """Whether a live process holds the flock on file `path` (probed without waiting, released at once; the OS
    drops a lock however its holder ends)."""
    import fcntl
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def start_and_argv(pid) -> tuple[float, list[str]] | None:
    """(Unix start time, command line) of the live process `pid`; None if there is none (gone, a
    zombie, which has finished, or not ours to inspect)."""
    import psutil  # readers only: the trainer never needs it
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p.create_time(), p.cmdline()
    except psutil.Error:  # no such process, it ended meanwhile, or access denied
        return None


def runs_command(pid, name: str) -> bool:
    """Whether `pid` is alive and its command line names `name` (a run id of a launch still starting, or
    a demo launch id of its supervisor)."""
    found = start_and_argv(pid)
    return found is not None and any(name in a for a in found[1])


def is_trainer(pid, run_id: str, started: float | None = None) -> bool:
    """Whether `pid` is alive and is the trainer of run `run_id`, never a recycled pid: its command line
    is `... -m mgr train ...` naming the run (its id or its directory), or it is such a command or a demo's
    pool worker (mgr/demo_queue.py: a multiprocessing child) that started no later than the run's status
    says the trainer did (a recycled pid starts after the trainer has died)."""
    found = start_and_argv(pid)
    if found is None:
        return False
    t0, argv = found
    if not ("mgr" in argv and "train" in argv) and "--multiprocessing-fork" not in argv:
        return False
    if any(run_id in a for a in argv):
        return True
    return started is not None and t0 <= started + 1.0
