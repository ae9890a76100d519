"""Does the finder follow a signal? Measured at checkpoints of a real mgr run (docs/method.md#the-signal).

    python research/meta_signal.py --dataset fashion-mnist --ratio 0.01 --steps 200 --at 60,200 --threads 1
    python research/meta_signal.py --dataset digits --ratio 0.1 --levers batch-val,full-val,syn4,full-val+syn4
    python research/meta_signal.py --quick            # smoke test (seconds)

The run trains with the default configuration (or --set FIELD=VALUE ...). At each checkpoint in --at,
for each lever (a change of the meta step only: validation term, synthetic samples per meta step),
it draws --draws independent (real batch, validation batch, latents, T) and computes the trainer's
exact hypergradient for each (mps_grads; the state is not changed). Two measures:

  agreement   the mean pairwise cosine of the draws' hypergradients (0: no common direction), and
              |mean of the unit vectors| against 1/√D, its value for pure noise;
  held-out    for each pair (i, j) (draw i against the --others next draws): is draw j's lookahead
              objective J_j(φ) = CE(f_θ'(φ)(B_test,j)) + λ_KL KL(F_φ(z_j)), on --heldout test images
              of its own (never the validation split, which every draw may share), lower one finder step down
              draw i's hypergradient than one step up it? The fraction of pairs where it is, against
              1/2 for chance (the antithetic pair cancels curvature, which would make any finite step
              look harmful: measured, one-sided steps raised other draws' J in 21 of 24 pairs). The step has the size of
              --step-scale Adam steps at the finder's learning rate (‖Δφ‖ = scale·lr·√#φ), the size a
              finder update really has. Judged twice: on J, and on its CE part alone (`heldout_ce_lowered`):
              a step can lower J through the KL term alone, a pull toward the prior with nothing learnt
              from data (measured: at step 250 of a default Fashion-MNIST run the learnt direction lowered
              J for 8 of 8 draws and the CE alone for 2 of 8).

Beside them: the trainer's online estimate (hg_cos: the cosine of consecutive steps' hypergradients,
logged every log interval) over the steps before each checkpoint, and the time of one hypergradient.
Appends one record per (dataset, ratio, lever, checkpoint) to research/results/meta_signal.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr import meta  # noqa: E402
from mgr.data import DataConfig  # noqa: E402
from mgr.finder import FINDER_ACTIVATIONS, kl_batch  # noqa: E402
from mgr.trainer import TrainConfig  # noqa: E402
from mgr.trainer.state import build  # noqa: E402
from mgr.trainer.steps import batches, finder_logs, lam_kl_now, latents, mps_grads, train_step  # noqa: E402

from bench.records import append_record, stamp, write_json  # noqa: E402
from bench.variants import parse_overrides  # noqa: E402

# a lever changes only how one meta step is estimated, so all are measured on the same trained state
BATCH = {"meta_val": "batch"}  # the paper's setting: a validation batch drawn each step
LEVERS = {"batch-val": BATCH, "full-val": {"meta_val": "full"}, "syn4": {**BATCH, "syn_per_real": 4},
          "full-val+syn4": {"meta_val": "full", "syn_per_real": 4}, "syn8": {**BATCH, "syn_per_real": 8},
          "full-val+syn8": {"meta_val": "full", "syn_per_real": 8},
          # 16x the latents in one update: what a meta step every ~16-32 iterations could afford at today's cost
          "full-val+syn16": {"meta_val": "full", "syn_per_real": 16},
          # how much of the agreement is the KL term's pull toward the prior, not the validation signal
          "full-val-no-kl": {"meta_val": "full", "lam_kl": 0.0}}


def flat(finder) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in finder.parameters()])


def draw(s, heldout: int):
    """One draw of everything a meta step samples, plus `heldout` test images that judge it."""
    x, y, x_val, y_val = batches(s)
    z, y_p = latents(s, len(x) * s.cfg.syn_per_real)
    t = s.T.draw(torch.empty(len(z), s.data.channels, s.data.resolution, s.data.resolution, device=s.device))
    k = torch.randint(len(s.data.y_test), (heldout,), generator=HELDOUT_GEN)
    return x, y, x_val, y_val, z, y_p, t, s.data.x_test[k], s.data.y_test[k]


HELDOUT_GEN = torch.Generator().manual_seed(12345)  # its own stream: the run's batches stay as in training


def lookahead_objective(s, d, finder) -> tuple[float, float]:
    """J(φ) for one draw: CE at θ' = θ − η ∇_θ L(θ; φ) on its held-out test images (data the finder
    never sees: with the full validation split as the meta step's target, every draw shares it, and a
    test on it would be in-sample), plus λ_KL KL. Returns (J, its CE part alone): the KL part can be
    lowered by a step without anything learnt from data, so both are judged."""
    x, y, _, _, z, y_p, t, x_held, y_held = d
    cfg, lr = s.cfg, s.sched.get_last_lr()[0]
    with torch.no_grad():
        z_f = finder(z)
        x_p = s.G(z_f, y_p)
    params = dict(s.model.named_parameters())
    loss = (F.cross_entropy(meta.call(s.model, params, meta.clone_buffers(s.model), x), y)
            + cfg.lam * meta.synthetic_loss(s.model, params, x_p, y_p, t, s.T, cfg.synthetic_kind))
    ahead = {n: (p - lr * g).detach() for (n, p), g in zip(params.items(), meta.grads_of(loss, params))}
    with torch.no_grad():
        ce = float(meta.val_ce(s.model, ahead, x_held, y_held))
        return ce + lam_kl_now(s) * float(kl_batch(z_f)), ce


def shifted(finder, direction: torch.Tensor, step: float):
    """A copy of the finder at φ + step · direction (direction flattened like its parameters)."""
    out, offset = copy.deepcopy(finder), 0
    with torch.no_grad():
        for p in out.parameters():
            p.add_(step * direction[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    return out


def heldout_pairs(draws: int, others: int) -> list[tuple[int, int]]:
    """(i, j): draw i's step judged on the next `others` draws (cyclically), every draw once as i."""
    return [(i, (i + k) % draws) for i in range(draws) for k in range(1, min(others, draws - 1) + 1)]


