"""End to end: the Explore page in headless Chromium on `streamlit run app.py` with a real tiny run:
one slider move changes the image and the readouts the browser shows, with a screenshot before and
after. Reuses the server, browser and screenshot fixtures of test_app_e2e.py (skips without Debian's
chromium and chromium-driver). MGR_SCREENSHOTS=docs/screenshots keeps the screenshots."""
import time

import pytest

pytest.importorskip("selenium", reason="selenium is not installed (make setup installs requirements.txt)")
from test_app_e2e import CHROMIUM, DRIVER, browser, screenshot, scroll_to_heading, server  # noqa: E402, F401 (fixtures)

# One xdist group with tests/test_app_e2e.py: the browser tests run one after another (see there).
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver"),
              pytest.mark.xdist_group("browser")]


def test_move_a_slider_in_the_browser_and_the_readouts_follow(server, browser, tmp_path):  # noqa: F811
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from mgr.data import DataConfig
    from mgr.trainer import TrainConfig, train

    url, runs_dir = server
    train(TrainConfig(data=DataConfig("digits", ratio=0.1), method="mgr", steps=10, eval_every=5, batch_size=16,
                      probes_per_class=3, probe_real=60, device="cpu", width=8), runs_dir, "e2e-mgr", quiet=True)
    driver = browser
    # the page re-renders while it settles, so elements found a moment ago may be gone: look again
    wait = WebDriverWait(driver, 300, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,))
    driver.get(url)  # the entry page first, then the sidebar link, as a user gets there (deep links: test_app_e2e.py)
    link = '//a[@data-testid="stSidebarNavLink"][contains(., "Explore")]'
    wait.until(lambda d: d.find_elements(By.XPATH, link))
    driver.execute_script("arguments[0].click()", driver.find_element(By.XPATH, link))

    def readout(d) -> dict:
        """The metric values and the first image's source (G(z, y)) once the page is idle."""
        if d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'):
            return {}
        values = {m.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text:
                  m.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text
                  for m in d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')}
        images = d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
        return {**values, "image": images[0].get_attribute("src")} if values and images else {}

    def settled(d):
        """The readouts once a rerun has drawn them all (None while it is still drawing)."""
        try:
            r = readout(d)
        except StaleElementReferenceException:  # the rerun replaced an element as it was read
            return None
        return r if {"‖z‖", "PCR gap", "predicted", "image"} <= set(r) else None

    wait.until(lambda d: settled(d) and d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
    time.sleep(1.5)  # the map's drawing
    before = wait.until(settled)
    assert "Here: y = 0" in driver.find_element(By.TAG_NAME, "body").text
    scroll_to_heading(driver, "Move")
    screenshot(driver, tmp_path, "explore-before.png")

    thumb = next(e for e in driver.find_elements(By.CSS_SELECTOR, 'input[type="range"]')
                 if e.get_attribute("aria-label") == "random 1")
    driver.execute_script("arguments[0].focus()", thumb)
    ActionChains(driver).send_keys(Keys.PAGE_UP).perform()  # one page of the slider along a fixed random direction
    # under load a rerun draws its readouts one by one: wait until ‖z‖, the image and the PCR gap are all new
    # (waiting for the first two only read a PCR gap not yet redrawn on the loaded CI-like machine, 2026-12-05)
    after = wait.until(lambda d: (r := settled(d)) and r["‖z‖"] != before["‖z‖"] and r["image"] != before["image"]
                       and r["PCR gap"] != before["PCR gap"] and r)
    assert after["image"] != before["image"]  # a new G(z, y)
    assert after["PCR gap"] != before["PCR gap"] and after["predicted"]
    moved = float(thumb.get_attribute("value"))
    assert moved > 0 and f"{moved:.2f}" in thumb.find_element(By.XPATH, "./ancestor::div[@data-testid='stSlider']").text
    scroll_to_heading(driver, "Move")
    screenshot(driver, tmp_path, "explore-after.png")
