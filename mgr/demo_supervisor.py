"""A demo launch's supervisor process: `python -m mgr.demo_supervisor run <runs dir>/.demos/<launch id>.json`
(mgr/demo_queue.py's start_supervisor starts it; supervise there runs the queue).

Its first act is to start the worker pool, before it imports the queue and with it torch: the workers then load
torch and the trainer while the supervisor does, not after it. This module imports nothing heavy, because each
spawned worker imports it again as its main module."""
from __future__ import annotations

import json
import sys
from concurrent.futures import ProcessPoolExecutor

from .demo_pool import new_pool

USAGE = "usage: python -m mgr.demo_supervisor run <runs dir>/.demos/<launch id>.json"


def early_pool(manifest: str) -> ProcessPoolExecutor | None:
    """The launch's pool of `parallel` workers, already starting; None if the manifest cannot be read (supervise
    then says why)."""
    try:
        parallel = int(json.loads(open(manifest).read())["parallel"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pool = new_pool(parallel)
    pool.submit(int)  # a spawn pool starts all its workers at its first task
    return pool


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        print(USAGE, file=sys.stderr)
        return 2
    pool = early_pool(argv[1])
    from .demo_queue import supervise
    return supervise(argv[1], pool)


if __name__ == "__main__":
    sys.exit(main())
