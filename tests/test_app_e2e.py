"""End to end: `streamlit run app.py` on localhost, driven in headless Chromium (Debian's
`chromium` + `chromium-driver`, through Selenium): launch a tiny run from the Train page and wait
until the accuracy chart shows points; launch a tiny sweep from Home and watch its curve and "why"
panel fill in. .ci/run installs what this needs; without it the tests skip. With $MGR_SCREENSHOTS set
(by hand, not in CI) the screenshots are copied there, e.g. MGR_SCREENSHOTS=docs/screenshots."""
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
sys.path.insert(0, str(REPO / "bench"))
from app_browser import headless_chromium, serve_app, stop_app  # noqa: E402
selenium = pytest.importorskip("selenium", reason="selenium is not installed (make setup installs requirements.txt)")
# The browser tests that launch trainers share one xdist group (BROWSER), so one worker runs them one after
# another: each starts Streamlit, Chromium and trainers, and two such stacks side by side on a 2-core machine
# slow each other several times over (their waits are generous for that). The page walk launches nothing and
# reads the session's app_runs, so it runs in that fixture's group, which then is built once, not twice.
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver; .ci/run does)")
BROWSER = pytest.mark.xdist_group("browser")


@pytest.fixture
def server(tmp_path):
    yield from streamlit_server(tmp_path, tmp_path / "runs")


@pytest.fixture
def server_on_app_runs(tmp_path, app_runs):
    yield from streamlit_server(tmp_path, app_runs)


def streamlit_server(tmp_path, runs_dir):
    """The app as `make run` serves it (bench/app_browser.py), its output in tmp_path/streamlit.log."""
    with open(tmp_path / "streamlit.log", "wb") as log:
        try:
            proc, url = serve_app(runs_dir, log=log)
        except RuntimeError as e:
            raise AssertionError(f"{e}: {(tmp_path / 'streamlit.log').read_text()}") from None
        yield url, runs_dir
        stop_app(proc)


@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path / "chrome", ("--no-first-run", "--disable-background-networking",
                                                      "--disable-component-update", "--disable-sync"))
    yield driver
    driver.quit()


def screenshot(driver, tmp_path, name: str) -> None:
    assert driver.save_screenshot(str(tmp_path / name))
    assert (tmp_path / name).stat().st_size > 10_000
    shots = os.environ.get("MGR_SCREENSHOTS")
    if shots:
        shutil.copy(tmp_path / name, Path(shots) / name)


def settle_for_docs(seconds: float = 1.0) -> None:
    """With $MGR_SCREENSHOTS set, give the page's last redraw time to finish before a screenshot for the docs;
    the tests' own checks wait for conditions, never for time."""
    if os.environ.get("MGR_SCREENSHOTS"):
        time.sleep(seconds)


def scroll_to_heading(driver, text: str) -> None:
    """Bring the heading that contains `text` to the top of the window (a screenshot shows the window)."""
    driver.execute_script("""
        for (const h of document.querySelectorAll('h1, h2, h3, h4'))
          if (h.textContent.includes(arguments[0])) { h.scrollIntoView(); window.scrollBy(0, -60); break; }""", text)


def when_ready(driver, act, what: str, timeout: float = 120.0):
    """Do `act(driver)` once the page lets it: an element just drawn can still be covered or not yet interactable
    (an expander that is opening), or replaced by a rerun between being found and being used."""
    from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                            NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d):
        try:
            act(d)
            return True
        except (ElementClickInterceptedException, ElementNotInteractableException, NoSuchElementException,
                StaleElementReferenceException, StopIteration):
            return False
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(attempt)
    except TimeoutException:
        raise AssertionError(f"could not {what} within {timeout:.0f} s") from None


def click(driver, xpath: str) -> None:
    from selenium.webdriver.common.by import By
    when_ready(driver, lambda d: d.find_element(By.XPATH, xpath).click(), f"click {xpath}")


def type_into(driver, label: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def type_value(d):
        box = d.find_element(By.CSS_SELECTOR, f'input[aria-label="{label}"]')
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value, Keys.TAB)
    when_ready(driver, type_value, f"type into {label!r}")


