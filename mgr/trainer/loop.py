"""The training loop: `train` creates a run directory and trains in it, `resume` continues a stopped
or killed one. Between steps the loop logs scalars (one host sync per log interval), evaluates,
saves probes and checkpoints, and turns signals, non-finite losses and full disks into a clean
final state in status.json (docs/run-directory.md). Under torchrun every rank runs this loop on its
share of the batch; rank 0 alone evaluates and writes the run (docs/scale.md)."""
from __future__ import annotations

import os
import signal
import sys
import time

from .. import checkpoint
from . import distributed
from ..models.classifier import evaluate, evaluate_by_class
from ..runstore import DATA_REPORT, Run, RunError, check_run_id, default_runs_dir, ensure_writable
from ..runtime import Progress
from .checkpoints import (keeps_step_weights, load_checkpoint, promote_best, save_best, save_checkpoint,
                          save_step_weights)
from .config import TrainConfig
from .probes import probe, probe_static
from .state import State, build, reseed
from .steps import train_step

STATUS_EVERY_S = 1.0  # status.json (progress, throughput) is rewritten at most this often
SKIPPED_SHOWN = 5  # skipped input files named on stderr; data_report.json lists all of them
PAUSE_POLL_S = 0.05  # how often a held trainer looks whether it may go on (or was told to stop)


class Stop(Exception):
    pass



def train(cfg: TrainConfig, runs_dir=None, run_id: str | None = None, quiet: bool = False, on_start=None,
          pause_at: int | None = None) -> Run:
    """Create a run directory and train in it. `on_start(run)` is called once it exists (on rank 0).
    `pause_at`: hold after that step (and its evaluation) until the run's pause file is removed (Run.pause)."""
    distributed.init()
    runs_dir = runs_dir or default_runs_dir()

    def check():
        if run_id is not None:
            check_run_id(run_id)
        ensure_writable(runs_dir)
        if run_id is not None and os.path.lexists(os.path.join(runs_dir, run_id)):
            raise RunError(f"run {run_id!r} already exists in {runs_dir}; resume it with --resume or choose another id")
    distributed.on_lead(check)
    s = build(cfg)  # every check that can fail does so before the run directory exists
    # locked: this process is its only writer; the other ranks only learn where it is
    run = distributed.on_lead(lambda: Run.create(runs_dir, cfg.to_dict(), run_id))
    path = distributed.share(str(run.path) if run else None)
    run = run or Run(path)
    try:
        if on_start and distributed.lead():
            on_start(run)
        return _loop(run, s, quiet, pause_at)
    finally:
        run.unlock()


def resume(run_dir, quiet: bool = False, on_start=None, pause_at: int | None = None) -> Run:
    distributed.init()
    run = Run(run_dir)

    def check():
        if not (run.path / "config.json").is_file():
            raise RunError(f"{run.path} is not a run directory (no config.json)")
        run.lock()  # refuses a run that another process is still writing
        if run.status().get("state") == "finished":
            raise RunError(f"run {run.id} has finished; nothing to resume")
        ensure_writable(run.path)  # a full disk fails here, not mid-run
    try:
        distributed.on_lead(check)
        s = build(TrainConfig.from_dict(run.config, where=str(run.path / "config.json")))
        if (run.path / "last.pt").exists():
            load_checkpoint(run, s)  # every rank reads it; the RNG it restores is rank 0's ...
        reseed(s)  # ... and under torchrun each rank's own streams are derived again (state.reseed)
        if distributed.lead():
            promote_best(run, s.step)
            run.truncate_after(s.step)  # what happened after the checkpoint is redone, never duplicated
            run.unpause()  # a resume means go on: a pause asked of the process before it is void
            if on_start:
                on_start(run)
        return _loop(run, s, quiet, pause_at)
    finally:
        run.unlock()


