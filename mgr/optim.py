"""torch.optim's SGD and Adam for eager training, without the hooks that import torch.compile's tracer.

torch.optim wraps an optimizer's add_param_group, zero_grad, state_dict, load_state_dict and step for
torch.compile (torch._disable_dynamo, and a graph break around each step), and the first call of any of them
imports torch._dynamo: 1.0 s of CPU on a 2-core AMD EPYC, a third of a small trainer's start, paid again by
every trainer and demo worker although none compiles its optimizer (`--compile` compiles the classifier's
forward only). These subclasses call the very same implementations (each wrapper's `__wrapped__`), so a step
is bitwise torch.optim's, its state dict the same, and LambdaLR drives them as it drives torch.optim's.
tests/test_cli.py checks that a trainer never imports torch._dynamo; tests/test_optim.py that the steps and
state dicts are torch.optim's, to the bit.
"""
from __future__ import annotations

import torch

_Optimizer, _SGD, _Adam = torch.optim.Optimizer, torch.optim.SGD, torch.optim.Adam


class _Eager:
    """The Optimizer methods that torch wraps with torch._disable_dynamo, called unwrapped."""

    def add_param_group(self, param_group: dict) -> None:
        _Optimizer.add_param_group.__wrapped__(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _Optimizer.zero_grad.__wrapped__(self, set_to_none)

    def state_dict(self) -> dict:
        return _Optimizer.state_dict.__wrapped__(self)

    def load_state_dict(self, state_dict: dict) -> None:
        _Optimizer.load_state_dict.__wrapped__(self, state_dict)

    def _no_grad_step(self, step, closure):
        """`step` under no_grad, as torch.optim runs it unless the optimizer is `differentiable`."""
        if self.defaults.get("differentiable"):
            raise ValueError("mgr.optim's optimizers do not differentiate through their step; use torch.optim's")
        with torch.no_grad():
            return step(self, closure)


class SGD(_Eager, _SGD):
    def step(self, closure=None):
        return self._no_grad_step(_SGD.step.__wrapped__, closure)


class Adam(_Eager, _Adam):
    def step(self, closure=None):
        return self._no_grad_step(_Adam.step.__wrapped__, closure)
