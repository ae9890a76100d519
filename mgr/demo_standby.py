"""The warm standby: a demo supervisor started before any click, whose pool's workers have already imported torch.
A launch hands it its manifest instead of starting a supervisor, so the demo's first runs start at once instead of
after the ~3 s a new supervisor and its workers spend loading torch (docs/demos.md#the-warm-standby).

One standby per runs folder, in its .demos/ folder:

    standby.lock   flock held by the live standby (the OS drops it however the standby ends)
    standby.json   {"pid", "parallel", "owner"}, written (atomically) as it starts, removed as it ends
    standby.claim  a launch id, written whole by the launch that hands itself over (a hard link: one claim)
    standby.taken  the claim once the standby has taken it (a rename: taken once, by one standby); from then on
                   no launch sees the standby waiting

The app's Home page starts one while nothing runs (mgr/demo_queue.py's ensure_standby); it supervises one launch
and ends, and ends with its owner, the app's server. MGR_DEMO_STANDBY=0 turns it off (no idle processes: a standby
and two workers hold 0.85 GB of memory of their own). This module imports nothing heavy: the standby takes its lock
before it starts its pool.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from . import processes

LOCK, INFO, CLAIM, TAKEN = "standby.lock", "standby.json", "standby.claim", "standby.taken"


def enabled() -> bool:
    return os.environ.get("MGR_DEMO_STANDBY", "1") != "0"


def _dir(runs_dir) -> Path:
    return Path(runs_dir) / ".demos"  # mgr/demo_queue.py's DEMOS_DIR (imported from there, it would bring torch)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def take_lock(runs_dir):
    """In the standby: its lock, held for its life (an open file), or None while another standby holds it."""
    _dir(runs_dir).mkdir(parents=True, exist_ok=True)
    f = open(_dir(runs_dir) / LOCK, "a")  # noqa: SIM115 (kept open: closing it lets go of the lock)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    for name in (CLAIM, TAKEN, INFO):  # a dead standby's leftovers: a claim it never took is not for this one
        (_dir(runs_dir) / name).unlink(missing_ok=True)
    return f


def lock_held(runs_dir) -> bool:
    """Whether a live standby holds the folder's lock."""
    return processes.lock_held(_dir(runs_dir) / LOCK)


def announce(runs_dir, parallel: int, owner: int) -> None:
    """In the standby: what a launch checks before handing itself over."""
    _write(_dir(runs_dir) / INFO, json.dumps({"pid": os.getpid(), "parallel": parallel, "owner": owner}))


def waiting(runs_dir) -> dict | None:
    """The live standby's announcement, if one waits for a launch (none taken yet)."""
    info = _read(_dir(runs_dir) / INFO)
    if info is None or (_dir(runs_dir) / TAKEN).exists() or not lock_held(runs_dir):
        return None
    try:
        return json.loads(info)
    except ValueError:
        return None


def hand_over(runs_dir, launch_id: str, parallel: int) -> int | None:
    """In a launch: hand the launch to the waiting standby if it runs `parallel` workers and no other launch
    is handed to it; the standby's pid, or None (the launch then starts its own supervisor)."""
    info = waiting(runs_dir)
    if info is None or info.get("parallel") != parallel:
        return None
    tmp = _dir(runs_dir) / f".{CLAIM}.{os.getpid()}.tmp"
    tmp.write_text(launch_id)
    try:
        os.link(tmp, _dir(runs_dir) / CLAIM)  # whole, and only if no other launch has claimed it first
    except FileExistsError:
        return None
    finally:
        tmp.unlink()
    return info.get("pid")


def take(runs_dir) -> str | None:
    """In the standby: the launch id handed to it, if any, taken (renamed) so that it is taken once."""
    try:
        os.rename(_dir(runs_dir) / CLAIM, _dir(runs_dir) / TAKEN)
    except FileNotFoundError:
        return None
    return (_read(_dir(runs_dir) / TAKEN) or "").strip() or None


def holds(runs_dir, launch_id: str) -> bool:
    """Whether the live standby has been handed `launch_id` (taken or not yet): its supervisor, between the
    hand-over and the moment it locks the launch."""
    return launch_id in (_read(_dir(runs_dir) / CLAIM), _read(_dir(runs_dir) / TAKEN)) and lock_held(runs_dir)


def retire(runs_dir) -> None:
    """In the standby, as it ends: it no longer waits (its lock goes with the process)."""
    (_dir(runs_dir) / INFO).unlink(missing_ok=True)