def half_mean_agreement(gs: list[torch.Tensor]) -> float:
    """The agreement an estimate from k = len(gs)/2 times the samples would have: the cosine between the
    means of two disjoint halves of the draws, averaged over every way to split them. It measures what
    averaging more latents per finder update (more synthetic samples, or hypergradients accumulated over
    meta steps at a nearly fixed θ) would buy, from the same draws, without assuming the noise model."""
    n, k = len(gs), len(gs) // 2
    out = []
    for half in itertools.combinations(range(n), k):
        if 0 not in half:  # each split once
            continue
        rest = [i for i in range(n) if i not in half][:k]
        a, b = torch.stack([gs[i] for i in half]).mean(0), torch.stack([gs[i] for i in rest]).mean(0)
        out.append(float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30)))
    return statistics.mean(out)


def pooled_agreement(c: float, k: int) -> float:
    """The agreement of means of k draws predicted from the single-draw agreement c when every draw is a
    common direction plus independent noise of the same size: k·c / (1 + (k − 1)·c)."""
    return k * c / (1 + (k - 1) * c)


def measure(s, lever: dict, draws: int, step_scale: float, others: int, heldout: int,
            phi0: torch.Tensor | None = None) -> dict:
    base_cfg = s.cfg
    s.cfg = dataclasses.replace(base_cfg, **lever)
    try:
        ds, gs, secs = [], [], []
        for _ in range(draws):
            d = draw(s, heldout)
            t0 = time.perf_counter()
            g = mps_grads(s, *d[:7]).phi
            secs.append(time.perf_counter() - t0)
            ds.append(d)
            gs.append(torch.cat([p.detach().flatten() for p in g]))
        units = [g / g.norm().clamp_min(1e-30) for g in gs]
        cosines = [float(a @ b) for a, b in itertools.combinations(units, 2)]
        agreement = statistics.mean(cosines)
        resultant = float(torch.stack(units).mean(0).norm())
        halves = half_mean_agreement(gs)
        n_phi = sum(p.numel() for p in s.finder.parameters())
        size = step_scale * s.cfg.finder_lr * math.sqrt(n_phi)
        lowered, lowered_ce, changes = 0, 0, []
        for i, j in heldout_pairs(draws, others):
            # antithetic: J_j one step down draw i's hypergradient against one step up it. The even terms
            # (curvature) cancel, so a direction that carries nothing for draw j lowers it half the time
            down, up = (lookahead_objective(s, ds[j], shifted(s.finder, units[i], sign * size)) for sign in (-1, 1))
            changes.append((down[0] - up[0]) / 2)
            lowered += down[0] < up[0]
            lowered_ce += down[1] < up[1]  # the held-out CE alone: what the data says, without the KL pull
        pairs = len(heldout_pairs(draws, others))
        # the finder's learnt direction so far, φ − φ_0: one step's draws may disagree while their sum,
        # which is what the finder follows, still points somewhere useful. Written as a gradient (−d)
        learnt = {}
        if phi0 is not None and float((flat(s.finder) - phi0).norm()) > 0:
            u = -(flat(s.finder) - phi0)
            u = u / u.norm()
            judged = [(lookahead_objective(s, d, shifted(s.finder, u, -size)),
                       lookahead_objective(s, d, shifted(s.finder, u, size))) for d in ds]
            learnt = {"learnt_cos_with_draws": round(statistics.mean(float(g @ u) for g in units), 4),
                      "learnt_heldout_lowered": sum(a[0] < b[0] for a, b in judged),
                      "learnt_heldout_ce_lowered": sum(a[1] < b[1] for a, b in judged), "learnt_heldout_draws": draws}
        return {**learnt,"agreement": round(agreement, 4), "agreement_min": round(min(cosines), 4),
                "agreement_max": round(max(cosines), 4), "resultant": round(resultant, 4),
                "agreement_of_half_means": round(halves, 4), "half_means_of": draws // 2,
                "agreement_of_half_means_predicted": round(pooled_agreement(agreement, draws // 2), 4),
                "resultant_noise": round(1 / math.sqrt(draws), 4),
                "heldout_lowered": lowered, "heldout_ce_lowered": lowered_ce, "heldout_pairs": pairs, "heldout_fraction": round(lowered / pairs, 4),
                "heldout_mean_change": statistics.mean(changes), "step_norm": size,
                "hypergradient_norm": round(statistics.mean(float(g.norm()) for g in gs), 8),
                "seconds_per_hypergradient": round(statistics.median(secs), 3)}
    finally:
        s.cfg = base_cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each kept class in the validation split (needs its own generator: --set generator=PATH)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="length of the run (its schedule)")
    p.add_argument("--at", default="60,200", help="checkpoints (steps) at which to measure")
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--levers", default="batch-val,full-val,syn4,full-val+syn4")
    p.add_argument("--others", type=int, default=3, help="held-out draws each draw's step is judged on")
    p.add_argument("--heldout", type=int, default=512, help="test images that judge each draw's step")
    p.add_argument("--step-scale", type=float, default=10.0, help="held-out step, in Adam steps of the finder lr")
    p.add_argument("--set", nargs="*", default=[], help="training options FIELD=VALUE (e.g. finder_lr=1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--finder-activation", choices=FINDER_ACTIVATIONS,
                   help="the finder's hidden activation (the trainer's finder_activation; the same as --set "
                        "finder_activation=...; docs/method.md#a-finder-that-adds-one-vector)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="research/results/meta_signal.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.batch_size, a.steps, a.at, a.draws, a.levers = 16, 4, "2,4", 3, "batch-val,full-val"
    at = sorted(int(x) for x in a.at.split(","))
    levers = a.levers.split(",")
    unknown = [x for x in levers if x not in LEVERS]
    if unknown or not at or at[-1] > a.steps:
        raise SystemExit(f"unknown levers {unknown} (choose from {', '.join(LEVERS)}) or checkpoints {at} beyond "
                         f"--steps {a.steps}")
    overrides = parse_overrides(p, a.set)
    if a.finder_activation:
        overrides["finder_activation"] = a.finder_activation
    cfg = TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio, val_fraction=a.val_fraction), method="mgr", steps=a.steps,
                      batch_size=a.batch_size, seed=a.seed, device="cpu", **overrides)
    s = build(cfg)
    phi0 = flat(s.finder)
    out, records, online = Path(a.out), [], []
    t_train = time.perf_counter()
    for checkpoint in at:
        while s.step < checkpoint:
            train_step(s)
            s.step += 1
            if s.step % cfg.log_every == 0:
                online.append(s.flush().get("hg_cos"))
        recent = [c for c in online[-5:] if c is not None]
        for lever in levers:
            rec = {**stamp("research/meta_signal.py", argv), "dataset": a.dataset, "ratio": a.ratio,
                   "val_fraction": a.val_fraction, "n_val": len(s.data.y_val), "batch_size": a.batch_size,
                   "seed": a.seed, "train_set": a.set, "finder_activation": cfg.finder_activation,
                   "train_meta_val": cfg.meta_val, "lever": lever, "lever_fields": LEVERS[lever], "step": s.step,
                   "steps": a.steps, "draws": a.draws, "online_hg_cos_last_50_steps": (
                       round(statistics.mean(recent), 4) if recent else None),
                   **measure(s, LEVERS[lever], a.draws, a.step_scale, a.others, a.heldout, phi0),
                   "train_seconds_so_far": round(time.perf_counter() - t_train, 1)}
            with torch.no_grad():
                z = torch.randn(512, s.G.z_dim)
                logged = finder_logs(z, s.finder(z))  # the trainer's latent_shift and its z-dependent part
                rec["latent_shift"] = round(float(logged["latent_shift"]), 4)
                rec["shift_spread"] = round(float(logged["shift_spread"]), 4)
            records.append(rec)
            print(json.dumps({k: rec.get(k) for k in ("dataset", "lever", "step", "agreement", "agreement_of_half_means",
                                                  "agreement_of_half_means_predicted", "resultant",
                                                  "heldout_fraction", "heldout_ce_lowered", "learnt_cos_with_draws",
                                                  "learnt_heldout_lowered", "learnt_heldout_ce_lowered",
                                                  "online_hg_cos_last_50_steps", "latent_shift", "shift_spread",
                                                  "seconds_per_hypergradient")}), flush=True)
            if not a.quick:
                append_record(out, rec)  # locked: two settings may run side by side into one file
    if a.quick:
        write_json(out, records)


if __name__ == "__main__":
    main()
