"""Plotly figures of the analysis layer's data and of a demo's verdict (the app's charts). Imported by pages
only: the trainer never imports plotly. Each function takes plain arrays (or a demo and its paired summaries)
and returns a go.Figure."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from .analysis.curves import smooth
from .analysis.feature_map import FeatureMap
from .analysis.latents import LatentView

if TYPE_CHECKING:
    from .demos import Demo

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
KIND_COLOUR = {"uniform": "#7f7f7f", "finder": "#d62728"}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _layout(fig: go.Figure, title: str = "", height: int = 320, **kw) -> go.Figure:
    # the mode bar stands upright in a right margin of its own, so it never covers the title
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=14)), height=height, modebar=dict(orientation="v"),
                      margin=dict(l=10, r=44, t=36 if title else 10, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0), **kw)
    return fig


def curves(series: list[tuple[str, np.ndarray, np.ndarray]], smoothing: float = 0.0, title: str = "",
           ytitle: str = "", markers: bool = False, height: int = 300,
           bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> go.Figure:
    """Line chart of (name, steps, values); with smoothing > 0 the debiased EMA is drawn and the
    raw curve stays faint behind it, as in TensorBoard. `bands[name] = (low, high)` shades a range
    around a series (min–max, or mean ± std over seeds), never smoothed."""
    fig = go.Figure()
    for i, (name, x, y) in enumerate(series):
        if bands and name in bands:
            lo, hi = (np.asarray(b, dtype=float) for b in bands[name])
            ok = np.isfinite(lo) & np.isfinite(hi)
            xb = np.asarray(x)[ok]
            fig.add_trace(go.Scatter(x=np.concatenate([xb, xb[::-1]]), y=np.concatenate([hi[ok], lo[ok][::-1]]),
                                     mode="lines", fill="toself", fillcolor=_rgba(colour(i), 0.15), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=name, name=f"{name} (range)"))
        ok = np.isfinite(y)
        x, y = np.asarray(x)[ok], np.asarray(y)[ok]
        c = colour(i)
        mode = "lines+markers" if markers else "lines"
        if smoothing > 0 and len(y) > 1:
            fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=f"{name} (raw)", line=dict(color=_rgba(c, 0.25)),
                                     marker=dict(size=4), showlegend=False, hoverinfo="skip", legendgroup=name))
            y = smooth(y, smoothing)
        fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=name, line=dict(color=c), marker=dict(size=5),
                                 legendgroup=name))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=ytitle)
    return _layout(fig, title, height, hovermode="x unified")


def latent_pca(view: LatentView, classes: list[int] | None = None, magnify: float = 1.0) -> go.Figure:
    """z (circles) and F(z) (crosses) in one PCA basis, a segment from each z to F(z); `magnify`
    stretches each shift F(z) − z (the finder moves latents little compared with their spread)."""
    keep = np.isin(view.y, classes) if classes else np.ones(len(view.y), bool)
    fz_2d = view.z_2d + magnify * (view.fz_2d - view.z_2d)
    fig = go.Figure()
    xs, ys = [], []
    for a, b in zip(view.z_2d[keep], fz_2d[keep]):
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.5)", width=1),
                             name="z → F(z)", hoverinfo="skip"))
    for c in np.unique(view.y[keep]):
        m = keep & (view.y == c)
        fig.add_trace(go.Scatter(x=view.z_2d[m, 0], y=view.z_2d[m, 1], mode="markers", name=f"z · {view.classes[c]}",
                                 marker=dict(color=colour(int(c)), symbol="circle-open", size=7), legendgroup=str(c)))
        fig.add_trace(go.Scatter(x=fz_2d[m, 0], y=fz_2d[m, 1], mode="markers", showlegend=False,
                                 name=f"F(z) · {view.classes[c]}", legendgroup=str(c),
                                 marker=dict(color=colour(int(c)), symbol="x", size=7)))
    ev = view.explained
    moved = bool(np.abs(view.shift).max() > 1e-6)
    what = "of the shifts" if moved else "of z"
    fig.update_xaxes(title_text=f"PC1 {what} ({ev[0]:.0%})")
    fig.update_yaxes(title_text=f"PC2 {what} ({ev[1]:.0%})" if len(ev) > 1 else "PC2")
    what = "F(z)" if magnify == 1 else f"z + {magnify:g}·(F(z) − z)"
    return _layout(fig, f"latents: z (○) and {what} (×)", 440)


def confidence_bars(view: LatentView) -> go.Figure:
    classes = np.unique(view.y)
    fig = go.Figure()
    for kind, conf in (("uniform G(z, y)", view.uniform_conf), ("finder G(F(z), y)", view.finder_conf)):
        fig.add_trace(go.Bar(x=[view.classes[c] for c in classes], y=[conf[view.y == c].mean() for c in classes],
                             name=kind, marker_color=KIND_COLOUR["uniform" if kind.startswith("u") else "finder"]))
    fig.update_yaxes(title_text="p(intended class)", range=[0, 1])
    fig.update_xaxes(type="category")
    return _layout(fig, "p(intended class), mean per class", 300, barmode="group")


def class_colours(n: int) -> list[str]:
    """A distinct colour per class: the 10-colour palette, or plotly's 26-colour Alphabet beyond it."""
    from plotly.colors import qualitative
    palette = PALETTE if n <= len(PALETTE) else qualitative.Alphabet
    return [palette[i % len(palette)] for i in range(n)]


