"""Demos as paired experiments: the statistics against known values, and real demo launches (a
manifest, the detached supervisor, real trainers) run to a verdict, stopped and resumed as a
whole, and picked up again after the supervisor died."""
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mgr import demo_queue, demo_records, demos, paired
from mgr.data import DEBIAN_FASHION_MNIST
from mgr.launch import LaunchError, build_config
from mgr.runstore import Run
from pages._text import demo_finding as finding
from tests.conftest import ENDLESS_DEMO, TINY_DEMO
from tests.waiting import TIMEOUT, wait_for

REPO = Path(__file__).resolve().parent.parent

# the smallest demo runs that still evaluate twice: seconds each
TINY = TINY_DEMO  # tests/conftest.py: digits, 4 steps, 2 evaluations


# ----------------------------------------------------------------------------- statistics

def test_paired_interval_matches_a_hand_computed_t_interval():
    s = paired.summarize([1, 2, 3, 4, 5])
    # mean 3, sd √2.5, t_{0.975,4} = 2.7764: 3 ± 2.7764·√2.5/√5
    half = 2.7764 * math.sqrt(2.5) / math.sqrt(5)
    assert s.mean == pytest.approx(3.0)
    assert s.ci95 == pytest.approx((3 - half, 3 + half))
    assert s.ci95[0] == pytest.approx(1.0368, abs=1e-4)
    assert (s.holds_in, s.n, s.verdict) == (5, 5, "holds")


def test_t_table_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert paired.t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=6e-5)
    with pytest.raises(ValueError, match="1 to 30"):
        paired.t_critical(31)


def test_verdict_holds_exactly_when_the_lower_end_is_above_zero():
    assert paired.summarize([-3, -2, -4]).verdict == "opposite"
    assert paired.summarize([-1, 1, 2]).verdict == "inconclusive"
    # mean 1, sd 0.5: lo = 1 − t_{0.975,3}·0.25 = 0.2044 > 0
    assert paired.summarize([0.5, 1, 1, 1.5]).verdict == "holds"
    # four positive seeds, but a spread that lets the mean be negative: still inconclusive
    wide = paired.summarize([0.1, 0.2, 0.3, 5.0])
    assert wide.holds_in == 4 and wide.ci95[0] < 0 and wide.verdict == "inconclusive"
    one = paired.summarize([2.0])
    assert one.ci95 is None and one.verdict == "inconclusive"
    assert "no interval yet" in demos.describe(demos.DEMOS["gda-hurts"], one)
    assert "inconclusive" in demos.describe(demos.DEMOS["gda-hurts"], wide)
    with pytest.raises(ValueError, match="finite"):
        paired.summarize([1.0, float("nan")])


def test_a_size_is_compared_as_a_ratio_so_one_guard_stop_does_not_hide_a_failure_every_seed_shows():
    """The failure-mode demos' statistic, the latent shift, is compared as log(A / B): with the high arm
    2-3× further in every one of 8 seeds and one of them stopped by the guard at 40, a t-interval of
    differences is dominated by that seed and allows either sign; the geometric mean's interval holds."""
    lr = demos.DEMOS["finder-lr-too-high"]
    assert lr.statistic is demos.LATENT_SHIFT and lr.statistic.ratio and lr.diff_label == "lr-1e-1 / lr-1e-3"
    values = [(0.6, 0.3), (0.9, 0.3), (40.0, 0.3), (0.8, 0.4), (0.75, 0.25), (0.5, 0.25), (0.9, 0.3), (0.7, 0.35)]
    as_differences = paired.summarize([a - b for a, b in values])
    as_ratios = paired.summarize([demos.seed_difference(lr.statistic, a, b) for a, b in values])
    assert as_differences.verdict == "inconclusive" and as_ratios.verdict == "holds"
    assert demos.seed_difference(lr.statistic, 40.0, 0.3) == pytest.approx(math.log(40 / 0.3))
    assert demos.seed_difference(lr.statistic, 0.0, 0.3) is None  # no ratio of a zero shift: the seed is left out
    text = demos.describe(lr, as_ratios)
    assert text.startswith("lr-1e-1 / lr-1e-3 = ×") and "above ×1" in text and "8 of 8 seeds" in text
    assert f"×{math.exp(as_ratios.mean):.3g} " in text
    accuracy = demos.DEMOS["gda-hurts"]
    assert not accuracy.statistic.ratio and demos.seed_difference(accuracy.statistic, 80.0, 78.5) == 1.5


