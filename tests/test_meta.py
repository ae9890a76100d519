"""docs/method.md#what-a-correct-implementation-must-show, for MGR, on tiny float64 models: the hypergradient is right, PCR leaves ω alone,
the finder starts as the identity, and the lookahead leaves BatchNorm statistics alone."""
import copy

import pytest
import torch
import torch.nn.functional as F

from mgr import meta
from mgr.augment import Augment
from mgr.finder import Finder, kl_batch
from mgr.models import Generator, SmallCNN

LR, LAM, LAM_KL = 0.1, 1.0, 0.1


@pytest.fixture
def setup():
    return make_setup()


def make_setup():
    torch.manual_seed(0)
    model = SmallCNN(3, in_channels=1, width=4).double()
    G = Generator(3, 8, 1, z_dim=4, width=4).double().eval().requires_grad_(False)
    finder = Finder(4, "residual", hidden=8).double()
    with torch.no_grad():  # move away from the identity, so every finder weight has a gradient
        for p in finder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    x_val, y_val = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.tensor([2, 1, 0, 0, 1])
    z, y_p = torch.randn(6, 4, dtype=torch.float64), torch.tensor([1, 2, 0, 0, 2, 1])
    T = Augment("translation,color,cutout")
    t = T.draw(torch.zeros(6, 1, 8, 8, dtype=torch.float64))
    return dict(model=model, G=G, finder=finder, x=x, y=y, x_val=x_val, y_val=y_val, z=z, y_p=y_p, T=T, t=t)


def inner(s, kind, create_graph):
    """z_f, x_p, params, ∇_θ L(θ; φ) for the fixture's batch."""
    z_f = s["finder"](s["z"])
    x_p = s["G"](z_f, s["y_p"])
    params = dict(s["model"].named_parameters())
    ce = F.cross_entropy(meta.call(s["model"], params, meta.clone_buffers(s["model"]), s["x"]), s["y"])
    loss = ce + LAM * meta.synthetic_loss(s["model"], params, x_p, s["y_p"], s["t"], s["T"], kind)
    return z_f, x_p, params, meta.grads_of(loss, params, create_graph=create_graph)


def objective(s, kind):
    """J(φ) = CE(f_θ'(B_val)) + λ_KL KL(F_φ(z)), θ' = θ − η ∇_θ L(θ; φ), computed from scratch."""
    z_f, _, params, grads = inner(s, kind, create_graph=False)
    ahead = meta.lookahead(params, grads, LR)
    return (meta.val_ce(s["model"], ahead, s["x_val"], s["y_val"]) + LAM_KL * kl_batch(z_f)).item()


def split_inner(s, kind):
    """As the trainer takes it: z_f, x_p, params, ∇_θ CE (no graph) and ∇_θ ℓ_syn (with its graph)."""
    z_f = s["finder"](s["z"])
    x_p = s["G"](z_f, s["y_p"])
    params = dict(s["model"].named_parameters())
    ce = F.cross_entropy(meta.call(s["model"], params, meta.clone_buffers(s["model"]), s["x"]), s["y"])
    g_ce = meta.grads_of(ce, params)
    g_syn = meta.grads_of(meta.synthetic_loss(s["model"], params, x_p, s["y_p"], s["t"], s["T"], kind), params,
                          create_graph=True)
    return z_f, x_p, params, g_ce, g_syn


def hypergrad(s, kind):
    """The trainer's (exact) hypergradient."""
    z_f, x_p, params, g_ce, g_syn = split_inner(s, kind)
    ahead = meta.lookahead(params, [a + LAM * b.detach() for a, b in zip(g_ce, g_syn)], LR)
    v = meta.outer_grads(meta.val_ce(s["model"], ahead, s["x_val"], s["y_val"]), ahead).v
    g = meta.finder_hypergradient(g_syn, v, LR, LAM, s["finder"], z_f, LAM_KL)
    return torch.cat([v.flatten() for v in g])


