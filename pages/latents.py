"""Latents: what the finder does to the probe latents. Same z, G(z, y) vs G(F(z), y)."""
import numpy as np
import streamlit as st

from mgr import figures
from mgr.analysis.curves import curves
from mgr.analysis.curves import scalar_curves
from mgr.analysis.finder_fid import fid_uniform_vs_finder
from mgr.analysis.finder_view import (AMPLIFY, SAMPLE_STATS, SIGNAL_THRESHOLD, SignalReading, amplified_shifts,
                                      one_vector_reading, sample_stats, shift_history, signal_reading)
from mgr.analysis.latents import LatentView, latent_view
from mgr.analysis.mosaic import mosaic
from mgr.runstore import Run
from pages._text import one_vector_finding, signal_finding
from pages._ui import (CHART_CONFIG, finding, guarded, overview, pick_run, pick_step, probe_signature, signature, state_banner,
                       through_app)

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("🎲 Latents — uniform vs finder")
st.caption("The finder's samples G(F(z), y) beside uniform ones G(z, y) from the same probe latents z.")


@st.cache_data(max_entries=32, show_spinner=False)
def load_view(path: str, step: int, sig: tuple) -> LatentView:
    return latent_view(Run(path), step)


@st.cache_data(max_entries=32, show_spinner=False)
def load_curves(path: str, sig: tuple) -> dict:
    return curves(Run(path))


@st.cache_data(max_entries=32, show_spinner=False)
def load_reading(path: str, sig: tuple) -> SignalReading:
    return signal_reading(scalar_curves(Run(path)))


@st.cache_data(max_entries=32, show_spinner=False)
def load_shifts(path: str, sig: tuple) -> dict:
    return shift_history(Run(path))


@st.cache_data(max_entries=32, show_spinner=False)
def load_amplified(path: str, step: int, sig: tuple) -> dict:
    return amplified_shifts(Run(path), step)


@st.cache_data(max_entries=32, show_spinner=False)
def load_stats(path: str, step: int, sig: tuple) -> dict:
    return sample_stats(Run(path), step)


s = pick_run(overview(), need=lambda s: s.method not in ("base", "?"), why="use a generator (every method but base)")
state_banner(s)
run = Run(s.path)
with guarded(s):
    reading = load_reading(str(run.path), signature(run, "scalars.jsonl"))
if reading.verdict == "noise":  # said first: everything below is then the finder's noise, not its signal
    st.markdown(":orange-badge[noise] The finder's steps are mostly noise (details below).")
