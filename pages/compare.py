"""Compare: runs side by side, curves overlaid, mean ± std over seeds, downloads."""
import csv
import io

import streamlit as st

from mgr import figures
from mgr.analysis.curves import curve_fields, curves, group_curves, long_metrics, smoothable
from mgr.analysis.files import file_signature
from mgr.analysis.runs import group_labels, lead_statistic, seed_table, validation_size
from mgr.runstore import Run
from pages._ui import CHART_CONFIG, LEAKY_MARK, no_runs, overview, run_label, state_text, through_app
from pages._text import lead_reason

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("📊 Compare runs")
summaries = [s for s in overview() if s.state != "unknown"]
if not summaries:
    no_runs()
by_id = {s.id: s for s in summaries}
if "compare" not in st.session_state:
    wanted = [i for i in st.query_params.get("runs", "").split(",") if i in by_id]
    st.session_state["compare"] = wanted or [s.id for s in summaries[:4]]
st.session_state["compare"] = [i for i in st.session_state["compare"] if i in by_id]
chosen = st.multiselect("runs", list(by_id), key="compare", format_func=lambda i: run_label(by_id[i]))
st.query_params["runs"] = ",".join(chosen)
if not chosen:
    st.info("Pick one or more runs.")
    st.stop()
picked = [by_id[i] for i in chosen]
leaky = [s.id for s in picked if s.leaky]
if leaky:
    st.markdown(f":red-badge[leaky generator] {', '.join(f'`{i}`' for i in leaky)}: "
                f"{'its generator' if len(leaky) == 1 else 'their generators'} saw images "
                f"{'this classifier' if len(leaky) == 1 else 'these classifiers'} must not: "
                f"{'its' if len(leaky) == 1 else 'their'} accuracy is inflated and not comparable.")


def mark(key: tuple, label: str) -> str:
    """A configuration's name, with the leaky mark in front where its runs' generator saw another split."""
    return f"{LEAKY_MARK} · {label}" if dict(key).get("leaky_generator") is True else label


@st.cache_data(max_entries=256, show_spinner=False)
def load_curves(path: str, sig: tuple) -> dict:
    return curves(Run(path))


cols = {}
for s in picked:
    try:
        cols[s.id] = load_curves(str(s.path), file_signature(s.path / "metrics.jsonl"))
    except (OSError, ValueError) as e:
        st.warning(f"{s.id}: metrics unreadable ({e})")
fields = sorted({k for c in cols.values() for k in curve_fields(c)})
keys = {s.id: s.config_key for s in picked}
labels = {k: mark(k, v) for k, v in group_labels(list(dict.fromkeys(keys.values()))).items()}
n_configs = len(set(keys.values()))
c1, c2, c3 = st.columns([3, 1, 1])
shown = c1.multiselect("metrics", fields, default=[k for k in ("val_acc", "test_acc") if k in fields], key="cmp-fields")
smoothing = c2.slider("smoothing", 0.0, 0.95, 0.0, 0.05, key="cmp-smooth", help="never applied to lr and α")
grouped = c3.toggle("group seeds", value=n_configs < len(picked), key="cmp-group",
                    help="one curve per configuration: runs that differ only in their seed become their mean, "
                         "with ± std shaded")
st.caption(f"{len(picked)} run{'s' if len(picked) != 1 else ''} in {n_configs} configuration"
           f"{'s' if n_configs != 1 else ''}: the tables below name them.")

for k in shown:
    if grouped:
        agg = group_curves([(keys[i], c["step"], c[k]) for i, c in cols.items() if k in c])
        series = [(f"{labels[g['key']]} (n={g['n']})", g["steps"], g["mean"]) for g in agg]
        bands = {name: (g["mean"] - g["std"], g["mean"] + g["std"]) for (name, _, _), g in zip(series, agg) if g["n"] > 1}
    else:
        series = [((f"{LEAKY_MARK} · " if by_id[i].leaky else "")
                   + (by_id[i].label if sum(p.label == by_id[i].label for p in picked) == 1 else f"{by_id[i].label} · {i[-4:]}"),
                   c["step"], c[k]) for i, c in cols.items() if k in c]
        bands = None
    fig = figures.curves(series, smoothing if smoothable(k) else 0.0, k, markers=True, height=340, bands=bands)
    st.plotly_chart(fig, config={**CHART_CONFIG, "toImageButtonOptions": {"format": "png", "filename": k, "scale": 2}},
                    key=f"cmp-{k}")
    st.download_button(f"⬇ {k}.html", lambda fig=fig: fig.to_html(include_plotlyjs=True), file_name=f"{k}.html",
                       mime="text/html", key=f"html-{k}", on_click="ignore",
                       help="an interactive, self-contained chart; PNG: the camera icon on the chart")

table = seed_table(picked)
# A tiny validation split makes "test accuracy at the best validation step" mostly noise: lead with the last step's
lead = lead_statistic([r["val_size"] for r in table] or [validation_size(s.config.get("data") or {}) for s in picked])
order = ("test @ last step", "test @ best val") if lead["lead"] == "test_last" else ("test @ best val", "test @ last step")
if table:
    st.subheader("Configurations side by side")
    st.markdown("Mean ± std over the seeds of each configuration (everything that defines a run but its seed) of "
                f"test accuracy, **{order[0]}** first; std with ddof 1, 0 for a single seed.")
    st.info(lead_reason(lead), icon="🎯")
    st.dataframe([{"configuration": mark(r["key"], r["config"]), "procedure": r["procedure"] + (f" ({r['mltp_variant']})"
                                                                                 if r["mltp_variant"] else ""),
                   "co-learner": "yes" if r["co_learner"] else "no", "model": r["model"], "seeds": r["seeds"],
                   **{k: {"test @ best val": f"{r['test_at_best_mean']:.3f} ± {r['test_at_best_std']:.3f}",
                          "test @ last step": f"{r['test_last_mean']:.3f} ± {r['test_last_std']:.3f}"}[k] for k in order},
                   "val images": r["val_size"], "runs": ", ".join(r["runs"])} for r in table],
                 hide_index=True, width="stretch")

st.subheader("Runs")
st.dataframe([{"run": s.id, "state": state_text(s.state), "configuration": labels[s.config_key],
               "seed": s.seed, "steps": s.step,
               **{k: {"test @ best val": s.test_at_best, "test @ last step": s.test_last}[k] for k in order},
               "best val acc": s.best_val_acc, "at step": s.best_step} for s in picked],
             hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(format="%.3f")
                            for k in ("best val acc", "test @ best val", "test @ last step")})


def metrics_csv() -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, ["run", "step", "field", "value"])
    w.writeheader()
    w.writerows(long_metrics([Run(by_id[i].path) for i in chosen]))
    return out.getvalue()


st.download_button("⬇ metrics of the selected runs (CSV)", metrics_csv, file_name="mgr-metrics.csv", mime="text/csv",
                   on_click="ignore", help="every metrics.jsonl line in long form: run, step, field, value")
