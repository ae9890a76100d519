"""bench/gpu_check.sh's CPU dry path (--device cpu --quick): every step the GPU check takes (synthetic
CIFAR-shaped data, a generator for it, smoke runs of base, pcr and mgr, the step-time bench against the
plain loop, the JSON and the markdown table) runs and writes what the real check writes."""
import json
import os
import subprocess
from pathlib import Path
from tests.waiting import TIMEOUT

REPO = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    out, doc = tmp_path / "gpu_check.json", tmp_path / "gpu.md"
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--device", "cpu", "--quick", "--out", str(out), "--doc", str(doc),
                        "--work", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MGR_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["smoke_runs"] == {"base": "finished", "pcr": "finished", "mgr": "finished"}
    assert result["command"] == f"bench/gpu_check.sh --device cpu --quick --out {out} --doc {doc} --work {tmp_path / 'work'}"
    rows = {row["method"]: row for row in result["step_time"]["eager"]["results"]}
    assert set(rows) == {"base", "pcr", "mgr", "reference"} and all(row["ms_per_step"] > 0 for row in rows.values())
    assert set(result["targets"]["eager"]) == {"base_img_per_s", "base_target_40k", "mgr_over_base", "mgr_target_2x"}
    text = doc.read_text()
    assert "| eager | mgr |" in text and "| eager | base >= 40 000 img/s |" in text and result["command"] in text
    assert not list(REPO.glob("checkpoints/generators/*cifar-like*"))  # the check's generator stays in its work dir


def test_an_unknown_option_is_refused():
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--nope"], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and "unknown option --nope" in r.stderr
