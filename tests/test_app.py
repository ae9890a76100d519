"""Every page of the app (AppTest) against real runs made by the trainer: finished, running,
failed, corrupt, deleted while open, and no runs at all."""
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")  # AppTest resolves relative paths against this file
PAGES = ["pages/train.py", "pages/latents.py", "pages/feature_space.py", "pages/consistency.py", "pages/compare.py",
         "pages/explore.py"]


def open_page(page: str | None, runs_dir, monkeypatch, run: str | None = None, **query) -> AppTest:
    monkeypatch.setenv("MGR_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=120)
    if run:
        at.query_params["run"] = run
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def text(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def chart_title(chart) -> str:
    return json.loads(chart.proto.spec)["layout"].get("title", {}).get("text", "")


# ----------------------------------------------------------------------------- home and data

def test_home_lists_runs_with_state_and_offers_presets(app_runs, held_pid, monkeypatch):
    at = open_page(None, app_runs, monkeypatch)
    table = at.dataframe[0].value
    assert set(table["run"]) == {"t-base", "t-pcr", "t-mgr", "t-mltp", "t-failed", "t-running"}
    states = dict(zip(table["run"], table["state"]))
    assert "finished" in states["t-mgr"] and "failed" in states["t-failed"] and "running" in states["t-running"]
    best = dict(zip(table["run"], table["best val acc"]))
    from mgr.runstore import Run
    assert best["t-mgr"] == max(r["val_acc"] for r in Run(app_runs / "t-mgr").metrics())
    labels = [b.label for b in at.button]
    from mgr.demos import DEMOS
    assert sorted(label for label in labels if label.startswith("Launch 5 seeds")) == \
        sorted(f"Launch 5 seeds × {len(d.arms)} arms" for d in DEMOS.values())
    assert all(d.question in text(at) for d in DEMOS.values())  # each card asks its question
    # each card: a verdict badge and one sentence, the rest in its details; no development dates
    assert not any("Measured 20" in c.value for c in at.caption) and "2026-" not in text(at)
    verdicts = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(verdicts) == len(DEMOS) and all(len(v.split()) <= 30 for v in verdicts), verdicts
    # where a demo was re-run with 10 seeds, its card's details show that measurement under the 5-seed one
    from mgr.demo_records import MEASURED_10_SEEDS, measured
    ten = measured(MEASURED_10_SEEDS)
    assert ten and all(f"{r['seeds']} seeds" in text(at) for r in ten.values())
    assert all(f"positive in {r['holds_in']} of 10 seeds" in text(at) for r in ten.values() if "per_pair" not in r)


def test_home_shows_a_failure_mode_demo_as_factors_on_a_log_axis(tmp_path, monkeypatch):
    """A finished finder-lr-too-high launch (2 seeds × 2 arms of 4 steps on digits): its verdict panel
    gives the geometric mean of the factors lr-1e-1 / lr-1e-3 with its interval, the strip chart draws each
    seed's factor on a log axis around ×1, and the table's last column is each seed's A / B."""
    import math
    import time

    from mgr import demo_queue, demos
    tiny = {"data.dataset": "digits", "data.ratio": 0.1, "data.test_subset": None, "steps": 4, "eval_every": 2,
            "batch_size": 16, "probes_per_class": 2, "probe_real": 40, "device": "cpu"}
    launch_id = demo_queue.launch("finder-lr-too-high", 2, tmp_path, tiny, parallel=2)
    m = demo_queue.read_manifest(tmp_path, launch_id)
    deadline = time.time() + 240
    while not demo_queue.outcome(tmp_path, m).done:
        assert time.time() < deadline, "the demo's runs did not end"
        time.sleep(0.5)
    out = demo_queue.outcome(tmp_path, m)
    at = open_page(None, tmp_path, monkeypatch)
    from pages._text import live_finding
    shown = live_finding(out.demo, out.summary, True, 2)  # a verdict badge and one sentence, the rest in details
    assert shown.sentence.startswith("lr-1e-1 / lr-1e-3 = ×") and "95% interval ×" in shown.sentence
    assert f":{shown.colour}-badge[{out.summary.verdict}] {shown.sentence}" in [m.value for m in at.markdown]
    assert demos.describe(out.demo, out.summary) in shown.details
    assert shown.details in [m.value for e in at.expander if e.label == "details" for m in e.markdown]
    (strip,) = [c for c in charts(at) if "factor on a log axis" in chart_title(c)]
    spec = json.loads(strip.proto.spec)
    assert spec["layout"]["xaxis"]["type"] == "log"
    assert spec["data"][0]["x"] == pytest.approx([math.exp(d) for d in out.summary.diffs])
    table = next(d.value for d in at.dataframe if "lr-1e-1 / lr-1e-3" in d.value.columns)
    assert list(table["lr-1e-1 / lr-1e-3"]) == pytest.approx([a / b for a, b in out.values])


def test_home_without_runs_says_how_to_start_one(tmp_path, monkeypatch):
    at = open_page(None, tmp_path, monkeypatch)
    assert "python -m mgr train" in at.info[0].value


def test_data_page_lists_datasets_and_shipped_generators(tmp_path, monkeypatch):
    at = open_page("pages/data.py", tmp_path, monkeypatch)
    assert "digits" in list(at.dataframe[0].value["dataset"])
    assert any("digits · ratio 0.1" in e.label for e in at.expander)


def test_data_page_without_generators_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path))
    at = open_page("pages/data.py", tmp_path, monkeypatch)
    assert "python -m mgr train-generator" in at.info[0].value


