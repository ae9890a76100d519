"""Explore: steer the generator's latent by hand at one evaluation step and read what the classifier
and the finder make of each position. The computation lives in mgr.analysis.explore."""
import numpy as np
import streamlit as st

from mgr import figures
from mgr.analysis import explore as ex
from mgr.analysis.feature_map import feature_map
from mgr.analysis.mosaic import mosaic
from mgr.runstore import Run
from pages._ui import (CHART_CONFIG, guarded, overview, pick_run, pick_step, probe_signature, state_banner,
                       through_app, umap_state)

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("🧭 Explore — steer the generator")
st.caption("Move a latent z along named directions and between two class labels, and see G(z, y) with what the "
           "classifier and the finder make of it.")

SPAN = 12.0  # slider range along a unit direction: ‖z‖ ≈ √d = 8 for d = 64, so ±12 leaves the prior on purpose


@st.cache_data(max_entries=32, show_spinner=False)
def load_checkpoints(path: str, sig: tuple) -> dict:
    return ex.checkpoint_steps(Run(path))


@st.cache_resource(max_entries=8, show_spinner=False)
def load_models(path: str, step: int, sig: tuple) -> ex.StepModels:
    return ex.step_models(Run(path), step)  # once per (run, step, weights file): a slider move never loads


@st.cache_data(max_entries=16, show_spinner=False)
def load_probes(path: str, step: int, sig: tuple) -> dict:
    run = Run(path)
    return {"static": run.load_probe("static"), "probe": run.load_probe(step)}


@st.cache_resource(max_entries=8, show_spinner=False)
def load_map(path: str, step: int, method: str, sig: tuple):
    """The step's map, fitted once (and on disk, shared with Feature space), and its fitted placement."""
    fmap = feature_map(Run(path), step, method)
    return fmap, ex.step_placer(fmap, Run(path).load_probe(step))


# runs with a generator first, so the default choice is one this page can steer
summaries = overview()
s = pick_run(sorted(summaries, key=lambda r: r.method in ("base", "?")), key="run")
state_banner(s)
run = Run(s.path)
if s.method in ("base", "?"):
    st.info(f"Run `{s.id}` ({s.method}) trains without a generator: there is no latent to steer. Pick a run of "
            "gda, gda-mps, pcr or mgr.")
    st.stop()

