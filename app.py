"""MGR Lab: `streamlit run app.py`.

Registers the pages and warms UMAP's numba kernels in the background (about 12 s of a core the first
time on an installation, 1 s once numba's disk cache holds them) so that the first feature-space map does
not wait for them. Training never
runs in this process: pages spawn `python -m mgr train` and read run directories.
"""
import os
import sys

# One torch thread for the app's own computing (Explore's generator, feature maps, FID): its models are tiny, and
# beside a trainer on a 2-core machine a warm Explore move took 1.2 s with torch's default two threads against 40 ms
# with one. Set in the environment before torch loads OpenMP, so that every thread of this process has it: each
# browser session's script runs in a thread of its own. MGR_APP_THREADS overrides it; trainers the app starts are
# given their own count (mgr/launch.py, mgr/demo_queue.py).
APP_THREADS = os.environ.get("MGR_APP_THREADS", "1")
VALID_THREADS = APP_THREADS.isdigit() and int(APP_THREADS) >= 1
if "torch" not in sys.modules:
    os.environ["OMP_NUM_THREADS"] = APP_THREADS if VALID_THREADS else "1"

import streamlit as st  # noqa: E402 (after the thread count)
import torch  # noqa: E402

from pages._ui import app_run  # noqa: E402

st.set_page_config(page_title="MGR Lab", page_icon="🧪", layout="wide")
if not VALID_THREADS:
    st.error(f"MGR_APP_THREADS={APP_THREADS!r} is not allowed; it must be a whole number >= 1. The app uses 1 thread.")
torch.set_num_threads(int(APP_THREADS) if VALID_THREADS else 1)  # this script's thread, had torch loaded before


app_run()
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
