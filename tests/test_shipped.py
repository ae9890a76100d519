"""The generators shipped in checkpoints/generators/: they load, cover every class, were trained
on exactly the split their metadata names, and their samples look like their class. On a fresh
clone without Fashion-MNIST installed, its generators' splits come from checkpoints/datasets/."""
import re

import pytest
import torch

from mgr.data import DataConfig, load
from mgr.fid import load_extractor
from mgr.gan import list_generators, load_generator
from mgr.models.classifier import accuracy
from mgr.paths import checkpoints_dir, generator_path

SHIPPED = [p for p, _ in list_generators()]
REQUIRED = [generator_path({"dataset": "digits", "ratio": 0.1, "data_seed": 0}),
            generator_path({"dataset": "fashion-mnist", "ratio": 0.01, "data_seed": 0}),
            generator_path({"dataset": "fashion-mnist", "ratio": 0.1, "data_seed": 0})]


def test_the_generators_the_presets_and_benchmarks_need_are_shipped():
    assert set(REQUIRED) <= set(SHIPPED), f"missing: {set(REQUIRED) - set(SHIPPED)}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_generator(path):
    G, meta = load_generator(path)  # fashion-mnist: the full data if installed, else the bundled subset
    subset = {k: meta[k] for k in ("ratio", "per_class") if k in meta}
    data = load(DataConfig(meta["dataset"], data_seed=meta["data_seed"], **subset))
    assert meta["split_hash"] == data.split_hash, "trained on other images than its split"
    assert meta["fid"] > 0 and meta["fid_extractor"] and meta["fid_n_real"] == len(data.y_test)
    torch.manual_seed(0)
    y = torch.arange(10 * data.num_classes) % data.num_classes
    x = G(torch.randn(len(y), G.z_dim), y)
    assert x.shape == (len(y), data.channels, data.resolution, data.resolution) and x.isfinite().all()
    # every class is drawn as itself: the offline FID classifier (91-100% on real test images) labels
    # each class's samples as that class far more often than chance, and most samples overall. A
    # collapsed or unconditional class (samples of another class, or noise) fails this.
    ext, _ = load_extractor(meta["dataset"])
    torch.manual_seed(1)
    y = torch.arange(50 * data.num_classes) % data.num_classes
    x = G(torch.randn(len(y), G.z_dim), y)
    per_class = [accuracy(ext, x[y == c], y[y == c]) for c in range(data.num_classes)]
    chance = 1 / data.num_classes
    if "_step" in path.stem:  # an early checkpoint, shipped as the weak-generator demo's: worse than its final one
        final, final_meta = load_generator(path.with_name(re.sub(r"_step\d+", "", path.name)))
        assert meta["steps"] < final_meta["steps"] and meta["fid"] > final_meta["fid"]
        x_late = final(torch.randn(len(y), G.z_dim, generator=torch.Generator().manual_seed(1)), y)
        late = [accuracy(ext, x_late[y == c], y[y == c]) for c in range(data.num_classes)]
        assert sum(per_class) < sum(late), (per_class, late)
        return
    # "most": more than half (data seed 2's demo generator, the weakest shipped at 2 000 steps, reads 0.54 here)
    assert min(per_class) > chance and sum(per_class) / len(per_class) > 0.5, f"per-class label accuracy {per_class}"


def test_a_fresh_clone_offline_builds_an_mgr_run_on_the_shipped_fashion_mnist_generator(tmp_path, monkeypatch):
    """No Debian package, nothing downloaded, downloads off: the trainer's own build() finds the data
    (the bundled subset) and the 1% generator, whose split fingerprint it checks."""
    from mgr import fashion_mnist
    from mgr.trainer import TrainConfig
    from mgr.trainer.state import build
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-package")
    data = DataConfig("fashion-mnist", ratio=0.01, root=str(tmp_path / "no-data"), download=False)
    s = build(TrainConfig(data=data, method="mgr", steps=1, device="cpu"))
    assert s.G is not None and "bundled subset" in s.data.source
    assert (len(s.data.y_train), len(s.data.y_val), len(s.data.y_test)) == (540, 60, 10000)


def test_a_generator_named_by_its_file_name_is_the_shipped_one_for_trainer_and_app(tmp_path, monkeypatch):
    """The demos name their generator by file name (mgr.demos.DEMO_GENERATOR), so their configs are the
    same on every clone: the trainer and the app's views both find it in checkpoints/generators/, from
    any working directory; a name that is not there is refused naming it."""
    import dataclasses

    from mgr import demos
    from mgr.analysis.models import generator_file
    from mgr.runstore import Run
    from mgr.trainer import TrainConfig
    from mgr.trainer.state import checked_generator
    monkeypatch.chdir(tmp_path)
    name = demos.DEMO_GENERATOR.format(data_seed=0)  # data seed 0's: the demos name one per split
    cfg = TrainConfig(data=DataConfig("fashion-mnist", ratio=0.01), method="pcr", generator=name)
    shipped = checkpoints_dir() / "generators" / name
    path, meta = checked_generator(cfg)
    assert path == str(shipped) and meta["g_width"] == 16
    assert generator_file(Run(tmp_path / "run"), cfg) == shipped
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        checked_generator(dataclasses.replace(cfg, generator="nope.pt"))
