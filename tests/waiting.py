"""Waiting in tests: for a condition, never for a time. A trainer that must still be alive when a test acts
on it is held with `--pause-at STEP` (it stops stepping there until its pause file goes), so no test bets
that a run is slow enough. Time-outs are generous and say what was awaited."""
import time

from mgr.runstore import Run

TIMEOUT = 600  # s: far beyond any wait here on a loaded 2-core machine; only a hung process reaches it


def wait_for(cond, what: str, timeout: float = TIMEOUT, proc=None, poll: float = 0.05):
    """Until cond() holds; fails naming `what`, or at once with its stderr if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None and not cond():
            err = proc.stderr.read() if getattr(proc, "stderr", None) else ""
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}: {err}")
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(poll)


def wait_paused(run: Run, proc=None, timeout: float = TIMEOUT) -> Run:
    """Until the run's trainer holds at its --pause-at step (status.json says paused); the run."""
    wait_for(lambda: run.status().get("paused") is True, f"run {run.id} to hold at its --pause-at step",
             timeout, proc)
    return run
