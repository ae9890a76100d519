"""bench/accuracy.py --ray: the grid's runs as Ray tasks on a local two-CPU cluster; the records are
written as without Ray, and a run that fails is printed and recorded with its error, not lost."""
import json
import os
import subprocess
import sys
from pathlib import Path
from tests.waiting import TIMEOUT

REPO = Path(__file__).resolve().parent.parent


def test_a_quick_grid_on_a_local_cluster_reports_its_failed_run(tmp_path):
    out = tmp_path / "accuracy.json"
    # finder_lr=1e9 throws mgr's finder out of the prior within 3 steps; base has no finder and finishes
    r = subprocess.run([sys.executable, "bench/accuracy.py", "--quick", "--device", "cpu", "--methods", "base,mgr",
                        "--set", "finder_lr=1e9", "--ray", "--ray-cpus", "2", "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"})
    assert r.returncode == 1, r.stderr  # a failed run fails the grid's exit status ...
    records = json.loads(out.read_text())  # ... but the others' records are written as usual
    assert [(x["variant"], x["seed"]) for x in records] == [("base[finder_lr=1e9]", 0)]
    assert records[0]["command"].startswith("python bench/accuracy.py --quick") and 0 <= records[0]["test_acc"] <= 1
    failed = json.loads((tmp_path / "accuracy.failures.json").read_text())
    assert [(x["variant"], x["seed"], x["failed"]) for x in failed] == [("mgr[finder_lr=1e9]", 0, True)]
    assert failed[0]["error"].startswith("FloatingPointError: ")
    assert "mgr[finder_lr=1e9] seed 0: FAILED: FloatingPointError" in r.stdout
    assert "| mgr[finder_lr=1e9] | failed | failed | 0 |" in r.stdout
    assert len(list((tmp_path / "runs").iterdir())) == 2  # both runs made their directories, in the workers
