"""The trainer end to end on digits: every method writes a valid run directory; stop, kill and
resume keep the metrics whole; bad options fail before any work."""
import contextlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from mgr import checkpoint
from mgr.__main__ import main
from mgr.data import DataConfig
from mgr.runstore import PROBE_FIELDS, Run
from tests.waiting import TIMEOUT, wait_paused
from mgr.trainer import TrainConfig, load_classifier, resume, train
from mgr.trainer.checkpoints import CKPT_KIND, CKPT_VERSION, load_step_weights
from mgr.trainer.state import build
from mgr.finder import Finder
from mgr.trainer.steps import batches, finder_logs, mps_step

DIGITS = DataConfig("digits", ratio=0.1)
REQUIRED = ("step", "epoch", "lr", "ce", "val_acc", "val_loss", "test_acc", "img_per_s")


def tiny(**kw):
    return TrainConfig(**{**dict(data=DIGITS, steps=6, eval_every=3, log_every=2, batch_size=32, probes_per_class=2,
                                 probe_real=40, device="cpu"), **kw})


@pytest.mark.parametrize("method", ["base", "gda", "gda-mps", "pcr", "mgr"])
def test_each_method_writes_a_valid_run_directory(tmp_path, method):
    run = train(tiny(method=method), tmp_path, quiet=True)
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["method"] == method and cfg["lr"] == 0.05 and cfg["pcr_aug"] == "translation,color,cutout"
    st = run.status()
    assert st["state"] == "finished" and st["step"] == 6 and st["pid"] == os.getpid()
    rows = run.metrics()
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert all(k in r for k in REQUIRED) and 0 <= r["val_acc"] <= 1
        if method in ("pcr", "mgr"):
            assert r["pcr"] > 0  # T moves the images, so the consistency gap is never exactly 0
        if method in ("gda", "gda-mps"):
            assert r["syn_ce"] > 0
        if method in ("gda-mps", "mgr"):
            # the finder has taken steps by each evaluation: it is no longer the identity
            assert r["latent_shift"] > 0 and r["kl"] > 0 and -1 <= r["hg_cos"] <= 1 and 0 < r["kl_share"] < 1
            assert 0 <= r["shift_spread"] <= 2 * r["latent_shift"]
    assert run.probe_steps() == [3, 6]
    scalars = run.scalars()  # log_every=2, eval_every=3: a line at steps 2, 3, 4, 6
    assert [r["step"] for r in scalars] == [2, 3, 4, 6] and all(r["ce"] > 0 and r["img_per_s"] > 0 for r in scalars)
    static, last = run.load_probe("static"), run.load_probe(6)
    assert static["real_images"].dtype == np.uint8 and len(static["real_labels"]) == 40
    assert last["real_features"].shape == (40, 128)
    if method != "base":
        assert set(PROBE_FIELDS["step"]) <= set(last)
        assert last["uniform_images"].shape == (20, 1, 8, 8) and last["finder_probs"].shape == (20, 10)
        assert np.allclose(last["uniform_probs"].sum(1), 1, atol=1e-5)
    model, m = load_classifier(run.path / "best.pt")
    assert m["step"] in (3, 6) and m["val_acc"] == max(r["val_acc"] for r in rows)
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    # keep_weights auto, a SmallCNN: the weights of every evaluation; the last ones are last.pt's, buffers included
    assert run.weight_steps() == [3, 6]
    w = load_step_weights(run.path / "weights" / "step_0000006.pt")
    ck = checkpoint.load(run.path / "last.pt", CKPT_KIND, CKPT_VERSION)
    assert w["meta"]["step"] == 6 and w["meta"]["val_acc"] == rows[-1]["val_acc"]
    state = w["model"].state_dict()
    assert state.keys() == ck["model"].keys() and all(torch.equal(state[k], ck["model"][k]) for k in state)
    assert any(k.endswith("running_var") for k in state)
    assert (w["finder"] is not None) == (method in ("gda-mps", "mgr")) and w["co_learner"] is None


def test_resnet18_runs_mgr_and_the_runs_listing_shows_it(tmp_path, capsys):
    run = train(tiny(method="mgr", model="resnet18", steps=2, eval_every=2, batch_size=8), tmp_path, quiet=True)
    assert run.config["lr"] == 0.1 and run.load_probe(2)["real_features"].shape == (40, 512)
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert run.id in out and "finished" in out and "digits mgr/resnet18" in out
    assert run.weight_steps() == [] and not (run.path / "weights").exists()  # auto: 42.7 MiB is over 8 MiB


