"""Does the generator gain from putting its first feature map in its convolutions' layout? The shipped
width-16 Fashion-MNIST generator in channels_last (as the trainer holds it), a no-grad forward at a demo's
batch of 32 on one torch thread, two ways:

  before  the linear layer's output left in NCHW: each convolution reorders its input first;
  after   Generator.forward as it is: the output reordered once, to the convolutions' layout.

Both give the same images to the bit (checked first). Rounds interleave the two; per-round ratio = after /
before; the profiler counts each way's copies.

    python research/generator_layout.py                        # 12 rounds of 30 forwards each
    python research/generator_layout.py --rounds 2 --reps 3 --out X.json   # smoke test
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.records import stamp, write_json  # noqa: E402
from mgr.gan import load_generator  # noqa: E402

GENERATOR = ROOT / "checkpoints" / "generators" / "fashion-mnist_ratio0.01_seed0_w16.pt"


def forward_before(G, z, y):
    """Generator.forward without the reorder of its first feature map."""
    h = G.linear(z).view(len(z), -1, G.bottom, G.bottom)
    for block in G.blocks:
        h = block(h, y)
    return torch.tanh(G.out_conv(F.relu(G.out_bn(h))))


def ms_per_forward(f, z, y, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        f(z, y)
    return (time.perf_counter() - t) / reps * 1e3


def copies(f, z, y, reps: int = 5) -> dict:
    """aten::copy_ calls and milliseconds per forward, from the profiler."""
    with torch.profiler.profile() as prof:
        for _ in range(reps):
            f(z, y)
    ev = {e.key: e for e in prof.key_averages()}.get("aten::copy_")
    return {"calls": (ev.count if ev else 0) / reps, "ms": round((ev.self_cpu_time_total if ev else 0) / 1e3 / reps, 3)}


@torch.no_grad()
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--reps", type=int, default=30, help="forwards per arm per round")
    ap.add_argument("--out", default=str(ROOT / "research" / "results" / "generator_layout.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    G, _ = load_generator(GENERATOR)
    G = G.eval().to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    z, y = torch.randn(32, G.z_dim), torch.randint(G.num_classes, (32,))
    before = lambda z, y: forward_before(G, z, y)  # noqa: E731
    bitwise = torch.equal(before(z, y), G(z, y))
    for f in (before, G):  # warm-up: oneDNN's kernels are built at their first call
        ms_per_forward(f, z, y, 5)
    rounds = []
    for k in range(args.rounds):
        pair = {}
        for name, f in (("before", before), ("after", G))[:: 1 if k % 2 == 0 else -1]:
            pair[name] = ms_per_forward(f, z, y, args.reps)
        rounds.append(pair)
    ratios = [r["after"] / r["before"] for r in rounds]
    record = {"generator": GENERATOR.name, "batch": 32, "threads": 1, "bitwise_same_images": bitwise,
              "before_ms_median": round(statistics.median(r["before"] for r in rounds), 2),
              "after_ms_median": round(statistics.median(r["after"] for r in rounds), 2),
              "ratio_median": round(statistics.median(ratios), 3),
              "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
              "copies_before": copies(before, z, y), "copies_after": copies(G, z, y),
              "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
              **stamp("research/generator_layout.py", argv)}
    write_json(args.out, record)
    print(f"G forward, batch 32, one thread: {record['before_ms_median']} ms before, {record['after_ms_median']} ms "
          f"after (paired ratio {record['ratio_median']}, {record['ratio_range'][0]} to {record['ratio_range'][1]}); "
          f"copies {record['copies_before']['ms']} -> {record['copies_after']['ms']} ms; same images: {bitwise}")
    return record


if __name__ == "__main__":
    main()
