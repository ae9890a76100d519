"""Feature space: where synthetic samples land among the real classes in the classifier's g_ψ features."""
import numpy as np
import streamlit as st

from mgr import figures
from mgr.analysis.feature_map import FeatureMap, feature_map
from mgr.analysis.margins import margin_table
from mgr.analysis.models import interpolation, loaded_models
from mgr.analysis.mosaic import mosaic
from mgr.analysis.projection import place_on_map
from mgr.runstore import Run
from pages._text import between_reading
from pages._ui import (CHART_CONFIG, guarded, overview, pick_run, pick_step, probe_signature, state_banner,
                       through_app, umap_state)

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("🗺️ Feature space")
st.caption("The classifier's features g_ψ in 2-D: real images (a colour per class), uniform (○) and finder (◇) "
           "samples. Select points to see their images.")


@st.cache_data(max_entries=16, show_spinner=False)
def load_map(path: str, step: int, method: str, max_real: int, n_neighbors: int, sig: tuple) -> FeatureMap:
    return feature_map(Run(path), step, method, max_real=max_real, n_neighbors=n_neighbors)


@st.cache_data(max_entries=16, show_spinner=False)
def load_probe(path: str, step: int, sig: tuple) -> dict:
    run = Run(path)
    return {"static": run.load_probe("static"), "probe": run.load_probe(step)}


@st.cache_data(max_entries=16, show_spinner=False)
def load_margins(path: str, step: int, threshold: float, sig: tuple) -> dict:
    return margin_table(Run(path), step, threshold)