# ----------------------------------------------------------------------------- no runs

@pytest.mark.parametrize("page", PAGES)
def test_each_page_without_runs_says_how_to_start_one(page, tmp_path, monkeypatch):
    at = open_page(page, tmp_path / "nothing-here", monkeypatch)
    assert "python -m mgr train" in text(at) or "Launch" in text(at)


# ----------------------------------------------------------------------------- a finished run

def test_train_page_shows_a_finished_run_with_its_curves(app_runs, monkeypatch):
    at = open_page("pages/train.py", app_runs, monkeypatch, run="t-mgr")
    assert at.selectbox(key="run").value == "t-mgr"
    titles = {chart_title(c) for c in charts(at)}
    assert {"Accuracy", "Training losses", "Finder: latent shift and KL", "Held-out losses"} <= titles
    stop, resume = (next(b for b in at.button if b.label == name) for name in ("Stop", "Resume"))
    assert stop.disabled and resume.disabled  # nothing to stop or resume in a finished run
    assert any("finished" in str(p.proto.text) for p in at.get("progress"))


def test_train_form_refuses_bad_input_next_to_the_field_and_spawns_nothing(tmp_path, monkeypatch):
    at = open_page("pages/train.py", tmp_path, monkeypatch)
    at.number_input(key="form.data.ratio").set_value(0.3)  # no generator is shipped for digits 30%
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("digits_ratio0.3_seed0.pt does not exist" in e and "train-generator" in e for e in errors)
    assert not (tmp_path / ".launches").exists()


def test_latents_page_shows_uniform_and_finder_samples_side_by_side(app_runs, monkeypatch):
    at = open_page("pages/latents.py", app_runs, monkeypatch, run="t-mgr")
    images = at.get("image")
    assert len(images) >= 2  # the uniform and the finder galleries (plus the all-classes mosaics)
    assert "uniform G(z, y)" in text(at) and "finder G(F(z), y)" in text(at)
    assert len(charts(at)) >= 3  # PCA of z and F(z), confidence, latent shift and KL
    assert at.select_slider(key="step").value == 20


def test_latents_page_computes_fid_with_the_extractor_named(app_runs, monkeypatch):
    at = open_page("pages/latents.py", app_runs, monkeypatch, run="t-mgr")
    at.select_slider(key="fid-num").set_value(500)
    next(b for b in at.button if b.label == "Compute FID").click().run()
    assert not at.exception
    assert {m.label for m in at.metric} >= {"FID uniform", "FID finder"}
    assert "SmallCNN trained on full digits" in text(at)


