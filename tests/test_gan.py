import copy
import os
import pickle

import pytest
import torch

from mgr import checkpoint
from mgr.checkpoint import CheckpointError
from mgr.data import DataConfig
from mgr.gan import GanConfig, list_generators, load_generator, save_generator, train_generator
from mgr.models import Generator
from mgr.runtime import seed_everything

DIGITS = DataConfig("digits", ratio=0.1)


def tiny(**kw):
    return GanConfig(**{**dict(steps=4, batch_size=16, z_dim=16, g_width=8, d_width=8, sample_every=2,
                               checkpoint_every=2, bn_batches=4), **kw})


def test_training_changes_weights_and_saves_a_loadable_generator(tmp_path):
    cfg = tiny()
    meta = train_generator(DIGITS, cfg, tmp_path / "g.pt", fid=False, quiet=True, device="cpu")
    G, loaded = load_generator(tmp_path / "g.pt")
    assert loaded == meta and meta["steps"] == 4 and meta["dataset"] == "digits" and meta["ratio"] == 0.1
    assert meta["resolution"] == 8 and meta["num_classes"] == 10 and len(meta["split_hash"]) == 16
    seed_everything(cfg.seed)
    fresh = Generator(10, 8, 1, cfg.z_dim, cfg.g_width)
    assert not torch.allclose(G.linear.weight, fresh.linear.weight)
    assert not any(p.requires_grad for p in G.parameters()) and not G.training
    # the work folder keeps the resumable state and the sample grids; a grid sits next to the checkpoint
    work = tmp_path / "g.work"
    assert (work / "state.pt").exists() and (work / "samples_000002.png").exists()
    assert (tmp_path / "g.png").exists()


def test_resume_gives_the_same_generator_as_an_uninterrupted_run(tmp_path):
    train_generator(DIGITS, tiny(steps=4), tmp_path / "a.pt", fid=False, quiet=True, device="cpu")
    train_generator(DIGITS, tiny(steps=2), tmp_path / "b.pt", fid=False, quiet=True, device="cpu")
    meta = train_generator(DIGITS, tiny(steps=4), tmp_path / "b.pt", resume=True, fid=False, quiet=True, device="cpu")
    assert meta["steps"] == 4
    a, b = load_generator(tmp_path / "a.pt")[0].state_dict(), load_generator(tmp_path / "b.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bn_batches_changes_only_the_final_batchnorm_statistics_and_a_resume_may_change_it(tmp_path):
    train_generator(DIGITS, tiny(steps=2, bn_batches=1), tmp_path / "a.pt", fid=False, quiet=True, device="cpu")
    train_generator(DIGITS, tiny(steps=1, bn_batches=4), tmp_path / "b.pt", fid=False, quiet=True, device="cpu")
    train_generator(DIGITS, tiny(steps=2, bn_batches=8), tmp_path / "b.pt", resume=True, fid=False, quiet=True,
                    device="cpu")
    (a, meta_a), (b, meta_b) = load_generator(tmp_path / "a.pt"), load_generator(tmp_path / "b.pt")
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    means = [(m_a.running_mean, m_b.running_mean) for m_a, m_b in zip(a.modules(), b.modules())
             if isinstance(m_a, torch.nn.BatchNorm2d)]
    assert means and not all(torch.equal(x, y) for x, y in means)
    assert (meta_a["recipe"]["bn_batches"], meta_b["recipe"]["bn_batches"]) == (1, 8)


def test_nothing_is_overwritten_or_resumed_by_accident(tmp_path):
    train_generator(DIGITS, tiny(steps=2), tmp_path / "g.pt", fid=False, quiet=True, device="cpu")
    before = (tmp_path / "g.pt").read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        train_generator(DIGITS, tiny(steps=2), tmp_path / "g.pt", fid=False, quiet=True, device="cpu")
    assert (tmp_path / "g.pt").read_bytes() == before
    with pytest.raises(FileExistsError, match="--resume"):
        train_generator(DIGITS, tiny(steps=2), tmp_path / "other.pt", work_dir=tmp_path / "g.work", fid=False,
                        quiet=True, device="cpu")
    with pytest.raises(CheckpointError, match="model_recipe"):
        train_generator(DIGITS, tiny(steps=4, g_width=16), tmp_path / "g.pt", resume=True, fid=False, quiet=True,
                        device="cpu")
    with pytest.raises(FileNotFoundError, match="no training state"):
        train_generator(DIGITS, tiny(), tmp_path / "new.pt", resume=True, fid=False, quiet=True, device="cpu")


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps=0 must be a positive integer"),
    ("lr_g", -1e-4, "lr_g=-0.0001 must be > 0"),
    ("diffaug", "color,blur", "unknown augmentation 'blur'"),
    ("ema_decay", 1.0, r"ema_decay=1.0 must be in \[0, 1\)"),
])
def test_bad_gan_config(field, value, message):
    with pytest.raises(ValueError, match=message):
        GanConfig(**{field: value})


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    G = Generator(10, 8, 1, z_dim=16, width=8).eval()
    meta = {"dataset": "digits", "ratio": 0.1, "data_seed": 0, "split_hash": "abc", "resolution": 8, "channels": 1,
            "num_classes": 10, "classes": list("0123456789"), "z_dim": 16, "g_width": 8, "steps": 0, "recipe": {}}
    save_generator(tmp_path / "g.pt", G, meta)
    return tmp_path / "g.pt", G, meta