@pytest.mark.parametrize("kind", ["pcr", "ce"])
def test_second_order_hypergradient_matches_finite_difference(setup, kind):
    analytic = hypergrad(setup, kind)
    torch.manual_seed(1)
    direction = [torch.randn_like(p) for p in setup["finder"].parameters()]
    h = 1e-6

    def shifted(sign):
        s = {**setup, "finder": copy.deepcopy(setup["finder"])}
        with torch.no_grad():
            for p, d in zip(s["finder"].parameters(), direction):
                p.add_(sign * h * d)
        return objective(s, kind)

    numeric = (shifted(+1) - shifted(-1)) / (2 * h)
    exact = float(analytic @ torch.cat([d.flatten() for d in direction]))
    assert abs(numeric) > 1e-6  # the check is not vacuous
    assert abs(exact - numeric) / abs(numeric) < 1e-4, (exact, numeric)


def test_plain_first_order_would_give_the_finder_no_gradient_but_ours_does(setup):
    # without the HVP, CE(f_θ'(B_val)) does not depend on φ: only λ_KL's term would move the finder
    ours = hypergrad(setup, "pcr")
    kl_only = torch.cat([g.flatten() for g in torch.autograd.grad(LAM_KL * kl_batch(setup["finder"](setup["z"])),
                                                                   list(setup["finder"].parameters()))])
    assert (ours - kl_only).norm() > 1e-3 * ours.norm()


def test_pcr_leaves_the_head_without_gradient(setup):
    model = setup["model"]
    params = dict(model.named_parameters())
    x_p = setup["G"](setup["z"], setup["y_p"])
    grads = dict(zip(params, meta.grads_of(meta.synthetic_loss(model, params, x_p, setup["y_p"], setup["t"],
                                                               setup["T"], "pcr"), params)))
    head = {n for n in params if n.startswith("head.")}
    assert head == {"head.weight", "head.bias"}
    assert all(torch.count_nonzero(grads[n]) == 0 for n in head)
    assert all(torch.count_nonzero(grads[n]) > 0 for n in params if n.endswith("conv.weight") or n == "body.0.weight")


def test_pcr_is_the_mean_squared_feature_gap_through_both_branches(setup):
    model, x_p = setup["model"], setup["G"](setup["z"], setup["y_p"])
    params = dict(model.named_parameters())
    gap = meta.pcr_gap(model, params, x_p, setup["t"], setup["T"])
    f = meta.call(model, params, meta.clone_buffers(model), torch.cat([x_p, setup["T"].apply(x_p, setup["t"])]),
                  features=True)
    assert torch.allclose(gap, (f[6:] - f[:6]).pow(2).mean(1))
    # both branches carry gradient: the loss moves with x_p even where T(x_p) is held fixed
    x_p = x_p.clone().requires_grad_(True)
    meta.pcr_gap(model, params, x_p, setup["t"], setup["T"]).mean().backward()
    assert x_p.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["residual", "linear"])
def test_finder_is_the_identity_at_initialisation(kind):
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    assert torch.equal(Finder(16, kind)(z), z)


def test_silu_finder_starts_as_the_identity_with_the_relu_finders_parameters():
    """finder_activation only changes the hidden units: the same initial weights (a relu and a silu run of one
    seed start from one finder, a paired comparison), the same state_dict keys, the identity at the start."""
    z = torch.randn(32, 16)
    torch.manual_seed(0)
    relu = Finder(16, "residual", activation="relu")
    torch.manual_seed(0)
    silu = Finder(16, "residual", activation="silu")
    assert torch.equal(silu(z), z)
    a, b = relu.state_dict(), silu.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():  # once the last layer has weights the two differ where a pre-activation is negative
        for f in (relu, silu):
            f.net[-1].weight.fill_(0.01)
    assert not torch.allclose(relu(z), silu(z))
    with pytest.raises(ValueError, match="activation 'tanh' is not one of relu, silu"):
        Finder(16, activation="tanh")


def test_mlp_finder_is_not_the_identity():
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    assert not torch.allclose(Finder(16, "mlp")(z), z)


def test_kl_batch_is_zero_for_the_prior_and_grows_away_from_it():
    assert kl_batch(torch.tensor([[1.0], [-1.0]])).abs() < 1e-6  # mean 0, variance 1
    torch.manual_seed(0)
    z = torch.randn(4096, 8)
    assert kl_batch(z) < 0.01 < kl_batch(z + 1) and kl_batch(z) < kl_batch(3 * z)


