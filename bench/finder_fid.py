"""Claim (7): do the finder's samples have a lower FID than uniform ones?

    python bench/finder_fid.py RUN_DIR [RUN_DIR ...]        # or globs: 'runs/*-mgr-*'
    python bench/finder_fid.py /work/bench/runs/* --num 5000
    python bench/finder_fid.py --quick                      # a 4-step digits mgr run, 200 samples

For each finished run with a finder (mgr, gda-mps), loads its generator and its finder from the
run's last checkpoint (last.pt: best.pt holds the classifier only; the finder is the one at the end
of training), draws `num` class-balanced samples G(z, y) and `num` samples G(F(z), y) with the same
z and y, and computes the FID of each against the test split with the extractor mgr/fid.py uses
for generators (clean-fid's Inception when its weights are on disk, else the shipped SmallCNN
extractor; named in every record). This is mgr.analysis.finder_fid.fid_uniform_vs_finder, the Latents page's
computation (and its cache in <run>/analysis/). Runs without a finder (gda, pcr) get the uniform
FID only. Writes bench/results/finder_fid.json: records of other runs already there are kept.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import stamp, write_json  # noqa: E402

from mgr.analysis.finder_fid import fid_uniform_vs_finder  # noqa: E402
from mgr.runstore import Run  # noqa: E402


def quick_run(runs_dir: str) -> Path:
    """A few-step digits mgr run: the smallest real run that has a trained finder."""
    from mgr.data import DataConfig
    from mgr.trainer import TrainConfig, train
    cfg = TrainConfig(data=DataConfig("digits", ratio=0.1), method="mgr", steps=4, eval_every=2, batch_size=32,
                      probes_per_class=1, probe_real=20, device="cpu")
    return train(cfg, runs_dir, "finder-fid-quick", quiet=True).path


def check(path: Path) -> Run:
    """A finished run with a generator and a last.pt, or a clear error before any FID is computed."""
    run = Run(path)
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path}: not a run directory (no config.json)")
    cfg = run.config
    if cfg.get("method") == "base":
        raise SystemExit(f"{path}: method base uses no generator; give runs of mgr, gda-mps (or gda, pcr)")
    state = run.status().get("state")
    if state != "finished":
        raise SystemExit(f"{path}: the run is {state or 'in an unknown state'}, not finished; its finder is not final")
    if not (path / "last.pt").is_file():
        raise SystemExit(f"{path}: has no last.pt, which holds the finder")
    return run


def measure(run: Run, num: int, extractor: str, where: dict) -> dict:
    cfg = run.config
    r = fid_uniform_vs_finder(run, num, extractor)
    fin = f"{r['finder']:8.3f}" if r["finder"] is not None else "     n/a"
    print(f"{run.id}: FID uniform {r['uniform']:8.3f}  finder {fin}  (n={r['num']}, {r['extractor']})", flush=True)
    return {"run": str(run.path), "dataset": cfg["data"]["dataset"], "ratio": cfg["data"].get("ratio"),
            "method": cfg["method"], "order": cfg.get("order", "second"),  # a run without the field: exact
            "finder": cfg.get("finder"), "seed": cfg.get("seed"),
            "co_learner": bool(cfg.get("co_learner")), "procedure": cfg.get("procedure", "standard"),
            "finder_lr": cfg.get("finder_lr"), "lam_kl": cfg.get("lam_kl"),
            "steps": cfg.get("steps"), "checkpoint_step": r["step"], "n": r["num"], "n_real": r["n_real"],
            "reference": r["reference"], "fid_uniform": r["uniform"], "fid_finder": r["finder"],
            "extractor": r["extractor"], "cached": r["cached"], **where}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories or glob patterns")
    p.add_argument("--num", type=int, default=2000, help="samples per kind (uniform, finder)")
    p.add_argument("--extractor", default="auto", choices=("auto", "inception", "classifier"))
    p.add_argument("--quick", action="store_true", help="a 4-step digits run made here, 200 samples")
    p.add_argument("--out", default="bench/results/finder_fid.json")
    a = p.parse_args(argv)
    paths = sorted({Path(m) for pattern in a.runs for m in (glob.glob(pattern) or [pattern])})
    if not paths and not a.quick:
        p.error("give run directories (or glob patterns) of finished mgr or gda-mps runs, or --quick")
    if a.quick:
        a.num = min(a.num, 200)
    if a.num < 2:
        p.error(f"--num {a.num}: FID needs at least 2 samples per kind")
    with tempfile.TemporaryDirectory(prefix="mgr-finder-fid-") as tmp:
        runs = [check(path) for path in paths or [quick_run(tmp)]]  # every input checked before the first FID
        records = [measure(run, a.num, a.extractor, stamp("finder_fid.py", argv)) for run in runs]
    if not a.quick or a.out != p.get_default("out"):  # --quick writes only where it is told to
        out = Path(a.out)
        old = json.loads(out.read_text()) if out.exists() else []
        key = lambda r: (r["run"], r["n"], r["extractor"])  # noqa: E731
        new = {key(r) for r in records}
        write_json(out, [r for r in old if key(r) not in new] + records)
    return records


if __name__ == "__main__":
    main()
