"""Data & generators: the datasets this machine can load and the generators it ships."""
import streamlit as st

from mgr.data import DEBIAN_FASHION_MNIST, dataset_info, known_datasets
from mgr.gan import list_generators
from mgr.paths import checkpoints_dir
from pages._ui import through_app

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

st.title("🗂️ Data & generators")
st.markdown("MGR needs a frozen class-conditional generator trained on *the same reduced split* as the "
            "classifier (minus its validation part); the trainer refuses one made for another split.")


def available(name: str) -> str:
    if name == "digits":
        return "bundled"
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.exists():
        return "installed (Debian package)"
    return "needs a download"


st.subheader("Datasets")
st.dataframe(
    [{"dataset": n, "shape": f"{i.channels}×{i.resolution}×{i.resolution}", "source": i.source, "here": available(n)}
     for n in known_datasets() if not n.startswith("imagefolder:") for i in [dataset_info(n)]],
    hide_index=True,
)

st.subheader("Generators")
found = list_generators()
if not found:
    st.info(f"No generators in {checkpoints_dir() / 'generators'}. Train one with "
            "`python -m mgr train-generator --dataset digits --ratio 0.1`.")
for i, (path, meta) in enumerate(found):
    if isinstance(meta, str):
        st.error(f"{path.name}: {meta}")
        continue
    size = f"{meta['per_class']} per class" if "per_class" in meta else f"ratio {meta['ratio']:g}"
    fid = f"FID {meta['fid']:.2f}" if "fid" in meta else "FID not measured"
    with st.expander(f"{meta['dataset']} · {size} · data seed {meta['data_seed']} · {fid}", expanded=len(found) <= 4 or i == 0):
        grid = path.with_suffix(".png")
        cols = st.columns([2, 3])
        if grid.exists():
            cols[0].image(str(grid), caption="one row per class, fixed latents")
        a, b, c = cols[1].columns(3)
        a.metric("FID (test split)", f"{meta['fid']:.2f}" if "fid" in meta else "—")
        b.metric("label accuracy", f"{meta['label_acc']:.1%}" if "label_acc" in meta else "—",
                 help="the FID classifier's accuracy on samples of each class: do samples look like their class?")
        c.metric("training time", f"{meta.get('train_seconds', 0) / 60:.0f} min",
                 help=f"{meta['steps']} steps on {meta.get('device', '?')}")
        cols[1].caption(f"FID features: {meta.get('fid_extractor', 'not measured')}; {meta.get('fid_n_fake', '?')} generated vs "
                        f"{meta.get('fid_n_real', '?')} test images. Split fingerprint `{meta['split_hash']}`.")
        cols[1].code(meta.get("command") or "(command not recorded)", language="bash")
        with cols[1].expander("all metadata"):
            st.json(meta)
