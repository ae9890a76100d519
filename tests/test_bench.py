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


def test_accuracy_quick(tmp_path):
    records = load("accuracy").main(["--quick", "--device", "cpu", "--methods", "base,mgr", "--runs-dir", str(tmp_path)])
    assert [r["method"] for r in records] == ["base", "mgr"] and all(0 <= r["test_acc"] <= 1 for r in records)
