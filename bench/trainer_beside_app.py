"""Does watching a run slow it down? A default trainer's wall time alone, and with the app open on its Latents page.

    python bench/trainer_beside_app.py                      # the default Fashion-MNIST 1% mgr run, 1 round
    python bench/trainer_beside_app.py --steps 100 --rounds 2 --out /tmp/beside.json

Each round trains the same run twice, one after the other, with the same seed: once alone, and once while the app
(`streamlit run app.py`, its own process, as `make run` starts it) is open in headless Chromium on the run's Latents
page; odd rounds train the run with the app first, so a drift of the machine's speed does not favour either. The
trainer is `python -m mgr train` with its default threads (a lone trainer uses every core). Records, per round, the
wall time of each, their ratio (with app / alone), and the CPU seconds the app's server and the browser spent while
the trainer ran (`app_cpu_s`: what the app took from it); the machine and the command, in
bench/results/trainer_beside_app.json. Needs Debian's chromium and chromium-driver.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_browser import AppInBrowser, have_browser  # noqa: E402
from records import stamp  # noqa: E402


def train(runs_dir: Path, run_id: str, steps: int | None, on_start=None) -> float:
    """Wall seconds of one `python -m mgr train` of the default mgr run (on_start(run_id) once its run directory
    exists)."""
    argv = [sys.executable, "-m", "mgr", "train", "--dataset", "fashion-mnist", "--ratio", "0.01", "--method", "mgr",
            "--runs-dir", str(runs_dir), "--run-id", run_id, "--quiet", *(["--steps", str(steps)] if steps else [])]
    t0 = time.time()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if on_start:
        while not (runs_dir / run_id / "status.json").exists() and proc.poll() is None:
            time.sleep(0.2)
        on_start(run_id)
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the trainer failed: {err[-2000:]}")
    return time.time() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="the run's steps (default: the trainer's default)")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs (alone, with the app), one after the other")
    p.add_argument("--out", default=str(REPO / "bench/results/trainer_beside_app.json"))
    a = p.parse_args(argv)
    if a.rounds < 1 or (a.steps is not None and a.steps < 1):
        p.error("--rounds and --steps must be positive")
    if not have_browser():
        p.error("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="mgr-beside-") as tmp:
        work = Path(tmp)
        for i in range(a.rounds):
            def with_app() -> tuple[float, float]:
                app, cpu = AppInBrowser(work / "runs", work), []

                def start(rid):
                    cpu.append(app.cpu_s())  # from here on, what the app spends is taken from the trainer
                    app.open(f"latents?run={rid}")
                try:
                    wall = train(work / "runs", f"beside-{i}", a.steps, on_start=start)
                    return wall, app.cpu_s() - cpu[0]
                finally:
                    app.close()
            if i % 2:
                beside, app_cpu = with_app()
                alone = train(work / "runs", f"alone-{i}", a.steps)
            else:
                alone = train(work / "runs", f"alone-{i}", a.steps)
                beside, app_cpu = with_app()
            rounds.append({"alone_s": round(alone, 1), "with_app_s": round(beside, 1),
                           "ratio": round(beside / alone, 3), "app_cpu_s": round(app_cpu, 1)})
            print(f"round {i}: alone {alone:.1f} s, with the app open on Latents {beside:.1f} s "
                  f"(×{beside / alone:.3f}; the app and browser used {app_cpu:.1f} CPU s meanwhile)", flush=True)
    result = {"steps": a.steps, "rounds": rounds, "cores": os.cpu_count(), "python": platform.python_version(),
              **stamp("trainer_beside_app.py", sys.argv[1:] if argv is None else argv)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
