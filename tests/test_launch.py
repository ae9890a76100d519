"""Launching, stopping and resuming real trainer processes the way the app does."""
import json
import os
import subprocess
import sys
import time

import pytest

from mgr import launch, processes
from mgr.runstore import Run
from tests.waiting import wait_for, wait_paused

TINY = {"data.dataset": "digits", "data.ratio": 0.1, "method": "pcr", "steps": 400, "eval_every": 10,
        "batch_size": 16, "probes_per_class": 2, "probe_real": 40, "device": "cpu"}


def test_launch_stop_resume_a_real_run(tmp_path):
    L = launch.Launcher(tmp_path)
    run_id = L.launch(TINY, pause_at=10)
    run = wait_paused(Run(tmp_path / run_id))  # alive after its first evaluation until stopped
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg == launch.build_config(TINY).to_dict()  # the CLI flags carried every value
    assert run.state() == "running" and launch.is_trainer(run.status()["pid"], run)
    L.stop(run)
    wait_for(lambda: run.status()["state"] == "stopped", "the stop")
    stopped_at = run.status()["step"]
    assert stopped_at == 10 and "SIGTERM" in run.status()["error"]
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
    from mgr.trainer import train
    run = train(tiny_config("base", steps=2, eval_every=2), tmp_path, "stale", quiet=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_status(state="running", pid=other.pid)  # as if the trainer died and its pid was reused
        assert not launch.is_trainer(other.pid, run, run.status()["started"])
        assert run.state() == "killed"
        with pytest.raises(launch.LaunchError, match="is gone"):
            launch.Launcher(tmp_path).stop(run)
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
    ({"lr": -0.1}, "lr", "lr=-0.1 is not allowed"),
    ({"data.ratio": 1.5}, "data.ratio", "ratio=1.5 is outside (0, 1]"),
    ({"batch_size": 0}, "batch_size", "batch_size=0 is not allowed"),
    ({"run_id": "../escape"}, "run_id", "is not allowed: use letters"),
    ({"run_id": "a/b"}, "run_id", "no path separators"),
    ({"data.dataset": "imagefolder", "data.folder": "/no/such/folder"}, "data.folder", "does not exist"),
    ({"data.dataset": "imagefolder", "data.folder": ""}, "data.folder", "image folder is empty"),
    ({"method": "base", "co_learner": True}, "co_learner", "takes no lookahead"),
    ({"procedure": "mltp", "mltp_eta": -1.0}, "mltp_eta", "mltp_eta=-1.0 is not allowed"),
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
    wait_for(lambda: L.pending() and L.pending()[0]["state"] == "failed to start", "the failed launch")
    assert "steps=0 is not allowed" in L.pending()[0]["log"]
    L.dismiss("never-made")
    assert L.pending() == []


def test_form_fields_are_config_fields():
    from mgr.trainer import TrainConfig
    names = {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    for f in launch.form_fields():
        assert f.name in launch.FORM_ONLY or (f.name.startswith("data.") and f.name[5:] in DATA_FIELDS) or f.name in names
    values = {f.name: f.default for f in launch.form_fields()}
    assert launch.build_config(values).steps == values["steps"]


DATA_FIELDS = {f.name for f in __import__("dataclasses").fields(__import__("mgr.data").data.DataConfig)}


def shown(**values):
    defaults = {f.name: f.default for f in launch.form_fields()}
    return [f.name for f in launch.shown_fields({**defaults, **values})]


def test_fields_appear_only_where_they_apply():
    assert "mltp_variant" not in shown() and "mltp_variant" in shown(procedure="mltp")
    assert "co_learner" in shown(method="mgr") and "co_learner_arch" not in shown(method="mgr")
    assert "co_learner_arch" in shown(method="mgr", co_learner=True)
    # base under the standard procedure takes no lookahead: no co-learner to offer; under MLTP it has one
    assert "co_learner" not in shown(method="base") and "co_learner" in shown(method="base", procedure="mltp")
    assert {"lam", "lam_kl", "finder", "finder_lr", "meta_val"}.isdisjoint(shown(method="base"))
    assert "data.folder" not in shown() and "data.folder" in shown(**{"data.dataset": launch.IMAGEFOLDER})


def test_mltp_and_co_learner_from_the_form_reach_the_trainer_flags():
    cfg = launch.build_config({**TINY, "method": "mgr", "procedure": "mltp", "mltp_variant": "full",
                               "co_learner": True, "co_learner_arch": "linear"})
    assert (cfg.procedure, cfg.mltp_variant, cfg.co_learner, cfg.co_learner_arch) == ("mltp", "full", True, "linear")
    args = launch.cli_args(cfg)
    assert args[args.index("--procedure") + 1] == "mltp" and args[args.index("--mltp-variant") + 1] == "full"
    assert "--co-learner" in args and args[args.index("--co-learner-arch") + 1] == "linear"


def test_eta_from_status():
    assert launch.eta_seconds({"img_per_s": 64.0, "step": 10, "total_steps": 20}, 32) == 5.0
    assert launch.eta_seconds({"step": 10, "total_steps": 20}, 32) is None


def test_an_existing_run_id_is_refused_on_its_field(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(launch.LaunchError, match="already exists") as e:
        launch.Launcher(tmp_path).launch({**TINY, "run_id": "taken"})
    assert e.value.field == "run_id"


def test_stop_affects_only_its_run(tmp_path):
    """Two runs launched from the app's launcher; Stop on one leaves the other to finish untouched."""
    L = launch.Launcher(tmp_path)
    a = wait_paused(Run(tmp_path / L.launch({**TINY, "run_id": "a-long"}, pause_at=10)))
    b = Run(tmp_path / L.launch({**TINY, "steps": 200, "run_id": "b-short"}))
    L.stop(a)
    wait_for(lambda: a.status()["state"] == "stopped", "the stop")
    wait_for(lambda: b.status()["state"] == "finished", "the other run to finish")
    assert [r["step"] for r in b.metrics()] == list(range(10, 201, 10)) and "SIGTERM" not in str(b.status().get("error"))
    assert a.status()["step"] == 10 and a.state() == "stopped"


def test_a_run_killed_with_sigkill_shows_killed_and_resumes(tmp_path):
    """status.json still says running after a SIGKILL; the released flock tells the app it is not."""
    import os
    import signal

    from mgr.analysis import summarize
    L = launch.Launcher(tmp_path)
    run = wait_paused(Run(tmp_path / L.launch({**TINY, "run_id": "victim"}, pause_at=10)))
    assert run.writer_alive() is True and run.state() == "running"
    pid = run.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    L.children["victim"].wait(30)
    assert run.status()["state"] == "running"  # the trainer had no chance to say otherwise
    assert run.writer_alive() is False and run.state() == "killed"
    s = summarize(run)
    assert s.state == "killed" and "Resume" in s.error
    with pytest.raises(launch.LaunchError, match="is gone"):
        L.stop(run)
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["steps"] = 30  # finish soon after the resume
    (run.path / "config.json").write_text(json.dumps(cfg))
    L.resume(run)
    wait_for(lambda: run.status()["state"] == "finished", "the resumed run to finish")
    assert [r["step"] for r in run.metrics()] == [10, 20, 30]


def test_a_real_process_is_told_apart_by_its_command_line_start_time_and_exit(tmp_path):
    """is_trainer on live processes (psutil): the command line naming the run decides; a pid whose
    process started after the run's trainer did is a recycled one; a finished child (a zombie
    until reaped) and a reaped one are not alive."""
    before = time.time()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "mgr", "train",
                          "--run-id", "r-real"])
    try:
        wait_for(lambda: "r-real" in " ".join(__import__("psutil").Process(p.pid).cmdline()), "the process")
        assert launch.is_trainer(p.pid, Run(tmp_path / "r-real"))
        assert processes.runs_command(p.pid, "r-real") and not processes.runs_command(p.pid, "r-other")
        other = Run(tmp_path / "r-other")  # not named on its command line: the start time decides
        assert not launch.is_trainer(p.pid, other, started=before - 60)  # started after that trainer: recycled
        assert launch.is_trainer(p.pid, other, started=time.time())
        assert not launch.is_trainer(os.getpid(), Run(tmp_path / "r-real"))  # pytest: not a trainer
        # a run without a writer lock (made before `.lock` existed): the run store asks the pid
        (tmp_path / "r-real").mkdir()
        real = Run(tmp_path / "r-real")
        real.write_status(state="running", pid=p.pid, started=before, paused=True)
        assert real.writer_alive() is None and real.state() == "running"  # a held trainer is still running
        real.write_status(pid=os.getpid())
        assert real.state() == "killed"  # a live pid, but not this run's trainer
        real.write_status(pid=p.pid)
    finally:
        p.kill()
    wait_for(lambda: __import__("psutil").Process(p.pid).status() == "zombie", "the child to exit")
    assert not launch.is_trainer(p.pid, Run(tmp_path / "r-real")) and not processes.runs_command(p.pid, "r-real")
    assert real.state() == "killed"
    p.wait()
    assert not launch.is_trainer(p.pid, Run(tmp_path / "r-real"))


def test_the_image_folder_field_gives_the_trainers_answers(tmp_path):
    """check_folder reads a folder with the trainer's own scanner: a messy folder passes with the same
    skipped list the run will report; a refused one fails on the field with the trainer's message."""
    from mgr.imagefolder import FolderError, scan
    from tests.test_imagefolder import messy, noise, save
    root = messy(tmp_path / "photos")
    name, skipped = launch.folder_report(str(root))
    assert name == f"imagefolder:{root.resolve()}" and skipped == scan(root).skipped and len(skipped) == 16
    cfg = launch.build_config({**TINY, "method": "base", "data.dataset": "imagefolder", "data.folder": str(root),
                               "data.ratio": 1.0})
    assert cfg.data.dataset == name

    save(tmp_path / "few" / "cat" / "0.png", noise(8, 8, 0))
    for i in range(3):
        save(tmp_path / "few" / "dog" / f"{i}.png", noise(8, 8, 200))
    with pytest.raises(FolderError) as scanned:
        scan(tmp_path / "few")
    with pytest.raises(launch.LaunchError) as e:
        launch.build_config({**TINY, "method": "base", "data.dataset": "imagefolder", "data.folder": str(tmp_path / "few")})
    assert e.value.field == "data.folder" and str(e.value) == str(scanned.value)
    assert "class folder" in str(e.value) and "has 1 usable image(s)" in str(e.value)


def test_fashion_mnist_on_a_fresh_clone_is_accepted_for_the_bundled_splits_only(tmp_path, monkeypatch):
    from mgr import fashion_mnist
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-package")
    monkeypatch.setenv("MGR_DATA_ROOT", str(tmp_path / "no-data"))
    fm = {**TINY, "data.dataset": "fashion-mnist", "data.ratio": 0.01}
    assert launch.build_config(fm).data.dataset == "fashion-mnist"  # pcr: the shipped 1% generator is found too
    with pytest.raises(launch.LaunchError) as e:
        launch.build_config({**fm, "method": "base", "data.ratio": 0.2})
    assert e.value.field == "data.ratio" and "needs the full dataset" in str(e.value)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


def test_the_failure_dials_from_the_form_reach_the_trainer_flags():
    assert "syn_label_noise" in shown(method="gda") and "syn_label_noise" not in shown(method="pcr")
    assert "latent_psi" in shown(method="pcr") and "latent_psi" not in shown(method="base")
    cfg = launch.build_config({**TINY, "method": "gda", "latent_psi": 0.5, "syn_label_noise": 0.1})
    args = launch.cli_args(cfg)
    assert args[args.index("--latent-psi") + 1] == "0.5" and args[args.index("--syn-label-noise") + 1] == "0.1"
    with pytest.raises(launch.LaunchError) as e:
        launch.build_config({**TINY, "method": "gda", "latent_psi": 0.0})
    assert e.value.field == "latent_psi"


def test_a_launched_trainer_gets_the_cores_the_running_trainers_leave(tmp_path, monkeypatch, spawn):
    """No trainer running: every core. One training: one core fewer (at least one). A held one uses none."""
    monkeypatch.delenv("MGR_THREADS", raising=False)
    cores = os.cpu_count() or 1
    assert launch.trainer_threads(tmp_path) == str(cores)
    cli = [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--method", "base",
           "--steps", "100000", "--eval-every", "50", "--batch-size", "16", "--device", "cpu", "--quiet",
           "--threads", "1", "--runs-dir", str(tmp_path)]
    busy = Run(spawn(cli).stdout.readline().strip())
    wait_for(lambda: busy.status().get("state") == "running", "the other trainer to start")
    assert launch.trainer_threads(tmp_path) == str(max(1, cores - 1))
    busy.pause()
    wait_paused(busy)
    assert launch.trainer_threads(tmp_path) == str(cores)
    monkeypatch.setenv("MGR_THREADS", "3")
    assert launch.trainer_threads(tmp_path) == "3"
