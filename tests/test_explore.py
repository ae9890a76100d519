"""The Explore page (AppTest) and its computation (mgr.analysis.explore) on real tiny runs made by
the trainer: the readouts at a probe latent agree with what the trainer wrote in its probe, at every
evaluation step (weights/step_N.pt), a slider moves them, and a base run, a step without weights and
a latent far outside the prior each get a note."""
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from mgr.analysis import explore as ex
from mgr.augment import Augment
from mgr.data import DataConfig
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 20-step digits mgr run with four evaluations, each keeping its weights (keep_weights auto, a
    small SmallCNN); t-old, the same run as one made before weights of every evaluation were kept (no
    weights/, no keep_weights in its config: only last.pt and best.pt, as keep_weights last leaves it);
    and a base run."""
    d = tmp_path_factory.mktemp("explore-runs")
    common = dict(data=DataConfig("digits", ratio=0.1), steps=20, eval_every=5, batch_size=16, probes_per_class=3,
                  probe_real=60, device="cpu", width=8)
    train(TrainConfig(method="mgr", **common), d, "t-mgr", quiet=True)
    train(TrainConfig(method="base", **{**common, "steps": 5}), d, "t-base", quiet=True)
    shutil.copytree(d / "t-mgr", d / "t-old")
    shutil.rmtree(d / "t-old" / "weights")
    cfg = json.loads((d / "t-old" / "config.json").read_text())
    del cfg["keep_weights"]
    (d / "t-old" / "config.json").write_text(json.dumps(cfg))
    return d


def open_explore(runs_dir, monkeypatch, run: str) -> AppTest:
    monkeypatch.setenv("MGR_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = run
    at.run()
    at.switch_page("pages/explore.py").run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def slider(at: AppTest, name: str):
    """The slider of one direction (its key carries the start, so that a new start resets it)."""
    (s,) = [s for s in at.slider if s.key and s.key.startswith(f"explore-{name}-")]
    return s


def image_bytes(at: AppTest) -> list:
    return [i.proto.imgs[0].url for i in at.get("image")]


# ----------------------------------------------------------------------------- the computation

def test_readout_at_a_probe_latent_is_what_the_trainer_wrote_in_its_probe(runs):
    run = Run(runs / "t-mgr")
    step = max(ex.checkpoint_steps(run))
    m = ex.step_models(run, step)
    static, probe = run.load_probe("static"), run.load_probe(step)
    z, y = static["probe_z"], static["probe_y"]
    for i in (0, len(y) - 1):
        r = ex.readout(m, z[i], ex.label_mix(len(m.classes), int(y[i]), int(y[i]), 0.0))
        assert np.array_equal(r.image, probe["uniform_images"][i])  # G(z, y)
        assert np.array_equal(r.finder_image, probe["finder_images"][i])  # G(F(z), y)
        np.testing.assert_allclose(r.probs, probe["uniform_probs"][i], atol=1e-5)
        np.testing.assert_allclose(r.finder_probs, probe["finder_probs"][i], atol=1e-5)
        assert r.shift == pytest.approx(np.linalg.norm(probe["finder_z"][i] - z[i]), rel=1e-4)
        assert r.shift > 0  # a trained finder moved the latent
    # the gap is the probes' ‖g(T(x)) − g(x)‖²: under the probes' own draw of T it gives their numbers
    draws = ex.fixed_draws(Augment(m.policy), len(y), m.G.channels, m.G.resolution)
    with torch.no_grad():
        x = m.G(torch.as_tensor(z), torch.as_tensor(y))
    gaps, _ = ex.pcr_gaps(m.model, x, m.policy, draws)
    np.testing.assert_allclose(gaps.numpy(), probe["uniform_gap"], rtol=1e-4, atol=1e-7)


def test_directions_are_unit_vectors_and_moving_along_one_moves_z_by_its_value(runs):
    run = Run(runs / "t-mgr")
    step = max(ex.checkpoint_steps(run))
    m = ex.step_models(run, step)
    static, probe = run.load_probe("static"), run.load_probe(step)
    z0 = static["probe_z"][0].astype(np.float64)
    dirs, missing = ex.directions(m, z0, static["probe_z"], probe["finder_z"], static["probe_y"], 0, 1)
    keys = [d.key for d in dirs]
    assert keys[:4] == ["finder", "pc1", "pc2", "pc3"] and "classdir" in keys and not missing
    for d in dirs:
        assert np.linalg.norm(d.unit) == pytest.approx(1.0)
    shift = ex.finder_shift(m.finder, z0)
    assert np.allclose(dirs[0].unit, shift / np.linalg.norm(shift))
    z = ex.position(z0, dirs, {"rand1": 2.5})
    assert np.linalg.norm(z - z0) == pytest.approx(2.5)
    assert ex.prior_distance(z0 * 3)["far"] and not ex.prior_distance(z0)["far"]


def test_every_evaluation_keeps_weights_that_reproduce_its_probe(runs):
    """weights/step_N.pt holds the classifier (BatchNorm statistics included) and the finder of step N:
    with them, the finder's F(z), the classifier's probabilities on G(z, y) and its features of the
    real probe images are what the trainer wrote in that step's probe."""
    run = Run(runs / "t-mgr")
    steps = run.probe_steps()
    assert steps == [5, 10, 15, 20] and ex.checkpoint_steps(run) == {t: f"weights/step_{t:07d}.pt" for t in steps}
    static = run.load_probe("static")
    z, y = torch.as_tensor(static["probe_z"]), torch.as_tensor(static["probe_y"])
    real = torch.from_numpy(static["real_images"]).float().div(127.5).sub(1)
    for t in steps:
        m, p = ex.step_models(run, t), run.load_probe(t)
        assert m.source == f"weights/step_{t:07d}.pt" and m.finder is not None
        with torch.no_grad():
            fz = m.finder(z)
            probs = torch.softmax(m.model.head(m.model.features(m.G(fz, y))), 1)
            feats = m.model.features(real)  # eval mode: the step's BatchNorm running statistics
        np.testing.assert_allclose(fz.numpy(), p["finder_z"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(probs.numpy(), p["finder_probs"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(feats.numpy(), p["real_features"], rtol=1e-5, atol=1e-6)
    first, last = run.load_probe(steps[0]), run.load_probe(steps[-1])  # the steps differ: not one model reused
    assert np.abs(first["finder_probs"] - last["finder_probs"]).max() > 1e-3
    assert np.abs(first["finder_z"] - last["finder_z"]).max() > 1e-4


def test_step_without_weights_and_run_without_generator_raise_clear_errors(runs):
    run = Run(runs / "t-old")
    bare = [t for t in run.probe_steps() if t not in ex.checkpoint_steps(run)]
    assert bare  # four evaluations, at most two kept (last.pt, best.pt)
    with pytest.raises(ex.NoCheckpoint, match=f"No weights at step {bare[0]}"):
        ex.step_models(run, bare[0])
    with pytest.raises(ValueError, match="uses no generator"):
        ex.step_models(Run(runs / "t-base"), 5)


# ----------------------------------------------------------------------------- the page

def test_page_renders_a_probe_with_the_trainers_readouts(runs, monkeypatch):
    at = open_explore(runs, monkeypatch, "t-mgr")
    run = Run(runs / "t-mgr")
    step = max(ex.checkpoint_steps(run))
    p, static = run.load_probe(step), run.load_probe("static")
    names = [str(c) for c in static["classes"]]
    first = int(np.flatnonzero(static["probe_y"] == 0)[0])  # the default start: class 0's first probe
    got = metrics(at)
    probs = p["uniform_probs"][first]
    assert got["predicted"] == names[probs.argmax()]
    assert next(m for m in at.metric if m.label == "predicted").delta == f"p = {probs.max():.2f}"
    assert got["‖z‖"] == f"{np.linalg.norm(static['probe_z'][first]):.2f}"
    assert got["finder shift ‖F(z) − z‖"] == f"{np.linalg.norm(p['finder_z'][first] - static['probe_z'][first]):.3f}"
    assert [i.proto.imgs[0].caption for i in at.get("image")][:3] == [
        "G(z, y)", "T(G(z, y)), draw 1 of the gap's", "what the finder does here: G(F(z), y)"]
    assert not at.warning  # a probe latent is a draw of the prior
    assert any("placed, not fitted" in c.value for c in at.caption)


def test_a_slider_move_changes_image_and_readouts(runs, monkeypatch):
    at = open_explore(runs, monkeypatch, "t-mgr")
    before, images = metrics(at), image_bytes(at)
    slider(at, "rand1").set_value(4.0).run()
    assert not at.exception
    after = metrics(at)
    assert after["‖z‖"] != before["‖z‖"] and after["PCR gap"] != before["PCR gap"]
    assert image_bytes(at)[0] != images[0]
    # the label mix: same z, G's class embedding moves to the second class
    at.slider(key=next(s.key for s in at.slider if s.key.startswith("explore-mix-"))).set_value(1.0).run()
    other = at.selectbox(key="explore-other").value
    names = at.selectbox(key="explore-class").options
    assert f"Here: y = {names[other]}" in [h.value for h in at.subheader]
    assert metrics(at)["‖z‖"] == after["‖z‖"]


def test_far_latent_gets_a_warning_not_an_exception(runs, monkeypatch):
    at = open_explore(runs, monkeypatch, "t-mgr")
    for name in ("rand1", "rand2", "rand3"):
        slider(at, name).set_value(12.0)
    at.run()
    assert not at.exception
    (w,) = at.warning
    assert "far outside the prior" in w.value and "extrapolation" in w.value
    assert metrics(at)["χ percentile of ‖z‖"] == "100.0%"


def test_base_run_and_step_without_weights_get_a_note(runs, monkeypatch):
    at = open_explore(runs, monkeypatch, "t-base")
    assert any("trains without a generator" in i.value for i in at.info) and not at.metric
    at = open_explore(runs, monkeypatch, "t-old")
    run = Run(runs / "t-old")
    bare = [t for t in run.probe_steps() if t not in ex.checkpoint_steps(run)][0]
    at.select_slider(key="explore-step").set_value(bare).run()
    assert not at.exception
    assert any(f"No weights at step {bare}" in i.value for i in at.info) and not at.metric


def test_an_earlier_step_shows_its_own_finder_readouts(runs, monkeypatch):
    """With weights at every evaluation, the first step has the finder readouts (not a note), and they are
    that step's: the shift and the finder's prediction of its probe, not the last step's."""
    at = open_explore(runs, monkeypatch, "t-mgr")
    run = Run(runs / "t-mgr")
    first = run.probe_steps()[0]
    at.select_slider(key="explore-step").set_value(first).run()
    assert not at.exception and not any("No weights" in i.value for i in at.info)
    static, p = run.load_probe("static"), run.load_probe(first)
    i = int(np.flatnonzero(static["probe_y"] == 0)[0])  # the default start: class 0's first probe
    got = metrics(at)
    assert got["finder shift ‖F(z) − z‖"] == f"{np.linalg.norm(p['finder_z'][i] - static['probe_z'][i]):.3f}"
    assert "what the finder does here: G(F(z), y)" in [im.proto.imgs[0].caption for im in at.get("image")]
    assert any(f"weights/step_{first:07d}.pt" in c.value and "classifier and finder" in c.value for c in at.caption)
    names = [str(c) for c in static["classes"]]
    probs = p["finder_probs"][i]
    finder_help = next(m for m in at.metric if m.label == "at F(z): PCR gap").proto.help
    assert f"predicts {names[probs.argmax()]} ({probs.max():.2f})" in finder_help


def test_record_a_walk_and_download_it_as_csv(runs, monkeypatch):
    at = open_explore(runs, monkeypatch, "t-mgr")
    record = next(b for b in at.button if b.label == "record this position")
    record.click().run()
    slider(at, "pc1").set_value(3.0).run()
    shown = metrics(at)
    next(b for b in at.button if b.label == "record this position").click().run()
    assert not at.exception
    strip = [i for i in at.get("image") if len(i.proto.imgs) == 2]
    assert strip and [im.caption for im in strip[0].proto.imgs][1].startswith("2. ")
    step = max(ex.checkpoint_steps(Run(runs / "t-mgr")))
    walk = at.session_state[f"explore-walk-t-mgr-{step}"]
    rows = [w["row"] for w in walk]
    text = ex.path_csv(rows)
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["position"] for r in table] == ["1", "2"]
    assert f"{float(table[1]['pcr_gap']):.4g}" == shown["PCR gap"] and table[1]["coef_pc1"] == "3.0"
    z = np.array([float(table[1][f"z_{i}"]) for i in range(64)])
    z0 = np.array([float(table[0][f"z_{i}"]) for i in range(64)])
    assert np.linalg.norm(z - z0) == pytest.approx(3.0, rel=1e-6)  # the CSV holds z: the walk can be replayed
    # the download offers exactly these bytes (Streamlit names a media file by the hash of its content)
    from streamlit.runtime.memory_media_file_storage import _calculate_file_id
    buttons = {b.proto.label: b.proto for b in at.get("download_button")}
    assert set(buttons) == {"walk.png", "walk.csv"}
    assert _calculate_file_id(text.encode(), "text/csv", f"walk-t-mgr-step{step}.csv") in buttons["walk.csv"].url
    next(b for b in at.button if b.label == "clear the walk").click().run()
    assert at.session_state[f"explore-walk-t-mgr-{step}"] == [] and "walk.csv" not in [
        b.proto.label for b in at.get("download_button")]


def test_start_from_a_sample_picked_on_the_map(runs, monkeypatch):
    """A click on a finder sample (◇) of the map starts from its F(z) and its class (the page keeps the
    pick in session state, so a later redraw of the map, which clears the selection, does not lose it)."""
    at = open_explore(runs, monkeypatch, "t-mgr")
    run = Run(runs / "t-mgr")
    static, p = run.load_probe("static"), run.load_probe(max(ex.checkpoint_steps(run)))
    i = len(static["probe_y"]) - 1  # the last class's last probe
    at.session_state["explore-point"] = (2, i)
    at.radio(key="explore-start").set_value("map point").run()
    assert not at.exception
    assert at.selectbox(key="explore-class-fixed").value == int(static["probe_y"][i])
    assert metrics(at)["‖z‖"] == f"{np.linalg.norm(p['finder_z'][i]):.2f}"
