"""What every benchmark stores next to its numbers: the command that made them, the machine, the
date; and the atomic, locked writes of bench/results/*.json (a grid may be stopped at any time, and
two workers may append to one file)."""
from __future__ import annotations

import fcntl
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr.checkpoint import atomic_write_text  # noqa: E402


def command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces a result (argv as given to main, else the process's). `script`: a
    file of bench/ by its name, or a path from the repository's root (research/meta_cost.py)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", script if "/" in script else f"bench/{script}", *args])


def machine() -> str:
    """e.g. 'vm: AMD EPYC (family 25, model 1), 2 cores, AVX2'. The CPU is what makes CPU timings comparable, and its
    widest vector instructions pick oneDNN's and ATen's kernels: the same run rounds differently, so trains to other
    per-seed numbers, on an AVX2 and on an AVX-512 CPU. A hypervisor may name every EPYC alike; family and model tell
    the generations apart."""
    cpu, info = platform.processor() or platform.machine(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in info:
        generation = f" (family {info['cpu family']}, model {info['model']})" if "cpu family" in info else ""
        cpu = info["model name"] + generation
    flags = set(info.get("flags", "").split())
    widest = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sse4_2", "SSE4.2"))
    isa = next((name for flag, name in widest if flag in flags), "")
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores" + (f", {isa}" if isa else "")


def stamp(script: str, argv: list[str] | None) -> dict:
    return {"command": command(script, argv), "machine": machine(), "date": time.strftime("%Y-%m-%d")}


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def update_records(path: str | Path, change) -> None:
    """Rewrite the JSON list of records at `path` as change(old list): atomic (readers never see half a
    file) and under an exclusive lock, so two processes writing one file never drop each other's records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else []
        if not isinstance(old, list):
            raise ValueError(f"{path} does not hold a JSON list of records; choose another --out")
        write_json(path, change(old))


def append_record(path: str | Path, record: dict) -> None:
    """Add one record to the JSON list at `path` (update_records)."""
    update_records(path, lambda old: old + [record])