# ----------------------------------------------------------------------------- definitions

def test_bad_seeds_unknown_demo_or_bad_override_are_refused_before_any_work(tmp_path):
    with pytest.raises(LaunchError, match="unknown demo 'gda'.*gda-hurts, synthetic-weight"):
        demo_queue.launch("gda", 5, tmp_path)
    for bad in (0, 1, 32, "5", 2.5, True):
        with pytest.raises(LaunchError, match="2 to 31 seeds"):
            demo_queue.launch("gda-hurts", bad, tmp_path)
    with pytest.raises(LaunchError, match="steps=0"):
        demo_queue.launch("gda-hurts", 2, tmp_path, {**TINY, "steps": 0})
    with pytest.raises(LaunchError, match="no demo launch"):
        demo_queue.read_manifest(tmp_path, "gda-hurts-nothing")
    assert not (tmp_path / demo_queue.DEMOS_DIR).exists() and not any(tmp_path.iterdir())


def test_each_demo_asks_a_question_and_its_pairs_differ_in_what_it_asks_only():
    for demo in demos.DEMOS.values():
        assert demo.question.endswith("?") and demo.kind in demos.KINDS, demo.id
        assert len({a.label for a in demo.arms}) == len(demo.arms)
        for pair in demo.pairs:
            a, b = pair.a, pair.b
            assert a.label != b.label and demo.pair_label(pair) == \
                f"{a.label} {'/' if demo.statistic.ratio else '−'} {b.label}"
            assert {k: v for k, v in a.values.items() if k.startswith("data.")} == \
                   {k: v for k, v in b.values.items() if k.startswith("data.")}
            assert a.values["steps"] == b.values["steps"] and "seed" not in a.values
    differ = {d.id: [sorted(k for k in {**p.a.values, **p.b.values} if p.a.values.get(k) != p.b.values.get(k))
                     for p in d.pairs] for d in demos.DEMOS.values()}
    assert differ == {"gda-hurts": [["method"]], "pcr-repairs": [["method"]], "finder-helps-pcr": [["method"]],
                      "mltp-helps": [["mltp_variant", "procedure"]], "co-learner-helps": [["co_learner"]],
                      "mlp-finder-leaves-support": [["finder"]], "finder-lr-too-high": [["finder_lr"]],
                      "synthetic-weight": [["lam", "method"]] * 6,
                      "weak-generator": [["generator"]] * 2,
                      "wrong-labels": [["syn_label_noise"]] * 3,
                      "low-diversity": [["latent_psi"]] * 4,
                      "leaky-generator": [["generator", "leaky_generator"], ["generator", "leaky_generator", "method"]]}
    sweep = demos.DEMOS["synthetic-weight"]
    assert sweep.sweep and sweep.doses == demos.WEIGHTS and sweep.families == ("gda", "pcr")
    assert [p.dose for p in sweep.pairs if p.family == "gda"] == list(demos.WEIGHTS)
    assert len(sweep.arms) == 1 + 2 * len(demos.WEIGHTS)  # base, the one reference, is trained once per seed
    failures = [d for d in demos.DEMOS.values() if d.kind == "failure" and d.subject == "augmentation"]
    assert len(failures) >= 5


