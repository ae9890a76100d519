"""Convolution and BatchNorm layers whose second derivative is cheap.

The finder's exact hypergradient differentiates the synthetic term's gradient once more
(mgr/meta.py), and so do MLTP's second-order variants. Two of PyTorch's second derivatives do more
work than the meta steps need (CPU profiles of the default SmallCNN,
docs/method.md#hypergradient-modes):

- BatchNorm in training mode: `batchnorm_double_backward` is a long composite of elementwise
  products and reductions, 45% of the hypergradient's time;
- convolution: `_convolution_double_backward` ignores its output mask and always computes the
  weight's own second-order term, one full-size convolution per layer, which the finder's
  hypergradient (a derivative toward the synthetic images, never the weights) does not use.

`BatchNorm2d` and `Conv2d` below are torch.nn's layers everywhere except inside
`differentiated_twice()`, the forwards the meta steps will differentiate a second time:

- there BatchNorm's backward is PyTorch's fused kernel wrapped in a function whose own derivative
  is written out (`_BatchNormBackward`), a handful of elementwise passes;
- with `weights=False` (the second derivative will be taken toward the forward's inputs only, as
  the finder's hypergradient is) the convolution's backward is split so that its derivative
  computes no weight term. Inside that block a second derivative toward the convolution weights
  would come out as zero, so only a forward whose second pass goes to its inputs may use it.

The forward kernels, the running-statistics update and every first derivative are torch's own, bit
for bit; the second derivatives agree with torch's to float64 rounding (tests/test_second_order.py).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# None outside the block; inside it, whether the second derivative may reach the weights
_TWICE: ContextVar[str | None] = ContextVar("differentiated_twice", default=None)


@contextlib.contextmanager
def differentiated_twice(weights: bool = True):
    """Forwards run in this block may be differentiated twice (create_graph=True): their layers record
    a backward that is cheap to differentiate again. weights=False: that second derivative is taken
    toward the forward's inputs only (never toward the layers' weights), which spares the convolutions
    a term per layer."""
    token = _TWICE.set("all" if weights else "inputs")
    try:
        yield
    finally:
        _TWICE.reset(token)


def _active() -> bool:
    return _TWICE.get() is not None and torch.is_grad_enabled()


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch normalisation over all dimensions but the channels (dim 1)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        # the kernel F.batch_norm runs on the CPU (on CUDA, F.batch_norm may pick cuDNN's instead: this path's
        # speed there is not measured); it updates the running statistics in place
        out, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a backward that knows its own derivative
            gx, gw, gb = _BatchNormBackward.apply(grad_out, x, weight, mean, invstd, ctx.eps)
        else:  # a plain backward: PyTorch's, as nn.BatchNorm2d would run it
            gx, gw, gb = _fused_backward(grad_out, x, weight, mean, invstd, ctx.eps)
        return gx, gw, gb, None, None, None, None


def _fused_backward(grad_out, x, weight, mean, invstd, eps):
    return torch.ops.aten.native_batch_norm_backward(grad_out, x, weight, None, None, mean, invstd, True, eps,
                                                     [True, True, True])


class _BatchNormBackward(torch.autograd.Function):
    """BatchNorm's backward, (gy, x, w) ↦ (gx, gw, gb), computed by PyTorch's fused kernel, with its own
    derivative written out. Per channel, over its n elements, with x̂ = (x − μ)·r, r = (σ² + ε)^(−1/2),
    ā = mean(gy) and b̄ = mean(gy·x̂):

        gx = w·r·(gy − ā − x̂·b̄),    gw = n·b̄,    gb = n·ā.

    For cotangents (Gx, Gw, Gb) of those, with P(u) = u − mean(u) − x̂·mean(u·x̂) (symmetric, so gx is
    self-adjoint in gy), ∂x̂_j/∂x_i = r·(δ_ij − 1/n − x̂_i·x̂_j/n) and ∂r/∂x_i = −r²·x̂_i/n:

        ∂/∂gy = w·r·P(Gx) + Gw·x̂ + Gb
        ∂/∂x  = r·P(g) − w·r²·S·x̂,   g = gy·(Gw − w·r·mean(Gx·x̂)) − w·r·b̄·Gx,   S = mean(Gx·(gy − ā − x̂·b̄))
        ∂/∂w  = n·r·S

    A handful of elementwise passes where autograd through PyTorch's formula takes several times more.
    Checked against PyTorch and by finite differences (tests/test_second_order.py). A third derivative is
    not needed anywhere, so it is not offered (once_differentiable)."""

    @staticmethod
    def forward(ctx, grad_out, x, weight, mean, invstd, eps):
        gx, gw, gb = _fused_backward(grad_out, x, weight, mean, invstd, eps)
        ctx.save_for_backward(grad_out, x, weight, mean, invstd, gw, gb)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx, Gx, Gw, Gb):
        gy, x, w, mean, invstd, gw, gb = ctx.saved_tensors
        dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 inputs: reduce in float32
        dims, shape, n = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2), x.numel() // x.shape[1]
        mean_ = lambda t: t.mean(dims, keepdim=True)  # noqa: E731  (per channel)
        per_channel = lambda t: t.to(dtype).view(shape)  # noqa: E731
        r, wr = per_channel(invstd), per_channel(w) * per_channel(invstd)
        xhat = (x.to(dtype) - per_channel(mean)) * r
        gy_, Gx = gy.to(dtype), Gx.to(dtype)
        a, b = per_channel(gb) / n, per_channel(gw) / n  # ā, b̄
        Gw, Gb = per_channel(Gw), per_channel(Gb)
        m_Gx, m_Gx_xhat = mean_(Gx), mean_(Gx * xhat)
        d_gy = d_x = d_w = None
        if ctx.needs_input_grad[0]:
            d_gy = (wr * (Gx - m_Gx - xhat * m_Gx_xhat) + Gw * xhat + Gb).to(gy.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            S = mean_(Gx * gy_) - a * m_Gx - b * m_Gx_xhat
            if ctx.needs_input_grad[1]:
                g = gy_ * (Gw - wr * m_Gx_xhat) - (b * wr) * Gx
                d_x = (r * (g - mean_(g) - xhat * mean_(g * xhat)) - (wr * r * S) * xhat).to(x.dtype)
            if ctx.needs_input_grad[2]:
                d_w = (n * r * S).flatten().to(w.dtype)
        return d_gy, d_x, d_w, None, None, None


class _Conv2dTowardInputs(torch.autograd.Function):
    """A 2-d convolution (no bias) whose second derivative is taken toward its input only. The first
    backward through it gives both gradients, the input's as a separate function of grad_out alone (the
    weight detached), so the second pass has no weight term to compute; a later backward through the
    forward (that second pass reaching the input) returns the input's gradient only."""

    @staticmethod
    def forward(ctx, x, weight, conf):
        ctx.save_for_backward(x, weight)
        ctx.conf, ctx.weight_given = conf, False
        return _conv(x, weight, conf)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1] and not ctx.weight_given
        ctx.weight_given = True
        if not torch.is_grad_enabled():  # a plain backward: PyTorch's kernel, the weight's gradient once
            gx, gw, _ = _conv_backward(grad_out, x, weight, ctx.conf, [need_x, need_w, False])
            return gx, gw, None
        gx = _ConvInputGrad.apply(grad_out, weight.detach(), x, ctx.conf) if need_x else None
        gw = _conv_backward(grad_out, x, weight, ctx.conf, [False, True, False])[1] if need_w else None
        return gx, gw, None


