"""`python -m mgr export RUN --tensorboard DIR`: the event files read back with TensorBoard's own reader,
the projector's config, metadata and sprites; bad input refused with nothing written."""
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mgr.__main__ import main
from mgr.runstore import numeric_fields
from mgr.trainer import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("export-runs")
    return {m: train(tiny_config(m, steps=4, eval_every=2, log_every=1, probes_per_class=2, probe_real=30), d,
                     f"t-{m}", quiet=True) for m in ("mgr", "base")}


def test_scalars_and_embeddings_read_back(runs, tmp_path, capsys):
    run, out = runs["mgr"], tmp_path / "tb"
    assert main(["export", str(run.path), "--tensorboard", str(out)]) == 0
    assert "view with: tensorboard --logdir" in capsys.readouterr().out
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    metrics, scalars = run.metrics(), run.scalars()
    assert {f"metrics/{k}" for k, _ in numeric_fields(metrics[0])} <= tags
    assert {f"metrics/test_class_acc/{i}" for i in range(10)} <= tags  # the per-class accuracy, one tag per class
    assert {f"train/{k}" for k in scalars[0] if k != "step"} <= tags
    for prefix, records, field in (("metrics", metrics, "test_acc"), ("metrics", metrics, "pcr"),
                                   ("train", scalars, "ce"), ("train", scalars, "latent_shift")):
        events = acc.Scalars(f"{prefix}/{field}")
        assert [e.step for e in events] == [r["step"] for r in records]
        assert np.allclose([e.value for e in events], [r[field] for r in records])

    config = (out / "projector_config.pbtxt").read_text()
    steps = run.probe_steps()
    assert steps == [2, 4] and config.count("embeddings {") == len(steps)
    static, probe = run.load_probe("static"), run.load_probe(4)
    n_real, n_syn = len(static["real_labels"]), len(static["probe_y"])
    folder = out / "00004" / "features"
    assert 'metadata_path: "00004/features/metadata.tsv"' in config and "sprite {" in config
    rows = [line.split("\t") for line in (folder / "metadata.tsv").read_text().splitlines()]
    assert rows[0] == ["class", "kind", "split"] and len(rows) == 1 + n_real + 2 * n_syn
    kinds = [r[1] for r in rows[1:]]
    assert kinds == ["real"] * n_real + ["uniform-synthetic"] * n_syn + ["finder-synthetic"] * n_syn
    classes = [str(c) for c in static["classes"]]
    assert [r[0] for r in rows[1:n_real + 1]] == [classes[y] for y in static["real_labels"]]
    assert {r[2] for r in rows[1:n_real + 1]} <= {"train", "test"}
    tensors = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    expect = np.concatenate([probe["real_features"], probe["uniform_features"], probe["finder_features"]])
    assert np.allclose(tensors, expect, atol=1e-4)
    side = int(np.ceil(np.sqrt(len(expect))))  # the sprite: a square grid of the points' images
    assert Image.open(folder / "sprite.png").size == (side * 8, side * 8)  # digits are 8×8


def test_a_base_run_has_only_real_points(runs, tmp_path):
    assert main(["export", str(runs["base"].path), "--tensorboard", str(tmp_path / "tb")]) == 0
    rows = (tmp_path / "tb" / "00004" / "features" / "metadata.tsv").read_text().splitlines()[1:]
    assert {r.split("\t")[1] for r in rows} == {"real"}


def test_bad_input_is_refused_and_nothing_is_written(runs, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "is not a run directory" in capsys.readouterr().err and not (tmp_path / "tb").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    assert main(["export", str(runs["mgr"].path), "--tensorboard", str(busy)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]

    empty = tmp_path / "empty"  # an empty folder is fine
    empty.mkdir()
    assert main(["export", str(runs["mgr"].path), "--tensorboard", str(empty)]) == 0

    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(runs["mgr"].path, broken)
    (broken / "probes" / "step_0000004.npz").write_bytes(b"not a zip")
    out = tmp_path / "out" / "tb"
    assert main(["export", str(broken), "--tensorboard", str(out)]) == 2
    assert "not a readable probe file" in capsys.readouterr().err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
