import pytest
import torch

from mgr.data import DataConfig, load
from mgr.fid import Pipeline, frechet, inception_weights

needs_offline = pytest.mark.skipif(inception_weights() is not None, reason="Inception weights are on this machine")


@pytest.fixture(scope="module")
def digits():
    return load(DataConfig("digits"))


@needs_offline
def test_offline_auto_uses_the_shipped_classifier_and_names_it():
    pipe = Pipeline("auto", "digits", "cpu")
    assert pipe.name.startswith("SmallCNN trained on full digits train")


@needs_offline
def test_asking_for_inception_offline_says_what_to_do():
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt.*cannot download.*'classifier'"):
        Pipeline("inception", "digits", "cpu")


def test_unknown_extractor():
    with pytest.raises(ValueError, match="not one of auto, inception, classifier"):
        Pipeline("clip", "digits", "cpu")


def test_missing_extractor_says_which_command_trains_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train-extractor --dataset digits"):
        Pipeline("classifier", "digits", "cpu")


def test_fid_orders_real_above_noise(digits):
    pipe = Pipeline("classifier", "digits", "cpu")
    test = pipe.features(digits.x_test)
    same = frechet(test, test)
    real = frechet(pipe.features(digits.x_train), test)
    torch.manual_seed(0)
    noise = frechet(pipe.features(torch.rand_like(digits.x_train) * 2 - 1), test)
    assert abs(same) < 1e-3 and 0 < real < noise / 10
