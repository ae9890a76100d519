"""Does watching a run slow it down? A default trainer's wall time alone, and with the app open on its Latents page.

    python bench/trainer_beside_app.py                      # the default Fashion-MNIST 1% mgr run, 1 round
    python bench/trainer_beside_app.py --steps 100 --rounds 2 --out /tmp/beside.json

Each round trains the same run twice, one after the other, with the same seed: once alone, and once while the app
(`streamlit run app.py`, its own process, as `make run` starts it) is open in headless Chromium on the run's Latents
page, whose live panels reread the run every 2 s. The trainer is `python -m mgr train` with its default threads (a
lone trainer uses every core). Records the wall time of each and their ratio (with app / alone), the machine and the
command in bench/results/trainer_beside_app.json. Needs Debian's chromium and chromium-driver.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import stamp  # noqa: E402


def train(runs_dir: Path, run_id: str, steps: int | None, on_start=None) -> float:
    """Wall seconds of one `python -m mgr train` of the default mgr run (on_start(run_id) once it has begun)."""
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


class AppInBrowser:
    """The app's server on the runs folder and a headless Chromium that opens a page of it."""

    def __init__(self, runs_dir: Path, work: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"], cwd=REPO,
            env={**os.environ, "MGR_RUNS_DIR": str(runs_dir)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if self.server.poll() is not None or time.time() > deadline:
                raise RuntimeError("the app's server did not start")
            time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={work / 'chrome'}", "--window-size=1400,1800"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        self.driver.get(self.url)  # the entry page first, as a user arrives

    def open(self, page: str) -> None:
        self.driver.get(f"{self.url}/{page}")

    def close(self) -> None:
        self.driver.quit()
        self.server.send_signal(signal.SIGINT)
        try:
            self.server.wait(20)
        except subprocess.TimeoutExpired:
            self.server.kill()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="the run's steps (default: the trainer's default)")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs (alone, with the app), one after the other")
    p.add_argument("--out", default=str(REPO / "bench/results/trainer_beside_app.json"))
    a = p.parse_args(argv)
    if a.rounds < 1 or (a.steps is not None and a.steps < 1):
        p.error("--rounds and --steps must be positive")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        p.error("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="mgr-beside-") as tmp:
        work = Path(tmp)
        for i in range(a.rounds):
            alone = train(work / "runs", f"alone-{i}", a.steps)
            app = AppInBrowser(work / "runs", work)
            try:
                beside = train(work / "runs", f"beside-{i}", a.steps, on_start=lambda rid: app.open(f"latents?run={rid}"))
            finally:
                app.close()
            rounds.append({"alone_s": round(alone, 1), "with_app_s": round(beside, 1),
                           "ratio": round(beside / alone, 3)})
            print(f"round {i}: alone {alone:.1f} s, with the app open on Latents {beside:.1f} s "
                  f"(×{beside / alone:.3f})", flush=True)
    result = {"steps": a.steps, "rounds": rounds, "cores": os.cpu_count(), "python": platform.python_version(),
              **stamp("trainer_beside_app.py", sys.argv[1:] if argv is None else argv)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
