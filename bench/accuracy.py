"""Test accuracy of each method over seeds, at one setting (default: the app's digits preset).

    python bench/accuracy.py                                   # digits 10%, SmallCNN, 500 steps, 3 seeds
    python bench/accuracy.py --dataset fashion-mnist --ratio 0.01 --steps 2000
    python bench/accuracy.py --methods base,mltp-fo,mltp-full,mgr,mgr-co --threads 1
    python bench/accuracy.py --quick                           # smoke test
    python bench/accuracy.py --ray --ray-cpus 8                # each run a Ray task on a local cluster
    python bench/accuracy.py --ray HOST:6379                   # ... on an existing cluster

Reports, per method, the test accuracy at the best validation step (model selection on val)
and at the last step, as mean ± std over seeds. Appends records to bench/results/accuracy.json
(one per run: dataset, ratio, model, method, variant, procedure, co_learner, seed, steps, batch_size,
val_acc, test_acc, ... and the command, machine and date that produced it). bench/report.py turns
them into docs/RESULTS.md.

With --ray every run is a Ray task (one CPU, or one GPU with --ray-gpus; docs/scale.md): the driver
writes each record as its task finishes, with the same locked update as without Ray, and a task that
fails is printed with its error and recorded in <out>.failures.json instead of stopping the grid.
On an existing cluster every node needs this checkout at the same path.
"""
from __future__ import annotations

import argparse
import os
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

from records import append_record, stamp, update_records  # noqa: E402
from variants import VARIANTS, add_setting_options, method_names, parse_overrides  # noqa: E402


REPO = Path(__file__).resolve().parent.parent


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
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each run as a Ray task: on a new local cluster, or on the cluster at ADDRESS")
    p.add_argument("--ray-cpus", type=int, help="CPUs of the local cluster (default: all)")
    p.add_argument("--ray-gpus", type=float, default=0, help="GPUs each task asks for (e.g. 1, or 0.5 to share)")
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
    setting = {"dataset": a.dataset, "ratio": a.ratio, "model": a.model, "steps": a.steps, "batch_size": a.batch_size}
    writes = not a.quick or a.out != p.get_default("out")  # --quick writes only where it is told to

    def done(record):
        records.append(record)
        if writes:
            append_record(Path(a.out), record)
        print(f"{record['variant']:12s} seed {record['seed']}: val {record['val_acc']:.3f} test@best-val "
              f"{record['test_acc']:.4f} final test {record['final_test_acc']:.4f} ({record['seconds']} s)", flush=True)

    failures = []
    if a.ray:
        failures = run_on_ray(a, grid, suffix, runs_dir, {**setting, **where}, done)
        if failures and writes:
            failed = Path(a.out).with_suffix(".failures.json")
            update_records(failed, lambda old: old + failures)
            print(f"{len(failures)} run(s) failed; recorded in {failed}", flush=True)
    else:
        for seed, name, cfg in grid:
            done(run_one(seed, name + suffix, cfg, runs_dir, {**setting, **where}))
    print("\n| method | test acc @ best val | final test acc | n |\n|---|---|---|---|")
    for name in names:
        rs = [r for r in records if r["variant"] == name + suffix]
        if not rs:
            print(f"| {name + suffix} | failed | failed | 0 |")
            continue
        (m1, s1), (m2, s2) = mean_std([r["test_acc"] for r in rs]), mean_std([r["final_test_acc"] for r in rs])
        print(f"| {name + suffix} | {100 * m1:.2f} ± {100 * s1:.2f} | {100 * m2:.2f} ± {100 * s2:.2f} | {len(rs)} |")
    if failures:
        print("\nfailed:\n" + "\n".join(f"  {f['variant']} seed {f['seed']}: {f['error']}" for f in failures))
    return records + failures if failures else records


def run_one(seed: int, variant: str, cfg: TrainConfig, runs_dir: str, info: dict, threads: int = 0) -> dict:
    """Train one configuration and return its record (in this process, or in a Ray worker)."""
    if threads:
        torch.set_num_threads(threads)
    t = time.time()
    run = train(cfg, runs_dir, quiet=True)
    rows = run.metrics()
    best = max(rows, key=lambda r: (r["val_acc"], -r["step"]))  # earliest of the best
    return {"dataset": info["dataset"], "ratio": info["ratio"], "model": info["model"], "method": cfg.method,
            "variant": variant, "procedure": cfg.procedure,
            "mltp_variant": cfg.mltp_variant if cfg.procedure == "mltp" else None,
            "co_learner": cfg.co_learner, "finder": cfg.finder if cfg.uses_finder else None,
            "seed": seed, "steps": info["steps"], "batch_size": info["batch_size"], "best_step": best["step"],
            "val_acc": best["val_acc"], "test_acc": best["test_acc"], "final_test_acc": rows[-1]["test_acc"],
            "seconds": round(time.time() - t, 1), "run": str(run.path),
            "device": str(run.status().get("device", cfg.device)),
            **{k: v for k, v in info.items() if k not in ("dataset", "ratio", "model", "steps", "batch_size")}}


def run_on_ray(a, grid, suffix: str, runs_dir: str, info: dict, done) -> list[dict]:
    """Every run of the grid as a Ray task; done(record) as each finishes. Returns the failed runs, each
    with its error: a failure is reported and recorded, never lost, and the others go on."""
    import ray
    # the workers import mgr and this file by name: the checkout's path is their PYTHONPATH
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")]), "MGR_THREADS": "1"}}
    started = not ray.is_initialized()
    if a.ray == "local":
        ray.init(num_cpus=a.ray_cpus, include_dashboard=False, runtime_env=env, log_to_driver=False)
    else:
        ray.init(address=a.ray, runtime_env=env, log_to_driver=False)
    try:
        # by value, whatever name this file was imported under (python bench/accuracy.py: __main__)
        ray.cloudpickle.register_pickle_by_value(sys.modules[run_one.__module__])
        task = ray.remote(num_cpus=1, num_gpus=a.ray_gpus, max_retries=0)(run_one)
        pending = {task.remote(seed, name + suffix, cfg, runs_dir, info, a.threads or 1): (seed, name + suffix, cfg)
                   for seed, name, cfg in grid}
        failures = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            seed, variant, cfg = pending.pop(ready[0])
            try:
                done(ray.get(ready[0]))
            except Exception as e:  # noqa: BLE001 (a RayTaskError wrapping the run's own error, or a lost worker)
                error = f"{type(getattr(e, 'cause', None) or e).__name__}: {getattr(e, 'cause', None) or e}"
                print(f"{variant:12s} seed {seed}: FAILED: {error}", flush=True)
                failures.append({**{k: info[k] for k in ("dataset", "ratio", "model", "steps", "batch_size")},
                                 "method": cfg.method, "variant": variant, "seed": seed, "failed": True,
                                 "error": error, **{k: v for k, v in info.items() if k in ("command", "machine", "date")}})
        return failures
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(1 if any(r.get("failed") for r in main()) else 0)