@BROWSER
def test_launch_a_run_in_the_browser_and_watch_its_accuracy_chart(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mgr.runstore import Run, list_runs

    url, runs_dir = server
    driver = browser
    try:
        wait = WebDriverWait(driver, 480, poll_frequency=0.5)  # 42 s alone; slow CI machines vary
        driver.get(f"{url}/train")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[aria-label="steps"]'))
        for label, value in (("steps", "20"), ("evaluate every", "10"), ("batch size", "16"),
                             ("probes per class", "2"), ("real probe images", "40")):
            type_into(driver, label, value)
        when_ready(driver, lambda d: next(b for b in d.find_elements(By.TAG_NAME, "button")
                                          if b.text.strip() == "Launch").click(), "click Launch")

        def accuracy_points(d):
            return d.execute_script("""
                for (const plot of document.querySelectorAll('.js-plotly-plot')) {
                  const title = plot.querySelector('.gtitle');
                  if (title && title.textContent === 'Accuracy')
                    return plot.querySelectorAll('.scatterlayer .points path').length;
                }
                return 0;""")
        wait.until(lambda d: accuracy_points(d) >= 3)  # train, val and test accuracy at the first evaluation
        settle_for_docs()
        screenshot(driver, tmp_path, "train-e2e.png")
    finally:
        for run in list_runs(runs_dir):  # the trainer outlives the app by design: end it here
            pid = Run(run.path).status().get("pid")
            if Run(run.path).status().get("state") == "running" and pid:
                os.kill(pid, signal.SIGTERM)
    runs = list_runs(runs_dir)
    assert len(runs) == 1 and runs[0].config["steps"] == 20 and runs[0].metrics()


@BROWSER
def test_launch_a_sweep_from_home_and_watch_its_curve_and_why_panel_fill_in(server, browser, tmp_path):
    """The wrong-labels sweep on digits, 2 seeds of 4 steps (GDA at λ = 4 against itself with three shares of random
    synthetic labels, 8 runs): the panel shows the runs' progress, then the dose curves, a verdict badge with its sentence, and the
    "why" panel's oracle confusion matrix (its first tab; the per-class costs are the next) with a link to a run's
    Latents; Compare links the demo's runs."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mgr import demo_queue

    url, runs_dir = server
    driver = browser
    label = "Launch 2 seeds × 4 arms"
    button = '//div[contains(@class, "st-key-demo-wrong-labels")]//button'  # the card's (other demos have 4 arms)
    try:
        wait = WebDriverWait(driver, 600, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.XPATH, "//summary[contains(., 'Demo settings')]"))
        click(driver, "//summary[contains(., 'Demo settings')]")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[aria-label="seeds per arm"]'))
        click(driver, "//label[contains(., 'digits 10%')]")
        # steps first: script runs take the values in order, so once a button reads "2 seeds" the runs that took
        # the data and the steps have ended too
        type_into(driver, "steps per run (empty: the demo's)", "4")
        type_into(driver, "seeds per arm", "2")
        wait.until(lambda d: d.find_element(By.XPATH, button).text.strip() == label)
        click(driver, button)  # Home's runs list reruns every few seconds: a button found may be replaced

        def page_text(d):
            return d.find_element(By.TAG_NAME, "body").text

        def progress(d):  # the panel's "N of M runs ended", as textContent: reading the whole page's rendered text
            # at every poll cost the browser more CPU than drawing the page, taken from the sweep's trainers
            return d.execute_script("return [...document.querySelectorAll('[data-testid=\"stProgress\"]')]"
                                    ".map(e => e.textContent).join(' ')")

        def chart_titles(d):
            return d.execute_script("return [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                                    ".map(t => t.textContent)")
        wait.until(lambda d: "runs ended" in progress(d))
        scroll_to_heading(driver, "Do wrong-class samples hurt?")
        screenshot(driver, tmp_path, "home-sweep-running.png")
        try:
            wait.until(lambda d: "8 of 8 runs ended" in progress(d)
                       and any("at each dose" in t for t in chart_titles(d))
                       and any("asked for × judged as" in t for t in chart_titles(d)))
        except TimeoutException:
            screenshot(driver, tmp_path, "home-sweep-timeout.png")
            raise AssertionError(f"charts {chart_titles(driver)}; page: {page_text(driver)[-3000:]}") from None
        text = page_text(driver)
        (m,) = demo_queue.list_launches(runs_dir)
        out = demo_queue.outcome(runs_dir, m)
        assert out.done and m["demo"] == "wrong-labels" and len(m["runs"]) == 8
        # the verdict: a badge with the headline, then one sentence naming the doses (or the largest difference)
        assert any(line.split()[0] in ("holds", "opposite", "inconclusive") and
                   ("Holds for" in line or "opposite holds" in line or "No pair's interval" in line)
                   for line in text.splitlines() if line.strip()), text
        assert "Which classes pay" in text and "Why" in text
        links = {a.text.strip(): a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")}
        compare = next(h for t, h in links.items() if t.endswith("Compare these runs"))
        assert all(r["run_id"] in compare for r in m["runs"])
        latents = next(h for t, h in links.items() if "Latents of" in t)
        assert "/latents?run=" in latents and any(r["run_id"] in latents for r in m["runs"])
        settle_for_docs(2.5)  # the charts of the last refresh
        scroll_to_heading(driver, "Do wrong-class samples hurt?")
        screenshot(driver, tmp_path, "home-sweep.png")
    finally:
        for m in demo_queue.list_launches(runs_dir):  # the demo outlives the app by design: end it here
            demo_queue.stop(runs_dir, m["id"])


@BROWSER
def test_a_page_url_opened_first_goes_through_the_apps_navigation(server, browser):
    """A fresh server's first request is a page's URL (a bookmark, or a tab reconnecting after a restart).
    Streamlit would run that file alone in its legacy pages/ mode: a sidebar listing every file of pages/
    ("ui", "diagram") and no wide layout. The page must come up inside app.py's navigation instead, by
    Streamlit's public API (pages/_ui.py's through_app), without a "Page not found" on the way."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    driver = browser
    driver.get(f"{url}/latents")

    def sidebar(d):  # "" while Streamlit replaces the sidebar between our finding it and reading it
        try:
            return " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"]'))
        except StaleElementReferenceException:
            return ""
    WebDriverWait(driver, 600, poll_frequency=0.5).until(lambda d: "Explore a run" in sidebar(d))
    time.sleep(2.0)  # a page that went through the legacy mode would show its list again on its next message
    text = WebDriverWait(driver, 600, poll_frequency=0.5).until(sidebar)
    assert "Data & generators" in text and "Feature space" in text
    assert not {"ui", "diagram", "app"} & set(text.split()), text
    assert "Latents" in driver.find_element(By.TAG_NAME, "h1").text
    assert driver.current_url.startswith(f"{url}/latents")
    assert "Page not found" not in driver.find_element(By.TAG_NAME, "body").text  # no detour through another page


