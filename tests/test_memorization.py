"""The three-sample data-copying test (mgr/analysis/memorization.py) on real digits: fresh test images sit as
far from the training images as each other, copies of training images sit on them, and blurred copies in
between; the z-score is that of a textbook Mann-Whitney test."""
import numpy as np
import pytest

from mgr.analysis.memorization import data_copying, mann_whitney_z, nearest
from mgr.data import DataConfig, load


@pytest.fixture(scope="module")
def digits():
    d = load(DataConfig("digits", ratio=0.5))
    x = d.x_test.numpy()
    return d.x_train.numpy(), x[: len(x) // 2], x[len(x) // 2:]


def test_a_copying_generator_is_told_from_one_that_makes_new_images(digits):
    train, test_a, test_b = digits
    fresh = data_copying(test_a, train, test_b)  # "generated" = unseen real images: as close as held-out ones
    assert abs(fresh.z) < 3
    rng = np.random.default_rng(0)
    copies = train[rng.choice(len(train), 200)] + rng.normal(0, 0.01, (200, *train.shape[1:])).astype(np.float32)
    copied = data_copying(copies, train, test_b)
    assert copied.z < -10 and np.median(copied.generated_to_train) < 0.1 * np.median(copied.heldout_to_train)
    (g, t, dist), *_ = copied.closest_pairs(3)
    assert dist == copied.generated_to_train.min() and np.linalg.norm(copies[g] - train[t]) == pytest.approx(dist, abs=1e-4)
    noise = data_copying(rng.uniform(-1, 1, (200, *train.shape[1:])).astype(np.float32), train, test_b)
    assert noise.z > 10  # far from every training image: underfitting, not copying


def test_nearest_is_exact_and_mann_whitney_matches_a_hand_count():
    ref = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    d, i = nearest(np.array([[3.0, 4.0], [0.0, 1.0]], dtype=np.float32), ref)
    assert list(i) == [1, 0] and d == pytest.approx([0.0, 1.0])
    # a = [1, 2], b = [3, 4, 5]: U = 0 (every a below every b); mean 3, var = 2*3*6/12 = 3
    assert mann_whitney_z([1, 2], [3, 4, 5]) == pytest.approx(-3 / np.sqrt(3))
    assert mann_whitney_z([3, 4, 5], [1, 2]) == pytest.approx(3 / np.sqrt(3))
    with pytest.raises(ValueError, match="same shape|shape"):
        nearest(np.zeros((2, 3)), np.zeros((2, 4)))


def test_mann_whitney_agrees_with_scipy_with_ties():
    from scipy import stats
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 6, 40).astype(float), rng.integers(1, 8, 55).astype(float)  # many ties
    z = mann_whitney_z(a, b)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=False)
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(ref.pvalue, rel=1e-9) and z < 0
