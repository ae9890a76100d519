"""The research scripts (research/: one-off experiments behind the docs, not benchmarks a user runs) stay
runnable: each one's cheap mode or its measuring functions, on tiny inputs."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

RESEARCH = Path(__file__).resolve().parent.parent / "research"


def load(name):
    spec = importlib.util.spec_from_file_location(f"research_{name}", RESEARCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"research_{name}"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_vmap_seeds_quick_times_both_arms_and_checks_vmap_against_sequential(tmp_path):
    """research/vmap_seeds.py --quick: K=2 SmallCNNs, the plain step sequential vs vmapped, after the check
    that both give the same parameters; one torch thread in main, restored here for the other tests."""
    import torch
    threads = torch.get_num_threads()
    try:
        result = load("vmap_seeds").main(["--quick", "--out", str(tmp_path / "vmap_seeds.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "vmap_seeds.json").read_text()) == result
    (check,) = result["checks"]
    assert check["ok"] and check["nchw"]["max_abs_diff_param"] < 1e-4
    (rec,) = result["results"]
    assert (rec["kind"], rec["K"], rec["steps_timed_per_arm"]) == ("plain", 2, 2)
    assert rec["sequential_ms"] > 0 and rec["vmap_ms"] > 0 and rec["round_ratio_min"] <= rec["round_ratio_max"]
    assert result["command"].startswith("python research/vmap_seeds.py --quick") and result["threads"] == 1


def test_hypergradient_forms_quick_finds_both_exact_forms_equal_and_profiles_the_trainers(tmp_path):
    """Two independent exact computations of the finder's mixed derivative (the trainer's reverse-over-
    reverse, and torch.func's jvp of ∇_x ℓ_PCR through a stateless copy of the classifier) agree."""
    out = tmp_path / "forms.json"
    record = load("hypergradient_forms").main(["--quick", "--out", str(out)])
    assert all(c > 0.9999 for c in record["cosine_between_forms"])
    assert set(record["ms_per_call"]) == {"reverse-over-reverse", "forward-over-reverse"}
    assert 0 < record["trainer_profile"]["batchnorm_double_backward_share"] < 1
    assert json.loads(out.read_text()) == [record]
    assert record["command"].startswith("python research/hypergradient_forms.py --quick")