def test_keep_weights_last_writes_none_and_a_bad_value_is_refused(tmp_path, capsys):
    run = train(tiny(method="base", keep_weights="last"), tmp_path, quiet=True)
    assert run.config["keep_weights"] == "last" and run.probe_steps() == [3, 6]
    assert not (run.path / "weights").exists() and (run.path / "last.pt").exists() and (run.path / "best.pt").exists()
    with pytest.raises(ValueError, match=r"keep_weights='every' is not allowed; choose one of all .*, last .* or auto"):
        tiny(keep_weights="every")
    with pytest.raises(ValueError, match="keep_weights"):
        TrainConfig.from_dict({**run.config, "keep_weights": "most"})
    with pytest.raises(SystemExit) as e:
        main(["train", "--keep-weights", "every"])
    assert e.value.code == 2 and "invalid choice: 'every'" in capsys.readouterr().err


def test_resume_removes_the_weights_of_steps_after_its_checkpoint_then_redoes_them(tmp_path):
    """A run killed after writing step 6's probe, weights and metrics line but before last.pt resumes from
    step 3: before it trains, nothing of step 6 is left; then step 6 is redone, the same weights again
    (CPU, one seed). The step-3 last.pt comes from a 3-step run of the same seed (constant lr: the
    first three steps are the same)."""
    cfg = dict(method="mgr", width=8, schedule="constant")
    short = train(tiny(steps=3, **cfg), tmp_path, "short", quiet=True)
    run = train(tiny(**cfg), tmp_path, "full", quiet=True)
    assert run.weight_steps() == [3, 6]
    before = load_step_weights(run.path / "weights" / "step_0000006.pt")
    (run.path / "last.pt").write_bytes((short.path / "last.pt").read_bytes())
    run.write_status(state="running", step=6)  # what a SIGKILL leaves

    def started(r):
        assert r.weight_steps() == [3] and r.probe_steps() == [3] and [m["step"] for m in r.metrics()] == [3]
        seen.append(r.id)
    seen = []
    resume(run.path, quiet=True, on_start=started)
    assert seen == ["full"] and run.status()["state"] == "finished" and run.weight_steps() == [3, 6]
    after = load_step_weights(run.path / "weights" / "step_0000006.pt")
    for part in ("model", "finder"):
        a, b = before[part].state_dict(), after[part].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_finder_moves_latents_only_under_mps(tmp_path):
    first = train(tiny(method="mgr", finder_lr=1e-2), tmp_path, quiet=True).load_probe(6)
    assert not np.allclose(first["finder_z"], Run(tmp_path / os.listdir(tmp_path)[0]).load_probe("static")["probe_z"])
    pcr = train(tiny(method="pcr"), tmp_path, quiet=True).load_probe(6)
    assert np.array_equal(pcr["uniform_images"], pcr["finder_images"])


def test_logged_shift_spread_tells_a_finder_that_adds_one_vector_from_one_that_depends_on_z():
    finder, z = Finder(16), torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        finder.net[-1].bias.fill_(0.5)  # the output bias alone: F(z) = z + b, what a finder with silent units is
        one_vector = finder_logs(z, finder(z))
        finder.net[-1].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        depends_on_z = finder_logs(z, finder(z))
    assert float(one_vector["latent_shift"]) == pytest.approx(0.5 * 4, rel=1e-5)  # ‖b‖ = 0.5·√16
    assert float(one_vector["shift_spread"]) < 1e-5
    assert float(depends_on_z["shift_spread"]) > 0.1 * float(depends_on_z["latent_shift"])


def test_a_silu_finder_run_saves_and_reloads_the_finder_it_trained(tmp_path):
    """finder_activation reaches the run: config.json, the step weights' metadata and the finder the app
    rebuilds from them (a ReLU rebuild of SiLU weights would show other latents than the run sampled)."""
    run = train(tiny(method="mgr", finder_activation="silu", steps=3, eval_every=3), tmp_path, quiet=True)
    assert run.config["finder_activation"] == "silu"
    w = load_step_weights(run.path / "weights" / "step_0000003.pt")
    assert w["meta"]["finder_activation"] == "silu"
    assert [type(m).__name__ for m in w["finder"].net] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]
    probe = run.load_probe(3)  # the finder latents the trainer stored, against the reloaded finder's
    z = torch.from_numpy(run.load_probe("static")["probe_z"])
    assert np.allclose(w["finder"](z).numpy(), probe["finder_z"], atol=1e-5)
    assert not np.allclose(probe["finder_z"], z.numpy())


def test_seeded_cpu_runs_are_identical(tmp_path):
    a = train(tiny(method="mgr"), tmp_path, quiet=True).metrics()
    b = train(tiny(method="mgr"), tmp_path, quiet=True).metrics()
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed")} for r in rows]  # noqa: E731
    assert drop(a) == drop(b)
    c = train(tiny(method="mgr", seed=1), tmp_path, quiet=True).metrics()
    assert drop(a) != drop(c)


