"""Every command-line option with an invalid value is refused before any work: a message that
names the option, the value and what is allowed, exit status 2, and nothing created or written."""
import os
import re

import pytest
import torch

from mgr.__main__ import main
from mgr.paths import REPO

GEN = str(REPO / "checkpoints" / "generators" / "digits_ratio0.1_seed0.pt")


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals (choices, types)
        code = e.code
    return code, capsys.readouterr().err


TRAIN = [  # (options, what the message must say)
    (["--lr", "0"], "lr=0.0 is not allowed; it must be a number > 0"),
    (["--lr", "-0.1"], "lr=-0.1 is not allowed; it must be a number > 0"),
    (["--lr", "nan"], "lr=nan is not allowed; it must be a number > 0"),
    (["--lr", "inf"], "lr=inf is not allowed; it must be a number > 0"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--steps", "0"], "steps=0 is not allowed; it must be a positive integer"),
    (["--steps", "-5"], "steps=-5 is not allowed; it must be a positive integer"),
    (["--steps", "1.5"], "argument --steps: invalid int value: '1.5'"),
    (["--batch-size", "0"], "batch_size=0 is not allowed; it must be a positive integer"),
    (["--batch-size", "-8"], "batch_size=-8 is not allowed; it must be a positive integer"),
    (["--eval-every", "0"], "eval_every=0 is not allowed; it must be a positive integer"),
    (["--log-every", "-1"], "log_every=-1 is not allowed; it must be a positive integer"),
    (["--probes-per-class", "0"], "probes_per_class=0 is not allowed; it must be a positive integer"),
    (["--probe-real", "-1"], "probe_real=-1 is not allowed; it must be a number >= 0"),
    (["--train-acc-images", "-1"], "train_acc_images=-1 is not allowed; it must be a whole number of images >= 0"),
    (["--ratio", "0"], "ratio=0.0 is outside (0, 1]"),
    (["--ratio", "-0.1"], "ratio=-0.1 is outside (0, 1]"),
    (["--ratio", "1.5"], "ratio=1.5 is outside (0, 1]"),
    (["--ratio", "nan"], "ratio=nan is outside (0, 1]"),
    (["--ratio", "0.001", "--method", "base"], "ratio=0.001 keeps 0 image(s) of class '0'"),
    (["--per-class", "1", "--method", "base"], "per_class=1 is too small; each class needs at least 2"),
    (["--per-class", "1000", "--method", "base"], "per_class=1000 but class '0' has only"),
    (["--per-class", "5", "--ratio", "0.5"], "argument --ratio: not allowed with argument --per-class"),
    (["--data-seed", "-1"], "data_seed=-1 must be >= 0"),
    (["--resolution", "16"], "dataset 'digits' has a fixed size of 8x8"),
    (["--resolution", "2"], "resolution=2 is outside [4, 256]"),
    (["--dataset", "nope"], "unknown dataset 'nope'; known: digits"),
    (["--dataset", "imagefolder:/no/such/folder", "--method", "base"], "image folder '/no/such/folder' does not exist"),
    (["--method", "magic"], "argument --method: invalid choice: 'magic' (choose from"),
    (["--model", "vgg"], "argument --model: invalid choice: 'vgg' (choose from"),
    (["--finder", "oracle"], "argument --finder: invalid choice: 'oracle' (choose from"),
    (["--order", "first"], "unrecognized arguments: --order first"),  # the finite-difference mode was removed
    (["--schedule", "linear"], "argument --schedule: invalid choice: 'linear' (choose from"),
    (["--lam-kl-schedule", "cosine"], "argument --lam-kl-schedule: invalid choice: 'cosine' (choose from"),
    (["--finder-lr-schedule", "cosine"], "argument --finder-lr-schedule: invalid choice: 'cosine' (choose from"),
    (["--finder-activation", "tanh"], "argument --finder-activation: invalid choice: 'tanh' (choose from"),
    (["--device", "tpu"], "device='tpu' is not allowed; choose one of auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "device='cuda:x' is not allowed; choose one of auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:99"], "device 'cuda:99'"),
    (["--lam", "-1"], "lam=-1.0 is not allowed; it must be a number >= 0"),
    (["--lam-kl", "-0.1"], "lam_kl=-0.1 is not allowed; it must be a number >= 0"),
    (["--weight-decay", "-0.0001"], "weight_decay=-0.0001 is not allowed; it must be a number >= 0"),
    (["--finder-lr", "0"], "finder_lr=0.0 is not allowed; it must be a number > 0"),
    (["--momentum", "1"], "momentum=1.0 is not allowed; it must be in [0, 1)"),
    (["--momentum", "-0.1"], "momentum=-0.1 is not allowed; it must be in [0, 1)"),
    (["--momentum", "nan"], "momentum=nan is not allowed; it must be in [0, 1)"),
    (["--warmup-steps", "3"], "warmup_steps=3 is not allowed; it must be in [0, steps=3)"),
    (["--warmup-steps", "-1"], "warmup_steps=-1 is not allowed; it must be in [0, steps=3)"),
    (["--seed", "-1"], "seed=-1 is not allowed; it must be a number >= 0"),
    (["--pcr-aug", "zoom"], "unknown augmentation 'zoom'"),
    (["--pretrained"], "pretrained weights exist only for model resnet18"),
    (["--generator", "no/such/g.pt"], "no/such/g.pt does not exist"),
    (["--generator", str(REPO / "checkpoints")], "is not a file (expected a 'mgr-generator' checkpoint)"),
    (["--generator", str(REPO / "README.md")], "README.md: not a readable weights-only checkpoint"),
    (["--data-seed", "1", "--generator", GEN], "was made for split_hash="),
    (["--procedure", "magic"], "argument --procedure: invalid choice: 'magic' (choose from"),
    (["--mltp-variant", "second"], "argument --mltp-variant: invalid choice: 'second' (choose from"),
    (["--mltp-eta", "-1"], "mltp_eta=-1.0 is not allowed; it must be a number >= 0"),
    (["--mltp-alpha", "-1"], "mltp_alpha=-1.0 is not allowed; it must be a number >= 0"),
    (["--co-learner", "--method", "base"], "co_learner=True is not allowed; the co-learner reads looked-ahead features"),
    (["--co-learner-arch", "mlp"], "argument --co-learner-arch: invalid choice: 'mlp' (choose from"),
    (["--co-learner-gamma", "-1"], "co_learner_gamma=-1.0 is not allowed; it must be a number >= 0"),
    (["--syn-per-real", "0"], "syn_per_real=0 is not allowed; it must be a positive integer"),
    (["--meta-val", "test"], "argument --meta-val: invalid choice: 'test' (choose from"),
    (["--keep-weights", "some"], "argument --keep-weights: invalid choice: 'some' (choose from"),
    (["--meta-precision", "fp16"], "argument --meta-precision: invalid choice: 'fp16' (choose from"),
    (["--test-subset", "5"], "test_subset=5 is not allowed; give a number of test images >= 10"),
    (["--test-subset", "100000"], "test_subset=100000 is more than the"),
    (["--val-fraction", "0.6"], "val_fraction=0.6 is not allowed; give a number in (0, 0.5]"),
    (["--val-fraction", "0.3"], "train-generator --dataset digits --ratio 0.1 --data-seed 0 --val-fraction 0.3"),
    (["--val-fraction", "0.3", "--generator", GEN], "was trained on the split with val_fraction=0.1, but this run has"),
    (["--meta-every", "0"], "meta_every=0 is not allowed; it must be a positive integer"),
    (["--meta-every", "2", "--procedure", "mltp"], "under procedure 'mltp' the finder steps with every MLTP iteration"),
    (["--width", "0"], "width=0 is not allowed; it must be an integer in [1, 1024]"),
    (["--width", "16", "--model", "resnet18"], "width=16 is not allowed; model 'resnet18' has fixed widths"),
    (["--co-learner-lr", "0"], "co_learner_lr=0.0 is not allowed; it must be a number > 0"),
    (["--threads", "-2"], "threads=-2 is not allowed; it must be a whole number >= 0"),
    (["--pause-at", "0"], "--pause-at 0 is not allowed; it must be a step >= 1"),
    (["--latent-psi", "0"], "latent_psi=0.0 is not allowed; it must be a number in (0, 4]"),
    (["--latent-psi", "5"], "latent_psi=5.0 is not allowed; it must be a number in (0, 4]"),
    (["--syn-label-noise", "1.5", "--method", "gda"], "syn_label_noise=1.5 is not allowed; it must be a fraction in [0, 1]"),
    (["--syn-label-noise", "0.2", "--method", "pcr"], "method 'pcr' uses no synthetic labels"),
    (["--leaky-generator", "--method", "gda"], "leaky_generator=True is not allowed; it accepts a generator of another split, so name one with --generator"),
    (["--run-id", "../escape"], "run id '../escape' is not allowed"),
    (["--run-id", "a/b"], "run id 'a/b' is not allowed"),
    (["--run-id", ".."], "run id '..' is not allowed"),
    (["--run-id", "x..y"], "run id 'x..y' is not allowed"),
    (["--run-id", ".hidden"], "run id '.hidden' is not allowed"),
    (["--run-id", "/abs"], "run id '/abs' is not allowed"),
    (["--run-id", "a b"], "run id 'a b' is not allowed"),
    (["--run-id", ""], "run id '' is not allowed"),
    (["--run-id", "x" * 200], "at most 128 characters"),
]


@pytest.mark.parametrize("argv, message", TRAIN, ids=[" ".join(a)[:40] for a, _ in TRAIN])
def test_train_refuses_each_bad_option_before_any_work(tmp_path, capsys, argv, message):
    if argv[:2] == ["--device", "cuda:99"] and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    runs = tmp_path / "runs"
    size = [] if {"--ratio", "--per-class"} & set(argv) else ["--ratio", "0.1"]
    code, err = _run(["train", *size, "--runs-dir", str(runs), "--device", "cpu", "--steps", "3", "--quiet", *argv], capsys)
    assert code == 2 and message in err, err
    assert not runs.exists() or not any(runs.iterdir())  # no run directory was made


def test_every_train_option_is_in_the_table(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    options = set(re.findall(r"(--[a-z][a-z-]+)", capsys.readouterr().out))
    # options whose every value is valid (flags, free paths) are covered by other tests
    valid_by_construction = {"--help", "--quiet", "--compile", "--no-download", "--data-root", "--runs-dir", "--resume"}
    missing = options - valid_by_construction - {a[0] for a, _ in TRAIN}
    assert len(options) > 30 and not missing, f"options without a bad-value case: {sorted(missing)}"


def test_an_existing_run_id_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, err = _run(["train", "--runs-dir", str(tmp_path), "--run-id", "taken", "--device", "cpu", "--steps", "3"], capsys)
    assert code == 2 and "run 'taken' already exists" in err and os.listdir(tmp_path) == ["taken"]
    assert not any((tmp_path / "taken").iterdir())


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nothing-here", "is not a run directory (no config.json)"),
    (lambda d: d, "is not a run directory (no config.json)"),
    (lambda d: REPO / "README.md", "is not a run directory (no config.json)"),
])
def test_resume_of_a_non_run_is_refused(tmp_path, capsys, make, message):
    code, err = _run(["train", "--resume", str(make(tmp_path))], capsys)
    assert code == 2 and message in err and not any(tmp_path.iterdir())


def test_resume_refuses_options_it_would_ignore(tmp_path, capsys):
    code, err = _run(["train", "--resume", str(tmp_path), "--steps", "1000", "--lr", "0.1"], capsys)
    assert code == 2 and "takes no other training options (got --steps, --lr)" in err


GENERATOR = [
    (["--steps", "0"], "steps=0 must be a positive integer"),
    (["--batch-size", "-1"], "batch_size=-1 must be a positive integer"),
    (["--lr-g", "0"], "lr_g=0.0 must be > 0 and finite"),
    (["--lr-d", "inf"], "lr_d=inf must be > 0 and finite"),
    (["--lr-d", "nan"], "lr_d=nan must be > 0 and finite"),
    (["--n-dis", "0"], "n_dis=0 must be a positive integer"),
    (["--z-dim", "-4"], "z_dim=-4 must be a positive integer"),
    (["--width", "0"], "g_width=0 must be a positive integer"),
    (["--sample-every", "0"], "sample_every=0 must be a positive integer"),
    (["--bn-batches", "0"], "bn_batches=0 must be a positive integer"),
    (["--seed", "-2"], "seed=-2 must be >= 0"),
    (["--diffaug", "blur"], "unknown augmentation 'blur'"),
    (["--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--ratio", "0"], "ratio=0.0 is outside (0, 1]"),
    (["--ratio", "0.1", "--data-seed", "-1"], "data_seed=-1 must be >= 0"),
    (["--ratio", "0.1", "--val-fraction", "0"], "val_fraction=0.0 is not allowed"),
    (["--resume"], "--resume: no training state at"),
    (["--out", "{blocker}/g.pt"], "--out: {blocker} is not writable"),
    (["--work-dir", "{blocker}/work"], "--work-dir: {blocker}/work is not writable"),
    (["--out", "{existing}"], "exists; choose another --out"),
]


@pytest.mark.parametrize("argv, message", GENERATOR, ids=[" ".join(a)[:40] for a, _ in GENERATOR])
def test_train_generator_refuses_each_bad_option_before_any_work(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path / "ckpt"))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "existing.pt").write_bytes(b"the user's file")
    fill = lambda s: s.format(blocker=tmp_path / "blocker", existing=tmp_path / "existing.pt")  # noqa: E731
    code, err = _run(["train-generator", "--quiet", "--no-fid", *map(fill, argv)], capsys)
    assert code == 2 and fill(message) in err, err
    assert not list(tmp_path.rglob("*.pt.*")) and sorted(p.name for p in tmp_path.rglob("*.pt")) == ["existing.pt"]
    assert (tmp_path / "existing.pt").read_bytes() == b"the user's file"


@pytest.mark.parametrize("argv, message", [
    (["fid", "no/such.pt"], "no/such.pt: no such checkpoint file"),
    (["fid", str(REPO / "README.md")], "README.md: not a readable weights-only checkpoint"),
    (["fid", GEN, "--num", "0"], "--num 0 is not allowed; FID needs at least 2 generated images"),
    (["fid", GEN, "--num", "-5"], "--num -5 is not allowed"),
    (["fid", GEN, "--extractor", "clip"], "--extractor 'clip' is not one of auto, inception, classifier"),
    (["fid", GEN, "--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
    (["train-extractor", "--steps", "0"], "--steps 0 is not allowed; it must be a positive integer"),
    (["train-extractor", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["train-extractor", "--out", "{blocker}/e.pt"], "--out: {blocker} is not writable"),
    (["train-extractor", "--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
])
def test_fid_and_train_extractor_refuse_bad_options(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path / "ckpt"))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    fill = lambda s: s.format(blocker=tmp_path / "blocker")  # noqa: E731
    code, err = _run([*map(fill, argv)], capsys)
    assert code == 2 and fill(message) in err, err
    assert not list(tmp_path.rglob("*.pt"))
