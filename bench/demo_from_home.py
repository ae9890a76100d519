"""How long a teacher waits: a demo launched from Home with one click, timed from the click to its last run's end
(the panel's "N of N runs ended", when the verdict shows), in headless Chromium against `streamlit run app.py`.

    python bench/demo_from_home.py                                   # gda-hurts, this checkout, 1 round
    python bench/demo_from_home.py --app-dir /tmp/old --app-dir . --rounds 2   # two checkouts, paired, in turn
    python bench/demo_from_home.py --settle 20 --out /tmp/settled.json        # the click 20 s after Home shows

With several --app-dir (other checkouts of this repository, e.g. `git worktree add /tmp/old <commit>`, each with
a .venv or this one's), each round times every checkout once, one after the other, in the same order: A B A B…
Each launch gets a fresh app server and an empty runs folder, with the Home page's default settings (Fashion-MNIST
1%, 5 seeds), clicked as soon as the button shows (`--settle S`: S seconds later, as a teacher who first
introduces the demo). Records, per checkout, its commit and each round's seconds (with
the CPU seconds the app's server process and the browser used meanwhile, taken from the trainers; the seconds from
the click to the first run's first step, and whether Home's warm standby took the launch), and each round's ratio
to the first checkout, in
bench/results/demo_from_home.json. Needs Debian's chromium and chromium-driver.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_browser import AppInBrowser, have_browser  # noqa: E402
from records import stamp, write_json  # noqa: E402

LAUNCH = re.compile(r"Launch (\d+) seeds × (\d+) arms")


def commit_of(app_dir: Path) -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=app_dir, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=app_dir,
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "?") + ("+changes" if dirty else "")


def python_of(app_dir: Path) -> str:
    own = app_dir / ".venv" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


def start_fields(runs_dir: Path, t0: float) -> dict:
    """How the launch started: seconds from the click to its first run's first step (status.json's `started`), and
    whether the app's warm standby supervised it (mgr/demo_standby.py; its log says so; checkouts before it: no)."""
    import json
    started = [json.loads(p.read_text()).get("started") for p in runs_dir.glob("*/status.json")]
    logs = " ".join(p.read_text() for p in (runs_dir / ".demos").glob("*.log"))
    return {"first_run_s": round(min(s for s in started if s) - t0, 1) if any(started) else None,
            "warm_standby": "the warm standby" in logs}


def click_to_verdict(app_dir: Path, demo: str, timeout: float, settle: float = 0.0) -> dict:
    """One launch of `demo` from a fresh app's Home: seconds from the click until every run has ended."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    with tempfile.TemporaryDirectory(prefix="mgr-home-demo-") as tmp:
        app = AppInBrowser(Path(tmp) / "runs", Path(tmp), app_dir, python_of(app_dir))
        try:
            deadline = time.time() + 120
            while True:  # the card's button (key demo-<id>); Home reruns its live parts, so a found one may go stale
                try:
                    (button,) = app.driver.find_elements(By.CSS_SELECTOR, f".st-key-demo-{demo} button") or [None]
                    if button is not None and LAUNCH.search(button.text):
                        seeds, arms = map(int, LAUNCH.search(button.text).groups())
                        if settle:  # the teacher's first sentence, then the click
                            time.sleep(settle)
                            settle = 0.0
                            continue
                        button.click()
                        break
                except StaleElementReferenceException:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"no launch button for demo {demo!r} on Home of {app_dir}")
                time.sleep(0.2)
            t0, runs, cpu0 = time.time(), seeds * arms, app.page_cpu_s()
            done = f"{runs} of {runs} runs ended"
            while done not in app.text_of('[data-testid="stProgress"]'):  # the panel's "N of M runs ended"
                if time.time() - t0 > timeout:
                    raise RuntimeError(f"{demo} from Home of {app_dir}: not every run ended within {timeout:.0f} s")
                time.sleep(1.0)
            seconds, cpu = round(time.time() - t0, 1), app.page_cpu_s()
            return {"seconds": seconds, "runs": runs, "seeds": seeds,  # and what the open page cost meanwhile:
                    **{f"{k}_cpu_s": round(cpu[k] - cpu0[k], 1) for k in cpu}, **start_fields(Path(tmp) / "runs", t0)}
        finally:
            app.close()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="gda-hurts", help="the demo's id (its card's button key is demo-<id>)")
    p.add_argument("--app-dir", action="append", type=Path, help="a checkout to serve the app from (repeatable; "
                                                                   "default: this one)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1200, help="seconds one launch may take")
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds on Home between the launch button showing and the click (default 0: at once)")
    p.add_argument("--out", default=str(REPO / "bench/results/demo_from_home.json"))
    a = p.parse_args(argv)
    dirs = [d.resolve() for d in (a.app_dir or [REPO])]
    bad = [str(d) for d in dirs if not (d / "app.py").exists()]
    if a.rounds < 1 or a.settle < 0 or bad:
        p.error(f"--rounds must be positive, --settle not negative; --app-dir must be a checkout with app.py "
                f"(not: {', '.join(bad)})")
    if not have_browser():
        p.error("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    checkouts = [{"app_dir": str(d), "commit": commit_of(d), "rounds": []} for d in dirs]
    for i in range(a.rounds):
        for d, c in zip(dirs, checkouts):
            c["rounds"].append(click_to_verdict(d, a.demo, a.timeout, a.settle))
            r = c["rounds"][-1]
            print(f"round {i}: {c['commit']}: {r['seconds']} s (server {r['server_cpu_s']}, browser "
                  f"{r['browser_cpu_s']} CPU s)", flush=True)
    for c in checkouts:
        c["median_s"] = statistics.median(r["seconds"] for r in c["rounds"])
        c["ratio_to_first"] = [round(r["seconds"] / r0["seconds"], 3)
                               for r, r0 in zip(c["rounds"], checkouts[0]["rounds"])]
    result = {"demo": a.demo, "settle_s": a.settle, "checkouts": checkouts, "cores": os.cpu_count(),
              **stamp("demo_from_home.py", sys.argv[1:] if argv is None else argv)}
    write_json(a.out, result)
    print(f"-> {a.out}")
    return result


if __name__ == "__main__":
    main()