def test_latents_page_reads_the_finders_signal_and_a_noisy_finder_says_so_at_the_top(app_runs, monkeypatch):
    from mgr.analysis.curves import scalar_curves
    from mgr.analysis.finder_view import signal_reading
    from mgr.runstore import Run
    reading = signal_reading(scalar_curves(Run(app_runs / "t-mgr")))
    assert reading.verdict is not None  # the mgr fixture logs hg_cos
    from pages._text import signal_finding
    shown = signal_finding(reading)
    at = open_page("pages/latents.py", app_runs, monkeypatch, run="t-mgr")
    # a verdict badge and one sentence, the rest in a details expander
    assert f":{shown.colour}-badge[{shown.verdict}] {shown.sentence}" in [m.value for m in at.markdown]
    assert shown.details in [m.value for e in at.expander if e.label == "details" for m in e.markdown]
    # a noisy finder says so at the top, in one line, before the samples it qualifies
    top = [m.value for m in at.markdown if m.value.startswith(":orange-badge[noise]")]
    assert (len(top) == 2) == (reading.verdict == "noise"), top
    assert not at.warning and "2026-" not in text(at) and "ReLU finder before" not in text(at)
    titles = [chart_title(c) for c in charts(at)]
    assert any(t.startswith("hg_cos") for t in titles) and any(t.startswith("confidence per class") for t in titles)
    assert {"Does the finder follow a signal?", "What the finder pushes toward", "How the shift grows over training",
            "Uniform vs finder samples"} <= {h.value for h in at.subheader}
    pcr = open_page("pages/latents.py", app_runs, monkeypatch, run="t-pcr")
    assert any("logs no hg_cos" in m.value for m in pcr.markdown)


def test_latents_page_skips_runs_without_a_generator(app_runs, monkeypatch):
    at = open_page("pages/latents.py", app_runs, monkeypatch, run="t-base")
    assert "t-base" not in at.selectbox(key="run").options and at.selectbox(key="run").value != "t-base"


def test_feature_space_page_maps_real_and_synthetic_features(app_runs, monkeypatch):
    at = open_page("pages/feature_space.py", app_runs, monkeypatch, run="t-mgr")
    at.radio(key="projection").set_value("pca").run()
    assert not at.exception
    assert "all 100 real points" in text(at) and "40 uniform + 40 finder samples" in text(at)
    assert "Samples between real clusters" in [h.value for h in at.subheader]
    # the between-clusters count next to its reference, real held-out images, with its reading
    assert {m.label for m in at.metric} >= {"uniform samples between two classes", "finder samples between two classes",
                                           "real held-out test images (reference)"}
    assert "Against real held-out test images" in text(at)

    def map_traces():
        spec = next(json.loads(c.proto.spec) for c in charts(at) if json.loads(c.proto.spec)["layout"].get("dragmode") == "lasso")
        return [(t["name"], t["marker"]) for t in spec["data"]]
    names = [n for n, _ in map_traces()]
    real = [i for i, n in enumerate(names) if n.startswith("real ·")]
    assert len(real) == 10 and names.index("uniform samples") < min(real)  # samples drawn under the clusters
    marker = dict(map_traces())
    assert marker["uniform samples"]["opacity"] < 1 and marker["uniform samples"]["size"] < marker["real · 0"]["size"]
    assert len({marker[n]["color"] for n in names if n.startswith("real ·")}) == 10  # a colour per class
    at.toggle(key="syn-on-top").set_value(True).run()
    names = [n for n, _ in map_traces()]
    assert names.index("finder samples") > max(i for i, n in enumerate(names) if n.startswith("real ·"))
    at.toggle(key="show-uniform").set_value(False).run()
    at.toggle(key="show-finder").set_value(False).run()
    assert all(n.startswith("real ·") for n, _ in map_traces())  # synthetic hidden: only the real clusters
    at.select_slider(key="max-real").set_value(500).run()
    at.toggle(key="iwalk").set_value(True).run()  # the interpolation path through the clusters
    assert not at.exception and "Features by the classifier of the last checkpoint (step 20)" in text(at)


def test_feature_space_says_when_points_were_subsampled(app_runs, tmp_path, monkeypatch):
    from mgr.analysis.feature_map import feature_map
    from mgr.runstore import Run
    fmap = feature_map(Run(app_runs / "t-mgr"), 20, "pca", max_real=30)
    assert fmap.subsampled and len(fmap.real_idx) == 30 and fmap.n_real_total == 100


def test_consistency_page_shows_gaps_and_extreme_samples(app_runs, monkeypatch):
    at = open_page("pages/consistency.py", app_runs, monkeypatch, run="t-pcr")
    assert len(charts(at)) == 2
    assert "largest gaps" in text(at) and "smallest gaps" in text(at)
    assert len(at.get("image")) == 2


