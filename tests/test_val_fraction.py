"""--val-fraction: the share of each kept class that becomes the validation split. The kept images never
change with it (only where the train / val cut falls), the default is the split the project always had,
and a generator is tied to the value it was trained with."""
import numpy as np
import pytest
import torch

from mgr import fashion_mnist, launch
from mgr.__main__ import main
from mgr.data import DataConfig, DataError, load, reduce_split, split_hash
from mgr.gan import load_generator
from mgr.paths import generator_path

# split_hash of reduce_split's (train_idx, val_idx) as the code before val_fraction computed them, for the
# shipped generators' datasets and ratios (data seed 0: also each shipped generator's recorded fingerprint)
BEFORE = {("digits", 0.1, 0): "cc23355a62fe82ef", ("digits", 0.1, 1): "13156eed31fecab5",
          ("digits", 0.25, 0): "5382af14858723b5", ("digits", 0.25, 1): "629fe5a425f313a0",
          ("fashion-mnist", 0.01, 0): "e554c4ba9d80337b", ("fashion-mnist", 0.01, 1): "ab9dae1855a71940",
          ("fashion-mnist", 0.05, 0): "8316471a3d658b7f", ("fashion-mnist", 0.05, 1): "e1c8b782da35bb0b",
          ("fashion-mnist", 0.1, 0): "2b6a3eda6ea37e66", ("fashion-mnist", 0.1, 1): "35c07e8d24bb176a"}


def _labels(dataset):
    from mgr.data import _load_digits
    return _load_digits().y_train if dataset == "digits" else fashion_mnist.read_bundle_index().train_labels


@pytest.mark.parametrize("dataset, ratio, seed", list(BEFORE))
def test_the_default_is_the_split_of_before_and_every_fraction_keeps_the_same_images(dataset, ratio, seed):
    labels = _labels(dataset)
    default = reduce_split(labels, ratio=ratio, data_seed=seed)
    assert split_hash(*default) == BEFORE[dataset, ratio, seed]
    assert all(np.array_equal(a, b) for a, b in zip(default, reduce_split(labels, ratio=ratio, data_seed=seed,
                                                                           val_fraction=0.1)))
    if seed == 0:  # the shipped generator still matches the default split
        _, meta = load_generator(generator_path({"dataset": dataset, "ratio": ratio, "data_seed": 0}))
        assert meta["split_hash"] == BEFORE[dataset, ratio, seed] and "val_fraction" not in meta
    kept = np.concatenate(default)
    bundle = fashion_mnist.read_bundle_index()
    for vf in (0.05, 0.2, 0.3, 0.5):
        train, val = reduce_split(labels, ratio=ratio, data_seed=seed, val_fraction=vf)
        assert not set(train) & set(val) and set(train) | set(val) == set(kept)
        if dataset == "fashion-mnist" and seed == 0:  # the bundled offline subset serves every fraction
            assert bundle.covers(np.concatenate([train, val]))


def test_digits_10_percent_at_0_3():
    a, b = load(DataConfig("digits", ratio=0.1)), load(DataConfig("digits", ratio=0.1, val_fraction=0.3))
    assert torch.bincount(b.y_val).tolist() == [4] * 10  # round(0.3 · 12 or 13) per class
    assert torch.bincount(b.y_train).tolist() == [8, 9, 8, 9, 9, 9, 9, 8, 8, 9]
    n = torch.bincount(a.y_train) + torch.bincount(a.y_val)
    assert torch.equal(torch.bincount(b.y_train) + torch.bincount(b.y_val), n)
    assert not set(b.train_idx) & set(b.val_idx)
    assert set(b.train_idx) | set(b.val_idx) == set(a.train_idx) | set(a.val_idx)
    assert set(a.val_idx) < set(b.val_idx)  # the cut moves: the first images of each class stay validation
    assert b.split_hash != a.split_hash and torch.equal(a.x_test, b.x_test)


@pytest.mark.parametrize("bad", [0, 0.0, 0.6, -1, "x", True, float("nan"), None])
def test_bad_val_fraction_is_refused_naming_the_field(bad):
    with pytest.raises(DataError, match=rf"val_fraction={bad!r} is not allowed; give a number in \(0, 0.5\]"):
        DataConfig("digits", ratio=0.1, val_fraction=bad)


def test_reduce_split_leaves_a_training_image_per_class():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(DataError, match=r"val_fraction=0.9 takes 2 of the 2 kept image\(s\) of class '0'"):
        reduce_split(labels, per_class=2, val_fraction=0.9)
    train, val = reduce_split(labels, per_class=2, val_fraction=0.5)  # the smallest allowed class, the largest fraction
    assert len(train) == len(val) == 3


