"""Pilot of the failure-mode sweeps' doses: each dial over a wide range, on seeds the demos never use (100 and
up), so the range a demo ships is chosen by measurement without looking at the demo's own seeds.

    python research/dose_pilot.py                       # every dial, 2 seeds, 2 workers
    python research/dose_pilot.py --dials psi --seeds 3 --workers 1

Each run is a demo run (mgr.demos.SETTING: Fashion-MNIST 1%, seed k on data seed k mod 3) with one dial moved;
writes research/results/dose_pilot.json: per dial, per dose, each seed's test accuracy and the paired
difference reference − dose, with its mean.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr import demos  # noqa: E402

# dial -> (reference arm values, dial field, wide doses, families[, values every run of the dial shares])
DIALS = {
    "lam": ({"method": "base"}, "lam", (0.25, 1.0, 4.0, 16.0), ("gda", "pcr")),
    "noise": ({"method": "gda"}, "syn_label_noise", (0.1, 0.25, 0.5, 1.0), ("gda",)),
    "psi": (None, "latent_psi", (0.75, 0.5, 0.25, 0.1), ("gda", "pcr")),  # None: the family at ψ = 1
    # the same dials where the synthetic term weighs 4× the real one (GDA's cost is large there: does a dial add?)
    "noise-w4": ({"method": "gda"}, "syn_label_noise", (0.25, 0.5, 1.0), ("gda",), {"lam": 4.0}),
    "leak": ({"method": "gda"}, "leaky_generator", (True,), ("gda",)),  # True: the 10% split's generator
    "leak-w4": ({"method": "gda"}, "leaky_generator", (True,), ("gda",), {"lam": 4.0}),
}


def dosed(field: str, dose) -> dict:
    """The values a dose sets: a leaky dose also swaps in the generator trained on 10% of the training set."""
    return {field: dose, "generator": demos.LEAKY_GENERATOR} if field == "leaky_generator" else {field: dose}


def _init() -> None:
    os.environ["MGR_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


def train_once(values: dict, runs_dir: str, run_id: str) -> float:
    from mgr.launch import build_config
    from mgr.trainer import train
    run = train(build_config(values), runs_dir, run_id, quiet=True)
    return 100.0 * run.metrics()[-1]["test_acc"]


def jobs(dials, seeds, first_seed):
    """(dial, family, dose or None for the reference, seed, values) of every run."""
    out = []
    for dial in dials:
        ref, field, doses, families, *shared = DIALS[dial]
        for seed in range(first_seed, first_seed + seeds):
            arm = demos.Arm("x", dict(demos.SETTING))
            base = {**demos.arm_values(demos.DEMOS["gda-hurts"], arm, seed), **(shared[0] if shared else {})}
            if ref is not None:
                out.append((dial, "ref", None, seed, {**base, **ref}))
            for fam in families:
                if ref is None:
                    out.append((dial, fam, None, seed, {**base, "method": fam}))
                for d in doses:
                    out.append((dial, fam, d, seed, {**base, "method": fam, **dosed(field, d)}))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dials", default=",".join(DIALS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="research/results/dose_pilot.json")
    a = p.parse_args(argv)
    dials = [d for d in a.dials.split(",") if d]
    bad = [d for d in dials if d not in DIALS]
    if bad:
        p.error(f"unknown dial(s) {', '.join(bad)}; choose from {', '.join(DIALS)}")
    todo = jobs(dials, a.seeds, a.first_seed)
    runs_dir = tempfile.mkdtemp(prefix="mgr-pilot-")
    t0 = time.time()
    with ProcessPoolExecutor(a.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init) as pool:
        futs = [pool.submit(train_once, v, runs_dir, f"{dial}.{fam}.{dose}.s{seed}")
                for dial, fam, dose, seed, v in todo]
        acc = {(dial, fam, dose, seed): f.result() for (dial, fam, dose, seed, _), f in zip(todo, futs)}
    result = {"command": "python research/dose_pilot.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seconds": round(time.time() - t0, 1), "workers": a.workers, "cores": os.cpu_count(),
              "machine": os.uname().machine, "date": time.strftime("%Y-%m-%d"), "seeds": list(range(a.first_seed,
                                                                                                a.first_seed + a.seeds)),
              "dials": {}}
    for dial in dials:
        ref, field, doses, families, *shared = DIALS[dial]
        rows = []
        for fam in families:
            for d in doses:
                diffs = []
                for seed in result["seeds"]:
                    r = acc[(dial, "ref" if ref is not None else fam, None, seed)]
                    diffs.append(round(r - acc[(dial, fam, d, seed)], 3))
                rows.append({"family": fam, "field": field, "dose": d, **(shared[0] if shared else {}), "diffs": diffs,
                             "mean_diff": round(sum(diffs) / len(diffs), 3)})
                print(f"{dial} {fam} {field}={d}: reference − arm = {rows[-1]['mean_diff']:+.2f} {diffs}", flush=True)
        result["dials"][dial] = rows
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
