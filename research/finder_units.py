"""Does the finder still depend on z? Its hidden units and the z-dependent part of its shift
(docs/method.md#a-finder-that-adds-one-vector).

    python research/finder_units.py 'runs/*-mgr-*'                                    # finished runs' last.pt
    python research/finder_units.py --trace --dataset fashion-mnist --ratio 0.01 --steps 100 --threads 1
    python research/finder_units.py --trace --steps 100 --set finder_lr=1e-3 --threads 1

For each finder: the share of each hidden layer's units that fire for at least one of 2 000 fixed
latents z ~ N(0, I) (a unit that fires for none gets no gradient and stays silent), the mean shift
‖F(z) − z‖ and its part that depends on z, mean ‖(F(z) − z) − mean_z (F(z) − z)‖ (the trainer's
`shift_spread`). `--trace` trains a run in this process (the trainer's own train_step) and measures its
finder after each of the first 6 steps and every --every steps after. Appends records to
research/results/finder_units.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr.data import DataConfig  # noqa: E402
from mgr.finder import Finder  # noqa: E402
from mgr.trainer import TrainConfig  # noqa: E402
from mgr.trainer.config import BEFORE_FIELD  # noqa: E402
from mgr.trainer.state import build  # noqa: E402
from mgr.trainer.steps import finder_logs, train_step  # noqa: E402

from bench.records import append_record, stamp  # noqa: E402
from bench.variants import parse_overrides  # noqa: E402

PROBES = 2000


def measure(finder: Finder) -> dict:
    """Units that fire (pre-activation > 0) per hidden layer, mean shift and its z-dependent part, on fixed
    latents. A SiLU unit that fires for none still passes a little gradient; a ReLU unit passes none."""
    z_dim = finder.net[-1].out_features if finder.kind != "linear" else finder.net.out_features
    z = torch.randn(PROBES, z_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        alive, h = [], z
        if finder.kind != "linear":
            for layer in finder.net[:-1]:
                h = layer(h)
                if isinstance(layer, torch.nn.Linear):  # a hidden pre-activation: > 0 is where the unit fires
                    alive.append(round(float((h > 0).any(0).float().mean()), 4))
        logged = finder_logs(z, finder(z))  # the trainer's own latent_shift and shift_spread
    return {"finder": finder.kind, "units_alive": alive, "shift": round(float(logged["latent_shift"]), 4),
            "spread": round(float(logged["shift_spread"]), 4)}


def of_run(path: Path) -> dict | None:
    cfg = {**BEFORE_FIELD, **json.loads((path / "config.json").read_text())}  # older runs: what they ran
    if not (path / "last.pt").exists():
        return None
    state = torch.load(path / "last.pt", map_location="cpu", weights_only=True).get("finder")
    if not state:
        return None
    z_dim = state["net.4.bias" if "net.4.bias" in state else "net.bias"].shape[0]
    finder = Finder(z_dim, cfg.get("finder", "residual"), activation=cfg["finder_activation"])
    finder.load_state_dict(state)
    return {"run": path.name, "dataset": cfg["data"]["dataset"], "ratio": cfg["data"].get("ratio"),
            "finder_lr": cfg.get("finder_lr"), "finder_activation": cfg["finder_activation"], "steps": cfg.get("steps"),
            "seed": cfg.get("seed"), **measure(finder)}


def trace(a, p) -> list[dict]:
    cfg = TrainConfig(data=DataConfig(a.dataset, ratio=a.ratio), method="mgr", steps=a.steps, seed=a.seed,
                      device="cpu", **parse_overrides(p, a.set))
    s = build(cfg)
    out = [{"step": 0, **measure(s.finder)}]
    while s.step < (a.until or cfg.steps):
        train_step(s)
        s.step += 1
        if s.step % cfg.log_every == 0:
            s.flush()  # the trainer's own logging (and its finder guard)
        if s.step <= 6 or s.step % a.every == 0:
            out.append({"step": s.step, **measure(s.finder)})
            print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories or globs")
    p.add_argument("--trace", action="store_true", help="train one run here and measure its finder as it goes")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--ratio", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--until", type=int, help="stop the trace at this step (the schedule stays that of --steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], help="training options FIELD=VALUE (e.g. finder_lr=1e-3)")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", default="research/results/finder_units.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.trace:
        rec = {**stamp("research/finder_units.py", sys.argv[1:] if argv is None else argv), "dataset": a.dataset,
               "ratio": a.ratio, "seed": a.seed, "train_set": a.set, "trace": trace(a, p)}
        append_record(Path(a.out), rec)
        return
    paths = [Path(q) for pattern in a.runs for q in sorted(glob.glob(pattern))]
    if not paths:
        raise SystemExit("no run directories matched (give run directories or globs, or --trace)")
    rows = [r for r in map(of_run, paths) if r is not None]
    for r in rows:
        print(json.dumps(r), flush=True)
    append_record(Path(a.out), {**stamp("research/finder_units.py", sys.argv[1:] if argv is None else argv), "runs": rows})


if __name__ == "__main__":
    main()
