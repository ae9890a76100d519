"""The trainer's dials for the failure-mode demos: the scale ψ of the synthetic latents (truncation), wrong
synthetic labels at a given rate, and a generator of another split accepted only when asked (a leak)."""
import json
import subprocess
import sys

import pytest
import torch

from mgr.checkpoint import CheckpointError
from mgr.data import DataConfig
from mgr.paths import REPO
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train
from mgr.trainer.state import build
from mgr.trainer.steps import latents, told
from tests.waiting import TIMEOUT

DIGITS = DataConfig("digits", ratio=0.1)
OTHER_SPLIT = str(REPO / "checkpoints" / "generators" / "digits_ratio0.25_seed0.pt")  # saw 2.5x the images


def cfg(**kw):
    return TrainConfig(**{**dict(data=DIGITS, method="gda", steps=4, eval_every=2, batch_size=16, probes_per_class=2,
                                 probe_real=40, device="cpu"), **kw})


def test_latent_psi_scales_the_latents_the_run_draws_and_shows():
    torch.manual_seed(0)
    z, y = latents(build(cfg(latent_psi=0.5)), 20000)
    assert z.std().item() == pytest.approx(0.5, abs=0.01) and z.mean().abs().item() < 0.01
    torch.manual_seed(0)
    z1, y1 = latents(build(cfg()), 20000)
    assert torch.equal(z, z1 * 0.5) and torch.equal(y, y1)  # the same draw, scaled: arms stay paired


def test_label_noise_swaps_that_fraction_for_uniform_classes_and_draws_nothing_at_zero():
    s = build(cfg(syn_label_noise=0.3))
    y = torch.arange(10).repeat(10000)
    torch.manual_seed(1)
    noisy = told(s, y)
    changed = noisy != y
    assert changed.float().mean().item() == pytest.approx(0.3 * 9 / 10, abs=0.01)  # 1/K of swaps keep the class
    counts = torch.bincount(noisy[changed], minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max().item() < 0.1  # swapped to every class alike
    clean = build(cfg())
    before = torch.random.get_rng_state()
    assert told(clean, y) is y and torch.equal(torch.random.get_rng_state(), before)


def test_a_generator_of_another_split_is_refused_unless_the_run_is_marked_leaky(tmp_path):
    with pytest.raises(CheckpointError, match="split_hash"):
        build(cfg(generator=OTHER_SPLIT))
    run = train(cfg(generator=OTHER_SPLIT, leaky_generator=True), tmp_path, "leaky", quiet=True)
    assert run.status()["state"] == "finished" and run.config["leaky_generator"] is True
    r = subprocess.run([sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--method",
                        "gda", "--generator", OTHER_SPLIT, "--steps", "2", "--eval-every", "2", "--device", "cpu",
                        "--runs-dir", str(tmp_path / "cli"), "--quiet"], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and "would leak them into it" in r.stderr, r.stderr
    assert not list((tmp_path / "cli").glob("*/config.json"))  # refused before a run directory was made
    # the Train form and the demo queue check a launch the same way: another split's generator only when marked
    from mgr.launch import LaunchError, build_config
    form = {"data.dataset": "digits", "data.ratio": 0.1, "method": "gda", "generator": OTHER_SPLIT, "device": "cpu"}
    with pytest.raises(LaunchError, match="was trained on"):
        build_config(form)
    assert build_config({**form, "leaky_generator": True}).leaky_generator is True


def test_a_truncated_noisy_run_records_its_dials_and_its_probes_show_its_latents(tmp_path):
    run = train(cfg(latent_psi=0.25, syn_label_noise=0.5), tmp_path, "dials", quiet=True)
    config = json.loads((run.path / "config.json").read_text())
    assert config["latent_psi"] == 0.25 and config["syn_label_noise"] == 0.5
    z = Run(run.path).load_probe("static")["probe_z"]
    assert 0.2 < z.std() < 0.3
