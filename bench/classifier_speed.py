"""Images/s of one plain training step (forward, backward, SGD) of each classifier at batch 128.

    python bench/classifier_speed.py                 # CPU (or GPU with --device cuda)
    python bench/classifier_speed.py --quick

Shapes: 1x8x8 (digits), 1x28x28 (Fashion-MNIST), 3x32x32 (CIFAR). Writes bench/results/classifier_speed.json.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr.models import build_classifier  # noqa: E402
from mgr.runtime import autocast, resolve_device  # noqa: E402

SHAPES = {"digits": (1, 8), "fashion-mnist": (1, 28), "cifar": (3, 32)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="bench/results/classifier_speed.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.steps, a.rounds = 1, 1
    dev = resolve_device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    for model_name in ("smallcnn", "resnet18"):
        for shape_name, (c, r) in SHAPES.items():
            torch.manual_seed(0)
            model = build_classifier(model_name, 10, c).to(dev)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x, y = torch.randn(a.batch_size, c, r, r, device=dev), torch.randint(10, (a.batch_size,), device=dev)

            def step():
                with autocast(dev):
                    loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            step()
            times = []
            for _ in range(a.rounds):
                sync()
                t = time.perf_counter()
                for _ in range(a.steps):
                    step()
                sync()
                times.append((time.perf_counter() - t) / a.steps)
            t = statistics.median(times)
            rows.append({"model": model_name, "input": f"{c}x{r}x{r}", "ms_per_step": round(1000 * t, 1),
                         "img_per_s": round(a.batch_size / t, 1)})
            print(f"{model_name:9s} {shape_name:14s} {c}x{r}x{r}: {1000 * t:8.1f} ms/step {a.batch_size / t:9.1f} img/s",
                  flush=True)
    result = {"device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.node(), "batch_size": a.batch_size, "date": time.strftime("%Y-%m-%d"), "results": rows}
    if not a.quick:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
