"""MGR Lab: `streamlit run app.py`.

Registers the pages and warms UMAP's numba kernels in the background (about 20 s once per app
process) so that the first feature-space map does not pay for the compilation. Training never
runs in this process: pages spawn `python -m mgr train` and read run directories.
"""
import streamlit as st

from pages._ui import umap_warmup

st.set_page_config(page_title="MGR Lab", page_icon="🧪", layout="wide")


umap_warmup()
pages = st.navigation({
    "MGR Lab": [st.Page("pages/home.py", title="Home", icon="🧪", default=True),
                st.Page("pages/train.py", title="Train", icon="🚀")],
    "Explore a run": [st.Page("pages/latents.py", title="Latents", icon="🎲"),
                      st.Page("pages/feature_space.py", title="Feature space", icon="🗺️"),
                      st.Page("pages/consistency.py", title="Consistency", icon="🔁"),
                      st.Page("pages/explore.py", title="Explore", icon="🧭")],
    "Runs": [st.Page("pages/compare.py", title="Compare", icon="📊"),
             st.Page("pages/data.py", title="Data & generators", icon="🗂️")],
})
pages.run()
