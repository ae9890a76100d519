"""Compare: runs side by side, curves overlaid, mean ± std over seeds, downloads."""
import csv
import io

import streamlit as st

from mgr import analysis, figures
from mgr.runstore import Run
from pages._ui import CHART_CONFIG, STATE_ICON, no_runs, overview

st.title("📊 Compare runs")
summaries = [s for s in overview() if s.state != "unknown"]
if not summaries:
    no_runs()
by_id = {s.id: s for s in summaries}
if "compare" not in st.session_state:
    wanted = [i for i in st.query_params.get("runs", "").split(",") if i in by_id]
    st.session_state["compare"] = wanted or [s.id for s in summaries[:4]]
st.session_state["compare"] = [i for i in st.session_state["compare"] if i in by_id]
chosen = st.multiselect("runs", list(by_id), key="compare",
                        format_func=lambda i: f"{STATE_ICON.get(by_id[i].state, '❓')} {by_id[i].label} · {i}")
st.query_params["runs"] = ",".join(chosen)
if not chosen:
    st.info("Pick one or more runs.")
    st.stop()
picked = [by_id[i] for i in chosen]


@st.cache_data(max_entries=256, show_spinner=False)
def load_curves(path: str, sig: tuple) -> dict:
    return analysis.curves(Run(path))


cols = {}
for s in picked:
    try:
        cols[s.id] = load_curves(str(s.path), analysis.file_signature(s.path / "metrics.jsonl"))
    except (OSError, ValueError) as e:
        st.warning(f"{s.id}: metrics unreadable ({e})")
fields = sorted({k for c in cols.values() for k in analysis.curve_fields(c)})
c1, c2 = st.columns([3, 1])
shown = c1.multiselect("metrics", fields, default=[k for k in ("val_acc", "test_acc") if k in fields], key="cmp-fields")
smoothing = c2.slider("smoothing", 0.0, 0.95, 0.0, 0.05, key="cmp-smooth")

for k in shown:
    series = [(by_id[i].label if sum(p.label == by_id[i].label for p in picked) == 1 else f"{by_id[i].label} · {i[-4:]}",
               c["step"], c[k]) for i, c in cols.items() if k in c]
    fig = figures.curves(series, smoothing, k, markers=True, height=340)
    st.plotly_chart(fig, config={**CHART_CONFIG, "toImageButtonOptions": {"format": "png", "filename": k, "scale": 2}},
                    key=f"cmp-{k}")
    st.download_button(f"⬇ {k}.html", lambda fig=fig: fig.to_html(include_plotlyjs=True), file_name=f"{k}.html",
                       mime="text/html", key=f"html-{k}", on_click="ignore",
                       help="an interactive, self-contained chart; PNG: the camera icon on the chart")

st.subheader("Best validation accuracy and test accuracy")
st.dataframe([{"run": s.id, "state": f"{STATE_ICON.get(s.state, '❓')} {s.state}", "method": s.method,
               "data": f"{s.dataset} {s.ratio:g}" if s.ratio else s.dataset, "seed": s.seed, "steps": s.step,
               "best val acc": s.best_val_acc, "at step": s.best_step, "test acc @ best val": s.test_at_best,
               "final test acc": s.final_test_acc} for s in picked], hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(format="%.3f")
                            for k in ("best val acc", "test acc @ best val", "final test acc")})
table = analysis.seed_table(picked)
if table:
    st.markdown("**Mean ± std over seeds of the same configuration** (test accuracy at the best validation step; "
                "std with ddof 1, 0 for a single seed)")
    st.dataframe([{"dataset": r["dataset"], "ratio": r["ratio"], "method": r["method"], "model": r["model"],
                   "order": r["order"], "seeds": r["seeds"],
                   "test @ best val": f"{r['test_at_best_mean']:.3f} ± {r['test_at_best_std']:.3f}",
                   "final test": f"{r['final_test_mean']:.3f} ± {r['final_test_std']:.3f}"} for r in table],
                 hide_index=True, width="stretch")


def metrics_csv() -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, ["run", "step", "field", "value"])
    w.writeheader()
    w.writerows(analysis.long_metrics([Run(by_id[i].path) for i in chosen]))
    return out.getvalue()


st.download_button("⬇ metrics of the selected runs (CSV)", metrics_csv, file_name="mgr-metrics.csv", mime="text/csv",
                   on_click="ignore", help="every metrics.jsonl line in long form: run, step, field, value")
