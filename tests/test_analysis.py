"""mgr.analysis against real run directories made by the trainer (no fake run files)."""
import json
import math

import numpy as np
import pytest

from mgr.analysis import between_pairs, centroid_margins, curves, runs_overview, seed_table, smooth, summarize
from mgr.data import DataConfig
from mgr.runstore import Run
from mgr.train import TrainConfig, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    for method, seed in (("base", 0), ("base", 1), ("mgr", 0)):
        train(TrainConfig(data=DataConfig("digits", ratio=0.1), method=method, seed=seed, steps=4, eval_every=2,
                          batch_size=16, probes_per_class=2, probe_real=40, device="cpu"), d, quiet=True)
    return d


def test_overview_and_seed_table(runs):
    summaries = runs_overview(runs)
    assert len(summaries) == 3 and all(s.state == "finished" and s.step == 4 for s in summaries)
    mgr = next(s for s in summaries if s.method == "mgr")
    rows = Run(mgr.path).metrics()
    assert mgr.best_val_acc == max(r["val_acc"] for r in rows) and mgr.final_test_acc == rows[-1]["test_acc"]
    table = {(r["method"]): r for r in seed_table(summaries)}
    assert table["base"]["seeds"] == 2 and table["mgr"]["seeds"] == 1 and table["mgr"]["test_at_best_std"] == 0
    base = [s.test_at_best for s in summaries if s.method == "base"]
    assert math.isclose(table["base"]["test_at_best_mean"], np.mean(base))


def test_curves_have_nan_where_a_method_logs_nothing(runs):
    base = next(s for s in runs_overview(runs) if s.method == "base")
    c = curves(Run(base.path))
    assert list(c["step"]) == [2, 4] and "latent_shift" not in c
    mgr = next(s for s in runs_overview(runs) if s.method == "mgr")
    assert not np.isnan(curves(Run(mgr.path))["latent_shift"]).any()


def test_corrupt_run_is_summarised_not_raised(runs):
    victim = runs_overview(runs)[0].path
    (victim / "status.json").write_text("{not json")
    (victim / "config.json").write_text("")
    s = summarize(Run(victim))
    assert s.state == "unknown" and "config.json unreadable" in s.error


def test_smooth_matches_tensorboard_debiasing():
    v = np.array([1.0, math.nan, 3.0, 5.0])
    out = smooth(v, 0.5)
    assert out[0] == 1.0 and math.isnan(out[1])
    assert math.isclose(out[2], (0.5 * 0.5 * 1 + 0.5 * 3) / (1 - 0.25))
    assert np.array_equal(smooth(v, 0.0)[[0, 2, 3]], v[[0, 2, 3]])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        smooth(v, 1.0)


def test_centroid_margins_find_samples_between_clusters():
    real = np.array([[0.0, 0], [0, 0.2], [10, 0], [10, 0.2]])
    labels = np.array([0, 0, 1, 1])
    samples = np.array([[5.0, 0.1], [0.0, 0.1], [9.0, 0.1]])
    m = centroid_margins(real, labels, samples)
    assert list(m["nearest"][1:]) == [0, 1]
    assert m["margin"][0] < 0.01 and m["margin"][1] > 0.99
    assert between_pairs(m, threshold=0.1) == {(0, 1): 1}