def test_train_acc_images_sets_what_train_acc_measures_and_0_leaves_every_other_number_as_it_was(tmp_path):
    """The demos set train_acc_images=0 (no demo view reads train_acc); their per-seed values must not move."""
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed", "train_acc")}  # noqa: E731
                         for r in rows]
    full = train(tiny(method="gda"), tmp_path, quiet=True).metrics()
    few = train(tiny(method="gda", train_acc_images=10), tmp_path, quiet=True).metrics()
    none = train(tiny(method="gda", train_acc_images=0), tmp_path, quiet=True).metrics()
    assert all("train_acc" in r for r in full) and not any("train_acc" in r for r in none)
    assert all(round(r["train_acc"] * 10) == r["train_acc"] * 10 for r in few)  # a share of 10 images
    assert [r["train_acc"] for r in few] != [r["train_acc"] for r in full]
    assert drop(none) == drop(full) == drop(few)


def test_mps_step_updates_batchnorm_exactly_as_a_plain_forward(tmp_path):
    s = build(tiny(method="mgr"))
    x, y, x_val, y_val = batches(s)
    reference = {n: b.clone() for n, b in s.model.named_buffers()}
    ref_model = type(s.model)(10, 1).to(memory_format=torch.channels_last)  # the trainer's layout: its rounding
    ref_model.load_state_dict(s.model.state_dict())
    ref_model.train()(x)
    mps_step(s, x, y, x_val, y_val)
    for n, b in s.model.named_buffers():
        assert torch.allclose(b.float(), dict(ref_model.named_buffers())[n].float())
        if n.endswith("running_mean"):
            assert not torch.equal(b, reference[n])


@contextlib.contextmanager
def sighup_in_children(disposition):
    """A child inherits SIGHUP ignored or default through exec: set it around the child's start, whatever this
    process has (a suite started under nohup ignores SIGHUP, and its trainers would too)."""
    old = signal.signal(signal.SIGHUP, disposition)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, old)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_trainer_left_running():
    """A test that fails while its trainer is held or training must not leave that trainer behind the suite."""
    yield
    while _STARTED:
        p = _STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.wait(60)


