"""The finder's hypergradient modes on a real run's state: how close each is to an independent
computation, and what each costs (docs/method.md#hypergradient-modes).

    python bench/hypergradient.py --dataset fashion-mnist --ratio 0.01 --threads 1
    python bench/hypergradient.py --model resnet18 --batch-size 32 --threads 1
    python bench/hypergradient.py --quick          # smoke test (seconds)

Modes, each computing every gradient of one MPS iteration (the classifier's ∇_θ L and the finder's
hypergradient; optimizer steps excluded):
  exact        the trainer's (mps_grads): ∇_θ CE without a graph, ∇_θ ℓ_PCR with one, then the mixed
               derivative −ηλ ∇_φ⟨∇_θ ℓ_PCR, v⟩
  fd           the retired finite-difference form (--order first)
  full-graph   the former exact mode: the whole inner loss differentiated with create_graph=True and
               v pulled back through θ'(φ); here also the reference, run in float64
Accuracy: cosine of each float32 mode (and of exact under bf16 autocast) with full-graph in float64,
over --draws independent draws (batches, latents, T) after --trained steps of a real mgr run.
Time: interleaved rounds, median per call. Writes bench/results/hypergradient.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgr import meta  # noqa: E402
from mgr.data import DataConfig  # noqa: E402
from mgr.finder import kl_batch  # noqa: E402
from mgr.trainer import TrainConfig  # noqa: E402
from mgr.trainer.state import build  # noqa: E402
from mgr.trainer.steps import batches, latents, mps_grads, train_step  # noqa: E402

from records import stamp, update_records, write_json  # noqa: E402


def draw(s):
    x, y, x_val, y_val = batches(s)
    z, y_p = latents(s, len(x) * s.cfg.syn_per_real)
    t = s.T.draw(torch.empty(len(z), s.data.channels, s.data.resolution, s.data.resolution, device=s.device))
    return x, y, x_val, y_val, z, y_p, t


def flat(gs) -> torch.Tensor:
    return torch.cat([g.detach().double().flatten() for g in gs])


def trainer_mode(s, d, order: str, autocast=None):
    s.cfg = dataclasses.replace(s.cfg, order=order)
    with autocast or torch.autocast("cpu", enabled=False):
        g = mps_grads(s, *d)
    return flat(g.phi), g.theta


def full_graph(s, d, dtype=torch.float32):
    """The former exact mode, written from scratch: J(φ) differentiated through the whole inner loss."""
    x, y, x_val, y_val, z, y_p, t = d
    cfg, lr = s.cfg, s.sched.get_last_lr()[0]
    model, finder, G = s.model, s.finder, s.G
    if dtype != torch.float32:
        model, finder, G = (copy.deepcopy(m).to(dtype) for m in (s.model, s.finder, s.G))
        t = [tuple(p.to(dtype) if p.is_floating_point() else p for p in op) for op in t]
    z_f = finder(z.to(dtype))
    params = dict(model.named_parameters())
    inner = (F.cross_entropy(meta.call(model, params, meta.clone_buffers(model), x.to(dtype)), y)
             + cfg.lam * meta.synthetic_loss(model, params, G(z_f, y_p), y_p, t, s.T, "pcr"))
    grads = meta.grads_of(inner, params, create_graph=True)
    ahead = meta.lookahead(params, grads, lr)
    J = meta.val_ce(model, ahead, x_val.to(dtype), y_val) + cfg.lam_kl * kl_batch(z_f)
    return flat(torch.autograd.grad(J, list(finder.parameters()))), [g.detach() for g in grads]


def cos(a, b) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--trained", type=int, default=30, help="mgr steps before measuring (the finder leaves the identity)")
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--out", default="bench/results/hypergradient.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.batch_size, a.trained, a.draws, a.rounds = 16, 2, 2, 1
    s = build(TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio), method="mgr", model=a.model, steps=1000,
                          batch_size=a.batch_size, device="cpu"))
    torch.manual_seed(0)
    for _ in range(a.trained):
        train_step(s)
        s.step += 1

    acc = {"exact": [], "exact_bf16": [], "fd": [], "full_graph_fp32": [], "theta_exact_vs_full": []}
    for _ in range(a.draws):
        d = draw(s)
        ref, ref_theta = full_graph(s, d, torch.float64)
        exact, theta = trainer_mode(s, d, "second")
        acc["exact"].append(cos(exact, ref))
        acc["exact_bf16"].append(cos(trainer_mode(s, d, "second", torch.autocast("cpu", dtype=torch.bfloat16))[0], ref))
        acc["fd"].append(cos(trainer_mode(s, d, "first")[0], ref))
        acc["full_graph_fp32"].append(cos(full_graph(s, d)[0], ref))
        acc["theta_exact_vs_full"].append(cos(flat(theta), flat(ref_theta)))

    modes = {"exact": lambda d: trainer_mode(s, d, "second"), "fd": lambda d: trainer_mode(s, d, "first"),
             "full-graph": lambda d: full_graph(s, d)}
    times = {m: [] for m in modes}
    for name, fn in modes.items():  # warm-up: the first call of each pays for allocations
        fn(draw(s))
    for _ in range(a.rounds):
        d = draw(s)
        for name, fn in modes.items():  # interleaved: a change of machine load hits every mode alike
            t0 = time.perf_counter()
            fn(d)
            times[name].append(time.perf_counter() - t0)
    ms = {m: round(1000 * statistics.median(v), 1) for m, v in times.items()}
    record = {**stamp("hypergradient.py", argv), "dataset": a.dataset, "ratio": a.ratio, "model": a.model,
              "batch_size": a.batch_size, "trained_steps": a.trained, "threads": torch.get_num_threads(),
              "cosine_with_float64_reference": {k: {"min": round(min(v), 6), "mean": round(statistics.mean(v), 6),
                                                    "per_draw": [round(c, 6) for c in v]} for k, v in acc.items()},
              "ms_per_call": ms, "exact_over_full_graph": round(ms["exact"] / ms["full-graph"], 3),
              "exact_over_fd": round(ms["exact"] / ms["fd"], 3)}
    key = ("dataset", "ratio", "model", "batch_size")
    if a.quick:
        write_json(a.out, [record])
    else:  # one record per setting: a re-run replaces its own
        update_records(a.out, lambda old: [r for r in old if [r[k] for k in key] != [record[k] for k in key]] + [record])
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
