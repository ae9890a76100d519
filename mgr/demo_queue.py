"""Running a demo launch: its manifest, the supervisor that runs its queue, Stop and Resume of the
whole demo, and where its results stand (no Streamlit here).

A launch writes a manifest, then starts one detached supervisor that runs the queue:

    <runs dir>/.demos/<launch id>.json   {"id", "demo", "seeds", "parallel", "overrides", "stopped",
                                          "resumed", "created", "runs": [{"run_id", "arm", "seed",
                                          "values", "command"}]}   (atomic)
    <runs dir>/.demos/<launch id>.lock   flock held by the live supervisor (the OS drops it however
                                          the supervisor ends)
    <runs dir>/.demos/<launch id>.log    the supervisor's output

The supervisor (`python -m mgr.demo_supervisor run <manifest>`) trains the runs on a pool (mgr/demo_pool.py) of
`parallel` worker processes (the standard library's ProcessPoolExecutor, spawn context), each with one torch thread: a worker
imports torch once and trains run after run in its own process, exactly as `python -m mgr train` (the
manifest's `command`) would, so a demo pays no process start-up per run. A worker's trainer
handles SIGTERM as any trainer does (Stop saves and ends the run `stopped`); a worker that dies breaks the
pool, which is made anew, and the runs it held are resumed, so no run is lost. The supervisor outlives the
app; the app restarts it when it died with work left (`ensure_supervisor`). The run directories stay the
only truth about the runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import demo_standby, paired
from .checkpoint import atomic_write_text
from .demo_pool import LOST_S, end_broken_workers, lost_runs, new_pool, stop_inflight, train_one
from .demos import (DEMOS, Demo, arm_values, check_data, check_seeds, get_demo, overall_verdict, statistic_value,
                    stopped_by_guard, summarize_pairs)
from .launch import LAUNCHES, LaunchError, Launcher, build_config, cli_args
from .paths import REPO
from .processes import lock_held, runs_command
from .runstore import Run, RunError, check_run_id, default_runs_dir, ensure_writable, run_path

DEMOS_DIR = ".demos"
POLL_S = 0.5  # how often the supervisor looks at its runs


# ----------------------------------------------------------------------------- launching

def demos_dir(runs_dir=None) -> Path:
    return Path(runs_dir or default_runs_dir()) / DEMOS_DIR


def manifest_path(runs_dir, launch_id: str) -> Path:
    check_run_id(launch_id)  # a launch id comes from URLs and session state: a plain name, never a path
    return demos_dir(runs_dir) / f"{launch_id}.json"


def read_manifest(runs_dir, launch_id: str) -> dict:
    path = manifest_path(runs_dir, launch_id)
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise LaunchError(f"no demo launch {launch_id!r} in {demos_dir(runs_dir)}") from None
    except (OSError, ValueError) as e:
        raise LaunchError(f"demo manifest {path} is unreadable: {e}") from None
    if not isinstance(m, dict) or m.get("demo") not in DEMOS or not isinstance(m.get("runs"), list):
        raise LaunchError(f"demo manifest {path} is not a demo manifest (or names an unknown demo)")
    for r in m["runs"]:
        run_path(runs_dir or default_runs_dir(), r["run_id"])  # a crafted manifest never names another path
    return m


def _write_manifest(runs_dir, m: dict) -> None:
    atomic_write_text(manifest_path(runs_dir, m["id"]), json.dumps(m, indent=1))


def list_launches(runs_dir=None) -> list[dict]:
    """Every readable demo manifest in the runs folder, newest first."""
    out = []
    for p in demos_dir(runs_dir).glob("*.json"):
        try:
            out.append(read_manifest(runs_dir, p.stem))
        except (LaunchError, RunError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda m: m.get("created", 0), reverse=True)


# One training step's cost by method, relative to base (docs/trainer.md, "Step time of the methods"). The queue starts
# each seed's dearest runs first, so the runs left when the workers run out of work are the cheap ones and no
# worker waits long for the last to end.
STEP_COST = {"base": 1.0, "gda": 2.5, "gda-mps": 5.5, "pcr": 3.3, "mgr": 8.7}
MLTP_COST = 2.2  # MLTP's first-order step over the plain one


def expected_cost(values: dict) -> float:
    """A run's expected cost in base steps, for ordering the queue (not a prediction of its time)."""
    return (values.get("steps", 1) * STEP_COST.get(values.get("method"), 1.0)
            * (MLTP_COST if values.get("procedure") == "mltp" else 1.0))


