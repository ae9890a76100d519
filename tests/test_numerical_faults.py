"""Numerical faults stop a run as failed, naming the step and the value, before anything broken
is written: a non-finite loss (see also test_train.py) and a finder whose latents leave the prior."""
import math
import re

import pytest

from mgr import checkpoint
from mgr.data import DataConfig
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train
from mgr.trainer.state import MAX_LATENT_SHIFT


def tiny(**kw):
    return TrainConfig(**{**dict(data=DataConfig("digits", ratio=0.1), method="mgr", steps=12,
                                 eval_every=2, log_every=1, batch_size=16, probes_per_class=2, probe_real=40,
                                 device="cpu"), **kw})


def test_an_exploding_finder_fails_the_run_naming_the_step_before_writing_its_garbage(tmp_path):
    with pytest.raises(FloatingPointError, match=r"finder's latents left the prior at step \d+") as e:
        train(tiny(finder_lr=0.2), tmp_path, quiet=True)  # Adam at 0.2 throws F(z) far out within a few steps
    step, shift = re.search(r"at step (\d+): mean latent shift ‖F\(z\) − z‖ = ([\d.e+]+) > 4·√z_dim = 32", str(e.value)).groups()
    step, shift = int(step), float(shift)
    assert shift > MAX_LATENT_SHIFT * math.sqrt(64) and 1 < step < 12
    (run_dir,) = tmp_path.iterdir()
    run = Run(run_dir)
    st = run.status()
    assert st["state"] == "failed" and f"at step {step}" in st["error"] and "--finder-lr" in st["error"]
    # what was written before the fault is whole; nothing from the fault's step on exists
    written = [m["step"] for m in run.metrics()]
    assert written and max(written) < step and run.probe_steps() == written
    assert max(s["step"] for s in run.scalars()) < step
    assert all(s["latent_shift"] <= MAX_LATENT_SHIFT * 8 for s in run.scalars())
    assert checkpoint.load(run_dir / "last.pt", "mgr-run-checkpoint", 1)["meta"]["step"] == max(written)
    assert checkpoint.load(run_dir / "best.pt", "mgr-classifier", 1)["meta"]["step"] < step


def test_the_finder_guard_leaves_sane_finders_alone(tmp_path):
    # the plain MLP finder starts far from the identity (F(z) ≈ 0, a shift of about ‖z‖ = √z_dim) and must run
    run = train(tiny(finder="mlp", steps=4), tmp_path, quiet=True)
    assert run.status()["state"] == "finished"
    assert all(0 < s["latent_shift"] < MAX_LATENT_SHIFT * 8 for s in run.scalars())


def test_a_non_finite_loss_in_an_mps_run_names_the_step(tmp_path):
    # at lr 1e12 the lookahead's meta-loss breaks first while L(θ; φ) is still finite; that step is named too
    with pytest.raises(FloatingPointError, match=r"the loss or a training scalar became non-finite at step \d+ .*meta_val_ce=nan"):
        train(tiny(lr=1e12, steps=30, eval_every=30), tmp_path, quiet=True)
    (run_dir,) = tmp_path.iterdir()
    st = Run(run_dir).status()
    assert st["state"] == "failed" and "non-finite at step" in st["error"] and not (run_dir / "last.pt").exists()
    assert all(math.isfinite(v) for r in Run(run_dir).scalars() for v in r.values())
