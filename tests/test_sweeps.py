"""Sweeps: a demo of several doses against one reference, launched through the real supervisor on tiny digits
runs, summarised per dose as the record and the app show it, and explained by its "why" readings (per-class
costs, the arms' samples) from the runs' own files."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mgr import demo_queue, demo_records, demos, paired
from mgr.analysis import demo_why
from mgr.runstore import Run
from tests.conftest import TINY_DEMO
from tests.waiting import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
TINY = TINY_DEMO  # tests/conftest.py: digits, 4 steps, 2 evaluations


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The synthetic-weight sweep (base against gda and pcr at three weights) with 2 seeds, run to the end."""
    runs_dir = tmp_path_factory.mktemp("sweep")
    launch_id = demo_queue.launch("synthetic-weight", 2, runs_dir, TINY, parallel=2)
    m = demo_queue.read_manifest(runs_dir, launch_id)
    wait_for(lambda: demo_queue.outcome(runs_dir, m).done and not demo_queue.supervisor_alive(runs_dir, launch_id),
             what="the sweep's 14 runs")
    return runs_dir, m


def test_a_sweep_trains_each_distinct_arm_once_per_seed_and_summarises_every_dose(sweep):
    runs_dir, m = sweep
    demo = demos.DEMOS["synthetic-weight"]
    assert len(m["runs"]) == 2 * len(demo.arms) == 14  # base once per seed, not once per pair
    for r in m["runs"]:
        cfg = Run(runs_dir / r["run_id"]).config
        arm = demo.arms[r["arm"]]
        assert (cfg["method"], cfg["lam"]) == (arm.values["method"], arm.values.get("lam", 1.0))
    out = demo_queue.outcome(runs_dir, m)
    assert out.done and out.failed == () and len(out.summaries) == len(demo.pairs) == 6
    for pair, summary in zip(demo.pairs, out.summaries):
        ia, ib = demo.arm_index(pair.a), demo.arm_index(pair.b)
        assert summary.diffs == pytest.approx([v[ia] - v[ib] for v in out.values])
        assert summary.verdict == paired.verdict_of(summary.ci95)
    assert out.verdict == demos.overall_verdict(out.summaries)


def test_a_sweep_record_has_its_kind_doses_and_one_summary_per_dose(sweep, tmp_path):
    import demos as bench_demos  # bench/demos.py
    runs_dir, m = sweep
    out = demo_queue.outcome(runs_dir, m)
    rec = bench_demos.record_of(m, out, 12.0, ["--quick"], runs_dir)
    assert rec["kind"] == "failure" and rec["doses"] == list(demos.WEIGHTS) and rec["data_seeds"] == [0, 0]
    assert [(p["family"], p["dose"]) for p in rec["per_dose"]] == [(f, d) for f in ("gda", "pcr") for d in demos.WEIGHTS]
    for p, s in zip(rec["per_dose"], out.summaries):
        assert p["diffs"] == list(s.diffs) and p["verdict"] == s.verdict and (p["ci95"] is None) == (s.ci95 is None)
    assert rec["verdict"] == out.verdict and len(rec["values"][0]) == len(demos.DEMOS["synthetic-weight"].arms)
    # the record reads back as the same per-pair summaries, and --resummarize leaves a current record alone
    assert demo_records.record_pairs(rec) == list(out.summaries)
    path = tmp_path / "demos.json"
    path.write_text(json.dumps([rec]))
    assert bench_demos.resummarize(path, ["--resummarize"]) == []
    changed = {**rec, "values": [[v[0] + 1.0, *v[1:]] for v in rec["values"]]}  # base 1 point better per seed
    path.write_text(json.dumps([changed]))
    (redone,) = bench_demos.resummarize(path, ["--resummarize"])
    assert redone["per_dose"][0]["mean_diff"] == pytest.approx(rec["per_dose"][0]["mean_diff"] + 1.0)


