"""Home: what MGR is, the runs found, one-click teaching presets."""
import streamlit as st

from mgr import launch
from mgr.runstore import Run
from pages._diagram import mgr_svg
from pages._ui import launcher, overview, runs_dir, state_text

st.title("🧪 MGR Lab")
st.markdown(
    "**Generative data augmentation** adds a class-conditional generator's images to a small training set. "
    "Done naively (**GDA**: synthetic images in the cross-entropy loss) it often *lowers* test accuracy: the "
    "images are imperfect members of their class, and uniformly sampled latents give many useless or "
    "ambiguous ones, which the classifier then learns as truth.\n\n"
    "**Meta Generative Regularization** (Yamaguchi et al., NeurIPS 2023) keeps synthetic images out of the "
    "cross-entropy. **PCR** uses them only to make the feature extractor *consistent*: "
    "‖g(T(x_p)) − g(x_p)‖² for a random augmentation T. **MPS** trains a *finder* F(z) that rewrites the "
    "latents so that the samples help the classifier on held-out validation data, through a one-step "
    "lookahead of the classifier (a meta-gradient). One iteration:")
st.image(mgr_svg(), width="stretch")
st.caption("Explore a run: **Latents** (uniform vs finder samples), **Feature space** (where samples sit "
           "among the real classes), **Consistency** (PCR gaps), **Compare** (accuracy over runs and seeds). "
           "The same trainer offers MLTP (two batches a step, learnt step sizes) and CML's co-learner.")

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