class _ConvInputGrad(torch.autograd.Function):
    """grad_out ↦ ∂conv/∂x applied to it (linear; the weight fixed, x gives the shape): PyTorch's kernel,
    and as its derivative the convolution with the same weight."""

    @staticmethod
    def forward(ctx, grad_out, weight, x, conf):
        ctx.save_for_backward(weight)
        ctx.conf = conf
        return _conv_backward(grad_out, x, weight, conf, [True, False, False])[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (weight,) = ctx.saved_tensors
        return _conv(g, weight, ctx.conf), None, None, None


def _conv(x, weight, conf):
    stride, padding, dilation, groups = conf
    return F.conv2d(x, weight, None, stride, padding, dilation, groups)


def _conv_backward(grad_out, x, weight, conf, mask):
    stride, padding, dilation, groups = conf
    return torch.ops.aten.convolution_backward(grad_out, x, weight, None, stride, padding, dilation, False,
                                               [0, 0], groups, mask)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters, buffers and state dict) with a cheap second derivative
    inside `differentiated_twice()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_active() and self.training and self.affine and self.track_running_stats
                and self.momentum is not None):
            return super().forward(x)
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)  # as nn.BatchNorm2d does in training mode
        return _BatchNormTrain.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                     self.momentum, self.eps)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) whose second derivative skips the weight term inside
    `differentiated_twice(weights=False)`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_TWICE.get() == "inputs" and torch.is_grad_enabled() and self.padding_mode == "zeros"
                and not isinstance(self.padding, str)):
            return super().forward(x)
        w = self.weight
        if torch.is_autocast_enabled(x.device.type):  # cast as autocast would, here where the casts keep their graph
            dtype = torch.get_autocast_dtype(x.device.type)
            x, w = x.to(dtype), w.to(dtype)
        out = _Conv2dTowardInputs.apply(x, w, (list(self.stride), list(self.padding), list(self.dilation), self.groups))
        return out if self.bias is None else out + self.bias.to(out.dtype).view(1, -1, 1, 1)


def use_cheap_second_derivative(module: nn.Module) -> nn.Module:
    """Make every nn.Conv2d and nn.BatchNorm2d inside `module` (e.g. torchvision's ResNet-18) the class
    above that extends it. The subclasses add no state, so the layers keep their parameters, buffers and
    mode, and no new layer is initialised (which would draw from the random generator). In place."""
    ours = {nn.Conv2d: Conv2d, nn.BatchNorm2d: BatchNorm2d}
    for m in module.modules():
        if type(m) in ours:
            m.__class__ = ours[type(m)]
    return module
