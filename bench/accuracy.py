"""Test accuracy of each method over seeds, at one setting (default: the app's digits preset).

    python bench/accuracy.py                                   # digits 10%, SmallCNN, 500 steps, 3 seeds
    python bench/accuracy.py --dataset fashion-mnist --ratio 0.01 --steps 2000
    python bench/accuracy.py --methods base,mltp-fo,mltp-full,mgr,mgr-co --threads 1
    python bench/accuracy.py --quick                           # smoke test

Reports, per method, the test accuracy at the best validation step (model selection on val)
and at the last step, as mean ± std over seeds. Appends records to bench/results/accuracy.json
(one per run: dataset, ratio, model, method, variant, procedure, co_learner, seed, steps, batch_size,
val_acc, test_acc, ... and the command, machine and date that produced it). bench/report.py turns
them into docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgr.data import DataConfig  # noqa: E402
from mgr.trainer import TrainConfig, train  # noqa: E402

from records import append_record, stamp  # noqa: E402
from variants import VARIANTS, add_setting_options, method_names, parse_overrides  # noqa: E402


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_options(p, methods="base,gda,pcr,mgr")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--runs-dir", help="keep the runs here (default: a temporary directory)")
    p.add_argument("--quick", action="store_true", help="6 steps, one seed, for the test suite")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a training option for every method, e.g. --set finder_lr=1e-3 (repeatable); "
                        "the variant is then named e.g. mgr[finder_lr=1e-3]")
    p.add_argument("--out", default="bench/results/accuracy.json")
    a = p.parse_args(argv)
    overrides = parse_overrides(p, a.set)
    suffix = "[" + ",".join(a.set) + "]" if a.set else ""
    if a.quick:
        a.steps, a.eval_every, a.seeds = 6, 3, "0"
    names = method_names(p, a.methods)
    if a.threads:
        torch.set_num_threads(a.threads)
    runs_dir = a.runs_dir or tempfile.mkdtemp(prefix="mgr-bench-")
    where = {**stamp("accuracy.py", argv), "threads": torch.get_num_threads(), "torch": torch.__version__}
    records = []
    grid = []  # every configuration is built (and so checked) before the first run starts
    for seed in map(int, a.seeds.split(",")):  # seed-major: a stopped grid has whole seeds
        for name in names:
            try:
                grid.append((seed, name, TrainConfig(
                    data=DataConfig(a.dataset, ratio=a.ratio), model=a.model, steps=a.steps, batch_size=a.batch_size,
                    eval_every=a.eval_every, seed=seed, device=a.device, probes_per_class=2, probe_real=100,
                    **{**VARIANTS[name], **overrides})))
            except (ValueError, TypeError) as e:
                p.error(f"{name}{suffix}: {e}")
    for seed, name, cfg in grid:
        t = time.time()
        run = train(cfg, runs_dir, quiet=True)
        rows = run.metrics()
        best = max(rows, key=lambda r: (r["val_acc"], -r["step"]))  # earliest of the best
        records.append({"dataset": a.dataset, "ratio": a.ratio, "model": a.model, "method": cfg.method,
                        "variant": name + suffix, "order": cfg.order, "procedure": cfg.procedure,
                        "mltp_variant": cfg.mltp_variant if cfg.procedure == "mltp" else None,
                        "co_learner": cfg.co_learner, "finder": cfg.finder if cfg.uses_finder else None,
                        "seed": seed, "steps": a.steps, "batch_size": a.batch_size, "best_step": best["step"], "val_acc": best["val_acc"],
                        "test_acc": best["test_acc"], "final_test_acc": rows[-1]["test_acc"],
                        "seconds": round(time.time() - t, 1), "run": str(run.path),
                        "device": str(run.status().get("device", a.device)), **where})
        if not a.quick or a.out != p.get_default("out"):  # --quick writes only where it is told to
            append_record(Path(a.out), records[-1])
        print(f"{name + suffix:12s} seed {seed}: val {best['val_acc']:.3f} test@best-val {best['test_acc']:.4f} "
              f"final test {rows[-1]['test_acc']:.4f} ({records[-1]['seconds']} s)", flush=True)
    print("\n| method | test acc @ best val | final test acc | n |\n|---|---|---|---|")
    for name in names:
        rs = [r for r in records if r["variant"] == name + suffix]
        (m1, s1), (m2, s2) = mean_std([r["test_acc"] for r in rs]), mean_std([r["final_test_acc"] for r in rs])
        print(f"| {name + suffix} | {100 * m1:.2f} ± {100 * s1:.2f} | {100 * m2:.2f} ± {100 * s2:.2f} | {len(rs)} |")
    return records


if __name__ == "__main__":
    main()
