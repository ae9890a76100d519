"""Train: launch a run (a detached `python -m mgr train` process), watch it live, stop or resume it."""
import time

import streamlit as st

from mgr import figures, launch
from mgr.analysis.curves import curve_fields, curves, scalar_curves, smoothable
from mgr.runstore import Run
from pages._ui import (CHART_CONFIG, ago, fmt_seconds, guarded, launcher, leaky_badge, overview, pick_run,
                       skipped_files, state_banner, state_text, through_app)

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("🚀 Train")
L = launcher()

# ----------------------------------------------------------------------------- the form
@st.cache_data(ttl=30, show_spinner="reading the image folder…")
def folder_skipped(folder: str) -> list:
    return launch.folder_report(folder)[1]


errors = st.session_state.pop("form_error", None)  # (field, message) of the last refused launch
summaries = overview()  # read once per page run: with 200 runs the listing is most of the page's time
with st.expander("New run", expanded=not summaries or errors is not None):
    # Not an st.form: a field that applies only to some choices (MLTP's variant under procedure mltp, the
    # co-learner's architecture once it is on) appears as soon as that choice is made.
    groups = {"data": "Data", "method": "Method", "schedule": "Schedule", "run": "Run"}
    cols = dict(zip(groups, st.columns(len(groups))))
    values = {}
    for g, title in groups.items():
        cols[g].markdown(f"**{title}**")
    fields = launch.form_fields()
    for f in fields:
        if not f.applies(values):
            values[f.name] = f.default  # not shown; build_config ignores what does not apply
            continue
        box, key = cols[f.group], f"form.{f.name}"
        if f.kind == "select":
            values[f.name] = box.selectbox(f.label, f.options, index=f.options.index(f.default), help=f.help, key=key)
        elif f.kind == "int":
            values[f.name] = int(box.number_input(f.label, value=f.default, step=1, help=f.help, key=key))
        elif f.kind == "float":
            values[f.name] = float(box.number_input(f.label, value=f.default, format="%g", help=f.help, key=key))
        elif f.kind == "optional_float":
            text = box.text_input(f.label, value="" if f.default is None else str(f.default), help=f.help, key=key)
            try:
                values[f.name] = float(text) if text.strip() else None
            except ValueError:
                values[f.name] = text  # TrainConfig names the field and what is allowed
        elif f.kind == "bool":
            values[f.name] = box.toggle(f.label, value=f.default, help=f.help, key=key)
        elif f.kind == "text":
            values[f.name] = box.text_input(f.label, value=f.default, help=f.help, key=key)
        if errors and errors[0] == f.name:
            box.error(errors[1])
    if errors and errors[0] not in {f.name for f in fields if f.applies(values)}:
        st.error(errors[1])
    if values.get("data.dataset") == launch.IMAGEFOLDER and str(values.get("data.folder") or "").strip():
        try:  # the trainer's own scan: what it will skip, before anything is launched
            skipped_files(folder_skipped(values["data.folder"]), "in this folder will be skipped")
        except launch.LaunchError as e:
            if not errors:
                st.error(str(e))
    launched = st.button("Launch", type="primary", key="launch")
if launched:
    try:
        run_id = L.launch(values)
    except launch.LaunchError as e:
        st.session_state["form_error"] = (e.field, str(e))
    else:
        st.session_state["train_run"] = run_id
        st.query_params["run"] = run_id
        st.toast(f"launched {run_id}")
    st.rerun()

pending = L.pending()  # launches with no run directory yet
for p in pending:
    if p["state"] == "starting":
        st.info(f"⏳ {p['run_id']} is starting (loading data and the generator)…")
    else:
        st.error(f"❌ {p['run_id']} failed before it could create its run directory:")
        st.code(p["log"] or "(no output)", language=None)
        if st.button("Dismiss", key=f"dismiss-{p['run_id']}"):
            L.dismiss(p["run_id"])
            st.rerun()

