"""The Data page's views of a shipped generator (AppTest through app.py): the oracle's label accuracy per class,
its confusion matrix and the most confidently off-class samples, and the data-copying test against the
generator's own training images, each number the one the analysis functions give when called directly; a
generator file that cannot be read, or whose training split cannot be rebuilt, is a message naming it. Also
mgr/analysis/generators.py, which rebuilds a generator's training split."""
import base64
import json
import shutil

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from mgr.analysis.generators import copying_test, split_config, training_split
from mgr.analysis.memorization import data_copying
from mgr.analysis.oracle import sample_and_judge
from mgr.data import DataConfig, DataError
from mgr.gan import load_generator, save_generator
from mgr.paths import REPO

APP = str(REPO / "app.py")
SHIPPED = REPO / "checkpoints" / "generators"
W16 = SHIPPED / "fashion-mnist_ratio0.01_seed0_w16.pt"  # the page's default
DIGITS = SHIPPED / "digits_ratio0.1_seed0.pt"


def open_data_page(monkeypatch, tmp_path, checkpoints=None) -> AppTest:
    monkeypatch.setenv("MGR_RUNS_DIR", str(tmp_path / "runs"))
    if checkpoints is not None:
        monkeypatch.setenv("MGR_CHECKPOINTS", str(checkpoints))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/data.py").run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, title_part: str) -> dict:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (spec,) = [s for s in specs if title_part in s["layout"].get("title", {}).get("text", "")]
    return spec


def values(v) -> np.ndarray:
    """A figure's data array: plotly sends numpy arrays as {"dtype", "bdata": base64, "shape"}."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v)


def captions(at: AppTest) -> list[list[str]]:
    """The captions of each st.image call, in page order."""
    return [e.captions for e in at.get("image")]


def expected(path, psi: float):
    """What the page computes, computed here directly: 50 samples per class from seed 0, the oracle's reading,
    and the copying test against the generator's training split with the first 500 test images."""
    G, meta = load_generator(path)
    images, reading = sample_and_judge(G, meta["dataset"], per_class=50, seed=0, psi=psi)
    return meta, images, reading, copying_test(images, training_split(path, meta), 500)