def test_compare_page_overlays_runs_and_tabulates_seeds(app_runs, monkeypatch):
    at = open_page("pages/compare.py", app_runs, monkeypatch, runs="t-base,t-mgr,t-mltp")
    assert at.multiselect(key="compare").value == ["t-base", "t-mgr", "t-mltp"]
    assert len(charts(at)) == 2  # val_acc and test_acc, overlaid
    configs, runs = at.dataframe[0].value, at.dataframe[1].value
    assert list(runs["run"]) == ["t-base", "t-mgr", "t-mltp"]
    assert "Mean ± std over the seeds" in text(at) and "Configurations side by side" in [h.value for h in at.subheader]
    names = list(configs["configuration"])
    assert names[0].startswith("base · digits 0.1") and names[1].startswith("mgr · digits 0.1")
    assert names[2].startswith("mgr · mltp-fo + co · digits 0.1")
    assert list(configs["procedure"]) == ["standard", "standard", "mltp (fo)"] and list(configs["co-learner"])[2] == "yes"
    # digits 10% has 10 validation images: the stable last-step accuracy leads, the selected one beside it
    assert list(configs["val images"]) == [10, 10, 10]
    columns = list(configs.columns)
    assert columns.index("test @ last step") < columns.index("test @ best val")
    assert list(runs.columns).index("test @ last step") < list(runs.columns).index("test @ best val")
    assert "with 10 validation images the best step is largely chance" in text(at) and "±0.9" in text(at)


def test_compare_groups_seeds_of_one_configuration_into_one_curve(app_runs, tmp_path, monkeypatch):
    for name in ("t-pcr", "t-mgr"):
        shutil.copytree(app_runs / name, tmp_path / name, ignore=shutil.ignore_patterns("analysis"))
    shutil.copytree(app_runs / "t-pcr", tmp_path / "t-pcr-seed1", ignore=shutil.ignore_patterns("analysis"))
    cfg = json.loads((tmp_path / "t-pcr-seed1" / "config.json").read_text())
    (tmp_path / "t-pcr-seed1" / "config.json").write_text(json.dumps({**cfg, "seed": 1}))
    at = open_page("pages/compare.py", tmp_path, monkeypatch, runs="t-pcr,t-pcr-seed1,t-mgr")
    assert at.toggle(key="cmp-group").value  # on by default when seeds can be grouped
    spec = json.loads(charts(at)[0].proto.spec)
    names = [t["name"] for t in spec["data"] if t.get("showlegend", True)]
    assert any(n.startswith("pcr · digits 0.1") and n.endswith("(n=2)") for n in names)
    assert any(n.startswith("mgr · digits 0.1") and n.endswith("(n=1)") for n in names)
    assert any(t.get("fill") == "toself" for t in spec["data"])  # the ± std band of the two pcr seeds
    configs = at.dataframe[0].value
    assert sorted(configs["seeds"]) == [1, 2]


# ----------------------------------------------------------------------------- running, failed

@pytest.mark.parametrize("page", PAGES)
def test_each_page_shows_a_running_run(page, app_runs, held_pid, monkeypatch):
    at = open_page(page, app_runs, monkeypatch, run="t-running", runs="t-running")
    if page == "pages/train.py":
        assert any("running" in str(p.proto.text) for p in at.get("progress"))
        assert not next(b for b in at.button if b.label == "Stop").disabled
    elif page != "pages/compare.py":
        assert "Running: step" in text(at)


@pytest.mark.parametrize("page", PAGES)
def test_each_page_shows_why_a_run_failed(page, app_runs, monkeypatch):
    at = open_page(page, app_runs, monkeypatch, run="t-failed", runs="t-failed")
    if page == "pages/compare.py":
        assert "failed" in at.dataframe[0].value["state"][0]
    else:
        assert "non-finite" in text(at)


# ----------------------------------------------------------------------------- corrupt, deleted

