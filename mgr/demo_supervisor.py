"""A demo launch's supervisor process (mgr/demo_queue.py starts it; supervise there runs the queue):

    python -m mgr.demo_supervisor run <runs dir>/.demos/<launch id>.json   # supervise that launch
    python -m mgr.demo_supervisor standby <runs dir> <owner pid>           # wait, warm, for the next launch

Its first act is to start the worker pool, before it imports the queue and with it torch: the workers then load
torch and the trainer while the supervisor does, not after it. A standby (mgr/demo_standby.py) goes further: it
does all that before the launch exists. This module imports nothing heavy, because each spawned worker imports it
again as its main module."""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from . import demo_standby
from .demo_pool import new_pool

USAGE = ("usage: python -m mgr.demo_supervisor run <runs dir>/.demos/<launch id>.json\n"
         "       python -m mgr.demo_supervisor standby <runs dir> <owner pid>")
STANDBY_POLL_S = 0.05  # how often a standby looks for a launch handed to it, and for its owner


def early_pool(parallel: int) -> ProcessPoolExecutor:
    """A pool of `parallel` workers, every one of them already starting."""
    pool = new_pool(parallel)
    for _ in range(parallel):  # a spawn pool starts a worker per task that finds none idle: one task each
        pool.submit(int)
    return pool


def manifest_parallel(manifest: str) -> int | None:
    """The launch's `parallel`; None if the manifest cannot be read (supervise then says why)."""
    try:
        return int(json.loads(open(manifest).read())["parallel"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def standby(runs_dir: str, owner: int) -> int:
    """Announce, start a pool of one worker per core, load torch, then wait until a launch is handed over (and
    supervise it) or the owner has ended. It takes a launch from its start: one handed over while it still loads
    waits for that, rather than a new supervisor loading torch beside it. Another live standby in the folder
    makes this one end at once."""
    lock = demo_standby.take_lock(runs_dir)
    if lock is None:
        return 0
    parallel = os.cpu_count() or 1
    demo_standby.announce(runs_dir, parallel, owner)
    pool = early_pool(parallel)
    from .demo_queue import manifest_path, supervise  # torch, while the workers load theirs
    from .runstore import pid_alive
    try:
        while pid_alive(owner):
            launch_id = demo_standby.take(runs_dir)
            if launch_id is not None:  # from here on no launch sees it waiting (demo_standby.waiting)
                path = manifest_path(runs_dir, launch_id)
                _log_to(path.with_suffix(".log"))
                path.with_suffix(".pid").write_text(str(os.getpid()))
                print(f"the warm standby {os.getpid()} supervises demo launch {launch_id}", flush=True)
                return supervise(path, pool)
            time.sleep(STANDBY_POLL_S)
        pool.shutdown(wait=True, cancel_futures=True)
        return 0
    finally:
        demo_standby.retire(runs_dir)


def _log_to(path) -> None:
    """From here on, this process's output goes to the launch's log, as a supervisor started for it would."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "standby" and argv[2].isdigit():
        return standby(argv[1], int(argv[2]))
    if len(argv) != 2 or argv[0] != "run":
        print(USAGE, file=sys.stderr)
        return 2
    parallel = manifest_parallel(argv[1])
    pool = early_pool(parallel) if parallel is not None else None
    from .demo_queue import supervise
    return supervise(argv[1], pool)


if __name__ == "__main__":
    sys.exit(main())