def test_meta_signal_half_means_agree_with_the_noise_model_on_draws_with_a_known_signal():
    """The agreement of means of k draws (split halves of the same draws) against k·c / (1 + (k − 1)·c):
    on draws made of one common direction plus independent noise the two agree, and pure noise gives ≈ 0.
    The script reads this to say what averaging more latents per finder update would buy."""
    import torch
    ms = load("meta_signal")
    gen = torch.Generator().manual_seed(0)
    d, n = 200_000, 8
    common = torch.randn(d, generator=gen)
    for noise in (2.0, 4.0):  # single-draw agreement ≈ 1 / (1 + noise²): 0.2, 0.06
        gs = [common + noise * torch.randn(d, generator=gen) for _ in range(n)]
        units = [g / g.norm() for g in gs]
        c = sum(float(a @ b) for i, a in enumerate(units) for b in units[i + 1:]) / (n * (n - 1) / 2)
        assert abs(c - 1 / (1 + noise ** 2)) < 0.01
        assert abs(ms.half_mean_agreement(gs) - ms.pooled_agreement(c, n // 2)) < 0.02
        assert ms.half_mean_agreement(gs) > c + 0.1  # averaging four draws raises it
    noise_only = [torch.randn(d, generator=gen) for _ in range(n)]
    assert abs(ms.half_mean_agreement(noise_only)) < 0.01
    assert ms.pooled_agreement(0.12, 8) == pytest.approx(8 * 0.12 / (1 + 7 * 0.12))


def test_meta_signal_quick_records_agreement_held_out_and_half_means(tmp_path):
    """research/meta_signal.py --quick: a tiny digits run, both quick levers at both checkpoints, every record
    with its command and the measures the docs quote."""
    out = tmp_path / "meta_signal.json"
    load("meta_signal").main(["--quick", "--out", str(out)])
    records = json.loads(out.read_text())
    assert [(r["lever"], r["step"]) for r in records] == [("batch-val", 2), ("full-val", 2), ("batch-val", 4),
                                                           ("full-val", 4)]
    for r in records:
        assert -1 <= r["agreement_min"] <= r["agreement"] <= r["agreement_max"] <= 1
        assert -1 <= r["agreement_of_half_means"] <= 1 and r["half_means_of"] == 1
        assert 0 <= r["heldout_lowered"] <= r["heldout_pairs"] and r["seconds_per_hypergradient"] > 0
        assert r["command"].startswith("python research/meta_signal.py --quick")


def test_finder_units_counts_silent_units_and_the_part_of_the_shift_that_depends_on_z():
    import torch

    from mgr.finder import Finder
    units = load("finder_units")
    torch.manual_seed(0)
    finder = Finder(16, activation="relu")
    fresh = units.measure(finder)
    # at initialisation one unit of 256 can be silent by chance (measured: in 19 of 300 seeds with z_dim 16)
    assert fresh["units_alive"][0] == 1.0 and fresh["units_alive"][1] >= 0.99
    assert (fresh["shift"], fresh["spread"]) == (0.0, 0.0)
    with torch.no_grad():
        finder.net[2].bias.fill_(-100.0)  # the second layer silent for every latent, as at lr 1e-2
        finder.net[4].weight.normal_(generator=torch.Generator().manual_seed(0))
        finder.net[4].bias.fill_(0.5)
    silent = units.measure(finder)
    assert silent["units_alive"] == [1.0, 0.0] and silent["shift"] == pytest.approx(2.0) and silent["spread"] == 0.0
    assert units.measure(Finder(16, "linear"))["units_alive"] == []


def test_finder_units_trace_records_the_finder_after_each_first_step(tmp_path):
    out = tmp_path / "finder_units.json"
    load("finder_units").main(["--trace", "--dataset", "digits", "--ratio", "0.1", "--steps", "3", "--out", str(out)])
    (record,) = json.loads(out.read_text())
    assert [t["step"] for t in record["trace"]] == [0, 1, 2, 3] and record["command"].startswith("python research/finder_units.py --trace")
    assert record["trace"][0]["shift"] == 0.0 and record["trace"][1]["shift"] > 0  # identity at first, then moved
    assert all(len(t["units_alive"]) == 2 for t in record["trace"])


def test_compare_arms_pairs_one_arm_by_seed_and_refuses_records_that_are_not_paired(tmp_path):
    """research/compare_arms.py: mgr under two settings, from two demo records whose pcr arm must agree seed for
    seed (the evidence that both shared data, initialisation and batches)."""
    def record(path, mgr, pcr, seeds=None):
        path.write_text(json.dumps([{"demo": "finder-helps-pcr", "dataset": "fashion-mnist", "methods": ["mgr", "pcr"],
                                     "statistic": "test accuracy at the last step", "seeds": seeds or len(mgr),
                                     "values": [list(v) for v in zip(mgr, pcr)], "command": f"python bench/demos.py {path.name}"}]))
        return path
    compare = load("compare_arms")
    a = record(tmp_path / "a.json", [80.0, 81.5, 79.0], [79.0, 80.0, 79.5])
    b = record(tmp_path / "b.json", [79.5, 80.0, 79.5], [79.0, 80.0, 79.5])
    rec = compare.main([str(a), str(b), "--label", "x", "--out", str(tmp_path / "c.json")])
    assert rec["diffs"] == [0.5, 1.5, -0.5] and rec["mean_diff"] == pytest.approx(0.5) and rec["positive_in"] == 2
    assert rec["ci95"][0] < 0 < rec["ci95"][1] and rec["verdict"] == "inconclusive"
    assert json.loads((tmp_path / "c.json").read_text())[0]["label"] == "x"
    moved = record(tmp_path / "moved.json", [79.5, 80.0, 79.5], [79.0, 80.1, 79.5])
    with pytest.raises(SystemExit, match=r"arm 1 \(pcr\) differs between the records at seeds \[1\]"):
        compare.main([str(a), str(moved), "--out", str(tmp_path / "c.json")])
    with pytest.raises(SystemExit, match="no record of demo 'gda-hurts'"):
        compare.main([str(a), str(b), "--demo", "gda-hurts", "--out", str(tmp_path / "c.json")])


def test_dose_pilot_pairs_each_dose_with_its_reference_on_seeds_the_demos_never_use():
    """research/dose_pilot.py's runs: every dial's doses and its reference on the same seed and data split (seed k:
    data seed k mod 3, as a demo), the demo setting otherwise; an unknown dial is refused before any work."""
    pilot = load("dose_pilot")
    jobs = pilot.jobs(["lam", "psi"], seeds=2, first_seed=99)
    assert {seed for *_, seed, _ in jobs} == {99, 100}
    for dial, fam, dose, seed, values in jobs:
        assert values["seed"] == seed and values["data.data_seed"] == seed % 3
        assert values["generator"] == f"fashion-mnist_ratio0.01_seed{seed % 3}_w16.pt"
        field = pilot.DIALS[dial][1]
        assert (field in values) == (dose is not None) and (dose is None or values[field] == dose)
    refs = [(dial, fam, seed) for dial, fam, dose, seed, _ in jobs if dose is None]
    assert ("lam", "ref", 99) in refs and ("psi", "gda", 99) in refs and ("psi", "pcr", 100) in refs
    with pytest.raises(SystemExit):
        pilot.main(["--dials", "volume"])


def test_generator_layout_finds_the_same_images_and_the_reorders_gone(tmp_path):
    """research/generator_layout.py on two short rounds: both forwards give the same images, and the one that
    reorders its first feature map once makes fewer copies than the one whose convolutions reorder it."""
    import torch
    threads = torch.get_num_threads()
    try:
        rec = load("generator_layout").main(["--rounds", "2", "--reps", "2", "--out", str(tmp_path / "g.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "g.json").read_text()) == rec
    assert rec["bitwise_same_images"] and len(rec["rounds"]) == 2
    assert rec["copies_after"]["calls"] < rec["copies_before"]["calls"]
    assert rec["command"].startswith("python research/generator_layout.py --rounds 2")
