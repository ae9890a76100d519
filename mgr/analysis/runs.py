"""Runs as the pages list and group them: each run's summary (state, best and last accuracy), the
configuration it belongs to (everything that defines a run but its seed) with a readable name, and
the mean ± std over the seeds of each configuration (Compare's table)."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import VAL_FRACTION
from ..runstore import Run, default_runs_dir, list_runs

# Fields that do not change what is trained: runs differing only in these are seeds of one configuration.
NOT_CONFIG = ("seed", "device", "compile", "eval_every", "log_every", "probes_per_class", "probe_real",
              "train_acc_images", "keep_weights")
NOT_CONFIG_DATA = ("root", "download")
# data fields that are part of the configuration only where they differ from these values (their default,
# which runs made before the field existed also had): val_fraction, as a generator's split records it
DATA_DEFAULT_OMITTED = {"val_fraction": VAL_FRACTION}


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING and not dataclasses.is_dataclass(f.type):
            out[f.name] = f.default_factory()
    return out


def resolved_config(raw: dict) -> dict:
    """A run's config.json with every field a run made by an older version lacks filled in: the
    TrainConfig as the trainer resolves it (lr, warm-up, α, T), or, where config.json does not
    validate any more, its own values over the dataclasses' defaults. Never raises KeyError."""
    from ..data import DataConfig
    from ..trainer import TrainConfig
    from ..trainer.config import BEFORE_FIELD
    try:
        return TrainConfig.from_dict({"data": {}, "method": TrainConfig.method, "model": TrainConfig.model,
                                      "steps": TrainConfig.steps, **raw}).to_dict()
    except (ValueError, TypeError, KeyError, AttributeError):
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        return {**_defaults(TrainConfig), **BEFORE_FIELD, **raw, "data": {**_defaults(DataConfig), **data}}


def config_name(cfg: dict) -> str:
    """A configuration's short name: method, MLTP variant, co-learner; e.g. "mgr + co", "base · mltp-fo",
    "pcr"; "(finite difference)" after the method of a run made with the removed hypergradient mode."""
    name = str(cfg.get("method", "?"))
    if cfg.get("method") in ("gda-mps", "mgr") and cfg.get("order") == "first":
        name += " (finite difference)"
    if cfg.get("procedure") == "mltp":
        name += f" · mltp-{cfg.get('mltp_variant', '?')}"
    if cfg.get("co_learner"):
        name += " + co" + ("" if cfg.get("co_learner_arch", "conv") == "conv" else f"-{cfg['co_learner_arch']}")
    return name


def _applies(name: str, cfg: dict) -> bool:
    """Whether a field changes what this run trains (λ_KL does nothing without a finder, α without MLTP)."""
    method = cfg.get("method")
    if name == "finder_activation":  # the linear finder has no hidden units
        return method in ("gda-mps", "mgr") and cfg.get("finder") != "linear"
    if name in ("lam_kl", "lam_kl_schedule", "finder", "finder_lr", "finder_lr_schedule", "meta_every",
                "meta_val", "meta_precision"):
        return method in ("gda-mps", "mgr")
    if name in ("order", "fd_eps"):  # removed fields: only a run of the removed finite-difference mode differs
        return method in ("gda-mps", "mgr") and cfg.get("order") == "first"
    if name in ("lam", "generator", "pcr_aug"):
        return method != "base" and (name != "pcr_aug" or method in ("pcr", "mgr"))
    if name.startswith("mltp_"):
        return cfg.get("procedure") == "mltp"
    if name.startswith("co_learner_"):
        return bool(cfg.get("co_learner"))
    return True


def config_items(cfg: dict) -> tuple:
    """Everything that defines what a run trains, except its seed: (name, value) pairs, hashable.
    Fields that do not apply to the run (λ_KL of a base run, α of a standard one) are left out."""
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    items = [(f"data.{k}", v) for k, v in sorted(data.items())
             if k not in NOT_CONFIG_DATA and not (k in DATA_DEFAULT_OMITTED and v == DATA_DEFAULT_OMITTED[k])]
    items += [(k, v) for k, v in sorted(cfg.items()) if k != "data" and k not in NOT_CONFIG and _applies(k, cfg)]
    return tuple((k, json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v) for k, v in items)


# what the short name already says, or what a label needs no more of
_NAMED = {"method", "order", "procedure", "mltp_variant", "co_learner", "co_learner_arch"}