@pytest.mark.parametrize("page", PAGES)
def test_each_page_survives_a_corrupt_run(page, runs_copy, monkeypatch):
    run = runs_copy / "t-mgr"
    at = open_page(page, runs_copy, monkeypatch, run="t-mgr", runs="t-mgr")
    (run / "probes" / "step_0000020.npz").write_bytes(b"not a zip")  # e.g. a disk that filled up
    at.run()
    assert not at.exception
    if page in ("pages/latents.py", "pages/feature_space.py", "pages/consistency.py"):
        assert "has missing or corrupt files" in text(at)
    (run / "metrics.jsonl").write_text('{"step": 10, "val_acc": 0.5}\n{"broken')
    (run / "config.json").write_text("{not json")
    at.run()
    assert not at.exception
    if page != "pages/compare.py":  # Compare lists only readable runs
        assert "cannot be read" in text(at)


@pytest.mark.parametrize("page", PAGES)
def test_each_page_survives_a_run_deleted_while_open(page, runs_copy, monkeypatch):
    at = open_page(page, runs_copy, monkeypatch, run="t-mgr", runs="t-mgr")
    shutil.rmtree(runs_copy / "t-mgr")
    at.run()
    assert not at.exception
    assert "t-mgr" not in str(at.selectbox[0].options if at.selectbox else "") or "deleted" in text(at)


# ----------------------------------------------------------------------------- MLTP and the co-learner

def test_train_page_shows_mltp_and_co_learner_curves(app_runs, monkeypatch):
    at = open_page("pages/train.py", app_runs, monkeypatch, run="t-mltp")
    by_title = {chart_title(c): json.loads(c.proto.spec) for c in charts(at)}
    alpha = by_title["MLTP: step size α per layer group"]
    names = {t["name"] for t in alpha["data"]}
    assert {"alpha_conv_mean", "alpha_fc_mean"} <= names and any(t.get("fill") == "toself" for t in alpha["data"])
    assert len(alpha["data"]) == len({t["legendgroup"] for t in alpha["data"]}) * 2  # no EMA copy: α is never smoothed
    cos = {t["name"] for t in by_title["Gradient agreement (cosine)"]["data"]}
    assert {"mltp_grad_cos", "co_grad_cos"} <= cos
    assert {"co_ce", "co_acc"} <= {t["name"] for t in by_title["Co-learner: CE and accuracy on its batch"]["data"]}
    assert "Finder: latent shift and KL" in by_title


def test_train_page_eta_of_a_running_mltp_run_counts_both_batches(tmp_path, monkeypatch, spawn):
    """A real MLTP trainer: img_per_s counts the two batches a step draws, so the ETA is steps left ×
    2 × batch / img_per_s. The page used the batch size alone and showed half the time left."""
    import os
    import signal
    import sys
    import time

    from mgr.runstore import Run
    from pages._ui import fmt_seconds
    proc = spawn([sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--method", "base",
                  "--procedure", "mltp", "--steps", "100000", "--eval-every", "5", "--log-every", "2",
                  "--batch-size", "16", "--probes-per-class", "2", "--probe-real", "40", "--device", "cpu",
                  "--runs-dir", str(tmp_path), "--run-id", "mltp-live", "--quiet"])
    run, deadline = Run(tmp_path / "mltp-live"), time.time() + 300
    while not (run.path / "status.json").exists() or not run.status().get("img_per_s"):
        assert proc.poll() is None and time.time() < deadline, "the MLTP trainer did not get going"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGSTOP)  # hold its status still while the page reads it
    try:
        status = run.status()
        at = open_page("pages/train.py", tmp_path, monkeypatch, run="mltp-live")
        eta = next(m.value for m in at.metric if m.label == "ETA")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    left = status["total_steps"] - status["step"]
    assert eta == fmt_seconds(left * 2 * 16 / status["img_per_s"]) != fmt_seconds(left * 16 / status["img_per_s"])


def test_train_page_hides_mltp_panels_for_a_standard_run_and_never_smooths_lr(app_runs, monkeypatch):
    at = open_page("pages/train.py", app_runs, monkeypatch, run="t-pcr")
    titles = {chart_title(c) for c in charts(at)}
    assert not any(t.startswith(("MLTP", "Co-learner", "Gradient")) for t in titles)
    lr = next(json.loads(c.proto.spec) for c in charts(at) if chart_title(c).startswith("lr"))
    assert [t["name"] for t in lr["data"]] == ["lr"]  # one raw trace, no EMA over the schedule
    losses = next(json.loads(c.proto.spec) for c in charts(at) if chart_title(c) == "Training losses")
    assert any(t["name"].endswith("(raw)") for t in losses["data"])  # the losses are smoothed (raw faint behind)


