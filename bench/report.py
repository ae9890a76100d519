"""bench/results/*.json -> docs/RESULTS.md and its figures (docs/results/*.png), docs/findings.md (what the
records say today, with the commands that reproduce them) and the findings table of README.md (between
its `<!-- findings:start -->` and `<!-- findings:end -->` markers). Never edit these by hand: rerun

    python bench/report.py
    python bench/report.py --accuracy bench/results/accuracy.json bench/results/accuracy_mltp.json
    python bench/report.py --results-dir /tmp/r --out /tmp/r/RESULTS.md --quick   # smoke test

Reads, whichever exist: accuracy.json (or the --accuracy files), speed.json and speed_*.json (one
table each, e.g. speed_cuda.json), memory.json and memory_*.json, app_speed.json, finder_fid.json,
claims.json and demos*.json; and research/results/meta_cost.json (--research-dir) for the step cost.
Every claim of the papers is judged by code from these records, with a stated criterion
(`beats`); a claim whose records are absent is "not measured".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESEARCH_RESULTS = REPO / "research" / "results"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgr.checkpoint import atomic_write, atomic_write_text  # noqa: E402

from variants import VARIANTS  # noqa: E402

# Variants that records made before the finite-difference hypergradient was removed still name (claim 6 reads
# them): listed with what they ran, after mgr, so the tables of those records keep their rows and order
_AFTER_MGR = list(VARIANTS).index("mgr") + 1
RECORDED_VARIANTS = dict([*list(VARIANTS.items())[:_AFTER_MGR], ("mgr-first", {"method": "mgr", "order": "first"}),
                          ("mgr-second", {"method": "mgr", "order": "second"}), *list(VARIANTS.items())[_AFTER_MGR:]])

MGR_CHOICES = ("mgr", "mgr-second", "mgr-first")  # which MGR a claim uses: the default (second order) first
CRITERION = ("A beats B when the difference of their mean test accuracies (at the best validation step) exceeds "
             "the pooled sample standard deviation over seeds, √((s_A² + s_B²)/2), with at least 2 seeds each; "
             "a smaller difference is within seed noise. This is a one-sigma bar, not a significance test: with "
             "3 seeds nothing here is significant in the statistical sense. Per-seed signs (seeds both have) are "
             "shown beside each comparison but do not decide it.")


# ----------------------------------------------------------------------------- accuracy records

@dataclass
class Stat:
    mean: float  # test accuracy @ best val, in points
    std: float
    n: int
    by_seed: dict
    final: float | None  # final test accuracy, mean, in points


def setting_of(r: dict) -> tuple:
    return (r["dataset"], r["ratio"], r["model"], r["steps"], r["batch_size"])


def setting_label(s: tuple) -> str:
    dataset, ratio, model, steps, bs = s
    return f"{dataset} {ratio:g}, {model}, {steps} steps, batch {bs}"


def load_accuracy(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """Records of all files; the last of records with the same setting, variant and seed wins."""
    notes, seen = [], {}
    for path in paths:
        for r in read_json(path) or []:
            r = {**r, "source": str(path)}
            r.setdefault("variant", r["method"])
            if "batch_size" not in r:  # written before --batch-size existed, when every run used 128
                r["batch_size"] = 128
            key = (*setting_of(r), r["variant"], r["seed"])
            if key in seen:
                notes.append(f"{setting_label(setting_of(r))}: {r['variant']} seed {r['seed']} appears more than "
                             f"once; the last record (from {path.name}) is used")
            seen[key] = r
    return list(seen.values()), notes


def stats(records: list[dict]) -> dict[tuple, dict[str, Stat]]:
    """{setting: {variant: Stat}}."""
    groups: dict[tuple, dict[str, list]] = {}
    for r in records:
        groups.setdefault(setting_of(r), {}).setdefault(r["variant"], []).append(r)
    out = {}
    for s, by_variant in groups.items():
        out[s] = {}
        for v, rs in by_variant.items():
            acc = [100 * r["test_acc"] for r in rs]
            finals = [100 * r["final_test_acc"] for r in rs if r.get("final_test_acc") is not None]
            out[s][v] = Stat(statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0, len(acc),
                             {r["seed"]: 100 * r["test_acc"] for r in rs}, statistics.mean(finals) if finals else None)
    return out


def variant_order(names) -> list[str]:
    known = [v for v in RECORDED_VARIANTS if v in names]
    return known + sorted(set(names) - set(known))


# ----------------------------------------------------------------------------- the criterion

@dataclass
class Comparison:
    a: str
    b: str
    diff: float  # mean(a) - mean(b), points
    pooled: float
    higher: int  # seeds (shared) where a > b
    shared: int
    enough: bool  # both have >= 2 seeds

    @property
    def beats(self) -> bool:
        return self.enough and self.diff > self.pooled

    @property
    def equal(self) -> bool:
        return self.enough and abs(self.diff) <= self.pooled

    def __str__(self) -> str:
        seeds = f"; higher in {self.higher} of {self.shared} shared seeds" if self.shared else ""
        return f"{self.a} − {self.b} = {self.diff:+.2f} pts (pooled std {self.pooled:.2f}{seeds})"


def compare(st: dict[str, Stat], a: str, b: str) -> Comparison:
    A, B = st[a], st[b]
    shared = sorted(set(A.by_seed) & set(B.by_seed))
    return Comparison(a, b, A.mean - B.mean, math.sqrt((A.std ** 2 + B.std ** 2) / 2),
                      sum(A.by_seed[s] > B.by_seed[s] for s in shared), len(shared), A.n >= 2 and B.n >= 2)


def judged(c: Comparison, holds: bool) -> str:
    if not c.enough:
        return f"{c} → fewer than 2 seeds, not judged"
    return f"{c} → {'holds' if holds else 'does not hold'}"


def said(c: Comparison, yes: str, no: str) -> str:
    return f"{c} → " + ((yes if c.beats else no) if c.enough else "fewer than 2 seeds, not judged")


def overall(results: list[bool | None], what: str = "settings") -> str:
    """The verdict of a claim from its per-setting outcomes (None: not judged)."""
    judged_ = [r for r in results if r is not None]
    if not judged_:
        return "not measured"
    k = sum(judged_)
    if k == len(judged_):
        return "reproduced"
    return "not reproduced" if k == 0 else f"partly reproduced ({k} of {len(judged_)} {what})"


FID_FIELDS = ("dataset", "ratio", "method", "order", "finder", "co_learner", "procedure", "finder_lr", "lam_kl")


def fid_config(f: dict) -> tuple:
    return tuple(f.get(k) for k in FID_FIELDS)


def fid_label(key: tuple) -> str:
    d = dict(zip(FID_FIELDS, key))
    parts = [f"{d['dataset']} {d['ratio']:g}", d['method'] + (f" ({d['order']} order, {d['finder']} finder)" if d['finder'] else "")]
    if d["co_learner"]:
        parts.append("co-learner")
    if d["procedure"] not in (None, "standard"):
        parts.append(f"procedure {d['procedure']}")
    if d["finder_lr"] not in (None, 1e-4):  # the defaults are not named
        parts.append(f"finder lr {d['finder_lr']:g}")
    if d["lam_kl"] not in (None, 0.1):
        parts.append(f"λ_KL {d['lam_kl']:g}")
    return ", ".join(parts)


def pick_mgr(st: dict[str, Stat]) -> str | None:
    return next((v for v in MGR_CHOICES if v in st), None)


# ----------------------------------------------------------------------------- the claims

def claims(table: dict[tuple, dict[str, Stat]], speeds: list[dict], fids: list[dict]) -> list[dict]:
    out = []

    def claim(title, paper, verdict, lines, needs):
        out.append({"title": title, "paper": paper, "verdict": verdict, "lines": lines or [f"no records: needs {needs}"]})

    def beats_in_each_setting(a: str, b: str) -> tuple[list[str], list]:
        """'a beats b' in every setting that has both: the lines, and True/False/None (too few seeds)."""
        lines, res = [], []
        for s, st in table.items():
            if {a, b} <= set(st):
                c = compare(st, a, b)
                res.append(c.beats if c.enough else None)
                lines.append(f"{setting_label(s)}: {judged(c, c.beats)}")
        return lines, res

    # (1) naive GDA can fall below base: one setting where base beats gda suffices
    lines, res = beats_in_each_setting("base", "gda")
    verdict = "not measured" if not any(r is not None for r in res) else ("reproduced" if any(res) else "not reproduced")
    claim("(1) Naive GDA can fall below base", "GDA's synthetic samples can lower test accuracy on small data",
          verdict, lines, "gda and base in one setting")

    # (2) PCR beats GDA
    lines, res = beats_in_each_setting("pcr", "gda")
    claim("(2) PCR beats GDA", "consistency regularisation uses synthetic samples better than CE on them",
          overall(res), lines, "pcr and gda in one setting")

    # (3) MPS adds to PCR but not to GDA
    lines, res = [], []
    for s, st in table.items():
        m = pick_mgr(st)
        if m and {"pcr", "gda", "gda-mps"} <= set(st):
            c1, c2 = compare(st, m, "pcr"), compare(st, "gda-mps", "gda")
            ok = c1.enough and c2.enough
            res.append(c1.beats and not c2.beats if ok else None)
            lines.append(f"{setting_label(s)}: {said(c1, 'MPS adds to PCR', 'MPS does not add to PCR')}; "
                         f"{said(c2, 'MPS adds to GDA', 'MPS does not add to GDA')}")
    claim("(3) MPS adds to PCR but not to GDA", "the finder helps the consistency loss, and cannot rescue GDA",
          overall(res), lines, "pcr, gda, gda-mps and mgr (or mgr-first) in one setting")

    # (4) MGR's gain over base is largest on the smallest data (per dataset and model, across ratios)
    lines, res = [], []
    groups: dict[tuple, dict[float, tuple]] = {}
    for s, st in table.items():
        groups.setdefault((s[0], s[2]), {}).setdefault(s[1], []).append((s, st))
    for (dataset, model), by_ratio in groups.items():
        m = next((v for v in MGR_CHOICES
                  if sum(any({v, "base"} <= set(st) for _, st in opts) for opts in by_ratio.values()) >= 2), None)
        if m is None:
            continue
        gains = {}
        for ratio, opts in sorted(by_ratio.items()):
            s, st = max((o for o in opts if {m, "base"} <= set(o[1])), key=lambda o: o[1][m].n, default=(None, None))
            if s is not None:
                gains[ratio] = (compare(st, m, "base"), s)
        enough = all(c.enough for c, _ in gains.values())
        smallest = min(gains)
        largest = max(gains, key=lambda r: gains[r][0].diff)
        res.append(largest == smallest if enough else None)
        parts = "; ".join(f"{r:g} ({s[3]} steps, batch {s[4]}): {c.diff:+.2f} ± {c.pooled:.2f}"
                          for r, (c, s) in gains.items())
        lines.append(f"{dataset}, {model}, gain of {m} over base by ratio: {parts} → largest at ratio {largest:g}"
                     + ("" if enough else " (fewer than 2 seeds somewhere, not judged)")
                     + f"; the paper's best gain is +7 points, the largest here {max(c.diff for c, _ in gains.values()):+.2f}")
    claim("(4) MGR's gain is largest on the smallest data", "up to +7 points, largest gains on the smallest data",
          overall(res, "datasets"), lines, "base and mgr (or mgr-first) at two or more ratios of one dataset")

    # (5) residual finder > MLP and linear
    lines, res = [], []
    for s, st in table.items():
        if {"mgr", "mgr-mlp", "mgr-linear"} <= set(st):
            c1, c2 = compare(st, "mgr", "mgr-mlp"), compare(st, "mgr", "mgr-linear")
            ok = c1.enough and c2.enough
            res.append(c1.beats and c2.beats if ok else None)
            lines.append(f"{setting_label(s)} (mgr = residual finder): {judged(c1, c1.beats)}; {judged(c2, c2.beats)}")
    claim("(5) Residual finder beats MLP and linear finders", "Residual > Linear and > MLP (an MLP moves latents too far)",
          overall(res), lines, "mgr, mgr-mlp and mgr-linear in one setting")

    # (6) first order ≈ second order accuracy, ~10% less time
    lines, acc_res, speed_res = [], [], []
    for s, st in table.items():
        second = next((v for v in ("mgr-second", "mgr") if v in st), None)
        if second and "mgr-first" in st:
            c = compare(st, "mgr-first", second)
            acc_res.append(c.equal if c.enough else None)
            lines.append(f"accuracy, {setting_label(s)}: {c} → "
                         + (("equal within noise" if c.equal else "differs") if c.enough else "fewer than 2 seeds, not judged"))
    for sp in speeds:
        ms = {r["method"]: r["ms_per_step"] for r in sp["results"]}
        if {"mgr-first", "mgr-second"} <= set(ms):
            saving = 1 - ms["mgr-first"] / ms["mgr-second"]
            speed_res.append(saving > 0)
            lines.append(f"step time, {sp['_file']} ({sp['device']}, {sp['model']}): first {ms['mgr-first']:.2f} ms, "
                         f"second {ms['mgr-second']:.2f} ms → first order takes {100 * saving:.0f}% less time (paper: about 10%)")
    judged_acc = [r for r in acc_res if r is not None]
    if not judged_acc or not speed_res:
        verdict = "not measured" + (" (no step times of mgr-first and mgr-second)" if judged_acc else
                                    " (no accuracy of mgr-first and mgr-second with ≥ 2 seeds)" if speed_res else "")
    else:
        verdict = "reproduced" if all(judged_acc) and all(speed_res) else "not reproduced"
    claim("(6) First-order ≈ second-order accuracy at less time", "little accuracy loss for about 10% less time",
          verdict, lines, "mgr-first and mgr-second (or mgr) accuracy, and their step times")

    # (7) finder samples have lower FID than uniform ones: per configuration, over its runs (seeds)
    lines, res = [], []
    groups: dict[tuple, list[dict]] = {}
    for f in fids:
        if f.get("fid_finder") is not None:
            groups.setdefault(fid_config(f), []).append(f)
    for key, fs in groups.items():
        lower = sum(f["fid_finder"] < f["fid_uniform"] for f in fs)
        res.append(lower > len(fs) / 2)
        u, fi = [f["fid_uniform"] for f in fs], [f["fid_finder"] for f in fs]
        lines.append(f"{fid_label(key)}, {len(fs)} run(s), n={fs[0]['n']}: uniform {statistics.mean(u):.3f}, "
                     f"finder {statistics.mean(fi):.3f} (mean; finder − uniform from {min(a - b for a, b in zip(fi, u)):+.3f} "
                     f"to {max(a - b for a, b in zip(fi, u)):+.3f}) → lower in {lower} of {len(fs)} runs")
    claim("(7) Finder samples have a lower FID than uniform ones",
          "MPS finds better samples (finder_fid.json; a configuration counts when most of its runs agree)",
          overall(res, "configurations"), lines, "finder_fid.json records of runs with a finder")
    return out


# ----------------------------------------------------------------------------- rendering

def paired_claims(data: dict | None) -> list[str]:
    """bench/claims.py's records: each claim on paired seeds, with its 95% interval and verdict."""
    L = ["## Claims on paired seeds", ""]
    if not data or not data.get("records"):
        return L + ["Not measured (`python bench/claims.py`).", ""]
    recs = data["records"]
    first = recs[0]
    L += [f"`{first['command']}` ({first['machine']}, {first['date']}): `{first['setting']}`, seeds 0–"
          f"{first['seeds'] - 1}; seed k of every arm shares the data split, the initialisation and the real "
          "batches. Each row is the mean of the per-seed differences A − B with its 95% Student-t interval; "
          "the claim **holds** exactly when the whole interval is above 0.", ""]
    rows = []
    for r in recs:
        ci = f"{r['ci95'][0]:+.2f} to {r['ci95'][1]:+.2f}" if r.get("ci95") else "—"
        rows.append([r["claim"], r["text"], f"{r['a']} − {r['b']}", r["statistic"], f"{r['mean_diff']:+.2f}", ci,
                     f"{r['holds_in']} of {r['n']}", f"**{r['verdict']}**"])
    L += md_table(["claim", "the paper says", "A − B", "statistic", "mean", "95% interval", "positive in",
                   "verdict"], rows)
    return L + [""]