with guarded(s):
    c = st.columns([3, 1])
    with c[0]:
        step = pick_step(run, key="explore-step")
    warm = umap_state()
    method = c[1].radio("map", ["pca", "umap"], horizontal=True, key="explore-projection",
                        disabled=not warm["done"] or bool(warm["error"]),
                        help="the step's feature map, fitted once per (run, step) and cached on disk like the Feature "
                             "space page's; UMAP once its compilation has finished in the background")
    have = load_checkpoints(str(run.path), ex.checkpoint_signature(run))
    if step not in have:
        kept = ", ".join(f"step {t} ({f})" for t, f in sorted(have.items())) or "none yet"
        st.info(f"No weights at step {step}: this run kept the weights of every evaluation only in last.pt (its last "
                f"evaluation) and best.pt (the classifier at its best validation step) — it was trained with "
                f"`--keep-weights last`, or `auto` with a classifier over 8 MiB (ResNet-18), or before weights of "
                f"every evaluation were kept. Steps with weights: {kept}. Pick one of those on the slider.")
        st.stop()
    here_box = st.container()  # what G makes of z, shown above the controls that move z (filled below)
    models = load_models(str(run.path), step, ex.step_signature(run, have[step]))
    data = load_probes(str(run.path), step, probe_signature(run, step))
    static, probe = data["static"], data["probe"]
    names, C = models.classes, len(models.classes)
    st.caption(f"Weights of step {step}: **{models.source}** — "
               + ("classifier and finder." if models.finder is not None else
                  "the classifier only; best.pt keeps no finder, so the finder readouts need a step with weights/ "
                  "or last.pt." if models.source == "best.pt"
                  else f"the classifier; {s.method} has no finder (it samples latents uniformly).")
               + " The generator is frozen: the same at every step.")

    # ------------------------------------------------------------------ start
    st.subheader("Start")
    picked = st.session_state.get("explore-map")  # a selection on the map below, from the previous run
    for p in (picked.selection.points if picked else []):
        kind, i = (p.get("customdata") or [0, 0])[:2]
        if int(kind) in (1, 2):  # a uniform or finder sample; real images have no latent
            st.session_state["explore-point"] = (int(kind), int(i))
            break
    c = st.columns([1, 2, 1])
    start = c[1].radio("starting latent z₀", ["probe", "random", "map point"], horizontal=True, key="explore-start",
                       help="probe: one of the run's fixed probe latents of the class; random: a seeded draw of "
                            "N(0, I); map point: a uniform (○) or finder (◇) sample clicked on the map below")
    point = st.session_state.get("explore-point")
    if start == "map point" and point is not None:
        kind, i = point
        cls = int(static["probe_y"][i])
        c[0].selectbox("class y", [cls], format_func=lambda k: names[k], disabled=True, key="explore-class-fixed",
                       help="the picked sample's class")
        z0 = (static["probe_z"] if kind == 1 else probe["finder_z"])[i].astype(np.float64)
        c[2].caption(f"{'uniform z' if kind == 1 else 'finder F(z)'} of probe {i} ({names[cls]})")
        origin = f"point{kind}-{i}"
    else:
        cls = c[0].selectbox("class y", range(C), format_func=lambda k: names[k], key="explore-class")
        if start == "random":
            seed = c[2].number_input("seed", 0, 2**31 - 1, 0, key="explore-seed")
            z0 = np.random.default_rng(int(seed)).normal(size=models.z_dim)
            origin = f"random{int(seed)}"
        else:
            mine = np.flatnonzero(static["probe_y"] == cls)
            i = c[2].selectbox("probe", mine, format_func=lambda k: f"probe {k}", key="explore-probe")
            z0 = static["probe_z"][i].astype(np.float64)
            origin = f"probe{int(i)}"
        if start == "map point":
            st.info("Click a uniform (○) or finder (◇) sample on the map below to start from its latent; until then "
                    "z₀ is a probe of the chosen class.")

    # ------------------------------------------------------------------ move
    st.subheader("Move")
    other = st.selectbox("second class (label mix and class direction)", range(C), index=(cls + 1) % C,
                         format_func=lambda k: names[k], key="explore-other")
    dirs, missing = ex.directions(models, z0, static["probe_z"], probe["finder_z"], static["probe_y"], cls, other)
    tag = f"{run.id}-{step}-{origin}-{cls}-{other}"  # a new start resets the sliders to z₀

    def reset():
        for d in dirs:
            st.session_state[f"explore-{d.key}-{tag}"] = 0.0
        st.session_state[f"explore-mix-{tag}"] = 0.0

    coefs = {}
    grid = st.columns(3)
    for n, d in enumerate(dirs):
        coefs[d.key] = grid[n % 3].slider(d.label, -SPAN, SPAN, 0.0, 0.1, key=f"explore-{d.key}-{tag}", help=d.note)
    mix = grid[len(dirs) % 3].slider(f"label mix: {names[cls]} → {names[other]}", 0.0, 1.0, 0.0, 0.05,
                                     key=f"explore-mix-{tag}", disabled=other == cls,
                                     help="y = (1 − t)·e_a + t·e_b, fed to G as a soft label: its class embeddings "
                                          "mixed (the images change, the latent does not)")
    c = st.columns([1, 5])
    c[0].button("back to z₀", on_click=reset, key="explore-reset")
    c[1].caption("Each slider moves z along a unit direction by its value (units of the prior's standard deviation "
                 "per coordinate); hover a slider's ⓘ for how its direction was made."
                 + ("".join(f" Not here: {m}." for m in missing)))

    z = ex.position(z0, dirs, coefs)
    label = ex.label_mix(C, cls, other, mix)
    r = ex.readout(models, z, label)
    fmap, placer = load_map(str(run.path), step, method, probe_signature(run, step))
    xy = placer.predict(r.features[None])[0]

    # ------------------------------------------------------------------ readouts
    with here_box:
        pr = r.prior
        if pr["far"]:
            st.warning(f"z is far outside the prior: ‖z‖ = {pr['norm']:.2f}, where 99.9% of draws from N(0, I) have "
                       f"‖z‖ < {pr['far_norm']:.2f} (a fraction {pr['farther']:.1e} lie farther out). The generator "
                       "never saw such a latent: this image, and what the classifier says about it, are extrapolation.",
                       icon="⚠️")
        elif pr["near"]:
            st.info(f"‖z‖ = {pr['norm']:.2f} is atypically small (√d = {pr['sqrt_d']:.2f}; below {pr['percentile']:.4%} "
                    "of draws from N(0, I)): dense under the prior, yet no draw lands there.")
        y_text = (names[cls] if mix == 0 or other == cls else names[other] if mix == 1
                  else f"{1 - mix:.2f}·{names[cls]} + {mix:.2f}·{names[other]}")
        st.subheader(f"Here: y = {y_text}")
        scale = max(1, 168 // r.image.shape[-1])
        c = st.columns([1, 1, 1, 3])
        c[0].image(mosaic(r.image[None], 1, scale), caption="G(z, y)", width=168, output_format="PNG")
        c[1].image(mosaic(r.augmented[None], 1, scale), caption="T(G(z, y)), draw 1 of the gap's", width=168,
                    output_format="PNG")
        if r.finder_image is not None:
            c[2].image(mosaic(r.finder_image[None], 1, scale), caption="what the finder does here: G(F(z), y)", width=168,
                        output_format="PNG")
        else:
            c[2].info("No finder readout: " + ("best.pt keeps no finder." if models.source == "best.pt"
                                               else "this run has no finder."))
        c[3].plotly_chart(figures.class_probs(r.probs, names, label, r.finder_probs, "class probabilities (outlined: y)"),
                          config=CHART_CONFIG, key="explore-probs")
        m = st.columns(6)
        m[0].metric("predicted", names[r.pred], delta=f"p = {r.probs.max():.2f}", delta_color="off",
                    help="the classifier's most probable class for G(z, y) and its probability")
        m[1].metric("PCR gap", f"{r.gap:.4g}",
                    help=f"‖g(T(x)) − g(x)‖², mean over {len(r.gaps)} fixed draws of T ({models.policy}; range "
                         f"{r.gaps.min():.3g}–{r.gaps.max():.3g}), features g in eval mode, averaged over dimensions: the "
                         "probes' definition (Consistency page)")
        m[2].metric("‖z‖", f"{pr['norm']:.2f}", delta=f"{pr['norm'] - pr['sqrt_d']:+.2f} vs √d = {pr['sqrt_d']:.0f}",
                    delta_color="off", help=f"‖z‖ of z ~ N(0, I_d) follows χ_d; largest |z_i| = {pr['max_abs']:.2f}")
        m[3].metric("χ percentile of ‖z‖", f"{pr['percentile']:.1%}",
                    help="share of draws from the prior with a smaller norm: near 0% or 100% is atypical")
        if r.shift is not None:
            m[4].metric("finder shift ‖F(z) − z‖", f"{r.shift:.3f}",
                        help=f"the trainer stops a run whose mean shift exceeds 4√d = {4 * pr['sqrt_d']:.0f}")
            m[5].metric("at F(z): PCR gap", f"{r.finder_gap:.4g}",
                        help=f"the PCR gap of G(F(z), y); the classifier predicts {names[int(r.finder_probs.argmax())]} "
                             f"({r.finder_probs.max():.2f}) for it")

    walk_key = f"explore-walk-{run.id}-{step}"
    walk = st.session_state.setdefault(walk_key, [])
    here = {"row": ex.path_row(r, names, coefs | {"label_mix": mix}, xy), "image": r.image, "xy": xy}
    st.session_state["explore-here"] = here  # what "record" keeps: a click reruns with the same sliders

    def record():
        walk.append(st.session_state["explore-here"])

    st.plotly_chart(figures.explore_map(fmap, names, xy, np.array([w["xy"] for w in walk]) if walk else None),
                    config=CHART_CONFIG, on_select="rerun", selection_mode=("points", "box"), key="explore-map")
    st.caption(f"{fmap.method.upper()} map of step {step} (real points, uniform ○ and finder ◇ probe samples; click one "
               "to start there with “map point”). The ★ is placed, not fitted: at the inverse-distance-weighted mean "
               "of the map positions of its 5 nearest fitted points in feature space, as on the Feature space page.")

    # ------------------------------------------------------------------ a walk you can keep
    st.subheader("Walk")
    c = st.columns([1, 1, 4])
    c[0].button("record this position", key="explore-record", type="primary", on_click=record)
    c[1].button("clear the walk", key="explore-clear", disabled=not walk, on_click=walk.clear)
    if not walk:
        c[2].caption("Record positions as you move: they are kept for this run and step in this browser session, "
                     "drawn on the map in order, and downloadable as PNG and CSV.")
    else:
        rows = [w["row"] for w in walk]
        st.image([mosaic(w["image"][None], 1, max(1, 96 // r.image.shape[-1])) for w in walk], width=96, output_format="PNG",
                 caption=[f"{i + 1}. {w['predicted']} {w['p_predicted']:.2f} · gap {w['pcr_gap']:.3g}"
                          for i, w in enumerate(rows)])
        d = st.columns([1, 1, 4])
        d[0].download_button("walk.png", ex.path_png([w["image"] for w in walk]), f"walk-{run.id}-step{step}.png",
                             "image/png", key="explore-png")
        d[1].download_button("walk.csv", ex.path_csv(rows), f"walk-{run.id}-step{step}.csv", "text/csv",
                             key="explore-csv")
        d[2].caption("CSV: one row per position — the slider values, the label fed to G, the predicted class and "
                     "every class probability, the PCR gap, ‖z‖ and its χ percentile, the finder's shift, the map "
                     "position, and z itself (z_0 …), so a walk can be replayed.")
