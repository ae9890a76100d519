"""The benchmark scripts' --quick modes, chained as a user runs them: accuracy (its runs kept), step
time with the reference loop, memory, finder FID on the accuracy run of mgr, and the report over
what they wrote. The numbers are not checked (6-step runs); the files' fields and the claims are."""
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
CLAIMS = 7


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Every bench's --quick output in one results folder, as the report reads it."""
    d = tmp_path_factory.mktemp("bench-results")
    out = {"dir": d}
    out["accuracy"] = load("accuracy").main(["--quick", "--device", "cpu", "--methods", "base,gda,pcr,mgr,mltp-fo,mgr-co",
                                             "--runs-dir", str(d / "runs"), "--out", str(d / "accuracy.json")])
    out["speed"] = load("step_time").main(["--quick", "--device", "cpu", "--out", str(d / "speed.json")])
    out["memory"] = load("memory").main(["--quick", "--device", "cpu", "--out", str(d / "memory.json")])
    mgr_run = next(r["run"] for r in out["accuracy"] if r["variant"] == "mgr")
    out["finder_fid"] = load("finder_fid").main([mgr_run, "--quick", "--out", str(d / "finder_fid.json")])
    out["report"] = load("report").main(["--quick", "--results-dir", str(d), "--out", str(d / "docs" / "RESULTS.md")])
    return out


def test_accuracy_quick_records_every_variant_with_its_command(quick):
    records = quick["accuracy"]
    assert [(r["method"], r["procedure"], r["co_learner"]) for r in records] == [
        ("base", "standard", False), ("gda", "standard", False), ("pcr", "standard", False), ("mgr", "standard", False),
        ("base", "mltp", False), ("mgr", "standard", True)]
    need = {"dataset", "ratio", "model", "method", "variant", "procedure", "co_learner", "seed", "steps", "batch_size",
            "val_acc", "test_acc", "command", "machine", "date"}
    assert all(need <= set(r) and 0 <= r["test_acc"] <= 1 for r in records)
    assert json.loads((quick["dir"] / "accuracy.json").read_text()) == records  # appended one by one, all kept
    assert records[0]["command"].startswith("python bench/accuracy.py --quick")


def test_step_time_quick_times_the_reference_loop_against_base(quick):
    result = quick["speed"]
    rows = {r["method"]: r for r in result["results"]}
    assert list(rows) == ["base", "gda", "pcr", "mgr", "mltp-fo", "reference"]
    assert all(r["ms_per_step"] > 0 for r in rows.values())
    assert result["reference"]["model"] == "mgr SmallCNN class in the plain loop" and result["reference"]["dtype"] == "fp32"
    assert result["speedup_vs_reference"] == pytest.approx(rows["reference"]["ms_per_step"] / rows["base"]["ms_per_step"],
                                                           rel=0.02)
    # MLTP's img/s counts both of its batches
    for name, f in (("base", 1), ("mltp-fo", 2)):
        assert rows[name]["img_per_s"] == pytest.approx(f * 128 * 1000 / rows[name]["ms_per_step"], rel=0.02)
    assert json.loads((quick["dir"] / "speed.json").read_text())["command"].startswith("python bench/step_time.py")


def test_step_time_reference_model_has_our_resnet18s_compute():
    from mgr.models.classifier import build_classifier
    ref, desc = load("step_time").reference_model("resnet18", 10, 1)
    ours = build_classifier("resnet18", 10, 1)
    assert "torchvision resnet18" in desc
    assert [tuple(p.shape) for p in ref.parameters()] == [tuple(p.shape) for p in ours.body.parameters()] + [
        tuple(p.shape) for p in ours.head.parameters()]


def test_memory_quick_measures_each_method_in_its_own_process(quick):
    result = json.loads((quick["dir"] / "memory.json").read_text())
    assert result == quick["memory"]
    assert [r["method"] for r in result["results"]] == ["base", "mgr"]
    for r in result["results"]:
        # its own peaks: building and training grow the child beyond its imports (a peak inherited from the test
        # process, as ru_maxrss would be across exec, reads the same before and after)
        assert 0 < r["import_rss_mib"] < r["peak_rss_mib"]
    assert {"machine", "date", "command", "device", "dataset", "model", "batch_size"} <= set(result)


