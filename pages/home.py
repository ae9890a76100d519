"""Home: what MGR is, the runs found, and the teaching demos: paired experiments over seeds whose
verdict panel fills in as the seeds finish."""
import os

import numpy as np
import streamlit as st

from mgr import demo_queue, demo_records, demos, figures, launch
from mgr.analysis.runs import runs_states
from mgr.runstore import Run
from pages._diagram import mgr_svg
from pages._text import also_sentence, demo_finding, live_finding
from pages._why import why_panel
from pages._ui import CHART_CONFIG, LEAKY_MARK, STATE_ICON, finding, launcher, overview, runs_dir, state_text, through_app

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)


def any_running(states: tuple) -> bool:
    return any(state == "running" for _, state, _ in states)


# A warm supervisor for the next demo (docs/demos.md#the-warm-standby), started first thing so that it loads
# torch while the page draws, and only while nothing runs, so that its start-up never takes a trainer's core.
seen = runs_states(runs_dir())
if not any_running(seen):
    demo_queue.ensure_standby(runs_dir(), os.getpid())

st.title("🧪 MGR Lab")
st.markdown("**Generative data augmentation** adds a generator's images to a small training set. **Meta Generative "
            "Regularization** (Yamaguchi et al., NeurIPS 2023) uses them only where they help the classifier on "
            "held-out data. One iteration:")
st.image(mgr_svg(), width="stretch")
with st.expander("details"):
    st.markdown(
        "Done naively (**GDA**: synthetic images in the cross-entropy loss) augmentation can *lower* test accuracy: "
        "the images are imperfect members of their class, and uniformly sampled latents give many useless or "
        "ambiguous ones, which the classifier then learns as truth. MGR keeps synthetic images out of the "
        "cross-entropy. **PCR** uses them only to make the feature extractor *consistent*: ‖g(T(x_p)) − g(x_p)‖² "
        "for a random augmentation T. **MPS** trains a *finder* F(z) that rewrites the latents so that the samples "
        "help the classifier on held-out validation data, through a one-step lookahead of the classifier (a "
        "meta-gradient).\n\n"
        "Explore a run: **Latents** (uniform vs finder samples), **Feature space** (where samples sit among the "
        "real classes), **Consistency** (PCR gaps), **Compare** (accuracy over runs and seeds). The same trainer "
        "offers MLTP (two batches a step, learnt step sizes) and CML's co-learner. The method: `docs/method.md`.")

# ----------------------------------------------------------------------------- demos

st.subheader("Teaching demos")
st.markdown("Each demo answers one question with a **paired experiment**: its arms run with the same seeds, "
            "and the verdict is what the 95% interval of their differences supports.")
with st.expander("how a demo is judged"):
    st.markdown(
        "Seed k of every arm shares the data split (data seed k mod 3 on Fashion-MNIST, so a verdict covers "
        "several draws of the 540 images) and the initialisation, so each seed gives one difference per pair of "
        "arms. The verdict: **holds** when the whole 95% interval is above 0, **opposite** when below, otherwise "
        "**inconclusive**. A sweep compares several doses of one dial with one reference and holds where some dose "
        "holds. The finder demos measure how far the finder moves the latents, a size: there each seed gives a "
        "factor A / B, and the verdict is on their geometric mean (above ×1). Each card shows what this project "
        "measured, not what the paper claims: `docs/demos.md`, `docs/findings.md`.")
with st.expander("Demo settings"):
    data = st.radio("data", list(demos.SETTINGS), format_func=demos.DATA_LABELS.get, horizontal=True, key="demo_data",
                    help="Fashion-MNIST shows what a generator gets wrong; digits is the fastest")
    seeds = int(st.number_input("seeds per arm", min_value=2, max_value=31, value=5, step=1, key="demo_seeds",
                                help="more seeds give a narrower interval and take longer"))
    steps = st.number_input("steps per run (empty: the demo's)", min_value=1, value=None, step=1, key="demo_steps",
                            help="fewer steps are faster, but the measured verdicts on the cards are for the "
                                 "demo's own step count")
