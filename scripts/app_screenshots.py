"""Screenshots of every page for docs/: starts `streamlit run app.py` on localhost with
$MGR_RUNS_DIR, opens each page in headless Chromium (Selenium + Debian's chromium-driver) and
saves docs/screenshots/<page>.png.

    MGR_RUNS_DIR=runs python scripts/app_screenshots.py --run <run id> [--compare id1,id2] [--port 8531]
        [--demo <launch id>]   # also home-sweep.png: Home scrolled to that demo launch's verdict and why panels
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
    a = p.parse_args()
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
            for name in a.pages.split(","):
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
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
