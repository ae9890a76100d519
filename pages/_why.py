"""A demo's "why" panel, under its verdict: the pictures that show the mechanism, drawn from the demo's own runs
(mgr/analysis/demo_why.py reads them): which classes pay, what the oracle says of the synthetic images, and the
arms' samples side by side. One click leads to a run's Latents or Feature space."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from mgr import demos, figures, paired
from mgr.analysis import demo_why
from mgr.analysis.files import file_signature
from mgr.analysis.mosaic import mosaic
from mgr.analysis.oracle import ORACLE_NOTE
from pages._ui import CHART_CONFIG

TABS = {"classes": "Which classes pay", "oracle": "What the oracle sees", "grids": "The samples"}


def _signature(runs_dir, run_ids) -> tuple:
    """Changes when any of the runs writes a new evaluation: the cache key of what is read from them."""
    return tuple(file_signature(runs_dir / r / "metrics.jsonl") for r in run_ids if r)


@st.cache_data(show_spinner=False, max_entries=64)
def _costs(runs_dir, ids_a, ids_b, sig):  # sig: part of the cache key (a leading _ would leave it out)
    return demo_why.class_costs(runs_dir, ids_a, ids_b)


@st.cache_data(show_spinner=False, max_entries=64)
def _samples(runs_dir, ids, which, sig):
    s = demo_why.arm_samples(runs_dir, ids, which)
    if s is None:
        return None
    return s, demo_why.judge_samples(s), demo_why.within_class_spread(s)


def _column(out, arm: demos.Arm) -> tuple:
    i = out.demo.arm_index(arm)
    return tuple(row[i] for row in out.run_ids)


def pick_pair(demo: demos.Demo, out, key: str) -> demos.Pair:
    """For a demo of several pairs, the pair the panel explains: the one with the largest mean difference unless
    the user picks another. The widget is made anew when the demo ends, so the default is chosen on every seed."""
    if not demo.sweep:
        return demo.pairs[0]
    means = [abs(s.mean) if s.mean is not None else -1 for s in out.summaries]
    largest = max(range(len(demo.pairs)), key=lambda i: means[i])
    i = st.selectbox("explain", range(len(demo.pairs)), index=largest, key=f"{key}-{'done' if out.done else 'running'}",
                     format_func=lambda i: demo.pair_label(demo.pairs[i]))
    return demo.pairs[i]


def why_panel(runs_dir, out, key: str) -> None:
    demo = out.demo
    st.markdown("##### Why")
    pair = pick_pair(demo, out, f"why-pair-{key}")
    ids_a, ids_b = _column(out, pair.a), _column(out, pair.b)
    tabs = st.tabs([TABS[w] for w in demo.why])
    for tab, what in zip(tabs, demo.why):
        with tab:
            {"classes": classes_tab, "oracle": oracle_tab, "grids": grids_tab}[what](runs_dir, demo, pair, ids_a, ids_b)
    links(demo, pair, ids_a, ids_b, runs_dir)


def classes_tab(runs_dir, demo, pair, ids_a, ids_b) -> None:
    costs = _costs(runs_dir, ids_a, ids_b, _signature(runs_dir, ids_a + ids_b))
    if costs is None:
        st.caption("The per-class test accuracy appears once a seed has both runs finished.")
        return
    label = demo.pair_label(pair)
    half = [paired.summarize(costs.per_seed[:, k]).ci95 for k in range(len(costs.classes))]
    err = [(hi - lo) / 2 if (lo, hi) != (None, None) else 0 for lo, hi in (h or (None, None) for h in half)]
    worst = np.argsort(-costs.mean)[:2]
    st.markdown(f"{label}, per test class: the difference falls most on **{costs.classes[worst[0]]}** "
                f"({costs.mean[worst[0]]:+.1f} points) and **{costs.classes[worst[1]]}** "
                f"({costs.mean[worst[1]]:+.1f}), over {costs.n} seed{'s' if costs.n != 1 else ''}.")
    fig = go.Figure(go.Bar(x=costs.classes, y=costs.mean.tolist(), error_y=dict(type="data", array=err, visible=costs.n > 1),
                           marker_color=[figures.colour(3) if v > 0 else figures.colour(0) for v in costs.mean]))
    fig.add_hline(y=0, line=dict(color="#888"))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title=dict(
        text=f"{label}: test accuracy per class (points), mean and 95% interval over seeds", x=0, font=dict(size=13)))
    st.plotly_chart(fig, width="stretch", config=CHART_CONFIG)


def oracle_tab(runs_dir, demo, pair, ids_a, ids_b) -> None:
    arms = [(arm, ids) for arm, ids in ((pair.b, ids_b), (pair.a, ids_a)) if arm.values.get("method") != "base"]
    read = [(arm, _samples(runs_dir, ids, "uniform", _signature(runs_dir, ids))) for arm, ids in arms]
    read = [(arm, r) for arm, r in read if r is not None]
    if not read:
        st.caption("The synthetic images appear with a run's first evaluation.")
        return
    parts = [f"**{arm.label}**: {r[1].label_accuracy:.0%} of {r[0].n} images" for arm, r in read]
    st.markdown("Share of the synthetic images the oracle judges to be the class they were generated for: "
                + "; ".join(parts) + ".")
    if any("syn_label_noise" in arm.values for arm in demo.arms):  # a demo dosing random labels: set them beside G's own
        own = 1 - read[0][1][1].label_accuracy
        st.caption(f"The generator already gets {own:.0%} of its images wrong; a dose p of random labels makes about "
                   f"{own:.0%} + p·(1 − {own:.0%})·0.9 of the synthetic labels wrong.")
    arm, (samples, reading, _) = read[0]
    a, b = st.columns([1, 1])
    fig = figures.confusion_heatmap(reading.confusion(), samples.classes, f"{arm.label}: asked for × judged as")
    a.plotly_chart(fig, width="stretch", config=CHART_CONFIG)
    off = reading.off_class(12)
    if len(off):
        b.image(mosaic(samples.images[off], ncols=6, scale=3),
                caption=f"{arm.label}: the most confidently off-class images, in order: " + ", ".join(
                    f"{samples.classes[reading.asked[i]]}→{samples.classes[reading.judged[i]]}" for i in off),
                width="stretch")
    st.caption(f"Label accuracy {ORACLE_NOTE}.")


def grids_tab(runs_dir, demo, pair, ids_a, ids_b) -> None:
    which = "finder" if demo.subject == "the finder" else "uniform"
    cols = st.columns(2)
    for col, arm, ids in ((cols[0], pair.a, ids_a), (cols[1], pair.b, ids_b)):
        r = _samples(runs_dir, ids, which, _signature(runs_dir, ids))
        if r is None:
            col.caption(f"{arm.label}: no samples yet" + (" (it trains on real images only)"
                                                          if arm.values.get("method") == "base" else ""))
            continue
        samples, reading, spread = r
        per_class = int(arm.values.get("probes_per_class", 4))  # the first run's images: one row per class
        col.image(mosaic(samples.images[:per_class * len(samples.classes)], ncols=per_class, scale=2), width="stretch")
        col.markdown(f"**{arm.label}**: label accuracy {reading.label_accuracy:.0%}, within-class spread "
                     f"{spread:.1f}")
    st.caption(f"One row per class ({which} latents of the first seed's last evaluation). Label accuracy "
               f"{ORACLE_NOTE}. Within-class spread: the mean pixel distance between two images of one class, "
               "over every seed's probe images; smaller is less variety.")


def links(demo, pair, ids_a, ids_b, runs_dir) -> None:
    run = next((r for r in (demo_why.first_run(ids_b), demo_why.first_run(ids_a)) if demo_why.exists(runs_dir, r)),
               None)
    if run is None:
        return
    a, b = st.columns(2)
    a.page_link("pages/latents.py", label=f"Latents of {run}", icon="🎛️", query_params={"run": run})
    b.page_link("pages/feature_space.py", label=f"Feature space of {run}", icon="🗺️", query_params={"run": run})