records = demo_records.measured(data=data)
more_seeds = demo_records.measured(demo_records.MEASURED_10_SEEDS, data=data)
SECTIONS = (("How generative augmentation fails", lambda d: d.kind == "failure" and d.subject == "augmentation"),
            ("Repairs and methods", lambda d: d.kind != "failure"),
            ("How the finder fails", lambda d: d.kind == "failure" and d.subject != "augmentation"))


def demo_card(demo: demos.Demo) -> None:
    st.markdown(f"{'⚠️ ' if demo.kind == 'failure' else ''}**{demo.question}**")
    if data not in demo.datasets:
        st.caption(f"Runs on {', '.join(demos.DATA_LABELS[d] for d in demo.datasets)} only: its arms use that "
                   "data's generators.")
        return
    shown = demo_finding(demo, records.get(demo.id), data)
    st.markdown(f":{shown.colour}-badge[{shown.verdict}] {shown.sentence}")
    with st.expander("details"):
        st.markdown(demo.about)
        st.caption(shown.details)
        if demo.id in more_seeds:  # the same demo re-run with more seeds
            more = demo_finding(demo, more_seeds[demo.id], data)
            st.caption(f":{more.colour}-badge[{more.verdict}] {more.sentence} {more.details}")
    runs = len(demo.arms)
    if st.button(f"Launch {seeds} seeds × {runs} arms", key=f"demo-{demo.id}", type="primary"):
        try:
            overrides = {**demos.data_overrides(data), **({"steps": int(steps)} if steps else {})} or None
            st.session_state["demo_launch"] = demo_queue.launch(demo.id, seeds, runs_dir(), overrides)
        except launch.LaunchError as e:
            st.error(str(e))


for title, belongs in SECTIONS:
    items = [d for d in demos.DEMOS.values() if belongs(d)]
    st.markdown(f"##### {title}")
    cols = [c for i in range(0, len(items), 3) for c in st.columns(3)]  # rows of three cards
    for col, demo in zip(cols, items):
        with col.container(border=True):
            demo_card(demo)

launches = {m["id"]: m for m in demo_queue.list_launches(runs_dir())}  # newest first
if launches:
    if st.session_state.get("demo_launch") not in launches:  # first visit: the launch in the URL, else the newest
        wanted = st.query_params.get("demo")
        st.session_state["demo_launch"] = wanted if wanted in launches else next(iter(launches))
    chosen = st.selectbox("demo launch", list(launches), key="demo_launch",
                          format_func=lambda i: f"{demos.DEMOS[launches[i]['demo']].question} · {i}")
    st.query_params["demo"] = chosen


def arm_curves(m: dict, demo: demos.Demo, field: str) -> tuple[list, dict]:
    """Mean ± std over seeds of `field` per arm, on the steps every seed of the arm has reached."""
    series, bands = [], {}
    for i, arm in enumerate(demo.arms):
        per_run = [{r["step"]: r.get(field) for r in Run(runs_dir() / r["run_id"]).metrics()}
                   for r in m["runs"] if r["arm"] == i and (runs_dir() / r["run_id"] / "metrics.jsonl").exists()]
        steps_ = sorted(set.intersection(*(set(k for k, v in p.items() if v is not None) for p in per_run))) \
            if per_run else []
        if not steps_:
            continue
        ys = np.array([[p[s] for s in steps_] for p in per_run], dtype=float)
        scale = 100.0 if field.endswith("_acc") else 1.0
        mean, std = scale * ys.mean(0), scale * (ys.std(0, ddof=1) if len(ys) > 1 else np.zeros(len(steps_)))
        name = f"{arm.label} ({len(ys)} seed{'s' if len(ys) > 1 else ''})"
        series.append((name, np.array(steps_), mean))
        bands[name] = (mean - std, mean + std)
    return series, bands


def seed_number(demo: demos.Demo, va, vb) -> float | None:
    """What the strip chart shows for one seed: A − B, or for a ratio statistic the factor A / B."""
    d = None if va is None or vb is None else demos.seed_difference(demo.statistic, va, vb)
    return None if d is None else demo.statistic.shown(d)


