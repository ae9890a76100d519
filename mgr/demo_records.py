"""bench/demos.py's records of the demos (bench/results/demos*.json): reading them, and whether a
record was made with today's arms. The catalogue and the statistics are mgr/demos.py's; the app's
sentences about a record are pages/_text.py's."""
from __future__ import annotations

import json
from pathlib import Path

from . import paired
from .demos import DEFAULT_DATA, DEMOS, SETTINGS, Demo, arm_values, data_overrides, describe
from .paths import REPO

MEASURED = REPO / "bench" / "results" / "demos.json"  # bench/demos.py writes it; the app shows it
# the same demos re-run with 10 seeds where 5 left a verdict that moved between CPUs (docs/demos.md); Home shows
# them under the 5-seed record, which is what a launch with the default seeds reproduces
MEASURED_10_SEEDS = REPO / "bench" / "results" / "demos_10seeds.json"


def measured(path: str | Path = MEASURED, data: str = DEFAULT_DATA) -> dict[str, dict]:
    """bench/demos.py's records on the demos' `data` setting, by demo id ({} when it has not been run)."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    want = SETTINGS.get(data, {}).get("data.dataset")
    return {r["demo"]: r for r in records if isinstance(r, dict) and r.get("demo") in DEMOS
            and r.get("dataset") == want} if isinstance(records, list) else {}


def comparable(config: dict) -> dict:
    """A config.json as far as it decides what the run measures: the project's one definition of "the
    same configuration" (mgr.analysis.runs.config_items, which Compare groups by: no seed, no logging
    fields, no fields of parts the run lacks, so a base run's finder_lr never makes its record stale)."""
    from .analysis.runs import config_items, resolved_config
    return dict(config_items(resolved_config(config)))


def arm_configs(demo: Demo, data: str = DEFAULT_DATA, overrides: dict | None = None) -> list[dict]:
    """The two arms' training configurations on `data` (defaults resolved, as config.json holds
    them), as `comparable` keeps them: what a bench record must have run to be this demo's measurement
    (bench/demos.py stores its runs' configs in the record as `arms`), so a changed default shows."""
    from .launch import build_config
    extra = {**data_overrides(data), **(overrides or {})} or None
    return [comparable(build_config(arm_values(demo, arm, 0, extra)).to_dict()) for arm in demo.arms]


def same_arms(recorded, current: list[dict]) -> bool:
    """Whether a record's arms are today's: equal, where a field the record lacks (added to the trainer
    after it was made) counts as equal when today's value is what runs had before the field existed:
    its BEFORE_FIELD value where the default has changed since (a ReLU finder), else its default (e.g.
    lam_kl_schedule "constant")."""
    from dataclasses import MISSING, fields

    from .trainer import TrainConfig
    from .trainer.config import BEFORE_FIELD
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING} | BEFORE_FIELD
    if not isinstance(recorded, list) or len(recorded) != len(current):
        return False
    return all(isinstance(r, dict) and set(r) <= set(c) and all(
        r[k] == v if k in r else (k in defaults and defaults[k] == v) for k, v in c.items())
        for r, c in zip(recorded, current))


def record_compare(record: dict) -> str:
    """How a bench record summarised its seeds (records made before the field compared differences)."""
    return record.get("compare", "difference")


def record_summary(record: dict) -> paired.Paired:
    """The paired summary a bench record stores (bench/demos.py)."""
    return paired.Paired(tuple(record["diffs"]), record["mean_diff"], tuple(record["ci95"]) if record.get("ci95")
                         else None, record["holds_in"], record["verdict"])


def record_pairs(record: dict) -> list[paired.Paired]:
    """Each pair's paired summary in a record (a two-arm demo's record has the one at its top level)."""
    per = record.get("per_pair")
    if not per:
        return [record_summary(record)]
    return [paired.Paired(tuple(p["diffs"]), p["mean_diff"], tuple(p["ci95"]) if p.get("ci95") else None,
                          p["holds_in"], p["verdict"]) for p in per]


def same_splits(demo: Demo, record: dict, data: str = DEFAULT_DATA) -> bool:
    """Whether a record's seeds trained on the splits today's demo gives them (seed k: data seed k mod 3 on
    Fashion-MNIST); a record that lacks the field was made when every seed used data seed 0."""
    extra = data_overrides(data) or None
    want = [arm_values(demo, demo.arms[0], k, extra).get("data.data_seed", 0) for k in range(record.get("seeds", 0))]
    return record.get("data_seeds", [0] * record.get("seeds", 0)) == want


def headline(demo: Demo, record: dict) -> str:
    """A record in one line: a two-arm demo's `describe`; for several pairs each pair's mean and verdict."""
    pairs = record_pairs(record)
    if len(pairs) == 1:
        return describe(demo, pairs[0])
    return "; ".join(f"{demo.pair_label(p)}: "
                     f"{s.mean:+.2f} {s.verdict}" if s.mean is not None else f"{demo.pair_label(p)}: no value"
                     for p, s in zip(demo.pairs, pairs))
