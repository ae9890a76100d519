"""mgr.analysis (its modules) against real run directories made by the trainer (no fake run files)."""
import json
import math
import os

import numpy as np
import pytest
import torch

from mgr.analysis import consistency, feature_map, finder_fid, latents, margins, models, mosaic, projection
from mgr.analysis.curves import columns, curve_fields, curves, group_curves, long_metrics, smooth, smoothable
from mgr.analysis.margins import between_pairs, centroid_margins
from mgr.analysis.runs import lead_statistic, runs_overview, runs_states, seed_table, summarize, validation_size
from pages._text import between_reading, lead_reason
from mgr.data import DataConfig
from mgr.runstore import Run, list_runs
from mgr.trainer import TrainConfig, train


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
    assert mgr.best_val_acc == max(r["val_acc"] for r in rows) and mgr.test_last == rows[-1]["test_acc"]
    table = {(r["method"]): r for r in seed_table(summaries)}
    assert table["base"]["seeds"] == 2 and table["mgr"]["seeds"] == 1 and table["mgr"]["test_at_best_std"] == 0
    base = [s.test_at_best for s in summaries if s.method == "base"]
    assert math.isclose(table["base"]["test_at_best_mean"], np.mean(base))
    last = [s.test_last for s in summaries if s.method == "base"]
    assert math.isclose(table["base"]["test_last_mean"], np.mean(last))
    assert math.isclose(table["base"]["test_last_std"], np.std(last, ddof=1))


def test_compare_leads_with_the_last_step_where_the_validation_split_is_tiny(runs):
    """digits 10% keeps 1 validation image per class: its best validation step is largely chance."""
    summaries = runs_overview(runs)
    table = seed_table(summaries)
    assert {r["val_size"] for r in table} == {10}
    lead = lead_statistic([r["val_size"] for r in table])
    assert lead == {"lead": "test_last", "smallest_val": 10}
    assert "10 validation images" in lead_reason(lead) and "±6.7" in lead_reason(lead)
    full = validation_size({**summaries[0].config["data"], "ratio": 1.0})  # all of digits' training split
    assert full == 126 and lead_statistic([full])["lead"] == "test_at_best"
    assert lead_statistic([None])["lead"] == "test_at_best" and "unknown" in lead_reason(lead_statistic([None]))


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


def test_runs_are_listed_newest_first_whatever_their_names(tmp_path):
    """Home, the run pickers and Compare's default selection show the newest runs first. Run ids the
    user chose do not sort by time: "zeta" was made before "alpha" and "beta" (the last two at once)."""
    import os
    cfg = TrainConfig(data=DataConfig("digits", ratio=0.1), method="base").to_dict()
    for rid, made in (("zeta", 1_000), ("beta", 2_000), ("alpha", 2_000), ("mid", 1_500)):
        Run.create(tmp_path, cfg, rid).unlock()
        os.utime(tmp_path / rid / "config.json", ns=(made * 10 ** 9, made * 10 ** 9))
    (tmp_path / "not-a-run").mkdir()
    assert [r.id for r in list_runs(tmp_path)] == ["alpha", "beta", "mid", "zeta"]
    assert [s.id for s in runs_overview(tmp_path)] == ["alpha", "beta", "mid", "zeta"]


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

def test_columns_pick_up_any_new_numeric_field():
    cols = columns([{"step": 1, "ce": 2.0, "alpha_mean": 0.1, "note": "x"}, {"step": 2, "ce": 1.0}])
    assert curve_fields(cols) == ["alpha_mean", "ce"]
    assert np.isnan(cols["alpha_mean"][1]) and "note" not in cols