def test_seed_k_trains_on_data_seed_k_mod_3_with_that_splits_generator_for_both_arms():
    demo = demos.DEMOS["weak-generator"]
    for seed in range(5):
        cfgs = [build_config(demos.arm_values(demo, arm, seed)) for arm in demo.arms] if DEBIAN_FASHION_MNIST.exists() \
            else None
        values = [demos.arm_values(demo, arm, seed) for arm in demo.arms]
        assert {v["data.data_seed"] for v in values} == {seed % 3}
        assert [v["generator"] for v in values] == [f"fashion-mnist_ratio0.01_seed{seed % 3}_w16.pt",
                                                    f"fashion-mnist_ratio0.01_seed{seed % 3}_w16_step500.pt"] * 2
        if cfgs:
            assert {c.data.data_seed for c in cfgs} == {seed % 3}
    # digits ships one split's generator: its seeds stay on data seed 0; a data seed the overrides name stays
    digits = demos.data_overrides("digits")
    assert {demos.arm_values(demos.DEMOS["gda-hurts"], a, 4, digits)["data.data_seed"] for a in demo.arms} == {0}
    assert demos.arm_values(demo, demo.arms[0], 4, {"data.data_seed": 0})["data.data_seed"] == 0


def test_a_demo_that_needs_fashion_mnist_generators_is_refused_on_digits_before_any_work(tmp_path):
    for demo_id in ("weak-generator", "leaky-generator"):
        with pytest.raises(LaunchError, match=f"demo {demo_id} runs on fashion-mnist only"):
            demo_queue.launch(demo_id, 2, tmp_path, demos.data_overrides("digits"))
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
def test_every_arm_of_every_demo_is_a_valid_launch():
    for demo in demos.DEMOS.values():
        for arm in demo.arms:
            cfg = build_config(demos.arm_values(demo, arm, seed=3))
            assert cfg.seed == 3 and cfg.steps == arm.values["steps"]


def test_demos_run_on_fashion_mnist_by_default_and_on_digits_when_chosen(tmp_path):
    """Home's data choice: the default setting is Fashion-MNIST 1% evaluated on a 2 000-image test subset;
    digits replaces every data field (its test set is whole), and an unknown choice is refused."""
    demo = demos.DEMOS["finder-helps-pcr"]
    for arm in demo.arms:
        cfg = build_config(demos.arm_values(demo, arm, seed=0))
        assert (cfg.data.dataset, cfg.data.ratio, cfg.data.test_subset) == ("fashion-mnist", 0.01, 2000)
        assert cfg.generator == demos.DEMO_GENERATOR.format(data_seed=0)  # the demo-sized generator of that split
        cfg = build_config(demos.arm_values(demo, arm, seed=0, overrides=demos.data_overrides("digits")))
        assert (cfg.data.dataset, cfg.data.ratio, cfg.data.test_subset, cfg.batch_size) == ("digits", 0.1, None, 64)
        assert cfg.generator is None  # digits' own shipped generator
        # any other split (here TINY: digits without naming a generator) takes that split's generator
        assert demos.arm_values(demo, arm, seed=0, overrides=TINY)["generator"] is None
        assert cfg.method == arm.values["method"]  # the arm's own fields stay
    launch_id = demo_queue.launch("gda-hurts", 2, tmp_path, demos.data_overrides("digits"), start=False)
    runs = demo_queue.read_manifest(tmp_path, launch_id)["runs"]
    assert all("--dataset digits" in r["command"] and "--test-subset" not in r["command"] for r in runs)
    with pytest.raises(LaunchError, match="unknown demo data 'mnist'; choose one of fashion-mnist, digits"):
        demos.data_overrides("mnist")


