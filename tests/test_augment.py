import pytest
import torch

from mgr.augment import Augment, parse_policy


def test_one_draw_applies_identically_and_is_differentiable():
    torch.manual_seed(0)
    aug = Augment("translation,flip,color,cutout")
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    params = aug.draw(x)
    a, b = aug.apply(x, params), aug.apply(x, params)
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(aug(x), a)  # a fresh call draws fresh randomness
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_moves_content_by_the_drawn_shift():
    aug = Augment("translation")
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1
    ty, tx = torch.tensor([[[1]]]), torch.tensor([[[-1]]])
    out = aug.apply(x, [(ty, tx)])
    # output[i, j] = input[i + ty, j + tx]: the pixel at (4, 4) lands at (3, 5)
    assert out[0, 0, 3, 5] == 1 and out.sum() == 1


def test_empty_policy_is_identity_and_unknown_op_is_named():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(Augment("")(x), x)
    with pytest.raises(ValueError, match="unknown augmentation 'blur'.*known: color, translation, cutout, flip"):
        parse_policy("color,blur")
