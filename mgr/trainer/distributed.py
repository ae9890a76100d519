"""One run on N processes (`torchrun --nproc-per-node N -m mgr train ...`): the process group and
the few collectives the trainer needs. Every helper is a no-op in a single process, so a run
without torchrun computes exactly what it computed before this module existed.

What is shared and how (docs/scale.md):
  - each rank trains on its share of the batch (global batch = --batch-size, B/N per rank);
  - every gradient an optimizer applies is averaged over the ranks first, in one place
    (`all_reduce_mean`, called by steps.step_with and after backward in steps.plain_step);
  - BatchNorm keeps per-rank batch statistics; the running buffers are averaged before each
    evaluation and checkpoint, so every rank holds the same model there;
  - rank 0 alone evaluates and writes the run directory.
The backend is gloo for CPU tensors and NCCL for CUDA ones (one process group, both backends).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether torchrun (or anything setting its variables) started this process as one of a group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Join the process group when launched by torchrun; idempotent; nothing in a single process."""
    if not launched() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")


def close(ended_well: bool = True) -> None:
    """Leave the process group. After a run that ended well on every rank, the ranks wait for each other first:
    gloo torn down on one rank while another (rank 0, still writing the run) holds its connections sometimes
    aborts the process ("terminate called without an active exception", seen once in a loaded test suite). After
    a failure there is no waiting: the other ranks may never arrive."""
    if dist.is_initialized():
        if ended_well:
            dist.barrier()
        dist.destroy_process_group()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def lead() -> bool:
    """The rank that evaluates and writes the run directory."""
    return rank() == 0


def rank_seed(seed: int, step: int) -> int:
    """The seed of this rank's random streams (batches, latents, augmentations) from `step` on:
    different on every rank, and the same for the same (seed, rank, step), so a distributed run is
    reproducible and resumes into the same streams from any evaluation's checkpoint."""
    return int(np.random.SeedSequence([seed, rank(), world(), step]).generate_state(1)[0])


def all_reduce_mean(tensors) -> list:
    """The mean over the ranks of each tensor (None stays None), as new tensors; the inputs are left as
    they are (a gradient may still be read by the step that computed it). One collective for all."""
    tensors = list(tensors)
    if world() == 1:
        return tensors
    live = [t for t in tensors if t is not None]
    flat = torch.cat([t.detach().reshape(-1).to(live[0].dtype) for t in live])
    dist.all_reduce(flat)
    flat /= world()
    out, i = [], 0
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(flat[i:i + t.numel()].view_as(t).to(t.dtype))
        i += t.numel()
    return out


def average_buffers_(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over the ranks, in place.
    num_batches_tracked is equal on every rank already (every rank takes the same steps)."""
    if world() == 1:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if bufs:
        for b, m in zip(bufs, all_reduce_mean(bufs)):
            b.copy_(m)


def gather(t: torch.Tensor) -> torch.Tensor:
    """[world, *t.shape]: every rank's `t`, on every rank (a single process: t[None])."""
    if world() == 1:
        return t[None]
    out = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(out, t.contiguous())
    return torch.stack(out)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (a signal that reached some ranks only)."""
    if world() == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def share(obj):
    """Rank 0's `obj` (something small and picklable: a path), on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


_ERRORS = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError, "FileExistsError": FileExistsError}


def on_lead(fn):
    """Run fn() on rank 0 only and share its outcome: rank 0 gets fn's result (or its exception),
    the other ranks None (or the same kind of exception with its message). So a check that only rank 0
    makes (the run id is free, the runs directory is writable, the run is not locked) fails every rank
    at once instead of leaving them waiting in the next collective."""
    if world() == 1:
        return fn()
    result, error = None, None
    if lead():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 (re-raised below, after the other ranks heard of it)
            error = e
    msg = [None if error is None else (type(error).__name__, str(error))]
    dist.broadcast_object_list(msg, src=0, device=torch.device("cpu"))
    if error is not None:
        raise error
    if msg[0] is not None:
        name, text = msg[0]
        if name == "RunError":
            from ..runstore import RunError
            raise RunError(text)
        if name in _ERRORS:
            raise _ERRORS[name](text)
        raise RuntimeError(f"rank 0 failed: {name}: {text}")
    return result