def svd_pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The projection the app computed by hand before it used sklearn: centred SVD, top k components."""
    x = np.asarray(x, dtype=np.float64)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return (x - x.mean(0)) @ vt[:k].T, (s ** 2)[:k] / (s ** 2).sum()


def test_pca_finds_the_direction_of_a_line():
    t = np.linspace(-1, 1, 11)
    x = np.stack([t, 2 * t, np.zeros_like(t)], 1) + 5
    fitted = projection.pca(x)
    ratio, comps = fitted.explained_variance_ratio_, fitted.components_
    assert np.allclose(fitted.mean_, [5, 5, 5]) and np.isclose(ratio[0], 1.0) and np.isclose(ratio[1], 0, atol=1e-12)
    assert np.allclose(comps[0], np.array([1, 2, 0]) / np.sqrt(5))  # the largest loading is positive
    assert np.allclose(np.abs(fitted.transform(x)[:, 0]), np.abs(t) * np.sqrt(5))


def test_pca_projection_matches_the_svd_one_up_to_the_sign_of_each_axis():
    x = np.random.default_rng(0).normal(size=(300, 20)) * np.linspace(3, 0.5, 20)
    ref, ref_ratio = svd_pca(x)
    ours = projection.project(x, "pca")
    signs = np.sign((ours * ref).sum(0))
    assert set(signs) <= {-1, 1} and np.allclose(ours, ref * signs, atol=1e-10)
    assert np.allclose(projection.pca(x).explained_variance_ratio_, ref_ratio)


def test_mosaic_tiles_row_major_with_white_gaps():
    imgs = np.arange(3, dtype=np.uint8)[:, None, None, None].repeat(2, 2).repeat(2, 3)  # 3 grey 2×2 tiles
    m = mosaic.mosaic(imgs, ncols=2, scale=1, pad=1)
    assert m.shape == (5, 5, 3)
    assert (m[0, 0] == 0).all() and (m[0, 3] == 1).all() and (m[3, 0] == 2).all() and (m[2, 2] == 255).all()


def test_place_on_map_is_exact_on_fitted_points_and_weights_by_distance():
    feats = np.array([[0.0, 0], [1, 0], [10, 10]])
    xy = np.array([[0.0, 0], [2, 0], [50, 50]])
    out = projection.place_on_map(feats, xy, np.array([[1.0, 0], [0.5, 0]]), k=2)
    assert np.allclose(out[0], [2, 0]) and np.allclose(out[1], [1, 0])


def test_place_on_map_is_the_inverse_distance_weighted_mean_of_the_k_nearest():
    rng = np.random.default_rng(1)
    feats, xy, new = rng.normal(size=(200, 8)), rng.normal(size=(200, 2)), rng.normal(size=(30, 8))
    d = np.linalg.norm(new[:, None] - feats[None], axis=2)
    nearest = np.argsort(d, 1)[:, :5]
    w = 1 / np.take_along_axis(d, nearest, 1)
    expected = (w[:, :, None] * xy[nearest]).sum(1) / w.sum(1, keepdims=True)
    assert np.allclose(projection.place_on_map(feats, xy, new, k=5), expected)


def test_feature_map_is_cached_on_disk_and_refitted_when_the_probe_changes(runs_copy):
    run = Run(runs_copy / "t-mgr")
    first = feature_map.feature_map(run, 20, "pca")
    assert not first.cached and first.real_xy.shape == (100, 2) and first.uniform_xy.shape == (40, 2)
    again = feature_map.feature_map(run, 20, "pca")
    assert again.cached and np.array_equal(again.real_xy, first.real_xy)
    assert len(list((run.path / "analysis").glob("map_step0000020_*.npz"))) == 1
    probe = run.path / "probes" / "step_0000020.npz"
    probe.write_bytes(probe.read_bytes())  # rewritten (as a resume does): the cache is stale
    assert not feature_map.feature_map(run, 20, "pca").cached
    # PCA of the map equals PCA of the stacked features
    p = run.load_probe(20)
    x = np.concatenate([p["real_features"], p["uniform_features"], p["finder_features"]])
    assert np.allclose(np.abs(first.real_xy), np.abs(svd_pca(x)[0][:100]), atol=1e-4)


def test_feature_map_with_umap(runs_copy):
    fmap = feature_map.feature_map(Run(runs_copy / "t-pcr"), 20, "umap", n_neighbors=5)
    assert fmap.real_xy.shape == (100, 2) and np.isfinite(fmap.finder_xy).all()


UMAP_IN_A_FRESH_PROCESS = """
import sys, numpy as np
from mgr.analysis.projection import project
np.save(sys.argv[1], project(np.load(sys.argv[2]), "umap", seed=0))
import umap.layouts
stats = umap.layouts._nb_optimize_layout_euclidean_single_epoch.stats
print(len(stats.cache_hits), len(stats.cache_misses))
"""


def test_a_later_process_loads_umaps_kernels_from_numbas_cache_and_draws_the_same_map(tmp_path):
    """umap-learn compiles its layout kernels without numba's disk cache (12 s of a core in every app process);
    projection turns the cache on: once this process has drawn a map, a fresh one loads the kernels and draws the
    same map."""
    import subprocess
    import sys
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    here = projection.project(x, "umap", seed=0)  # compiles the kernels into the cache, or loads them
    r = subprocess.run([sys.executable, "-c", UMAP_IN_A_FRESH_PROCESS, str(tmp_path / "xy.npy"), str(tmp_path / "x.npy")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    hits, misses = map(int, r.stdout.split())
    assert hits >= 1 and misses == 0, r.stdout
    assert np.array_equal(np.load(tmp_path / "xy.npy"), here)


def test_margin_table_counts_the_samples_between_classes_against_held_out_real_images(app_runs):
    run = Run(app_runs / "t-mgr")
    table = margins.margin_table(run, 20, threshold=0.2)
    p, static = run.load_probe(20), run.load_probe("static")
    train, test = static["real_split"] == "train", static["real_split"] == "test"
    assert train.sum() == test.sum() == 50
    # the clusters are the training half's class centroids; the test half is measured against them
    basis = p["real_features"][train], static["real_labels"][train]
    m = centroid_margins(*basis, p["uniform_features"])
    assert table["uniform_total"] == int((m["margin"] < 0.2).sum()) == sum(r["uniform"] for r in table["pairs"])
    ref = centroid_margins(*basis, p["real_features"][test])["margin"]
    assert table["n_real_test"] == 50 and table["real_test_total"] == int((ref < 0.2).sum())
    assert table["real_test_fraction"] == table["real_test_total"] / 50
    assert table["uniform_fraction"] == table["uniform_total"] / 40 and table["finder_fraction"] == table["finder_total"] / 40
    assert table["n"] == 40 and len(table["classes"]) == 10
    assert f"{table['real_test_total']}/50)" in between_reading(table) and table["uniform_vs_real"] in between_reading(table)
    assert margins.margin_table(Run(app_runs / "t-base"), 20)["pairs"] == []
    # a looser threshold counts more of every kind
    loose = margins.margin_table(run, 20, threshold=0.5)
    assert all(loose[k] >= table[k] for k in ("uniform_total", "finder_total", "real_test_total"))


def test_the_between_clusters_reading_says_more_often_only_beyond_chance():
    def reading(k, k_ref, n=100, n_ref=100):
        return margins.between_fractions({"uniform_total": k, "finder_total": k, "n": n, "real_test_total": k_ref,
                                          "n_real_test": n_ref})
    assert reading(30, 10)["uniform_vs_real"] == "more often"  # 30% vs 10% of 100 each: z = 3.5
    assert reading(3, 1, 10, 10)["uniform_vs_real"] == "about as often"  # the same rates, 10 each: chance
    assert reading(2, 20)["finder_vs_real"] == "less often"
    assert "within chance" in between_reading({**reading(12, 10), "n": 100, "uniform_total": 12, "finder_total": 12,
                                               "real_test_total": 10, "n_real_test": 100})
    none = margins.between_fractions({"uniform_total": 3, "finder_total": 1, "n": 40, "real_test_total": 0,
                                      "n_real_test": 0})
    assert none["real_test_fraction"] is None and "no held-out real images" in between_reading({**none, "n": 40})


def test_latent_view_and_gaps_read_the_probes(app_runs):
    pcr, mgr = Run(app_runs / "t-pcr"), Run(app_runs / "t-mgr")
    v = latents.latent_view(pcr, 20)
    assert np.allclose(v.shift, 0) and np.allclose(v.z_2d, v.fz_2d)  # no finder: F is the identity
    v = latents.latent_view(mgr, 20)
    p = mgr.load_probe(20)
    assert v.uniform_images.shape == (40, 1, 8, 8) and np.allclose(v.finder_conf, p["finder_probs"][np.arange(40), v.y])
    with pytest.raises(ValueError, match="uses no generator"):
        latents.latent_view(Run(app_runs / "t-base"), 20)
    h = consistency.gap_history(mgr)
    assert h["steps"] == [10, 20] and np.array_equal(h["finder"][1], p["finder_gap"])
    ex = consistency.gap_extremes(mgr, 20, "finder", k=3)
    assert np.array_equal(ex["largest"]["gap"], np.sort(p["finder_gap"])[::-1][:3])
    assert np.array_equal(ex["smallest"]["augmented"], p["augmented_finder"][np.argsort(p["finder_gap"])[:3]])


def as_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def mgr_models(app_runs):
    return models.run_models(Run(app_runs / "t-mgr"))


def test_label_interpolation_walks_from_one_class_to_the_other(mgr_models):
    G = mgr_models["G"]
    z = np.random.default_rng(0).normal(size=G.z_dim).astype(np.float32)
    walk = models.interpolation(mgr_models, z, 2, 7, "label", n=9)
    assert walk["images"].shape == (9, 1, 8, 8) and walk["labels"].shape == walk["probs"].shape == (9, 10)
    assert walk["features"].shape == (9, 128) and np.allclose(walk["probs"].sum(1), 1, atol=1e-5)
    zs = torch.from_numpy(z)[None]
    with torch.no_grad():  # the ends are the pure-class images G(z, 2) and G(z, 7), bit for bit
        ends = as_uint8(G(zs.repeat(2, 1), torch.tensor([2, 7])))
        mid = torch.zeros(1, 10)
        mid[0, [2, 7]] = 0.5
        middle = as_uint8(G(zs, mid))[0]
    assert np.array_equal(walk["images"][[0, -1]], ends)
    # halfway: half of each class's label, and an image that is neither end
    assert walk["t"][4] == 0.5 and np.array_equal(walk["labels"][4], mid[0].numpy())
    assert np.array_equal(walk["images"][4], middle) and not (middle == ends[0]).all() and not (middle == ends[1]).all()
    assert np.allclose(walk["labels"].sum(1), 1) and np.all(np.diff(walk["labels"][:, 7]) > 0)
    # the classifier's belief moves from class 2 to class 7 along the path (a 20-step classifier: roughly)
    p2, p7 = walk["probs"][:, 2], walk["probs"][:, 7]
    assert p2[0] > p2[-1] and p7[-1] > p7[0] and np.corrcoef(walk["t"], p7 - p2)[0, 1] > 0.8


def test_latent_interpolation_also_moves_z_and_bad_requests_are_refused(mgr_models):
    G = mgr_models["G"]
    z_a, z_b = np.random.default_rng(1).normal(size=(2, G.z_dim)).astype(np.float32)
    walk = models.interpolation(mgr_models, z_a, 0, 1, "latent", n=5, z_b=z_b)
    with torch.no_grad():
        ends = as_uint8(G(torch.from_numpy(np.stack([z_a, z_b])), torch.tensor([0, 1])))
    assert np.array_equal(walk["images"][[0, -1]], ends)
    for kw, message in ((dict(class_b=10), r"class_b=10 is not a class of this generator \(0 … 9\)"),
                        (dict(n=1), "n=1 steps cannot join two classes"),
                        (dict(mode="spline"), "mode 'spline' is not one of label, latent")):
        with pytest.raises(ValueError, match=message):
            models.interpolation(mgr_models, z_a, **{"class_a": 0, "class_b": 1, **kw})


def test_sessions_interpolating_at_once_on_one_loaded_generator_do_not_disturb_each_other(mgr_models):
    """The app shares one loaded generator between sessions (st.cache_resource): walks and ordinary
    class-index sampling run at once and each gets what it gets alone. (Patching G's embeddings for
    the duration of a walk, as the app once did, broke this.)"""
    import threading
    G = mgr_models["G"]
    z = np.random.default_rng(2).normal(size=G.z_dim).astype(np.float32)
    pairs = [(0, 1), (2, 7), (3, 8), (5, 4)]
    alone = {p: models.interpolation(mgr_models, z, *p)["images"] for p in pairs}
    zs, ys = torch.randn(16, G.z_dim), torch.arange(16) % 10
    with torch.no_grad():
        plain = G(zs, ys)
    errors, seen = [], []

    def walk(pair):
        try:
            for _ in range(15):
                seen.append(np.array_equal(models.interpolation(mgr_models, z, *pair)["images"], alone[pair]))
        except Exception as e:  # noqa: BLE001 - any failure in a thread is the test's failure
            errors.append(e)

    def sample():
        try:
            for _ in range(30):
                with torch.no_grad():
                    seen.append(torch.equal(G(zs, ys), plain))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=walk, args=(p,)) for p in pairs] + [threading.Thread(target=sample)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 4 * 15 + 30 and all(seen)
    assert all(isinstance(m.class_gain, torch.nn.Embedding) for m in G.modules() if hasattr(m, "class_gain"))


def test_models_are_loaded_once_per_checkpoint_and_again_when_it_changes(runs_copy):
    import os
    run = Run(runs_copy / "t-mgr")
    first = models.loaded_models(run)
    assert models.loaded_models(run) is first and first["step"] == 20 and first["finder"] is not None
    os.utime(run.path / "last.pt", ns=(1, 1))  # rewritten (a resume, a new evaluation)
    again = models.loaded_models(run)
    assert again is not first and models.loaded_models(run) is again
    assert models.loaded_models(Run(runs_copy / "t-pcr"))["finder"] is None


def test_fid_of_uniform_and_finder_samples_is_cached(runs_copy):
    run = Run(runs_copy / "t-mgr")
    r = finder_fid.fid_uniform_vs_finder(run, num=300)
    assert r["uniform"] > 0 and r["finder"] > 0 and "SmallCNN" in r["extractor"] and not r["cached"]
    assert finder_fid.fid_uniform_vs_finder(run, num=300) == {**r, "cached": True}
    pcr = finder_fid.fid_uniform_vs_finder(Run(runs_copy / "t-pcr"), num=300)
    # the same generator and the same z: uniform samples do not depend on the run, nor on its finder
    assert pcr["finder"] is None and pcr["uniform"] == r["uniform"] and r["finder"] != r["uniform"]


def test_fid_is_measured_again_when_the_generator_or_the_checkpoint_changes(runs_copy):
    """The cache key names the files the FID comes from. Before, it named only the step: a generator
    retrained in place (or a resumed last.pt at the same step) was served the old numbers."""
    import os
    import shutil

    from mgr.paths import generator_path
    run = Run(runs_copy / "t-mgr")
    gen = runs_copy / "my-generator.pt"  # a user's generator, beside the runs
    shutil.copy(generator_path({"dataset": "digits", "ratio": 0.1, "data_seed": 0}), gen)
    cfg = json.loads((run.path / "config.json").read_text())
    (run.path / "config.json").write_text(json.dumps({**cfg, "generator": str(gen)}))
    first = finder_fid.fid_uniform_vs_finder(run, num=300)
    assert finder_fid.fid_uniform_vs_finder(run, num=300)["cached"]
    shutil.copy(generator_path({"dataset": "digits", "ratio": 0.25, "data_seed": 0}), gen)  # retrained in place
    other = finder_fid.fid_uniform_vs_finder(run, num=300)
    assert not other["cached"] and other["uniform"] != first["uniform"]
    os.utime(run.path / "last.pt")  # last.pt rewritten (a resume)
    assert not finder_fid.fid_uniform_vs_finder(run, num=300)["cached"]


def test_the_eta_of_an_mltp_run_is_the_time_its_trainer_takes_per_step(app_runs):
    """After its evaluation at step 5 of 10 the MLTP trainer wrote status {step 5, img_per_s of the
    evaluation record}; its record also says how long those 5 steps took. At that pace the other 5
    take as long: the ETA the Train page shows. With the batch size in place of the images a step
    consumes (two batches under MLTP) it said half."""
    from mgr.launch import eta_seconds
    run = Run(app_runs / "t-mltp")
    s = summarize(run)
    assert s.config["procedure"] == "mltp" and s.images_per_step == 2 * s.batch_size == 64
    first = run.metrics()[0]
    status = {**run.status(), "step": first["step"], "img_per_s": first["img_per_s"]}
    per_step = first["elapsed"] / first["step"]  # the trainer's own clock
    assert math.isclose(eta_seconds(status, s.images_per_step), (s.total_steps - first["step"]) * per_step, rel_tol=0.02)
    base = summarize(Run(app_runs / "t-base"))
    assert base.images_per_step == base.batch_size  # one batch a step


def test_long_metrics_has_one_row_per_value(app_runs):
    runs = [Run(app_runs / "t-base"), Run(app_runs / "t-mgr")]
    rows = long_metrics(runs)
    expected = sum(len([k for k in r if k not in ("step", "test_class_acc")]) + len(r["test_class_acc"])
                   for run in runs for r in run.metrics())  # a number a row, the per-class accuracy one per class
    assert {"test_class_acc/0", "test_class_acc/9"} <= {r["field"] for r in rows}
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
                    ("mgr", dict(method="mgr")),
                    ("mgr-co", dict(method="mgr", co_learner=True)),
                    ("mgr-lam", dict(method="mgr", lam=0.5))):
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
    assert names["mgr-co"].startswith("mgr + co · digits 0.1")
    assert "lam=0.5" in names["mgr-lam"] and "lam=1.0" in names["mgr"]
    assert "seed" not in "".join(names.values())
    # only what differs where it applies: λ means nothing to base, α nothing to a standard run
    assert names["base-s0"] == "base · digits 0.1" and names["mgr"] == "mgr · digits 0.1 · lam=1.0"


def test_a_run_from_an_older_version_gets_the_defaults_of_missing_keys(config_runs, tmp_path):
    """config.json written before procedure, co-learner and friends existed: summaries, the seed table
    and Compare's grouping use the TrainConfig defaults, never a KeyError."""
    import shutil
    for rid in ("base-s0", "mgr-co"):
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
    assert long_metrics([Run(tmp_path / "old-base")])