def test_the_finder_demos_run_a_short_schedule_on_fashion_mnist_only():
    """On Fashion-MNIST the two finder demos run 100 steps (their statistic, the latent shift, shows
    early there) evaluated every 25, the accuracy demos 200 evaluated every 100 (their statistic reads the
    last evaluation only); on digits every demo runs that setting's 200 steps, evaluated every 50 (at 100
    steps the finder-lr demo lost its effect). Both arms of a demo always share the schedule and the data."""
    for demo in demos.DEMOS.values():
        for data in demo.datasets:
            cfgs = [build_config(demos.arm_values(demo, arm, seed=0, overrides=demos.data_overrides(data)))
                    for arm in demo.arms]
            short = demo.subject == "the finder" and data == "fashion-mnist"
            expected = (100, 25) if short else (200, 100) if data == "fashion-mnist" else (200, 50)
            assert {(c.steps, c.eval_every) for c in cfgs} == {expected}
            assert {c.data.dataset for c in cfgs} == {demos.SETTINGS[data]["data.dataset"]}


# ----------------------------------------------------------------------------- real launches

def test_a_tiny_demo_runs_every_seed_of_both_arms_through_the_supervisor_to_a_verdict(tiny_demo):
    tmp_path, m, most = tiny_demo
    launch_id = m["id"]
    # seed by seed, each seed's dearer run (gda: base plus the generator's images) queued before its base run
    assert [(r["seed"], r["arm"]) for r in m["runs"]] == [(0, 1), (0, 0), (1, 1), (1, 0)]
    assert all("--seed" in r["command"] and "--threads 1" in r["command"] for r in m["runs"][2:])
    assert most <= 2  # the queue: never more trainers than `parallel`
    out = demo_queue.outcome(tmp_path, m)
    assert out.done and out.failed == ()
    assert all(a is not None and b is not None for a, b in out.values)
    assert out.summary.diffs == pytest.approx([a - b for a, b in out.values])
    assert out.summary.ci95 is not None and out.summary.verdict in paired.VERDICTS
    for r in m["runs"]:  # both arms of seed k: the same training seed and data split
        cfg = Run(tmp_path / r["run_id"]).config
        assert cfg["seed"] == r["seed"] and cfg["data"]["dataset"] == "digits"
        assert cfg["method"] == ("base", "gda")[r["arm"]] and cfg["steps"] == 4
    assert demo_queue.list_launches(tmp_path)[0]["id"] == launch_id
    # what bench/demos.py stores as the record's arms (the runs' own config.json) is what the app expects
    ran = [demo_records.comparable(Run(tmp_path / r["run_id"]).config)
           for r in sorted(m["runs"][:2], key=lambda r: r["arm"])]
    assert ran == demo_records.arm_configs(demos.DEMOS["gda-hurts"], overrides=TINY)