def test_train_form_shows_mltp_and_co_learner_fields_only_when_they_apply(tmp_path, monkeypatch):
    at = open_page("pages/train.py", tmp_path, monkeypatch)
    keys = lambda: {w.key for kind in ("selectbox", "toggle", "number_input") for w in at.get(kind)}  # noqa: E731
    assert "form.mltp_variant" not in keys() and "form.co_learner_arch" not in keys() and "form.co_learner" in keys()
    at.selectbox(key="form.procedure").set_value("mltp").run()
    assert "form.mltp_variant" in keys()
    at.toggle(key="form.co_learner").set_value(True).run()
    assert "form.co_learner_arch" in keys() and not at.exception
    at.selectbox(key="form.method").set_value("base").run()
    assert "form.co_learner" in keys()  # base under MLTP has a lookahead
    at.selectbox(key="form.procedure").set_value("standard").run()
    assert "form.co_learner" not in keys() and "form.mltp_variant" not in keys()


def test_skipped_files_of_an_image_folder_show_in_the_form_and_on_the_runs_pages(tmp_path, monkeypatch):
    """The form reads a typed folder with the trainer's scanner and says what will be skipped; a run made from
    it says on its pages what was skipped, each file with its reason on demand."""
    from mgr.data import DataConfig
    from mgr.trainer import TrainConfig, train
    from tests.test_imagefolder import EXPECTED_SKIPS, messy
    root = messy(tmp_path / "photos")
    at = open_page("pages/train.py", tmp_path / "runs", monkeypatch)
    at.selectbox(key="form.data.dataset").set_value("imagefolder").run()
    at.text_input(key="form.data.folder").set_value(str(root)).run()
    assert not at.exception
    assert any("16 files in this folder will be skipped" in w.value for w in at.warning), [w.value for w in at.warning]
    listed = at.dataframe[0].value
    assert set(listed["file"]) == set(EXPECTED_SKIPS) and "hidden" in set(listed["reason"])

    train(TrainConfig(data=DataConfig(f"imagefolder:{root}", resolution=16), method="base", steps=2, eval_every=2,
                      batch_size=4, probes_per_class=1, probe_real=8, device="cpu"), tmp_path / "runs", "messy",
          quiet=True)
    for page in ("pages/train.py", "pages/feature_space.py"):
        at = open_page(page, tmp_path / "runs", monkeypatch, run="messy")
        assert any("16 files were skipped when this run read its data" in w.value for w in at.warning), page
        assert any(set(d.value["file"]) == set(EXPECTED_SKIPS) for d in at.dataframe if "file" in d.value), page


# ----------------------------------------------------------------------------- bad input (issue 7)

def column_with(at: AppTest, key: str):
    for col in at.columns:
        for kind in ("number_input", "text_input", "selectbox", "toggle"):
            if any(w.key == key for w in col.get(kind)):
                return col
    raise AssertionError(f"no column holds {key}")


BAD = [  # (widget kind, key, value, a prerequisite (kind, key, value) or None, the message)
    ("text_input", "form.lr", "-1", None, "lr=-1.0 is not allowed; it must be a number > 0"),
    ("text_input", "form.lr", "fast", None, "lr='fast' is not allowed"),
    ("number_input", "form.steps", 0, None, "steps=0 is not allowed; it must be a positive integer"),
    ("number_input", "form.data.ratio", 1.5, None, "ratio=1.5 is outside (0, 1]"),
    ("number_input", "form.lam", -0.5, None, "lam=-0.5 is not allowed; it must be a number >= 0"),
    ("number_input", "form.lam_kl", -1.0, None, "lam_kl=-1.0 is not allowed"),
    ("number_input", "form.batch_size", -4, None, "batch_size=-4 is not allowed"),
    ("number_input", "form.data.data_seed", -1, None, "data_seed=-1 must be >= 0"),
    ("text_input", "form.run_id", "../../etc", None, "run id '../../etc' is not allowed"),
    ("text_input", "form.run_id", "a/b", None, "no path separators"),
    ("text_input", "form.data.folder", "/no/such/cifar", ("selectbox", "form.data.dataset", "imagefolder"),
     "image folder '/no/such/cifar' does not exist"),
    ("number_input", "form.mltp_eta", -2.0, ("selectbox", "form.procedure", "mltp"), "mltp_eta=-2.0 is not allowed"),
    ("number_input", "form.co_learner_gamma", -1.0, ("toggle", "form.co_learner", True), "co_learner_gamma=-1.0"),
]


