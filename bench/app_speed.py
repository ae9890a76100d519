"""How fast the app is on this machine (not a test).

    python bench/app_speed.py --run RUNS_DIR/RUN_ID --map-run RUNS_DIR/RUN_ID [--out bench/results/app_speed.json]
    python bench/app_speed.py --run RUNS_DIR/RUN_ID --runs 200 --skip pages,live --out bench/results/app_speed_200runs.json
    python bench/app_speed.py --quick --out /tmp/app_speed.json          # smoke test (a 4-step run made here)

1. Page render times of a finished run: AppTest's script-run time (the server-side time of one
   page run; the browser adds drawing). "first" is the first render of the page in this process
   (data caches cold, imports done by the pages before it), "warm" the median of 3 reruns.
2. The feature-space map of a big probe (e.g. 5 000 real + 2 × 1 000 synthetic points): UMAP with
   numba cold (compilation included), with numba warm (the app warms it in the background), with
   and without random_state (which makes UMAP single-threaded), PCA, the disk cache, and the page
   rerun (st.cache_data hit).
3. Live lag: a real trainer writes scalars.jsonl; a reader polling like a fragment sees each line
   at most one refresh interval plus one read later. Measured: the read + figure time per refresh.
4. With --runs N: every page again with N runs in the runs folder (hard-linked copies of the finished
   runs beside --run, `many_runs`), the run picker and the home table holding all N.
5. With --explore-run RUN: the Explore page's slider move, warm (models, directions and the fitted map
   placement loaded once, as the page caches them per (run, step)): the computation the page runs per
   move (position, readout: G, finder, classifier on the image and 8 views under T; the placement on
   the map), timed in-process over --moves moves (median, quartiles, min-max), and the AppTest rerun of
   the page after a slider change (median of 5).

    python bench/app_speed.py --explore-run /tmp/explore_runs/fm-mgr --skip pages,live,many --out /tmp/app_speed_explore.json

6. With --under-load: the Explore move and the pages again, while a default mgr trainer runs on every core
   (`explore_under_load`, `pages_under_load`).

    python bench/app_speed.py --run RUN --explore-run RUN --under-load --skip map,live,many
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
APP = str(REPO / "app.py")
PAGES = ["pages/home.py", "pages/train.py", "pages/latents.py", "pages/feature_space.py", "pages/consistency.py",
         "pages/compare.py", "pages/data.py"]


def many_runs(sources: list[Path], dest: Path, n: int) -> list[str]:
    """n real run directories in dest, cheaply: hard links to the files of finished runs (never written
    again), under new ids in the run store's form (launch time first, so the listing's order is the
    launch order), each with its own config.json (seed = copy number) and its own empty .lock."""
    import json
    dest.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        src = Path(sources[i % len(sources)])
        cfg = json.loads((src / "config.json").read_text())
        rid = f"20261123-{i // 60:02d}{i % 60:02d}00-{cfg['data']['dataset']}-{cfg['method']}-{i:04x}"
        shutil.copytree(src, dest / rid, copy_function=os.link,
                        ignore=shutil.ignore_patterns("analysis", ".lock", "config.json", "*.tmp"))
        (dest / rid / "config.json").write_text(json.dumps({**cfg, "seed": i // len(sources)}, indent=1))
        (dest / rid / ".lock").touch()
        ids.append(rid)
    return ids


def page_times(runs_dir: Path, run_id: str) -> dict:
    from streamlit.testing.v1 import AppTest
    os.environ["MGR_RUNS_DIR"] = str(runs_dir)
    out = {}
    t0 = time.time()
    for page in PAGES:
        at = AppTest.from_file(APP, default_timeout=300)
        at.query_params["run"] = run_id
        at.query_params["runs"] = run_id
        t = time.time()
        at.run()
        if page != "pages/home.py":
            at.switch_page(page)
            t = time.time()
            at.run()
        first = time.time() - t
        assert not at.exception, at.exception
        warm = []
        for _ in range(3):
            t = time.time()
            at.run()
            warm.append(time.time() - t)
        out[page] = {"first_s": round(first, 3), "warm_s": round(statistics.median(warm), 3)}
        print(f"{page:24s} first {first:6.2f} s   warm {statistics.median(warm):5.2f} s", flush=True)
    out["_all_pages_s"] = round(time.time() - t0, 1)
    return out


def map_times(run_path: Path) -> dict:
    import numpy as np

    from mgr.analysis.feature_map import feature_map
    from mgr.analysis.projection import project, warm_umap
    from mgr.runstore import Run
    src = Run(run_path)
    step = src.probe_steps()[-1]
    p, static = src.load_probe(step), src.load_probe("static")
    n_real, n_syn = len(static["real_labels"]), len(p.get("uniform_features", [])) + len(p.get("finder_features", []))
    x = np.concatenate([p["real_features"], p["uniform_features"], p["finder_features"]]).astype(np.float32)
    out = {"run": src.id, "step": step, "real_points": int(n_real), "synthetic_points": int(n_syn),
           "feature_dim": int(x.shape[1])}
    # numba cold: a fresh process pays the compilation inside its first fit
    code = ("import time, numpy as np, sys; sys.path.insert(0, %r); from mgr.analysis.projection import project; "
            "x = np.load(%r); t = time.time(); project(x, 'umap'); print(time.time() - t)")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        r = subprocess.run([sys.executable, "-c", code % (str(REPO), f"{tmp}/x.npy")], capture_output=True, text=True)
        out["umap_numba_cold_s"] = round(float(r.stdout.strip().splitlines()[-1]), 2)
        print(f"UMAP, numba cold (fresh process): {out['umap_numba_cold_s']} s", flush=True)
        out["umap_warmup_s"] = round(warm_umap(), 2)
        print(f"numba warm-up (what the app does in the background): {out['umap_warmup_s']} s", flush=True)
        t = time.time()
        project(x, "umap", seed=0)
        out["umap_fit_seeded_s"] = round(time.time() - t, 2)
        t = time.time()
        project(x, "umap")  # the app's default: unseeded, threaded
        out["umap_fit_unseeded_parallel_s"] = round(time.time() - t, 2)
        t = time.time()
        project(x, "pca")
        out["pca_fit_s"] = round(time.time() - t, 3)
        print(f"UMAP fit (numba warm): seeded {out['umap_fit_seeded_s']} s, unseeded (threads) "
              f"{out['umap_fit_unseeded_parallel_s']} s; PCA {out['pca_fit_s']} s", flush=True)
        # through the analysis layer: cold (fit + write cache), then the disk cache, on a private copy
        shutil.copytree(run_path, f"{tmp}/run", ignore=shutil.ignore_patterns("analysis", "*.pt"))
        run = Run(f"{tmp}/run")
        t = time.time()
        fmap = feature_map(run, step, "umap")
        out["feature_map_cold_s"] = round(time.time() - t, 2)
        t = time.time()
        fmap2 = feature_map(run, step, "umap")
        out["feature_map_disk_cache_s"] = round(time.time() - t, 3)
        assert fmap2.cached and not fmap.cached
        # the page: first render with the disk cache present, then a rerun (st.cache_data)
        from streamlit.testing.v1 import AppTest
        os.environ["MGR_RUNS_DIR"] = tmp
        at = AppTest.from_file(APP, default_timeout=300)
        at.query_params["run"] = "run"
        at.run()
        at.switch_page("pages/feature_space.py").run()
        at.radio(key="projection").set_value("umap")
        t = time.time()
        at.run()
        out["page_with_map_first_s"] = round(time.time() - t, 2)
        t = time.time()
        at.run()
        out["page_with_map_rerun_s"] = round(time.time() - t, 2)
        assert not at.exception, at.exception
    print(f"feature map cold {out['feature_map_cold_s']} s, disk cache {out['feature_map_disk_cache_s']} s; page "
          f"first {out['page_with_map_first_s']} s, rerun {out['page_with_map_rerun_s']} s", flush=True)
    return out


def live_lag(every: float = 2.0, seconds: float = 40.0) -> dict:
    """A real digits trainer; a reader polls scalars.jsonl every 50 ms (the truth: when each line
    appeared) and, like a fragment, reads and builds the curves every `every` seconds."""
    from mgr import figures
    from mgr.analysis.curves import curve_fields, scalar_curves
    from mgr.runstore import Run
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1",
                                 "--method", "pcr", "--steps", "100000", "--eval-every", "50", "--batch-size", "32",
                                 "--probes-per-class", "2", "--probe-real", "40", "--device", "cpu",
                                 "--runs-dir", tmp, "--run-id", "live", "--quiet"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = Run(Path(tmp) / "live")
        try:
            while not run.scalars():
                time.sleep(0.05)
            seen, shown, refresh_costs = {}, {}, []
            t_end, next_tick = time.time() + seconds, time.time()
            while time.time() < t_end:
                now = time.time()
                for r in run.scalars():
                    seen.setdefault(r["step"], now)
                if now >= next_tick:
                    t = time.time()
                    cols = scalar_curves(run)
                    figures.curves([(k, cols["step"], cols[k]) for k in curve_fields(cols)], 0.6)
                    refresh_costs.append(time.time() - t)
                    for s in cols["step"]:
                        shown.setdefault(int(s), time.time())
                    next_tick += every
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(60)
    lags = [shown[s] - seen[s] for s in shown if s in seen and s in shown and shown[s] >= seen[s]]
    out = {"refresh_every_s": every, "lines": len(lags), "max_lag_s": round(max(lags), 2),
           "mean_lag_s": round(statistics.mean(lags), 2),
           "refresh_cost_median_s": round(statistics.median(refresh_costs), 4)}
    print(f"live curves: {out}", flush=True)
    return out


def explore_times(run_path: Path, moves: int = 40) -> dict:
    """A warm slider move of the Explore page: what pages/explore.py computes per move, in-process,
    then the page's AppTest rerun after a slider change."""
    import numpy as np
    import torch

    from mgr.analysis import explore as ex
    from mgr.analysis.feature_map import feature_map
    from mgr.runstore import Run
    run = Run(run_path)
    step = max(ex.checkpoint_steps(run))
    t = time.perf_counter()
    models = ex.step_models(run, step)
    static, probe = run.load_probe("static"), run.load_probe(step)
    fmap = feature_map(run, step, "pca")
    placer = ex.step_placer(fmap, probe)
    load_s = time.perf_counter() - t
    C, z0 = len(models.classes), static["probe_z"][0].astype(np.float64)
    dirs, _ = ex.directions(models, z0, static["probe_z"], probe["finder_z"], static["probe_y"], 0, 1)
    rng = np.random.default_rng(0)

    def move():
        coefs = {d.key: float(rng.uniform(-3, 3)) for d in dirs}
        z = ex.position(z0, dirs, coefs)
        r = ex.readout(models, z, ex.label_mix(C, 0, 1, float(rng.uniform(0, 1))))
        return placer.predict(r.features[None])[0]
    for _ in range(3):  # warm: first calls allocate
        move()
    times = []
    for _ in range(moves):
        t = time.perf_counter()
        move()
        times.append(time.perf_counter() - t)
    q = np.percentile(times, [0, 25, 50, 75, 100]) * 1000
    out = {"run": run.id, "step": step, "torch_threads": torch.get_num_threads(), "moves": moves,
           "load_once_s": round(load_s, 2), "move_ms": {k: round(float(v), 1) for k, v in
                                                       zip(("min", "q25", "median", "q75", "max"), q)},
           "image": f"{models.G.resolution}x{models.G.resolution}", "model": run.config.get("model"),
           "width": run.config.get("width"), "fitted_points": int(len(fmap.real_xy) + 2 * len(fmap.uniform_xy))}
    print(f"explore move (in-process, warm): median {q[2]:.1f} ms, quartiles {q[1]:.1f}-{q[3]:.1f} ms, "
          f"range {q[0]:.1f}-{q[4]:.1f} ms over {moves} moves", flush=True)
    from streamlit.testing.v1 import AppTest
    os.environ["MGR_RUNS_DIR"] = str(run_path.parent)
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["run"] = run.id
    at.run()
    at.switch_page("pages/explore.py").run()
    assert not at.exception, at.exception
    key = next(s.key for s in at.slider if s.key and s.key.startswith("explore-rand1-"))
    reruns = []
    for i in range(6):
        at.slider(key=key).set_value(round(0.5 * (i + 1), 1))
        t = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - t)
        assert not at.exception, at.exception
    out["apptest_rerun_s"] = {"median": round(statistics.median(reruns[1:]), 3), "min": round(min(reruns[1:]), 3),
                              "max": round(max(reruns[1:]), 3), "n": len(reruns) - 1}
    print(f"explore page rerun after a slider change (AppTest): median {out['apptest_rerun_s']['median']} s", flush=True)
    return out


