"""Session-wide real runs for the app and analysis tests: short digits trainings made by the
trainer itself (no fake run files), one of each state the pages must handle."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from mgr.data import DataConfig
from mgr.runstore import Run
from mgr.trainer import TrainConfig, train
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent

# One CPU thread for torch in this process and in every trainer a test spawns (they inherit MGR_THREADS):
# the suite runs trainers side by side on 2 cores, where two threads per process thrash (10-100x slower).
os.environ["MGR_THREADS"] = "1"
torch.set_num_threads(1)
# No warm demo standby (mgr/demo_standby.py) behind the app a test opens: each would keep a supervisor and a worker
# per core, torch loaded, until its test process ends. tests/test_demo_standby.py turns it on where it tests it.
os.environ["MGR_DEMO_STANDBY"] = "0"


# ----------------------------------------------------------------------------- parallel runs (pytest-xdist)
# `pytest -n auto --dist loadgroup` runs the suite on several workers. Tests that share an expensive fixture
# (module or session scope, e.g. the trained runs of app_runs or test_bench's quick results) go to one worker,
# in their file order, so that each such fixture is built once; every other test is handed out on its own.
# The groups are xdist_group marks; each worker also writes them to a folder that the scheduler below reads,
# because xdist 3.8 passes them on in the node ids, which pytest 9.2 no longer lets it change
# (pytest-dev/pytest-xdist#1386).
GROUPS_DIR = "MGR_TEST_GROUPS_DIR"


def _cpus() -> int:
    """The CPUs this process may use: its affinity mask, bounded by a cgroup CPU quota (docker --cpus)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per usable core, at most 4 (each worker runs trainers, Streamlit and a browser)."""
    return min(_cpus(), 4)


# ----------------------------------------------------------------------------- the fast tier
# `make test-fast` (pytest -m "not slow") leaves out the tests that drive a browser, kill trainers at random,
# start several processes per run (torchrun, Ray, the GPU check, demo supervisors) or run benchmarks end to end;
# `make test` (what CI runs) runs them all. A module listed here is slow whole; otherwise the tests named.
SLOW = {
    "test_app_e2e.py": "*", "test_explore_e2e.py": "*", "test_crash_safety.py": "*", "test_distributed.py": "*",
    "test_ray.py": "*", "test_gpu_check.py": "*", "test_bench.py": "*", "test_concurrency.py": "*",
    "test_resources.py": "*", "test_demo_workers.py": "*", "test_sweeps.py": "*",
    "test_demos.py": {"test_a_tiny_demo_runs_every_seed_of_both_arms_through_the_supervisor_to_a_verdict",
                      "test_stop_and_resume_apply_to_the_whole_demo",
                      "test_a_launch_survives_its_supervisor_dying_and_the_app_restarting"},
    "test_app.py": {"test_home_shows_a_failure_mode_demo_as_factors_on_a_log_axis",
                    "test_train_page_eta_of_a_running_mltp_run_counts_both_batches"},
    "test_analysis.py": {"test_feature_map_with_umap",  # numba compiles UMAP's kernels once per installation
                         "test_a_later_process_loads_umaps_kernels_from_numbas_cache_and_draws_the_same_map"},
    "test_launch.py": {"test_launch_stop_resume_a_real_run", "test_stop_affects_only_its_run",
                       "test_a_run_killed_with_sigkill_shows_killed_and_resumes",
                       "test_a_launched_trainer_gets_the_cores_the_running_trainers_leave"},
    "test_train.py": {"test_stop_or_kill_then_resume_keeps_every_metric_line_once",
                      "test_a_held_run_goes_on_to_the_numbers_of_a_run_never_held",
                      "test_mgr_pause_holds_a_running_trainer_and_a_signal_still_stops_it",
                      "test_a_trainer_started_under_nohup_keeps_training_through_a_hangup"},
    "test_threads.py": "*",  # fresh app processes
    "test_hypergradient.py": {"test_finder_lr_schedule_lr_scales_the_finders_step_like_the_learning_rate",
                              "test_lam_kl_schedule_lr_scales_the_kl_pull_like_the_learning_rate_and_leaves_the_lookahead_part",
                              "test_finder_lr_schedule_changes_a_run_exactly_when_the_learning_rate_moves"},
    "test_oracle.py": {"test_nothing_that_trains_or_selects_a_model_reaches_the_oracle"},
    "test_failure_dials.py": {"test_a_generator_of_another_split_is_refused_unless_the_run_is_marked_leaky"},
    "test_imagefolder.py": {"test_a_run_on_a_messy_folder_tells_the_user_what_it_skipped"},
    "test_mltp.py": {"test_killed_mltp_run_with_co_learner_resumes_to_the_same_numbers"},
    "test_cli.py": {"test_train_generator_command_end_to_end"},
}


def _is_slow(item) -> bool:
    names = SLOW.get(item.path.name, ())
    return names == "*" or item.originalname in names


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Marks: `slow` for the tests in SLOW; xdist_group for tests linked through a shared module- or
    session-scoped fixture of this suite, which form one group (union-find over the fixtures they use); tests
    using none stay ungrouped."""
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
    parent = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    keys = []
    for item in items:
        mine, info = [], getattr(item, "_fixtureinfo", None)
        for name, defs in (info.name2fixturedefs.items() if info else ()):
            fd = defs[-1]
            code = getattr(fd.func, "__code__", None)
            if fd.scope not in ("module", "package", "session") or not code or REPO / "tests" not in Path(
                    code.co_filename).parents:
                continue  # cheap or pytest's own (tmp_path_factory, …)
            mine.append(f"{item.path.name}:{name}" if fd.scope == "module" else name)  # no '@': xdist splits on it
        mine.sort(key=lambda k: ":" in k)  # a session fixture names the group it is in
        for k in mine[1:]:
            parent[find(k)] = find(mine[0])
        keys.append(mine)
    groups = {}
    for item, mine in zip(items, keys):
        if mine and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(find(mine[0])))
        mark = item.get_closest_marker("xdist_group")
        if mark:
            groups[item.nodeid] = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker and os.environ.get(GROUPS_DIR):
        out = Path(os.environ[GROUPS_DIR]) / f"{worker}.json"
        out.with_suffix(".tmp").write_text(json.dumps(groups))
        out.with_suffix(".tmp").replace(out)  # whole before the worker reports its collection


