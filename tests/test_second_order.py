"""The cheap second derivatives of BatchNorm and convolution (mgr/models/second_order.py): PyTorch's values,
first and second order, the same running statistics, and nothing changed outside `differentiated_twice()`.
The trainer's hypergradient through these layers is checked against an independent computation through
PyTorch's own layers in tests/test_hypergradient.py (SmallCNN and ResNet-18)."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mgr.models import build_classifier
from mgr.models.second_order import BatchNorm2d, Conv2d, differentiated_twice, use_cheap_second_derivative


def pair(dtype=torch.float64, c=3):
    """PyTorch's BatchNorm2d and ours with the same (non-trivial) parameters and statistics."""
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(c).to(dtype)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.normal_(), ref.running_mean.normal_(), ref.running_var.uniform_(0.5, 2)
    ours = BatchNorm2d(c).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def first_and_second(bn, x, twice: bool):
    """y, ∇_x and ∇_w of a scalar, and the gradient of a function of those first derivatives w.r.t.
    x, w and b: what the hypergradient asks of every BatchNorm layer."""
    x = x.clone().requires_grad_()
    with differentiated_twice() if twice else torch.enable_grad():
        y = bn(x)
    w = torch.linspace(-1, 2, y.numel(), dtype=y.dtype).view_as(y)
    gx, gw = torch.autograd.grad((y.sin() * w).sum(), (x, bn.weight), create_graph=True)
    second = torch.autograd.grad((gx * gx.detach().cos()).sum() + (gw ** 3).sum(), (x, bn.weight, bn.bias))
    return y, gx, gw, second


def test_inside_differentiated_twice_values_and_both_derivatives_are_pytorchs():
    ref, ours = pair()
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1
    a, b = first_and_second(ref, x, twice=False), first_and_second(ours, x, twice=True)
    assert torch.equal(a[0], b[0])  # the same forward kernel
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])  # the same backward kernel, graph or not
    for u, v in zip(a[3], b[3]):  # the second derivatives: our formula against PyTorch's
        assert torch.allclose(u, v, rtol=1e-10, atol=1e-12), (u - v).abs().max()
    # the same running statistics and step count after the forward
    for name, buf in ref.named_buffers():
        assert torch.equal(buf, dict(ours.named_buffers())[name]), name


def test_second_derivative_passes_gradgradcheck():
    """Finite differences of the first derivative, independent of PyTorch's own BatchNorm formulas."""
    _, ours = pair()
    ours.track_running_stats = True

    def f(x, w, b):
        with differentiated_twice():
            return torch.func.functional_call(ours, {"weight": w, "bias": b}, (x,))

    x = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w, b = ours.weight.detach().clone().requires_grad_(), ours.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_plain_backward_inside_the_block_is_bitwise_pytorchs():
    """Without create_graph the fused kernel runs: a meta step's first-order gradients are unchanged."""
    ref, ours = pair(torch.float32, c=16)
    x = torch.randn(32, 16, 8, 8)
    grads = []
    for bn, twice in ((ref, False), (ours, True)):
        xi = x.clone().requires_grad_()
        with differentiated_twice() if twice else torch.enable_grad():
            loss = bn(xi).pow(2).sum()
        grads.append(torch.autograd.grad(loss, (xi, bn.weight, bn.bias)))
    for u, v in zip(*grads):
        assert torch.equal(u, v)


def test_outside_the_block_it_is_nn_batchnorm2d_and_keeps_its_state_dict():
    ref, ours = pair(torch.float32)
    x = torch.randn(8, 3, 4, 4)
    assert torch.equal(ref(x), ours(x))
    ref.eval(), ours.eval()
    with differentiated_twice():  # eval mode: running statistics, PyTorch's path
        assert torch.equal(ref(x), ours(x))
    assert ours.state_dict().keys() == ref.state_dict().keys()


@pytest.mark.parametrize("model", ["smallcnn", "resnet18"])
def test_every_convolution_and_batchnorm_of_the_classifiers_has_the_cheap_second_derivative(model):
    m = build_classifier(model, 10, 1)
    assert {type(mod) for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)} == {BatchNorm2d}
    assert {type(mod) for mod in m.modules() if isinstance(mod, nn.Conv2d)} == {Conv2d}


