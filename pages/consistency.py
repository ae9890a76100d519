"""Consistency: the PCR gaps ‖g(T(x_p)) − g(x_p)‖² of uniform and finder samples."""
import numpy as np
import streamlit as st

from mgr import figures
from mgr.analysis.consistency import gap_extremes, gap_history
from mgr.analysis.files import probe_steps
from mgr.analysis.mosaic import mosaic
from mgr.runstore import Run
from pages._ui import CHART_CONFIG, guarded, overview, pick_run, pick_step, probe_signature, state_banner, through_app

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("🔁 Consistency (PCR gaps)")
st.caption("PCR asks the features of a synthetic image x_p and of its augmented view T(x_p) to agree: the gap "
           "‖g(T(x_p)) − g(x_p)‖² of the fixed probe samples over training.")


@st.cache_data(max_entries=16, show_spinner=False)
def load_history(path: str, sig: tuple) -> dict:
    return gap_history(Run(path))


@st.cache_data(max_entries=32, show_spinner=False)
def load_extremes(path: str, step: int, kind: str, k: int, sig: tuple) -> dict:
    return gap_extremes(Run(path), step, kind, k)


s = pick_run(overview(), need=lambda s: s.method not in ("base", "?"), why="use a generator (every method but base)")
state_banner(s)
run = Run(s.path)
with guarded(s):
    steps = probe_steps(run)
    hist = load_history(str(run.path), tuple(probe_signature(run, t) for t in steps))
    if hist["unreadable"]:
        st.warning(f"Run `{s.id}` has missing or corrupt files: the probe of step(s) "
                   f"{', '.join(map(str, hist['unreadable']))} cannot be read and is left out.")
    if not hist["steps"]:
        st.info("No evaluation with probe samples yet.")
        st.stop()
    if s.method in ("gda", "gda-mps"):
        st.caption(f"This run ({s.method}) does not train on the PCR loss; its gaps show what PCR would see.")
    st.plotly_chart(figures.gap_over_training(hist), config=CHART_CONFIG)
    step = pick_step(run)
    if step not in hist["steps"]:
        st.stop()
    a, b = st.columns([3, 2])
    i = hist["steps"].index(step)
    a.plotly_chart(figures.gap_by_class(hist, i), config=CHART_CONFIG)
    u, f = hist["uniform"][i], hist["finder"][i]
    b.metric("median gap, uniform", f"{np.median(u):.4g}")
    b.metric("median gap, finder", f"{np.median(f):.4g}", delta=f"{np.median(f) - np.median(u):+.3g}",
             delta_color="off")
    b.caption("A large gap: the features of this sample move a lot under augmentation, so PCR pulls on it.")

    kind = st.radio("samples", ["uniform", "finder"], horizontal=True, key="gap-kind")
    k = st.slider("how many", 4, 24, 8, 4, key="gap-k")
    ex = load_extremes(str(run.path), hist["steps"][i], kind, k, probe_signature(run, hist["steps"][i]))
    names = hist["classes"]
    for title, part in (("largest gaps", ex["largest"]), ("smallest gaps", ex["smallest"])):
        st.markdown(f"**{title}** · each pair: x_p, then T(x_p)")
        scale = max(1, 48 // part["images"].shape[-1])
        pairs = [mosaic(np.stack([x, t]), 2, scale, pad=4) for x, t in zip(part["images"], part["augmented"])]
        st.image(pairs, width=110, caption=[f"{names[c]} · {g:.3g}" for c, g in zip(part["y"], part["gap"])])