def test_a_measured_record_is_shown_only_for_the_configuration_it_ran():
    """Home shows bench/results/demos.json's verdicts (a badge and a sentence): one measured with other arms (a changed default)
    must say it is out of date, not pass for today's result; a default of a part an arm does not have
    (a base run's finder_lr) changes nothing."""
    record = {"diffs": [1.0, 2.0], "mean_diff": 1.5, "ci95": [-4.85, 7.85], "holds_in": 2, "verdict": "inconclusive",
              "date": "2026-12-02", "dataset": "fashion-mnist", "ratio": 0.01, "seeds": 2, "steps": 200,
              "data_seeds": [0, 1]}
    finder = demos.DEMOS["finder-helps-pcr"]
    current = {**record, "arms": demo_records.arm_configs(finder)}
    assert finding(finder, current).verdict == "inconclusive" and "2 seeds" in finding(finder, current).details
    old_lr = {**record, "arms": [{**a, "finder_lr": 1e-4} if a["method"] == "mgr" else a for a in current["arms"]]}
    assert finding(finder, old_lr).verdict == "out of date"
    assert finding(finder, record).verdict == "out of date"  # an older record without arms
    # a record made before a field existed (here lam_kl_schedule) is today's when today's value is its default
    before = {**record, "arms": [{k: v for k, v in a.items() if k != "lam_kl_schedule"} for a in current["arms"]]}
    assert "lam_kl_schedule" in current["arms"][0]  # the mgr arm (a pcr arm has no finder, so no such field)
    assert finding(finder, before).verdict in paired.VERDICTS
    scheduled = [{**current["arms"][0], "lam_kl_schedule": "lr"}, current["arms"][1]]
    assert not demo_records.same_arms(before["arms"], scheduled)  # ... and not when today's value is another
    # a field whose default changed since it was added (finder_activation: relu then, silu now): a record
    # without it ran relu, and is out of date against today's silu, not taken for it
    relu_era = {**record, "arms": [{k: v for k, v in a.items() if k != "finder_activation"} for a in current["arms"]]}
    assert current["arms"][0]["finder_activation"] == "silu" and "finder_activation" not in current["arms"][1]
    from mgr.analysis.runs import config_items
    linear = dict(config_items({"data": {}, "method": "mgr", "finder": "linear", "finder_activation": "silu"}))
    assert "finder" in linear and "finder_activation" not in linear  # no hidden units: the field does not apply
    assert finding(finder, relu_era).verdict == "out of date"
    assert demo_records.same_arms(relu_era["arms"], [{**current["arms"][0], "finder_activation": "relu"}, current["arms"][1]])
    gda = demos.DEMOS["gda-hurts"]
    arms = demo_records.arm_configs(gda)
    assert all("finder_lr" not in a for a in arms)
    assert finding(gda, {**record, "arms": arms}).verdict in paired.VERDICTS
    assert finding(gda, {**record, "arms": arms}, "digits").verdict == "out of date"
    # a failure-mode record summarised as differences (before the ratio) is not shown as today's verdict
    lr = demos.DEMOS["finder-lr-too-high"]
    as_differences = {**record, "arms": demo_records.arm_configs(lr)}
    assert "--resummarize" in finding(lr, as_differences).details
    assert finding(lr, as_differences).verdict == "out of date"
    assert finding(lr, {**as_differences, "compare": "log ratio"}).verdict in paired.VERDICTS
    # a record whose seeds all trained on data seed 0 (before seed k took data seed k mod 3) is out of date
    one_split = {**record, "arms": arms, "data_seeds": [0, 0]}
    assert finding(gda, one_split).verdict == "out of date" and "other data splits" in finding(gda, one_split).sentence
    assert finding(gda, {k: v for k, v in one_split.items() if k != "data_seeds"}).verdict == "out of date"


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
def test_every_shipped_demo_record_is_a_measurement_of_todays_demo():
    """The verdicts Home shows come from bench/results/demos.json: a demo whose arms changed (a new default,
    a redesigned demo) without a re-run of bench/demos.py would show "Out of date" on a fresh clone, so
    every demo has a current record on both data settings."""
    for data in demos.SETTINGS:
        records = demo_records.measured(data=data)
        for demo in (d for d in demos.DEMOS.values() if data in d.datasets):
            shown = finding(demo, records.get(demo.id), data)
            assert shown.verdict in paired.VERDICTS, (data, demo.id, shown)
        for demo_id, record in demo_records.measured(demo_records.MEASURED_10_SEEDS, data=data).items():  # shown under them
            assert finding(demos.DEMOS[demo_id], record, data).verdict in paired.VERDICTS, (data, demo_id)