def test_the_why_readings_come_from_the_sweeps_own_runs(sweep):
    runs_dir, m = sweep
    demo = demos.DEMOS["synthetic-weight"]
    out = demo_queue.outcome(runs_dir, m)
    pair = demo.pairs[2]  # base − gda-w4
    ids_a = [row[demo.arm_index(pair.a)] for row in out.run_ids]
    ids_b = [row[demo.arm_index(pair.b)] for row in out.run_ids]
    costs = demo_why.class_costs(runs_dir, ids_a, ids_b)
    assert costs.n == 2 and len(costs.classes) == 10 and costs.classes[0] == "0"
    for k, (ia, ib) in enumerate(zip(ids_a, ids_b)):  # the trainer's per-class accuracy, differenced per seed
        a, b = (Run(runs_dir / i).metrics()[-1]["test_class_acc"] for i in (ia, ib))
        assert costs.per_seed[k] == pytest.approx(100 * (np.array(a) - np.array(b)))
    samples = demo_why.arm_samples(runs_dir, ids_b)
    assert samples.images.dtype == np.uint8 and samples.n == 20 and samples.images.shape[1:] == (1, 8, 8)
    assert list(samples.asked[:2]) == [0, 0]  # class-major: each class's probe latents together
    reading = demo_why.judge_samples(samples)
    assert 0 <= reading.label_accuracy <= 1 and reading.confusion().sum() == samples.n
    assert demo_why.within_class_spread(samples) > 0
    assert demo_why.arm_samples(runs_dir, ids_a) is None  # base trains on real images only: no generator, no samples


def test_the_trainers_per_class_accuracy_agrees_with_its_overall_accuracy(sweep):
    runs_dir, m = sweep
    for r in m["runs"][:3]:
        last = Run(runs_dir / r["run_id"]).metrics()[-1]
        from mgr.data import DataConfig, load
        d = load(DataConfig("digits", ratio=0.1))
        counts = np.bincount(d.y_test.numpy(), minlength=10)
        assert sum(a * c for a, c in zip(last["test_class_acc"], counts)) / counts.sum() == pytest.approx(last["test_acc"])


def test_home_draws_a_sweep_as_a_dose_curve_and_explains_it_from_its_runs(sweep, monkeypatch):
    """The verdict panel of a finished sweep: the headline, a curve per family of the mean difference against
    the dose with each seed's dot, and the "why" panel's per-class chart of the pair it explains, with links to
    that pair's run."""
    from tests.test_app import chart_title, charts, open_page
    runs_dir, m = sweep
    demo = demos.DEMOS["synthetic-weight"]
    out = demo_queue.outcome(runs_dir, m)
    at = open_page(None, runs_dir, monkeypatch, demo=m["id"])
    assert at.selectbox(key="demo_launch").value == m["id"]
    (curve,) = [c for c in charts(at) if "at each dose" in chart_title(c)]
    spec = json.loads(curve.proto.spec)
    lines = [t for t in spec["data"] if t.get("mode") == "lines+markers"]
    means = {fam: [s.mean for p, s in zip(demo.pairs, out.summaries) if p.family == fam] for fam in demo.families}
    assert [t["name"] for t in lines] == ["base − gda", "base − pcr"]
    for t, fam in zip(lines, demo.families):
        assert t["x"] == list(demo.doses) and t["y"] == pytest.approx(means[fam])
    assert spec["layout"]["xaxis"]["type"] == "log"
    # the why panel explains the pair with the largest mean difference first
    explained = at.selectbox(key=f"why-pair-{m['id']}-done").value
    assert abs(out.summaries[explained].mean) == max(abs(s.mean) for s in out.summaries)
    pair = demo.pairs[explained]
    (bars,) = [c for c in charts(at) if "per class" in chart_title(c)]
    ids = [[row[demo.arm_index(x)] for row in out.run_ids] for x in (pair.a, pair.b)]
    assert json.loads(bars.proto.spec)["data"][0]["y"] == pytest.approx(list(demo_why.class_costs(runs_dir, *ids).mean))
    links = [link.proto for link in at.get("page_link")]
    assert any("Latents of" in link.label and "latents" in link.page for link in links), links