def launch(demo_id: str, seeds: int = 5, runs_dir=None, overrides: dict | None = None,
           parallel: int | None = None, start: bool = True) -> str:
    """Check every run of the demo (before any work), write its manifest, start its supervisor;
    returns the launch id. `parallel`: trainers at a time (default: one per core)."""
    demo = get_demo(demo_id)
    check_seeds(seeds)
    parallel = parallel if parallel is not None else (os.cpu_count() or 1)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise LaunchError(f"parallel={parallel!r} is not allowed: it must be a positive number of trainers")
    runs_dir = Path(runs_dir or default_runs_dir())
    runs = []
    launch_id = f"{demo.id}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    for seed in range(seeds):
        arms = [(i, arm_values(demo, arm, seed, overrides)) for i, arm in enumerate(demo.arms)]
        for i, values in sorted(arms, key=lambda t: -expected_cost(t[1])):  # a seed's dearest runs first
            arm = demo.arms[i]
            check_data(demo, values)
            cfg = build_config(values)  # a bad override fails here, naming the field
            run_id = f"{launch_id}.{arm.label}.s{seed}"
            command = ["python", "-m", "mgr", "train", "--threads", "1", *cli_args(cfg), "--run-id", run_id]
            runs.append({"run_id": run_id, "arm": i, "seed": seed, "values": values, "command": shlex.join(command)})
    try:
        ensure_writable(demos_dir(runs_dir))
    except RunError as e:
        raise LaunchError(str(e)) from None
    m = {"id": launch_id, "demo": demo.id, "seeds": seeds, "parallel": parallel, "overrides": overrides or {},
         "stopped": False, "resumed": None, "created": time.time(), "runs": runs}
    _write_manifest(runs_dir, m)
    if start and demo_standby.hand_over(runs_dir, launch_id, parallel) is None:
        start_supervisor(runs_dir, launch_id)
    return launch_id