@pytest.mark.parametrize("kind, key, value, first, message", BAD, ids=[f"{b[1]}={b[2]}" for b in BAD])
def test_every_bad_form_value_is_shown_next_to_its_field_and_the_app_keeps_running(kind, key, value, first, message,
                                                                                   tmp_path, monkeypatch):
    at = open_page("pages/train.py", tmp_path, monkeypatch)
    if first:
        getattr(at, first[0])(key=first[1]).set_value(first[2]).run()
    getattr(at, kind)(key=key).set_value(value).run()
    at.button(key="launch").click().run()
    assert not at.exception
    col = column_with(at, key)
    assert any(message in e.value for e in col.error), [e.value for e in at.error]
    assert not (tmp_path / ".launches").exists()  # nothing was spawned
    assert at.title[0].value.endswith("Train")  # the page is still there, form and all
    assert getattr(at, kind)(key=key).value == value  # with the value to correct


# ----------------------------------------------------------------------------- exposure (issue 7)

@pytest.mark.parametrize("page", [None, *PAGES])
def test_run_ids_from_the_url_never_name_paths(page, runs_copy, tmp_path, monkeypatch):
    """?run= and ?runs= pick only among the listed runs; '../..' and absolute paths are ignored."""
    outside = tmp_path / "outside"
    shutil.copytree(runs_copy / "t-mgr", outside / "secret-run")
    at = open_page(page, runs_copy, monkeypatch, run="../outside/secret-run", runs=f"../../etc,{outside / 'secret-run'},t-mgr")
    assert not at.exception
    for sb in at.selectbox:
        if sb.key == "run":
            assert sb.value in {"t-base", "t-pcr", "t-mgr"}
    if page == "pages/compare.py":
        assert at.multiselect(key="compare").value == ["t-mgr"]
    assert "secret-run" not in str([d.value for d in at.dataframe])