def group_labels(keys: list[tuple]) -> dict[tuple, str]:
    """Readable names for configuration keys shown together: the short name, then dataset and size,
    then every other field whose value differs between the groups, e.g. "mgr + co · digits 0.1 · lam=0.5"."""
    dicts = [dict(k) for k in keys]
    varying = [f for f in dict.fromkeys(f for d in dicts for f in d)  # among the groups where the field applies
               if f not in _NAMED and f not in ("data.dataset", "data.ratio")
               and len({json.dumps(d[f], sort_keys=True, default=str) for d in dicts if f in d}) > 1]
    out = {}
    for key, d in zip(keys, dicts):
        cfg = {k: v for k, v in d.items() if not k.startswith("data.")}
        ratio = d.get("data.ratio")
        size = f" {ratio:g}" if isinstance(ratio, (int, float)) else (f" {d['data.per_class']}/class" if d.get("data.per_class") else "")
        extra = "".join(f" · {f.removeprefix('data.')}={d[f]}" for f in varying if f in d)
        out[key] = f"{config_name(cfg)} · {d.get('data.dataset', '?')}{size}{extra}"
    return out


@dataclass
class RunSummary:
    id: str
    path: Path
    state: str  # running, finished, failed, stopped, killed (running, trainer gone), unknown (unreadable)
    dataset: str = "?"
    ratio: float | None = None
    method: str = "?"
    model: str = "?"
    seed: int | None = None
    step: int = 0
    total_steps: int = 0
    best_val_acc: float | None = None
    best_step: int | None = None
    test_at_best: float | None = None  # test accuracy at the best validation step (model selection)
    test_last: float | None = None  # test accuracy at the last evaluation (no selection: stable over seeds)
    error: str | None = None
    batch_size: int = 0
    images_per_step: int = 0  # real images a step consumes: the batch, twice it under MLTP (ETA, throughput)
    status: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # resolved: every TrainConfig field, defaults where config.json lacks one

    @property
    def name(self) -> str:
        return config_name(self.config) if self.config else self.method

    @property
    def label(self) -> str:
        return f"{self.name} · {self.dataset} {self.ratio:g} · seed {self.seed}" if self.ratio else self.id

    @property
    def leaky(self) -> bool:
        """Trained with --leaky-generator: its generator saw images this run must not (another split), so its
        accuracy is inflated and not comparable with runs whose generator saw only their own split."""
        return self.config.get("leaky_generator") is True

    @property
    def config_key(self) -> tuple:
        """Runs that differ only in their training seed (and how they were logged) share this key."""
        return config_items(self.config) if self.config else (("method", self.method),)


def summarize(run: Run) -> RunSummary:
    try:
        return _summarize(run)
    except (OSError, ValueError) as e:
        return RunSummary(run.id, run.path, "unknown", error=f"config.json unreadable: {e}")
    except (KeyError, TypeError, AttributeError) as e:
        return RunSummary(run.id, run.path, "unknown", error=f"run files are malformed ({type(e).__name__}: {e})")


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _images_per_step(cfg: dict) -> int:
    """TrainConfig.images_per_step of a resolved config; for one that does not validate any more,
    the same rule by hand (MLTP draws two batches a step)."""
    from ..trainer import TrainConfig
    try:
        return TrainConfig.from_dict(cfg).images_per_step
    except (ValueError, TypeError, KeyError, AttributeError):
        return (cfg.get("batch_size") or 0) * (2 if cfg.get("procedure") == "mltp" else 1)


def _summarize(run: Run) -> RunSummary:
    cfg = resolved_config(run.config)
    st = run.status()
    rows = [r for r in run.metrics() if _num(r.get("val_acc")) is not None]
    data = cfg["data"]
    s = RunSummary(run.id, run.path, run.state(st), dataset=str(data.get("dataset")),
                   ratio=data.get("ratio") or (1.0 if data.get("per_class") is None else None),
                   method=str(cfg.get("method")), model=str(cfg.get("model")),
                   seed=cfg.get("seed"), step=rows[-1]["step"] if rows else st.get("step", 0),
                   total_steps=cfg.get("steps") or 0, error=st.get("error"), batch_size=cfg.get("batch_size") or 0,
                   images_per_step=_images_per_step(cfg), status=st, config=cfg)
    if s.state == "killed":
        s.error = (f"the trainer (pid {st.get('pid')}) is gone without finishing (killed, or the machine restarted) "
                   f"at step {st.get('step', s.step)}; Resume continues it from its last checkpoint")
    if cfg.get("order") == "first" and s.state in ("stopped", "failed", "killed"):  # it cannot be resumed
        from ..trainer.config import FINITE_DIFFERENCE_REMOVED
        s.error = FINITE_DIFFERENCE_REMOVED
    if rows:
        best = max(rows, key=lambda r: (r["val_acc"], -r["step"]))  # the earliest of the best
        s.best_val_acc, s.best_step, s.test_at_best = best["val_acc"], best["step"], _num(best.get("test_acc"))
        s.test_last = _num(rows[-1].get("test_acc"))
    return s


