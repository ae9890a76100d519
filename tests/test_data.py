import numpy as np
import pytest
import torch

from mgr.data import DEBIAN_FASHION_MNIST, DataConfig, DataError, known_datasets, load, reduce_split


def test_digits_split_is_stratified_disjoint_and_normalised():
    d = load(DataConfig("digits", ratio=0.25, data_seed=3))
    assert d.x_train.shape[1:] == (1, 8, 8) and d.num_classes == 10
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1 and d.x_train.min() == -1 and d.x_train.max() == 1
    assert not set(d.train_idx) & set(d.val_idx)
    # every class is in train and val, in proportion to its share
    for y in (d.y_train, d.y_val):
        assert torch.bincount(y, minlength=10).min() >= 1
    n_val = torch.bincount(d.y_val, minlength=10)
    n_all = n_val + torch.bincount(d.y_train, minlength=10)
    assert ((n_val - 0.1 * n_all).abs() <= 1).all()
    # digits has no official split: ours holds out 30% of the 1797 images, never seen in train/val
    assert 530 <= len(d.y_test) <= 545
    assert max(d.train_idx.max(), d.val_idx.max()) < 1797 - len(d.y_test)


def test_split_depends_on_data_seed_only_and_nests_across_ratios():
    labels = np.repeat(np.arange(5), 100)
    a = reduce_split(labels, ratio=0.2, data_seed=7)
    b = reduce_split(labels, ratio=0.2, data_seed=7)
    c = reduce_split(labels, ratio=0.2, data_seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    small, large = reduce_split(labels, ratio=0.05, data_seed=7), reduce_split(labels, ratio=0.5, data_seed=7)
    assert set(np.concatenate(small)) <= set(np.concatenate(large))
    assert len(np.concatenate(small)) == 25 and len(small[1]) == 5  # 5 per class, 1 of them val


def test_per_class_count_and_data_seed_changes_subset_not_test():
    a = load(DataConfig("digits", per_class=20, data_seed=0))
    b = load(DataConfig("digits", per_class=20, data_seed=1))
    assert torch.bincount(a.y_train).tolist() == [18] * 10 and torch.bincount(a.y_val).tolist() == [2] * 10
    assert a.split_hash != b.split_hash
    assert torch.equal(a.x_test, b.x_test)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="mnist-3d"), "unknown dataset 'mnist-3d'; known: digits, fashion-mnist"),
    (dict(ratio=0.0), "ratio=0.0 is outside (0, 1]"),
    (dict(ratio=1.5), "ratio=1.5 is outside (0, 1]"),
    (dict(ratio=-0.1), "outside (0, 1]"),
    (dict(ratio=0.1, per_class=5), "either ratio or per_class"),
    (dict(per_class=1), "at least 2"),
    (dict(dataset="cifar10", resolution=64), "fixed size of 32x32"),
    (dict(dataset="pets", resolution=2), "resolution=2 is outside"),
])
def test_bad_config_is_refused_on_construction(kwargs, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DataConfig(**kwargs)


def test_per_class_larger_than_a_class_names_the_class():
    with pytest.raises(DataError, match=r"per_class=500 but class '\d' has only \d+ training images"):
        load(DataConfig("digits", per_class=500))


def test_ratio_too_small_to_keep_two_per_class():
    with pytest.raises(DataError, match="at least 2"):
        load(DataConfig("digits", ratio=0.005))


def test_missing_torchvision_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="needs a download.*network access"):
        load(DataConfig("cifar10", root=str(tmp_path), download=False))


def test_imagefolder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "owl"]):
        (tmp_path / name).mkdir()
        for i in range(12):
            arr = (rng.random((20, 30, 3)) * 80 + 80 * c).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    d = load(DataConfig(f"imagefolder:{tmp_path}", ratio=0.5, resolution=16))
    assert d.classes == ["cat", "dog", "owl"] and d.x_train.shape[1:] == (3, 16, 16)
    assert len(d.y_test) == 3 * 4 and len(d.y_train) + len(d.y_val) == 3 * 4  # 30% of 12 held out, half of 8 kept
    # brighter class folders stay brighter: labels follow folders
    assert d.x_test[d.y_test == 2].mean() > d.x_test[d.y_test == 0].mean()


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(DataConfig(f"imagefolder:{tmp_path / 'nope'}"))
    from PIL import Image
    (tmp_path / "only").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(DataError, match=r"has 1 class folder\(s\) with usable images \(only\); a classifier needs at least 2"):
        load(DataConfig(f"imagefolder:{tmp_path}"))