if any(p["state"] == "starting" for p in pending):
    @st.fragment(run_every=1.0)
    def wait_for_start():
        if [p["state"] for p in L.pending()] != [p["state"] for p in pending]:
            st.rerun(scope="app")  # a run directory appeared, or a launch failed
    wait_for_start()

# ----------------------------------------------------------------------------- the run
if any(p["state"] == "starting" for p in pending):
    summaries = overview()  # a run directory may have appeared since
if "train_run" in st.session_state and any(s.id == st.session_state["train_run"] for s in summaries):
    st.session_state["run"] = st.session_state.pop("train_run")
    st.query_params["run"] = st.session_state["run"]
if not summaries:
    st.info("No runs yet: fill in the form above and press **Launch** (the defaults finish in a few minutes on a "
            "CPU), or start a teaching preset on **Home**.")
    st.stop()
s = pick_run(summaries)
leaky_badge(s)
if s.state == "unknown":
    state_banner(s)  # says why it cannot be read, and stops
run = Run(s.path)
live = s.state == "running"
c1, c2, c3 = st.columns([1, 1, 2])
paused = c1.toggle("pause live updates", key="paused", disabled=not live)
every = c2.select_slider("refresh every (s)", [1, 2, 5, 10], value=2, disabled=not live)
smoothing = c3.slider("smoothing (EMA, raw curve faint behind)", 0.0, 0.99, 0.6, 0.01)
run_every = every if live and not paused else None


@st.fragment(run_every=run_every)
def status_panel():
    with guarded(s):
        st_ = run.status()
        state = run.state(st_)
        if live and state != "running":
            st.rerun(scope="app")  # finished, failed or stopped: redraw everything once, then stay still
        step, total = st_.get("step", 0), st_.get("total_steps") or s.total_steps
        held = state == "running" and bool(st_.get("paused"))
        st.progress(min(step / total, 1.0) if total else 0.0,
                    text=f"{'⏸️ held' if held else state_text(state)} · step {step}/{total}")
        m = st.columns(5)
        m[0].metric("best val acc", f"{st_['best_val_acc']:.3f}" if st_.get("best_val_acc") is not None else "—",
                    help=f"at step {st_.get('best_step')}")
        m[1].metric("images / s", f"{st_.get('img_per_s', 0):.0f}" if st_.get("img_per_s") else "—")
        m[2].metric("ETA", fmt_seconds(launch.eta_seconds(st_, s.images_per_step)) if state == "running" else "—",
                    help="at the current throughput, evaluations not counted")
        m[3].metric("updated", ago(st_.get("updated")))
        m[4].metric("device", st_.get("device", "?"))
        if state == "killed":
            st.warning(f"⚠️ Killed (resume?): the trainer (pid {st_.get('pid')}) holds the run's lock no more, but "
                       f"status.json still says running at step {step}: it was killed (SIGKILL, out of memory, a "
                       "reboot). **Resume** continues it from its last checkpoint.")
        elif state in ("failed", "stopped") and (st_.get("error") or s.error):
            (st.error if state == "failed" else st.warning)(st_.get("error") or s.error)
        b = st.columns([1, 1, 1, 5])
        if held:
            if b[2].button("Continue", help="let the held run go on from where it is"):
                run.unpause()
                st.toast("continuing")
        elif b[2].button("Pause", disabled=state != "running",
                         help="hold the trainer after its current step, keeping its place; it costs no CPU meanwhile"):
            run.pause()
            st.toast("pausing after the current step")
        if b[0].button("Stop", disabled=state != "running", help="SIGTERM: saves last.pt, state becomes stopped"):
            try:
                L.stop(run)
                st.toast("stopping: the trainer finishes its step and saves a checkpoint")
            except launch.LaunchError as e:
                st.error(str(e))
        if b[1].button("Resume", disabled=state not in ("stopped", "failed", "killed"),
                       help="continue from last.pt without duplicating a metrics line"):
            try:
                L.resume(run)
                time.sleep(1.0)  # let the trainer mark itself running before the page redraws
                st.rerun(scope="app")
            except launch.LaunchError as e:
                st.error(str(e))
        tail = launch.log_tail(L.runs_dir, run.id, 12)
        if tail:
            with st.expander("log tail", expanded=state == "failed"):
                st.code(tail, language=None)


