"""Checkpoint files: tensors plus JSON-able metadata, written atomically, read weights-only.

A checkpoint is a dict {"format": KIND, "version": N, "meta": {...}, **tensor dicts}. It is
loaded with `torch.load(weights_only=True)`, so a file from elsewhere can never execute code;
every problem (missing, truncated, pickled code, wrong kind, wrong dataset) becomes a
CheckpointError that names the file and what is wrong.
"""
from __future__ import annotations

import copy
import errno
import fnmatch
import functools
import json
import os
import secrets
import shutil
import signal
from pathlib import Path

import torch


class CheckpointError(ValueError):
    pass


class WriteError(OSError):
    """A file could not be written (disk full, file too large, read-only, ...). The message names the
    file; the previous version of it, if any, is untouched."""


# A fault-injection point for the crash tests (tests/test_crash_safety.py): a process whose environment sets
# MGR_STOP_BEFORE_RENAME to a pattern stops itself (SIGSTOP) before renaming a file that matches it (fnmatch on the
# full path) into place, its temporary copy written, so that a test kills it exactly mid-write instead of polling
# for a moment that can pass unseen. Unset, it costs one dictionary lookup per write.
STOP_BEFORE_RENAME = "MGR_STOP_BEFORE_RENAME"


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path), then rename over `path`: readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a plain exclusive create (not mkstemp, whose files are private): the result gets the umask's mode
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        open(tmp, "xb").close()
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        stop_at = os.environ.get(STOP_BEFORE_RENAME)
        if stop_at and fnmatch.fnmatch(str(path), stop_at):
            os.kill(os.getpid(), signal.SIGSTOP)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable: without this, a power cut after os.replace can leave the
    directory entry pointing at the old file (or at none) although the new bytes are on disk.
    Platforms or file systems that cannot open or fsync a directory (Windows, some FUSE mounts)
    are skipped: the rename is still atomic for readers, only not yet durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(path: Path, e: Exception) -> WriteError:
    cause, seen = e, []
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror) and cause not in seen:
        seen.append(cause)  # torch.save wraps the OSError of a failed write in a RuntimeError
        cause = cause.__cause__ or cause.__context__
    e = cause if cause is not None else e
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
    try:
        free = f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = ""
    kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
    err = WriteError(f"could not write {path}: {reason}{free}; {kept}")
    err.errno = getattr(e, "errno", None) or errno.EIO  # set apart, so that str(err) is the message alone
    return err


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save(path: str | Path, kind: str, version: int, meta: dict, **tensors) -> None:
    json.dumps(meta)  # metadata must stay plain JSON: fail here, not at load time
    def write(tmp):
        with open(tmp, "wb") as f:  # through a Python file, so a failed write keeps its OSError (errno, reason)
            torch.save({"format": kind, "version": version, "meta": meta, **tensors}, f)
    atomic_write(path, write)


def load(path: str | Path, kind: str, version: int, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file (expected a {kind!r} checkpoint)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable weights-only checkpoint ({first}). The file may be truncated or "
            "corrupt, or hold pickled objects other than tensors, which are never executed here") from e
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(f"{path}: not an MGR Lab checkpoint (expected a {kind!r} file)")
    if ckpt["format"] != kind:
        raise CheckpointError(f"{path}: is a {ckpt['format']!r} checkpoint, expected a {kind!r} one")
    if ckpt.get("version") != version:
        raise CheckpointError(f"{path}: {kind} format version {ckpt.get('version')!r}; this MGR Lab reads version {version}")
    if not isinstance(ckpt.get("meta"), dict):
        raise CheckpointError(f"{path}: metadata missing")
    return ckpt


def load_meta(path: str | Path, kind: str, version: int) -> dict:
    """A checkpoint's metadata, with `load`'s checks, remembered per version of the file (its path, inode, size and
    modification time: a file replaced or rewritten is read again). The app asks it of every demo arm's
    generator on each Home rerun: 31 reads took 0.24 s of a 0.33 s page step (2-core AMD EPYC)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return load(path, kind, version)["meta"]  # load names what is wrong with the path
    return copy.deepcopy(_cached_meta(str(path.resolve()), kind, version, st.st_ino, st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _cached_meta(path: str, kind: str, version: int, *signature) -> dict:
    return load(path, kind, version)["meta"]


def check_meta(path, meta: dict, required: dict[str, type | tuple], expect: dict | None = None, why: str = "") -> None:
    """Fail if a required field is missing or of the wrong type, or differs from `expect`."""
    for key, typ in required.items():
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}")
        types = typ if isinstance(typ, tuple) else (typ,)
        if not isinstance(meta[key], types) or (isinstance(meta[key], bool) and bool not in types):
            raise CheckpointError(f"{path}: metadata {key!r} is {meta[key]!r}, expected "
                                  f"{' or '.join(t.__name__ for t in types)}")
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if have != want:
            raise CheckpointError(f"{path} was made for {key}={have!r}, but {key}={want!r} is needed" + (f"; {why}" if why else ""))


def load_state(module: torch.nn.Module, state: dict, path) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model its metadata describes: "
                              f"{str(e).splitlines()[0]} ...") from e
