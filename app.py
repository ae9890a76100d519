"""MGR Lab: `streamlit run app.py`.

Registers the pages and warms UMAP's numba kernels in the background (about 20 s once per app
process) so that the first feature-space map does not pay for the compilation. Training never
runs in this process: pages spawn `python -m mgr train` and read run directories.
"""
import threading

import streamlit as st

from mgr import analysis

st.set_page_config(page_title="MGR Lab", page_icon="🧪", layout="wide")


@st.cache_resource(show_spinner=False)
def umap_warmup() -> dict:
    state = {"done": False, "seconds": None, "error": None}

    def work():
        try:
            state["seconds"] = analysis.warm_umap()
        except Exception as e:  # UMAP missing or broken: PCA still works
            state["error"] = f"{type(e).__name__}: {e}"
        state["done"] = True
    threading.Thread(target=work, name="umap-warmup", daemon=True).start()
    return state


umap_warmup()
pages = st.navigation({
    "MGR Lab": [st.Page("pages/home.py", title="Home", icon="🧪", default=True),
                st.Page("pages/train.py", title="Train", icon="🚀")],
    "Explore a run": [st.Page("pages/latents.py", title="Latents", icon="🎲"),
                      st.Page("pages/feature_space.py", title="Feature space", icon="🗺️"),
                      st.Page("pages/consistency.py", title="Consistency", icon="🔁")],
    "Runs": [st.Page("pages/compare.py", title="Compare", icon="📊"),
             st.Page("pages/data.py", title="Data & generators", icon="🗂️")],
})
pages.run()