# Streamlit's AppTest scans every installed distribution's metadata for components on each new AppTest (the
# real server does it once, at start): 0.2 s of CPU per page the tests open, 19 s of tests/test_app.py's 76 s
# (cProfile). The installed packages do not change while the suite runs, so the scan runs once per process.
def _scan_components_once():
    import functools

    from streamlit.components.v2 import manifest_scanner
    if not hasattr(manifest_scanner.scan_component_manifests, "cache_info"):
        manifest_scanner.scan_component_manifests = functools.cache(manifest_scanner.scan_component_manifests)


_scan_components_once()


# The suite's temporary files peak near 0.3 GB (293 MB measured; passed tests' folders go as they end: pytest.ini);
# with less free space than this it would fail test after test with "No space left on device", so it does not start
NEEDS_FREE_GB = 0.5


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: left out by `make test-fast` (see SLOW in tests/conftest.py)")
    if not hasattr(config, "workerinput"):
        where = config.option.basetemp or tempfile.gettempdir()
        free = shutil.disk_usage(Path(where).parent if not Path(where).exists() else where).free / 2**30
        if free < NEEDS_FREE_GB:
            raise pytest.UsageError(f"{free:.2f} GB free in {where}; the suite needs {NEEDS_FREE_GB:g} GB there for "
                                    "its runs (free some space, or point --basetemp or TMPDIR elsewhere)")
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "loadgroup":
        os.environ[GROUPS_DIR] = tempfile.mkdtemp(prefix="mgr-test-groups-")  # the workers inherit it


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and os.environ.get(GROUPS_DIR):
        shutil.rmtree(os.environ.pop(GROUPS_DIR), ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup, with the groups the workers wrote (read once every worker has collected)."""
    if config.getoption("dist") != "loadgroup" or not os.environ.get(GROUPS_DIR):
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FixtureGroups(LoadGroupScheduling):
        groups = None

        def _split_scope(self, nodeid):
            scope = super()._split_scope(nodeid)  # a group xdist passed on itself (nodeid@group)
            if scope != nodeid:
                return scope
            if self.groups is None:
                self.groups = {}
                for f in Path(os.environ[GROUPS_DIR]).glob("*.json"):
                    self.groups.update(json.loads(f.read_text()))
            return self.groups.get(nodeid, nodeid)
    return FixtureGroups(config, log)


# The smallest demo run that still runs every part: digits, 4 steps, 2 evaluations
TINY_DEMO = {"data.dataset": "digits", "data.ratio": 0.1, "data.test_subset": None, "steps": 4, "eval_every": 2,
             "batch_size": 16, "probes_per_class": 2, "probe_real": 40, "device": "cpu"}
# A demo run a test acts on while it trains: no such run ends while the test acts on it (3000 steps take these runs
# two minutes or more on 2 cores, the tests' acts seconds), and one a killed test leaves behind, its supervisor
# detached by design, ends within minutes rather than writing a probe every 5 steps for an hour
ENDLESS_DEMO = {**TINY_DEMO, "steps": 3000, "eval_every": 5}


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """One tiny gda-hurts demo (2 seeds × 2 arms of TINY_DEMO, 2 workers) launched as Home launches it and watched
    to its end: (runs dir, manifest, the most trainers seen active at once). Shared by the tests that only read it."""
    from mgr import demo_queue
    d = tmp_path_factory.mktemp("tiny-demo")
    launch_id = demo_queue.launch("gda-hurts", 2, d, TINY_DEMO, parallel=2)
    m = demo_queue.read_manifest(d, launch_id)
    most = 0

    def done():
        nonlocal most
        states = demo_queue.run_states(d, m)
        most = max(most, sum(s in demo_queue.ACTIVE for s in states))
        return all(s in demo_queue.DONE for s in states) and not demo_queue.supervisor_alive(d, launch_id)
    wait_for(done, what="the tiny demo's four runs")
    return d, m, most


def tiny_config(method: str, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(data=DataConfig("digits", ratio=0.1), method=method, steps=20, eval_every=10,
                                 batch_size=32, probes_per_class=4, probe_real=100, device="cpu"), **kw})


# The app_runs fixture's paused trainer per runs folder: (process, file with its stderr), for held_trainer
_HELD: dict[Path, tuple[subprocess.Popen, Path]] = {}


@pytest.fixture(scope="session")
def app_runs(tmp_path_factory):
    """A runs folder with finished base, pcr, mgr and mgr-under-MLTP-with-co-learner runs, a failed run and a running one
    (a real trainer process, paused with SIGSTOP after its first evaluation so it costs no CPU)."""
    d = tmp_path_factory.mktemp("app-runs")
    err = d.parent / f"{d.name}-t-running.stderr"  # beside the runs folder, not in it: the pages list what is in it
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(  # started first: its start-up overlaps the trainings below
            [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--method", "mgr",
             "--steps", "100000", "--eval-every", "5", "--batch-size", "16", "--probes-per-class", "4",
             "--probe-real", "100", "--device", "cpu", "--runs-dir", str(d), "--run-id", "t-running", "--quiet"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # a crash in native code prints its Python stack there
            # A session of its own: a stopped process in the suite's process group gets SIGHUP (and dies) when
            # that group is orphaned, e.g. when the shell that started `pytest &` in the background exits (POSIX;
            # seen once: t-running gone at the step it was stopped at, its status still "running")
            start_new_session=True)
    _HELD[d] = proc, err
    for method in ("base", "pcr", "mgr"):
        train(tiny_config(method), d, f"t-{method}", quiet=True)
    # MLTP around mgr with the co-learner: α, both gradient cosines and the co-learner's scalars are logged
    train(tiny_config("mgr", procedure="mltp", co_learner=True, steps=10, eval_every=5, log_every=2),
          d, "t-mltp", quiet=True)
    with pytest.raises(FloatingPointError):
        train(tiny_config("pcr", lr=1e12), d, "t-failed", quiet=True)
    running = Run(d / "t-running")
    wait_for(lambda: proc.poll() is None and running.metrics() and running.probe_steps()
             and (running.path / "last.pt").exists(),
             "the running fixture's trainer to write its first evaluation", proc=proc)
    os.kill(proc.pid, signal.SIGSTOP)
    held_trainer(d)
    yield d
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(60)


@pytest.fixture
def held_pid(app_runs) -> int:
    """The pid of app_runs' paused trainer (t-running), checked to be alive: a test that needs t-running to be
    running fails in set-up, saying how the trainer ended and what it printed, not on a page that says "killed"."""
    return held_trainer(app_runs)


def held_trainer(runs_dir: Path) -> int:
    proc, err = _HELD[runs_dir]
    if proc.poll() is None:
        return proc.pid
    code = proc.returncode
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    raise AssertionError(f"app_runs' paused trainer (pid {proc.pid}) is gone ({how}); its stderr: "
                         f"{err.read_text(errors='replace')[-3000:]!r}")


@pytest.fixture
def runs_copy(app_runs, tmp_path):
    """A private copy of the finished runs (tests may corrupt or delete them)."""
    d = tmp_path / "runs"
    d.mkdir()
    for name in ("t-base", "t-pcr", "t-mgr"):
        shutil.copytree(app_runs / name, d / name, ignore=shutil.ignore_patterns("analysis"))
    return d


@pytest.fixture
def spawn():
    """Popen for training processes, each killed at teardown if a failed test left it running."""
    procs = []

    def start(argv, env=None):
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=None if env is None else {**os.environ, **env}))
        return procs[-1]
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
