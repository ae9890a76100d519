"""Training the class-conditional generator, and the generator checkpoint format.

Hinge loss, spectral-norm projection discriminator, DiffAugment on real and fake images, Adam
with β1 = 0 (BigGAN / DiffAugment recipe), an EMA copy of G whose batch-norm statistics are
re-estimated before it is saved. The generator sees only the reduced training split minus its
validation part: that is all the classifier may learn from, so a generator trained on more
would smuggle extra images into the comparison.
"""
from __future__ import annotations

import copy
import json
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint, optim
from .augment import diff_augment, parse_policy
from .data import VAL_FRACTION, Data, DataConfig, load
from .models.generator import Discriminator, Generator, layout
from .runtime import Progress, autocast, resolve_device, seed_everything

GENERATOR_KIND, GENERATOR_VERSION = "mgr-generator", 1
STATE_KIND, STATE_VERSION = "mgr-generator-training-state", 1
RESUMABLE_CHANGES = ("steps", "sample_every", "checkpoint_every", "bn_batches")  # the last only re-estimates statistics


@dataclass(frozen=True)
class GanConfig:
    steps: int = 2000
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    n_dis: int = 1  # discriminator updates per generator update
    z_dim: int = 64
    g_width: int = 32  # sized for CPU training; 64 is better where a GPU is at hand
    d_width: int = 32
    diffaug: str = "color,translation,cutout"
    # a 200-step time constant: runs here are thousands of steps, not BigGAN's 100k+, and a slower
    # EMA lagged far behind G (measured on digits: label accuracy 0.11 for the EMA vs 0.57 for G at 600 steps)
    ema_decay: float = 0.995
    ema_start: int = 500  # EMA copies G exactly before this step
    sample_every: int = 500
    checkpoint_every: int = 500
    # random batches of 128 that re-estimate the EMA copy's BatchNorm statistics at the end (a sample grid uses a
    # quarter): 7 s of a 2-core CPU at the default, whatever the steps, so a smoke test of a few steps asks for fewer
    bn_batches: int = 64
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "n_dis", "z_dim", "g_width", "d_width", "sample_every", "checkpoint_every",
                     "bn_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        for name in ("lr_g", "lr_d"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 and finite")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1)")
        for name in ("ema_start", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        parse_policy(self.diffaug)


# ----------------------------------------------------------------------------- checkpoints

REQUIRED_META = {"dataset": str, "data_seed": int, "split_hash": str, "resolution": int, "channels": int,
                 "num_classes": int, "classes": list, "z_dim": int, "g_width": int, "steps": int, "recipe": dict}


def save_generator(path: str | Path, G: Generator, meta: dict) -> None:
    checkpoint.save(path, GENERATOR_KIND, GENERATOR_VERSION, meta, state_dict=G.state_dict())


def load_generator(path: str | Path, expect: dict | None = None, device="cpu") -> tuple[Generator, dict]:
    """Load a frozen, eval-mode generator. `expect` (e.g. the run's dataset, split_hash and
    resolution) must match the metadata, otherwise the error names the differing field."""
    ckpt = checkpoint.load(path, GENERATOR_KIND, GENERATOR_VERSION)
    meta = ckpt["meta"]
    checkpoint.check_meta(path, meta, REQUIRED_META, expect,
                          why="a generator trained on other images than the run's would leak them into it; "
                              "train one for this split with `python -m mgr train-generator`")
    generator_val_fraction(path, meta)  # optional field, typed when present
    try:
        G = Generator(meta["num_classes"], meta["resolution"], meta["channels"], meta["z_dim"], meta["g_width"])
    except (ValueError, RuntimeError) as e:
        raise checkpoint.CheckpointError(f"{path}: metadata describes no generator this MGR Lab builds ({e})") from e
    checkpoint.load_state(G, ckpt.get("state_dict", {}), path)
    G.eval().requires_grad_(False)
    return G.to(device), meta


def train_command(data_cfg: DataConfig) -> str:
    """The `python -m mgr train-generator` command that trains the generator of data_cfg's split."""
    size = (f"--per-class {data_cfg.per_class}" if data_cfg.per_class is not None
            else f"--ratio {data_cfg.subset['ratio']:g}")
    val = f" --val-fraction {data_cfg.val_fraction}" if "val_fraction" in data_cfg.subset else ""
    return (f"python -m mgr train-generator --dataset {shlex.quote(data_cfg.dataset)} {size} "
            f"--data-seed {data_cfg.data_seed}{val}")


def generator_val_fraction(path, meta: dict) -> float:
    """The val_fraction a generator's split was carved with: the default where its metadata has none
    (every generator made before the option existed, and every one made at the default since)."""
    vf = meta.get("val_fraction", VAL_FRACTION)
    if isinstance(vf, bool) or not isinstance(vf, (int, float)):
        raise checkpoint.CheckpointError(f"{path}: metadata 'val_fraction' is {vf!r}, expected float")
    return float(vf)


def check_val_fraction(path, meta: dict, data_cfg: DataConfig) -> None:
    """Refuse, from its metadata alone (before any data is loaded), a generator whose split took another
    share of each class for validation than data_cfg's: it was trained on other training images."""
    have = generator_val_fraction(path, meta)
    if have != data_cfg.val_fraction:
        raise checkpoint.CheckpointError(
            f"{path} was trained on the split with val_fraction={have}, but this run has "
            f"val_fraction={data_cfg.val_fraction}: the validation part of each class differs, so the generator "
            f"saw other training images; train a matching generator with: {train_command(data_cfg)} "
            "(it is then found by default), or pass --generator to one trained so")


def list_generators() -> list[tuple[Path, dict | str]]:
    """(path, metadata) of every generator in checkpoints/generators/; an unreadable file gets
    its error message in place of metadata, so one bad file does not hide the others."""
    from . import paths
    found = []
    for path in sorted((paths.checkpoints_dir() / "generators").glob("*.pt")):
        try:
            found.append((path, checkpoint.load_meta(path, GENERATOR_KIND, GENERATOR_VERSION)))
        except checkpoint.CheckpointError as e:
            found.append((path, str(e)))
    return found


def split_meta(data_cfg: DataConfig, data: Data) -> dict:
    """Metadata that pins a generator to the exact images it was trained on."""
    return {**data_cfg.subset, "split_hash": data.split_hash, "resolution": data.resolution,
            "channels": data.channels, "num_classes": data.num_classes, "classes": data.classes}


# ----------------------------------------------------------------------------- training

@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


@torch.no_grad()
def recalibrate_bn(G: Generator, batches: int = 64, batch_size: int = 128) -> None:
    """Re-estimate BN running statistics of G (e.g. the EMA copy, whose weights never produced
    the statistics it carries) as a plain average over random batches; leaves G in eval mode."""
    device = next(G.parameters()).device
    gen = torch.Generator(device=device).manual_seed(0)  # own RNG: sampling must not shift training's
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    G.train()
    for _ in range(batches):
        y = torch.randint(G.num_classes, (batch_size,), device=device, generator=gen)
        G(torch.randn(batch_size, G.z_dim, device=device, generator=gen), y)
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    G.eval()


def train_generator(data_cfg: DataConfig, cfg: GanConfig, out: str | Path, work_dir: str | Path | None = None,
                    resume: bool = False, device: str = "auto", fid: bool = True, quiet: bool = False,
                    command: str = "") -> dict:
    """Train a generator on data_cfg's training split, save its EMA copy to `out`, return its metadata.

    `work_dir` (default: next to `out`, `<out stem>.work/`) keeps the resumable training state,
    periodic sample grids and a log; `resume=True` continues from its state.
    """
    from .images import class_grid, save_image  # PIL only when training, not when loading

    out = Path(out)
    work = Path(work_dir) if work_dir else out.with_name(out.stem + ".work")
    state_path = work / "state.pt"
    if out.exists() and not resume:
        raise FileExistsError(f"{out} exists; choose another --out, or delete it first (it is never overwritten silently)")
    if state_path.exists() and not resume:
        raise FileExistsError(f"{work} holds an unfinished training state; pass --resume to continue it, "
                              "or delete that folder to start over")
    if resume and not state_path.exists():
        raise FileNotFoundError(f"--resume: no training state at {state_path}")

    dev = resolve_device(device)
    data = load(data_cfg, device=dev)
    layout(data.resolution)  # fail now on a resolution the generator cannot build
    seed_everything(cfg.seed)
    G = Generator(data.num_classes, data.resolution, data.channels, cfg.z_dim, cfg.g_width).to(dev)
    D = Discriminator(data.num_classes, data.resolution, data.channels, cfg.d_width).to(dev)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_g = optim.Adam(G.parameters(), cfg.lr_g, betas=(0.0, 0.999))
    opt_d = optim.Adam(D.parameters(), cfg.lr_d, betas=(0.0, 0.999))
    meta = {**split_meta(data_cfg, data), "z_dim": cfg.z_dim, "g_width": cfg.g_width, "recipe": asdict(cfg)}
    # what must not change across --resume (the step budget and save cadence may)
    fixed = {"dataset": meta["dataset"], "split_hash": meta["split_hash"],
             "model_recipe": {k: v for k, v in meta["recipe"].items() if k not in RESUMABLE_CHANGES}}
    step, elapsed = 0, 0.0
    if resume:
        st = checkpoint.load(state_path, STATE_KIND, STATE_VERSION, map_location=dev)
        checkpoint.check_meta(state_path, st["meta"], {}, fixed,
                              why="--resume continues the same training; change the options back or start a new --out")
        G.load_state_dict(st["G"]), D.load_state_dict(st["D"]), G_ema.load_state_dict(st["G_ema"])
        opt_g.load_state_dict(st["opt_g"]), opt_d.load_state_dict(st["opt_d"])
        torch.set_rng_state(st["rng"].cpu())
        step, elapsed = st["meta"]["step"], st["meta"]["elapsed"]

    def save_state():
        checkpoint.save(state_path, STATE_KIND, STATE_VERSION, {**meta, **fixed, "step": step, "elapsed": elapsed},
                        G=G.state_dict(), D=D.state_dict(), G_ema=G_ema.state_dict(),
                        opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), rng=torch.get_rng_state())

    def grid(path):
        G_show = copy.deepcopy(G_ema)
        recalibrate_bn(G_show, batches=max(1, cfg.bn_batches // 4))
        save_image(class_grid(G_show, data.classes, per_class=10, seed=0), path)

    x_real, y_real = data.x_train, data.y_train
    n, B, policy = len(y_real), cfg.batch_size, cfg.diffaug
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "log.jsonl", "a")
    bar = Progress(cfg.steps, step, desc=f"G {data.name}", disable=quiet)
    t0 = time.time()
    while step < cfg.steps:
        for _ in range(cfg.n_dis):
            idx = torch.randint(n, (B,), device=dev)
            y_fake = torch.randint(data.num_classes, (B,), device=dev)
            with autocast(dev):
                with torch.no_grad():
                    x_fake = G(torch.randn(B, cfg.z_dim, device=dev), y_fake)
                d_loss = (F.relu(1 - D(diff_augment(x_real[idx], policy), y_real[idx])).mean()
                          + F.relu(1 + D(diff_augment(x_fake, policy), y_fake)).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        y_fake = torch.randint(data.num_classes, (B,), device=dev)
        with autocast(dev):
            g_loss = -D(diff_augment(G(torch.randn(B, cfg.z_dim, device=dev), y_fake), policy), y_fake).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        ema_update(G_ema, G, cfg.ema_decay if step >= cfg.ema_start else 0.0)
        step += 1

        if step % 50 == 0 or step == cfg.steps:  # the only host syncs: a lagged log line
            d, g = d_loss.item(), g_loss.item()
            if not (torch.isfinite(torch.tensor([d, g])).all()):
                raise FloatingPointError(f"GAN training diverged at step {step}: d_loss={d}, g_loss={g}")
            log.write(json.dumps({"step": step, "d_loss": round(d, 4), "g_loss": round(g, 4)}) + "\n")
            log.flush()
            bar.update(step - bar.n, d=f"{d:.3f}", g=f"{g:.3f}")
        if step % cfg.sample_every == 0 or step == cfg.steps:
            grid(work / f"samples_{step:06d}.png")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            elapsed += time.time() - t0
            t0 = time.time()
            save_state()
    bar.close()
    log.close()

    recalibrate_bn(G_ema, batches=cfg.bn_batches)
    meta.update(steps=step, train_seconds=round(elapsed, 1), device=str(dev), command=command)
    if fid:
        from .fid import evaluate_generator
        try:
            meta.update(evaluate_generator(G_ema, data, data_cfg))
        except FileNotFoundError as e:  # no extractor for this dataset yet: the generator is still good
            print(f"FID not measured: {e}", flush=True)
    save_generator(out, G_ema, meta)
    grid(out.with_suffix(".png"))
    return meta
