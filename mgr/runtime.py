"""Where and how training runs: device choice, seeding, mixed precision, a progress bar."""
from __future__ import annotations

import contextlib
import os
import random
import re
import sys
import time

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    if not isinstance(name, str) or (name not in DEVICES and not re.fullmatch(r"cuda:\d{1,3}", name)):
        raise ValueError(f"device {name!r} is not one of {', '.join(DEVICES)} (or cuda:N)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but this machine has no CUDA GPU; use --device cpu or auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                         f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def threads_default() -> int:
    """$MGR_THREADS, else 0 (torch's own choice: one thread per core)."""
    value = os.environ.get("MGR_THREADS", "0")
    if not value.isdigit():
        raise ValueError(f"MGR_THREADS={value!r} is not allowed; it must be a whole number >= 0 (0: one per core)")
    return int(value)


def set_threads(n: int) -> None:
    """CPU threads for torch's kernels; 0 keeps torch's default. Small convolutions on a shared CPU run far
    slower with more threads than free cores (measured: a digits step 23 ms on 1 thread, 2.2 s on 2 threads
    of a 2-core machine running another job), so concurrent runs should split the cores between them."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"threads={n!r} is not allowed; it must be a whole number >= 0 (0: one per core)")
    if n > 0:
        torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 on the CPU (where bf16 convolutions are slow)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Progress:
    """A one-line progress bar on stderr: tqdm when installed, a plain line otherwise
    (the trainer must run on machines that have only torch)."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", disable: bool = False):
        self.total, self.n, self.desc, self.disable = total, initial, desc, disable
        self._t0, self._last = time.time(), 0.0
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True)
        except ImportError:
            self._bar = None

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        elif not self.disable and (time.time() - self._last > 2 or self.n == self.total):
            self._last = time.time()
            info = " ".join(f"{k}={v}" for k, v in postfix.items())
            print(f"\r{self.desc} {self.n}/{self.total} {info}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.disable:
            print(file=sys.stderr)
