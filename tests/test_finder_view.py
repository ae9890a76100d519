"""The Latents page's finder view (mgr.analysis.finder_view) on the session's real runs: the reading
of hg_cos, amplified shifts through the run's generator, the shift over training, and uniform vs
finder sample statistics, each checked against the run's own files."""
import math

import numpy as np
import pytest

from mgr.analysis.curves import scalar_curves
from mgr.analysis.finder_view import (SIGNAL_THRESHOLD, amplified_shifts, one_vector_reading, sample_stats,
                                      shift_history, signal_reading)
from mgr.runstore import Run
from pages._text import one_vector_finding, signal_finding


def test_reading_of_a_real_mgr_run_is_the_mean_of_its_logged_hg_cos_with_the_rule_applied(app_runs):
    run = Run(app_runs / "t-mgr")
    logged = [(r["step"], r["hg_cos"]) for r in run.scalars() if r.get("hg_cos") is not None]
    assert len(logged) >= 2, "the trainer logs hg_cos for mgr runs"
    r = signal_reading(scalar_curves(run))
    last = [c for s, c in logged[-r.n:]]
    assert r.n >= 2 and r.mean == pytest.approx(np.mean(last))
    assert r.low < r.mean < r.high
    expected = ("signal" if r.low > SIGNAL_THRESHOLD else
                "noise" if r.low <= 0 <= r.high or r.high < SIGNAL_THRESHOLD else "weak")
    assert r.verdict == expected
    shown = signal_finding(r)  # the page's verdict badge, one sentence with the numbers, and details
    assert shown.verdict == expected
    assert f"{r.mean:+.2f}" in shown.sentence and f"[{r.low:+.2f}, {r.high:+.2f}]" in shown.sentence
    assert "docs/method.md#the-signal" in shown.details


@pytest.mark.parametrize("name", ["t-pcr", "t-base"])
def test_runs_without_hg_cos_get_a_note_not_an_error(app_runs, name):
    r = signal_reading(scalar_curves(Run(app_runs / name)))
    assert r.verdict is None and "logs no hg_cos" in signal_finding(r).sentence


def test_the_rule_reads_a_steady_cosine_as_signal_and_one_around_zero_as_noise():
    steps = np.arange(10, 410, 10, dtype=float)
    wobble = 0.05 * np.sin(steps)  # deterministic scatter around the level
    signal = signal_reading({"step": steps, "hg_cos": 0.4 + wobble})
    noise = signal_reading({"step": steps, "hg_cos": 0.0 + wobble})
    below = signal_reading({"step": steps, "hg_cos": 0.08 + 0.01 * np.sin(steps)})  # above 0, but below 0.1
    weak = signal_reading({"step": steps, "hg_cos": 0.1 + wobble})  # above 0, straddling 0.1
    assert (signal.verdict, noise.verdict, below.verdict, weak.verdict) == ("signal", "noise", "noise", "weak")
    assert signal.n == 10  # steps 310..400: the last quarter of 10..400
    assert "follows a signal" in signal_finding(signal).sentence and "mostly noise" in signal_finding(noise).sentence
    early = signal_reading({"step": steps[:1], "hg_cos": np.array([0.3])})
    assert early.verdict is None and "too few" in signal_finding(early).sentence


def test_amplified_shifts_reproduce_the_probe_samples_at_k_0_and_1_and_move_further_with_k(app_runs):
    run = Run(app_runs / "t-mgr")
    step = run.probe_steps()[-1]
    amp = amplified_shifts(run, step, per_class=2)
    static, p = run.load_probe("static"), run.load_probe(step)
    y = static["probe_y"]
    rows = np.concatenate([np.flatnonzero(y == c)[:2] for c in np.unique(y)])
    assert amp["images"].shape[:2] == (len(rows), 5) and list(amp["y"]) == list(y[rows])
    k0, k1 = amp["images"][:, 0].astype(int), amp["images"][:, 1].astype(int)
    assert np.abs(k0 - p["uniform_images"][rows]).max() <= 1  # G(z, y): the probe's uniform sample
    assert np.abs(k1 - p["finder_images"][rows]).max() <= 1  # G(F(z), y): the probe's finder sample
    away = [np.abs(amp["images"][:, i].astype(int) - k0).mean() for i in range(5)]
    assert away[4] > away[1] > 0  # k = 8 moves the image further than the finder's own shift
    with pytest.raises(ValueError, match="per_class=0"):
        amplified_shifts(run, step, per_class=0)


