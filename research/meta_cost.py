"""What the finder's meta step costs: step time of mgr variants against pcr, in one process with the
arms interleaved (each round runs a few steps of every arm in turn), so that a busy machine slows
all arms alike and the per-round ratios stay comparable.

    python research/meta_cost.py --dataset digits --ratio 0.1 --threads 1
    python research/meta_cost.py --dataset fashion-mnist --ratio 0.01 --arms pcr,mgr,mgr-every1,mgr-syn4
    python research/meta_cost.py --dataset fashion-mnist --ratio 0.01 --arms pcr,mgr,mgr-torch-2nd,mgr-every1,mgr-every1-torch-2nd
    python research/meta_cost.py --quick            # smoke test (seconds)

Arms ending in -torch-2nd run the same step with PyTorch's own second derivatives (the trainer before
mgr/models/second_order.py), for a paired A/B of that change.

Appends one record per (setting, arm) to research/results/meta_cost.json: the median step time, the
median and range of its per-round ratio to pcr (the first arm), and the setting.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr.data import DataConfig  # noqa: E402
from mgr.trainer import TrainConfig  # noqa: E402
from mgr.trainer.state import build  # noqa: E402
from mgr.trainer import steps as trainer_steps  # noqa: E402
from mgr.trainer.steps import train_step  # noqa: E402

from bench.records import append_record, stamp, write_json  # noqa: E402

ARMS = {"base": {"method": "base"}, "pcr": {"method": "pcr"}, "mgr": {"method": "mgr"},  # the default: meta_every 2
        "mgr-every1": {"method": "mgr", "meta_every": 1}, "mgr-every2": {"method": "mgr", "meta_every": 2},
        "mgr-every3": {"method": "mgr", "meta_every": 3}, "mgr-every4": {"method": "mgr", "meta_every": 4},
        "mgr-syn4": {"method": "mgr", "syn_per_real": 4, "meta_every": 1},
        "mgr-batch-val": {"method": "mgr", "meta_val": "batch", "meta_every": 1},
        "mgr-torch-2nd": {"method": "mgr"}, "mgr-every1-torch-2nd": {"method": "mgr", "meta_every": 1},
        # the default finder until 2026-12-05, against today's (SiLU units at lr 1e-3 following η)
        "mgr-relu": {"method": "mgr", "finder_activation": "relu", "finder_lr": 1e-2, "finder_lr_schedule": "constant"}}


@contextlib.contextmanager
def torch_second_derivatives(arm: str):
    """For a -torch-2nd arm, the meta step without differentiated_twice(): PyTorch's own second derivatives."""
    if not arm.endswith("-torch-2nd"):
        yield
        return
    cheap, trainer_steps.differentiated_twice = trainer_steps.differentiated_twice, lambda **_: contextlib.nullcontext()
    try:
        yield
    finally:
        trainer_steps.differentiated_twice = cheap


def steps(s, n: int) -> float:
    """Seconds per step over n steps, the queued work included (flush is the trainer's host sync)."""
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(s)
        s.step += 1
    s.flush()
    return (time.perf_counter() - t0) / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, help="SmallCNN width (default 32)")
    p.add_argument("--arms", default="pcr,mgr,mgr-every1", help=f"first is the reference; from {', '.join(ARMS)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps of each arm per round")
    p.add_argument("--threads", type=int)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="research/results/meta_cost.json")
    a = p.parse_args(argv)
    arms = a.arms.split(",")
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        p.error(f"unknown arms {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.batch_size, a.rounds, a.steps = 16, 2, 1
    states = {arm: build(TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio), steps=10_000, batch_size=a.batch_size,
                                     width=a.width, device="cpu", **ARMS[arm])) for arm in arms}
    for arm, s in states.items():
        with torch_second_derivatives(arm):
            steps(s, 2)  # warm-up: the allocator, the first meta step
    times = {arm: [] for arm in arms}
    for _ in range(a.rounds):
        for arm, s in states.items():
            with torch_second_derivatives(arm):
                times[arm].append(steps(s, a.steps))
    ref = arms[0]
    records = []
    for arm in arms:
        ratios = [t / r for t, r in zip(times[arm], times[ref])]
        rec = {**stamp("research/meta_cost.py", argv), "dataset": a.dataset, "ratio": a.ratio, "batch_size": a.batch_size,
               "width": a.width or 32, "threads": torch.get_num_threads(), "arm": arm, "arm_fields": ARMS[arm],
               "reference": ref, "rounds": a.rounds, "steps_per_round": a.steps,
               "ms_per_step": round(1000 * statistics.median(times[arm]), 1),
               "ratio_to_reference": round(statistics.median(ratios), 3),
               "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3)}
        records.append(rec)
        print(f"{arm:12s} {rec['ms_per_step']:8.1f} ms/step  {rec['ratio_to_reference']:.2f}x {ref} "
              f"(rounds {rec['ratio_min']:.2f}-{rec['ratio_max']:.2f})", flush=True)
        if not a.quick:
            append_record(a.out, rec)
    if a.quick:
        write_json(a.out, records)


if __name__ == "__main__":
    main()