@contextlib.contextmanager
def trainer_beside(runs_dir: Path):
    """A default Fashion-MNIST 1% mgr trainer running on every core (a lone trainer's threads) for the
    duration of the block; yields what it is. Timed work starts once it has logged its first steps."""
    from mgr.runstore import Run
    threads = os.cpu_count() or 1
    argv = [sys.executable, "-m", "mgr", "train", "--dataset", "fashion-mnist", "--ratio", "0.01", "--method", "mgr",
            "--steps", "100000", "--log-every", "5", "--threads", str(threads), "--runs-dir", str(runs_dir), "--quiet"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        run = Run(proc.stdout.readline().strip())
        while not run.scalars():
            if proc.poll() is not None:
                raise RuntimeError("the load's trainer exited before its first steps")
            time.sleep(0.2)
        yield {"command": " ".join(argv[1:]), "threads": threads}
    finally:
        proc.terminate()
        proc.wait(120)
        shutil.rmtree(runs_dir, ignore_errors=True)


def quick_run(runs_dir: Path) -> Path:
    """A finished 4-step digits mgr run (with probes) for the smoke test."""
    from mgr.data import DataConfig
    from mgr.trainer import TrainConfig, train
    cfg = TrainConfig(data=DataConfig("digits", ratio=0.1), method="mgr", steps=4, eval_every=2, batch_size=16,
                      probes_per_class=2, probe_real=50, device="cpu")
    return train(cfg, runs_dir, "quick-mgr", quiet=True).path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a finished run directory for the page timings (required unless --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: a 4-step run made here, every page and 5 runs; "
                   "no map or live timing; needs --out")
    p.add_argument("--map-run", default=None, help="a run directory with a big probe (5 000 real points)")
    p.add_argument("--out", default=str(REPO / "bench/results/app_speed.json"))
    p.add_argument("--skip", default="", help="comma-separated parts to skip: pages, map, live, many")
    p.add_argument("--explore-run", default=None, help="a finished run with a generator: time the Explore page's "
                   "slider move (in-process and AppTest)")
    p.add_argument("--moves", type=int, default=40, help="slider moves timed with --explore-run (>= 20)")
    p.add_argument("--under-load", action="store_true", help="time the Explore move (--explore-run) and the pages "
                   "(--run) again while a trainer runs beside them on every core (a lone trainer's thread count), as "
                   "when a user explores one run while another trains")
    p.add_argument("--app-threads", type=int, default=1, help="torch threads of this process while it times the "
                   "Explore move: 1, what app.py gives the app's process (MGR_APP_THREADS)")
    p.add_argument("--runs", type=int, default=0, help="also time every page with this many runs in the runs "
                   "folder (hard-linked copies of the finished runs beside --run, e.g. 200)")
    a = p.parse_args(argv)
    if a.quick and a.out == p.get_default("out"):
        p.error("--quick writes only where --out says (never into bench/results/)")
    if not a.quick and not a.run and not a.explore_run:
        p.error("--run is required (a finished run directory), or use --quick or --explore-run")
    if a.moves < 20:
        p.error(f"--moves {a.moves}: time at least 20 moves")
    skip = set(a.skip.split(","))
    tmp_runs = None
    if a.quick:
        tmp_runs = tempfile.TemporaryDirectory(prefix="mgr-app-speed-")
        a.run, a.runs, a.map_run = str(quick_run(Path(tmp_runs.name))), 5, None
        skip |= {"live"}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores "
              "(shared with other jobs)", "python": platform.python_version(),
              "command": "python bench/app_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    run = Path(a.run) if a.run else None
    if run is None:
        skip |= {"pages", "many"}
    if a.explore_run:
        import torch
        torch.set_num_threads(a.app_threads)  # the app process's setting (app.py), not torch's default
        result["explore"] = explore_times(Path(a.explore_run), a.moves)
        if a.under_load:
            with trainer_beside(Path(tempfile.mkdtemp(prefix="mgr-load-"))) as load:
                result["explore_under_load"] = {**explore_times(Path(a.explore_run), a.moves), "load": load}
    if "pages" not in skip:
        result["pages"] = page_times(run.parent, run.name)
        if a.under_load:
            print("the same pages while a trainer runs beside them:", flush=True)
            with trainer_beside(Path(tempfile.mkdtemp(prefix="mgr-load-"))) as load:
                result["pages_under_load"] = {**page_times(run.parent, run.name), "load": load}
    if a.runs and "many" not in skip:
        from mgr.runstore import Run
        sources = sorted(r.resolve() for r in run.parent.iterdir()
                         if (r / "config.json").exists() and Run(r).status().get("state") == "finished")
        with tempfile.TemporaryDirectory() as tmp:
            ids = many_runs(sources, Path(tmp), a.runs)
            print(f"{a.runs} runs (copies of {len(sources)} finished runs):", flush=True)
            result[f"pages_{a.runs}_runs"] = {"sources": sorted(r.name for r in sources),
                                              **page_times(Path(tmp), ids[sources.index(run.resolve())]
                                                           if run.resolve() in sources else ids[0])}
    if "map" not in skip and a.map_run:
        result["feature_map"] = map_times(Path(a.map_run))
    if "live" not in skip:
        result["live"] = live_lag()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {a.out}")
    if tmp_runs is not None:
        tmp_runs.cleanup()
    return result


if __name__ == "__main__":
    main()
