"""A trainer killed with SIGKILL just after its first evaluation: the state a crash leaves for resume
tests (status.json still says running, last.pt holds that evaluation)."""
import signal
import subprocess
import sys

from mgr.runstore import Run
from tests.waiting import wait_paused


def kill_after_first_evaluation(args: list[str], **popen) -> Run:
    """Start `python -m mgr train ARGS` held after its first evaluation (--pause-at the --eval-every step),
    SIGKILL it there and reap it; its run."""
    every = args[args.index("--eval-every") + 1] if "--eval-every" in args else "50"
    p = subprocess.Popen([sys.executable, "-m", "mgr", "train", *args, "--pause-at", every], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, **popen)
    run = wait_paused(Run(p.stdout.readline().strip()), p)  # the trainer's first line: its run directory
    p.send_signal(signal.SIGKILL)
    p.wait(60)
    return run
