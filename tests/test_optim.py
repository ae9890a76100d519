"""mgr/optim.py's SGD and Adam are torch.optim's, minus the torch.compile hooks: the same parameters after
every step, to the bit, the same state dicts, and either side loads the other's."""
import copy

import pytest
import torch
import torch.nn as nn

from mgr import optim


def steps(opt_class, kwargs, model, n=6):
    """n steps of a small model (conv, BatchNorm, linear) on fixed random data; its optimizer."""
    groups = [{"params": list(model[0].parameters())},  # a second group with settings of its own, as MLTP's α
              {"params": list(model[1:].parameters()), "weight_decay": 0.0, **({"momentum": 0.0, "nesterov": False}
                                                                              if opt_class.__name__ == "SGD" else {})}]
    opt = opt_class(groups, **kwargs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(n):
        x, y = torch.randn(8, 1, 6, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.0, 0.999)))])
def test_steps_and_state_dicts_are_torch_optims_to_the_bit(ours, theirs, kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    a, b = model, copy.deepcopy(model)
    opt_a, opt_b = steps(ours, kwargs, a), steps(theirs, kwargs, b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys()
    assert all(torch.equal(sa["state"][k][n], sb["state"][k][n]) for k in sa["state"] for n in sa["state"][k])
    # a checkpoint written by either resumes in the other: the next steps agree too
    opt_a.load_state_dict(sb)
    opt_b.load_state_dict(sa)
    for opt, m in ((opt_a, a), (opt_b, b)):
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_differentiable_optimizer_is_refused():
    opt = optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1, differentiable=True)
    with pytest.raises(ValueError, match="torch.optim"):
        opt.step()