def test_a_run_of_the_removed_finite_difference_mode_reads_but_says_it_cannot_resume(config_runs, tmp_path):
    """config.json of a run made before `order` and `fd_eps` were removed: with order "second" (what every
    run computes now) it is a seed of today's configuration; with order "first" (the removed
    finite-difference mode) it is listed under its own name, and a stopped one says why it cannot resume."""
    import shutil

    from mgr.launch import LaunchError, Launcher
    from mgr.trainer import TrainConfig
    for rid, order in (("old-second", "second"), ("old-first", "first")):
        shutil.copytree(config_runs / "mgr", tmp_path / rid)
        path = tmp_path / rid / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "order": order, "fd_eps": 0.01}))
    shutil.copytree(config_runs / "mgr", tmp_path / "mgr")
    second, first, today = (summarize(Run(tmp_path / rid)) for rid in ("old-second", "old-first", "mgr"))
    assert second.config_key == today.config_key and "order" not in second.config and second.name == "mgr"
    assert first.config_key != today.config_key and first.name == "mgr (finite difference)"
    assert first.state == "finished" and first.error is None and first.best_val_acc == today.best_val_acc
    with pytest.raises(ValueError, match="finite-difference hypergradient .* was removed") as e:
        TrainConfig.from_dict(Run(tmp_path / "old-first").config)
    assert "train it again" in str(e.value)
    Run(tmp_path / "old-first").write_status(state="stopped")
    assert "was removed" in summarize(Run(tmp_path / "old-first")).error
    with pytest.raises(LaunchError, match="cannot be resumed: .*order='first'"):
        Launcher(tmp_path).resume(Run(tmp_path / "old-first"))
    with pytest.raises(ValueError, match="order='third' is not allowed; the field was removed"):
        TrainConfig.from_dict({**Run(tmp_path / "mgr").config, "order": "third"})


