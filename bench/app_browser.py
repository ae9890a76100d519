"""The app as a user has it open: `streamlit run app.py` on localhost (its own process, as `make run` starts it)
and a headless Chromium on one of its pages. Shared by the benchmarks that time what a user waits for or what an
open app costs a trainer. Needs Debian's chromium and chromium-driver (and selenium, from requirements-dev.txt)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def have_browser() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def serve_app(runs_dir: Path, app_dir: Path = REPO, python: str = sys.executable, log=subprocess.DEVNULL):
    """`streamlit run app.py` from `app_dir` on a free localhost port, reading runs from `runs_dir`, its output to
    `log`; (the server's process, its url) once its health check answers. RuntimeError if it exits or takes over
    120 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [python, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"], cwd=app_dir,
        env={**os.environ, "MGR_RUNS_DIR": str(runs_dir)}, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return server, url
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            stop_app(server)
            raise RuntimeError(f"the app's server in {app_dir} did not start")
        time.sleep(0.5)


def stop_app(server: subprocess.Popen) -> None:
    """Ctrl-C, as a user ends `make run`; killed if it has not ended 20 s later."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def headless_chromium(user_data_dir: Path, extra_flags: tuple = ()):
    """A headless Chromium under Selenium, 1400 × 1800, with its profile in `user_data_dir`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={user_data_dir}", "--window-size=1400,1800", *extra_flags):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def _cpu_s(pid: int, children: bool) -> float:
    """CPU seconds (user + system) process `pid` has used, with its children's if asked; 0 for one that is gone."""
    import psutil
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True) if children else []
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class AppInBrowser:
    """The app's server on `runs_dir`, served from `app_dir` (a checkout; this one by default), and a headless
    Chromium that has opened its entry page, as a user arrives."""

    def __init__(self, runs_dir: Path, work: Path, app_dir: Path = REPO, python: str = sys.executable):
        self.server, self.url = serve_app(runs_dir, app_dir, python)
        self.driver = headless_chromium(work / "chrome")
        self.driver.get(self.url)

    def open(self, page: str) -> None:
        self.driver.get(f"{self.url}/{page}")

    def text_of(self, css: str) -> str:
        """The text of the elements matching `css`, joined by newlines. Read as textContent in one script: a
        benchmark that polls must not cost the page much (reading a long page's rendered text, `body.text`,
        every 0.5 s took the browser more CPU than the page itself, taking it from the trainers it timed)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent).join('\\n')", css)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the app's server and the browser, with all their children, have used."""
        return _cpu_s(self.server.pid, children=True) + _cpu_s(self.driver.service.process.pid, children=True)

    def page_cpu_s(self) -> dict:
        """CPU seconds (user + system) used so far by the app's server process alone (what it starts, such as a demo's
        supervisor and its trainers, is not counted) and by the browser with all its children."""
        return {"server": _cpu_s(self.server.pid, children=False),
                "browser": _cpu_s(self.driver.service.process.pid, children=True)}

    def close(self) -> None:
        self.driver.quit()
        stop_app(self.server)