def test_checkpoint_round_trip(saved):
    path, G, meta = saved
    G2, meta2 = load_generator(path, expect={"dataset": "digits", "split_hash": "abc", "resolution": 8})
    z, y = torch.randn(5, 16), torch.arange(5)
    assert meta2 == meta and torch.equal(G(z, y), G2(z, y))


def test_mismatched_generator_is_refused_with_the_field_named(saved):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match=r"split_hash='abc', but split_hash='def' is needed.*leak"):
        load_generator(path, expect={"split_hash": "def"})
    with pytest.raises(CheckpointError, match="resolution=8, but resolution=28"):
        load_generator(path, expect={"resolution": 28})


def test_truncated_checkpoint_is_refused_naming_the_file(saved):
    path, _, _ = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{path.name}: not a readable weights-only checkpoint.*truncated"):
        load_generator(path)


def test_weights_that_do_not_fit_their_metadata_are_refused(saved, tmp_path):
    path, G, meta = saved
    save_generator(tmp_path / "bad.pt", G, {**meta, "g_width": 16})
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_generator(tmp_path / "bad.pt")


def test_other_kind_and_missing_file(tmp_path, saved):
    checkpoint.save(tmp_path / "x.pt", "mgr-feature-extractor", 1, {})
    with pytest.raises(CheckpointError, match="is a 'mgr-feature-extractor' checkpoint, expected a 'mgr-generator'"):
        load_generator(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_generator(tmp_path / "nope.pt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_when_unpickled_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "mgr-generator", "version": 1, "meta": {}, "state_dict": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="never executed"):
        load_generator(path)
    assert not marker.exists()
    # and the exploit is real: plain pickle would have run it
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


# ----------------------------------------------------------------------------- soft labels (interpolation)

def _class_index_forward(G, z, y):
    """G's forward for class indices written out with the embedding lookup F.embedding: what G
    computed before it took soft labels, so a change to the index path shows up here."""
    import torch.nn.functional as F

    def cbn(bn, x):
        x = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
        return x * (1 + F.embedding(y, bn.class_gain.weight))[:, :, None, None] + \
            F.embedding(y, bn.class_bias.weight)[:, :, None, None]

    h = G.linear(z).view(len(z), -1, G.bottom, G.bottom)
    for b in G.blocks:
        u = F.interpolate(F.relu(cbn(b.bn1, h)), scale_factor=2)
        h = b.conv2(F.relu(cbn(b.bn2, b.conv1(u)))) + b.skip(F.interpolate(h, scale_factor=2))
    return torch.tanh(G.out_conv(F.relu(G.out_bn(h))))


@pytest.mark.parametrize("path", [p for p, _ in list_generators()], ids=lambda p: p.name)
def test_shipped_generators_give_the_same_images_for_class_indices_and_one_hot_labels(path):
    G, _ = load_generator(path)  # strict: the state dict has exactly the parameters it had
    torch.manual_seed(0)
    y = torch.arange(5 * G.num_classes) % G.num_classes
    z = torch.randn(len(y), G.z_dim)
    with torch.no_grad():
        images = G(z, y)
        assert torch.equal(images, _class_index_forward(G, z, y))
        assert torch.equal(images, G(z, torch.nn.functional.one_hot(y, G.num_classes).float()))


def test_soft_labels_mix_the_class_embeddings_and_bad_shapes_are_refused(saved):
    _, G, _ = saved
    with torch.no_grad():  # give the zero-initialised class embeddings distinct values
        for m in G.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.normal_()
    z = torch.randn(1, 16)
    half = torch.zeros(1, 10)
    half[0, 2] = half[0, 7] = 0.5
    averaged = copy.deepcopy(G)  # a generator whose class 2 has the mean embeddings of classes 2 and 7
    with torch.no_grad():
        for m in averaged.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight[2] = (m.weight[2] + m.weight[7]) / 2
        a, b, mid = G(z, torch.tensor([2])), G(z, torch.tensor([7])), G(z, half)
        assert torch.allclose(mid, averaged(z, torch.tensor([2])), atol=1e-6)
    assert not torch.allclose(mid, a) and not torch.allclose(mid, b)
    with pytest.raises(ValueError, match=r"soft labels \(float\) must have shape \(1, 10\)"):
        G(z, torch.ones(1, 9))
    with pytest.raises(ValueError, match=r"class indices must have shape \(1,\)"):
        G(z, torch.tensor([1, 2]))


def test_a_channels_last_generator_gives_the_same_images_and_feeds_its_convolutions_channels_last(saved):
    """The trainer puts G in channels_last: its images are the same up to the convolutions' rounding, and no
    convolution gets an input it has to reorder first (on a CPU a copy per convolution)."""
    _, G, _ = saved
    G = copy.deepcopy(G).eval()
    z, y = torch.randn(8, G.z_dim), torch.arange(8) % G.num_classes
    with torch.no_grad():
        nchw = G(z, y)
        G = G.to(memory_format=torch.channels_last)
        layouts = []
        convs = [m for m in G.modules() if isinstance(m, torch.nn.Conv2d)]
        hooks = [c.register_forward_pre_hook(
            lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))) for c in convs]
        nhwc = G(z, y)
        for h in hooks:
            h.remove()
    torch.testing.assert_close(nhwc, nchw, rtol=0, atol=1e-5)
    assert layouts == [True] * len(convs)