def test_lookahead_leaves_batchnorm_statistics_unchanged(setup):
    model = setup["model"]
    before = {n: b.clone() for n, b in model.named_buffers()}
    hypergrad(setup, "pcr")
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())


def test_co_learner_term_joins_the_finder_meta_loss_and_trains_only_the_co_learner(setup):
    """MPS with the CML co-learner: ∇_φ [CE(f_θ'(B_val)) + γ CE(c_χ(map_θ'(B_val))) + λ_KL KL] and
    ∇_χ of the co-learner's term, with χ outside the lookahead, match plain autograd."""
    from mgr.models import CoLearner
    torch.manual_seed(2)
    co, gamma, s = CoLearner(4 * 4, 3, "conv", width=4).double(), 0.5, setup  # SmallCNN width 4: 16-channel map

    def meta_loss(z_f, ahead):
        logits, fmap = meta.call(s["model"], ahead, meta.clone_buffers(s["model"]), s["x_val"], feature_map=True)
        return F.cross_entropy(logits, s["y_val"]), gamma * F.cross_entropy(co(fmap), s["y_val"])

    z_f, _, params, grads = inner(s, "pcr", create_graph=True)
    ce_val, co_ce = meta_loss(z_f, meta.lookahead(params, grads, LR))
    want = torch.autograd.grad(ce_val + co_ce + LAM_KL * kl_batch(z_f), [*s["finder"].parameters(), *co.parameters()])

    z_f, x_p, params, g_ce, g_syn = split_inner(s, "pcr")
    ahead = meta.lookahead(params, [a + LAM * b.detach() for a, b in zip(g_ce, g_syn)], LR)
    ce_val, co_ce = meta_loss(z_f, ahead)
    out = meta.outer_grads(ce_val, ahead, co_ce, list(co.parameters()))
    phi = meta.finder_hypergradient(g_syn, out.v, LR, LAM, s["finder"], z_f, LAM_KL)
    got = phi + out.co_grads
    assert len(got) == len(want) and all(torch.allclose(g, w, rtol=1e-9, atol=1e-13) for g, w in zip(got, want))
    without = hypergrad(s, "pcr")  # the co-learner's term does move the finder
    assert (torch.cat([g.flatten() for g in phi]) - without).norm() > 1e-6 * without.norm()
    assert -1 <= out.co_cos <= 1 and out.co_cos != 0


def test_hypergradient_parts_are_the_kl_pull_and_the_lookahead_which_vanishes_with_the_learning_rate(setup):
    """The trainer logs hg_cos on the lookahead part alone and the KL share of the hypergradient (the Latents
    page reads both): the parts must add up to the exact hypergradient, the KL part must be λ_KL ∇_φ KL
    computed on its own, and at η = 0 (the end of a cosine schedule) only the KL part is left."""
    z_f, _, params, g_ce, g_syn = split_inner(setup, "pcr")
    ahead = meta.lookahead(params, [a + LAM * b.detach() for a, b in zip(g_ce, g_syn)], LR)
    v = meta.outer_grads(meta.val_ce(setup["model"], ahead, setup["x_val"], setup["y_val"]), ahead).v
    data, kl = meta.finder_hypergradient_parts(g_syn, v, LR, LAM, setup["finder"], z_f, LAM_KL)
    total = torch.cat([(a + b).flatten() for a, b in zip(data, kl)])
    assert torch.allclose(total, hypergrad(setup, "pcr"), rtol=1e-10, atol=1e-12)
    own_kl = torch.autograd.grad(LAM_KL * kl_batch(setup["finder"](setup["z"])), list(setup["finder"].parameters()))
    assert torch.allclose(torch.cat([g.flatten() for g in kl]), torch.cat([g.flatten() for g in own_kl]))
    assert float(torch.cat([g.flatten() for g in data]).norm()) > 1e-3 * float(total.norm())
    z_f, _, params, g_ce, g_syn = split_inner(setup, "pcr")
    data0, kl0 = meta.finder_hypergradient_parts(g_syn, v, 0.0, LAM, setup["finder"], z_f, LAM_KL)
    assert all(float(g.abs().max()) == 0.0 for g in data0) and any(float(g.abs().max()) > 0 for g in kl0)