# Synthetic markers are small and see-through so that the real clusters stay visible under them
REAL_MARKER = dict(size=6, opacity=0.8)
SYNTHETIC_MARKER = dict(size=5, opacity=0.45)


def feature_map(fmap: FeatureMap, classes: list[str], show_uniform: bool = True, show_finder: bool = True,
                path: np.ndarray | None = None, synthetic_on_top: bool = False) -> go.Figure:
    """Real features as dots, a distinct colour per class; uniform (○) and finder (◇) samples in their
    class's colour, smaller and half transparent, drawn under the real points unless
    `synthetic_on_top`. customdata = (kind, index) lets a selection find the images back."""
    colours = class_colours(len(classes))
    real, synthetic = [], []
    for c in np.unique(fmap.real_labels):
        m = fmap.real_labels == c
        real.append(go.Scattergl(
            x=fmap.real_xy[m, 0], y=fmap.real_xy[m, 1], mode="markers", name=f"real · {classes[c]}",
            marker=dict(color=colours[int(c)], **REAL_MARKER),
            customdata=np.stack([np.zeros(m.sum(), int), fmap.real_idx[m]], 1),
            hovertemplate=f"real · {classes[c]}<extra></extra>"))
    for kind, xy, show, symbol in (("uniform", fmap.uniform_xy, show_uniform, "circle-open"),
                                   ("finder", fmap.finder_xy, show_finder, "diamond")):
        if not show or len(xy) == 0:
            continue
        synthetic.append(go.Scattergl(
            x=xy[:, 0], y=xy[:, 1], mode="markers", name=f"{kind} samples",
            marker=dict(color=[colours[int(c)] for c in fmap.probe_y], symbol=symbol,
                        line=dict(width=1, color=KIND_COLOUR[kind]), **SYNTHETIC_MARKER),
            customdata=np.stack([np.full(len(xy), 1 if kind == "uniform" else 2), np.arange(len(xy))], 1),
            text=[classes[c] for c in fmap.probe_y], hovertemplate=f"{kind} · %{{text}}<extra></extra>"))
    fig = go.Figure(real + synthetic if synthetic_on_top else synthetic + real)  # later traces are drawn on top
    if path is not None:
        fig.add_trace(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name="interpolation",
                                 line=dict(color="black", width=2), marker=dict(size=7, color="black")))
    fig.update_xaxes(showticklabels=False, title_text=f"{fmap.method.upper()} 1")
    fig.update_yaxes(showticklabels=False, title_text=f"{fmap.method.upper()} 2")
    return _layout(fig, "", 620, dragmode="lasso")


def gap_over_training(history: dict) -> go.Figure:
    """PCR gap distribution of the probe samples at each evaluation, uniform vs finder (box plots)."""
    fig = go.Figure()
    for kind in ("uniform", "finder"):
        xs = np.concatenate([np.full(len(g), s) for s, g in zip(history["steps"], history[kind])]) if history["steps"] else []
        ys = np.concatenate(history[kind]) if history["steps"] else []
        fig.add_trace(go.Box(x=xs, y=ys, name=kind, marker_color=KIND_COLOUR[kind], boxpoints=False))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="‖g(T(x_p)) − g(x_p)‖²", type="log", dtick=1)  # decades only: no crowded 2, 5 labels
    return _layout(fig, "PCR gap of the probe samples over training", 340, boxmode="group")