status_panel()
skipped_files(run.data_report().get("skipped"), "were skipped when this run read its data")

cfg = s.config
mltp, co = cfg.get("procedure") == "mltp", bool(cfg.get("co_learner"))
PANELS = [  # (title, source, field picker, shown for this run); any numeric field not listed lands in "more curves"
    ("Accuracy", "metrics", lambda k: k.endswith("_acc") and not k.startswith("co_"), True),
    ("Training losses", "scalars", lambda k: k in ("loss", "ce", "pcr", "syn_ce", "meta_val_ce", "mltp_ce_j"), True),
    ("Finder: latent shift and KL", "scalars", lambda k: k in ("latent_shift", "shift_spread", "kl"), s.method in ("gda-mps", "mgr", "?")),
    ("Held-out losses", "metrics", lambda k: k in ("val_loss", "test_loss"), True),
    ("MLTP: step size α per layer group", "scalars",
     lambda k: k.startswith("alpha_") and k.endswith("_mean"), mltp),
    ("Gradient agreement (cosine)", "scalars", lambda k: k in ("mltp_grad_cos", "co_grad_cos"), mltp or co),
    ("Co-learner: CE and accuracy on its batch", "scalars", lambda k: k in ("co_ce", "co_acc"), co),
]
PANELS = [p for p in PANELS if p[3]]


def panel(title: str, source: str, pick) -> None:
    @st.fragment(run_every=run_every, key=f"panel-{title}")
    def draw():
        with guarded(s):
            cols = curves(run) if source == "metrics" else scalar_curves(run)
            fields = [k for k in curve_fields(cols) if pick(k)]
            if not fields:
                st.caption(f"{title}: nothing logged yet" + (" by this method" if s.state != "running" else ""))
                return
            raw = not all(smoothable(k) for k in fields)  # schedules and learnt state: never smoothed
            bands = {k: (cols[k[:-5] + "_min"], cols[k[:-5] + "_max"]) for k in fields
                     if k.endswith("_mean") and k[:-5] + "_min" in cols and k[:-5] + "_max" in cols}
            fig = figures.curves([(k, cols["step"], cols[k]) for k in fields],
                                 smoothing if source == "scalars" and not raw else 0.0, title,
                                 markers=source == "metrics", bands=bands)
            st.plotly_chart(fig, config=CHART_CONFIG, key=f"chart-{title}")
            if bands:
                st.caption("lines: the mean α of each group of tensors; shaded: their min–max")
    draw()


left, right = st.columns(2)
for i, (title, source, pick, _) in enumerate(PANELS):
    with (left if i % 2 == 0 else right):
        panel(title, source, pick)


@st.fragment(run_every=run_every)
def other_panel():
    with guarded(s):
        sc, mt = scalar_curves(run), curves(run)
        known = {k for _, src, pick, _ in PANELS for k in curve_fields(mt if src == "metrics" else sc)
                 if pick(k)}
        other = sorted((set(curve_fields(sc)) | set(curve_fields(mt))) - known)
        chosen = st.multiselect("more curves (every other numeric field the trainer logs)", other,
                                default=[k for k in ("lr",) if k in other], key="other-curves")
        for k in chosen:
            cols = sc if k in sc else mt
            smoothed = smoothing if cols is sc and smoothable(k) else 0.0  # lr, α: always raw
            title = k if smoothable(k) else f"{k} (a schedule or learnt state: never smoothed)"
            st.plotly_chart(figures.curves([(k, cols["step"], cols[k])], smoothed, title, height=240),
                            config=CHART_CONFIG, key=f"chart-other-{k}")


other_panel()
