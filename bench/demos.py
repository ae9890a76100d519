"""Every Home-page demo run as the app runs it (mgr.demo_queue: a manifest, a detached supervisor,
one trainer per core), and its measured verdict.

    python bench/demos.py                          # every demo, 5 seeds, as the app launches it
    python bench/demos.py --demos gda-hurts,pcr-repairs --seeds 8
    python bench/demos.py --demos gda-hurts --set width=32 --parallel 1   # the plain way, for the speed-up
    python bench/demos.py --quick                  # smoke test: one demo on digits, 2 seeds of 4 steps
    python bench/demos.py --resummarize            # recompute the shipped records' summaries from their values

Writes bench/results/demos.json: one record per demo (a re-run replaces that demo's record) with
demo, question, dataset, ratio, methods, steps, statistic, seeds, values (per seed: arm A, arm B),
kind ("failure", "repair" or "method"), data_seeds (the split of each seed: seed k uses data seed k mod 3 on
Fashion-MNIST), values (per seed, each arm's statistic in `methods` order), compare ("difference": each seed's
number is A − B; "log ratio": log(A / B)), diffs (the first pair's numbers), mean_diff, ci95 [lo, hi],
holds_in, verdict ("holds" exactly when lo > 0; a demo of several pairs: when some pair holds), per_pair
(each pair's a, b, family, dose and summary) and, for a sweep, doses and per_dose, also (further
statistics beside the verdict), failed (runs without a statistic), seconds (wall time of the whole demo),
loop_s and outside_loop_share (the runs' seconds inside their training loops, and the share of parallel × seconds
spent outside them: start-up, loading, the idle tail), cores, parallel, machine, date, command. The app's demo texts read these records (pages/_text.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgr import demo_queue, demo_records, demos  # noqa: E402
from mgr.launch import LaunchError  # noqa: E402

from records import stamp, update_records  # noqa: E402

# --quick: the smallest demo that still runs every part (digits, 4 steps, 2 evaluations)
QUICK = {"data.dataset": "digits", "data.ratio": 0.1, "data.test_subset": None, "steps": 4, "eval_every": 2, "batch_size": 16,
         "probes_per_class": 2, "probe_real": 40, "device": "cpu"}


def run_demo(demo_id: str, seeds: int, runs_dir: Path, overrides: dict, parallel: int | None,
             timeout_s: float) -> tuple[dict, float]:
    """Launch one demo exactly as Home does and wait until every run has ended; (manifest, seconds)."""
    t0 = time.time()
    launch_id = demo_queue.launch(demo_id, seeds, runs_dir, overrides or None, parallel)
    m = demo_queue.read_manifest(runs_dir, launch_id)
    while True:
        time.sleep(1.0)
        alive = demo_queue.ensure_supervisor(runs_dir, launch_id)  # as the app's poll does
        if not alive and demo_queue.outcome(runs_dir, m).done:
            return m, time.time() - t0
        if time.time() - t0 > timeout_s:
            demo_queue.stop(runs_dir, launch_id)
            raise TimeoutError(f"demo {demo_id} did not finish in {timeout_s:.0f} s; stopped "
                               f"(runs in {runs_dir}, supervisor log {demo_queue.demos_dir(runs_dir)})")


def _summary(s) -> dict:
    return {"diffs": list(s.diffs), "mean_diff": s.mean, "ci95": list(s.ci95) if s.ci95 else None,
            "holds_in": s.holds_in, "verdict": s.verdict}


def summary_fields(demo: demos.Demo, values) -> dict:
    """A record's summary of its per-seed values (one per arm, demo.arms order; None where a run has no value),
    as the demo compares them today (mgr.demos.summarize_pairs, as the app's live panel): the first pair's
    summary at the top level; a sweep adds `doses` and `per_dose`, any demo of several pairs `per_pair`
    (each with its arms, family, dose, interval and verdict) and its headline `verdict`."""
    summaries = demos.summarize_pairs(demo, values)
    fields = {"compare": demo.statistic.compare, **_summary(summaries[0])}
    if demo.sweep:
        per = [{"a": p.a.label, "b": p.b.label, "family": p.family, "dose": p.dose, **_summary(s)}
               for p, s in zip(demo.pairs, summaries)]
        fields.update(verdict=demos.overall_verdict(summaries), per_pair=per)
        if demo.doses:
            fields.update(doses=list(demo.doses), per_dose=per)
    return fields


def also_fields(demo: demos.Demo, out: demo_queue.Outcome, measured_here: dict | None = None) -> dict:
    """The further statistics a demo shows beside its verdict (mgr.demos.Demo.also), and those measured here
    only (fid_fields): per statistic, its per-seed values and one summary per pair."""
    also = {name: {"values": [list(v) for v in vals], "per_pair": [_summary(s) for s in sums]}
            for name, (vals, sums) in out.also.items()}
    also.update(measured_here or {})
    return {"also": also} if also else {}


FID_SAMPLES = 1000
FINDER_FID = demos.Statistic("finder_fid", f"FID of {FID_SAMPLES} finder samples against the test images (the shipped "
                                           "classifier's features)", "")


def fid_fields(demo: demos.Demo, m: dict, runs_dir: Path) -> dict:
    """For a demo about the finder: the FID of each run's finder samples G(F(z), y) at its last checkpoint
    (mgr.analysis.finder_fid, the Latents page's number) as one more statistic beside the verdict, per seed and
    per pair (a positive difference: the first arm's samples are further from the real images). Too slow for
    the app's live panel (about 4 s a run), so it is measured here. A run stopped before its first checkpoint
    (the guard) has none."""
    if demo.subject != "the finder":
        return {}
    from mgr.analysis.finder_fid import fid_uniform_vs_finder
    from mgr.runstore import Run
    values = [[None] * len(demo.arms) for _ in range(m["seeds"])]
    for r in m["runs"]:
        run = Run(runs_dir / r["run_id"])
        if run.status().get("state") == "finished":
            values[r["seed"]][r["arm"]] = fid_uniform_vs_finder(run, num=FID_SAMPLES)["finder"]
    sums = demos.summarize_pairs(demo, values, stat=FINDER_FID)
    return {FINDER_FID.name: {"label": FINDER_FID.label, "values": values, "per_pair": [_summary(x) for x in sums]}}


def record_of(m: dict, out: demo_queue.Outcome, seconds: float, argv, runs_dir: Path) -> dict:
    demo = out.demo
    first = m["runs"][0]["values"]
    data_seeds = [next(r["values"].get("data.data_seed", 0) for r in m["runs"] if r["seed"] == k)
                  for k in range(out.seeds)]
    return {"demo": demo.id, "kind": demo.kind, "question": demo.question, "dataset": first["data.dataset"],
            "ratio": first["data.ratio"], "methods": [arm.label for arm in demo.arms], "steps": first["steps"],
            "statistic": demo.statistic.label, "seeds": out.seeds, "data_seeds": data_seeds,
            "values": [list(v) for v in out.values], **summary_fields(demo, out.values),
            **also_fields(demo, out, fid_fields(demo, m, runs_dir)),
            "failed": list(out.failed), "guard_stops": len(out.guard_stops), "seconds": round(seconds, 1),
            **time_fields(m, seconds, runs_dir), "cores": os.cpu_count(), "parallel": m["parallel"], "launch": m["id"],
            "test_images": first.get("data.test_subset"), "arms": arms_of(m, runs_dir),
            # a busy machine stretches the wall time: the load average beside it says how busy this one was
            "load_avg_1min": round(os.getloadavg()[0], 2), **stamp("demos.py", argv)}


def time_fields(m: dict, seconds: float, runs_dir: Path) -> dict:
    """Where the demo's time went: `loop_s`, the seconds its runs spent inside their training loops (each run's
    status: from `started` to its last update), and `outside_loop_share`, the share of the demo's core-seconds
    (parallel × wall) spent elsewhere: the workers' start-up, each run's loading of data and models, the
    supervisor's polling and the idle tail while the last runs finish."""
    from mgr.runstore import Run
    loop = 0.0
    for r in m["runs"]:
        st = Run(runs_dir / r["run_id"]).status()
        if st.get("started") and st.get("updated"):
            loop += st["updated"] - st["started"]
    core_s = m["parallel"] * seconds
    return {"loop_s": round(loop, 1), "outside_loop_share": round(1 - loop / core_s, 3) if core_s > 0 else None}


def resummarize(path: Path, argv) -> list[dict]:
    """Recompute every record's summary in `path` from the values it measured, as today's demo compares
    them (a new comparison, not a new experiment: nothing is trained; the record keeps the command, machine
    and date of its runs and notes the re-summary under "resummarized")."""
    done, note = [], {k: v for k, v in stamp("demos.py", argv).items() if k != "machine"}

    def redo(old: list) -> list:
        new = []
        for r in old:
            demo = demos.DEMOS.get(r.get("demo"))
            ok = demo and isinstance(r.get("values"), list) and all(len(v) == len(demo.arms) for v in r["values"])
            fields = {**summary_fields(demo, r["values"]), "kind": demo.kind} if ok else None
            if fields and any({**r, "compare": demo_records.record_compare(r)}.get(k) != v for k, v in fields.items()):
                r = {**r, **fields, "resummarized": note}
                done.append(r)
            new.append(r)
        return new
    update_records(path, redo)
    return done


def arms_of(m: dict, runs_dir: Path) -> list[dict]:
    """The configuration seed 0 of each arm ran with (its config.json as demo_records.comparable keeps it): what
    the app compares with today's demo to tell a current measurement from an out-of-date one."""
    from mgr.runstore import Run
    return [demo_records.comparable(Run(runs_dir / r["run_id"]).config)
            for r in sorted((r for r in m["runs"] if r["seed"] == 0), key=lambda r: r["arm"])]


def save(path: Path, record: dict) -> None:
    """Replace this demo's record on its dataset in the file (one per demo and dataset), under a lock:
    two benches may write."""
    order = list(demos.DEMOS)

    def replace(old: list) -> list:
        keep = [r for r in old if (r.get("demo"), r.get("dataset")) != (record["demo"], record["dataset"])]
        return sorted(keep + [record], key=lambda r: (r.get("dataset") != demos.SETTING["data.dataset"],
                                                      order.index(r["demo"]) if r["demo"] in order else 99))
    update_records(path, replace)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demos", default=",".join(demos.DEMOS), help="comma-separated demo ids (default: all)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, help="override every demo's steps (its evaluations scale along)")
    p.add_argument("--parallel", type=int, help="trainers at a time (default: one per core, as the app)")
    p.add_argument("--data", default=demos.DEFAULT_DATA, choices=list(demos.SETTINGS),
                   help="the demos' data setting, as Home's choice (mgr.demos.SETTINGS)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a Train-form field of every run, e.g. --set width=32 (repeatable; checked "
                        "before any run, like the form)")
    p.add_argument("--runs-dir", help="keep the runs here (default: a temporary directory)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per demo before it is stopped")
    p.add_argument("--quick", action="store_true", help="smoke test: gda-hurts on digits, 2 seeds of 4 steps")
    p.add_argument("--out", default="bench/results/demos.json")
    p.add_argument("--resummarize", nargs="*", metavar="FILE",
                   help="train nothing: recompute the summaries of the records in FILE (default: the two the "
                        "app shows) from their measured values, as each demo compares its seeds today")
    a = p.parse_args(argv)
    if a.resummarize is not None:
        files = [Path(f) for f in a.resummarize] or [demo_records.MEASURED, demo_records.MEASURED_10_SEEDS]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            p.error(f"--resummarize: no such file {', '.join(missing)}")
        changed = []
        for f in files:
            for r in resummarize(f, argv):
                changed.append(r)
                summary = demo_records.headline(demos.DEMOS[r["demo"]], r)
                print(f"{f}: {r['demo']} on {r['dataset']}, {r['seeds']} seeds: {summary}", flush=True)
        return changed
    ids = [d for d in a.demos.split(",") if d]
    unknown = [d for d in ids if d not in demos.DEMOS]
    if unknown:
        p.error(f"unknown demo(s) {', '.join(unknown)}; choose from {', '.join(demos.DEMOS)}")
    overrides = dict(QUICK) if a.quick else demos.data_overrides(a.data)
    if a.quick:
        ids, a.seeds = (ids if a.demos != p.get_default("demos") else ["gda-hurts"]), 2
    if a.steps is not None:
        overrides["steps"] = a.steps
    for item in a.set:
        field, sep, value = item.partition("=")
        if not sep or field in ("seed", "run_id"):
            p.error(f"--set {item!r}: expected FIELD=VALUE with FIELD a Train-form field other than seed and run_id")
        try:
            overrides[field] = json.loads(value)  # numbers, true/false, null
        except ValueError:
            overrides[field] = value
    try:
        demos.check_seeds(a.seeds)
    except LaunchError as e:
        p.error(str(e))
    runs_dir = Path(a.runs_dir or tempfile.mkdtemp(prefix="mgr-demos-"))
    records = []
    for demo_id in ids:
        try:
            m, seconds = run_demo(demo_id, a.seeds, runs_dir, overrides, a.parallel, a.timeout)
        except LaunchError as e:  # a bad --set or --steps: refused before any of the demo's runs starts
            p.error(f"demo {demo_id}: {e}")
        out = demo_queue.outcome(runs_dir, m)
        rec = record_of(m, out, seconds, argv, runs_dir)
        save(Path(a.out), rec)
        records.append(rec)
        print(f"{demo_id}: {demo_records.headline(out.demo, rec)} [{seconds:.0f} s, {a.seeds} seeds, "
              f"{100 * (rec['outside_loop_share'] or 0):.0f}% outside training loops, runs in {runs_dir}]", flush=True)
    return records


if __name__ == "__main__":
    main()