# A running demo's panel polls in two parts: its progress bar every 2 s, and its verdict, charts and images (which
# change only as runs end or evaluate) every 6 s. Each poll makes the browser redraw the page: beside a running
# demo, the whole panel redrawn every 2 s cost headless Chromium 0.14-0.16 CPU s a second, taken from the trainers,
# against 0.09 with only the progress polled (docs/demos.md#what-an-open-home-page-costs).
PROGRESS_EVERY = 2.0
PANEL_EVERY = 6.0
RUNS_EVERY_IN_DEMO = 10.0  # s between redraws of the runs list below a running demo (5 s otherwise)


def launch_over(m: dict, out: demo_queue.Outcome) -> bool:
    """Every run ended, or the demo stopped with none of its runs still going: its panel can stop polling."""
    return out.done or (m["stopped"] and not any(s in demo_queue.ACTIVE for s in out.states))


def read_launch(launch_id: str, supervise: bool) -> tuple[dict, demo_queue.Outcome, bool] | None:
    """The launch's manifest, its outcome so far, and (with `supervise`) whether its supervisor runs, restarting a
    queue whose supervisor died; None, with the error shown, for a launch that cannot be read."""
    try:
        m = demo_queue.read_manifest(runs_dir(), launch_id)
        running = supervise and demo_queue.ensure_supervisor(runs_dir(), launch_id)
    except launch.LaunchError as e:
        st.error(str(e))
        return None
    return m, demo_queue.outcome(runs_dir(), m), running


def demo_progress(launch_id: str, live: bool) -> None:
    """The launch's question, progress bar and Stop / Resume: the part of the panel that polls fastest."""
    read = read_launch(launch_id, supervise=True)
    if read is None:
        return
    m, out, running = read
    if live and launch_over(m, out):
        st.rerun(scope="app")  # drawn once more by the whole page, which then stops polling
    st.markdown(f"#### {out.demo.question}")
    ended = sum(s in demo_queue.DONE for s in out.states)
    counts = {s: out.states.count(s) for s in dict.fromkeys(out.states)}
    st.progress(ended / len(out.states), text=f"{ended} of {len(out.states)} runs ended · " +
                ", ".join(f"{STATE_ICON.get(s, '⏳')} {n} {s}" for s, n in counts.items()))
    a, b, c = st.columns(3)
    if m["stopped"] and not out.done:
        if a.button("▶️ Resume the demo", key=f"resume-{launch_id}"):
            demo_queue.resume(runs_dir(), launch_id)
            st.rerun(scope="app")  # the panel polls again
    elif running and b.button("⏹️ Stop the demo", key=f"stop-{launch_id}"):
        demo_queue.stop(runs_dir(), launch_id)
        st.rerun(scope="fragment")
    c.page_link("pages/compare.py", label="Compare these runs", icon="📊",
                query_params={"runs": ",".join(r["run_id"] for r in m["runs"])})


def verdict_panel(launch_id: str) -> None:
    """The verdict so far, the per-seed chart, the why panel and the per-seed values."""
    read = read_launch(launch_id, supervise=False)
    if read is None:
        return
    m, out, _ = read
    demo = out.demo
    finding(live_finding(demo, out.summary, out.done, out.seeds, out.summaries))
    if out.guard_stops:
        st.warning(f"The finder's guard stopped {len(out.guard_stops)} run(s): the latents left the generator's "
                   "prior (the shift it stopped at is their value).")
    if out.failed:
        st.warning(f"{len(out.failed)} run(s) ended without a value (their seeds are left out): "
                   f"{', '.join(out.failed)}")
    if any(a.values.get("leaky_generator") for a in demo.arms):
        st.markdown(":red-badge[leaky generator] An arm of this demo trains on a generator that saw images its "
                    "classifier must not: its accuracy is inflated, on purpose, to show why the trainer refuses it.")
    if any(s.n for s in out.summaries):
        chart = figures.dose_curves(demo, out.summaries) if demo.doses else figures.demo_strip(demo, out.summaries)
        st.plotly_chart(chart, width="stretch", config=CHART_CONFIG)
    for stat in demo.also:
        st.caption(also_sentence(demo, stat, out.also[stat.name][1]))
    why_panel(runs_dir(), out, launch_id)
    with st.expander("per-seed values and accuracy curves"):
        unit = demo.statistic.unit or "value"
        rows = []
        for k, vals in enumerate(out.values):
            row = {"seed": k, **{f"{arm.label} ({unit})": v for arm, v in zip(demo.arms, vals)}}
            for pair in demo.pairs:
                row[demo.pair_label(pair)] = seed_number(demo, vals[demo.arm_index(pair.a)], vals[demo.arm_index(pair.b)])
            rows.append(row)
        st.dataframe(rows, hide_index=True, width="stretch",
                     column_config={demo.pair_label(p): st.column_config.NumberColumn(format="×%.2f")
                                    for p in demo.pairs} if demo.statistic.ratio else None)
        field = "test_acc" if demo.statistic is demos.TEST_ACC else "latent_shift"
        series, bands = arm_curves(m, demo, field)
        if series:
            label = "test accuracy (%)" if field == "test_acc" else "latent shift ‖F(z) − z‖"
            st.plotly_chart(figures.curves(series, title=f"{label}, mean ± std over seeds", ytitle=label, markers=True,
                                           bands=bands), width="stretch", config=CHART_CONFIG)