def start_supervisor(runs_dir, launch_id: str) -> subprocess.Popen:
    """Start the launch's supervisor, detached (a new session: closing the app does not end it). Its
    pid goes to <launch id>.pid, so that it counts as alive before it has taken the lock."""
    runs_dir = Path(runs_dir).resolve()
    path = manifest_path(runs_dir, launch_id)
    with open(path.with_suffix(".log"), "ab") as log:
        p = subprocess.Popen([sys.executable, "-m", "mgr.demo_supervisor", "run", str(path)], cwd=REPO,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    atomic_write_text(path.with_suffix(".pid"), str(p.pid))
    return p


def ensure_standby(runs_dir, owner: int) -> None:
    """Start the folder's warm standby (mgr/demo_standby.py) unless one lives or MGR_DEMO_STANDBY=0: detached,
    ending with process `owner` (the app's server). The app calls this while nothing runs, so its workers'
    start-up never takes cores from a demo."""
    if not demo_standby.enabled() or demo_standby.lock_held(runs_dir):
        return
    runs_dir = Path(runs_dir).resolve()
    demos_dir(runs_dir).mkdir(parents=True, exist_ok=True)
    with open(demos_dir(runs_dir) / "standby.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "mgr.demo_supervisor", "standby", str(runs_dir), str(owner)],
                         cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def supervisor_alive(runs_dir, launch_id: str) -> bool:
    """Whether a supervisor holds the launch's lock (probed without waiting, released at once), the warm standby
    has been handed the launch, or the last supervisor started is still alive (it may not have reached the lock
    yet)."""
    if demo_standby.holds(runs_dir, launch_id):
        return True
    path = manifest_path(runs_dir, launch_id)
    if lock_held(path.with_suffix(".lock")):
        return True
    try:
        pid = int(path.with_suffix(".pid").read_text())
    except (OSError, ValueError):
        return False
    return runs_command(pid, launch_id)


# ----------------------------------------------------------------------------- the runs' states

def run_states(runs_dir, m: dict) -> list[str]:
    """Each run's state: the run directory's (with `killed` for a dead trainer), else `starting`
    (launched, no directory yet), `failed to start`, or `queued` (not launched)."""
    runs_dir = Path(runs_dir or default_runs_dir())
    out = []
    for r in m["runs"]:
        run = Run(run_path(runs_dir, r["run_id"]))
        if (run.path / "config.json").exists():
            out.append(run.state())
            continue
        try:
            rec = json.loads((runs_dir / LAUNCHES / f"{r['run_id']}.json").read_text())
        except (OSError, ValueError):
            out.append("queued")
            continue
        alive = isinstance(rec, dict) and isinstance(rec.get("pid"), int) and runs_command(rec["pid"], r["run_id"])
        out.append("starting" if alive else "failed to start")
    return out


ACTIVE = ("starting", "running")
DONE = ("finished", "failed", "failed to start")


def _continues(runs_dir, m: dict, r: dict, state: str) -> bool:
    """Whether the supervisor should (re)start this run: never launched, killed, or stopped before the
    demo's last Resume (a run stopped afterwards, e.g. on the Train page, stays stopped)."""
    if state in ("queued", "killed"):
        return True
    if state == "stopped":
        updated = Run(run_path(runs_dir, r["run_id"])).status().get("updated", 0)
        return m.get("resumed") is not None and updated <= m["resumed"]
    return False


def supervise(path: str | Path, pool: ProcessPoolExecutor | None = None) -> int:
    """The queue of one demo launch, until every run is done or the demo is stopped, on `pool` (mgr/demo_supervisor.py
    starts it early) or a new one."""
    path = Path(path)
    runs_dir, launch_id = path.parent.parent, path.stem
    m = read_manifest(runs_dir, launch_id)
    lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (held open for the supervisor's whole life)
    for _ in range(40):  # an app's probe holds the lock for a moment: wait that out, not a live supervisor
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        print(f"another supervisor runs demo launch {launch_id}", flush=True)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return 0
    pool = pool or new_pool(m["parallel"])
    inflight: dict[str, Future] = {}  # run id -> its task on the pool, until it has ended
    # Each run is started at most once per supervisor (a resumed run still reads `stopped` until its trainer
    # has loaded its checkpoint, and must not be started again meanwhile, nor retried forever if it fails at
    # once), except the runs a broken pool took down, which are resumed.
    tried, retry = set(), set()
    broken = False  # the pool reported a dead worker: it is made anew once its runs have all come back
    lost_since: dict[str, float] = {}  # run id on the pool -> when its trainer was first seen gone
    try:
        while True:
            m = read_manifest(runs_dir, launch_id)
            if m["stopped"]:
                stop_inflight(runs_dir, inflight)
                return 0
            for run_id, fut in list(inflight.items()):
                if fut.done():
                    del inflight[run_id]
                    if isinstance(fut.exception(), BrokenProcessPool):  # a worker died: its runs resume
                        retry.add(run_id)
                        broken = True
                        print(f"{run_id}: its worker died; it resumes", flush=True)
                    else:
                        print(f"ended {fut.result()}", flush=True)
            # A worker can die without the pool noticing (seen under a loaded full test suite: the killed run's
            # future never completed, so the queue waited forever). A run on the pool whose trainer has been gone
            # for LOST_S is taken as its worker's death: the other runs on the pool save and stop, the pool's
            # workers are ended, and every one of those runs resumes on a new pool.
            now = time.time()
            lost_since = lost_runs(runs_dir, inflight, lost_since, now)
            if any(now - t > LOST_S for t in lost_since.values()):
                print(f"{', '.join(lost_since)}: its worker is gone and the pool did not notice; the pool is made anew",
                      flush=True)
                survivors = {r: f for r, f in inflight.items() if r not in lost_since}
                stop_inflight(runs_dir, survivors)
                end_broken_workers(runs_dir, survivors)
                retry |= set(inflight)
                inflight.clear()
                lost_since.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool(m["parallel"])
            if broken and not inflight:
                end_broken_workers(runs_dir, retry)
                pool.shutdown(wait=True)
                pool = new_pool(m["parallel"])
                broken = False
            states = run_states(runs_dir, m)
            active = sum(r["run_id"] in inflight or s in ACTIVE for r, s in zip(m["runs"], states))
            todo = [(r, s) for r, s in zip(m["runs"], states) if r["run_id"] not in inflight and (
                    (r["run_id"] in retry and s in ("stopped", "killed"))
                    or (r["run_id"] not in tried and _continues(runs_dir, m, r, s)))]
            if not todo and active == 0:
                print(f"demo launch {launch_id}: every run has ended", flush=True)
                return 0
            if not broken:  # a broken pool takes no work until it is made anew
                for r, state in todo[:max(0, m["parallel"] - active)]:
                    tried.add(r["run_id"])
                    retry.discard(r["run_id"])
                    inflight[r["run_id"]] = pool.submit(train_one, str(runs_dir), r["run_id"], r["values"],
                                                        state != "queued")
                    print(f"started {r['run_id']} ({state})", flush=True)
            if inflight:  # until a run on the pool ends (its worker then gets the next at once) or POLL_S passes
                wait(inflight.values(), timeout=POLL_S, return_when=FIRST_COMPLETED)
            else:
                time.sleep(POLL_S)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ensure_supervisor(runs_dir, launch_id: str) -> bool:
    """Restart a launch's supervisor if it died with work left (the app calls this as it polls);
    returns whether one is (now) running."""
    m = read_manifest(runs_dir, launch_id)
    if supervisor_alive(runs_dir, launch_id):
        return True
    if m["stopped"]:
        return False
    states = run_states(runs_dir, m)
    if not any(_continues(runs_dir, m, r, s) for r, s in zip(m["runs"], states)):
        return False
    start_supervisor(runs_dir, launch_id)
    return True


def stop(runs_dir, launch_id: str, wait_s: float = 10.0) -> None:
    """Stop the whole demo: no run starts any more, and every running trainer saves and ends as
    `stopped` (Resume continues them). The supervisor is let go first, so it cannot start a new one
    between our stops."""
    m = read_manifest(runs_dir, launch_id)
    m["stopped"] = True
    _write_manifest(runs_dir, m)
    deadline = time.time() + wait_s
    while supervisor_alive(runs_dir, launch_id) and time.time() < deadline:
        time.sleep(0.1)
    launcher = Launcher(runs_dir)
    for r, state in zip(m["runs"], run_states(runs_dir, m)):
        if state == "running":
            try:
                launcher.stop(Run(run_path(runs_dir, r["run_id"])))
            except LaunchError:
                pass  # it ended meanwhile
        elif state == "starting":  # no run directory yet: end it, and forget the launch: it is queued again
            rec = json.loads((Path(runs_dir) / LAUNCHES / f"{r['run_id']}.json").read_text())
            if runs_command(rec["pid"], r["run_id"]):
                os.kill(rec["pid"], signal.SIGTERM)
                while runs_command(rec["pid"], r["run_id"]) and time.time() < deadline + wait_s:
                    time.sleep(0.1)
            if not (run_path(runs_dir, r["run_id"]) / "config.json").exists():
                launcher.dismiss(r["run_id"])


def resume(runs_dir, launch_id: str) -> None:
    """Continue a stopped demo: its supervisor resumes the stopped runs and starts the queued ones."""
    m = read_manifest(runs_dir, launch_id)
    if not m["stopped"] and supervisor_alive(runs_dir, launch_id):
        raise LaunchError(f"demo launch {launch_id} is running; only a stopped demo can be resumed")
    m["stopped"], m["resumed"] = False, time.time()
    _write_manifest(runs_dir, m)
    start_supervisor(runs_dir, launch_id)


# ----------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Outcome:
    """Where a demo launch stands: each seed's value of every arm (None while missing), the paired summary
    of each pair over the seeds that have both, and the runs' states."""
    demo: Demo
    seeds: int
    values: tuple  # per seed: the statistic of each arm, in demo.arms order
    summaries: tuple  # per pair of the demo: its paired summary
    also: dict  # per further statistic (demo.also) by name: (per-seed values, per-pair summaries)
    states: tuple  # per manifest run
    failed: tuple  # run ids that ended without a statistic
    guard_stops: tuple  # run ids the finder's guard stopped (latents off the generator's prior)
    run_ids: tuple  # per seed: the run id of each arm (None where the manifest has none)

    @property
    def summary(self) -> paired.Paired:
        """The first pair's summary: a two-arm demo's only one."""
        return self.summaries[0]

    @property
    def verdict(self) -> str:
        return overall_verdict(self.summaries)

    @property
    def done(self) -> bool:
        return all(s in DONE for s in self.states)


def outcome(runs_dir, m: dict) -> Outcome:
    demo = get_demo(m["demo"])
    runs_dir = Path(runs_dir or default_runs_dir())
    states = run_states(runs_dir, m)
    k = len(demo.arms)
    values = [[None] * k for _ in range(m["seeds"])]
    extra = {stat.name: [[None] * k for _ in range(m["seeds"])] for stat in demo.also}
    ids = [[None] * k for _ in range(m["seeds"])]
    failed, guard_stops = [], []
    for r, state in zip(m["runs"], states):
        if r["arm"] >= k:  # a manifest of an older version of the demo, with arms it no longer has
            continue
        ids[r["seed"]][r["arm"]] = r["run_id"]
        v = None
        if state in ("finished", "failed"):
            run = Run(run_path(runs_dir, r["run_id"]))
            v = statistic_value(demo.statistic, run)
            for stat in demo.also:
                extra[stat.name][r["seed"]][r["arm"]] = statistic_value(stat, run)
            if stopped_by_guard(run):
                guard_stops.append(r["run_id"])
        if v is None and state in DONE:
            failed.append(r["run_id"])
        values[r["seed"]][r["arm"]] = v
    also = {stat.name: (tuple(map(tuple, extra[stat.name])), summarize_pairs(demo, extra[stat.name], stat))
            for stat in demo.also}
    return Outcome(demo, m["seeds"], tuple(map(tuple, values)), summarize_pairs(demo, values), also, tuple(states),
                   tuple(failed), tuple(guard_stops), tuple(map(tuple, ids)))
