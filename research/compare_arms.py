"""One arm of a demo under two settings, paired by seed: e.g. mgr with a SiLU finder against mgr with the
default one, from two `bench/demos.py` records of the same demo (the second run with --set ...).

    python bench/demos.py --demos finder-helps-pcr --seeds 10 --out bench/results/demos_10seeds.json
    python bench/demos.py --demos finder-helps-pcr --seeds 10 --set finder_activation=silu \\
        --set finder_lr=0.001 --out research/results/finder_silu.json
    python research/compare_arms.py research/results/finder_silu.json bench/results/demos_10seeds.json \\
        --demo finder-helps-pcr --label silu-1e-3

Arm `--arm` (0: the demo's first arm, mgr in finder-helps-pcr) of record A minus the same arm of record B,
seed by seed, with the 95% interval and verdict of mgr.paired. The pairing is checked, not assumed: both
records must hold the same seeds, and the other arm (pcr there, which no finder option touches) must have
the same value in both, seed for seed; otherwise the two runs did not share data, initialisation and
batches, and the script refuses. Appends one record to research/results/compare_arms.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr import paired  # noqa: E402

from bench.records import append_record, stamp  # noqa: E402


def find(path: Path, demo: str, dataset: str) -> dict:
    records = json.loads(path.read_text())
    for r in records:
        if r.get("demo") == demo and r.get("dataset") == dataset:
            return r
    raise SystemExit(f"{path}: no record of demo {demo!r} on {dataset!r} "
                     f"(it holds {sorted({(r.get('demo'), r.get('dataset')) for r in records})})")


def compare(a: dict, b: dict, arm: int) -> dict:
    """Arm `arm` of a minus that of b per seed; refuses records that are not paired."""
    if a["seeds"] != b["seeds"] or len(a["values"]) != len(b["values"]):
        raise SystemExit(f"the records ran other seeds ({a['seeds']} against {b['seeds']}): not paired")
    other = 1 - arm
    unequal = [k for k, (va, vb) in enumerate(zip(a["values"], b["values"])) if va[other] != vb[other]]
    if unequal:
        raise SystemExit(f"arm {other} ({a['methods'][other]}) differs between the records at seeds {unequal}: "
                         "they did not share data, initialisation and batches")
    s = paired.summarize([va[arm] - vb[arm] for va, vb in zip(a["values"], b["values"])])
    return {"arm": a["methods"][arm], "seeds": a["seeds"], "diffs": [round(d, 4) for d in s.diffs],
            "mean_diff": s.mean, "ci95": list(s.ci95) if s.ci95 else None, "positive_in": s.holds_in,
            "verdict": s.verdict, "a_values": [v[arm] for v in a["values"]], "b_values": [v[arm] for v in b["values"]]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="records of the changed setting (bench/demos.py --out)")
    p.add_argument("b", type=Path, help="records of the setting it is compared with")
    p.add_argument("--demo", default="finder-helps-pcr")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--arm", type=int, choices=(0, 1), default=0, help="which arm of the demo is compared")
    p.add_argument("--label", default="", help="a name for the comparison in the record")
    p.add_argument("--out", default="research/results/compare_arms.json")
    a = p.parse_args(argv)
    ra, rb = find(a.a, a.demo, a.dataset), find(a.b, a.demo, a.dataset)
    rec = {**stamp("research/compare_arms.py", argv), "label": a.label, "demo": a.demo, "dataset": a.dataset,
           "statistic": ra["statistic"], "a": {"file": str(a.a), "command": ra["command"]},
           "b": {"file": str(a.b), "command": rb["command"]}, **compare(ra, rb, a.arm)}
    interval = f"95% interval {rec['ci95'][0]:+.2f} to {rec['ci95'][1]:+.2f}" if rec["ci95"] else "one seed: no interval"
    print(f"{a.label or a.a.name}: {rec['arm']} A − B = {rec['mean_diff']:+.2f} ({interval}), positive in "
          f"{rec['positive_in']} of {len(rec['diffs'])} seeds → {rec['verdict']}")
    append_record(Path(a.out), rec)
    return rec


if __name__ == "__main__":
    main()
