"""Step time of each method, measured in one process on the same data: ratios to `base`.

    python bench/step_time.py                      # digits 10%, SmallCNN, CPU or GPU (auto)
    python bench/step_time.py --dataset cifar10 --model resnet18 --device cuda
    python bench/step_time.py --methods base,mltp-fo,mltp-full,mgr,mgr-co --threads 1
    python bench/step_time.py --quick              # smoke test (seconds)

Methods are timed in interleaved rounds (base, gda, pcr, ..., base, gda, ...) so that a change of
machine load hits all of them alike; the median round is reported. Writes bench/results/speed.json.
img/s counts real training images (MLTP uses two batches per step); the ratio is per step.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgr.data import DataConfig  # noqa: E402
from mgr.train import TrainConfig, build, train_step  # noqa: E402

from variants import VARIANTS  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--model", default="smallcnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--methods", default="base,gda,pcr,mgr-first,mgr-second")
    p.add_argument("--steps", type=int, default=20, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="2 steps x 1 round, for the test suite")
    p.add_argument("--out", default="bench/results/speed.json")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.rounds = 2, 1
    names = a.methods.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    states = {n: build(TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio), model=a.model, batch_size=a.batch_size,
                                   device=a.device, compile=a.compile, steps=10 ** 6, **VARIANTS[n])) for n in names}
    dev = next(iter(states.values())).device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for s in states.values():  # warm-up (allocator, compile, caches)
        for _ in range(3):
            train_step(s)
    times = {n: [] for n in names}
    for _ in range(a.rounds):
        for n, s in states.items():
            sync()
            t = time.perf_counter()
            for _ in range(a.steps):
                train_step(s)
            sync()
            times[n].append((time.perf_counter() - t) / a.steps)
    base = statistics.median(times[names[0]])
    rows = []
    for n in names:
        t = statistics.median(times[n])
        s = states[n]
        rows.append({"method": n, "procedure": s.cfg.procedure, "co_learner": s.cfg.co_learner,
                     "ms_per_step": round(1000 * t, 2), "img_per_s": round(s.cfg.images_per_step / t, 1),
                     f"ratio_to_{names[0]}": round(t / base, 2)})
    result = {"machine": platform.node(), "cpu_threads": torch.get_num_threads(), "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "dataset": a.dataset, "ratio": a.ratio, "model": a.model,
              "batch_size": a.batch_size, "compile": a.compile, "steps": a.steps, "rounds": a.rounds,
              "date": time.strftime("%Y-%m-%d"), "results": rows}
    print(f"{'method':14s} {'ms/step':>9s} {'img/s':>9s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['method']:14s} {r['ms_per_step']:9.2f} {r['img_per_s']:9.1f} {r[f'ratio_to_{names[0]}']:6.2f}")
    if not a.quick:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
