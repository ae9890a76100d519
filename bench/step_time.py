"""Step time of each method, measured in one process on the same data: ratios to `base`, and our
`base` against the plain training loop a user would write.

    python bench/step_time.py                      # digits 10%, SmallCNN, CPU or GPU (auto)
    python bench/step_time.py --dataset cifar10 --model resnet18 --device cuda [--compile]
    python bench/step_time.py --methods base,mltp-fo,mltp-full,mgr,mgr-co --threads 1
    python bench/step_time.py --quick              # smoke test (seconds)

Methods are timed in interleaved rounds (base, gda, pcr, ..., reference, base, gda, ...) so that a
change of machine load hits all of them alike; the median round is reported. Writes
bench/results/speed.json. img/s counts real training images (MLTP uses two batches per step); the
ratio is per step.

The reference (--reference, on by default) is a plain loop: the same classifier architecture
(torchvision's resnet18 with the small-image stem for --model resnet18; our SmallCNN class for
smallcnn), fp32, a DataLoader over a TensorDataset of the same training split (shuffle, drop_last,
num_workers=0), `.to(device)` per batch, forward, CE, backward, SGD, `loss.item()` per step.
`speedup_vs_reference` = its step time / our base's: what the trainer's device-resident data, bf16
autocast (on CUDA), channels_last and --compile buy over that loop.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgr.data import DataConfig  # noqa: E402
from mgr.models.classifier import SmallCNN  # noqa: E402
from mgr.trainer import TrainConfig
from mgr.trainer.state import build
from mgr.trainer.steps import train_step  # noqa: E402

from records import stamp, write_json  # noqa: E402
from variants import VARIANTS, add_setting_options, method_names  # noqa: E402

DEFAULT_METHODS = "base,gda,pcr,mgr,mltp-fo"


def reference_model(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str]:
    """The classifier a user would build, with the same compute as ours."""
    if name == "resnet18":
        import torchvision
        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)  # small-image stem, as ours
        net.maxpool = nn.Identity()
        return net, "torchvision resnet18 (3x3 stride-1 stem, no max-pool)"
    return SmallCNN(num_classes, in_channels), "mgr SmallCNN class in the plain loop"


def reference_step(base_state, device: torch.device):
    """One step of the plain loop, as a closure over its own model, optimizer and DataLoader."""
    cfg, d = base_state.cfg, base_state.data
    torch.manual_seed(cfg.seed)
    model, desc = reference_model(cfg.model, d.num_classes, d.channels)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    ds = torch.utils.data.TensorDataset(d.x_train.cpu().contiguous(), d.y_train.cpu())
    if len(ds) >= cfg.batch_size:
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
        how = "DataLoader(TensorDataset, shuffle=True, drop_last=True, num_workers=0)"
    else:  # drop_last would leave no batch at all: draw one full batch per epoch, with replacement
        sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=cfg.batch_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
        how = (f"DataLoader(TensorDataset, RandomSampler with replacement, num_workers=0): the split has "
               f"{len(ds)} images, fewer than one batch")

    def forever():
        while True:  # epochs, as `for epoch in ...: for x, y in loader:` would run them
            yield from loader
    batches = forever()

    def step():
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # what a typical script logs every step (a host sync on CUDA)
    return step, {"model": desc, "dtype": "fp32", "channels_last": False, "compile": False, "loader": how}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_options(p, methods=DEFAULT_METHODS)
    p.add_argument("--steps", type=int, default=20, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the plain reference loop against our base (default: on)")
    p.add_argument("--quick", action="store_true", help="2 steps x 1 round, for the test suite")
    p.add_argument("--resolution", type=int, help="image side for variable-size datasets (imagefolder:PATH)")
    p.add_argument("--generator", help="generator checkpoint for the synthetic methods (default: the one for the split)")
    p.add_argument("--out", default="bench/results/speed.json")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.rounds = 2, 1
    names = method_names(p, a.methods)
    if a.reference and "base" not in names:
        p.error("--reference compares the plain loop with our base: include base in --methods, or pass --no-reference")
    if a.threads:
        torch.set_num_threads(a.threads)
    data = DataConfig(a.dataset, ratio=a.ratio, resolution=a.resolution)
    states = {n: build(TrainConfig(data=data, model=a.model, batch_size=a.batch_size, device=a.device, compile=a.compile,
                                   steps=10 ** 6, generator=a.generator if VARIANTS[n].get("method") != "base" else None,
                                   **VARIANTS[n])) for n in names}
    dev = next(iter(states.values())).device
    steps = {n: (lambda s=s: train_step(s)) for n, s in states.items()}
    ref_info = None
    if a.reference:
        steps["reference"], ref_info = reference_step(states["base"], dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    peak = {}  # CUDA: the most memory each method's steps held (its warm-up steps; the model weights included)
    for n, step in steps.items():  # warm-up (allocator, compile, caches)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(3):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
            peak[n] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
    times = {n: [] for n in steps}
    for _ in range(a.rounds):
        for n, step in steps.items():
            sync()
            t = time.perf_counter()
            for _ in range(a.steps):
                step()
            sync()
            times[n].append((time.perf_counter() - t) / a.steps)
    base = statistics.median(times[names[0]])
    rows = []
    for n in steps:
        t = statistics.median(times[n])
        cfg = states[n].cfg if n in states else states["base"].cfg
        rows.append({"method": n, "procedure": cfg.procedure if n in states else "plain loop",
                     "co_learner": cfg.co_learner if n in states else False,
                     "ms_per_step": round(1000 * t, 2), "img_per_s": round(cfg.images_per_step / t, 1),
                     f"ratio_to_{names[0]}": round(t / base, 2), **({"peak_mem_mib": peak[n]} if n in peak else {})})
    result = {**stamp("step_time.py", argv), "cpu_threads": torch.get_num_threads(), "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "dataset": a.dataset, "ratio": a.ratio, "resolution": next(iter(states.values())).data.resolution,
              "model": a.model,
              "batch_size": a.batch_size, "compile": a.compile, "steps": a.steps, "rounds": a.rounds,
              "ours": {"dtype": "bf16 autocast" if dev.type == "cuda" else "fp32", "channels_last": True,
                       "compile": a.compile, "data": "device-resident tensors, batches indexed on the device"},
              "results": rows}
    if ref_info:
        ref_t, base_t = statistics.median(times["reference"]), statistics.median(times["base"])
        result["reference"] = {**ref_info, "ms_per_step": round(1000 * ref_t, 2),
                               "img_per_s": round(a.batch_size / ref_t, 1)}
        result["speedup_vs_reference"] = round(ref_t / base_t, 2)
    print(f"{'method':14s} {'ms/step':>9s} {'img/s':>9s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['method']:14s} {r['ms_per_step']:9.2f} {r['img_per_s']:9.1f} {r[f'ratio_to_{names[0]}']:6.2f}")
    if ref_info:
        print(f"reference: {ref_info['model']}, {ref_info['dtype']}, {ref_info['loader']}\n"
              f"our base is {result['speedup_vs_reference']:.2f}x as fast as the reference")
    if not a.quick or a.out != p.get_default("out"):  # --quick writes only where it is told to
        write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