def test_finder_fid_quick_compares_uniform_and_finder_samples(quick):
    (rec,) = quick["finder_fid"]
    assert rec["method"] == "mgr" and rec["n"] == 200 and rec["checkpoint_step"] == 6
    assert rec["fid_uniform"] > 0 and rec["fid_finder"] > 0
    assert "SmallCNN" in rec["extractor"] or "Inception" in rec["extractor"]
    assert json.loads((quick["dir"] / "finder_fid.json").read_text()) == [rec]


def test_finder_fid_refuses_a_run_without_a_generator_before_any_work(quick):
    base_run = next(r["run"] for r in quick["accuracy"] if r["variant"] == "base")
    with pytest.raises(SystemExit, match="method base uses no generator"):
        load("finder_fid").main([base_run, "--quick", "--out", str(quick["dir"] / "nothing.json")])
    assert not (quick["dir"] / "nothing.json").exists()


def test_report_quick_renders_every_section_and_claim(quick):
    text = (quick["dir"] / "docs" / "RESULTS.md").read_text()
    assert text == quick["report"] + "\n"
    verdicts = re.findall(r"^- \*\*\((\d)\) .*?: (reproduced|not reproduced|partly reproduced.*?|not measured.*?)\.\*\*",
                          text, re.M)
    assert [int(n) for n, _ in verdicts] == list(range(1, CLAIMS + 1))
    for section in ("## Accuracy", "## Speed", "## Memory", "## Finder FID"):
        assert section in text
    assert "### digits 0.1, smallcnn, 6 steps, batch 128" in text and "speed-up" in text
    assert "python bench/accuracy.py --quick" in text and "python bench/step_time.py --quick" in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert "results/accuracy_digits_smallcnn.png" in figures and "results/speed.png" in figures
    for f in figures:
        assert (quick["dir"] / "docs" / f).read_bytes()[:4] == b"\x89PNG"


def test_report_quick_refuses_to_write_docs():
    with pytest.raises(SystemExit):
        load("report").main(["--quick"])


def records(variant, accs, **kw):
    base = dict(dataset="digits", ratio=0.1, model="smallcnn", steps=500, batch_size=128, method=variant)
    return [{**base, **kw, "variant": variant, "seed": s, "test_acc": a} for s, a in enumerate(accs)]


def test_claims_are_judged_from_the_records_by_the_stated_criterion():
    report = load("report")
    rs = (records("base", [0.90, 0.91, 0.92]) + records("gda", [0.85, 0.86, 0.87]) + records("pcr", [0.93, 0.94, 0.95])
          + records("gda-mps", [0.85, 0.87, 0.86]) + records("mgr", [0.95, 0.96, 0.97])
          + records("mgr-mlp", [0.90, 0.94, 0.98]) + records("mgr-linear", [0.90, 0.91, 0.92])
          + records("mgr-first", [0.95, 0.96, 0.965])
          + records("base", [0.95, 0.96, 0.97], ratio=0.25) + records("mgr", [0.96, 0.97, 0.98], ratio=0.25))
    speeds = [{"_file": "speed.json", "device": "cpu", "model": "smallcnn",
               "results": [{"method": "mgr-first", "ms_per_step": 90.0}, {"method": "mgr-second", "ms_per_step": 100.0}]}]
    fid = {"dataset": "digits", "ratio": 0.1, "method": "mgr", "order": "second", "finder": "residual", "n": 2000}
    fids = [{**fid, "run": "r1", "seed": 0, "fid_uniform": 5.0, "fid_finder": 4.0},  # residual: lower in both runs
            {**fid, "run": "r2", "seed": 1, "fid_uniform": 5.0, "fid_finder": 4.5},
            {**fid, "run": "r3", "seed": 0, "finder": "mlp", "fid_uniform": 5.0, "fid_finder": 6.0}]  # mlp: higher
    verdicts = [c["verdict"] for c in report.claims(report.stats(rs), speeds, fids)]
    assert verdicts == [
        "reproduced",  # base − gda = 5 pts > pooled std 1
        "reproduced",  # pcr − gda = 8 > 1
        "reproduced",  # mgr − pcr = 2 > 1, gda-mps − gda = 0
        "reproduced",  # gain 5 at 0.1 > 1 at 0.25
        "not reproduced",  # residual − mlp = 2 < pooled std 2.9 (the mlp varies by 4)
        "reproduced",  # first − second = −0.17 within pooled std, 10% faster
        "partly reproduced (1 of 2 configurations)"]
    one_seed = report.claims(report.stats(records("pcr", [0.9]) + records("gda", [0.8])), [], [])
    assert one_seed[1]["verdict"] == "not measured" and "fewer than 2 seeds" in one_seed[1]["lines"][0]
    assert report.claims({}, [], [])[0]["verdict"] == "not measured"


