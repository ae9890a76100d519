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


# ----------------------------------------------------------------------------- the app's analysis layer

from mgr import analysis  # noqa: E402


def test_columns_pick_up_any_new_numeric_field():
    cols = analysis.columns([{"step": 1, "ce": 2.0, "alpha_mean": 0.1, "note": "x"}, {"step": 2, "ce": 1.0}])
    assert analysis.curve_fields(cols) == ["alpha_mean", "ce"]
    assert np.isnan(cols["alpha_mean"][1]) and "note" not in cols


def test_pca_fit_finds_the_direction_of_a_line():
    t = np.linspace(-1, 1, 11)
    x = np.stack([t, 2 * t, np.zeros_like(t)], 1) + 5
    xy, mean, comps, ratio = analysis.pca_fit(x)
    assert np.allclose(mean, [5, 5, 5]) and np.isclose(ratio[0], 1.0) and np.isclose(ratio[1], 0, atol=1e-12)
    assert np.allclose(np.abs(comps[0]), np.array([1, 2, 0]) / np.sqrt(5))
    assert np.allclose(np.abs(xy[:, 0]), np.abs(t) * np.sqrt(5))


def test_mosaic_tiles_row_major_with_white_gaps():
    imgs = np.arange(3, dtype=np.uint8)[:, None, None, None].repeat(2, 2).repeat(2, 3)  # 3 grey 2×2 tiles
    m = analysis.mosaic(imgs, ncols=2, scale=1, pad=1)
    assert m.shape == (5, 5, 3)
    assert (m[0, 0] == 0).all() and (m[0, 3] == 1).all() and (m[3, 0] == 2).all() and (m[2, 2] == 255).all()


def test_place_on_map_is_exact_on_fitted_points_and_weights_by_distance():
    feats = np.array([[0.0, 0], [1, 0], [10, 10]])
    xy = np.array([[0.0, 0], [2, 0], [50, 50]])
    out = analysis.place_on_map(feats, xy, np.array([[1.0, 0], [0.5, 0]]), k=2)
    assert np.allclose(out[0], [2, 0]) and np.allclose(out[1], [1, 0])


def test_feature_map_is_cached_on_disk_and_refitted_when_the_probe_changes(runs_copy):
    run = Run(runs_copy / "t-mgr")
    first = analysis.feature_map(run, 20, "pca")
    assert not first.cached and first.real_xy.shape == (100, 2) and first.uniform_xy.shape == (40, 2)
    again = analysis.feature_map(run, 20, "pca")
    assert again.cached and np.array_equal(again.real_xy, first.real_xy)
    assert len(list((run.path / "analysis").glob("map_step0000020_*.npz"))) == 1
    probe = run.path / "probes" / "step_0000020.npz"
    probe.write_bytes(probe.read_bytes())  # rewritten (as a resume does): the cache is stale
    assert not analysis.feature_map(run, 20, "pca").cached
    # PCA of the map equals PCA of the stacked features
    p = run.load_probe(20)
    x = np.concatenate([p["real_features"], p["uniform_features"], p["finder_features"]])
    assert np.allclose(np.abs(first.real_xy), np.abs(analysis.pca_fit(x)[0][:100]), atol=1e-4)


def test_feature_map_with_umap(runs_copy):
    fmap = analysis.feature_map(Run(runs_copy / "t-pcr"), 20, "umap", n_neighbors=5)
    assert fmap.real_xy.shape == (100, 2) and np.isfinite(fmap.finder_xy).all()


def test_margin_table_counts_the_samples_between_classes(app_runs):
    run = Run(app_runs / "t-mgr")
    table = analysis.margin_table(run, 20, threshold=0.2)
    p, static = run.load_probe(20), run.load_probe("static")
    m = centroid_margins(p["real_features"], static["real_labels"], p["uniform_features"])
    assert table["uniform_total"] == int((m["margin"] < 0.2).sum()) == sum(r["uniform"] for r in table["pairs"])
    assert table["n"] == 40 and len(table["classes"]) == 10
    assert analysis.margin_table(Run(app_runs / "t-base"), 20)["pairs"] == []


