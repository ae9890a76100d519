"""Does training several seeds in one process with torch.func pay? K SmallCNNs, one training step
each, timed two ways on the demos' setting (Fashion-MNIST 1%, SmallCNN width 16, batch 32, one
torch thread):

  sequential  K independent models, each its own torch.optim.SGD (momentum 0.9, Nesterov, weight
              decay 5e-4, as the trainer builds it), one step each in turn: the plain way;
  vmap        torch.func.stack_module_state over the same K models, vmap(grad(loss)) of
              functional_call over the stacked parameters (each model its own batch: x of shape
              (K, B, C, H, W)), and the same SGD written by hand on the stacked tensors (torch._foreach_*,
              the op order of torch.optim.SGD's single-tensor loop).

Steps timed: "plain" (forward, cross-entropy, backward, SGD update; base's step) and "pcr" (the plain
step plus the consistency term: one features-forward of [x_p, T(x_p)] with cloned BN buffers, as
mgr.meta.pcr_gap does). The PCR step's synthetic images are training images drawn like a second batch
and T(x_p) is drawn once per batch outside the timed region (the generator's no-grad forward and the
augmentation are not timed: the classifier's compute is what vmap changes).

BatchNorm: the models train in train mode (batch statistics). stack_module_state stacks the buffers as
well (running_mean/var, num_batches_tracked: shape (K, ...)) and they go into vmap with in_dims=0, so
BatchNorm's in-place running-stat update writes each model's own slice (batched.add_(batched), which
vmap allows); replace_all_batch_norm_modules_ is not used (it drops the running stats, which the
trainer's evaluations need). The check compares the running stats too.

Correctness: from one initialisation and the same batches, 3 vmapped steps give the sequential models'
parameters, momentum buffers and BN running stats (max abs difference, float32 tolerance).

Timing: rounds interleave the arms (order alternating each round), so the machine's load falls on both
alike; per-round ratio = sequential / vmap median ms of the round.

    python research/vmap_seeds.py                      # K = 2 and 5, 10 rounds x 4 steps per arm
    python research/vmap_seeds.py --quick --out X.json # smoke test (seconds)
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call, grad, stack_module_state, vmap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.records import stamp, write_json  # noqa: E402
from mgr.augment import Augment  # noqa: E402
from mgr.data import DataConfig, load  # noqa: E402
from mgr.models.classifier import build_classifier  # noqa: E402

LR, MOMENTUM, WEIGHT_DECAY, LAM = 0.05, 0.9, 5e-4, 1.0  # the trainer's SmallCNN defaults (constant lr here)
KINDS = ("plain", "pcr")


# ----------------------------------------------------------------------------- batches
def batch_pool(data, K: int, B: int, n: int, seed: int, policy: str) -> list[dict]:
    """n steps' batches for K models: real (x, y), synthetic stand-ins x_p and their views T(x_p)."""
    g = torch.Generator().manual_seed(seed)
    T = Augment(policy)
    pool = []
    for _ in range(n):
        i = torch.randint(len(data.y_train), (K, B), generator=g)
        j = torch.randint(len(data.y_train), (K, B), generator=g)
        x_p = data.x_train[j]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
            x_t = T(x_p.flatten(0, 1)).view_as(x_p)
        pool.append({"x": data.x_train[i].contiguous(), "y": data.y_train[i].contiguous(),
                     "x_p": x_p.contiguous(), "x_t": x_t.contiguous()})
    return pool


# ----------------------------------------------------------------------------- sequential (the plain way)
def pcr_term(model, x_p, x_t):
    """ℓ_PCR as mgr.meta.pcr_gap: one features-forward of both views with cloned BN buffers."""
    params = dict(model.named_parameters())
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    f = functional_call(model, (params, buffers), (torch.cat([x_p, x_t]),), {"features": True})
    f_p, f_t = f.chunk(2)
    return (f_t - f_p).pow(2).mean(1).mean()


