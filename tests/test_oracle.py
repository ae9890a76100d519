"""The oracle (mgr/analysis/oracle.py): the classifier trained on the full training set judges images. Its
readings agree with the shipped checkpoint's own test accuracy on real images, it counts what it is asked, and
nothing that trains or selects a model can reach it."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mgr.analysis.oracle import judge, sample_and_judge
from mgr.data import DataConfig, load
from mgr.gan import load_generator

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits_test():
    d = load(DataConfig("digits", ratio=0.1))
    return d.x_test.numpy(), d.y_test.numpy()


def test_on_real_test_images_the_oracle_reads_its_own_test_accuracy(digits_test):
    x, y = digits_test
    r = judge("digits", x, y)
    assert r.label_accuracy == pytest.approx(r.oracle_test_acc, abs=5e-5)  # the checkpoint's rounded figure
    m = r.confusion()
    assert m.sum() == len(y) and list(m.sum(1)) == list(np.bincount(y, minlength=10))  # rows: asked for
    assert np.allclose(r.per_class(), np.diag(m) / m.sum(1))
    assert len(r.off_class()) == m.sum() - np.trace(m)


def test_wrong_labels_are_found_most_confident_first(digits_test):
    x, y = digits_test
    r = judge("digits", x, (y + 1) % 10)  # every image asked for the next class
    assert r.label_accuracy < 0.05
    off = r.off_class()
    assert len(off) > 0.95 * len(y) and np.all(np.diff(r.confidence[off]) <= 0)
    assert list(r.off_class(limit=3)) == list(off[:3])


def test_a_generators_samples_are_judged_per_class_and_truncation_is_checked():
    G, _ = load_generator(REPO / "checkpoints/generators/digits_ratio0.1_seed0.pt")
    images, r = sample_and_judge(G, "digits", per_class=20, seed=0)
    assert images.shape == (200, 1, 8, 8) and list(np.bincount(r.asked)) == [20] * 10
    assert 0.1 < r.label_accuracy <= 1.0 and r.per_class().shape == (10,)
    again, r2 = sample_and_judge(G, "digits", per_class=20, seed=0)
    assert np.array_equal(images, again) and np.array_equal(r.judged, r2.judged)  # a seed fixes the draw
    with pytest.raises(ValueError, match="psi=0 is not allowed"):
        sample_and_judge(G, "digits", psi=0)
    with pytest.raises(ValueError, match="N images"):
        judge("digits", images, r.asked[:-1])


def test_nothing_that_trains_or_selects_a_model_reaches_the_oracle(tmp_path):
    """A whole training run (and the generator's training module) imports neither the oracle nor the FID
    module that loads its checkpoint; no trainer source names the extractors' folder."""
    code = ("import sys; from mgr.trainer import train; from mgr import gan; from tests.conftest import tiny_config; "
            f"train(tiny_config('mgr', steps=2, eval_every=2), {str(tmp_path)!r}, quiet=True); "
            "print(sorted(m for m in sys.modules if m in ('mgr.fid', 'mgr.analysis.oracle', 'mgr.analysis')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
    for f in (REPO / "mgr" / "trainer").glob("*.py"):
        text = f.read_text()
        assert "feature_extractors" not in text and "load_extractor" not in text and "oracle" not in text, f