def test_latent_view_and_gaps_read_the_probes(app_runs):
    pcr, mgr = Run(app_runs / "t-pcr"), Run(app_runs / "t-mgr")
    v = analysis.latent_view(pcr, 20)
    assert np.allclose(v.shift, 0) and np.allclose(v.z_2d, v.fz_2d)  # no finder: F is the identity
    v = analysis.latent_view(mgr, 20)
    p = mgr.load_probe(20)
    assert v.uniform_images.shape == (40, 1, 8, 8) and np.allclose(v.finder_conf, p["finder_probs"][np.arange(40), v.y])
    with pytest.raises(ValueError, match="uses no generator"):
        analysis.latent_view(Run(app_runs / "t-base"), 20)
    h = analysis.gap_history(mgr)
    assert h["steps"] == [10, 20] and np.array_equal(h["finder"][1], p["finder_gap"])
    ex = analysis.gap_extremes(mgr, 20, "finder", k=3)
    assert np.array_equal(ex["largest"]["gap"], np.sort(p["finder_gap"])[::-1][:3])
    assert np.array_equal(ex["smallest"]["augmented"], p["augmented_finder"][np.argsort(p["finder_gap"])[:3]])


def test_label_interpolation_starts_and_ends_at_the_classes(app_runs):
    import torch
    models = analysis.run_models(Run(app_runs / "t-mgr"))
    G = models["G"]
    z = np.random.default_rng(0).normal(size=G.z_dim).astype(np.float32)
    walk = analysis.interpolation(models, z, 2, 7, "label", n=5)
    with torch.no_grad():
        ends = G(torch.from_numpy(z)[None].repeat(2, 1), torch.tensor([2, 7]))
    ends = ((ends.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(walk["images"][[0, -1]], ends)  # soft one-hot labels = the embedding lookup
    assert isinstance(G.blocks[0].bn1.class_gain, torch.nn.Embedding)  # restored afterwards
    assert walk["features"].shape == (5, 128) and np.allclose(walk["probs"].sum(1), 1, atol=1e-5)


def test_fid_of_uniform_and_finder_samples_is_cached(runs_copy):
    run = Run(runs_copy / "t-mgr")
    r = analysis.fid_uniform_vs_finder(run, num=300)
    assert r["uniform"] > 0 and r["finder"] > 0 and "SmallCNN" in r["extractor"] and not r["cached"]
    assert analysis.fid_uniform_vs_finder(run, num=300) == {**r, "cached": True}
    assert analysis.fid_uniform_vs_finder(Run(runs_copy / "t-pcr"), num=300)["finder"] is None


def test_long_metrics_has_one_row_per_value(app_runs):
    runs = [Run(app_runs / "t-base"), Run(app_runs / "t-mgr")]
    rows = analysis.long_metrics(runs)
    expected = sum(len([k for k in r if k != "step"]) for run in runs for r in run.metrics())
    assert len(rows) == expected and {r["run"] for r in rows} == {"t-base", "t-mgr"}


# ----------------------------------------------------------------------------- configurations (Compare)

@pytest.fixture(scope="module")
def config_runs(tmp_path_factory):
    """Real runs that differ in what defines a configuration: procedure, MLTP variant, co-learner, λ."""
    d = tmp_path_factory.mktemp("config-runs")
    tiny = dict(data=DataConfig("digits", ratio=0.1), steps=2, eval_every=2, batch_size=16, probes_per_class=2,
                probe_real=40, device="cpu")
    for rid, kw in (("base-s0", dict(method="base")), ("base-s1", dict(method="base", seed=1)),
                    ("base-mltp-fo", dict(method="base", procedure="mltp")),
                    ("base-mltp-full", dict(method="base", procedure="mltp", mltp_variant="full")),
                    ("mgr-first", dict(method="mgr", order="first")),
                    ("mgr-first-co", dict(method="mgr", order="first", co_learner=True)),
                    ("mgr-first-lam", dict(method="mgr", order="first", lam=0.5))):
        train(TrainConfig(**tiny, **kw), d, rid, quiet=True)
    return d


def test_seed_table_groups_by_everything_but_the_seed(config_runs):
    summaries = runs_overview(config_runs)
    table = seed_table(summaries)
    by_runs = {tuple(sorted(r["runs"])): r for r in table}
    assert ("base-s0", "base-s1") in by_runs and by_runs[("base-s0", "base-s1")]["seeds"] == 2
    assert len(table) == 6  # procedure, variant, co-learner and λ each make their own configuration
    names = {rid: r["config"] for r in table for rid in r["runs"]}
    assert names["base-mltp-fo"].startswith("base · mltp-fo · digits 0.1")
    assert names["base-mltp-full"].startswith("base · mltp-full")
    assert names["mgr-first-co"].startswith("mgr (first) + co · digits 0.1")
    assert "lam=0.5" in names["mgr-first-lam"] and "lam=1.0" in names["mgr-first"]
    assert "seed" not in "".join(names.values())
    # only what differs where it applies: λ means nothing to base, α nothing to a standard run
    assert names["base-s0"] == "base · digits 0.1" and names["mgr-first"] == "mgr (first) · digits 0.1 · lam=1.0"


def test_a_run_from_an_older_version_gets_the_defaults_of_missing_keys(config_runs, tmp_path):
    """config.json written before procedure, co-learner and friends existed: summaries, the seed table
    and Compare's grouping use the TrainConfig defaults, never a KeyError."""
    import shutil
    for rid in ("base-s0", "mgr-first-co"):
        shutil.copytree(config_runs / rid, tmp_path / rid)
    shutil.copytree(config_runs / "base-s1", tmp_path / "old-base")
    path = tmp_path / "old-base" / "config.json"
    cfg = json.loads(path.read_text())
    for k in ("procedure", "mltp_variant", "mltp_eta", "mltp_alpha", "co_learner", "co_learner_arch",
              "co_learner_gamma", "co_learner_lr", "log_every", "lam"):
        del cfg[k]
    del cfg["data"]["data_seed"]
    path.write_text(json.dumps(cfg))
    old = summarize(Run(tmp_path / "old-base"))
    assert old.state == "finished" and old.config["procedure"] == "standard" and old.config["co_learner"] is False
    assert old.config_key == summarize(Run(tmp_path / "base-s0")).config_key  # seeds of one configuration
    rows = seed_table(runs_overview(tmp_path))
    assert sorted(r["seeds"] for r in rows) == [1, 2]
    # even the fields the trainer requires: a hand-trimmed config is summarised, not raised on
    del cfg["method"], cfg["model"], cfg["steps"], cfg["data"]["ratio"]
    path.write_text(json.dumps(cfg))
    old = summarize(Run(tmp_path / "old-base"))
    assert old.state == "finished" and old.method == "mgr" and old.total_steps == 500  # TrainConfig's defaults
    assert analysis.long_metrics([Run(tmp_path / "old-base")])


def test_group_curves_average_seeds_on_common_steps():
    g = analysis.group_curves([("a", np.array([2, 4]), np.array([0.5, 0.7])),
                               ("a", np.array([2, 4, 6]), np.array([0.7, 0.9, 1.0])),
                               ("b", np.array([2]), np.array([0.1]))])
    assert [x["key"] for x in g] == ["a", "b"]
    assert list(g[0]["steps"]) == [2, 4] and np.allclose(g[0]["mean"], [0.6, 0.8]) and g[0]["n"] == 2
    assert np.allclose(g[0]["std"], np.std([[0.5, 0.7], [0.7, 0.9]], axis=0, ddof=1)) and g[1]["std"][0] == 0


def test_schedules_are_never_smoothed():
    assert not analysis.smoothable("lr") and not analysis.smoothable("alpha_conv_mean")
    assert analysis.smoothable("loss") and analysis.smoothable("co_grad_cos")
