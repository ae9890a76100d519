"""A BatchNorm layer whose second derivative is cheap.

The finder's exact hypergradient differentiates the synthetic term's gradient once more
(mgr/meta.py), and so do MLTP's second-order variants. Through BatchNorm in training mode,
PyTorch's second derivative (`batchnorm_double_backward`) is a long composite of elementwise
products and reductions: 45% of the hypergradient's time on the default SmallCNN, measured on the
CPU (docs/method.md#hypergradient-modes).

`BatchNorm2d` below is torch.nn.BatchNorm2d everywhere except inside `differentiated_twice()`, the
forwards the meta steps will differentiate a second time. There it records a backward written as
the textbook formula in a few differentiable operations (the batch statistics recomputed with their
graph, so that the second derivative sees how they depend on the input), which autograd's second
pass goes through instead. The forward kernel and the running-statistics update are torch's own;
without create_graph the backward is torch's fused kernel, bit for bit; the second derivatives agree
with torch's to float64 rounding (tests/test_batchnorm.py).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
import torch.nn as nn

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
        if not torch.is_grad_enabled():  # a plain backward (no create_graph): PyTorch's fused kernel
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                grad_out, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True])
            return gx, gw, gb, None, None, None, None
        dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 inputs: reduce in float32
        xf, gy = x.to(dtype), grad_out.to(dtype)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1]
        xc = xf - xf.mean(dims, keepdim=True)
        inv = torch.rsqrt(xc.pow(2).mean(dims, keepdim=True) + ctx.eps)
        xhat = xc * inv
        sum_gy = gy.sum(dims, keepdim=True)  # = ∂L/∂bias
        sum_gy_xhat = (gy * xhat).sum(dims, keepdim=True)  # = ∂L/∂weight
        gx = (weight.to(dtype).view(shape) * inv) * (gy - sum_gy / n - xhat * (sum_gy_xhat / n))
        return (gx.to(x.dtype), sum_gy_xhat.flatten().to(weight.dtype), sum_gy.flatten().to(weight.dtype),
                None, None, None, None)


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