def test_a_run_linked_from_outside_the_runs_folder_is_listed_but_never_read(runs_copy, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    shutil.copytree(runs_copy / "t-mgr", outside)
    (runs_copy / "z-link").symlink_to(outside, target_is_directory=True)
    from mgr.analysis.runs import runs_overview
    link = next(s for s in runs_overview(runs_copy) if s.id == "z-link")
    assert link.state == "unknown" and "outside the runs directory" in link.error and not link.config
    for page in PAGES:
        at = open_page(page, runs_copy, monkeypatch, run="z-link", runs="z-link")
        assert not at.exception
        if page != "pages/compare.py":
            assert "outside the runs directory" in text(at)


def test_a_crafted_launch_record_names_no_path(runs_copy, monkeypatch):
    from mgr import launch
    from mgr.runstore import RunError
    d = runs_copy / launch.LAUNCHES
    d.mkdir()
    (d / "evil.json").write_text(json.dumps({"run_id": "../../etc", "pid": 1, "command": [], "started": 0}))
    (d / "odd.json").write_text(json.dumps({"run_id": ["x"], "pid": "1"}))
    at = open_page("pages/train.py", runs_copy, monkeypatch)
    assert not at.exception and "etc" not in text(at)
    assert launch.Launcher(runs_copy).pending() == []
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(RunError):
            launch.log_tail(runs_copy, bad)
        with pytest.raises(RunError):
            launch.Launcher(runs_copy).dismiss(bad)


# ----------------------------------------------------------------------------- killed

def test_each_page_shows_a_killed_run_as_resumable(runs_copy, monkeypatch):
    """A status that says running with no trainer holding the run's lock (its trainer was SIGKILLed:
    tests/test_launch.py kills a real one) reads "killed (resume?)" with a way to resume it."""
    from mgr.runstore import Run
    run = Run(runs_copy / "t-mgr")
    run.write_status(state="running", pid=2 ** 22 + 7)
    at = open_page(None, runs_copy, monkeypatch)
    states = dict(zip(at.dataframe[0].value["run"], at.dataframe[0].value["state"]))
    assert "killed (resume?)" in states["t-mgr"] and any(b.key == "resume-t-mgr" for b in at.button)
    at = open_page("pages/train.py", runs_copy, monkeypatch, run="t-mgr")
    assert any("killed (resume?)" in str(p.proto.text) for p in at.get("progress"))
    assert not next(b for b in at.button if b.label == "Resume").disabled
    assert next(b for b in at.button if b.label == "Stop").disabled
    at = open_page("pages/latents.py", runs_copy, monkeypatch, run="t-mgr")
    assert "Killed (resume?)" in text(at)


# ----------------------------------------------------------------------------- 200 runs (issue 7)

@pytest.fixture(scope="module")
def many(app_runs, tmp_path_factory):
    """200 real run directories: hard-linked copies of the fixture's finished runs under new ids
    (bench/app_speed.py's many_runs, which the speed measurement uses too)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("app_speed", Path(APP).parent / "bench" / "app_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = tmp_path_factory.mktemp("many-runs")
    ids = mod.many_runs([app_runs / n for n in ("t-base", "t-pcr", "t-mgr", "t-mltp")], d, 200)
    return d, ids


@pytest.mark.parametrize("page", [None, *PAGES])
def test_pages_stay_fast_with_200_runs(page, many, monkeypatch):
    """Loose bounds (AppTest on a shared 2-core machine); the real numbers: bench/app_speed.py --runs 200."""
    import time
    d, ids = many
    t = time.time()
    at = open_page(page, d, monkeypatch, run=ids[2], runs=",".join(ids[:8]))  # a mgr run; Compare: 8 runs
    first = time.time() - t
    t = time.time()
    at.run()
    warm = time.time() - t
    assert not at.exception
    assert first < 30 and warm < 10, (first, warm)
    if page is None:
        assert len(at.dataframe[0].value) == 200
    elif page != "pages/compare.py":
        need_generator = page in ("pages/latents.py", "pages/consistency.py")  # the 50 base runs have no samples
        assert len(at.selectbox(key="run").options) == (150 if need_generator else 200)
    else:
        assert sorted(at.dataframe[0].value["seeds"]) == [2, 2, 2, 2]  # 4 configurations, 2 seeds each


def test_two_sessions_watching_a_running_trainer_both_see_it_advance(app_runs, held_pid, monkeypatch):
    """Two browser tabs on a run whose trainer is really running: both show the same progress while it
    stands still, both see its step and curves advance while it trains, never going backwards, and
    neither session's reruns disturb it (the app only reads the run directory)."""
    import base64
    import os
    import re
    import signal
    import time

    import numpy as np

    from mgr.runstore import Run
    run = Run(app_runs / "t-running")
    pid = held_pid  # the fixture's trainer, paused (SIGSTOP) until now
    assert run.status()["pid"] == pid

    def shown(at):
        at.run()
        assert not at.exception
        step = int(re.search(r"step (\d+)/", next(str(p.proto.text) for p in at.get("progress"))).group(1))
        accuracy = next(json.loads(c.proto.spec) for c in charts(at) if chart_title(c) == "Accuracy")
        x = accuracy["data"][0]["x"]  # plotly sends numpy arrays as {"dtype", "bdata": base64}
        return step, len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize if isinstance(x, dict) else len(x)

    sessions = [open_page("pages/train.py", app_runs, monkeypatch, run="t-running") for _ in range(2)]
    before = [shown(at) for at in sessions]
    assert before[0] == before[1]  # a paused trainer: the same step and curve points in both tabs
    seen = [[b] for b in before]
    os.kill(pid, signal.SIGCONT)
    try:
        deadline = time.time() + 180
        while not all(s[-1][0] > before[0][0] and s[-1][1] > before[0][1] for s in seen):  # a new evaluation
            assert time.time() < deadline, f"the trainer did not advance within 180 s: {seen}"
            time.sleep(0.5)
            for at, s in zip(sessions, seen):
                s.append(shown(at))
    finally:
        os.kill(pid, signal.SIGSTOP)
    for s in seen:  # each tab saw progress only forwards
        assert [x[0] for x in s] == sorted(x[0] for x in s) and [x[1] for x in s] == sorted(x[1] for x in s)
    assert run.status()["state"] == "running" and run.status()["step"] >= max(s[-1][0] for s in seen)
