"""The lab's thread budget: the app's own process computes on one torch thread in every thread it runs (its models
are tiny; beside a trainer a second thread made a slider move 30x slower), unless MGR_APP_THREADS says otherwise.
Each case is a fresh process, as `streamlit run` is: OpenMP reads its thread count when torch first loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys, threading
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120).run()
assert not at.exception, at.exception
import torch
other = []  # a thread started after the app ran, as a new browser session's script thread is
t = threading.Thread(target=lambda: other.append(torch.get_num_threads()))
t.start(); t.join()
print(json.dumps({"main": torch.get_num_threads(), "new_thread": other[0], "errors": [e.value for e in at.error]}))
"""


def app_threads(tmp_path, value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MGR_APP_THREADS")}
    env["MGR_RUNS_DIR"] = str(tmp_path)
    if value is not None:
        env["MGR_APP_THREADS"] = value
    r = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "app.py")], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_app_computes_on_one_thread_unless_told(tmp_path):
    assert app_threads(tmp_path, None) == {"main": 1, "new_thread": 1, "errors": []}
    assert app_threads(tmp_path, "3") == {"main": 3, "new_thread": 3, "errors": []}


def test_a_bad_thread_count_is_named_and_the_app_uses_one(tmp_path):
    got = app_threads(tmp_path, "many")
    assert (got["main"], got["new_thread"]) == (1, 1)
    assert any("MGR_APP_THREADS='many' is not allowed" in e for e in got["errors"]), got
