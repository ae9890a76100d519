import subprocess
import sys

import pytest

from mgr.__main__ import main
from tests.waiting import TIMEOUT


@pytest.mark.parametrize("argv, message", [
    (["train-generator", "--dataset", "mnist3d"], "unknown dataset 'mnist3d'; known: digits"),
    (["train-generator", "--ratio", "0"], "ratio=0.0 is outside (0, 1]"),
    (["train-generator", "--ratio", "2"], "ratio=2.0 is outside (0, 1]"),
    (["train-generator", "--per-class", "1000"], "per_class=1000 but class"),
    (["train-generator", "--steps", "-5"], "steps=-5 must be a positive integer"),
    (["train-generator", "--diffaug", "blur"], "unknown augmentation 'blur'"),
    (["train-generator", "--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
    (["fid", "no/such/file.pt"], "no such checkpoint file"),
])
def test_bad_options_fail_with_a_message_and_no_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not any(tmp_path.rglob("*.pt"))  # nothing was written


def test_datasets_and_generators_listings(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "fashion-mnist" in out and "imagefolder:<path>" in out
    assert main(["generators"]) == 0
    assert "digits_ratio0.1_seed0.pt" in capsys.readouterr().out


def test_train_generator_command_end_to_end(tmp_path):
    out = tmp_path / "g.pt"
    r = subprocess.run([sys.executable, "-m", "mgr", "train-generator", "--dataset", "digits", "--ratio", "0.1",
                        "--steps", "2", "--width", "8", "--batch-size", "8", "--bn-batches", "4", "--out", str(out),
                        "--quiet"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"generator -> {out}"
    assert '"fid":' in r.stdout and '"split_hash":' in r.stdout
    assert out.exists() and out.with_suffix(".png").exists()


def test_trainer_never_imports_the_app_packages(tmp_path):
    # the trainer must run on a GPU box that has only torch: no Streamlit, Plotly or UMAP, and the
    # optional engines (Ray for benchmark grids, TensorBoard for export) only where they are used; nor
    # scikit-learn, even to load digits (mgr/data.py reads its file: the import cost each trainer 1.8 s); nor,
    # training and resuming an eager run (SGD, the finder's and the co-learner's Adam, their state dicts),
    # torch.compile's tracer torch._dynamo (mgr/optim.py: 1.0 s of each trainer's start)
    code = ("import sys, mgr.trainer, mgr.gan, mgr.fid, mgr.__main__; from mgr.data import DataConfig; "
            "from mgr.trainer.checkpoints import load_checkpoint; from mgr.trainer.state import build; "
            "cfg = mgr.trainer.TrainConfig(data=DataConfig('digits', ratio=0.1), method='mgr', co_learner=True, "
            "steps=2, eval_every=2, batch_size=8, probes_per_class=1, probe_real=10, device='cpu'); "
            f"run = mgr.trainer.train(cfg, {str(tmp_path)!r}, 'r', quiet=True); load_checkpoint(run, build(cfg)); "
            "bad = [m for m in ('streamlit', 'plotly', 'umap', 'numba', 'ray', 'tensorboard', 'sklearn', "
            "'torch._dynamo') if m in sys.modules]; "
            "sys.exit(', '.join(bad) if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"imported: {r.stderr}"


def test_threads_come_from_the_option_else_mgr_threads(tmp_path, monkeypatch):
    # a trainer takes --threads, else $MGR_THREADS (the app gives each launched run a share of the cores)
    import torch
    from mgr.__main__ import main
    args = ["train", "--method", "base", "--ratio", "0.1", "--steps", "1", "--eval-every", "1", "--batch-size", "8",
            "--probe-real", "10", "--device", "cpu", "--quiet", "--runs-dir", str(tmp_path)]
    try:
        assert main([*args, "--threads", "2"]) == 0 and torch.get_num_threads() == 2
        monkeypatch.setenv("MGR_THREADS", "1")
        assert main(args) == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


def test_every_train_config_field_round_trips_through_the_command_line():
    """The app launches runs as `python -m mgr train <cli_args(cfg)>`: every TrainConfig field must reach
    the trainer unchanged, with a value other than its default (a field the CLI dropped would silently
    train with the default)."""
    import dataclasses

    from mgr.__main__ import build_parser, train_config
    from mgr.data import DataConfig
    from mgr.launch import cli_args
    from mgr.trainer import TrainConfig
    changed = dict(method="gda-mps", model="smallcnn", width=8, steps=77, batch_size=33, lr=0.02, momentum=0.8,
                   weight_decay=1e-3, schedule="step", warmup_steps=3, lam=0.5, lam_kl=0.2, lam_kl_schedule="lr", finder="mlp",
                   finder_lr=3e-4, finder_lr_schedule="lr", finder_activation="silu", syn_per_real=2, meta_every=1, meta_val="full", meta_precision="bf16", pcr_aug="translation,color", eval_every=7,
                   log_every=3, probes_per_class=5, probe_real=90, train_acc_images=50, seed=4, device="cpu", compile=True,
                   generator="x.pt", procedure="mltp", mltp_variant="full", mltp_eta=0.7, mltp_alpha=0.01,
                   co_learner=True, co_learner_arch="linear", co_learner_gamma=0.3, co_learner_lr=2e-3,
                   keep_weights="last", latent_psi=0.5, syn_label_noise=0.2, leaky_generator=True)
    untested = {f.name for f in dataclasses.fields(TrainConfig)} - set(changed) - {"data", "pretrained"}
    assert not untested, f"add these fields to this test: {untested}"
    data = dict(ratio=0.25, data_seed=3, test_subset=300, val_fraction=0.3, root="elsewhere", download=False)
    # per_class excludes ratio, and digits has a fixed resolution: both round-trip in other tests' runs
    untested = {f.name for f in dataclasses.fields(DataConfig)} - set(data) - {"dataset", "per_class", "resolution"}
    assert not untested, f"add these data fields to this test: {untested}"
    cfg = TrainConfig(data=DataConfig("digits", **data), **changed)
    back = train_config(build_parser().parse_args(["train", *cli_args(cfg)]))
    assert back == cfg
    import json
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # and through config.json


def test_finder_activation_is_checked_and_old_configs_keep_the_relu_finder_they_ran():
    """A bad finder_activation is refused naming what is allowed; a config.json written before the option
    existed ran a ReLU finder, and reads back as that whatever today's default is."""
    from mgr.trainer import TrainConfig
    with pytest.raises(ValueError, match="finder_activation='tanh' is not allowed; choose one of relu, silu"):
        TrainConfig(finder_activation="tanh")
    new = TrainConfig(finder_activation="silu")
    old = new.to_dict()
    del old["finder_activation"]
    assert TrainConfig.from_dict(old).finder_activation == "relu"
    assert TrainConfig.from_dict(new.to_dict()) == new


def test_meta_every_defaults_to_two_and_old_configs_keep_their_every_step_finder():
    """The default meta step every 2nd iteration (docs/method.md#the-signal), 1 under MLTP (its finder steps
    inside each MLTP iteration); a config.json written before the field existed ran every step, and a resume
    of it must not silently halve its finder's updates."""
    from mgr.trainer import TrainConfig
    assert TrainConfig().meta_every == 2 and TrainConfig(procedure="mltp").meta_every == 1
    old = TrainConfig().to_dict()
    del old["meta_every"]
    assert TrainConfig.from_dict(old).meta_every == 1
    assert TrainConfig.from_dict(TrainConfig(meta_every=3).to_dict()).meta_every == 3


def test_resuming_a_run_of_the_removed_finite_difference_mode_says_what_to_do(tmp_path, capsys):
    """`--order first` (the finite-difference hypergradient) was removed: a stopped run that used it is refused
    on --resume with what happened and what to do, and its files are left as they were."""
    import json

    from mgr.__main__ import main
    from mgr.trainer import train
    from tests.conftest import tiny_config
    run = train(tiny_config("mgr", steps=2, eval_every=2), tmp_path, "old-fd", quiet=True)
    cfg = {**run.config, "order": "first", "fd_eps": 0.01}
    (run.path / "config.json").write_text(json.dumps(cfg))
    run.write_status(state="stopped")
    metrics = (run.path / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(run.path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config.json: order='first'" in err and "finite-difference hypergradient (--order first)" in err
    assert "was removed" in err and "train it again with the exact hypergradient" in err
    assert (run.path / "metrics.jsonl").read_text() == metrics and run.status()["state"] == "stopped"
    with pytest.raises(SystemExit):
        main(["train", "--order", "first"])  # the option itself is gone: argparse refuses it
    assert "unrecognized arguments: --order first" in capsys.readouterr().err