def _outside(root: Path, run: Run) -> bool:
    """A run directory that links to somewhere outside the (resolved) runs folder: listed, never read."""
    return not run.path.resolve().is_relative_to(root)


def runs_overview(runs_dir=None) -> list[RunSummary]:
    """Every run in runs_dir, summarised. A run directory that is a link to somewhere outside runs_dir
    is listed as `unknown` and never read: what the app shows comes from the runs folder only."""
    root = (Path(runs_dir) if runs_dir else default_runs_dir()).resolve()
    out = []
    for r in list_runs(root):
        if _outside(root, r):
            out.append(RunSummary(r.id, r.path, "unknown", error=f"{r.path} links to {r.path.resolve()}, outside the "
                                  f"runs directory {root}; the app reads runs only inside it (move or copy the run there)"))
        else:
            out.append(summarize(r))
    return out


def runs_states(runs_dir=None) -> tuple:
    """Each run's id, state and held flag, read from status.json alone (no config, no metrics): it changes when a
    run appears, starts, ends, dies or is held, and not at its steps. A page polls this cheaply and redraws its
    live parts only when it changes. A run linking outside the runs folder is `unknown` and never read, as in
    runs_overview."""
    root = (Path(runs_dir) if runs_dir else default_runs_dir()).resolve()
    out = []
    for r in list_runs(root):
        if _outside(root, r):
            out.append((r.id, "unknown", False))
            continue
        st = r.status()  # never raises: an unreadable status.json reads as state `unknown`
        out.append((r.id, r.state(st), bool(st.get("paused"))))
    return tuple(out)


def seed_table(summaries: list[RunSummary]) -> list[dict]:
    """Mean ± std of test accuracy (at best val, and at the last step) over the seeds of each configuration
    (everything that defines a run but its seed: `RunSummary.config_key`), in first-seen order, each
    row named readably (`group_labels`), listing its runs and the size of its validation split."""
    groups: dict[tuple, list[RunSummary]] = {}
    for s in summaries:
        if s.test_at_best is not None:
            groups.setdefault(s.config_key, []).append(s)
    labels = group_labels(list(groups))
    table = []
    for key, runs in groups.items():
        best = [r.test_at_best for r in runs]
        last = [r.test_last for r in runs if r.test_last is not None]
        first = runs[0]
        table.append({"config": labels[key], "name": first.name, "dataset": first.dataset, "ratio": first.ratio,
                      "method": first.method, "model": first.model,
                      "procedure": first.config.get("procedure", "standard"),
                      "mltp_variant": first.config.get("mltp_variant") if first.config.get("procedure") == "mltp" else None,
                      "co_learner": bool(first.config.get("co_learner")), "seeds": len(runs),
                      "seed_list": [r.seed for r in runs], "runs": [r.id for r in runs], "key": key,
                      "test_at_best_mean": float(np.mean(best)),
                      "test_at_best_std": float(np.std(best, ddof=1)) if len(best) > 1 else 0.0,
                      "test_last_mean": float(np.mean(last)) if last else math.nan,
                      "test_last_std": float(np.std(last, ddof=1)) if len(last) > 1 else 0.0,
                      "val_size": validation_size(first.config.get("data") or {})})
    return table


# ----------------------------------------------------------------------------- which accuracy leads

# a validation split below this many images picks its "best" step largely by chance: on digits 10% (10 validation
# images, 8 seeds, 200 steps) test accuracy at the best validation step varied ±6.7 points between seeds, at the
# last step ±0.9 (pages/_text.lead_reason)
TINY_VAL = 100


@functools.lru_cache(maxsize=64)
def _validation_size(data_json: str) -> int | None:
    from ..data import DataConfig, DataError, load
    data = json.loads(data_json)
    names = {f.name for f in dataclasses.fields(DataConfig)}
    try:
        cfg = DataConfig(**{k: v for k, v in data.items() if k in names and k != "download"}, download=False)
        return len(load(cfg).y_val)
    except (DataError, OSError, ValueError, TypeError, RuntimeError):
        return None  # data not on this machine (never downloaded from here), or a config too old to say


def validation_size(data: dict) -> int | None:
    """Images in the validation split of a run's data config (its `data` dict); None where the data
    is not on this machine. Loaded once per split and process (a split is a function of the config)."""
    return _validation_size(json.dumps(data, sort_keys=True, default=str))


def lead_statistic(val_sizes: list[int | None]) -> dict:
    """Which test accuracy Compare leads with for runs with these validation split sizes: the last step's where
    any split is tiny (< TINY_VAL images: its best step is largely chance), else the one at the best validation
    step (model selection, as papers report it). pages/_text.lead_reason says why in words."""
    known = [n for n in val_sizes if n is not None]
    smallest = min(known) if known else None
    return {"lead": "test_last" if known and smallest < TINY_VAL else "test_at_best", "smallest_val": smallest}