def test_claims_trains_the_finder_demos_runs_so_a_demos_runs_serve_it():
    """bench/claims.py's pcr and mgr arms are the finder-helps-pcr demo's arms, configuration for
    configuration (its --reuse links a demo's runs only then: when the demos moved to their own generator
    the two drifted apart and nothing was linked), and every other arm differs from them in the finder only."""
    from mgr.demo_records import arm_configs
    from mgr.demos import DEMOS
    claims = load("claims")
    demo = DEMOS["finder-helps-pcr"]
    demo_arms = dict(zip([a.label for a in demo.arms], arm_configs(demo)))
    for arm in ("pcr", "mgr"):
        assert claims.intended(claims.SETTING, arm, 0) == demo_arms[arm]
    for arm in ("mgr-mlp", "mgr-linear"):
        mine, mgr = claims.intended(claims.SETTING, arm, 0), demo_arms["mgr"]
        assert {k for k in mine.keys() | mgr.keys() if mine.get(k) != mgr.get(k)} <= {"finder", "finder_activation"}


def test_accuracy_set_names_the_variant_and_refuses_bad_overrides_before_any_run(tmp_path, capsys):
    acc = load("accuracy")
    out = tmp_path / "acc.json"
    for bad, message in ((["--set", "bogus=1"], "bogus=1"), (["--set", "finder_lr=-1"], "finder_lr=-1 is not allowed"),
                         (["--set", "seed=3"], "other than data, seed and steps")):
        with pytest.raises(SystemExit) as e:
            acc.main(["--quick", "--methods", "base,mgr", "--out", str(out), "--runs-dir", str(tmp_path / "r"), *bad])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "r").exists()
    records = acc.main(["--quick", "--device", "cpu", "--methods", "mgr", "--set", "finder_lr=1e-3",
                        "--runs-dir", str(tmp_path / "r"), "--out", str(out)])
    assert [r["variant"] for r in records] == ["mgr[finder_lr=1e-3]"]
    from mgr.runstore import Run
    assert Run(records[0]["run"]).config["finder_lr"] == 1e-3


def test_app_speed_quick_times_every_page_of_a_real_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MGR_RUNS_DIR", str(tmp_path))  # page_times points the app at its runs; restored after
    app_speed = load("app_speed")
    with pytest.raises(SystemExit):
        app_speed.main(["--quick"])  # without --out it would write into bench/results/
    result = app_speed.main(["--quick", "--out", str(tmp_path / "app_speed.json")])
    assert json.loads((tmp_path / "app_speed.json").read_text()) == result
    for pages in (result["pages"], result["pages_5_runs"]):
        assert set(app_speed.PAGES) <= set(pages)
        assert all(pages[p]["first_s"] > 0 and pages[p]["warm_s"] > 0 for p in app_speed.PAGES)