def read_json(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise SystemExit(f"{path}: not valid JSON ({e}); fix or remove it") from e


def md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def provenance(items: list[dict], what: str = "records") -> list[str]:
    cmds = list(dict.fromkeys(i["command"] for i in items if i.get("command")))
    missing = sum(1 for i in items if not i.get("command"))
    lines = ["Reproduce with:", "", "```bash", *cmds, "```"] if cmds else []
    if missing:
        lines.append(f"({missing} of these {what} have no `command` field: their commands are in "
                     "docs/CHANGELOG.md, under the accuracy grid.)")
    machines = sorted({i["machine"] for i in items if i.get("machine")})
    dates = sorted({i["date"] for i in items if i.get("date")})
    if machines or dates:
        lines.append(f"Machine: {'; '.join(machines) or 'not recorded'}. Date: {', '.join(dates) or 'not recorded'}.")
    return lines + [""]


def shown(path) -> str:
    """A path as the reader of RESULTS.md should see it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def accuracy_figures(table, fig_dir: Path) -> dict[tuple, Path]:
    """Accuracy vs ratio per variant, one figure per (dataset, model), error bars = std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = {}
    for dataset, model in dict.fromkeys((s[0], s[2]) for s in table):
        settings = [s for s in table if (s[0], s[2]) == (dataset, model)]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        budgets = sorted({(s[3], s[4]) for s in settings})  # one line per variant and (steps, batch size)
        lines = [(v, b) for v in variant_order({v for s in settings for v in table[s]}) for b in budgets]
        for i, (v, (steps, bs)) in enumerate(lines):
            pts = sorted(((s[1], table[s][v]) for s in settings if v in table[s] and s[3:] == (steps, bs)),
                         key=lambda p: p[0])
            if pts:
                dodge = 1.015 ** (i - len(lines) / 2)  # side by side, so that error bars at one ratio stay apart
                ax.errorbar([p[0] * dodge for p in pts], [p[1].mean for p in pts], yerr=[p[1].std for p in pts],
                            marker="os^vD<>p*hX"[i % 11], capsize=3, color=plt.cm.tab20(i % 20),
                            label=v if len(budgets) == 1 else f"{v} ({steps} steps, b{bs})")
        ratios = sorted({s[1] for s in settings})
        if len(ratios) > 1:
            ax.set_xscale("log")
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.minorticks_off()
        ax.set(xlabel="training ratio", ylabel="test accuracy @ best val (%)", title=f"{dataset}, {model}")
        ax.legend(fontsize=7, ncol=2)
        out[(dataset, model)] = fig_dir / f"accuracy_{slug(dataset)}_{slug(model)}.png"
        save_figure(fig, out[(dataset, model)])
        plt.close(fig)
    return out


def speed_figure(sp: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key = next(k for k in sp["results"][0] if k.startswith("ratio_to_"))
    names, ratios = [r["method"] for r in sp["results"]], [r[key] for r in sp["results"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar(names, ratios, color=["#888" if n == "reference" else "#3a7" for n in names])
    ax.axhline(1, color="k", lw=0.8)
    ax.set(ylabel=f"step time / {key[len('ratio_to_'):]}",
           title=f"{sp['dataset']} {sp['ratio']:g}, {sp['model']}, batch {sp['batch_size']}, {sp['device']}"
                 + (", compiled" if sp.get("compile") else ""))
    ax.tick_params(axis="x", rotation=30)
    save_figure(fig, path)
    plt.close(fig)
    return path


def render(a) -> str:
    rdir = Path(a.results_dir)
    out = Path(a.out)
    fig_dir = Path(a.figures_dir) if a.figures_dir else out.parent / "results"
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    acc_files = [Path(p) for p in a.accuracy] if a.accuracy else [rdir / "accuracy.json"]
    records, dup_notes = load_accuracy(acc_files)
    table = stats(records)
    speeds = []
    for path in sorted(rdir.glob("speed*.json")):
        sp = read_json(path)
        for one in (sp if isinstance(sp, list) else [sp]):
            speeds.append({**one, "_file": path.name})
    memories = [{**read_json(p), "_file": p.name} for p in sorted(rdir.glob("memory*.json"))]
    app = read_json(rdir / "app_speed.json")
    fids = read_json(rdir / "finder_fid.json") or []

    L = ["# Results" + (" (smoke test: tiny runs, the numbers mean nothing)" if a.quick else ""), "",
         f"Generated {time.strftime('%Y-%m-%d')} by `{shlex.join(['python', 'bench/report.py', *a.argv])}` from "
         f"{', '.join(f'`{shown(p)}`' for p in acc_files)} and `{shown(rdir)}`. Do not edit this file: rerun the command; prose "
         "about these results goes in the docs that use them ([findings.md](findings.md), [method.md](method.md)). Accuracy is the test accuracy at the evaluation with the "
         "best validation accuracy (model selection on val; the earliest of ties), mean ± sample std over seeds, in %.",
         ""]
    L += paired_claims(read_json(rdir / "claims.json"))
    L += ["## Claims judged from the accuracy grid", "", f"Criterion: {CRITERION}", ""]
    for c in claims(table, speeds, fids):
        L += [f"- **{c['title']}: {c['verdict']}.** Paper: {c['paper']}.", *(f"  - {x}" for x in c["lines"])]
    L += [""]

    L += ["## Accuracy", ""]
    if not records:
        L += ["No accuracy records (`python bench/accuracy.py`).", ""]
    figs = accuracy_figures(table, fig_dir) if table else {}
    for s in sorted(table, key=lambda s: (s[0], s[2], s[1], s[3], s[4])):
        st = table[s]
        L += [f"### {setting_label(s)}", "", f"Model: **{s[2]}**.", ""]
        rows = []
        for v in variant_order(st):
            x = st[v]
            gain = "—" if "base" not in st or v == "base" else f"{x.mean - st['base'].mean:+.2f}"
            name, _, extra = v.partition("[")  # accuracy.py --set names variants e.g. mgr-first[finder_lr=1e-3]
            what = ", ".join([f"{k}={val}" for k, val in RECORDED_VARIANTS.get(name, {}).items()]
                             + ([extra.rstrip("]")] if extra else []))
            final = f"{x.final:.2f}" if x.final is not None else "—"
            rows.append([v, what, f"{x.mean:.2f} ± {x.std:.2f}", x.n, gain, final])
        L += md_table(["variant", "configuration", "test acc @ best val (%)", "seeds", "Δ vs base (pts)",
                       "final test acc (%)"], rows)
        L += provenance([r for r in records if setting_of(r) == s])
    for (dataset, model), path in figs.items():
        L += [f"![accuracy vs ratio, {dataset}, {model}]({rel(path)})", ""]
    if dup_notes:
        L += ["Duplicate records:", "", *(f"- {n}" for n in dup_notes), ""]

    L += ["## Speed", ""]
    if not speeds:
        L += ["No speed records (`python bench/step_time.py`).", ""]
    for sp in speeds:
        key = next(k for k in sp["results"][0] if k.startswith("ratio_to_"))
        L += [f"### {sp['_file']}: {sp['device']} ({sp.get('device_name', '')}), {sp['model']}, {sp['dataset']} "
              f"{sp['ratio']:g}, batch {sp['batch_size']}" + (", --compile" if sp.get("compile") else ""), "",
              f"{sp.get('cpu_threads', '?')} CPU thread(s), torch {sp.get('torch', '?')}; median of {sp.get('rounds')} "
              f"interleaved rounds of {sp.get('steps')} steps.", ""]
        L += md_table(["method", "ms / step", "images / s", f"step time / {key[9:]}"],
                      [[r["method"], f"{r['ms_per_step']:.2f}", f"{r['img_per_s']:.0f}", f"{r[key]:.2f}"]
                       for r in sp["results"]])
        if "reference" in sp:
            ref, base = sp["reference"], next(r for r in sp["results"] if r["method"] == "base")
            L += [f"Our `base` against a plain loop ({ref['model']}, {ref['dtype']}, {ref['loader']}): "
                  f"{ref['ms_per_step']:.2f} vs {base['ms_per_step']:.2f} ms/step, **speed-up "
                  f"{sp['speedup_vs_reference']:.2f}×** (ours: {sp.get('ours', {}).get('dtype', '?')}"
                  f"{', channels_last' if sp.get('ours', {}).get('channels_last') else ''}"
                  f"{', compiled' if sp.get('compile') else ''}).", ""]
        path = speed_figure(sp, fig_dir / f"{Path(sp['_file']).stem}.png")
        L += [f"![step time ratios, {sp['_file']}]({rel(path)})", "", *provenance([sp], "results")]

    L += ["## Memory", ""]
    if not memories:
        L += ["No memory records (`python bench/memory.py`).", ""]
    for m in memories:
        L += [f"### {m['_file']}: {m['device']} ({m.get('device_name', '')}), {m['model']}, {m['dataset']} "
              f"{m['ratio']:g}, batch {m['batch_size']}", "",
              "Peak RSS of a fresh process per method (imports included; 'after imports' is that fixed part).", ""]
        cuda = any("cuda_max_allocated_mib" in r for r in m["results"])
        L += md_table(["method", "peak RSS (MiB)", "after imports (MiB)"] + (
            ["CUDA peak allocated (MiB)", "CUDA peak reserved (MiB)"] if cuda else []),
            [[r["method"], r["peak_rss_mib"], r["import_rss_mib"]] + (
                [r.get("cuda_max_allocated_mib", "—"), r.get("cuda_max_reserved_mib", "—")] if cuda else [])
             for r in m["results"]])
        L += provenance([m], "results")

    L += ["## App", ""]
    if not app:
        L += ["No app timings (`python bench/app_speed.py`).", ""]
    else:
        if "pages" in app:
            L += ["Server-side time of one page run of a finished run (AppTest): first render in a process, and "
                  "the median of 3 reruns.", ""]
            L += md_table(["page", "first (s)", "warm (s)"], [[p, v["first_s"], v["warm_s"]] for p, v in
                                                              app["pages"].items() if isinstance(v, dict)])
        if "feature_map" in app:
            fm = app["feature_map"]
            L += [f"Feature-space map of {fm.get('real_points')} real + {fm.get('synthetic_points')} synthetic points:", ""]
            L += md_table(["measure", "value"], [[k, v] for k, v in fm.items() if k not in ("run",)])
        if "live" in app:
            L += md_table(["live curves", "value"], [[k, v] for k, v in app["live"].items()])
        L += provenance([app], "results")

    L += ["## Finder FID (claim 7)", ""]
    if not fids:
        L += ["No finder FID records (`python bench/finder_fid.py RUN_DIR ...`).", ""]
    else:
        L += md_table(["run", "dataset", "ratio", "method", "seed", "checkpoint step", "n", "FID uniform", "FID finder",
                       "finder − uniform"],
                      [[Path(f["run"]).name, f["dataset"], f"{f['ratio']:g}", f["method"], f["seed"], f["checkpoint_step"],
                        f["n"], f"{f['fid_uniform']:.3f}", "—" if f["fid_finder"] is None else f"{f['fid_finder']:.3f}",
                        "—" if f["fid_finder"] is None else f"{f['fid_finder'] - f['fid_uniform']:+.3f}"] for f in fids])
        L += [f"Extractor: {'; '.join(sorted({f['extractor'] for f in fids}))}; reference: the test split. Both kinds "
              "use the same z and class-balanced y; the finder is the run's last checkpoint (last.pt).", ""]
        L += provenance(fids)

    return "\n".join(L)


# ----------------------------------------------------------------------------- findings (README and docs/findings.md)

FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"
# Runs whose records lack a field that decides what they measured: what they ran, stated once here.
ACCURACY_PAIR_NOTES = {
    ("fashion-mnist", 0.1, "smallcnn", 500, 128):
        "The finder of these runs had ReLU units at a constant lr 1e-2 (add `--set finder_activation=relu "
        "finder_lr=1e-2 finder_lr_schedule=constant` to repeat them).",
}


@dataclass
class Finding:
    question: str
    a_b: str  # "A − B" or "A / B"
    verdict: str
    mean: str
    interval: str
    positive: str  # "4 of 10"
    seeds: int
    command: str
    setting: str
    machine: str = ""
    date: str = ""
    seconds: float | None = None
    differs: str = ""  # arms other than today's demo: the fields that differ


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _demo_catalogue():
    """mgr.demos, when it imports (the demos' catalogue, statistics and today's arms); None otherwise."""
    try:
        from mgr import demos
        return demos
    except Exception as e:  # noqa: BLE001: the report still renders the other sections
        print(f"warning: mgr.demos does not import ({e}); demo records are shown without today's arms",
              file=sys.stderr)
        return None


def arm_differences(recorded, current: list[dict]) -> dict | None:
    """The fields in which a record's arms differ from today's (as mgr.demo_records.same_arms compares them:
    a field the record lacks counts as what runs had before it existed); None when they cannot be compared."""
    from dataclasses import MISSING, fields

    from mgr.trainer import TrainConfig
    from mgr.trainer.config import BEFORE_FIELD
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING} | BEFORE_FIELD
    if not isinstance(recorded, list) or len(recorded) != len(current):
        return None
    out = {}
    for r, c in zip(recorded, current):
        if not isinstance(r, dict):
            return None
        for k in sorted(set(r) | set(c)):
            was = r[k] if k in r else defaults.get(k, "—")
            if k not in c or was != c[k]:
                out.setdefault(k, was)
    return out


def _signed(d: float) -> str:
    return f"{d:+.2f}".replace("-", "−")


def _shown(stat, d: float) -> str:
    if getattr(stat, "ratio", False):
        v = math.exp(d)
        return f"×{v:.1f}" if v < 10 else f"×{v:.0f}"
    return _signed(d)


def demo_findings(rdir: Path) -> tuple[list[Finding], list[Finding]]:
    """bench/demos.py's records (demos*.json): (those whose arms are today's demo arms, the others)."""
    demos = _demo_catalogue()
    today, other = [], []
    for path in sorted(rdir.glob("demos*.json")):
        for r in read_json(path) or []:
            if not isinstance(r, dict) or "diffs" not in r:
                continue
            demo = demos.DEMOS.get(r["demo"]) if demos else None
            stat = demo.statistic if demo else None
            data = next((k for k, s in demos.SETTINGS.items() if s["data.dataset"] == r["dataset"]
                         and s["data.ratio"] == r["ratio"]), None) if demos else None
            differs = None
            if demo and data:
                try:
                    from mgr.demo_records import arm_configs, same_splits
                    differs = arm_differences(r.get("arms"), arm_configs(demo, data))
                    if differs == {} and not same_splits(demo, r, data):  # every seed on one split: an older design
                        differs = {"data seeds": ",".join(map(str, r.get("data_seeds") or [0] * r["seeds"]))}
                except Exception:  # noqa: BLE001: a record that cannot be compared is shown as such
                    differs = None
            ratio = stat.ratio if stat else r.get("compare") == "log ratio"
            sep = " / " if ratio else " − "
            ci = r.get("ci95")
            sets = [] if differs is None else [f"--set {k}={_num(v)}" for k, v in differs.items()
                                               if k not in ("generator", "data seeds") and v not in (None, "—")]
            if data is None:
                sets = [f"--set data.ratio={_num(r['ratio'])}"] + sets
            cmd = " ".join(["python bench/demos.py", f"--demos {r['demo']}",
                            *([f"--data {data}"] if data and data != "fashion-mnist" else
                              [] if data else ([] if r["dataset"] == "fashion-mnist" else [f"--data {r['dataset']}"])),
                            *([f"--seeds {r['seeds']}"] if r["seeds"] != 5 else []), *sets])
            setting = f"{r['dataset']} {r['ratio']:g}, {r['steps']} steps ({r['statistic']})"
            common = dict(machine=r.get("machine", ""), date=r.get("date", ""), seconds=r.get("seconds"),
                          differs=", ".join(f"{k}={_num(v)}" for k, v in (differs or {}).items()))
            # a demo of several pairs (a sweep): one row per pair, the headline verdict on the first
            pairs = r.get("per_pair") or [{"a": r["methods"][0], "b": r["methods"][-1], "mean_diff": r["mean_diff"],
                                           "ci95": ci, "holds_in": r["holds_in"], "verdict": r["verdict"], "dose": None}]
            for i, p in enumerate(pairs):
                pci = p.get("ci95")
                question = r["question"] if len(pairs) == 1 else f"{r['question']} [{p['a']}{sep}{p['b']}]"
                f = Finding(question, f"{p['a']}{sep}{p['b']}", p["verdict"],
                            _shown(stat, p["mean_diff"]) if p["mean_diff"] is not None else "—",
                            f"{_shown(stat, pci[0])} to {_shown(stat, pci[1])}" if pci else "—",
                            f"{p['holds_in']} of {r['seeds']}", r["seeds"], cmd, setting, **common)
                (today if differs == {} else other).append(f)
            # beside a verdict: the further statistics the record keeps (the finder demos' harm), a row per pair
            for name, also in (r.get("also") or {}).items():
                label = also.get("label") or next((x.label for x in (demo.also if demo else ()) if x.name == name), name)
                for p, s in zip(pairs, also.get("per_pair") or []):
                    if s.get("mean_diff") is None:
                        continue
                    sci = s.get("ci95")
                    f = Finding(f"{r['question']} [beside it: {label}]", f"{p['a']} − {p['b']}", s["verdict"],
                                _signed(s["mean_diff"]), f"{_signed(sci[0])} to {_signed(sci[1])}" if sci else "—",
                                f"{s['holds_in']} of {len(s['diffs'])}", len(s["diffs"]), cmd, setting, **common)
                    (today if differs == {} else other).append(f)
    return today, other


def claim_findings(data: dict | None) -> list[Finding]:
    out = []
    for r in (data or {}).get("records", []):
        ci = r.get("ci95")
        out.append(Finding(f"Claim {r['claim']}: {r['text']}", f"{r['a']} − {r['b']}", r["verdict"],
                           _signed(r["mean_diff"]), f"{_signed(ci[0])} to {_signed(ci[1])}" if ci else "—",
                           f"{r['holds_in']} of {r['n']}", r["n"],
                           f"python bench/claims.py --seeds {r['seeds']}", r["statistic"],
                           r.get("machine", ""), r.get("date", "")))
    return out


def accuracy_pairs(records: list[dict], a: str = "mgr", b: str = "pcr", min_seeds: int = 5) -> list[Finding]:
    """Paired differences a − b of the final test accuracy in each accuracy setting where both ran the
    same seeds (at least `min_seeds`)."""
    from mgr import paired
    out = []
    by: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if r.get("final_test_acc") is not None:
            by.setdefault(setting_of(r), {}).setdefault(r["variant"], {})[r["seed"]] = r
    for s, v in sorted(by.items(), key=lambda kv: str(kv[0])):
        if a not in v or b not in v:
            continue
        seeds = sorted(set(v[a]) & set(v[b]))
        if len(seeds) < min_seeds:
            continue
        p = paired.summarize([100 * (v[a][k]["final_test_acc"] - v[b][k]["final_test_acc"]) for k in seeds])
        cmds = {re.sub(r" --(runs-dir|out) \S+| --seeds \S+", "", v[m][k]["command"]) for m in (a, b) for k in seeds
                if v[m][k].get("command")}
        cmd = (sorted(cmds)[0].replace(f"--methods {a}", f"--methods {b},{a}").replace(f"--methods {b} ", f"--methods {b},{a} ")
               + f" --seeds {','.join(map(str, seeds))}") if len(cmds) <= 2 and cmds else "; ".join(sorted(cmds))
        cmd = re.sub(r"--methods (\S+),\1", r"--methods \1", cmd)
        recs = [v[m][k] for m in (a, b) for k in seeds]
        out.append(Finding(f"Does the finder help PCR at {s[0]} {s[1]:g}?", f"{a} − {b}", p.verdict, _signed(p.mean),
                           f"{_signed(p.ci95[0])} to {_signed(p.ci95[1])}" if p.ci95 else "—", f"{p.holds_in} of {p.n}", p.n,
                           cmd, f"{setting_label(s)} (test accuracy at the last step)",
                           "; ".join(sorted({r["machine"] for r in recs if r.get("machine")})),
                           ", ".join(sorted({r["date"] for r in recs if r.get("date")})),
                           differs=ACCURACY_PAIR_NOTES.get(s, "")))
    return out


def _one_per_question(findings: list[Finding]) -> list[Finding]:
    """Per question and setting, the record with the most seeds (the later file on a tie)."""
    best: dict[tuple, Finding] = {}
    for f in findings:
        key = (f.question, f.setting)
        if key not in best or f.seeds >= best[key].seeds:
            best[key] = f
    return list(best.values())


def _headlines(findings: list[Finding]) -> list[Finding]:
    """One row per demo: a demo of several pairs ("question [A − B]" rows) shows the pair behind its headline
    verdict (a pair that holds, else one of the opposite, else any), the largest difference among them."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        if "[beside it: " not in f.question:  # the statistics beside a verdict never stand for it
            groups.setdefault(f.question.split(" [")[0], []).append(f)
    out = []
    for question, fs in groups.items():
        pool = [f for f in fs if f.verdict == "holds"] or [f for f in fs if f.verdict == "opposite"] or fs

        def size(f):
            try:
                return abs(float(f.mean.replace("×", "").replace("−", "-")))
            except ValueError:
                return -1.0
        best = max(pool, key=size)
        out.append(replace(best, question=question) if len(fs) > 1 else best)
    return out


def readme_table(demos_today: list[Finding], claims_: list[Finding]) -> list[str]:
    """The README's one table: each teaching demo on its default data (the paper's claims, measured apart, are
    in docs/findings.md)."""
    rows, seen = [], set()
    for f in _headlines(_one_per_question(d for d in demos_today if d.setting.startswith("fashion-mnist"))):
        rows.append([f"{f.question} ({f.a_b})", f"**{f.verdict}**", f"{f.mean} ({f.interval})", f.seeds])
        seen.add((f.mean, f.interval))
    secs = [d.seconds for d in demos_today if d.seconds and d.seeds == 5 and d.setting.startswith("fashion-mnist")]
    lines = md_table(["question", "verdict", "mean difference (95% interval)", "seeds"], rows)
    return lines[:-1] + ["", "Accuracy differences are in points of test accuracy at the last step, on Fashion-MNIST "
                         "1%; × is a factor of the finder's latent shift. **holds**: the whole interval is above 0 "
                         "(×1); **opposite**: below; **inconclusive**: it contains 0."
                         + (f" A 5-seed demo took {min(secs):.0f}–{max(secs):.0f} s on a 2-core CPU." if secs else "")
                         + " Commands and every record: [docs/findings.md](docs/findings.md)."]


def _rows(fs: list[Finding], with_setting: bool = False) -> list[list]:
    return [[f.question, f.a_b, f"**{f.verdict}**", f.mean, f.interval, f.positive]
            + ([f.setting] if with_setting else []) + [f"`{f.command}`"] for f in fs]


def render_findings(rdir: Path, records: list[dict], cmdline: str,
                    research: Path | None = None) -> tuple[str, list[str]]:
    """docs/findings.md, and the README's block. `research`: the research records (research/results)."""
    today, other = demo_findings(rdir)
    claims_ = claim_findings(read_json(rdir / "claims.json"))
    pairs = accuracy_pairs(records)
    head = ["question", "A vs B", "verdict", "mean", "95% interval", "positive in"]
    L = ["# Findings", "",
         f"What the records in `bench/results/` say today. Generated by `{cmdline}`; do not edit by hand. Each "
         "row is a paired experiment: seed k of both arms shares the data split, the initialisation and the real "
         "batches, each seed gives one difference A − B (or a log ratio, shown as a factor ×), and the 95% "
         "Student-t interval of their mean decides the verdict: **holds** when the whole interval is above 0, "
         "**opposite** when below, **inconclusive** otherwise. Accuracy differences are in points of test "
         "accuracy. How the demos are built: [demos.md](demos.md); the method and its defaults: "
         "[method.md](method.md).", ""]
    for data, label in (("fashion-mnist", "Fashion-MNIST 1%"), ("digits", "digits 10%")):
        fs = sorted((f for f in today if f.setting.startswith(data)), key=lambda f: (f.question, f.seeds))
        if not fs:
            continue
        L += [f"## Teaching demos, {label}", "",
              f"The setting `SETTINGS[\"{data}\"]` of `mgr/demos.py`, each demo's arms as the app launches them. "
              "Time: the whole demo, both arms and every seed, two trainers at a time.", ""]
        L += md_table(head + ["seeds", "time (s)", "reproduce"],
                      [r[:6] + [f.seeds, f"{f.seconds:.0f}" if f.seconds else "—", r[6]]
                       for f, r in zip(fs, _rows(fs))])
        L += _machines(fs)
    if claims_:
        L += ["## The MGR paper's claims on paired seeds", "",
              "The finder-helps-pcr demo's setting on Fashion-MNIST 1%, with the MLP and linear finders as further "
              "arms; claim 7 compares the FID of 2 000 finder and uniform samples of each mgr run.", ""]
        L += md_table(head + ["statistic", "reproduce"], _rows(claims_, True))
        L += _machines(claims_)
    if pairs:
        L += ["## The finder at a larger split", "",
              "`bench/accuracy.py` at the trainer's defaults, paired by seed.", ""]
        L += md_table(head + ["setting", "reproduce"], _rows(pairs, True))
        L += [*(f"- {f.differs}" for f in pairs if f.differs), ""] if any(f.differs for f in pairs) else []
        L += _machines(pairs)
    if other:
        L += ["## Demos with other arms", "",
              "Records of a demo run with settings other than its own (`--set`); the last column names them.", ""]
        L += md_table(head + ["seeds", "other settings", "reproduce"],
                      [r[:6] + [f.seeds, f.differs or f.setting, r[6]] for f, r in zip(other, _rows(other))])
        L += _machines(other)
    L += _step_cost(research if research is not None else RESEARCH_RESULTS)
    return "\n".join(L), readme_table(today, claims_)


def _machines(fs: list[Finding]) -> list[str]:
    machines = sorted({f.machine for f in fs if f.machine})
    dates = sorted({d.strip() for f in fs for d in f.date.split(",") if d.strip()})
    return [f"Machine: {'; '.join(machines) or 'not recorded'}. Date: {', '.join(dates) or 'not recorded'}.", ""]


def _step_cost(rdir: Path) -> list[str]:
    """research/meta_cost.py's last measurement per setting: each arm's step time against pcr's."""
    recs = read_json(rdir / "meta_cost.json") or []
    last: dict[tuple, str] = {}
    for r in recs:
        last[(r["dataset"], r["ratio"])] = r["command"]
    if not last:
        return []
    L = ["## Step cost", "",
         "Time of a training step against a pcr step, one torch thread, arms interleaved in one process "
         "(median of the rounds, and the rounds' range). `mgr` is the default (meta step every 2nd iteration); "
         "`-torch-2nd` arms use PyTorch's own second derivatives, `mgr-relu` the ReLU finder at lr 1e-2.", ""]
    rows, cmds = [], []
    for (dataset, ratio), cmd in last.items():
        rs = [r for r in recs if r["command"] == cmd and (r["dataset"], r["ratio"]) == (dataset, ratio)]
        rows += [[f"{dataset} {ratio:g}", r["arm"], f"{r['ratio_to_reference']:.2f}×",
                  f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f}", f"{r['ms_per_step']:.0f}"] for r in rs]
        cmds.append((cmd, rs[0]))
    L += md_table(["setting", "arm", "step time / pcr", "rounds", "ms per step"], rows)
    L += ["Reproduce with:", "", "```bash", *(re.sub(r" --out \S+", "", moved(c)) for c, _ in cmds), "```",
          *_machines([Finding("", "", "", "", "", "", 0, "", "", r.get("machine", ""), r.get("date", ""))
                      for _, r in cmds])]
    return L


def moved(command: str) -> str:
    """A record's command with a script that has since moved from bench/ to research/ named where it is now."""
    return re.sub(r"^python bench/(\w+\.py)\b",
                  lambda m: f"python research/{m[1]}" if (REPO / "research" / m[1]).exists() else m[0], command)


def write_readme_block(readme: Path, block: list[str]) -> bool:
    """Replace the README's text between the findings markers; False when the markers are absent."""
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(FINDINGS_START), text.find(FINDINGS_END)
    if i < 0 or j < i:
        return False
    new = text[:i + len(FINDINGS_START)] + "\n" + "\n".join(block) + "\n" + text[j:]
    if new != text:
        atomic_write_text(readme, new)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default=str(REPO / "bench/results"))
    p.add_argument("--accuracy", nargs="+", help="accuracy record files (default: RESULTS_DIR/accuracy.json)")
    p.add_argument("--research-dir", default=str(RESEARCH_RESULTS),
                   help="the research records (research/results: meta_cost.json, for findings.md's step cost)")
    p.add_argument("--out", default=str(REPO / "docs/RESULTS.md"))
    p.add_argument("--figures-dir", help="default: results/ beside --out")
    p.add_argument("--readme", help="the README whose findings block to rewrite (default: README.md when --out is "
                   "the default docs/RESULTS.md; none otherwise)")
    p.add_argument("--quick", action="store_true", help="smoke test: marks the page, refuses to write docs/")
    a = p.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else list(argv)
    if a.quick and Path(a.out).resolve() == Path(p.get_default("out")).resolve():
        p.error("--quick renders smoke-test numbers; give --out (and --results-dir) outside docs/")
    text = render(a)
    atomic_write_text(a.out, text + "\n")
    print(f"-> {a.out}")
    acc_files = [Path(x) for x in a.accuracy] if a.accuracy else [Path(a.results_dir) / "accuracy.json"]
    findings, block = render_findings(Path(a.results_dir), load_accuracy(acc_files)[0],
                                      shlex.join(["python", "bench/report.py", *a.argv]), Path(a.research_dir))
    findings_out = Path(a.out).parent / "findings.md"
    atomic_write_text(findings_out, findings + "\n")
    print(f"-> {findings_out}")
    readme = a.readme or (str(REPO / "README.md") if Path(a.out).resolve() == Path(p.get_default("out")).resolve()
                          else None)
    if readme:
        if not write_readme_block(Path(readme), block):
            print(f"warning: {readme} has no {FINDINGS_START} … {FINDINGS_END} block; not rewritten", file=sys.stderr)
        else:
            print(f"-> {readme} (findings table)")
    return text


if __name__ == "__main__":
    main()