def test_shift_history_measures_the_probe_shifts_at_each_evaluation(app_runs):
    run = Run(app_runs / "t-mgr")
    hist = shift_history(run)
    z = run.load_probe("static")["probe_z"]
    assert list(hist["steps"]) == run.probe_steps()
    for i, step in enumerate(run.probe_steps()):
        norms = np.linalg.norm(run.load_probe(step)["finder_z"] - z, axis=1)
        assert hist["shift_mean"][i] == pytest.approx(norms.mean(), rel=1e-5)
    assert math.isnan(hist["successive_cos"][0]) and np.all(np.abs(hist["successive_cos"][1:]) <= 1 + 1e-9)
    assert np.all(np.abs(hist["same_class_cos"]) <= 1 + 1e-9)
    u = run.load_probe(run.probe_steps()[-1])["finder_z"] - z  # any two probes: the baseline, computed directly
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    assert hist["any_probes_cos"][-1] == pytest.approx((u @ u.T)[np.triu_indices(len(u), 1)].mean(), rel=1e-5)
    shifts = run.load_probe(run.probe_steps()[-1])["finder_z"] - z  # the part that depends on z, directly
    assert hist["spread"][-1] == pytest.approx(np.linalg.norm(shifts - shifts.mean(0), axis=1).mean(), rel=1e-5)
    pcr = shift_history(Run(app_runs / "t-pcr"))  # no finder: no shift, and no direction made up for it
    assert np.all(pcr["shift_mean"] == 0) and np.isnan(pcr["same_class_cos"]).all()
    assert one_vector_reading(pcr, pcr["steps"][-1]) is None


def test_a_finder_that_adds_one_vector_is_called_so_and_one_that_picks_latents_is_not():
    hist = {"steps": np.array([50, 100]), "shift_mean": np.array([0.9, 0.4]), "spread": np.array([0.002, 0.3])}
    v = one_vector_reading(hist, 50)
    assert (v.step, v.shift, v.spread) == (50, pytest.approx(0.9), pytest.approx(0.002, abs=5e-4))
    shown = one_vector_finding(v)
    assert "one vector to every latent" in shown.sentence and "0.900" in shown.sentence and "0.002" in shown.sentence
    assert "docs/method.md#a-finder-that-adds-one-vector" in shown.details
    assert one_vector_reading(hist, 100) is None  # three quarters of its shift depend on z
    assert one_vector_reading(hist, 75) is None  # no probe at that step: nothing to say


def test_sample_stats_match_the_probe_probabilities_and_features(app_runs):
    run = Run(app_runs / "t-mgr")
    step = run.probe_steps()[-1]
    stats = sample_stats(run, step)
    p, y = run.load_probe(step), run.load_probe("static")["probe_y"]
    conf = p["finder_probs"][np.arange(len(y)), y]
    overall = {r["kind"]: r for r in stats["rows"] if r["class"] == "all"}
    assert overall["finder"]["confidence_mean"] == pytest.approx(conf.mean())
    assert overall["finder"]["confidence_std"] == pytest.approx(conf.std())
    assert np.all(stats["per_probe"]["finder"]["margin"] <= conf + 1e-12)
    f = p["uniform_features"][y == 0].astype(np.float64)
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    pairwise = d[np.triu_indices(len(f), 1)].mean()
    row = next(r for r in stats["rows"] if r["class"] == stats["classes"][0] and r["kind"] == "uniform")
    assert row["diversity_mean"] == pytest.approx(pairwise)
    pcr = sample_stats(Run(app_runs / "t-pcr"), step)  # uniform sampling: both kinds are the same samples
    assert [r["confidence_mean"] for r in pcr["rows"] if r["kind"] == "uniform"] == \
        [r["confidence_mean"] for r in pcr["rows"] if r["kind"] == "finder"]


def test_reading_says_when_the_kl_term_is_most_of_the_hypergradient():
    """Late in a cosine schedule the lookahead's weight η is near 0 and the KL term is nearly the whole
    hypergradient: the reading must say the finder is being pulled back to uniform sampling, and must not
    say it when the KL share is small or not logged."""
    steps = np.arange(10, 210, 10, dtype=float)
    cos = 0.3 + 0.02 * np.sin(steps)
    late = signal_reading({"step": steps, "hg_cos": cos, "kl_share": np.linspace(0.2, 0.95, len(steps))})
    early = signal_reading({"step": steps, "hg_cos": cos, "kl_share": np.full(len(steps), 0.2)})
    old = signal_reading({"step": steps, "hg_cos": cos})
    assert "pulled back toward the prior" in signal_finding(late).details and late.kl_share_last > 0.5
    assert "pulled back" not in signal_finding(early).details and "pulled back" not in signal_finding(old).details
    assert old.kl_share is None
