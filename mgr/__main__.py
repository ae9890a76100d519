"""Command line: `python -m mgr <command> --help`.

  train              train a classifier with base, gda, gda-mps, pcr or mgr, under the standard
                     procedure or MLTP, optionally with the CML co-learner (or --resume a run)
  runs               the runs in --runs-dir: state, progress, best validation accuracy
  datasets           the datasets known, and whether each is available offline
  generators         the shipped / trained generators and their metadata
  train-generator    train a class-conditional GAN on a reduced training split
  train-extractor    train the offline FID feature extractor of a dataset
  fid                FID of a generator checkpoint against the test split
  export             a run's scalars and probe features as TensorBoard event files and projector data
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path

from . import paths
from .checkpoint import WriteError
from .data import VAL_FRACTION, DataConfig, DataError, dataset_info, known_datasets
from .runtime import set_threads, threads_default


def add_data_args(p: argparse.ArgumentParser, default_dataset: str = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, help=f"one of: {', '.join(known_datasets())}")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--ratio", type=float, help="fraction of each class kept, in (0, 1] (default 1)")
    size.add_argument("--per-class", type=int, help="images kept per class (instead of --ratio)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the subset (not of training)")
    g.add_argument("--resolution", type=int, help="image side for variable-size datasets (default per dataset)")
    g.add_argument("--data-root", default=None, help="where torchvision datasets live (default $MGR_DATA_ROOT or data/)")
    g.add_argument("--no-download", action="store_true", help="never try to download a dataset")
    g.add_argument("--test-subset", type=int, help="evaluate on a fixed stratified subset of this many test images "
                                                   "(default: the whole test set)")
    g.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                   help="share of each kept class that becomes the validation split, in (0, 0.5]; the kept images "
                        "stay the same, and a generator must be trained for the same value")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default $MGR_THREADS, else one per core); give concurrent runs "
                        "a share of the cores each: on a busy CPU, more threads than free cores is many times slower")


def data_config(a) -> DataConfig:
    kw = {"root": a.data_root} if a.data_root else {}
    return DataConfig(a.dataset, ratio=a.ratio, per_class=a.per_class, data_seed=a.data_seed,
                      resolution=a.resolution, download=not a.no_download,
                      test_subset=getattr(a, "test_subset", None),
                      val_fraction=getattr(a, "val_fraction", VAL_FRACTION), **kw)


def train_config(a):
    """The TrainConfig of parsed `train` options: every field from the option of the same name
    (--batch-size for batch_size), so a new field needs only its option (the test checks both ways)."""
    import dataclasses

    from .trainer import TrainConfig
    return TrainConfig(data=data_config(a), **{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)
                                               if f.name != "data"})


def cmd_train(a) -> None:
    from . import trainer as train
    from .runstore import default_runs_dir
    from .trainer import distributed

    def started(run):
        print(run.path, flush=True)  # first line: where to look (the app and scripts read it)

    if a.pause_at is not None and a.pause_at < 1:
        raise ValueError(f"--pause-at {a.pause_at} is not allowed; it must be a step >= 1")
    ended_well = False
    try:  # under torchrun (docs/scale.md) the process group is joined by train/resume and left here
        if a.resume:
            given = [opt for dest, (opt, default) in a.option_defaults.items()
                     if dest not in ("resume", "quiet", "threads", "pause_at") and getattr(a, dest) != default]
            if given:
                raise ValueError(f"--resume continues a run with the options in its config.json; it takes no other "
                                 f"training options (got {', '.join(given)}). Start a new run to change them")
            train.resume(a.resume, quiet=a.quiet, on_start=started, pause_at=a.pause_at)
            ended_well = True
            return
        cfg = train_config(a)
        run = train.train(cfg, a.runs_dir or default_runs_dir(), a.run_id, quiet=a.quiet, on_start=started,
                          pause_at=a.pause_at)
        if distributed.lead():  # under torchrun, once
            st = run.status()
            print(f"{st['state']}: best val acc {st.get('best_val_acc')} at step {st.get('best_step')}", flush=True)
        ended_well = True
    finally:
        distributed.close(ended_well)


def cmd_export(a) -> None:
    from .tensorboard import export_tensorboard
    written = export_tensorboard(a.run, a.tensorboard)
    print(f"{a.tensorboard}: {written['scalars']} scalar points, {written['embeddings']} embedding(s); "
          f"view with: tensorboard --logdir {shlex.quote(str(a.tensorboard))}")


def cmd_runs(a) -> None:
    from .runstore import default_runs_dir, list_runs
    runs = list_runs(a.runs_dir or default_runs_dir())
    if not runs:
        print(f"no runs in {a.runs_dir or default_runs_dir()}; start one with `python -m mgr train`")
    for run in runs:
        st = run.status()
        try:
            cfg = run.config
            best = st.get("best_val_acc")
            what = f"{cfg['data']['dataset']} {cfg['method']}/{cfg['model']}"
            line = (f"{run.id}  {st.get('state', '?'):9s} {st.get('step', 0):>6}/{cfg['steps']:<6} {what:32s} "
                    f"best val {best if best is not None else '-'}" + (f"  ({st['error']})" if st.get("error") else ""))
        except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged or hand-edited run must not hide the others
            line = f"{run.id}  {st.get('state', '?'):9s} unreadable run files: {type(e).__name__}: {e}"
        print(line)


def cmd_pause(a) -> None:
    from .runstore import Run
    run = Run(a.run)
    if not (run.path / "config.json").is_file():
        raise ValueError(f"{run.path} is not a run directory (no config.json)")
    if a.hold:
        run.pause()
        print(f"{run.id}: asked to hold after its current step; `python -m mgr continue {a.run}` lets it go on")
    else:
        run.unpause()
        print(f"{run.id}: goes on")


def cmd_datasets(a) -> None:
    for name in known_datasets():
        if name.startswith("imagefolder:"):
            print(f"{name:16s} your own images: one sub-folder per class (optional train/ and test/)")
            continue
        info = dataset_info(name)
        print(f"{name:16s} {info.channels}x{info.resolution}x{info.resolution}  {info.source}")


def cmd_generators(a) -> None:
    from .gan import list_generators
    found = list_generators()
    if not found:
        print(f"no generators in {paths.checkpoints_dir() / 'generators'}")
    for path, meta in found:
        if isinstance(meta, str):
            print(f"{path}: UNREADABLE: {meta}")
            continue
        size = f"per_class={meta['per_class']}" if "per_class" in meta else f"ratio={meta.get('ratio')}"
        size += f" val_fraction={meta['val_fraction']}" if "val_fraction" in meta else ""
        fid = f"FID {meta['fid']} ({meta.get('fid_extractor', '?')})" if "fid" in meta else "FID not measured"
        print(f"{path}: {meta['dataset']} {size} data_seed={meta['data_seed']} {meta['resolution']}px "
              f"steps={meta['steps']} {fid}")


def cmd_train_generator(a) -> None:
    from .gan import GanConfig, train_generator
    data_cfg = data_config(a)
    cfg = GanConfig(steps=a.steps, batch_size=a.batch_size, lr_g=a.lr_g, lr_d=a.lr_d, n_dis=a.n_dis, z_dim=a.z_dim,
                    g_width=a.width, d_width=a.width, diffaug=a.diffaug, sample_every=a.sample_every,
                    checkpoint_every=a.sample_every, bn_batches=a.bn_batches, seed=a.seed)
    out = Path(a.out) if a.out else paths.generator_path(data_cfg.subset)
    _check_writable(out.parent, "--out")
    if a.work_dir:
        _check_writable(Path(a.work_dir), "--work-dir")
    print(f"generator -> {out}", flush=True)
    command = "python -m mgr " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    meta = train_generator(data_cfg, cfg, out, a.work_dir, resume=a.resume, device=a.device,
                           fid=not a.no_fid, quiet=a.quiet, command=command)
    print(json.dumps({k: v for k, v in meta.items() if k not in ("recipe", "classes")}, indent=1))


def cmd_train_extractor(a) -> None:
    from .fid import train_extractor
    if a.steps <= 0:
        raise ValueError(f"--steps {a.steps} is not allowed; it must be a positive integer")
    dataset_info(a.dataset)  # an unknown name fails here
    _check_writable((Path(a.out) if a.out else paths.extractor_path(a.dataset)).parent, "--out")
    meta = train_extractor(a.dataset, a.out, steps=a.steps, device=a.device, quiet=a.quiet, data_root=a.data_root)
    print(json.dumps(meta, indent=1))


def cmd_fid(a) -> None:
    from .data import load
    from .fid import EXTRACTORS, evaluate_generator
    from .gan import load_generator
    from .runtime import resolve_device
    if a.num is not None and a.num < 2:
        raise ValueError(f"--num {a.num} is not allowed; FID needs at least 2 generated images")
    if a.extractor not in EXTRACTORS:
        raise ValueError(f"--extractor {a.extractor!r} is not one of {', '.join(EXTRACTORS)}")
    dev = resolve_device(a.device)
    G, meta = load_generator(a.generator, device=dev)
    subset = {k: meta[k] for k in ("ratio", "per_class", "val_fraction") if k in meta}
    cfg = DataConfig(meta["dataset"], data_seed=meta["data_seed"], **subset)
    print(json.dumps(evaluate_generator(G, load(cfg, dev), cfg, extractor=a.extractor, num=a.num), indent=1))


def _check_writable(folder: Path, option: str) -> None:
    """Fail at start, not after an hour of training, when the result could not be saved."""
    from .runstore import RunError, ensure_writable
    try:
        ensure_writable(folder)
    except RunError as e:
        raise ValueError(f"{option}: {folder} is not writable ({e.__cause__.strerror if e.__cause__ else e})") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mgr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    from .finder import FINDERS
    from .models.classifier import MODELS
    from .models.co_learner import CO_LEARNER_ARCHS
    from .trainer import FINDER_ACTIVATIONS, FINDER_LR_SCHEDULES, LAM_KL_SCHEDULES, META_PRECISIONS, META_VALS, METHODS, MLTP_VARIANTS, PROCEDURES, SCHEDULES
    t = sub.add_parser("train", help="train a classifier (prints the run directory first)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_args(t)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run (all other options come from it)")
    t.add_argument("--method", default="mgr", choices=METHODS)
    t.add_argument("--model", default="smallcnn", choices=MODELS)
    t.add_argument("--pretrained", action="store_true", help="ImageNet weights for resnet18 (from torch's cache)")
    t.add_argument("--width", type=int, help="SmallCNN's first-stage channels (default 32; 8 or 16 for fast demos)")
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, help="classifier learning rate (default 0.05 smallcnn, 0.1 resnet18)")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--schedule", default="cosine", choices=SCHEDULES)
    t.add_argument("--warmup-steps", type=int, help="linear warm-up (default 5%% of steps)")
    t.add_argument("--lam", type=float, default=1.0, help="λ, weight of the synthetic term")
    t.add_argument("--lam-kl", type=float, default=0.1, help="λ_KL, weight of the finder's batch KL")
    t.add_argument("--lam-kl-schedule", default="constant", choices=LAM_KL_SCHEDULES,
                   help="constant, or lr: λ_KL scaled like the classifier's learning rate, so the KL's pull does "
                        "not outweigh the lookahead part (∝ η) as η decays")
    t.add_argument("--finder", default="residual", choices=FINDERS)
    t.add_argument("--finder-lr", type=float, default=1e-3)
    t.add_argument("--finder-lr-schedule", default="lr", choices=FINDER_LR_SCHEDULES,
                   help="constant, or lr: the finder's learning rate scaled like the classifier's, so the finder "
                        "slows down with it as η decays")
    t.add_argument("--finder-activation", default="silu", choices=FINDER_ACTIVATIONS,
                   help="the finder's hidden units (residual, mlp); silu units cannot fall silent for good")
    t.add_argument("--syn-per-real", type=int, default=1,
                   help="synthetic samples per real sample in the synthetic term and the finder's meta step")
    t.add_argument("--latent-psi", type=float, default=1.0,
                   help="synthetic latents z ~ N(0, psi^2 I): below 1 the truncation trick, less variety")
    t.add_argument("--syn-label-noise", type=float, default=0.0,
                   help="fraction of the synthetic CE's labels replaced by a random class (gda, gda-mps): "
                        "wrong-class samples")
    t.add_argument("--leaky-generator", action="store_true",
                   help="accept a --generator trained on another split of the dataset, which saw images this "
                        "run must not: a leak, for the leakage demo; the run is marked leaky wherever it is shown")
    t.add_argument("--meta-every", type=int, default=None,
                   help="the finder's meta step every k-th iteration (between them: PCR steps on its latents); "
                        "default 2, and 1 under --procedure mltp")
    t.add_argument("--meta-val", default="auto", choices=META_VALS,
                   help="the finder's validation term: a batch drawn from the validation split, the full split, "
                        "or auto: the full split when it holds at most two batches")
    t.add_argument("--meta-precision", default="float32", choices=META_PRECISIONS,
                   help="the finder's meta step on CUDA: float32 (exact) or bf16 autocast like the rest of the "
                        "step (faster; the hypergradient drifts to cosine 0.97 with the exact one)")
    m = t.add_argument_group("MLTP (meta-learning based training procedure; wraps any --method)")
    m.add_argument("--procedure", default="standard", choices=PROCEDURES,
                   help="mltp: two disjoint real batches per step, J = C(w; B_i) + η C(w − α∇C(w; B_i); B_j)")
    m.add_argument("--mltp-variant", default="fo", choices=MLTP_VARIANTS,
                   help="fo: first order; full: second order; conv / fc: second order, meta step on conv / "
                        "fully-connected tensors only")
    m.add_argument("--mltp-eta", type=float, default=1.0, help="η, weight of the looked-ahead task")
    m.add_argument("--mltp-alpha", type=float, help="initial per-tensor step α; None: the classifier's --lr")
    c = t.add_argument_group("CML co-learner (needs a lookahead: --method gda-mps/mgr or --procedure mltp)")
    c.add_argument("--co-learner", action="store_true", help="a co-learner head on the looked-ahead features, "
                                                              "trained by the outer objective, dropped after training")
    c.add_argument("--co-learner-arch", default="conv", choices=CO_LEARNER_ARCHS,
                   help="conv: two conv blocks + linear on the last feature map; linear: on pooled features")
    c.add_argument("--co-learner-gamma", type=float, default=1.0, help="γ, weight of its CE in the outer objective")
    c.add_argument("--co-learner-lr", type=float, default=1e-3, help="its Adam learning rate")
    t.add_argument("--pcr-aug", help="PCR's T, e.g. translation,flip,color,cutout (default per dataset)")
    t.add_argument("--eval-every", type=int, default=50, help="steps between evaluations, probes and checkpoints")
    t.add_argument("--log-every", type=int, default=10, help="steps between training-scalar lines (scalars.jsonl)")
    from .trainer.config import KEEP_WEIGHTS, KEEP_WEIGHTS_AUTO_MIB
    t.add_argument("--keep-weights", default="auto", choices=KEEP_WEIGHTS,
                   help="weights/step_N.pt (classifier, finder, co-learner) at every evaluation, for the app's "
                        f"Explore page: all; last (only last.pt and best.pt); auto: all while the classifier's "
                        f"state is at most {KEEP_WEIGHTS_AUTO_MIB} MiB (SmallCNN yes, ResNet-18 no)")
    t.add_argument("--probes-per-class", type=int, default=16)
    t.add_argument("--probe-real", type=int, default=1000, help="real images whose features each probe keeps")
    t.add_argument("--train-acc-images", type=int, default=2000,
                   help="training images each evaluation's train accuracy is measured on (0: none)")
    t.add_argument("--seed", type=int, default=0, help="training seed (the subset has --data-seed)")
    t.add_argument("--device", default="auto")
    t.add_argument("--compile", action="store_true", help="torch.compile the plain forwards")
    t.add_argument("--generator", help="generator checkpoint: a path, or the name of a file in checkpoints/generators/ "
                                       "(default: the shipped one for this split)")
    t.add_argument("--runs-dir", help="default $MGR_RUNS_DIR, else runs/")
    t.add_argument("--run-id", help="name of the run directory (default: generated)")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--pause-at", type=int, metavar="STEP",
                   help="hold after that step and its evaluation, keeping the process and its place, until the "
                        "run's pause file is removed (`python -m mgr continue RUN`, the Train page) or a signal "
                        "stops it; also with --resume")
    add_threads_arg(t)
    # every option's default, so that --resume can refuse the ones it would silently ignore
    t.set_defaults(fn=cmd_train, option_defaults={act.dest: (act.option_strings[0], act.default)
                                                  for act in t._actions if act.option_strings and act.dest != "help"})

    x = sub.add_parser("export", help="write a run's scalars and probe features for TensorBoard")
    x.add_argument("run", help="the run directory")
    x.add_argument("--tensorboard", metavar="DIR", required=True,
                   help="a new (or empty) folder for the event files and the projector's embedding")
    x.set_defaults(fn=cmd_export)

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--runs-dir", help="default $MGR_RUNS_DIR, else runs/")
    r.set_defaults(fn=cmd_runs)

    for name, what in (("pause", "ask a running run to hold between two steps"), ("continue", "let a held run go on")):
        c = sub.add_parser(name, help=what)
        c.add_argument("run", help="the run directory")
        c.set_defaults(fn=cmd_pause, hold=name == "pause")
    sub.add_parser("datasets", help="list datasets").set_defaults(fn=cmd_datasets)
    sub.add_parser("generators", help="list generator checkpoints").set_defaults(fn=cmd_generators)

    g = sub.add_parser("train-generator", help="train a class-conditional GAN on a reduced split")
    add_data_args(g)
    g.add_argument("--seed", type=int, default=0, help="training seed of the GAN")
    g.add_argument("--out", help="checkpoint path (default checkpoints/generators/<dataset>_<size>_seed<data seed>.pt, "
                                 "with _val<fraction> before .pt when --val-fraction is not the default)")
    g.add_argument("--work-dir", help="resumable state, sample grids and log (default <out>.work/)")
    g.add_argument("--resume", action="store_true", help="continue from the state in --work-dir")
    g.add_argument("--steps", type=int, default=2000)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr-g", type=float, default=2e-4)
    g.add_argument("--lr-d", type=float, default=2e-4)
    g.add_argument("--n-dis", type=int, default=1, help="discriminator steps per generator step")
    g.add_argument("--z-dim", type=int, default=64)
    g.add_argument("--width", type=int, default=32, help="base channel width of G and D (64 is better on a GPU)")
    g.add_argument("--diffaug", default="color,translation,cutout", help="DiffAugment policy (comma-separated)")
    g.add_argument("--sample-every", type=int, default=500, help="steps between sample grids and saved states")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--bn-batches", type=int, default=64,
                   help="batches of 128 samples that re-estimate the final generator's BatchNorm statistics")
    g.add_argument("--no-fid", action="store_true", help="skip the FID measurement at the end")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_arg(g)
    g.set_defaults(fn=cmd_train_generator)

    e = sub.add_parser("train-extractor", help="train the offline FID feature extractor of a dataset")
    e.add_argument("--dataset", default="digits")
    e.add_argument("--out", help="default checkpoints/feature_extractors/<dataset>.pt")
    e.add_argument("--steps", type=int, default=3000)
    e.add_argument("--data-root", default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true")
    add_threads_arg(e)
    e.set_defaults(fn=cmd_train_extractor)

    f = sub.add_parser("fid", help="FID of a generator checkpoint against its dataset's test split")
    f.add_argument("generator")
    f.add_argument("--extractor", default="auto", help="auto (Inception when its weights are on disk), inception, classifier")
    f.add_argument("--num", type=int, help="generated images (default max(test size, 2000))")
    f.add_argument("--device", default="auto")
    add_threads_arg(f)
    f.set_defaults(fn=cmd_fid)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # past a file-size limit (ulimit -f) a write fails with a message, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        if hasattr(a, "threads"):
            set_threads(threads_default() if a.threads is None else a.threads)
        a.fn(a)
    except (DataError, ValueError, FileExistsError, FileNotFoundError) as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: rank 0 says why
            print(f"error: {err}", file=sys.stderr)
        return 2
    except (FloatingPointError, WriteError) as err:
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
