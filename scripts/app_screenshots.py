"""Screenshots of every page for docs/: starts `streamlit run app.py` on localhost with
$MGR_RUNS_DIR, opens each page in headless Chromium (Selenium + Debian's chromium-driver) and
saves docs/screenshots/<page>.png.

    MGR_RUNS_DIR=runs python scripts/app_screenshots.py --run <run id> [--compare id1,id2] [--port 8531]
        [--demo <launch id>]   # also home-sweep.png: Home scrolled to that demo launch's verdict and why panels
        [--walk 5]             # also explore-walk.png: a walk of that many recorded positions on the Explore page
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = {"home": "", "train": "train", "latents": "latents", "feature_space": "feature_space",
         "consistency": "consistency", "compare": "compare", "data": "data", "explore": "explore"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--compare", default="")
    p.add_argument("--port", type=int, default=8531)
    p.add_argument("--out", default=str(REPO / "docs/screenshots"))
    p.add_argument("--pages", default=",".join(PAGES))
    p.add_argument("--wait", type=float, default=12.0, help="seconds to let a page settle")
    p.add_argument("--demo", default="", help="a demo launch id in $MGR_RUNS_DIR/.demos: home-sweep.png shows its panel")
    p.add_argument("--walk", type=int, default=0, help="explore-walk.png: record this many positions on Explore, "
                   "moving one latent slider between them")
    a = p.parse_args()
    if a.walk < 0:
        p.error(f"--walk {a.walk}: give a number of positions >= 0")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(a.port), "--server.address", "127.0.0.1"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{a.port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--window-size=1500,1800"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        try:
            # the entry page first: a fresh server whose first request is a deep link (/train) runs that page
            # without app.py's st.navigation and lists pages/ as a legacy multipage app (a Streamlit limitation)
            driver.get(url)
            time.sleep(a.wait)
            for name in [n for n in a.pages.split(",") if n]:  # --pages "" takes only --demo or --walk
                query = f"?runs={a.compare}" if name == "compare" else f"?run={a.run}"
                driver.get(f"{url}/{PAGES[name]}{query}")
                time.sleep(a.wait)
                for _ in range(120):  # until Streamlit stops running the script
                    if not driver.execute_script(
                            "return document.querySelector('[data-testid=\"stStatusWidget\"]') !== null"):
                        break
                    time.sleep(0.5)
                time.sleep(2)
                height = driver.execute_script(
                    "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
                    "return Math.max(m.scrollHeight, 1000);")
                driver.set_window_size(1500, min(int(height) + 120, 4000))
                time.sleep(2)
                driver.save_screenshot(str(out / f"{name}.png"))
                driver.set_window_size(1500, 1800)
                print(f"{name}: {out / f'{name}.png'}", flush=True)
            if a.demo:
                driver.get(f"{url}/?demo={a.demo}")
                time.sleep(a.wait * 2)  # the verdict panel reads every run and judges its samples on its first pass
                driver.execute_script("""for (const h of document.querySelectorAll('h4'))
                    if (h.textContent.includes('?')) { h.scrollIntoView(); window.scrollBy(0, -20); break; }""")
                time.sleep(3)
                driver.save_screenshot(str(out / "home-sweep.png"))
                print(f"home-sweep: {out / 'home-sweep.png'}", flush=True)
            if a.walk:
                record_walk(driver, f"{url}/explore?run={a.run}", a.walk, a.wait)
                driver.save_screenshot(str(out / "explore-walk.png"))
                print(f"explore-walk: {out / 'explore-walk.png'}", flush=True)
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(30)


def settle(driver, wait: float) -> None:
    """Until Streamlit has finished running the page's script (at most 60 s), then a moment to draw."""
    for _ in range(120):
        if not driver.execute_script("return document.querySelector('[data-testid=\"stStatusWidget\"]') !== null"):
            break
        time.sleep(0.5)
    time.sleep(wait)


def record_walk(driver, url: str, positions: int, wait: float) -> None:
    """On the Explore page: record `positions` positions, moving the latent sliders (not the step) between them,
    then scroll to the walk."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.get(url)
    time.sleep(wait)
    settle(driver, 2)
    from selenium.webdriver.common.action_chains import ActionChains
    for k in range(positions):
        if k:  # one page along a latent direction (the sliders that span −SPAN..SPAN), a different one each time
            sliders = [e for e in driver.find_elements(By.CSS_SELECTOR, 'input[type="range"]')
                       if float(e.get_attribute("min") or 0) < 0]
            if not sliders:
                raise SystemExit("no latent slider on the Explore page (is the run's step kept with its weights?)")
            driver.execute_script("arguments[0].focus()", sliders[(k - 1) % min(3, len(sliders))])
            ActionChains(driver).send_keys(Keys.PAGE_UP).perform()
            settle(driver, 1.5)
        button = next(b for b in driver.find_elements(By.TAG_NAME, "button") if "record this position" in b.text)
        button.click()
        settle(driver, 1.5)
    driver.execute_script("""for (const h of document.querySelectorAll('h2, h3'))
        if (h.textContent.includes('Walk')) { h.scrollIntoView(); window.scrollBy(0, -420); break; }""")
    time.sleep(2)


if __name__ == "__main__":
    main()