def test_subset_records_val_fraction_only_off_the_default():
    assert DataConfig("digits", ratio=0.1).subset == {"dataset": "digits", "ratio": 0.1, "data_seed": 0}
    assert DataConfig("digits", ratio=0.1, val_fraction=0.3).subset["val_fraction"] == 0.3
    assert generator_path(DataConfig("digits", ratio=0.1).subset).name == "digits_ratio0.1_seed0.pt"
    assert generator_path(DataConfig("digits", ratio=0.1, val_fraction=0.3).subset).name == \
        "digits_ratio0.1_seed0_val0.3.pt"


RUN = ["train", "--dataset", "digits", "--ratio", "0.1", "--method", "pcr", "--steps", "2", "--eval-every", "2",
       "--batch-size", "8", "--probes-per-class", "2", "--probe-real", "10", "--device", "cpu", "--quiet",
       "--threads", "1"]
COMMAND = "python -m mgr train-generator --dataset digits --ratio 0.1 --data-seed 0 --val-fraction 0.3"


@pytest.mark.parametrize("explicit", [False, True])
def test_a_run_at_0_3_refuses_the_shipped_generator_before_training(explicit, tmp_path, capsys):
    shipped = generator_path({"dataset": "digits", "ratio": 0.1, "data_seed": 0})
    extra = ["--generator", str(shipped)] if explicit else []
    assert main([*RUN, "--val-fraction", "0.3", "--runs-dir", str(tmp_path / "runs"), *extra]) == 2
    err = capsys.readouterr().err
    assert "val_fraction" in err and COMMAND in err and str(shipped) in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run was made


def test_the_train_form_names_val_fraction():
    form = {"data.dataset": "digits", "data.ratio": 0.1, "method": "pcr", "steps": 2, "device": "cpu"}
    with pytest.raises(launch.LaunchError) as e:
        launch.build_config({**form, "data.val_fraction": 0.3})
    assert e.value.field == "data.val_fraction" and COMMAND in str(e.value)
    with pytest.raises(launch.LaunchError) as e:
        launch.build_config({**form, "data.val_fraction": 0.6})
    assert e.value.field == "data.val_fraction" and "val_fraction=0.6 is not allowed" in str(e.value)
    assert "--val-fraction" not in launch.cli_args(launch.build_config({**form, "data.val_fraction": 0.1}))


def test_a_generator_trained_at_0_3_is_found_and_accepted_by_a_0_3_run(tmp_path, monkeypatch, capsys):
    from mgr.analysis.runs import config_items, resolved_config
    from mgr.runstore import list_runs
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path / "checkpoints"))
    try:
        assert main(["train-generator", "--dataset", "digits", "--ratio", "0.1", "--val-fraction", "0.3",
                     "--steps", "2", "--width", "8", "--batch-size", "8", "--no-fid", "--quiet", "--threads", "1"]) == 0
        made = tmp_path / "checkpoints" / "generators" / "digits_ratio0.1_seed0_val0.3.pt"
        _, meta = load_generator(made)
        assert meta["val_fraction"] == 0.3 and meta["split_hash"] == load(
            DataConfig("digits", ratio=0.1, val_fraction=0.3)).split_hash
        capsys.readouterr()
        assert main([*RUN, "--val-fraction", "0.3", "--runs-dir", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
        # and the default run does not take the 0.3 generator (it has none in this checkpoints folder)
        assert main([*RUN, "--runs-dir", str(tmp_path / "runs")]) == 2
        assert "digits_ratio0.1_seed0.pt does not exist" in capsys.readouterr().err
    finally:
        torch.set_num_threads(1)
    (run,) = list_runs(tmp_path / "runs")
    assert run.config["data"]["val_fraction"] == 0.3 and run.status()["state"] == "finished"
    key = dict(config_items(resolved_config(run.config)))
    assert key["data.val_fraction"] == 0.3  # Compare tells it apart from the default split
    default = resolved_config({**run.config, "data": {k: v for k, v in run.config["data"].items() if k != "val_fraction"}})
    assert "data.val_fraction" not in dict(config_items(default))  # runs from before the option group as before


@pytest.mark.parametrize("value, message", [(0.6, "val_fraction=0.6 is not allowed"), (0.3, COMMAND)])
def test_the_train_page_shows_a_val_fraction_error_under_its_field(value, message, tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("MGR_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/train.py").run()
    at.number_input(key="form.data.val_fraction").set_value(value).run()
    at.button(key="launch").click().run()
    assert not at.exception
    col = next(c for c in at.columns if any(w.key == "form.data.val_fraction" for w in c.get("number_input")))
    assert any(message in e.value for e in col.error), [e.value for e in at.error]
    assert not (tmp_path / launch.LAUNCHES).exists()  # nothing was spawned
