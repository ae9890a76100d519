"""A BatchNorm layer whose second derivative is cheap.

The finder's exact hypergradient differentiates the synthetic term's gradient once more
(mgr/meta.py), and so do MLTP's second-order variants. Through BatchNorm in training mode,
PyTorch's second derivative (`batchnorm_double_backward`) is a long composite of elementwise
products and reductions: 45% of the hypergradient's time on the default SmallCNN, measured on the
CPU (docs/method.md#hypergradient-modes).

`BatchNorm2d` below is torch.nn.BatchNorm2d everywhere except inside `differentiated_twice()`, the
forwards the meta steps will differentiate a second time. There its backward is PyTorch's fused
kernel wrapped in a function whose own derivative is written out (`_BatchNormBackward`), so the
second pass costs a handful of elementwise passes. The forward kernel, the running-statistics update
and every first derivative are torch's own, bit for bit; the second derivatives agree with torch's
to float64 rounding (tests/test_batchnorm.py).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

_TWICE: ContextVar[bool] = ContextVar("differentiated_twice", default=False)


@contextlib.contextmanager
def differentiated_twice():
    """Forwards run in this block may be differentiated twice (create_graph=True): their BatchNorm
    layers record a backward that is cheap to differentiate again."""
    token = _TWICE.set(True)
    try:
        yield
    finally:
        _TWICE.reset(token)


def _active() -> bool:
    return _TWICE.get() and torch.is_grad_enabled()


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch normalisation over all dimensions but the channels (dim 1)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        # the kernel F.batch_norm runs on the CPU; it updates the running statistics in place
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
    Checked against PyTorch and by finite differences (tests/test_batchnorm.py). A third derivative is
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


def use_cheap_second_derivative(module: nn.Module) -> nn.Module:
    """Make every nn.BatchNorm2d inside `module` (e.g. torchvision's ResNet-18) a `BatchNorm2d`. The
    subclass adds no state, so the layers keep their parameters, buffers and mode, and no new layer is
    initialised (which would draw from the random generator). In place; returns the module."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = BatchNorm2d
    return module