def test_stop_and_resume_apply_to_the_whole_demo(tmp_path):
    launch_id = demo_queue.launch("pcr-repairs", 2, tmp_path, ENDLESS_DEMO, parallel=2)
    m = demo_queue.read_manifest(tmp_path, launch_id)
    ids = [r["run_id"] for r in m["runs"]]

    def step(i):
        return Run(tmp_path / ids[i]).status().get("step", 0)
    try:
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:2] == ["running"] * 2 and min(step(0), step(1)) >= 5,
                 what="the first two runs to train")
        demo_queue.stop(tmp_path, launch_id)
        wait_for(lambda: demo_queue.run_states(tmp_path, m) == ["stopped", "stopped", "queued", "queued"],
                 what="the running trainers to stop")
        assert not demo_queue.supervisor_alive(tmp_path, launch_id)
        stopped_at = [step(0), step(1)]
        assert not demo_queue.ensure_supervisor(tmp_path, launch_id)  # the app's poll does not restart it
        assert demo_queue.run_states(tmp_path, m) == ["stopped", "stopped", "queued", "queued"]
        demo_queue.resume(tmp_path, launch_id)
        with pytest.raises(LaunchError, match="is running"):
            demo_queue.resume(tmp_path, launch_id)
        # both trainers up and stepping again: a resumed run reads `stopped` until then, and is started once
        wait_for(lambda: demo_queue.run_states(tmp_path, m)[:2] == ["running"] * 2 and step(0) > stopped_at[0]
                 and step(1) > stopped_at[1], what="the stopped runs to continue")
        log = (tmp_path / demo_queue.DEMOS_DIR / f"{launch_id}.log").read_text()
        assert sorted(line for line in log.splitlines() if line.endswith("(stopped)")) == \
            sorted([f"started {ids[0]} (stopped)", f"started {ids[1]} (stopped)"])
        assert demo_queue.run_states(tmp_path, m)[2:] == ["queued", "queued"]  # two at a time, as before
        assert Run(tmp_path / ids[0]).metrics()[0]["step"] == 5  # continued, not restarted
    finally:
        demo_queue.stop(tmp_path, launch_id)
    wait_for(lambda: all(s in ("stopped", "queued") for s in demo_queue.run_states(tmp_path, m)),
             what="the second stop")


def test_a_launch_survives_its_supervisor_dying_and_the_app_restarting(tmp_path):
    launch_id = demo_queue.launch("gda-hurts", 2, tmp_path, TINY, parallel=2)
    pid = int((tmp_path / demo_queue.DEMOS_DIR / f"{launch_id}.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # as a reboot or an OOM kill would
    wait_for(lambda: not demo_queue.supervisor_alive(tmp_path, launch_id), what="the supervisor to die")
    # a restarted app knows the launch only from its manifest; its first poll restarts the queue
    (m,) = demo_queue.list_launches(tmp_path)
    assert m["id"] == launch_id and len(m["runs"]) == 4
    assert demo_queue.ensure_supervisor(tmp_path, launch_id)
    wait_for(lambda: demo_queue.outcome(tmp_path, m).done and not demo_queue.supervisor_alive(tmp_path, launch_id),
             what="the restarted demo")
    assert demo_queue.outcome(tmp_path, m).summary.n == 2


def test_the_queue_starts_each_seeds_dearest_runs_first(tmp_path):
    """A sweep's manifest lists its runs seed by seed, and within a seed by their expected cost: pcr (the
    generator's images twice through the classifier) before gda before base, so the runs left when the workers
    run out of work are the cheap ones. The runs' arms and values do not change with the order."""
    launch_id = demo_queue.launch("synthetic-weight", 2, tmp_path, start=False)
    m = demo_queue.read_manifest(tmp_path, launch_id)
    demo = demos.DEMOS["synthetic-weight"]
    assert [r["seed"] for r in m["runs"]] == [0] * 7 + [1] * 7
    methods = [r["values"]["method"] for r in m["runs"][:7]]
    assert methods == ["pcr"] * 3 + ["gda"] * 3 + ["base"]
    for r in m["runs"]:
        assert r["values"] == demos.arm_values(demo, demo.arms[r["arm"]], r["seed"])
        assert r["run_id"].endswith(f".{demo.arms[r['arm']].label}.s{r['seed']}")


def test_the_supervisor_entry_imports_nothing_heavy_so_its_workers_start_before_it_loads_torch():
    """Each pool worker imports the supervisor's entry module again as its main module (spawn): torch there would
    be loaded twice over before the first run, on every launch."""
    r = subprocess.run([sys.executable, "-c", "import sys, mgr.demo_supervisor; print(sorted(m for m in ('torch', "
                        "'numpy', 'mgr.demo_queue', 'mgr.launch') if m in sys.modules))"], cwd=REPO, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
