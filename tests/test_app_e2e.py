"""End to end: `streamlit run app.py` on localhost, driven in headless Chromium (Debian's
`chromium` + `chromium-driver`, through Selenium): launch a tiny run from the Train page and wait
until the accuracy chart shows points. .ci/run installs what this needs; without it the test skips."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (make setup installs requirements.txt)")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver; .ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "MGR_RUNS_DIR": str(tmp_path / "runs")}
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "streamlit.log").read_text()
        time.sleep(0.5)
    yield url, tmp_path / "runs"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_launch_a_run_in_the_browser_and_watch_its_accuracy_chart(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from mgr.runstore import Run, list_runs

    url, runs_dir = server
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1500,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        wait = WebDriverWait(driver, 180, poll_frequency=0.5)
        driver.get(f"{url}/train")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[aria-label="steps"]'))
        for label, value in (("steps", "20"), ("evaluate every", "10"), ("batch size", "16"),
                             ("probes per class", "2"), ("real probe images", "40")):
            box = driver.find_element(By.CSS_SELECTOR, f'input[aria-label="{label}"]')
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(value, Keys.TAB)
        next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Launch").click()

        def accuracy_points(d):
            return d.execute_script("""
                for (const plot of document.querySelectorAll('.js-plotly-plot')) {
                  const title = plot.querySelector('.gtitle');
                  if (title && title.textContent === 'Accuracy')
                    return plot.querySelectorAll('.scatterlayer .points path').length;
                }
                return 0;""")
        wait.until(lambda d: accuracy_points(d) >= 3)  # train, val and test accuracy at the first evaluation
        time.sleep(1.0)
        assert driver.save_screenshot(str(tmp_path / "train.png"))
        assert (tmp_path / "train.png").stat().st_size > 10_000
        shots = os.environ.get("MGR_SCREENSHOTS")
        if shots:
            shutil.copy(tmp_path / "train.png", Path(shots) / "train-e2e.png")
    finally:
        driver.quit()
        for run in list_runs(runs_dir):  # the trainer outlives the app by design: end it here
            pid = Run(run.path).status().get("pid")
            if Run(run.path).status().get("state") == "running" and pid:
                os.kill(pid, signal.SIGTERM)
    runs = list_runs(runs_dir)
    assert len(runs) == 1 and runs[0].config["steps"] == 20 and runs[0].metrics()
