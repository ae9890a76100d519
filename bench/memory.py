"""Peak memory of each method's training: host RSS, and on CUDA the peak allocated by torch.

    python bench/memory.py                         # digits 10%, SmallCNN, CPU or GPU (auto)
    python bench/memory.py --dataset cifar10 --model resnet18 --device cuda
    python bench/memory.py --quick                 # smoke test

Each method runs in a fresh child process (`python bench/memory.py --child METHOD ...`), so peaks
never mix: the child builds the trainer's state (data, classifier, generator, finder), takes
--steps training steps and reports its peak resident set size (over its whole life, the imports
included: Linux's VmHWM, else ru_maxrss) and torch.cuda.max_memory_allocated / max_memory_reserved. `import_rss_mib`
is the child's peak after importing torch and the trainer, before any work: the fixed cost that
every method pays. Writes bench/results/memory.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from variants import VARIANTS, add_setting_options, method_names  # noqa: E402

DEFAULT_METHODS = "base,gda,gda-mps,pcr,mgr,mltp-fo"
MiB = 2 ** 20


def peak_rss_mib() -> float:
    """This process's peak resident set size. On Linux its VmHWM: ru_maxrss survives exec, so a child started
    from a large process (a test run) would report its parent's size as its own peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # KiB
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / MiB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def child(a) -> dict:
    """Runs in the child process: one method, its peaks on stdout as one JSON line."""
    import torch

    from mgr.data import DataConfig
    from mgr.trainer import TrainConfig
    from mgr.trainer.state import build
    from mgr.trainer.steps import train_step
    import_rss = peak_rss_mib()
    if a.threads:
        torch.set_num_threads(a.threads)
    s = build(TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio), model=a.model, batch_size=a.batch_size,
                          device=a.device, compile=a.compile, steps=10 ** 6, **VARIANTS[a.child]))
    for _ in range(a.steps):
        train_step(s)
    out = {"method": a.child, "procedure": s.cfg.procedure, "device": str(s.device),
           "import_rss_mib": round(import_rss, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(s.device) / MiB, 1)
        out["cuda_max_reserved_mib"] = round(torch.cuda.max_memory_reserved(s.device) / MiB, 1)
        out["device_name"] = torch.cuda.get_device_name(s.device)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_options(p, methods=DEFAULT_METHODS)
    p.add_argument("--steps", type=int, default=10, help="training steps per method (the peak is reached in the first)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--quick", action="store_true", help="2 steps, base and mgr, for the test suite")
    p.add_argument("--out", default="bench/results/memory.json")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure this one method and print JSON
    a = p.parse_args(argv)
    names = method_names(p, a.child or a.methods)
    if a.child:
        print(json.dumps(child(a)), flush=True)
        return None
    if a.quick:
        a.steps = 2
        names = names if a.methods != DEFAULT_METHODS else ["base", "mgr"]
    from records import stamp, write_json
    common = ["--dataset", a.dataset, "--ratio", str(a.ratio), "--model", a.model, "--batch-size", str(a.batch_size),
              "--steps", str(a.steps), "--device", a.device] + (["--compile"] if a.compile else []) + (
              ["--threads", str(a.threads)] if a.threads else [])
    rows = []
    for name in names:
        r = subprocess.run([sys.executable, __file__, "--child", name, *common], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"the child measuring {name!r} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        cuda = f"   CUDA peak {rows[-1]['cuda_max_allocated_mib']:8.1f} MiB" if "cuda_max_allocated_mib" in rows[-1] else ""
        print(f"{name:14s} peak RSS {rows[-1]['peak_rss_mib']:8.1f} MiB (after imports {rows[-1]['import_rss_mib']:.1f}){cuda}",
              flush=True)
    result = {**stamp("memory.py", argv), "device": rows[0]["device"], "device_name": rows[0].get("device_name", "cpu"),
              "dataset": a.dataset, "ratio": a.ratio, "model": a.model, "batch_size": a.batch_size, "steps": a.steps,
              "compile": a.compile, "results": rows}
    if not a.quick or a.out != p.get_default("out"):  # --quick writes only where it is told to
        write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