def _loop(run: Run, s: State, quiet: bool, pause_at: int | None = None) -> Run:
    cfg = s.cfg
    lead = s.rank == 0  # the one rank that evaluates and writes the run; every rank when alone
    keep_steps = lead and keeps_step_weights(s)  # weights/step_N.pt at every evaluation (config keep_weights)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    stops = [signal.SIGTERM, signal.SIGINT]
    # a closed terminal or a dropped ssh session (SIGHUP) saves the run as Stop does, instead of ending it unsaved;
    # a trainer started under nohup inherits SIGHUP ignored and keeps it so
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stops.append(signal.SIGHUP)
    old = {sig: signal.signal(sig, on_signal) for sig in stops}
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails a write (a clear WriteError), not the process
        old[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if lead:
        run.write_status(state="running", step=s.step, total_steps=cfg.steps, pid=os.getpid(), error=None, paused=False,
                         started=time.time(), device=str(s.device), world_size=s.world,
                         best_val_acc=s.best_val_acc if s.best_step >= 0 else None, best_step=s.best_step)
    if lead:
        _report_skipped(run, s.data)
    static = probe_static(s) if lead else None
    if lead:
        run.save_probe("static", static)
    bar = Progress(cfg.steps, s.step, desc=run.id, disable=quiet or not lead)
    t_eval = t_log = t_status = time.time()
    since_eval = since_log = 0
    try:
        while s.step < cfg.steps:
            train_step(s)
            s.step += 1
            since_eval, since_log = since_eval + 1, since_log + 1
            evaluating = s.step % cfg.eval_every == 0 or s.step == cfg.steps
            logging = s.step % cfg.log_every == 0 or evaluating
            if logging:
                means = s.flush()  # the host sync: queued GPU work is done before the clock is read
                now = time.time()
                img_per_s = since_log * s.images_per_step / max(now - t_log, 1e-9)
                if lead:
                    run.append_scalars({"step": s.step, "lr": s.sched.get_last_lr()[0],
                                        **{k: round(v, 6) for k, v in means.items()},
                                        "img_per_s": round(img_per_s, 1)})
                t_log, since_log = now, 0
                bar.update(s.step - bar.n)
                if lead and now - t_status >= STATUS_EVERY_S and not evaluating:
                    run.write_status(step=s.step, img_per_s=round(img_per_s, 1))
                    t_status = now
            if evaluating:
                distributed.average_buffers_(s.model)  # torchrun: one model (BatchNorm statistics) on every rank
                if lead:
                    elapsed = time.time() - t_eval
                    record = _eval_record(s, since_eval, elapsed)
                    run.save_probe(f"step_{s.step:07d}", probe(s, static))
                    if keep_steps:  # before last.pt, like the probe: a resume from an older one removes it
                        save_step_weights(run, s, record)
                    run.append_metrics(record)
                    if record["val_acc"] > s.best_val_acc:
                        s.best_val_acc, s.best_step = record["val_acc"], s.step
                        save_best(run, s, record)
                    save_checkpoint(run, s)
                    run.write_status(step=s.step, best_val_acc=s.best_val_acc, best_step=s.best_step,
                                     img_per_s=record["img_per_s"])
                    bar.update(s.step - bar.n, val=f"{record['val_acc']:.3f}", test=f"{record['test_acc']:.3f}")
                reseed(s)  # torchrun: the streams a resume from this checkpoint continues
                t_eval = t_status = time.time()
                since_eval = 0
            # alone: stop at the step a signal arrives; under torchrun, at the next log line, on every rank at once
            if stop["signal"] if s.world == 1 else logging and distributed.any_rank(bool(stop["signal"])):
                raise Stop(stop["signal"] or "a signal to another rank")
            if s.step == pause_at and s.step < cfg.steps and lead:
                run.pause()
            # alone: hold at the step the pause file appears; under torchrun every rank at once, at a log line
            # or the --pause-at step (all ranks know both), after rank 0 has written the file
            if s.step < cfg.steps and (run.pause_requested() if s.world == 1 else (
                    logging or s.step == pause_at) and distributed.any_rank(run.pause_requested())):
                _hold(run, s.step, stop, lead)
        if lead:
            run.write_status(state="finished", step=s.step)
    except Stop as e:
        distributed.average_buffers_(s.model)
        if not lead:
            return run
        try:
            save_checkpoint(run, s)
        except checkpoint.WriteError as err:
            _final_status(run, state="failed", step=s.step, error=f"stopped by {e}, but {err}")
            raise
        _final_status(run, state="stopped", step=s.step, error=f"stopped by {e}")
    except (FloatingPointError, checkpoint.WriteError) as e:
        if lead:
            _final_status(run, state="failed", step=s.step, error=str(e))
        raise
    except BaseException as e:
        if lead:
            _final_status(run, state="failed", step=s.step, error=f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return run


def _hold(run: Run, step: int, stop: dict, lead: bool) -> None:
    """Wait between two steps while the run's pause file exists; a signal ends the wait (and the run: under
    torchrun, SIGTERM to torchrun reaches every rank)."""
    if lead:
        run.write_status(paused=True, step=step)
    while run.pause_requested() and not stop["signal"]:
        time.sleep(PAUSE_POLL_S)
    if lead:
        run.write_status(paused=False)
    if stop["signal"]:
        raise Stop(stop["signal"])


def _report_skipped(run: Run, data) -> None:
    """Files the dataset loader left out (an image folder's non-images, corrupt files, ...): all of them in
    data_report.json, the count and the first few on stderr, where a shell user looks."""
    skipped = getattr(data, "skipped", None)
    if not skipped:
        return
    from ..imagefolder import skipped_summary
    run.write_data_report([{"path": p, "reason": r} for p, r in skipped], skipped_summary(skipped))
    shown = SKIPPED_SHOWN
    lines = [f"warning: {len(skipped)} file(s) of {data.name} skipped; it trains on the rest:",
             *(f"  {p}: {r}" for p, r in skipped[:shown]),
             f"  {'... and ' + str(len(skipped) - shown) + ' more; a' if len(skipped) > shown else 'A'}ll of them "
             f"with their reasons in {run.path / DATA_REPORT}"]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _final_status(run: Run, **fields) -> None:
    """The last status of a run; on a full disk even that may fail, and the reason must still reach the user."""
    try:
        run.write_status(**fields)
    except OSError as e:
        print(f"could not record state {fields.get('state')!r} in {run.path / 'status.json'} ({e}); "
              f"reason: {fields.get('error')}", file=sys.stderr, flush=True)


def _eval_record(s: State, steps: int, elapsed: float) -> dict:
    means = {k: v / s.eval_counts[k] for k, v in s.eval_sums.items()}
    s.eval_sums, s.eval_counts = {}, {}
    d = s.data
    val_acc, val_loss = evaluate(s.forward, d.x_val, d.y_val)
    test_acc, test_loss, test_class_acc = evaluate_by_class(s.forward, d.x_test, d.y_test, d.num_classes)
    n_train = s.cfg.train_acc_images
    train_acc = evaluate(s.forward, d.x_train[:n_train], d.y_train[:n_train])[0] if n_train else None
    record = {"step": s.step, "epoch": round(s.step * s.images_per_step / len(d.y_train), 3),
              "lr": s.sched.get_last_lr()[0], **{k: round(v, 6) for k, v in means.items()},
              **({"train_acc": train_acc} if n_train else {}), "val_acc": val_acc, "val_loss": round(val_loss, 6),
              "test_acc": test_acc, "test_loss": round(test_loss, 6), "test_class_acc": test_class_acc,
              "img_per_s": round(steps * s.images_per_step / max(elapsed, 1e-9), 1), "elapsed": round(elapsed, 3)}
    return record