def test_swapping_keeps_parameters_buffers_mode_and_the_random_stream():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    with torch.no_grad():
        net[1].weight.uniform_(), net[1].running_var.uniform_(1, 2)
    net.eval()
    before, rng = copy.deepcopy(net.state_dict()), torch.get_rng_state()
    use_cheap_second_derivative(net)
    assert torch.equal(rng, torch.get_rng_state())  # nothing initialised: a run's later draws are unchanged
    assert type(net[0]) is Conv2d and type(net[1]) is BatchNorm2d and type(net[2][0]) is BatchNorm2d
    assert not net[1].training
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def two_convolutions(layer, stride=1, size=12, dtype=torch.float32):
    torch.manual_seed(0)
    c1 = layer(1, 8, 3, stride, padding=1, bias=False).to(dtype)
    c2 = layer(8, 8, 3, stride, padding=1, bias=False).to(dtype)
    return c1, c2, torch.randn(16, 1, size, size, dtype=dtype)


def hypergradient_shaped(layer, weights_twice: bool, stride=1, size=12, dtype=torch.float32):
    """What the finder's hypergradient asks of the convolutions: the first derivative toward the weights
    with its graph, then ∇_x ⟨∇_W ℓ, v⟩, counting the convolutions of that second pass."""
    from torch.profiler import profile
    c1, c2, x = two_convolutions(layer, stride, size, dtype)
    x = x.requires_grad_()
    with differentiated_twice(weights=weights_twice):
        loss = c2(F.relu(c1(x * 2))).pow(2).mean()
    g = torch.autograd.grad(loss, [c1.weight, c2.weight], create_graph=True)
    dot = sum((t * torch.linspace(-1, 1, t.numel(), dtype=dtype).view_as(t)).sum() for t in g)
    with profile() as p:
        gx = torch.autograd.grad(dot, [x])[0]
    return [t.detach() for t in g], gx, sum(e.name in ("aten::convolution", "aten::convolution_backward")
                                            for e in p.events())


@pytest.mark.parametrize("stride,size", [(1, 12), (2, 13)])
def test_convolution_toward_inputs_gives_pytorchs_gradients_and_second_derivative(stride, size):
    """Stride 2 on an odd size: the input gradient must keep the input's shape."""
    (g_ref, gx_ref, _), (g, gx, _) = (hypergradient_shaped(nn.Conv2d, True, stride, size, torch.float64),
                                      hypergradient_shaped(Conv2d, False, stride, size, torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(g_ref, g))  # the weights' gradients: PyTorch's kernel
    assert torch.allclose(gx, gx_ref, rtol=1e-10, atol=1e-14), (gx - gx_ref).abs().max()


def test_convolution_toward_inputs_skips_the_weight_term_pytorch_computes():
    """What the layer is for: one full-size convolution fewer in the second pass for each layer whose input
    gradient is taken (c2), and none of it without weights=False."""
    _, _, n_torch = hypergradient_shaped(nn.Conv2d, True)
    _, _, n_all = hypergradient_shaped(Conv2d, True)
    _, _, n_inputs = hypergradient_shaped(Conv2d, False)
    assert n_all == n_torch and n_inputs == n_torch - 1, (n_torch, n_all, n_inputs)


def test_convolution_toward_inputs_plain_backward_is_pytorchs():
    """A plain backward (the retired finite-difference mode takes the synthetic term's gradient without a
    graph) gives the weight's gradient bit for bit; a second backward through the same forward gives the
    input's gradient only (the second pass of a hypergradient)."""
    grads = []
    for layer, twice in ((nn.Conv2d, contextlib.nullcontext()), (Conv2d, differentiated_twice(weights=False))):
        c1, c2, x = two_convolutions(layer)
        x = x.requires_grad_()
        with twice:
            loss = c2(F.relu(c1(x))).pow(2).mean()
        grads.append(torch.autograd.grad(loss, [x, c1.weight, c2.weight], retain_graph=True))
        if layer is Conv2d:
            again = torch.autograd.grad(loss, [x, c2.weight], allow_unused=True)
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    assert torch.equal(again[0], grads[0][0]) and again[1] is None