class Sequential:
    def __init__(self, models):
        self.models = models
        self.opts = [torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True,
                                     weight_decay=WEIGHT_DECAY) for m in models]

    def step(self, b: dict, kind: str) -> None:
        for k, (m, opt) in enumerate(zip(self.models, self.opts)):
            loss = F.cross_entropy(m(b["x"][k]), b["y"][k])
            if kind == "pcr":
                loss = loss + LAM * pcr_term(m, b["x_p"][k], b["x_t"][k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


# ----------------------------------------------------------------------------- vmap over stacked models
class Stacked:
    def __init__(self, models):
        params, self.buffers = stack_module_state(models)  # copies: (K, ...) each, params requires_grad
        self.names = list(params)
        self.params = [params[n].detach() for n in self.names]  # torch.func.grad needs no leaf grads
        self.momentum = [torch.zeros_like(p) for p in self.params]
        base = copy.deepcopy(models[0]).to("meta")  # a stateless skeleton for functional_call

        def loss_fn(params: dict, buffers: dict, x, y, x_p, x_t, kind: str):
            loss = F.cross_entropy(functional_call(base, (params, buffers), (x,)), y)  # updates BN stats in place
            if kind == "pcr":
                cloned = {n: v.clone() for n, v in buffers.items()}  # as pcr_gap: the views leave the stats alone
                f = functional_call(base, (params, cloned), (torch.cat([x_p, x_t]),), {"features": True})
                f_p, f_t = f.chunk(2)
                loss = loss + LAM * (f_t - f_p).pow(2).mean(1).mean()
            return loss

        self.grads = {kind: vmap(grad(lambda p, b, x, y, xp, xt, kind=kind: loss_fn(p, b, x, y, xp, xt, kind)))
                      for kind in KINDS}

    def step(self, b: dict, kind: str) -> None:
        g = self.grads[kind](dict(zip(self.names, self.params)), self.buffers, b["x"], b["y"], b["x_p"], b["x_t"])
        g = [g[n] for n in self.names]
        # torch.optim.SGD (_single_tensor_sgd), nesterov, dampening 0: the same ops in the same order
        g = torch._foreach_add(g, self.params, alpha=WEIGHT_DECAY)
        torch._foreach_mul_(self.momentum, MOMENTUM)
        torch._foreach_add_(self.momentum, g)
        g = torch._foreach_add(g, self.momentum, alpha=MOMENTUM)
        torch._foreach_add_(self.params, g, alpha=-LR)


def make_models(K: int, seed: int, data, width: int):
    out = []
    for k in range(K):
        torch.manual_seed(seed + k)
        out.append(build_classifier("smallcnn", data.num_classes, data.channels, width=width).train())
    return out


# ----------------------------------------------------------------------------- correctness
def nchw(t: torch.Tensor) -> torch.Tensor:
    """The same values with plain NCHW strides. data.x_train[idx] of a 1-channel dataset has strides
    (784, 1, 28, 1), which is also channels-last, and CPU convolutions then take another path: faster
    (bench numbers below use it, as the trainer does) but farther from float64 (see check)."""
    return t.new_empty(t.shape).copy_(t)


def trained(data, K: int, width: int, B: int, kind: str, policy: str, layout: str, dtype, n_steps: int) -> dict:
    """Both arms after n_steps from one initialisation and the same batches, as stacked (K, ...) tensors."""
    models = [m.to(dtype) for m in make_models(K, 100, data, width)]
    seq, vm = Sequential([copy.deepcopy(m) for m in models]), Stacked(models)
    for b in batch_pool(data, K, B, n_steps, 7, policy):
        b = {n: (nchw(t) if layout == "nchw" else t).to(dtype) if t.is_floating_point() else t for n, t in b.items()}
        seq.step(b, kind)
        vm.step(b, kind)
    out = {"sequential": {}, "vmap": {}}
    for n, p, mom in zip(vm.names, vm.params, vm.momentum):
        ps = [dict(m.named_parameters())[n] for m in seq.models]
        out["sequential"][f"param {n}"] = torch.stack([q.detach() for q in ps])
        out["sequential"][f"momentum {n}"] = torch.stack([o.state[q]["momentum_buffer"] for o, q in zip(seq.opts, ps)])
        out["vmap"][f"param {n}"], out["vmap"][f"momentum {n}"] = p, mom
    for n, buf in vm.buffers.items():
        if "running" in n:
            out["sequential"][f"bn {n}"] = torch.stack([dict(m.named_buffers())[n] for m in seq.models])
            out["vmap"][f"bn {n}"] = buf
    return out


def max_diff(a: dict, b: dict, what: str) -> float:
    return max((a[n].double() - b[n].double()).abs().max().item() for n in a if n.startswith(what))


def check(data, K: int, width: int, B: int, kind: str, policy: str, n_steps: int = 3, tol: float = 1e-4) -> dict:
    """Max abs differences after n_steps: vmap vs sequential in float32, on NCHW batches and on the
    trainer's layout, and each float32 arm against sequential float64 on the same batches. Fashion-MNIST's
    constant backgrounds make a step ill-conditioned (BatchNorm over many equal values): one step's
    gradients agree to ~5e-6, but three steps of plain float32 already drift ~1e-3 from float64. So the
    test is that vmap stays as close to float64 as the plain float32 step does (within tol, or 2x its drift)."""
    rec = {"kind": kind, "K": K, "steps": n_steps, "tolerance": tol}
    for layout in ("nchw", "trainer"):
        r = trained(data, K, width, B, kind, policy, layout, torch.float32, n_steps)
        rec[layout] = {f"max_abs_diff_{w}": max_diff(r["vmap"], r["sequential"], w) for w in ("param", "momentum", "bn")}
    ref = trained(data, K, width, B, kind, policy, "trainer", torch.float64, n_steps)["sequential"]
    rec["trainer"]["sequential_vs_float64_param"] = max_diff(r["sequential"], ref, "param")
    rec["trainer"]["vmap_vs_float64_param"] = max_diff(r["vmap"], ref, "param")
    t = rec["trainer"]
    rec["ok"] = t["vmap_vs_float64_param"] <= max(tol, 2 * t["sequential_vs_float64_param"])
    return rec


# ----------------------------------------------------------------------------- timing
def timed(arm, pool, i0: int, n: int, kind: str) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        arm.step(pool[(i0 + i) % len(pool)], kind)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="2,5", help="numbers of models, comma-separated")
    p.add_argument("--kinds", default="plain,pcr", help=f"steps to time, from {', '.join(KINDS)}")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=4, help="steps of each arm per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke test: K=2, the plain step, a 1-step check, 2 rounds of 1 step")
    p.add_argument("--out", help="default research/results/vmap_seeds.json (a --quick run writes only to an --out)")
    a = p.parse_args(argv)
    ks = [int(k) for k in a.ks.split(",")]
    kinds = a.kinds.split(",")
    if any(k not in KINDS for k in kinds):
        p.error(f"unknown kinds in {a.kinds!r}; choose from {', '.join(KINDS)}")
    torch.set_num_threads(a.threads)
    if a.quick:
        ks, kinds, a.rounds, a.steps, a.warmup = [2], ["plain"], 2, 1, 1
    data = load(DataConfig("fashion-mnist", ratio=0.01))
    policy = "translation,flip,color,cutout" if data.hflip else "translation,color,cutout"  # the trainer's default T

    checks = [check(data, max(ks), a.width, a.batch_size, kind, policy, n_steps=1 if a.quick else 3) for kind in kinds]
    for c in checks:
        n, t = c["nchw"], c["trainer"]
        print(f"check {c['kind']:5s} K={c['K']}, {c['steps']} steps, max |vmap - sequential|: NCHW batches params "
              f"{n['max_abs_diff_param']:.1e} momentum {n['max_abs_diff_momentum']:.1e} BN stats {n['max_abs_diff_bn']:.1e}; "
              f"trainer's layout params {t['max_abs_diff_param']:.1e} (vs float64: sequential "
              f"{t['sequential_vs_float64_param']:.1e}, vmap {t['vmap_vs_float64_param']:.1e}) "
              f"{'ok' if c['ok'] else 'MISMATCH'}", flush=True)

    arms = {}
    for K in ks:
        models = make_models(K, 0, data, a.width)
        arms[K] = {"sequential": Sequential([copy.deepcopy(m) for m in models]), "vmap": Stacked(models),
                   "pool": batch_pool(data, K, a.batch_size, 8, K, policy)}
    times = {(K, kind, arm): [] for K in ks for kind in kinds for arm in ("sequential", "vmap")}
    rounds = {key: [] for key in times}
    for K in ks:
        for kind in kinds:
            for arm in ("sequential", "vmap"):
                timed(arms[K][arm], arms[K]["pool"], 0, a.warmup, kind)  # allocator, vmap's first trace
    i0 = 0
    for r in range(a.rounds):
        for K in ks:
            for kind in kinds:
                for arm in (("sequential", "vmap") if r % 2 == 0 else ("vmap", "sequential")):
                    t = timed(arms[K][arm], arms[K]["pool"], i0, a.steps, kind)
                    times[(K, kind, arm)] += t
                    rounds[(K, kind, arm)].append(statistics.median(t))
        i0 += a.steps

    results = []
    for K in ks:
        for kind in kinds:
            seq, vm = times[(K, kind, "sequential")], times[(K, kind, "vmap")]
            ratios = [s / v for s, v in zip(rounds[(K, kind, "sequential")], rounds[(K, kind, "vmap")])]
            rec = {"kind": kind, "K": K, "steps_timed_per_arm": len(seq),
                   "sequential_ms": round(statistics.median(seq), 2), "vmap_ms": round(statistics.median(vm), 2),
                   "sequential_ms_per_model": round(statistics.median(seq) / K, 2),
                   "vmap_ms_per_model": round(statistics.median(vm) / K, 2),
                   "speedup": round(statistics.median(seq) / statistics.median(vm), 3),
                   "round_ratio_median": round(statistics.median(ratios), 3),
                   "round_ratio_min": round(min(ratios), 3), "round_ratio_max": round(max(ratios), 3),
                   "round_ratios": [round(x, 3) for x in ratios]}
            results.append(rec)
            print(f"{kind:5s} K={K}: sequential {rec['sequential_ms']:7.1f} ms/step, vmap {rec['vmap_ms']:7.1f} ms/step "
                  f"({rec['vmap_ms_per_model']:.1f} ms per model): speed-up {rec['speedup']:.2f}x, per round median "
                  f"{rec['round_ratio_median']:.2f}x ({rec['round_ratio_min']:.2f}-{rec['round_ratio_max']:.2f})",
                  flush=True)
    out = {**stamp("research/vmap_seeds.py", argv), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "load_average_at_end": list(os.getloadavg()),
           "dataset": "fashion-mnist", "ratio": 0.01, "model": "smallcnn", "width": a.width,
           "batch_size": a.batch_size, "device": "cpu", "rounds": a.rounds, "steps_per_round": a.steps,
           "warmup": a.warmup, "optimizer": f"SGD lr {LR} momentum {MOMENTUM} nesterov weight_decay {WEIGHT_DECAY}",
           "pcr_step": "CE(x) + ℓ_PCR: one features-forward of [x_p, T(x_p)] with cloned BN buffers; generator and "
                       "augmentation not timed",
           "batchnorm": "train mode; buffers stacked by stack_module_state and vmapped with in_dims=0, so BN's "
                        "in-place running-stat update writes each model's slice; no replace_all_batch_norm_modules_",
           "checks": checks, "results": results}
    if a.out or not a.quick:
        write_json(a.out or Path(__file__).resolve().parent / "results" / "vmap_seeds.json", out)
    return out


if __name__ == "__main__":
    main()