def test_demos_quick_runs_a_demo_as_the_app_does_and_records_its_verdict(tmp_path):
    """bench/demos.py --quick: gda-hurts on digits, 2 seeds × 2 arms of 4 steps, through the same
    manifest and supervisor as the Home page; one record per demo, replaced on a re-run."""
    out = tmp_path / "demos.json"
    (rec,) = load("demos").main(["--quick", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    need = {"demo", "dataset", "ratio", "methods", "seeds", "diffs", "mean_diff", "ci95", "holds_in", "verdict",
            "seconds", "cores", "machine", "date", "command"}
    assert need <= set(rec) and rec["demo"] == "gda-hurts" and rec["methods"] == ["base", "gda"]
    assert rec["seeds"] == 2 and len(rec["diffs"]) == 2 and rec["failed"] == []
    lo, hi = rec["ci95"]
    assert lo <= rec["mean_diff"] <= hi and rec["verdict"] == ("holds" if lo > 0 else "opposite" if hi < 0 else "inconclusive")
    assert rec["command"].startswith("python bench/demos.py --quick") and rec["seconds"] > 0
    # where the time went: 4 runs' training loops (each well under the demo's wall time), the rest outside them
    assert 0 < rec["loop_s"] < 4 * rec["seconds"]
    assert rec["outside_loop_share"] == pytest.approx(1 - rec["loop_s"] / (rec["parallel"] * rec["seconds"]), abs=0.01)  # both rounded
    load("demos").save(out, {**rec, "seconds": 1.0})  # a re-run's record replaces the demo's, beside the others
    load("demos").save(out, {**rec, "demo": "pcr-repairs"})
    assert [(r["demo"], r["seconds"]) for r in json.loads(out.read_text())] == [("gda-hurts", 1.0),
                                                                               ("pcr-repairs", rec["seconds"])]
    with pytest.raises(SystemExit):
        load("demos").main(["--demos", "gda-hurts,nope", "--out", str(out)])


def test_demos_resummarize_recomputes_a_records_verdict_from_its_values_and_trains_nothing(tmp_path):
    """bench/demos.py --resummarize: a failure-mode record summarised as differences is summarised again as
    the demo compares its seeds today (log ratios) from the values it measured, keeping its command and
    date and noting the re-summary; an accuracy record is left as it was; a missing file is refused."""
    bench = load("demos")
    values = [[1.21, 0.61], [2.13, 0.30], [35.4, 0.25], [0.58, 0.50], [1.57, 0.45]]
    old_lr = {"demo": "finder-lr-too-high", "dataset": "digits", "seeds": 5, "values": values,
              "diffs": [a - b for a, b in values], "mean_diff": 7.7, "ci95": [-11.3, 26.8], "holds_in": 5,
              "verdict": "inconclusive", "command": "python bench/demos.py --data digits", "date": "2026-12-05"}
    acc = {"demo": "gda-hurts", "dataset": "digits", "seeds": 2, "values": [[80.0, 78.0], [79.0, 78.5]],
           **bench.summary_fields(bench.demos.DEMOS["gda-hurts"], [[80.0, 78.0], [79.0, 78.5]])}
    acc.pop("compare")  # a record from before the field: a difference, as today
    acc["kind"] = "failure"  # (a record without its kind gains it: the catalogue's label, not a measurement)
    f = tmp_path / "demos.json"
    f.write_text(json.dumps([old_lr, acc]))
    (changed,) = bench.main(["--resummarize", str(f)])
    new_lr, new_acc = json.loads(f.read_text())
    assert new_acc == acc and changed == new_lr
    assert new_lr["compare"] == "log ratio" and new_lr["diffs"] == pytest.approx([math.log(a / b) for a, b in values])
    assert new_lr["command"] == old_lr["command"] and new_lr["values"] == values
    assert new_lr["resummarized"]["command"].startswith("python bench/demos.py --resummarize")
    lo, hi = new_lr["ci95"]
    assert lo < new_lr["mean_diff"] < hi and new_lr["holds_in"] == 5
    assert bench.main(["--resummarize", str(f)]) == []  # already today's: nothing changes
    with pytest.raises(SystemExit):
        bench.main(["--resummarize", str(tmp_path / "nope.json")])


def test_generators_quick_judges_the_samples_and_tests_for_copying(tmp_path):
    out = tmp_path / "generators.json"
    assert load("generators").main(["--quick", "--psi", "1,0.5", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["generator"], r["psi"]) for r in records] == [("digits_ratio0.1_seed0.pt", 1.0),
                                                              ("digits_ratio0.1_seed0.pt", 0.5)]
    for r in records:
        assert r["samples"] == 200 and len(r["label_acc_per_class"]) == 10 and 0 < r["label_acc"] <= 1
        assert r["train_images"] == 116 and r["command"].startswith("python bench/generators.py --quick")
        assert isinstance(r["copying_z"], float) and r["median_heldout_to_train"] > 0
    with pytest.raises(SystemExit):
        load("generators").main(["--psi", "0", "--out", str(tmp_path / "never.json")])
    assert not (tmp_path / "never.json").exists()


def test_demos_records_the_fid_of_the_finder_samples_beside_a_finder_demo_verdict(tmp_path):
    """A demo about the finder also records the FID of each run's finder samples (the Latents page's number),
    per seed and per pair: the harm to the samples that the live panel's label accuracy only approximates.
    Digits, 2 seeds of 4 steps: a plain MLP finder's samples are far from the real images, the residual's not."""
    out = tmp_path / "demos.json"
    (rec,) = load("demos").main(["--demos", "mlp-finder-leaves-support", "--data", "digits", "--seeds", "2",
                                 "--steps", "4", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    fid = rec["also"]["finder_fid"]
    assert len(fid["values"]) == 2 and all(len(v) == 2 and min(v) > 0 for v in fid["values"])
    (pair,) = fid["per_pair"]
    assert pair["diffs"] == pytest.approx([a - b for a, b in fid["values"]])
    assert set(rec["also"]) == {"finder_label_acc", "test_acc", "finder_fid"}


def test_trainer_beside_app_refuses_a_bad_round_count_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load("trainer_beside_app").main(["--rounds", "0", "--out", str(tmp_path / "x.json")])
    assert "--rounds and --steps must be positive" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_demo_from_home_refuses_a_bad_round_count_or_a_folder_without_the_app_before_any_work(tmp_path, capsys):
    for argv in (["--rounds", "0"], ["--settle", "-1"], ["--app-dir", str(tmp_path)]):
        with pytest.raises(SystemExit):
            load("demo_from_home").main([*argv, "--out", str(tmp_path / "x.json")])
        err = capsys.readouterr().err
        assert "--rounds must be positive, --settle not negative; --app-dir must be a checkout with app.py" in err
    assert f"(not: {tmp_path})" in err and not (tmp_path / "x.json").exists()


def test_the_app_in_a_browser_counts_the_cpu_its_server_and_its_browser_use(tmp_path):
    """bench/demo_from_home.py charges the open page with this: the server process alone (what it starts, such as a
    demo's supervisor and trainers, is not counted) and the browser's whole tree; both grow as pages are drawn."""
    app_browser = sys.modules.get("app_browser") or load("app_browser")
    if not app_browser.have_browser():
        pytest.skip("needs Debian's chromium and chromium-driver")
    app = app_browser.AppInBrowser(tmp_path / "runs", tmp_path)
    try:
        first = app.page_cpu_s()
        assert first["server"] > 0 and first["browser"] > 0  # it served Home, the browser drew it
        app.open("train")
        app.text_of("h1")
        after = app.page_cpu_s()
        assert after["server"] >= first["server"] and after["browser"] >= first["browser"]
        assert app.cpu_s() >= after["server"] + after["browser"] - 0.1  # the trees hold at least these processes
    finally:
        app.close()


def test_demo_from_home_reads_how_a_launch_started_from_its_runs(tiny_demo):
    """The start-up fields of a from-Home round, read from a real launch's runs folder: one a supervisor started for
    the launch ran (the tests turn the warm standby off), with its first run started after the launch."""
    runs_dir, m, _ = tiny_demo
    fields = load("demo_from_home").start_fields(runs_dir, m["created"])
    assert fields["warm_standby"] is False and 0 < fields["first_run_s"] < 600