def test_the_data_page_reads_the_demos_generator_with_the_oracle_and_the_copying_test(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    at = open_data_page(monkeypatch, tmp_path)
    meta, images, reading, copying = expected(W16, 1.0)
    classes = meta["classes"]
    assert at.selectbox(key="data-generator").value == W16.name
    text = "\n".join(m.value for m in at.markdown)
    assert "judged by the oracle" in " ".join(c.value for c in at.caption).lower()

    # label accuracy: per class, the confusion matrix (rows asked for, columns judged as), and one finding
    bars = chart(at, "label accuracy per class, judged by the oracle")
    assert bars["data"][0]["x"] == classes and np.allclose(values(bars["data"][0]["y"]), reading.per_class())
    heat = chart(at, "asked for × judged as, by the oracle")["data"][0]
    assert heat["x"] == classes and heat["y"] == classes
    assert np.array_equal(values(heat["text"]), reading.confusion())
    (finding,) = [m for m in text.splitlines() if "-badge[" in m and "oracle judges" in m]
    assert f"{reading.label_accuracy:.1%} of 500 samples" in finding and f"{reading.oracle_test_acc:.1%}" in finding
    assert finding.startswith(":orange-badge[often off class]")  # 67% against the oracle's 91% on real images
    worst = int(np.nanargmin(reading.per_class()))
    assert f"the worst class, {classes[worst]}, at {reading.per_class()[worst]:.0%}" in finding

    # the most confidently off-class samples, each captioned with what was asked and what the oracle saw
    off = reading.off_class(limit=10)
    gallery = captions(at)[0]
    assert gallery == [f"asked {classes[reading.asked[i]]} → judged {classes[reading.judged[i]]} "
                       f"({reading.confidence[i]:.2f})" for i in off]
    assert f"({len(reading.off_class())} of 500 samples)" in text

    # copying: both distance samples drawn, the z and medians in the finding, the closest pairs with their distance
    hist = chart(at, "500 generated and 500 held-out images against its 540 training images")["data"]
    assert np.allclose(values(hist[0]["x"]), copying.generated_to_train)
    assert np.allclose(values(hist[1]["x"]), copying.heldout_to_train)
    (verdict,) = [m for m in text.splitlines() if "-badge[" in m and "training images" in m]
    assert f"z = {copying.z:+.1f}" in verdict
    assert f"median distance {np.median(copying.generated_to_train):.2f} against " \
           f"{np.median(copying.heldout_to_train):.2f}" in verdict
    assert copying.z > 3 and verdict.startswith(":orange-badge[off the data]")  # farther than new data: no copies
    assert captions(at)[1] == [f"{classes[reading.asked[g]]} · {d:.2f}" for g, _, d in copying.closest_pairs(8)]

    # a lower latent scale: fewer, more typical shapes; the page reads the new samples
    at.select_slider(key="data-psi").set_value(0.5).run()
    assert not at.exception, at.exception
    _, _, low, low_copying = expected(W16, 0.5)
    text = "\n".join(m.value for m in at.markdown)
    assert f"{low.label_accuracy:.1%} of 500 samples" in text and f"z = {low_copying.z:+.1f}" in text
    assert "ψ = 0.5" in text


def test_an_unreadable_generator_file_is_named_and_the_rest_of_the_page_stays(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "generators").mkdir(parents=True)
    (ckpt / "feature_extractors").symlink_to(REPO / "checkpoints" / "feature_extractors")
    (ckpt / "generators" / W16.name).write_bytes(W16.read_bytes()[:5000])  # cut off mid-file
    shutil.copy(DIGITS, ckpt / "generators" / DIGITS.name)
    at = open_data_page(monkeypatch, tmp_path, ckpt)
    assert at.selectbox(key="data-generator").value == W16.name  # still the default, so its error is what shows
    errors = [e.value for e in at.error]
    assert errors and all(W16.name in e for e in errors) and "cannot be read" in errors[0]
    assert not at.get("plotly_chart")  # nothing drawn from it
    assert "digits" in list(at.dataframe[0].value["dataset"])  # the datasets and the other generators stay
    at.selectbox(key="data-generator").set_value(DIGITS.name).run()
    assert not at.exception and [c for c in at.get("plotly_chart")]


def test_a_generator_whose_training_split_cannot_be_rebuilt_still_gets_the_oracle(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "generators").mkdir(parents=True)
    (ckpt / "feature_extractors").symlink_to(REPO / "checkpoints" / "feature_extractors")
    G, meta = load_generator(DIGITS)
    save_generator(ckpt / "generators" / DIGITS.name, G, {**meta, "split_hash": "0000000000000000"})
    at = open_data_page(monkeypatch, tmp_path, ckpt)
    assert chart(at, "label accuracy per class")  # the oracle needs no training images
    (info,) = [i.value for i in at.info if "copying test" in i.value]
    assert DIGITS.name in info and "could not be rebuilt" in info
    assert not at.error


def test_a_generators_training_split_is_rebuilt_from_its_metadata_and_checked():
    G, meta = load_generator(DIGITS)
    assert split_config(meta) == DataConfig("digits", ratio=0.1, data_seed=0)
    assert split_config({**meta, "val_fraction": 0.3}, download=False) == DataConfig(
        "digits", ratio=0.1, data_seed=0, val_fraction=0.3, download=False)
    data = training_split(DIGITS, meta, download=False)
    assert data.split_hash == meta["split_hash"] and len(data.y_train) == 116
    with pytest.raises(DataError, match="could not be rebuilt"):
        training_split(DIGITS, {**meta, "data_seed": 1})
    images, _ = sample_and_judge(G, "digits", per_class=5)
    test = copying_test(images, data, 100)
    direct = data_copying(images, data.x_train.numpy(), data.x_test.numpy()[:100])
    assert len(test.heldout_to_train) == 100 and test.z == direct.z
    assert np.array_equal(test.generated_nearest, direct.generated_nearest)
