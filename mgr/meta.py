"""The meta-gradient engine: the losses of METHOD.md §1 written as functions of explicit
parameters, a one-step lookahead, and the finder's hypergradient (second order, or first order
by a finite-difference Hessian-vector product).

Parameters are passed as {name: tensor} dicts and the model is called with
`torch.func.functional_call`, so the lookahead θ' = θ − η ∇_θ L never touches the real model.
BatchNorm state is passed the same way: synthetic batches and the lookahead get throwaway copies
of the buffers, so the real model's running statistics only ever see real training batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .finder import kl_batch


def clone_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()}


def call(model, params: dict, buffers: dict, x: torch.Tensor, features: bool = False) -> torch.Tensor:
    return functional_call(model, (params, buffers), (x,), {"features": features})


def pcr_gap(model, params: dict, x_p: torch.Tensor, t, T) -> torch.Tensor:
    """Per-sample ℓ_PCR = ‖g_ψ(T(x_p)) − g_ψ(x_p)‖², averaged over feature dimensions. Both views go
    through one forward, so they share batch statistics; gradients flow through both branches."""
    f = call(model, params, clone_buffers(model), torch.cat([x_p, T.apply(x_p, t)]), features=True)
    f_p, f_t = f.to(torch.promote_types(f.dtype, torch.float32)).chunk(2)  # bf16 would round small gaps to 0
    return (f_t - f_p).pow(2).mean(1)


def synthetic_loss(model, params: dict, x_p, y_p, t, T, kind: str) -> torch.Tensor:
    """The synthetic term of L(θ; φ), before λ: PCR (mean ℓ_PCR) or GDA (CE on synthetic images)."""
    if kind == "pcr":
        return pcr_gap(model, params, x_p, t, T).mean()
    return F.cross_entropy(call(model, params, clone_buffers(model), x_p), y_p)


def grads_of(loss: torch.Tensor, params: dict, create_graph: bool = False) -> list[torch.Tensor]:
    """∇ loss for every parameter (zeros where unused, e.g. the head under PCR); keeps the graph."""
    gs = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, retain_graph=True,
                             allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), gs)]


def lookahead(params: dict, grads: list[torch.Tensor], lr: float) -> dict:
    """θ' = θ − η g: differentiable in g when g carries a graph (second order)."""
    return {n: p - lr * g for (n, p), g in zip(params.items(), grads)}


def val_ce(model, params: dict, x_val, y_val) -> torch.Tensor:
    return F.cross_entropy(call(model, params, clone_buffers(model), x_val), y_val)


def finder_hypergradient(model, params: dict, grads: list[torch.Tensor], lr: float, x_val, y_val,
                         finder, z_f, x_p, y_p, t, T, *, kind: str, lam: float, lam_kl: float,
                         order: str, fd_eps: float = 0.01) -> tuple[list[torch.Tensor], torch.Tensor]:
    """∇_φ [CE(f_θ'(φ)(B_val)) + λ_KL KL_batch(F_φ(z))] with θ'(φ) = θ − η ∇_θ L(θ; φ).

    `grads` is ∇_θ L(θ; φ), built with create_graph=True for order="second". For order="first",
    the Hessian-vector product is a central finite difference (DARTS): with v = ∇_θ' CE_val,
    ∇_φ ≈ −η λ (∇_φ ℓ(θ + εv) − ∇_φ ℓ(θ − εv)) / 2ε, ε = fd_eps / ‖v‖. Returns (grads for φ, CE_val).
    """
    phi = list(finder.parameters())
    kl = kl_batch(z_f)
    if order == "second":
        ce_val = val_ce(model, lookahead(params, grads, lr), x_val, y_val)
        return list(torch.autograd.grad(ce_val + lam_kl * kl, phi)), ce_val.detach()

    ahead = {n: p.detach().requires_grad_() for n, p in lookahead(params, [g.detach() for g in grads], lr).items()}
    ce_val = val_ce(model, ahead, x_val, y_val)
    v = grads_of(ce_val, ahead)
    eps = fd_eps / torch.sqrt(sum((g * g).sum() for g in v)).clamp_min(1e-12)
    plus = {n: p.detach() + eps * g for (n, p), g in zip(params.items(), v)}
    minus = {n: p.detach() - eps * g for (n, p), g in zip(params.items(), v)}
    diff = (synthetic_loss(model, plus, x_p, y_p, t, T, kind)
            - synthetic_loss(model, minus, x_p, y_p, t, T, kind)) / (2 * eps)
    return list(torch.autograd.grad(-lr * lam * diff + lam_kl * kl, phi)), ce_val.detach()