s = pick_run(overview())
state_banner(s)
run = Run(s.path)
with guarded(s):
    c = st.columns([3, 2])
    with c[0]:
        step = pick_step(run)
    warm = umap_state()
    if "projection" not in st.session_state:  # UMAP by default once numba is compiled; PCA meanwhile
        st.session_state["projection"] = "umap" if warm["done"] and not warm["error"] else "pca"
    method = c[1].radio("projection", ["umap", "pca"], horizontal=True, key="projection",
                        help="UMAP keeps local neighbourhoods (seconds to fit, then cached); PCA is instant and linear")
    if method == "pca" and not warm["done"]:
        c[1].caption("UMAP is compiling (once per app process)")
    elif warm["error"]:
        c[1].caption(f"UMAP unavailable: {warm['error']}")
    settings = st.expander("map settings")
    m = settings.columns(2)
    max_real = m[0].select_slider("real points (max)", [500, 1000, 2000, 5000, 10000], value=5000, key="max-real")
    n_neighbors = m[1].select_slider("UMAP neighbours", [5, 10, 15, 30, 50], value=15, key="nn",
                                     disabled=method != "umap")
    sig = probe_signature(run, step)
    data = load_probe(str(run.path), step, sig)
    static, probe = data["static"], data["probe"]
    names = [str(x) for x in static["classes"]]
    with st.spinner(f"fitting {method.upper()} (cached on disk afterwards)…"):
        fmap = load_map(str(run.path), step, method, max_real, n_neighbors, sig)
    has_syn = len(fmap.uniform_xy) > 0
    show = settings.columns(3)
    show_u = show[0].toggle("uniform samples", True, disabled=not has_syn, key="show-uniform")
    show_f = show[1].toggle("finder samples", True, disabled=not has_syn, key="show-finder")
    on_top = show[2].toggle("samples on top", False, disabled=not has_syn, key="syn-on-top",
                            help="draw the synthetic samples over the real points instead of under them")
    note = (f"{len(fmap.real_idx)} of {fmap.n_real_total} real points shown (random subsample)" if fmap.subsampled
            else f"all {fmap.n_real_total} real points")
    note = (f"{note}; {len(fmap.uniform_xy)} uniform + {len(fmap.finder_xy)} finder samples, drawn small and under "
            f"the real points; {fmap.method.upper()} " + ("from the disk cache" if fmap.cached
                                                          else f"fitted in {fmap.seconds:.1f} s"))

    path_xy = None
    if has_syn and (run.path / "last.pt").exists():
        with st.expander("Interpolate between two classes"):
            i = st.columns([1, 1, 1, 1, 1])
            ca = i[0].selectbox("from class", range(len(names)), format_func=lambda k: names[k], key="ia")
            cb = i[1].selectbox("to class", range(len(names)), index=min(1, len(names) - 1),
                                format_func=lambda k: names[k], key="ib")
            mode = i[2].radio("walk", ["label", "latent"], horizontal=True, key="imode",
                              help="label: same z, the class embedding moves from a to b; latent: z also moves "
                                   "from a probe latent of a to one of b")
            n = i[3].slider("steps", 5, 17, 9, 2, key="in")
            if i[4].toggle("draw it", key="iwalk", help="generate the path with the run's generator and classifier"):
                models = loaded_models(run)  # once per checkpoint, shared by the sessions
                y = static["probe_y"]
                z_a, z_b = static["probe_z"][np.flatnonzero(y == ca)[0]], static["probe_z"][np.flatnonzero(y == cb)[0]]
                walk = interpolation(models, z_a, ca, cb, mode, n, z_b)
                fitted = np.concatenate([probe["real_features"][fmap.real_idx], probe["uniform_features"],
                                         probe["finder_features"]])
                xy = np.concatenate([fmap.real_xy, fmap.uniform_xy, fmap.finder_xy])
                path_xy = place_on_map(fitted, xy, walk["features"])
                scale = max(1, 48 // walk["images"].shape[-1])
                st.image([mosaic(im[None], 1, scale) for im in walk["images"]], width=56,
                         caption=[f"{names[p.argmax()]} {p.max():.2f}" for p in walk["probs"]])
                st.caption(f"Features by the classifier of the last checkpoint (step {models['step']})"
                           + ("" if models["step"] == step else f", placed on the map of step {step}")
                           + " at the weighted mean of their 5 nearest fitted points. Captions: predicted class "
                             "and its probability.")

    event = st.plotly_chart(figures.feature_map(fmap, names, show_u, show_f, path_xy, on_top), config=CHART_CONFIG,
                            on_select="rerun", selection_mode=("box", "lasso"), key="map")
    st.caption(note)
    picked = [p.get("customdata") for p in (event.selection.points if event else []) if p.get("customdata") is not None]
    if picked:
        st.markdown(f"**{len(picked)} selected points**" + (" (first 60 shown)" if len(picked) > 60 else ""))
        kinds = {0: ("real", static["real_images"]), 1: ("uniform", probe.get("uniform_images")),
                 2: ("finder", probe.get("finder_images"))}
        for code, (label, images) in kinds.items():
            idx = [int(i) for k, i in picked if int(k) == code][:60]
            if not idx or images is None:
                continue
            lab = static["real_labels"][idx] if code == 0 else static["probe_y"][idx]
            scale = max(1, 48 // images.shape[-1])
            st.caption(label)
            st.image([mosaic(images[i][None], 1, scale) for i in idx], width=56,
                     caption=[names[c] for c in lab])
    else:
        st.caption("Tip: drag a lasso or a box on the map to see the images under it.")

    if has_syn:
        st.subheader("Samples between real clusters")
        threshold = st.slider("margin threshold", 0.02, 0.3, 0.1, 0.01, key="thr",
                              help="margin = (d2 − d1)/(d2 + d1) to the nearest two real class centroids in feature "
                                   "space: near 0 a sample sits on the boundary between two classes")
        table = load_margins(str(run.path), step, threshold, sig)
        m = st.columns(3)
        m[0].metric("uniform samples between two classes", f"{table['uniform_fraction']:.0%}",
                    help=f"{table['uniform_total']} of {table['n']}")
        m[1].metric("finder samples between two classes", f"{table['finder_fraction']:.0%}",
                    help=f"{table['finder_total']} of {table['n']}")
        m[2].metric("real held-out test images (reference)",
                    "—" if table["real_test_fraction"] is None else f"{table['real_test_fraction']:.0%}",
                    help=f"{table['real_test_total']} of {table['n_real_test']}: real images the classifier never "
                         "trained on sit between two clusters this often by chance")
        st.markdown(between_reading(table))
        st.caption("Clusters: the centroids of the real probe images of the training split; the test images are held "
                   "out of them. Verdict words: a two-proportion z test at 5%.")
        a, b = st.columns([1, 1])
        if table["pairs"]:
            a.plotly_chart(figures.margin_bars(table), config=CHART_CONFIG)
        else:
            a.caption("No sample lies between two classes at this threshold.")
        b.dataframe(table["classes"], hide_index=True, width="stretch",
                    column_config={k: st.column_config.NumberColumn(format="%.3f")
                                   for k in ("uniform margin", "finder margin")})