def _train_cli(tmp_path, *args, sighup=signal.SIG_DFL):
    with sighup_in_children(sighup):
        p = subprocess.Popen([sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1",
                              "--device", "cpu", "--runs-dir", str(tmp_path), "--quiet", "--batch-size", "32",
                              "--probes-per-class", "2", "--probe-real", "40", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(p)
    return p


@pytest.mark.parametrize("sig, state", [(signal.SIGTERM, "stopped"), (signal.SIGHUP, "stopped"),
                                        (signal.SIGKILL, "running")])
def test_stop_or_kill_then_resume_keeps_every_metric_line_once(tmp_path, sig, state):
    # held between two evaluations (10, 15), after a scalar line (12) that a resume from step 10 must not repeat
    p = _train_cli(tmp_path, "--method", "pcr", "--steps", "60", "--eval-every", "5", "--log-every", "2",
                   "--pause-at", "13")
    run_dir = p.stdout.readline().strip()  # the first line is the run directory
    wait_paused(Run(run_dir), p)
    p.send_signal(sig)
    p.wait(60)
    run = Run(run_dir)
    assert run.status()["state"] == state
    assert run.status()["step"] == 13
    r = subprocess.run([sys.executable, "-m", "mgr", "train", "--resume", run_dir, "--quiet"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == run_dir
    steps = [m["step"] for m in run.metrics()]
    assert steps == list(range(5, 61, 5))
    assert run.status()["state"] == "finished" and run.probe_steps() == steps
    # training scalars: a line every 2 steps and at every evaluation, none lost or repeated by the stop
    assert [r["step"] for r in run.scalars()] == [k for k in range(1, 61) if k % 2 == 0 or k % 5 == 0]


def test_a_trainer_started_under_nohup_keeps_training_through_a_hangup(tmp_path, capsys):
    """nohup hands the trainer SIGHUP ignored: a closed terminal must not stop it (without nohup, SIGHUP saves the
    run `stopped`, as SIGTERM does: the test above)."""
    p = _train_cli(tmp_path, "--method", "base", "--steps", "8", "--eval-every", "4", "--pause-at", "2",
                   sighup=signal.SIG_IGN)  # what nohup does
    run = wait_paused(Run(p.stdout.readline().strip()), p)
    p.send_signal(signal.SIGHUP)
    assert main(["continue", str(run.path)]) == 0
    assert p.wait(600) == 0, p.stderr.read()
    assert run.status()["state"] == "finished" and run.status()["step"] == 8


def test_a_held_run_goes_on_to_the_numbers_of_a_run_never_held(tmp_path, capsys):
    """--pause-at holds the trainer (alive, its lock kept, status `paused`) until `mgr continue`; the held
    run's metrics and scalars are those of the same run never held."""
    args = ["--method", "pcr", "--steps", "12", "--eval-every", "4", "--log-every", "2"]
    p = _train_cli(tmp_path / "held", *args, "--pause-at", "6")
    run = wait_paused(Run(p.stdout.readline().strip()), p)
    st = run.status()
    assert st["state"] == "running" and st["step"] == 6 and run.writer_alive() and p.poll() is None
    assert [m["step"] for m in run.metrics()] == [4]
    assert main(["continue", str(run.path)]) == 0 and "goes on" in capsys.readouterr().out
    assert p.wait(600) == 0, p.stderr.read()
    straight = _train_cli(tmp_path / "straight", *args)
    ref = Run(straight.stdout.readline().strip())
    assert straight.wait(600) == 0, straight.stderr.read()
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed")} for r in rows]  # noqa: E731
    assert drop(run.metrics()) == drop(ref.metrics()) and drop(run.scalars()) == drop(ref.scalars())
    assert run.status()["state"] == "finished" and run.status()["paused"] is False and not run.pause_requested()


def test_mgr_pause_holds_a_running_trainer_and_a_signal_still_stops_it(tmp_path, capsys):
    p = _train_cli(tmp_path, "--method", "base", "--steps", "100000", "--eval-every", "5")
    run = Run(p.stdout.readline().strip())
    assert main(["pause", str(run.path)]) == 0 and "continue" in capsys.readouterr().out
    wait_paused(run, p)
    held_at = run.status()["step"]
    p.send_signal(signal.SIGTERM)
    assert p.wait(600) == 0
    assert run.status()["state"] == "stopped" and run.status()["step"] == held_at
    assert main(["pause", str(tmp_path / "nowhere")]) == 2 and "not a run directory" in capsys.readouterr().err


def test_pause_at_must_be_a_step(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--ratio", "0.1", "--pause-at", "0", "--runs-dir", str(tmp_path)]) == 2
    assert "--pause-at 0 is not allowed; it must be a step >= 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_resume_refuses_finished_runs(tmp_path, capsys):
    run = train(tiny(method="base"), tmp_path, quiet=True)
    assert main(["train", "--resume", str(run.path)]) == 2
    assert "has finished" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0"], "lr=0.0 is not allowed; it must be a number > 0"),
    (["--lr", "-1"], "lr=-1.0 is not allowed"),
    (["--steps", "0"], "steps=0 is not allowed; it must be a positive integer"),
    (["--lam", "-0.5"], "lam=-0.5 is not allowed; it must be a number >= 0"),
    (["--ratio", "1.5"], "ratio=1.5 is outside (0, 1]"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--pcr-aug", "zoom"], "unknown augmentation 'zoom'"),
    (["--pretrained"], "pretrained weights exist only for model resnet18"),
    (["--data-seed", "5"], "digits_ratio0.1_seed5.pt does not exist; train it with: python -m mgr train-generator "
                           "--dataset digits --ratio 0.1 --data-seed 5"),
    (["--run-id", "../escape"], "run id '../escape' is not allowed"),
])
def test_bad_options_fail_before_any_work(tmp_path, capsys, argv, message):
    assert main(["train", "--ratio", "0.1", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--steps", "3",
                 *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_generator_of_another_split_is_refused(tmp_path, capsys):
    gen = "checkpoints/generators/digits_ratio0.1_seed0.pt"
    assert main(["train", "--ratio", "0.1", "--data-seed", "1", "--generator", gen, "--runs-dir", str(tmp_path),
                 "--steps", "3", "--device", "cpu"]) == 2
    assert "split_hash=" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_unknown_method_names_the_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "magic"])
    assert e.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_unwritable_runs_dir_fails_at_start(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", "--method", "base", "--runs-dir", str(blocker / "runs"), "--steps", "3", "--device", "cpu"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_non_finite_loss_fails_the_run_naming_the_step(tmp_path):
    with pytest.raises(FloatingPointError, match="non-finite at step"):
        train(tiny(method="base", lr=1e12, steps=50, eval_every=50), tmp_path, quiet=True)
    (run_dir,) = tmp_path.iterdir()
    st = Run(run_dir).status()
    assert st["state"] == "failed" and "non-finite at step" in st["error"]
    assert not (run_dir / "last.pt").exists() and Run(run_dir).metrics() == []