# The live parts poll only while something runs, so an open Home page showing a finished demo leaves the trainers
# alone. watch_runs, below, redraws the page when a run starts or ends, which turns the polling on or off.
live = False  # the demo launch shown is still going
if launches:
    with st.container(border=True):
        try:
            shown_m = demo_queue.read_manifest(runs_dir(), st.session_state["demo_launch"])
            live = not launch_over(shown_m, demo_queue.outcome(runs_dir(), shown_m))
        except launch.LaunchError:
            live = False
        st.fragment(run_every=PROGRESS_EVERY if live else None)(demo_progress)(st.session_state["demo_launch"], live)
        st.fragment(run_every=PANEL_EVERY if live else None)(verdict_panel)(st.session_state["demo_launch"])

# ----------------------------------------------------------------------------- runs

st.subheader("Runs")


def runs_table() -> None:
    summaries = overview()
    if not summaries:
        st.info(f"No runs yet in `{runs_dir()}`. Launch a demo above, use the **Train** page, or run "
                "`python -m mgr train --dataset digits --ratio 0.1 --method mgr --steps 300` in a shell.")
    else:
        st.dataframe(
            [{"state": state_text(s.state), "run": s.id, "configuration": f"{LEAKY_MARK} · {s.name}" if s.leaky else s.name,
              "data": f"{s.dataset} {s.ratio:g}" if s.ratio else s.dataset, "seed": s.seed,
              "progress": s.step / s.total_steps if s.total_steps else 0.0, "best val acc": s.best_val_acc,
              "test acc @ best val": s.test_at_best, "error": s.error or ""} for s in summaries],
            hide_index=True, width="stretch",
            column_config={"progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
                           "best val acc": st.column_config.NumberColumn(format="%.3f"),
                           "test acc @ best val": st.column_config.NumberColumn(format="%.3f")})
        for s in [s for s in summaries if s.state == "killed"][:10]:
            a, b = st.columns([5, 1])
            a.warning(f"⚠️ **{s.id}** was killed (resume?): {s.error}")
            if b.button("Resume", key=f"resume-{s.id}"):
                try:
                    launcher().resume(Run(s.path))
                    st.toast(f"resuming {s.id}")
                except launch.LaunchError as e:
                    st.error(str(e))


st.session_state["home-runs-seen"] = seen
# below a running demo's panel the runs list polls less often: each poll of a fragment costs the browser a redraw,
# taken from the trainers
st.fragment(run_every=(RUNS_EVERY_IN_DEMO if live else 5.0) if any_running(seen) else None)(runs_table)()


@st.fragment(run_every=3.0)
def watch_runs() -> None:
    """Draws nothing. While nothing runs, a change of the runs (one appears, starts, ends, dies or is held: their
    status.json, not their metrics) draws the whole page again; once the last running run has ended, so does that.
    So the demo panel and the runs list poll exactly while something runs, and show it from its start."""
    now, was = runs_states(runs_dir()), st.session_state.get("home-runs-seen")
    if (now != was and not any_running(was)) or (any_running(was) and not any_running(now)):
        st.rerun(scope="app")


watch_runs()
