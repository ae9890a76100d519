"""Launching, stopping and resuming real trainer processes the way the app does."""
import json
import subprocess
import sys
import time

import pytest

from mgr import launch
from mgr.runstore import Run

TINY = {"data.dataset": "digits", "data.ratio": 0.1, "method": "pcr", "steps": 400, "eval_every": 10,
        "batch_size": 16, "probes_per_class": 2, "probe_real": 40, "device": "cpu"}


def wait_for(cond, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_launch_stop_resume_a_real_run(tmp_path):
    L = launch.Launcher(tmp_path)
    run_id = L.launch(TINY)
    run = Run(tmp_path / run_id)
    wait_for(lambda: run.metrics(), "the first evaluation")
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg == launch.build_config(TINY).to_dict()  # the CLI flags carried every value
    assert launch.run_state(run) == "running" and launch.is_trainer(run.status()["pid"], run)
    L.stop(run)
    wait_for(lambda: run.status()["state"] == "stopped", "the stop")
    stopped_at = run.status()["step"]
    assert 10 <= stopped_at < 400 and "SIGTERM" in run.status()["error"]
    L.reap()
    with pytest.raises(launch.LaunchError, match="not running"):
        L.stop(run)

    # resume with fewer steps left to wait for: the run's own config decides, so shorten it first
    cfg["steps"] = stopped_at + 20 - stopped_at % 10
    (run.path / "config.json").write_text(json.dumps(cfg))
    L.resume(run)
    wait_for(lambda: run.status()["state"] == "finished", "the resumed run to finish")
    steps = [r["step"] for r in run.metrics()]
    assert steps == list(range(10, cfg["steps"] + 1, 10))  # each evaluation once, none lost or repeated
    assert "--resume" in (tmp_path / launch.LAUNCHES / f"{run_id}.json").read_text()
    with pytest.raises(launch.LaunchError, match="only a stopped, failed or killed run"):
        L.resume(run)


def test_a_stale_pid_is_never_signalled(tmp_path):
    from tests.conftest import tiny_config
    from mgr.train import train
    run = train(tiny_config("base", steps=2, eval_every=2), tmp_path, "stale", quiet=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_status(state="running", pid=other.pid)  # as if the trainer died and its pid was reused
        assert not launch.is_trainer(other.pid, run, run.status()["started"])
        assert launch.run_state(run) == "killed"
        with pytest.raises(launch.LaunchError, match="is gone"):
            launch.Launcher(tmp_path).stop(run)
        time.sleep(0.2)
        assert other.poll() is None  # untouched
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("change, field, message", [
    ({"data.ratio": 2.0}, "data.ratio", "ratio=2.0 is outside (0, 1]"),
    ({"data.ratio": 0.3}, "data.ratio", "train-generator --dataset digits --ratio 0.3"),
    ({"lam": -1.0}, "lam", "lam=-1.0 is not allowed"),
    ({"lam_kl": -1.0}, "lam_kl", "lam_kl=-1.0 is not allowed"),
    ({"steps": 0}, "steps", "steps=0 is not allowed"),
    ({"lr": "fast"}, "lr", "lr='fast' is not allowed"),
    ({"data.dataset": "cifar10"}, "data.dataset", "cifar10 is not downloaded"),
])
def test_bad_form_input_names_the_field_and_spawns_nothing(tmp_path, change, field, message, monkeypatch):
    monkeypatch.setenv("MGR_DATA_ROOT", str(tmp_path / "no-data"))
    with pytest.raises(launch.LaunchError) as e:
        launch.Launcher(tmp_path).launch({**TINY, **change})
    assert e.value.field == field and message in str(e.value)
    assert not (tmp_path / launch.LAUNCHES).exists()


def test_a_launch_that_fails_before_its_run_directory_is_reported(tmp_path):
    L = launch.Launcher(tmp_path)
    L._spawn("never-made", ["--dataset", "digits", "--ratio", "0.1", "--method", "base", "--steps", "0",
                            "--run-id", "never-made", "--runs-dir", str(tmp_path)])
    wait_for(lambda: L.pending() and L.pending()[0]["state"] == "failed to start", "the failed launch", 120)
    assert "steps=0 is not allowed" in L.pending()[0]["log"]
    L.dismiss("never-made")
    assert L.pending() == []


def test_form_fields_are_config_fields():
    from mgr.train import TrainConfig
    names = {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    for f in launch.form_fields():
        assert f.name.startswith("data.") or f.name in names
    values = {f.name: f.default for f in launch.form_fields()}
    assert launch.build_config(values).steps == values["steps"]


def test_eta_from_status():
    assert launch.eta_seconds({"img_per_s": 64.0, "step": 10, "total_steps": 20}, 32) == 5.0
    assert launch.eta_seconds({"step": 10, "total_steps": 20}, 32) is None
