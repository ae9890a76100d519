"""A trainer killed with SIGKILL just after its first evaluation: the state a crash leaves for resume
tests (status.json still says running, last.pt holds that evaluation)."""
import signal
import subprocess
import sys
import time

from mgr.runstore import Run


def kill_after_first_evaluation(args: list[str], timeout: float, **popen) -> Run:
    """Start `python -m mgr train ARGS`, wait up to `timeout` s until its metrics.jsonl has a line, SIGKILL
    it (and reap it within timeout / 2 s); its run."""
    p = subprocess.Popen([sys.executable, "-m", "mgr", "train", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, **popen)
    run = Run(p.stdout.readline().strip())  # the trainer's first line: its run directory
    t = time.time()
    while not run.metrics():
        assert p.poll() is None, p.stderr.read()
        assert time.time() - t < timeout
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout / 2)
    return run