def test_known_datasets_lists_the_papers_sets():
    assert {"digits", "fashion-mnist", "cifar10", "cifar100", "svhn", "cars", "aircraft", "dtd",
            "flowers102", "pets"} <= set(known_datasets())


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package():
    d = load(DataConfig("fashion-mnist", ratio=0.01))
    assert d.x_train.shape[1:] == (1, 28, 28) and len(d.y_test) == 10000
    assert len(d.y_train) == 540 and len(d.y_val) == 60
    assert d.classes[9] == "Ankle boot"


@pytest.fixture
def no_full_fashion_mnist(tmp_path, monkeypatch):
    """A fresh clone offline: no Debian package, nothing downloaded, downloads off."""
    from mgr import fashion_mnist
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-package")
    return dict(root=str(tmp_path / "no-data"), download=False)


SHIPPED_FASHION = [0.01, 0.05, 0.1]


@pytest.mark.parametrize("ratio", SHIPPED_FASHION)
def test_fashion_mnist_bundle_serves_the_shipped_generators_splits_offline(no_full_fashion_mnist, ratio):
    from mgr.gan import load_generator
    from mgr.paths import generator_path
    d = load(DataConfig("fashion-mnist", ratio=ratio, **no_full_fashion_mnist))
    _, meta = load_generator(generator_path({"dataset": "fashion-mnist", "ratio": ratio, "data_seed": 0}))
    assert d.split_hash == meta["split_hash"]  # the very images the generator was trained on
    assert len(d.y_train) + len(d.y_val) == round(ratio * 60000) and len(d.y_test) == 10000
    assert d.x_train.shape[1:] == (1, 28, 28) and "bundled subset" in d.source
    assert torch.bincount(d.y_test).tolist() == [1000] * 10


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_bundle_holds_the_same_images_as_the_full_data(tmp_path, monkeypatch):
    from mgr import fashion_mnist
    full = load(DataConfig("fashion-mnist", ratio=0.1))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "hidden")
    bundled = load(DataConfig("fashion-mnist", ratio=0.1, root=str(tmp_path), download=False))
    assert bundled.split_hash == full.split_hash
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(bundled, k), getattr(full, k)), k


@pytest.mark.parametrize("kw", [dict(ratio=0.2), dict(ratio=0.01, data_seed=7), dict(per_class=700)])
def test_fashion_mnist_split_outside_the_bundle_says_how_to_get_the_full_data(no_full_fashion_mnist, kw):
    with pytest.raises(DataError) as e:
        load(DataConfig("fashion-mnist", **kw, **no_full_fashion_mnist))
    msg = str(e.value)
    assert "needs the full dataset" in msg and "apt-get install dataset-fashion-mnist" in msg
    from mgr import fashion_mnist
    held = len(fashion_mnist.read_bundle_index().train_index)
    assert f"holds only the {held} training images of the shipped generators' splits" in msg
    assert "--no-download is set" in msg


def test_test_subset_is_stratified_fixed_and_nested():
    """Demos evaluate on a test subset: every run and seed must see the same images, in the classes'
    proportions, and a smaller subset must lie inside a larger one."""
    from mgr.data import test_subset_indices
    full = load(DataConfig("digits"))
    labels = full.y_test.numpy()
    small, large = test_subset_indices(labels, 100), test_subset_indices(labels, 300)
    assert len(small) == 100 and len(large) == 300 and len(np.unique(large)) == 300
    assert set(small) <= set(large)
    share = np.bincount(labels[large], minlength=10) / 300
    assert np.abs(share - np.bincount(labels, minlength=10) / len(labels)).max() < 1 / 300 + 1e-9
    a = load(DataConfig("digits", ratio=0.1, data_seed=0, test_subset=300))
    b = load(DataConfig("digits", ratio=0.1, data_seed=3, test_subset=300))
    assert len(a.y_test) == 300 and torch.equal(a.x_test, b.x_test)  # the data seed moves the split, not the test subset
    assert torch.equal(a.x_test, full.x_test[large])


@pytest.mark.parametrize("bad", [0, 9, -5, 2.5, True, "100"])
def test_test_subset_refuses_bad_values_naming_them(bad):
    with pytest.raises(DataError, match="test_subset"):
        DataConfig("digits", test_subset=bad)


def test_test_subset_larger_than_the_test_set_is_refused_with_its_size():
    with pytest.raises(DataError, match=r"test_subset=100000 is more than the \d+ test images"):
        load(DataConfig("digits", test_subset=100000))


def test_digits_are_read_as_scikit_learn_loads_them():
    """The trainer reads digits' file itself (importing scikit-learn costs every trainer 1.8 s of its start;
    tests/test_cli.py checks that it never does): the same images and labels as sklearn.datasets.load_digits."""
    from sklearn.datasets import load_digits

    from mgr.data import _digits_arrays
    images, target = _digits_arrays()
    d = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, d.images) and np.array_equal(target, d.target)
