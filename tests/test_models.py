import pytest
import torch
import torch.nn as nn

from mgr.models import Discriminator, Generator, build_classifier
from mgr.models.generator import layout


@pytest.mark.parametrize("name, feat", [("smallcnn", 128), ("resnet18", 512)])
@pytest.mark.parametrize("channels, res", [(1, 8), (1, 28), (3, 32)])
def test_classifier_shapes_and_feature_head_split(name, feat, channels, res):
    torch.manual_seed(0)
    m = build_classifier(name, num_classes=7, in_channels=channels).eval()
    x = torch.randn(3, channels, res, res)
    f = m.features(x)
    assert f.shape == (3, feat) and m.feature_dim == feat
    assert isinstance(m.head, nn.Linear) and m.head.out_features == 7
    assert torch.allclose(m(x), m.head(f))
    # the last feature map (the conv co-learner reads it) is what g_ψ average-pools, from the same pass
    logits, fmap = m(x, feature_map=True)
    assert fmap.shape[:2] == (3, feat) and torch.allclose(fmap.mean((2, 3)), f, atol=1e-6)
    assert torch.allclose(logits, m(x), atol=1e-6)
    # the head is the only place ω lives: the feature extractor holds none of its parameters
    head_ids = {id(p) for p in m.head.parameters()}
    assert not head_ids & {id(p) for p in m.body.parameters()}


def test_resnet18_small_image_stem():
    m = build_classifier("resnet18", 10, in_channels=1)
    stem = m.body.conv1
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.in_channels == 1
    assert isinstance(m.body.maxpool, nn.Identity)


def test_unknown_model_and_pretrained_smallcnn_are_refused():
    with pytest.raises(ValueError, match="unknown model 'vgg'; known: smallcnn, resnet18"):
        build_classifier("vgg", 10, 3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_classifier("smallcnn", 10, 3, pretrained=True)


def test_pretrained_resnet_offline_says_where_weights_go(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not cached at .*resnet18"):
        build_classifier("resnet18", 10, 3, pretrained=True)


@pytest.mark.parametrize("res, expected", [(8, (2, 2)), (28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (96, (6, 4))])
def test_generator_layout(res, expected):
    assert layout(res) == expected


def test_odd_resolution_is_refused():
    with pytest.raises(ValueError, match="cannot be built by doubling"):
        layout(27)


@pytest.mark.parametrize("channels, res", [(1, 8), (1, 28), (3, 32)])
def test_gan_shapes_range_and_class_conditioning(channels, res):
    torch.manual_seed(0)
    G, D = Generator(10, res, channels, z_dim=16, width=8), Discriminator(10, res, channels, width=8)
    z, y = torch.randn(6, 16), torch.arange(6)
    x = G(z, y)
    assert x.shape == (6, channels, res, res) and x.abs().max() <= 1
    assert D(x, y).shape == (6,)
    # G is differentiable in z (MGR's finder needs it)
    z.requires_grad_(True)
    G(z, y).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # class embeddings start at zero (plain BN); perturbing them makes the label matter
    G.eval()
    for m in G.modules():
        if hasattr(m, "class_gain"):
            nn.init.normal_(m.class_gain.weight)
    assert not torch.allclose(G(z[:1], y[:1]), G(z[:1], y[1:2]))


def test_an_evaluation_in_cpu_slices_gives_the_numbers_of_whole_batches():
    """evaluate_by_class forwards a CPU batch in slices (the faster way there): accuracy, per-class accuracy and
    loss are those of one forward per batch, to the bit, including a last batch shorter than a slice."""
    import torch.nn.functional as F

    from mgr.models.classifier import CPU_SLICE, evaluate_by_class
    torch.manual_seed(0)
    model = build_classifier("smallcnn", 10, 1, width=16).to(memory_format=torch.channels_last)
    model.train()
    with torch.no_grad():  # running statistics of its own, as a trained model has
        for _ in range(3):
            model(torch.randn(64, 1, 28, 28))
    n, batch = 2 * CPU_SLICE + 37, 2 * CPU_SLICE  # two batches: two whole slices, then a short one
    x = torch.randn(n, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (n,))
    model.eval()
    with torch.no_grad():
        logits = [model(x[i:i + batch]) for i in range(0, n, batch)]
    loss = sum(F.cross_entropy(out, y[i * batch:(i + 1) * batch], reduction="sum").item() for i, out in enumerate(logits))
    hit = torch.cat(logits).argmax(1) == y
    per_class = [round((hit & (y == c)).sum().item() / (y == c).sum().item(), 6) for c in range(10)]
    model.train()
    assert evaluate_by_class(model, x, y, 10, batch_size=batch) == (hit.sum().item() / n, loss / n, per_class)
    assert model.training  # its mode is given back
