"""The meta-gradient engine: the losses of docs/method.md#mgr written as functions of explicit
parameters, a one-step lookahead, and what flows back through it: the finder's hypergradient
(MPS: exact, as a mixed second derivative of the synthetic term alone), MLTP's
gradients for w and the per-tensor steps α, and the split of the outer gradient between the
classifier and the CML co-learner.

Every meta step has the same shape: θ' = lookahead(θ, g, step); an outer loss M at θ';
v = ∇_θ' M (`outer_grads`); then v is pulled back to what the lookahead depends on (`pullback`
for θ and α, `finder_hypergradient` for φ). For MLTP, a lookahead built from g with
create_graph=True makes the pull-back exact (second order); from a detached g it drops the Hessian
term (first order). For φ only the synthetic term's gradient needs a graph.

Parameters are passed as {name: tensor} dicts and the model is called with
`torch.func.functional_call`, so a lookahead never touches the real model. BatchNorm state is
passed the same way: synthetic batches and the lookahead get throwaway copies of the buffers, so
the real model's running statistics only ever see real training batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .finder import kl_batch


def clone_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()}


def call(model, params: dict, buffers: dict, x: torch.Tensor, features: bool = False, feature_map: bool = False):
    """The classifier at `params`: logits, g_ψ(x) (features=True) or (logits, last feature map)."""
    return functional_call(model, (params, buffers), (x,), {"features": features, "feature_map": feature_map})


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


def lookahead(params: dict, grads: list[torch.Tensor], step) -> dict:
    """θ' = θ − step · g. `step` is a number (MPS: η, the learning rate) or {name: α} (MLTP: one
    learnable step per tensor; a tensor without one stays at θ). Differentiable in g when g carries
    a graph (second order) and in α.

    A tensor that stays at θ is still a node of its own (a view): θ also enters the other tensors'
    θ' through g, and ∇_θ' of an outer loss must be the partial derivative at θ', not the total one."""
    if isinstance(step, dict):
        return {n: p - step[n] * g if n in step else p.view_as(p) for (n, p), g in zip(params.items(), grads)}
    return {n: p - step * g for (n, p), g in zip(params.items(), grads)}


def pullback(ahead: dict, v: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """(∂θ'/∂inputs)ᵀ v, the vector-Jacobian product through the lookahead θ' = θ − α ⊙ g(θ).
    For θ it is v − H(α ⊙ v) when g carries a graph, plain v when g was detached (first order);
    for α_l it is −⟨v_l, g_l⟩ either way (no second derivative). Keeps the graph."""
    gs = torch.autograd.grad(list(ahead.values()), inputs, grad_outputs=v, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, gs)]


@dataclass
class Outer:
    v: list[torch.Tensor]  # ∇_θ' (main + co): what the lookahead pulls back
    main: list[torch.Tensor]  # ∇_θ' main alone
    co_grads: list[torch.Tensor]  # ∇_χ co, the co-learner's own gradient (empty without one)
    co_cos: torch.Tensor | None  # cosine of main's and co's gradients on ψ (CML Fig. 3b)


def outer_grads(main: torch.Tensor, ahead: dict, co: torch.Tensor | None = None, co_params: list = ()) -> Outer:
    """The gradients of an outer objective main(θ') + co(θ', χ) at the lookahead θ'.

    `main` is the classifier's outer loss at θ', `co` the co-learner's (weighted) loss on the
    looked-ahead features, or None. The two are differentiated separately so that their gradients
    on the shared feature extractor ψ (every tensor but head.*) can be compared; the co-learner's
    parameters χ are not part of θ': it never takes the lookahead step.
    """
    g_main = grads_of(main, ahead)
    if co is None:
        return Outer(g_main, g_main, [], None)
    inputs = list(ahead.values()) + list(co_params)
    g = torch.autograd.grad(co, inputs, retain_graph=True, allow_unused=True)
    g = [torch.zeros_like(p) if d is None else d for p, d in zip(inputs, g)]
    g_ahead, g_co = g[:len(ahead)], g[len(ahead):]
    psi = [i for i, n in enumerate(ahead) if not n.startswith("head.")]
    cos = cosine([g_main[i] for i in psi], [g_ahead[i] for i in psi])
    return Outer([a + b for a, b in zip(g_main, g_ahead)], g_main, g_co, cos)


@torch.no_grad()
def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Cosine between two gradients given as lists of tensors (0 when either is zero). No host sync."""
    dot = sum((x.float() * y.float()).sum() for x, y in zip(a, b))
    na = torch.sqrt(sum(x.float().pow(2).sum() for x in a))
    nb = torch.sqrt(sum(y.float().pow(2).sum() for y in b))
    return dot / (na * nb).clamp_min(1e-30)


def val_ce(model, params: dict, x_val, y_val) -> torch.Tensor:
    return F.cross_entropy(call(model, params, clone_buffers(model), x_val), y_val)


def finder_hypergradient(g_syn: list[torch.Tensor], v: list[torch.Tensor], lr: float, lam: float, finder,
                         z_f: torch.Tensor, lam_kl: float) -> list[torch.Tensor]:
    """The exact ∇_φ [M(θ'(φ)) + λ_KL KL_batch(F_φ(z))] of the one-step lookahead
    θ'(φ) = θ − η (∇_θ CE + λ ∇_θ ℓ_syn(θ; φ)), given v = ∇_θ' M (M: the finder's meta-loss).

    Only the synthetic term depends on φ, so the chain rule reduces to a mixed second derivative of
    that term alone: ∇_φ M = −η λ ∇_φ ⟨∇_θ ℓ_syn(θ; φ), v⟩ with v held fixed. `g_syn` = ∇_θ ℓ_syn
    must have been taken with create_graph=True; nothing of the real batch's CE, nor of the
    validation forward, is differentiated twice (docs/method.md#hypergradient-modes)."""
    data, kl = finder_hypergradient_parts(g_syn, v, lr, lam, finder, z_f, lam_kl)
    return [a + b for a, b in zip(data, kl)]


def finder_hypergradient_parts(g_syn: list[torch.Tensor], v: list[torch.Tensor], lr: float, lam: float, finder,
                               z_f: torch.Tensor, lam_kl: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`finder_hypergradient` in its two parts: the lookahead's (what the validation data asks of φ,
    −ηλ ∇_φ⟨∇_θ ℓ_syn, v⟩) and the KL term's (the pull toward the prior, λ_KL ∇_φ KL). They are told
    apart because η decays with the learning rate: late in a cosine schedule the KL part is nearly all
    of the hypergradient, and a steady pull back to uniform sampling must not read as a signal from the
    data. The KL part costs one backward through the finder alone."""
    phi = list(finder.parameters())
    fill = lambda gs: [torch.zeros_like(p) if g is None else g for p, g in zip(phi, gs)]  # noqa: E731
    kl = fill(torch.autograd.grad(lam_kl * kl_batch(z_f), phi, retain_graph=True, allow_unused=True))
    # in float32 at least: bf16 would round the small products; float64 stays float64 (the tests)
    dot = sum((g * d.detach().to(g.dtype)).sum(dtype=torch.promote_types(g.dtype, torch.float32))
              for g, d in zip(g_syn, v))
    data = fill(torch.autograd.grad(-lr * lam * dot, phi, allow_unused=True))
    return data, kl

