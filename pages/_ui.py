"""What every page shares: the runs folder, the run picker, state banners, guarded file access.
Streamlit code lives here and in the pages; mgr/ has none."""
from __future__ import annotations

import contextlib
import threading
import time
import zipfile
from pathlib import Path

import streamlit as st

from mgr import launch
from mgr.analysis.files import file_signature, probe_steps
from mgr.analysis.projection import warm_umap
from mgr.analysis.runs import RunSummary, runs_overview
from mgr.runstore import Run, default_runs_dir

STATE_ICON = {"running": "🟢", "finished": "✅", "failed": "❌", "stopped": "⏸️", "killed": "⚠️", "unknown": "❓"}
CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
# what a deleted or half-written run can raise while a page reads it
BROKEN = (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile)


_THROUGH_APP = "_mgr_through_app"  # st.session_state key: this tab has been through app.py's st.navigation


def through_app(page: str) -> None:
    """Every page calls this first. A fresh server whose first request is a page's URL (a bookmark of
    /latents?run=…, a tab that reconnects after `make run` is restarted) would run that file alone:
    Streamlit reads a folder named pages/ (ours: the project's layout fixes the name) as its legacy
    multipage app until an app calls st.navigation, so the sidebar would list every file of pages/ and the
    wide layout would be lost. A page that finds its session has not been through app.py calls
    st.navigation itself (Streamlit's documented switch: an app that calls it leaves pages/ alone) and
    reruns: the same URL then goes through app.py's navigation (a page's URL is its file's name in both).
    Each page passes its own file (`through_app(__file__)`). tests/test_app_e2e.py opens a page's URL first."""
    if not st.session_state.get(_THROUGH_APP):
        # the page under its own URL (a default page's URL would be "/", and the browser would say "Page not found")
        st.navigation([st.Page(_not_shown, title="MGR Lab", default=True), st.Page(page)], position="hidden")
        st.rerun()


def _not_shown() -> None:
    """The default page of through_app's navigation, which reruns before any page is shown."""


def app_run() -> None:
    """app.py calls this first on every run, before its st.navigation: the session goes through the app's
    navigation (through_app)."""
    st.session_state[_THROUGH_APP] = True


@st.cache_resource(show_spinner=False)
def umap_state() -> dict:
    """Compile UMAP's numba kernels once per app process, in a background thread started by the first page that
    draws a map (Feature space, Explore), not when the app starts: the first time on an installation, 12 s of a core
    that a demo or a run launched from Home would otherwise share (later app processes load them in about 1 s)."""
    state = {"done": False, "seconds": None, "error": None}

    def work():
        try:
            state["seconds"] = warm_umap()
        except Exception as e:  # UMAP missing or broken: PCA still works
            state["error"] = f"{type(e).__name__}: {e}"
        state["done"] = True
    threading.Thread(target=work, name="umap-warmup", daemon=True).start()
    return state


def finding(f, *, expanded: bool = False) -> None:
    """A finding (pages/_text.py's Finding): its verdict badge and one sentence, the rest in a details expander."""
    st.markdown(f":{f.colour}-badge[{f.verdict}] {f.sentence}")
    if f.details:
        with st.expander("details", expanded=expanded):
            st.markdown(f.details)


def state_text(state: str) -> str:
    """A run's state for people: a `running` run whose trainer is gone reads "killed (resume?)"."""
    return f"{STATE_ICON.get(state, '❓')} " + ("killed (resume?)" if state == "killed" else state)


def runs_dir() -> Path:
    return default_runs_dir()


@st.cache_resource
def _launcher(path: str) -> launch.Launcher:
    return launch.Launcher(path)


def launcher() -> launch.Launcher:
    """One Launcher per app process and runs folder: it only reaps children; files are the truth."""
    return _launcher(str(runs_dir().resolve()))


def overview() -> list[RunSummary]:
    return runs_overview(runs_dir())


def no_runs() -> None:
    st.info(f"No runs yet in `{runs_dir()}`. Launch one on the **Train** page or a one-click preset on **Home**, "
            "or from a shell: `python -m mgr train --dataset digits --ratio 0.1 --method mgr --steps 300`.")
    st.page_link("pages/train.py", label="Open Train", icon="🚀")
    st.stop()


LEAKY_MARK = "🟥 leaky"  # before a leaky run's name in pickers, tables and legends
LEAKY_SENTENCE = "Its generator saw images this classifier must not: its accuracy is inflated and not comparable."


def run_label(s: RunSummary) -> str:
    return f"{STATE_ICON.get(s.state, '❓')} {LEAKY_MARK + ' · ' if s.leaky else ''}{s.label} · {s.id}"


