"""What every analysis module needs from a run directory: the app's cache folder, cache keys that
change when a file changes, and the probe steps of a run that may be half-written or deleted."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..runstore import Run

ANALYSIS = "analysis"  # <run>/analysis/: the app's cache (projections, FID); safe to delete


def cache_dir(run: Run) -> Path:
    return run.path / ANALYSIS


def params_key(params: dict) -> str:
    """A short, stable name for a dict of parameters (part of a cache file's name)."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]


def file_signature(*paths) -> tuple:
    """(mtime, size) of files, for cache keys: a rewritten or deleted file changes it."""
    sig = []
    for p in paths:
        try:
            st = Path(p).stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append(None)
    return tuple(sig)


def probe_steps(run: Run) -> list[int]:
    """The steps with a probe file; [] for a run deleted meanwhile."""
    try:
        return run.probe_steps()
    except OSError:
        return []