with guarded(s):
    c1, c2 = st.columns([3, 2])
    with c1:
        step = pick_step(run)
    view = load_view(str(run.path), step, probe_signature(run, step))
    names = view.classes
    with c2:
        cls = st.selectbox("class", range(len(names)), format_func=lambda c: names[c], key="latent-class")

    if s.method in ("pcr", "gda"):
        st.info(f"This run ({s.method}) samples uniformly: F is the identity, so both columns are the same. "
                "Pick an mgr or gda-mps run to see the finder at work.")
    m = view.y == cls
    scale = max(1, 64 // view.uniform_images.shape[-1])
    left, right = st.columns(2)
    for col, kind, images, conf, pred in ((left, "uniform G(z, y)", view.uniform_images, view.uniform_conf, view.uniform_pred),
                                          (right, "finder G(F(z), y)", view.finder_images, view.finder_conf, view.finder_pred)):
        with col:
            st.markdown(f"**{kind}** · mean p(y) = {conf[m].mean():.2f} · "
                        f"{(pred[m] == cls).mean():.0%} classified as {names[cls]}")
            tiles = [mosaic(img[None], 1, scale) for img in images[m]]
            st.image(tiles, caption=[f"{c:.2f}" + ("" if p == cls else f" → {names[p]}") for c, p in zip(conf[m], pred[m])],
                     width=72)
    with st.expander("all classes at this step (rows: classes; left uniform, right finder)"):
        k = int(m.sum())
        a, b = st.columns(2)
        a.image(mosaic(view.uniform_images, k, scale // 2 or 1), caption="uniform", width="stretch")
        b.image(mosaic(view.finder_images, k, scale // 2 or 1), caption="finder", width="stretch")

    a, b = st.columns([3, 2])
    shown = a.multiselect("classes in the latent plot", range(len(names)), default=[cls],
                          format_func=lambda c: names[c], key="pca-classes")
    magnify = a.select_slider("magnify the shifts F(z) − z", [1, 2, 5, 10, 20, 50], value=1, key="magnify",
                              help="axes: the two directions in which the finder moves latents most")
    a.plotly_chart(figures.latent_pca(view, shown or None, magnify), config=CHART_CONFIG)
    b.plotly_chart(figures.confidence_bars(view), config=CHART_CONFIG)
    b.metric("mean latent shift ‖F(z) − z‖ at this step", f"{view.shift.mean():.3f}",
             help="0 for uniform sampling; the KL term keeps F(z) near N(0, I)")

    cols = load_curves(str(run.path), signature(run, "metrics.jsonl"))
    fields = [k for k in ("latent_shift", "shift_spread", "kl") if k in cols]
    if fields:
        st.plotly_chart(figures.curves([(k, cols["step"], cols[k]) for k in fields], 0.0,
                                       "latent shift (and its part that depends on z) and KL over training "
                                       "(means between evaluations)", markers=True),
                        config=CHART_CONFIG)

with guarded(s):
    st.subheader("Does the finder follow a signal?")
    finding(signal_finding(reading))
    if reading.verdict is not None:
        st.plotly_chart(figures.signal_curve(reading, SIGNAL_THRESHOLD), config=CHART_CONFIG)

    hist = load_shifts(str(run.path), signature(run, "probes/static.npz", *(f"probes/step_{t:07d}.npz"
                                                                            for t in run.probe_steps())))
    st.subheader("What the finder pushes toward")
    if (one_vector := one_vector_reading(hist, step)) is not None:
        finding(one_vector_finding(one_vector))
    st.caption(f"G(z + k·(F(z) − z), y) for a few probe latents z per class (rows: classes) at step {step}: "
               "k = 0 is the uniform sample, k = 1 the finder's, larger k amplify the finder's shift to show its "
               "direction.")
    if s.method in ("pcr", "gda"):
        st.info(f"No finder in a {s.method} run: F(z) − z = 0, so every k shows the uniform sample.")
    elif not (run.path / "last.pt").exists():
        st.info("No checkpoint yet: the generator is read with the run's last.pt (written at each evaluation).")
    else:
        amp = load_amplified(str(run.path), step, signature(run, "probes/static.npz", f"probes/step_{step:07d}.npz",
                                                            "last.pt"))
        per_class = amp["images"].shape[0] // len(np.unique(amp["y"]))
        for col, i, k in zip(st.columns(len(AMPLIFY)), range(len(AMPLIFY)), amp["ks"]):
            col.image(mosaic(amp["images"][:, i], per_class, max(1, 32 // amp["images"].shape[-1])),
                      caption=f"k = {k:g}", width="stretch")
        st.caption(f"‖F(z) − z‖ of these latents: mean {amp['shift'].mean():.3f} (max {amp['shift'].max():.3f}).")

    st.subheader("How the shift grows over training")
    a, b = st.columns(2)
    a.plotly_chart(figures.curves([("‖F(z) − z‖", hist["steps"], hist["shift_mean"]),
                                   ("its part that depends on z", hist["steps"], hist["spread"])], 0.0,
                                  "mean latent shift of the probes (± std) and its part that depends on z",
                                  markers=True,
                                  bands={"‖F(z) − z‖": (hist["shift_mean"] - hist["shift_std"],
                                                        hist["shift_mean"] + hist["shift_std"])}),
                   config=CHART_CONFIG)
    b.plotly_chart(figures.curves([("same class, same step", hist["steps"], hist["same_class_cos"]),
                                   ("any two probes", hist["steps"], hist["any_probes_cos"]),
                                   ("same probe, previous step", hist["steps"], hist["successive_cos"])], 0.0,
                                  "direction: mean cosine between shifts F(z) − z", markers=True),
                   config=CHART_CONFIG)
    st.caption("A consistent direction is not yet a signal: a shift that ignores z and y (a drifted bias) is as "
               "consistent across classes as within one, and a random walk keeps its direction from step to step, "
               "since each shift holds the steps already taken. Read it with the hg_cos reading above.")

    st.subheader("Uniform vs finder samples")
    stats = load_stats(str(run.path), step, probe_signature(run, step))
    stat = st.radio("statistic", SAMPLE_STATS, horizontal=True, key="sample-stat",
                    help="confidence: p(y) of the intended class; margin: p(y) minus the best other class; "
                         "diversity: mean feature distance g_ψ to the other probes of the class")
    st.plotly_chart(figures.sample_stat_bars(stats, stat), config=CHART_CONFIG)
    with st.expander("every statistic per class (mean and std over probes)"):
        st.dataframe([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in stats["rows"]],
                     hide_index=True)

st.subheader("FID of uniform and finder samples")
st.caption("Class-balanced samples against the test split, at the run's last checkpoint, with clean-fid. "
           "Computed on demand and cached in the run's analysis/ folder.")
if not (run.path / "last.pt").exists():
    st.info("No checkpoint yet: FID needs the finder's weights from last.pt (written at each evaluation).")
else:
    num = st.select_slider("samples per kind", [500, 1000, 2000, 5000], value=2000, key="fid-num")
    key = ("fid", str(run.path), num, signature(run, "last.pt"))
    if st.button("Compute FID", key="fid-go") or key in st.session_state:
        with guarded(s), st.spinner("generating samples and features…"):
            if key not in st.session_state:
                st.session_state[key] = fid_uniform_vs_finder(run, num)
            r = st.session_state[key]
        f1, f2, f3 = st.columns([1, 1, 3])
        f1.metric("FID uniform", f"{r['uniform']:.2f}")
        f2.metric("FID finder", f"{r['finder']:.2f}" if r["finder"] is not None else "—",
                  delta=f"{r['finder'] - r['uniform']:+.2f}" if r["finder"] is not None else None, delta_color="inverse")
        f3.caption(f"feature extractor: **{r['extractor']}**; {r['num']} generated vs {r['n_real']} test images; "
                   f"step {r['step']}; " + ("cached" if r.get("cached") else f"{r['seconds']} s"))