def leaky_badge(s: RunSummary) -> None:
    """A run trained with --leaky-generator says so, in red, wherever it is shown (state_banner calls this)."""
    if s.leaky:
        st.markdown(f":red-badge[leaky generator] {LEAKY_SENTENCE}")


def pick_run(summaries: list[RunSummary], key: str = "run", need=None, why: str = "") -> RunSummary:
    """A selectbox over the runs (newest first); the choice is shared by the pages through the URL
    (?run=<id>), so a link or a second tab opens the same run. Run ids only come from the listing."""
    if not summaries:
        no_runs()
    choices = [s for s in summaries if need is None or s.state == "unknown" or need(s)]
    if not choices:
        st.info(f"None of the {len(summaries)} runs {why}. Launch one on the **Train** page.")
        st.page_link("pages/train.py", label="Open Train", icon="🚀")
        st.stop()
    ids = [s.id for s in choices]
    wanted = st.query_params.get("run")
    if key not in st.session_state or st.session_state[key] not in ids:
        st.session_state[key] = wanted if wanted in ids else ids[0]
    by_id = {s.id: s for s in choices}
    run_id = st.selectbox("run", ids, key=key, format_func=lambda i: run_label(by_id[i]))
    st.query_params["run"] = run_id
    return by_id[run_id]


def state_banner(s: RunSummary) -> None:
    leaky_badge(s)
    if s.state == "running" and s.status.get("paused"):
        st.info(f"⏸️ Held at step {s.status.get('step', s.step)} of {s.total_steps}: **Continue** on the Train page "
                "lets it go on.")
    elif s.state == "running":
        st.info(f"🟢 Running: step {s.status.get('step', s.step)} of {s.total_steps}. The views show what it has "
                "written so far; open **Train** for live curves.")
    elif s.state == "failed":
        st.error(f"❌ This run failed at step {s.status.get('step', '?')}: {s.error}")
    elif s.state == "stopped":
        st.warning(f"⏸️ Stopped at step {s.status.get('step', s.step)} of {s.total_steps} ({s.error}). "
                   "Resume it on the **Train** page.")
    elif s.state == "killed":
        st.warning(f"⚠️ Killed (resume?): {s.error}")
        st.page_link("pages/train.py", label="Resume it on the Train page", icon="🚀", query_params={"run": s.id})
    elif s.state == "unknown":
        st.error(f"❓ Run {s.id} cannot be read: {s.error}")
        st.stop()
    skipped_files(Run(s.path).data_report().get("skipped"), "were skipped when this run read its data")


def skipped_files(skipped: list | None, what: str) -> None:
    """A warning with the count of files a dataset loader left out, and each one with its reason on demand."""
    if not skipped:
        return
    st.warning(f"⚠️ {len(skipped)} file{'s' if len(skipped) != 1 else ''} {what}: it trains on the rest.")
    with st.expander("skipped files and why"):
        st.dataframe([{"file": f["path"], "reason": f["reason"]} if isinstance(f, dict) else
                      {"file": f[0], "reason": f[1]} for f in skipped], hide_index=True, width="stretch")


@contextlib.contextmanager
def guarded(s: RunSummary):
    """Turn a run deleted or corrupted while the page is open into a message, not a traceback."""
    try:
        yield
    except BROKEN as e:
        gone = not (s.path / "config.json").exists()
        what = "was deleted" if gone else "has missing or corrupt files"
        st.error(f"Run `{s.id}` {what} while this page was open ({type(e).__name__}: {e}). "
                 "Pick another run, or reload the page.")
        st.stop()


def signature(run: Run, *names: str) -> tuple:
    return file_signature(*(run.path / n for n in names))


def probe_signature(run: Run, step: int) -> tuple:
    return signature(run, "probes/static.npz", f"probes/step_{step:07d}.npz")


def pick_step(run: Run, key: str = "step", label: str = "evaluation step") -> int:
    steps = probe_steps(run)
    if not steps:
        st.info("This run has no evaluation yet: its first probe appears at its first evaluation "
                f"(every {run.config.get('eval_every', '?')} steps).")
        st.stop()
    if st.session_state.get(key) not in steps:
        st.session_state[key] = steps[-1]
    if len(steps) == 1:
        st.caption(f"{label}: {steps[0]} (the only one so far)")
        return steps[0]
    return st.select_slider(label, steps, key=key)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def ago(t: float | None) -> str:
    return "—" if not t else f"{fmt_seconds(max(0, time.time() - t))} ago"
