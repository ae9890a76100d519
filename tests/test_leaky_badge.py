"""A run trained with --leaky-generator (its generator saw another split: images its classifier must not) shows a
red badge on every view of it, is marked in the run picker and on Compare; a run that is not shows none. Real
4-step gda runs on digits, one with the generator of the 25% split, one with its own."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from mgr.analysis.runs import RunSummary, summarize
from mgr.data import DataConfig
from mgr.paths import REPO
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train

APP = str(REPO / "app.py")
OTHER_SPLIT = str(REPO / "checkpoints" / "generators" / "digits_ratio0.25_seed0.pt")  # saw 2.5x the images
BADGE = ":red-badge[leaky generator]"
SENTENCE = "Its generator saw images this classifier must not: its accuracy is inflated and not comparable."
RUN_PAGES = ["pages/train.py", "pages/latents.py", "pages/feature_space.py", "pages/consistency.py",
             "pages/explore.py"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("leaky-runs")
    tiny = dict(data=DataConfig("digits", ratio=0.1), method="gda", steps=4, eval_every=2, batch_size=16,
                probes_per_class=2, probe_real=40, device="cpu")
    train(TrainConfig(**tiny, generator=OTHER_SPLIT, leaky_generator=True), d, "leaky", quiet=True)
    train(TrainConfig(**tiny), d, "clean", quiet=True)
    return d


def open_page(page: str, runs_dir, monkeypatch, **query) -> AppTest:
    import pages._ui as ui
    monkeypatch.setenv("MGR_RUNS_DIR", str(runs_dir))
    # UMAP's background warm-up (20-30 s of numba on a shared core) is not what these tests look at
    monkeypatch.setattr(ui, "umap_state", lambda: {"done": False, "seconds": None, "error": None})
    at = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def test_a_run_summary_reads_leaky_from_its_config(runs):
    assert summarize(Run(runs / "leaky")).leaky is True
    assert summarize(Run(runs / "clean")).leaky is False
    assert RunSummary("x", runs / "x", "unknown").leaky is False  # an unreadable run has no config to say so


@pytest.mark.parametrize("page", RUN_PAGES)
def test_every_view_of_a_leaky_run_shows_the_red_badge_and_a_clean_run_none(page, runs, monkeypatch):
    at = open_page(page, runs, monkeypatch, run="leaky")
    assert f"{BADGE} {SENTENCE}" in markdown(at)
    (picker,) = [s for s in at.selectbox if s.key == "run"]
    labels = dict(zip(["leaky", "clean"], [next(o for o in picker.options if o.endswith(f"· {i}")) for i in ("leaky", "clean")]))
    assert "🟥 leaky" in labels["leaky"] and "🟥" not in labels["clean"]
    at = open_page(page, runs, monkeypatch, run="clean")
    assert not any("leaky generator" in m for m in markdown(at))


def test_compare_marks_the_leaky_run_in_its_badge_tables_and_legend(runs, monkeypatch):
    at = open_page("pages/compare.py", runs, monkeypatch, runs="leaky,clean")
    (badge,) = [m for m in markdown(at) if BADGE in m]
    assert "`leaky`" in badge and "`clean`" not in badge and "not comparable" in badge
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    config = dict(zip(table["run"], table["configuration"]))
    assert config["leaky"].startswith("🟥 leaky") and "🟥" not in config["clean"]
    names = {t["name"] for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t.get("name")}
    assert any(n.startswith("🟥 leaky") for n in names) and any(not n.startswith("🟥") for n in names), names
    at = open_page("pages/compare.py", runs, monkeypatch, runs="clean")
    assert not any("leaky generator" in m for m in markdown(at))
