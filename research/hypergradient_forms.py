"""Two exact ways to take the mixed derivative the finder needs, ∇_φ⟨∇_θ ℓ_PCR(θ; φ), v⟩, timed on a
real run's state, and where the time of the trainer's way goes (docs/method.md#hypergradient-modes).

    python research/hypergradient_forms.py --dataset fashion-mnist --ratio 0.01 --threads 1
    python research/hypergradient_forms.py --quick        # smoke test (seconds)

  reverse-over-reverse  the trainer's: ∇_θ ℓ_PCR with create_graph=True, then ⟨·, v⟩ differentiated into φ
  forward-over-reverse  ∇_θ ℓ_PCR without a graph (the classifier's step needs it anyway); u = the
                        directional derivative of ∇_x ℓ_PCR(θ, x) along θ → θ + εv (torch.func.jvp
                        over torch.func.grad, at x = G(F_φ(z), y)), then one plain backward of u
                        through G and the finder
Both return ∇_θ ℓ_PCR too, so each is the whole synthetic part of a meta step. Interleaved rounds,
median per call; one torch.profiler pass of the trainer's way, its ops grouped by self time.
Last, one BatchNorm layer (256×32×28×28, float32) through forward, backward with a graph and the
double backward: aten's batch_norm against one written with its scale folded into a per-channel factor,
(x − μ)·(w/√(σ² + ε)) + b, the candidate for cutting the profile's largest item.
Writes research/results/hypergradient_forms.json (one record per setting).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr import meta  # noqa: E402
from mgr.data import DataConfig  # noqa: E402
from mgr.trainer import TrainConfig  # noqa: E402
from mgr.trainer.state import build  # noqa: E402
from mgr.trainer.steps import batches, latents, train_step  # noqa: E402

from bench.records import stamp, update_records, write_json  # noqa: E402


def batchnorm_layer_ms(repeats: int, shape=(256, 32, 28, 28)) -> dict:
    """Median ms of fwd + bwd (create_graph) + double backward of one BatchNorm, both ways, interleaved."""
    g = torch.Generator().manual_seed(0)
    x0, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    w, b = torch.randn(shape[1], requires_grad=True), torch.randn(shape[1], requires_grad=True)

    def folded(x):
        mu = x.mean((0, 2, 3), keepdim=True)
        xc = x - mu
        return xc * (torch.rsqrt(xc.pow(2).mean((0, 2, 3), keepdim=True) + 1e-5) * w.view(1, -1, 1, 1)) + b.view(1, -1, 1, 1)
    ways = {"aten": lambda x: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5), "folded": folded}
    times, outs = {k: [] for k in ways}, {}
    for _ in range(repeats + 1):  # the first round warms the allocator and is dropped
        for name, fn in ways.items():
            x = x0.clone().requires_grad_()
            t0 = time.perf_counter()
            gx, gw = torch.autograd.grad(fn(x).pow(2).mean(), [x, w], create_graph=True)
            outs[name] = torch.autograd.grad((gx * v).sum() + gw.sum(), x)[0]
            times[name].append(time.perf_counter() - t0)
    ms = {k: round(1000 * statistics.median(t[1:]), 1) for k, t in times.items()}
    ratios = [f / a for a, f in zip(times["aten"][1:], times["folded"][1:])]
    return {**ms, "folded_over_aten": round(statistics.median(ratios), 3),
            "range": [round(min(ratios), 3), round(max(ratios), 3)],
            "cosine": round(float(F.cosine_similarity(outs["aten"].flatten(), outs["folded"].flatten(), dim=0)), 6)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--ratio", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--trained", type=int, default=10, help="mgr steps before measuring")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="research/results/hypergradient_forms.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.dataset, a.ratio, a.batch_size, a.trained, a.rounds = "digits", 0.1, 16, 1, 1
    s = build(TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio), method="mgr", steps=1000,
                          batch_size=a.batch_size, device="cpu"))
    torch.manual_seed(0)
    for _ in range(a.trained):
        train_step(s)
        s.step += 1
    model, T, scale = s.model, s.T, -s.sched.get_last_lr()[0] * s.cfg.lam
    phi = list(s.finder.parameters())
    # torch.func transforms refuse in-place updates of captured BatchNorm buffers: a copy that uses batch
    # statistics only (what a training-mode forward on throwaway buffers computes anyway)
    stateless = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(stateless)

    def draw():
        x, _, x_val, y_val = batches(s)
        z, y_p = latents(s, len(x))
        x_p = s.G(s.finder(z), y_p)
        params = dict(model.named_parameters())
        # v: the validation gradient at θ, not at a lookahead θ': both forms take v as given, so any
        # realistic v compares them
        v = [g.detach() for g in meta.grads_of(meta.val_ce(model, params, x_val, y_val), params)]
        return params, x_p, T.draw(x_p), v

    def reverse_over_reverse(params, x_p, t, v):
        g_syn = meta.grads_of(meta.synthetic_loss(model, params, x_p, None, t, T, "pcr"), params, create_graph=True)
        dot = sum((g * d).sum() for g, d in zip(g_syn, v))
        return torch.autograd.grad(scale * dot, phi, retain_graph=True), [g.detach() for g in g_syn]

    def forward_over_reverse(params, x_p, t, v):
        g_syn = meta.grads_of(meta.synthetic_loss(model, params, x_p, None, t, T, "pcr"), params)

        def ell(p, x):
            f_p, f_t = torch.func.functional_call(stateless, p, (torch.cat([x, T.apply(x, t)]),),
                                                  {"features": True}).chunk(2)
            return (f_t - f_p).pow(2).mean(1).mean()
        grad_x = torch.func.grad(ell, argnums=1)
        _, u = torch.func.jvp(lambda p: grad_x(p, x_p.detach()), ({n: q.detach() for n, q in params.items()},),
                              (dict(zip(params, v)),))
        return torch.autograd.grad(x_p, phi, grad_outputs=scale * u, retain_graph=True), g_syn

    flat = lambda gs: torch.cat([g.flatten().double() for g in gs])  # noqa: E731
    forms = {"reverse-over-reverse": reverse_over_reverse, "forward-over-reverse": forward_over_reverse}
    cosines = []
    for _ in range(3):
        d = draw()
        (r, _), (f, _) = reverse_over_reverse(*d), forward_over_reverse(*d)
        cosines.append(float(F.cosine_similarity(flat(r), flat(f), dim=0)))
    times = {k: [] for k in forms}
    for _ in range(a.rounds):
        for name, fn in forms.items():  # interleaved, each on a fresh draw
            d = draw()
            t0 = time.perf_counter()
            fn(*d)
            times[name].append(time.perf_counter() - t0)
    d = draw()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        reverse_over_reverse(*d)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    bn_dd = sum(e.cpu_time_total for e in events if e.key == "NativeBatchNormBackwardBackward0")
    ms = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
    ratios = [f / r for r, f in zip(times["reverse-over-reverse"], times["forward-over-reverse"])]  # per round
    record = {**stamp("research/hypergradient_forms.py", argv), "dataset": a.dataset, "ratio": a.ratio,
              "batch_size": a.batch_size, "threads": torch.get_num_threads(), "rounds": a.rounds,
              "ms_per_call": ms, "forward_over_reverse_over_trainer": round(statistics.median(ratios), 3),
              "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
              "cosine_between_forms": [round(c, 9) for c in cosines],
              "trainer_profile": {"batchnorm_double_backward_share": round(bn_dd / total, 3),
                                  "top_self_ops": {e.key: round(e.self_cpu_time_total / total, 3)
                                                   for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]}},
              "batchnorm_layer_ms": batchnorm_layer_ms(1 if a.quick else 5, (8, 8, 8, 8) if a.quick else (256, 32, 28, 28))}
    if a.quick:
        write_json(a.out, [record])
    else:
        key = ("dataset", "ratio", "batch_size", "machine")
        update_records(a.out, lambda old: [r for r in old if [r.get(k) for k in key] != [record[k] for k in key]] + [record])
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