def test_group_curves_average_seeds_on_common_steps():
    g = group_curves([("a", np.array([2, 4]), np.array([0.5, 0.7])),
                               ("a", np.array([2, 4, 6]), np.array([0.7, 0.9, 1.0])),
                               ("b", np.array([2]), np.array([0.1]))])
    assert [x["key"] for x in g] == ["a", "b"]
    assert list(g[0]["steps"]) == [2, 4] and np.allclose(g[0]["mean"], [0.6, 0.8]) and g[0]["n"] == 2
    assert np.allclose(g[0]["std"], np.std([[0.5, 0.7], [0.7, 0.9]], axis=0, ddof=1)) and g[1]["std"][0] == 0


def test_schedules_are_never_smoothed():
    assert not smoothable("lr") and not smoothable("alpha_conv_mean")
    assert smoothable("loss") and smoothable("co_grad_cos")


def test_runs_states_move_when_a_run_starts_ends_or_appears_and_not_at_its_steps(runs_copy):
    """What Home's watcher polls instead of every run's metrics: it must change exactly when the page's polling
    should turn on or off, or a new run should show."""
    import fcntl
    import shutil

    def states():
        return {run_id: state for run_id, state, _ in runs_states(runs_copy)}
    before = runs_states(runs_copy)
    assert states() == {"t-base": "finished", "t-pcr": "finished", "t-mgr": "finished"}
    run = Run(runs_copy / "t-pcr")
    run.write_status(step=3, img_per_s=12.0)  # progress alone: nothing to redraw
    assert runs_states(runs_copy) == before
    with open(run.path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held as a live trainer holds it
        run.write_status(state="running")
        assert states()["t-pcr"] == "running"
        run.write_status(paused=True)  # as a trainer writes once it holds (mgr pause)
        assert ("t-pcr", "running", True) in runs_states(runs_copy)
    assert states()["t-pcr"] == "killed"  # its writer is gone
    shutil.copytree(runs_copy / "t-base", runs_copy / "t-new")
    assert states()["t-new"] == "finished" and len(runs_states(runs_copy)) == 4
    elsewhere = shutil.copytree(runs_copy / "t-base", runs_copy.parent / "elsewhere")
    (runs_copy / "t-link").symlink_to(elsewhere)  # a run outside the runs folder is listed, never read
    assert ("t-link", "unknown", False) in runs_states(runs_copy)

