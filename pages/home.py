"""Home: what MGR is, the runs found, one-click teaching presets."""
import streamlit as st

from mgr import launch
from mgr.runstore import Run
from pages._ui import launcher, overview, runs_dir, state_text

st.title("🧪 MGR Lab")
left, right = st.columns([3, 2])
left.markdown(
    "**Generative data augmentation** adds a class-conditional generator's images to a small training set. "
    "Done naively (**GDA**: synthetic images in the cross-entropy loss) it often *lowers* test accuracy: the "
    "images are imperfect members of their class, and uniformly sampled latents give many useless or "
    "ambiguous ones, which the classifier then learns as truth.\n\n"
    "**Meta Generative Regularization** (Yamaguchi et al., NeurIPS 2023) keeps synthetic images out of the "
    "cross-entropy. **PCR** uses them only to make the feature extractor *consistent*: "
    "‖g(T(x_p)) − g(x_p)‖² for a random augmentation T. **MPS** trains a *finder* F(z) that rewrites the "
    "latents so that the samples help the classifier on held-out validation data, through a one-step "
    "lookahead of the classifier (a meta-gradient).")
left.caption("Explore a run: **Latents** (uniform vs finder samples), **Feature space** (where samples sit "
             "among the real classes), **Consistency** (PCR gaps), **Compare** (accuracy over runs and seeds).")
right.graphviz_chart("""
digraph {
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", fontsize=11]; edge [fontsize=9]
  z [label="z ~ N(0, I)"]; F [label="finder F(z)", fillcolor="#fde2e2"]; G [label="generator G(·, y)\\n(frozen)"]
  xp [label="x_p"]; T [label="T(x_p)"]; g [label="features g_ψ", fillcolor="#e2ecfd"]; h [label="head h_ω"]
  x [label="real x"]; ce [label="CE", shape=ellipse]; pcr [label="PCR ‖g(T x_p) − g(x_p)‖²", shape=ellipse]
  val [label="CE on validation\\nafter a lookahead step", shape=ellipse, fillcolor="#fde2e2"]
  z -> F -> G -> xp -> T; xp -> g; T -> g; x -> g -> h -> ce; g -> pcr [label="λ"]
  val -> F [label="meta-gradient", style=dashed, color="#d62728"]
}""")

st.subheader("Runs")
summaries = overview()
if not summaries:
    st.info(f"No runs yet in `{runs_dir()}`. Launch a preset below, use the **Train** page, or run "
            "`python -m mgr train --dataset digits --ratio 0.1 --method mgr --steps 300` in a shell.")
else:
    st.dataframe(
        [{"state": state_text(s.state), "run": s.id, "configuration": s.name,
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

st.subheader("Teaching demos")
st.caption("Each launches two short runs on digits (10% of the data, the shipped generator) that finish in a few "
           "minutes on a CPU; then open Compare with both selected.")
items = list(launch.PRESETS.items())
cols = [c for i in range(0, len(items), 3) for c in st.columns(3)]  # rows of three cards
for col, (name, (what, configs)) in zip(cols, items):
    with col.container(border=True):
        st.markdown(f"**{name}**")
        st.caption(what + f" {configs[0]['steps']} steps each.")
        if st.button("Launch both", key=f"preset-{name}", type="primary"):
            try:
                st.session_state["preset_runs"] = (name, launcher().launch_preset(name))
            except launch.LaunchError as e:
                st.error(str(e))
if "preset_runs" in st.session_state:
    name, ids = st.session_state["preset_runs"]
    st.success(f"Started {name}: {', '.join(ids)}.")
    st.page_link("pages/compare.py", label="Compare these runs", icon="📊", query_params={"runs": ",".join(ids)})