def gap_by_class(history: dict, index: int) -> go.Figure:
    y = history["y"]
    fig = go.Figure()
    for kind in ("uniform", "finder"):
        g = history[kind][index]
        fig.add_trace(go.Box(x=[history["classes"][c] for c in y], y=g, name=kind, marker_color=KIND_COLOUR[kind],
                             boxpoints=False))
    fig.update_yaxes(title_text="PCR gap", type="log", dtick=1)
    fig.update_xaxes(type="category")
    return _layout(fig, f"PCR gap per class at step {history['steps'][index]}", 320, boxmode="group")


def margin_bars(table: dict) -> go.Figure:
    rows = table["pairs"][:15]
    fig = go.Figure()
    for kind in ("uniform", "finder"):
        fig.add_trace(go.Bar(x=[r["pair"] for r in rows], y=[r[kind] for r in rows], name=kind,
                             marker_color=KIND_COLOUR[kind]))
    fig.update_yaxes(title_text="samples between the pair")
    return _layout(fig, f"samples between two real clusters (centroid margin < {table['threshold']:g})", 300,
                   barmode="group")


def signal_curve(reading, threshold: float) -> go.Figure:
    """hg_cos per log line, the 0 and signal-threshold lines, and the 95% interval of its mean over
    the run's last quarter as a shaded band over those steps (a `finder_view.SignalReading`)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=reading.steps, y=reading.hg_cos, mode="lines+markers", name="hg_cos per log line",
                             line=dict(color=colour(0)), marker=dict(size=4)))
    if reading.n >= 2 and np.isfinite(reading.low):
        first = reading.steps[-reading.n]
        fig.add_shape(type="rect", x0=first, x1=reading.steps[-1], y0=reading.low, y1=reading.high, line_width=0,
                      fillcolor=_rgba(colour(1), 0.25))
        fig.add_trace(go.Scatter(x=[first, reading.steps[-1]], y=[reading.mean] * 2, mode="lines",
                                 name="mean over the last quarter (band: 95% interval)", line=dict(color=colour(1))))
    if reading.kl_share is not None:
        fig.add_trace(go.Scatter(x=reading.steps, y=reading.kl_share, mode="lines", name="KL term's share of it",
                                 line=dict(color=colour(2), dash="dash")))
    for y, name, dash in ((0.0, "0: noise", "dot"), (threshold, f"{threshold}: signal threshold", "dash")):
        fig.add_trace(go.Scatter(x=[reading.steps[0], reading.steps[-1]], y=[y, y], mode="lines", name=name,
                                 line=dict(color="#7f7f7f", dash=dash, width=1), hoverinfo="skip"))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="hg_cos")
    return _layout(fig, "hg_cos: the finder's hypergradient against the previous step's", 300)


def sample_stat_bars(stats: dict, stat: str) -> go.Figure:
    """Mean of one per-probe statistic (`finder_view.sample_stats`) per class and overall, uniform vs
    finder, error bars ± std over probes."""
    fig = go.Figure()
    for kind in ("uniform", "finder"):
        rows = [r for r in stats["rows"] if r["kind"] == kind]
        fig.add_trace(go.Bar(x=[r["class"] for r in rows], y=[r[f"{stat}_mean"] for r in rows], name=kind,
                             error_y=dict(type="data", array=[r[f"{stat}_std"] for r in rows]),
                             marker_color=KIND_COLOUR[kind]))
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text=stat)
    return _layout(fig, f"{stat} per class, mean ± std over probes (step {stats['step']})", 300, barmode="group")


def class_probs(probs: np.ndarray, classes: list[str], intended: np.ndarray, finder_probs: np.ndarray | None = None,
                title: str = "") -> go.Figure:
    """The classifier's probability of every class for one image (Explore); the classes of the label
    fed to G (its weight > 0) are outlined in black; with `finder_probs`, those of G(F(z), y) beside."""
    fig = go.Figure()
    outline = [2 if w > 0 else 0 for w in intended]
    fig.add_trace(go.Bar(x=classes, y=probs, name="G(z, y)", marker=dict(color=KIND_COLOUR["uniform"],
                                                                        line=dict(color="black", width=outline))))
    if finder_probs is not None:
        fig.add_trace(go.Bar(x=classes, y=finder_probs, name="G(F(z), y)",
                             marker=dict(color=KIND_COLOUR["finder"], line=dict(color="black", width=outline))))
    fig.update_yaxes(title_text="p(class)", range=[0, 1])
    fig.update_xaxes(type="category")
    return _layout(fig, title, 280, barmode="group")


def explore_map(fmap: FeatureMap, classes: list[str], here: np.ndarray, walk: np.ndarray | None = None) -> go.Figure:
    """The step's feature map (`feature_map`, samples on top so a probe can be picked) with the
    explored image placed on it (★) and a recorded walk (numbered): placed, not fitted."""
    fig = feature_map(fmap, classes, synthetic_on_top=True)
    if walk is not None and len(walk):
        fig.add_trace(go.Scatter(x=walk[:, 0], y=walk[:, 1], mode="lines+markers+text", name="recorded walk (placed)",
                                 text=[str(i + 1) for i in range(len(walk))], textposition="top center",
                                 line=dict(color="black", width=1, dash="dot"), marker=dict(size=7, color="black")))
    fig.add_trace(go.Scatter(x=[here[0]], y=[here[1]], mode="markers", name="this image (placed, not fitted)",
                             marker=dict(symbol="star", size=18, color="gold", line=dict(color="black", width=1.5))))
    fig = _layout(fig, "", 520, dragmode="select")
    return fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.08))


# ----------------------------------------------------------------------------- a generator's samples (Data page)

def label_accuracy_bars(per_class: np.ndarray, classes: list[str], overall: float, real: float,
                        title: str = "") -> go.Figure:
    """Label accuracy of each asked-for class (an oracle.OracleReading's per_class()), with the overall
    accuracy and the oracle's accuracy on real test images as lines across."""
    fig = go.Figure(go.Bar(x=list(classes), y=per_class, name="per class", marker_color=colour(0),
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    for y, name, dash in ((overall, f"all classes: {overall:.1%}", "dash"), (real, f"real test images: {real:.1%}", "dot")):
        fig.add_trace(go.Scatter(x=list(classes), y=[y] * len(classes), mode="lines", name=name, hoverinfo="skip",
                                 line=dict(color="#7f7f7f" if dash == "dot" else colour(1), dash=dash, width=1.5)))
    fig.update_yaxes(title_text="judged the class asked for", range=[0, 1], tickformat=".0%")
    fig.update_xaxes(type="category")
    return _layout(fig, title, 380)


def confusion_heatmap(counts: np.ndarray, classes: list[str], title: str = "") -> go.Figure:
    """Counts of (asked for, judged as), coloured by each row's share: rows are the class asked for, top to
    bottom, columns the class judged as; the diagonal is on class."""
    counts = np.asarray(counts)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(z=share, x=list(classes), y=list(classes), text=counts, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="share", tickformat=".0%"),
                               customdata=counts,
                               hovertemplate="asked %{y} → judged %{x}: %{customdata} (%{z:.0%})<extra></extra>"))
    fig.update_xaxes(title_text="judged as", type="category")
    fig.update_yaxes(title_text="asked for", type="category", autorange="reversed")
    return _layout(fig, title, 380)


def distance_histograms(generated: np.ndarray, heldout: np.ndarray, title: str = "") -> go.Figure:
    """Overlaid histograms of distances to the nearest training image (memorization.CopyingTest): generated
    images against held-out real ones, each as a share of its own sample, with their medians marked."""
    fig = go.Figure()
    lo = float(min(np.min(generated), np.min(heldout)))
    hi = float(max(np.max(generated), np.max(heldout)))
    bins = dict(start=lo, end=hi, size=max((hi - lo) / 40, 1e-6))
    for i, (name, d) in enumerate((("generated → nearest training image", generated),
                                   ("held-out test image → nearest training image", heldout))):
        fig.add_trace(go.Histogram(x=d, name=name, histnorm="percent", xbins=bins, opacity=0.55,
                                   marker_color=colour(3 if i == 0 else 0)))
        fig.add_vline(x=float(np.median(d)), line=dict(color=colour(3 if i == 0 else 0), dash="dash", width=1.5))
    fig.update_xaxes(title_text="pixel distance to the nearest training image (median dashed)")
    fig.update_yaxes(title_text="% of the sample")
    return _layout(fig, title, 360, barmode="overlay")


# ----------------------------------------------------------------------------- a demo's verdict (Home)

def demo_strip(demo: Demo, summaries) -> go.Figure:
    """Each seed's difference as a dot, the mean with its 95% interval beside them, and 0, one row per pair; for
    a ratio statistic each seed's factor A / B on a log axis, the geometric mean with its interval, and ×1."""
    ratio = demo.statistic.ratio

    def shown(xs):
        return [demo.statistic.shown(x) for x in xs]
    fig = go.Figure()
    for pair, summary in zip(demo.pairs, summaries):
        row = demo.pair_label(pair) if demo.sweep else "seeds"
        fig.add_trace(go.Scatter(x=shown(summary.diffs), y=[row] * summary.n, mode="markers", name="one seed",
                                 marker=dict(size=11, color=colour(0), opacity=0.7)))
        if summary.ci95 is not None:
            (mean,), (lo, hi) = shown([summary.mean]), shown(summary.ci95)
            fig.add_trace(go.Scatter(x=[mean], y=[row if demo.sweep else "mean"], mode="markers",
                                     name="mean, 95% interval",
                                     marker=dict(size=12, color=colour(3), symbol="diamond"),
                                     error_x=dict(type="data", symmetric=False, array=[hi - mean],
                                                  arrayminus=[mean - lo])))
    fig.add_vline(x=1 if ratio else 0, line=dict(color="#888", dash="dash"))
    unit = f" ({demo.statistic.unit})" if demo.statistic.unit else ""
    what = "difference per pair" if demo.sweep else demo.diff_label
    fig.update_layout(height=120 + 45 * (len(demo.pairs) if demo.sweep else 2), margin=dict(l=10, r=44, t=30, b=10),
                      showlegend=False, modebar=dict(orientation="v"),
                      title=dict(text=f"{what}: {demo.statistic.label}{unit}{', factor on a log axis' if ratio else ''}",
                                 x=0, font=dict(size=14)))
    if ratio:
        fig.update_xaxes(type="log")
    return fig


def dose_curves(demo: Demo, summaries) -> go.Figure:
    """A sweep as curves: per family, the mean paired difference at each dose with its 95% band, each seed a dot."""
    fig = go.Figure()
    for f, family in enumerate(demo.families):
        pts = [(p.dose, s) for p, s in zip(demo.pairs, summaries) if p.family == family and s.mean is not None]
        if not pts:
            continue
        c = colour(f)
        pts.sort(key=lambda t: t[0])
        with_ci = [(d, s) for d, s in pts if s.ci95 is not None]
        if with_ci:
            xs = [d for d, _ in with_ci]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[s.ci95[1] for _, s in with_ci] + [s.ci95[0] for _, s in
                                                                                           with_ci][::-1],
                                     fill="toself", fillcolor=c, opacity=0.18, line=dict(width=0),
                                     hoverinfo="skip", showlegend=False))
        ref = demo.pairs[[p.family for p in demo.pairs].index(family)].a.label
        fig.add_trace(go.Scatter(x=[d for d, _ in pts], y=[s.mean for _, s in pts], mode="lines+markers",
                                 name=f"{ref} − {family}" if ref != family else f"{ref} − ({ref} at the dose)",
                                 line=dict(color=c, width=3), marker=dict(size=9)))
        dots = [(d, x) for d, s in pts for x in s.diffs]
        fig.add_trace(go.Scatter(x=[d for d, _ in dots], y=[x for _, x in dots], mode="markers", showlegend=False,
                                 marker=dict(color=c, size=6, opacity=0.45), hoverinfo="y"))
    fig.add_hline(y=0, line=dict(color="#888", dash="dash"))
    unit = f" ({demo.statistic.unit})" if demo.statistic.unit else ""
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=36, b=10), modebar=dict(orientation="v"),
                      legend=dict(orientation="h", y=-0.25), xaxis_title=demo.dose, yaxis_title=f"difference{unit}",
                      title=dict(text=f"{demo.statistic.label}: reference − arm at each dose, mean and 95% band "
                                      "(above 0: the dose costs accuracy)", x=0, font=dict(size=14)))
    if demo.log_dose:
        fig.update_xaxes(type="log", tickvals=list(demo.doses), ticktext=[f"{d:g}" for d in demo.doses])
    else:
        fig.update_xaxes(tickvals=list(demo.doses), ticktext=[f"{d:g}" for d in demo.doses])
    return fig