# The visible text of the page's main column before its first figure (an image, a chart or the diagram),
# in reading order; text in a closed expander is not visible, its summary is.
WORDS_BEFORE_FIRST_FIGURE = """
const main = document.querySelector('[data-testid="stMain"]');
const figure = 'img, canvas, .js-plotly-plot, svg.main-svg';
const walker = document.createTreeWalker(main, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
const words = [];
let n, found = false;
while ((n = walker.nextNode())) {
  if (n.nodeType === 1) {
    if (n.matches(figure) && n.getBoundingClientRect().width > 60) { found = true; break; }
    continue;
  }
  const el = n.parentElement;
  if (!el || !el.getClientRects().length || getComputedStyle(el).visibility === 'hidden') continue;
  if (el.closest('details:not([open])') && !el.closest('summary')) continue;
  if (el.closest('[data-testid="stIconMaterial"]')) continue;  // an icon's name is not read
  const t = n.textContent.trim();
  if (t) words.push(t);
}
return [found, words.join(' ')];
"""


def test_every_page_shows_its_first_figure_after_a_few_words(server_on_app_runs, browser):
    """Show, then tell: on every page, with real runs, the first figure comes after at most about 60 visible
    words (title, one or two sentences, the run picker and the controls above it), and no page shows a
    development date."""
    from selenium.webdriver.common.by import By

    url, _ = server_on_app_runs
    driver = browser
    # Home, the entry page, first: the app's navigation is then set for the whole server. Feature space and
    # Explore last: opening either starts UMAP in the server (its numba kernels compile in about 12 s of a core on
    # a fresh installation), which this walk never needs and which would otherwise slow every page after them
    pages = {"": "", "train": "?run=t-mgr", "latents": "?run=t-mgr", "consistency": "?run=t-mgr",
             "compare": "?runs=t-mgr", "data": "", "feature_space": "?run=t-mgr", "explore": "?run=t-mgr"}
    counts = {}
    for page, query in pages.items():
        driver.get(f"{url}/{page}{query}")
        deadline, idle = time.time() + 120, 0
        while time.time() < deadline:  # read the page once its script run has ended (no "Running…" widget)
            time.sleep(0.25)
            busy = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
            idle = 0 if busy else idle + 1
            found, text = driver.execute_script(WORDS_BEFORE_FIRST_FIGURE)
            if idle >= 3 and found:  # idle at three reads in a row, 0.5 s apart at the ends
                break
        counts[page or "home"] = len(text.split())
        assert found, (page, text)
        assert len(text.split()) <= 60, (page, len(text.split()), text)
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", driver.find_element(By.TAG_NAME, "body").text), page
    print("words before the first figure:", counts)
