"""The benchmark scripts' --quick modes run (smoke tests; the numbers are not checked here)."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_step_time_quick():
    result = load("step_time").main(["--quick", "--device", "cpu"])
    assert [r["method"] for r in result["results"]] == ["base", "gda", "pcr", "mgr-first", "mgr-second"]
    assert all(r["ms_per_step"] > 0 for r in result["results"])


def test_step_time_quick_times_mltp_per_step_and_counts_both_batches():
    rows = load("step_time").main(["--quick", "--device", "cpu", "--methods", "base,mltp-fo"])["results"]
    assert [(r["method"], r["procedure"]) for r in rows] == [("base", "standard"), ("mltp-fo", "mltp")]
    assert all(abs(r["img_per_s"] - f * 128 * 1000 / r["ms_per_step"]) < 0.1 * r["img_per_s"]
               for r, f in zip(rows, (1, 2)))


def test_accuracy_quick(tmp_path):
    records = load("accuracy").main(["--quick", "--device", "cpu", "--methods", "base,mltp-fo,mgr-co",
                                     "--runs-dir", str(tmp_path)])
    assert [(r["method"], r["procedure"], r["co_learner"]) for r in records] == [
        ("base", "standard", False), ("base", "mltp", False), ("mgr", "standard", True)]
    need = {"dataset", "ratio", "model", "method", "procedure", "co_learner", "seed", "steps", "val_acc", "test_acc"}
    assert all(need <= set(r) and 0 <= r["test_acc"] <= 1 for r in records)
