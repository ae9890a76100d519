"""Every file the project loads may come from elsewhere: crafted, truncated, of another kind or
version, or made for another run. Each loader refuses it with a message naming the file and the
problem, and never runs code from it."""
import ast
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mgr import checkpoint
from mgr.__main__ import main
from mgr.checkpoint import CheckpointError
from mgr.data import DataConfig
from mgr.fid import load_extractor, trusted_file
from mgr.gan import GanConfig, load_generator, save_generator, train_generator
from mgr.models import Generator
from mgr.paths import REPO, extractor_path
from mgr.runstore import Run, RunError
from mgr.trainer import TrainConfig, load_classifier, train

GEN = REPO / "checkpoints" / "generators" / "digits_ratio0.1_seed0.pt"
CLI = [sys.executable, "-m", "mgr", "train", "--dataset", "digits", "--ratio", "0.1", "--device", "cpu", "--quiet",
       "--batch-size", "16", "--probes-per-class", "2", "--probe-real", "40", "--log-every", "2"]


class _Exploit:
    """Unpickling this runs `touch marker`: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A real run stopped by SIGTERM after two evaluations: resumable, with last.pt, best.pt and probes."""
    runs = tmp_path_factory.mktemp("runs")
    p = subprocess.Popen([*CLI, "--method", "pcr", "--steps", "16", "--eval-every", "2", "--runs-dir", str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = Run(p.stdout.readline().strip())
        t = time.time()
        while len(run.metrics()) < 2:
            assert p.poll() is None and time.time() - t < 300, p.stderr.read()
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        p.wait(120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert run.status()["state"] == "stopped" and (run.path / "last.pt").exists() and (run.path / "best.pt").exists()
    return run


@pytest.fixture
def run(stopped_run, tmp_path):
    """A private copy of the stopped run, free to damage."""
    return Run(shutil.copytree(stopped_run.path, tmp_path / stopped_run.id))


def _resume(run_dir, capsys):
    code = main(["train", "--resume", str(run_dir), "--quiet"])
    return code, capsys.readouterr().err


def _files(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(Path(run_dir).rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------- checkpoints

LOADERS = {
    "generator": (load_generator, "mgr-generator"),
    "classifier": (load_classifier, "mgr-classifier"),
    "extractor": (lambda p: load_extractor("digits", p), "mgr-feature-extractor"),
    "run checkpoint": (lambda p: checkpoint.load(p, "mgr-run-checkpoint", 1), "mgr-run-checkpoint"),
}


def _real_file(kind, run):
    return {"generator": GEN, "classifier": run.path / "best.pt", "extractor": extractor_path("digits"),
            "run checkpoint": run.path / "last.pt"}[kind]


@pytest.mark.parametrize("kind", LOADERS)
def test_a_checkpoint_that_runs_code_when_unpickled_is_refused_and_runs_nothing(kind, tmp_path):
    load, fmt = LOADERS[kind]
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    # the payload hides where a loader looks first: the metadata, and a tensor entry
    torch.save({"format": fmt, "version": 1, "meta": {"dataset": _Exploit(marker)}, "model": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match=rf"{path.name}: not a readable weights-only checkpoint.*never executed"):
        load(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Exploit(marker)))  # the payload is real: plain unpickling runs it
    assert marker.exists()


@pytest.mark.parametrize("kind", LOADERS)
def test_truncated_empty_and_foreign_files_name_the_file_and_the_problem(kind, run, tmp_path):
    load, _ = LOADERS[kind]
    data = _real_file(kind, run).read_bytes()
    for name, content in (("half.pt", data[: len(data) // 2]), ("empty.pt", b""), ("text.pt", b"hello\n"),
                          ("numpy.pt", np.arange(3).tobytes())):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"{name}: not a readable weights-only checkpoint.*truncated"):
            load(tmp_path / name)
    with pytest.raises((CheckpointError, FileNotFoundError), match="missing.pt: no such checkpoint file|"
                                                                  "no FID feature extractor for 'digits' at .*missing.pt"):
        load(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load(tmp_path)


@pytest.mark.parametrize("kind", LOADERS)
def test_a_checkpoint_of_another_kind_or_version_is_refused(kind, tmp_path):
    load, fmt = LOADERS[kind]
    other = "mgr-generator" if fmt != "mgr-generator" else "mgr-classifier"
    checkpoint.save(tmp_path / "other.pt", other, 1, {})
    with pytest.raises(CheckpointError, match=f"other.pt: is a '{other}' checkpoint, expected a '{fmt}' one"):
        load(tmp_path / "other.pt")
    checkpoint.save(tmp_path / "v2.pt", fmt, 2, {})
    with pytest.raises(CheckpointError, match=f"v2.pt: {fmt} format version 2; this MGR Lab reads version 1"):
        load(tmp_path / "v2.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")  # a plain state dict from another project
    with pytest.raises(CheckpointError, match=f"plain.pt: not an MGR Lab checkpoint \\(expected a '{fmt}' file\\)"):
        load(tmp_path / "plain.pt")


@pytest.mark.parametrize("field, value, message", [
    ("num_classes", "10", "metadata 'num_classes' is '10', expected int"),
    ("num_classes", True, "metadata 'num_classes' is True, expected int"),
    ("model", "vgg16", "describes no classifier this MGR Lab builds"),
    ("channels", 7, "describes no classifier this MGR Lab builds"),
    ("model", None, "metadata 'model' is None, expected str"),
])
def test_a_classifier_with_crafted_metadata_is_refused(run, tmp_path, field, value, message):
    ck = checkpoint.load(run.path / "best.pt", "mgr-classifier", 1)
    checkpoint.save(tmp_path / "best.pt", "mgr-classifier", 1, {**ck["meta"], field: value}, model=ck["model"])
    with pytest.raises(CheckpointError, match=message):
        load_classifier(tmp_path / "best.pt")


def test_generator_and_extractor_with_crafted_metadata_are_refused(tmp_path):
    G, meta = load_generator(GEN)
    save_generator(tmp_path / "g.pt", G, {**meta, "resolution": 3})
    with pytest.raises(CheckpointError, match="g.pt: metadata describes no generator"):
        load_generator(tmp_path / "g.pt")
    save_generator(tmp_path / "g.pt", G, {**meta, "z_dim": "64"})
    with pytest.raises(CheckpointError, match="metadata 'z_dim' is '64', expected int"):
        load_generator(tmp_path / "g.pt")
    ck = checkpoint.load(extractor_path("digits"), "mgr-feature-extractor", 1)
    checkpoint.save(tmp_path / "e.pt", "mgr-feature-extractor", 1, {k: v for k, v in ck["meta"].items() if k != "test_acc"},
                    state_dict=ck["state_dict"])
    with pytest.raises(CheckpointError, match="e.pt: metadata lacks 'test_acc'"):
        load_extractor("digits", tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match="was made for dataset='digits', but dataset='fashion-mnist' is needed"):
        load_extractor("fashion-mnist", extractor_path("digits"))


def _generator_for(tmp_path, **changes):
    """The shipped digits generator relabelled (and rebuilt where the shape changes) as if made for another data."""
    G, meta = load_generator(GEN)
    meta = {**meta, **changes}
    if "resolution" in changes:
        G = Generator(meta["num_classes"], meta["resolution"], meta["channels"], meta["z_dim"], meta["g_width"])
    save_generator(tmp_path / "g.pt", G, meta)
    return tmp_path / "g.pt"


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "fashion-mnist"}, "was made for dataset='fashion-mnist', but dataset='digits' is needed"),
    ({"resolution": 16}, "was made for resolution=16, but resolution=8 is needed"),
    ({"split_hash": "0123456789abcdef"}, "was made for split_hash='0123456789abcdef'"),
    ({"num_classes": 5, "classes": list("01234")}, "was made for num_classes=5, but num_classes=10 is needed"),
])
def test_a_generator_for_other_data_is_refused_before_any_work(tmp_path, capsys, changes, message):
    gen = _generator_for(tmp_path, **changes)
    runs = tmp_path / "runs"
    assert main(["train", "--ratio", "0.1", "--generator", str(gen), "--runs-dir", str(runs), "--steps", "3",
                 "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "g.pt" in err and "train-generator" in err
    assert not any(runs.iterdir())


def test_the_shipped_generator_of_another_ratio_is_refused(tmp_path, capsys):
    gen = REPO / "checkpoints" / "generators" / "digits_ratio0.25_seed0.pt"
    assert main(["train", "--ratio", "0.1", "--generator", str(gen), "--runs-dir", str(tmp_path), "--steps", "3",
                 "--device", "cpu", "--quiet"]) == 2
    assert "split_hash=" in capsys.readouterr().err and not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- resume: last.pt, config.json

def test_resume_refuses_a_crafted_last_pt_and_runs_nothing(run, capsys, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": "mgr-run-checkpoint", "version": 1, "meta": {}, "model": _Exploit(marker)}, run.path / "last.pt")
    before = _files(run.path)
    code, err = _resume(run.path, capsys)
    assert code == 2 and f"{run.path / 'last.pt'}: not a readable weights-only checkpoint" in err
    assert not marker.exists() and _files(run.path) == before


def test_resume_refuses_a_truncated_last_pt(run, capsys):
    data = (run.path / "last.pt").read_bytes()
    (run.path / "last.pt").write_bytes(data[:-1000])
    code, err = _resume(run.path, capsys)
    assert code == 2 and "last.pt: not a readable weights-only checkpoint" in err and "truncated" in err
    assert run.status()["state"] == "stopped"


@pytest.fixture(scope="module")
def base_last_pt(tmp_path_factory):
    cfg = TrainConfig(data=DataConfig("digits", ratio=0.1), method="base", steps=2, eval_every=2, batch_size=16,
                      probes_per_class=2, probe_real=40, device="cpu")
    return train(cfg, tmp_path_factory.mktemp("base"), quiet=True).path / "last.pt"


def test_resume_refuses_a_last_pt_of_another_run_or_with_broken_parts(run, capsys, base_last_pt):
    shutil.copy(base_last_pt, run.path / "last.pt")  # a base run's checkpoint in a pcr run
    code, err = _resume(run.path, capsys)
    assert code == 2 and "last.pt was made for method='base', but method='pcr' is needed; it belongs to another run" in err
    ck = checkpoint.load(run.path / "last.pt", "mgr-run-checkpoint", 1)
    for meta, tensors, message in (
        ({**ck["meta"], "method": "pcr", "step": "4"}, {}, "metadata 'step' is '4', expected int"),
        ({**ck["meta"], "method": "pcr", "step": 10_000}, {}, "step 10000 is outside [0, steps=16]"),
        ({**ck["meta"], "method": "pcr"}, {"model": {"conv.weight": torch.zeros(2)}}, "does not fit this run's model"),
        ({**ck["meta"], "method": "pcr"}, {"opt": None}, "does not fit this run's model and optimizers (KeyError: \"no 'opt' state\")"),
    ):
        parts = {k: v for k, v in ck.items() if k not in ("format", "version", "meta")}
        parts.update(tensors)
        checkpoint.save(run.path / "last.pt", "mgr-run-checkpoint", 1, meta, **{k: v for k, v in parts.items() if v is not None})
        before = _files(run.path)
        code, err = _resume(run.path, capsys)
        assert code == 2 and message in err, err
        assert _files(run.path) == before


@pytest.mark.parametrize("edit, message", [
    (lambda c: {**c, "bogus": 1}, "unknown config field(s) bogus"),
    (lambda c: {**c, "steps": "40"}, "field 'steps' is '40' (str), expected int"),
    (lambda c: {**c, "steps": 40.0}, "field 'steps' is 40.0 (float), expected int"),
    (lambda c: {**c, "pretrained": "no"}, "field 'pretrained' is 'no' (str), expected bool"),
    (lambda c: {**c, "lr": "0.05"}, "field 'lr' is '0.05' (str), expected float or null"),
    (lambda c: {**c, "lr": -1}, "lr=-1 is not allowed; it must be a number > 0"),
    (lambda c: {**c, "method": "magic"}, "method='magic' is not allowed; choose one of base"),
    (lambda c: {**c, "data": 3}, "field 'data': expected a JSON object of DataConfig fields, got int"),
    (lambda c: {**c, "data": {**c["data"], "dataset": 5}}, "field 'dataset' is 5 (int), expected str"),
    (lambda c: {**c, "data": {**c["data"], "ratio": 2}}, "ratio=2 is outside (0, 1]"),
    (lambda c: {**c, "data": {**c["data"], "evil": "x"}}, "unknown config field(s) evil"),
    (lambda c: {k: v for k, v in c.items() if k != "method"}, "config lacks the field(s) method"),
    (lambda c: [c], "expected a JSON object, got list"),
    (lambda c: "{", "not valid JSON"),
    (lambda c: b"\xff\xfe\x00garbage", "not a text file"),
])
def test_resume_refuses_a_hand_edited_or_crafted_config(run, capsys, edit, message):
    cfg = json.loads((run.path / "config.json").read_text())
    new = edit(cfg)
    path = run.path / "config.json"
    if isinstance(new, bytes):
        path.write_bytes(new)
    else:
        path.write_text(new if isinstance(new, str) else json.dumps(new))
    before = _files(run.path)
    code, err = _resume(run.path, capsys)
    assert code == 2 and str(path) in err and message in err, err
    assert _files(run.path) == before  # nothing was touched


def test_garbage_status_and_metrics_lines_are_survived_and_the_run_resumes(run, capsys):
    for garbage in (b"\x00\x00\x00", b"[1, 2]", b'{"state": "exploded"}', b"null", b'{"state": "running", "pid": 1'):
        (run.path / "status.json").write_bytes(garbage)
        assert run.status()["state"] == "unknown"
    assert main(["runs", "--runs-dir", str(run.path.parent)]) == 0
    assert "unknown" in capsys.readouterr().out
    kept = [m["step"] for m in run.metrics()]
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n{}\nnull\n{"step": "x"}\n{"step": 99, "val_a')  # damaged lines and a half-written one
    assert [m["step"] for m in run.metrics()] == kept
    # pid 1 is alive but is not this run's writer: the run's lock is free, so resume proceeds
    (run.path / "status.json").write_text(json.dumps({"state": "running", "pid": 1}))
    assert run.status()["pid"] == 1
    code, err = _resume(run.path, capsys)
    assert code == 0, err
    assert run.status()["state"] == "finished" and [m["step"] for m in run.metrics()] == list(range(2, 17, 2))


# ----------------------------------------------------------------------------- probes

def test_probe_files_with_pickles_or_damage_are_refused_with_the_file_named(run):
    probes = run.path / "probes"
    good = run.load_probe(2)
    assert good["real_features"].dtype == np.float32
    np.savez(probes / "step_0000090.npz", finder_z=np.array([{"a": 1}, None], dtype=object))
    (probes / "step_0000091.npz").write_bytes(pickle.dumps({"finder_z": _Exploit(probes / "pwned")}))
    data = (probes / "step_0000002.npz").read_bytes()
    (probes / "step_0000092.npz").write_bytes(data[: len(data) // 2])
    with open(probes / "step_0000093.npz", "wb") as f:
        np.save(f, np.zeros(3))
    (probes / "step_0000094.npz").write_bytes(b"")
    for step, why in ((90, "pickled objects, which are never unpickled here"),
                      (91, "pickled objects, which are never unpickled here"),
                      (92, "BadZipFile"), (93, "a single array, not an .npz archive"), (94, "EOFError"),
                      (95, "no such probe file")):
        with pytest.raises(RunError, match=rf"step_00000{step}.npz: .*{why}"):
            run.load_probe(step)
    assert not (probes / "pwned").exists()


# ----------------------------------------------------------------------------- the audit

SOURCES = [p for folder in ("mgr", "bench", "scripts", "pages") for p in (REPO / folder).rglob("*.py")] + \
          [p for p in (REPO / "app.py",) if p.exists()]


def _call_name(node):
    parts = []
    f = node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # x().eval() is no builtin eval
    return ".".join(reversed(parts))


def test_no_loader_in_the_project_can_unpickle_code():
    offences = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name, kw = _call_name(node), {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                offences.append(f"{where} torch.load without weights_only=True")
            if name in ("np.load", "numpy.load") and not (isinstance(kw.get("allow_pickle"), ast.Constant)
                                                           and kw["allow_pickle"].value is False):
                offences.append(f"{where} np.load without allow_pickle=False")
            if name.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve") or \
                    name in ("torch.jit.load", "eval", "exec", "yaml.load", "yaml.unsafe_load"):
                offences.append(f"{where} {name}")
    assert len(SOURCES) > 15 and not offences, offences


def test_clean_fids_inception_file_in_tmp_counts_only_when_nobody_else_could_have_put_it_there(tmp_path):
    tmp_path.chmod(0o755)
    f = tmp_path / "inception.pt"
    f.write_bytes(b"x")
    f.chmod(0o644)
    assert trusted_file(f)
    f.chmod(0o666)  # anyone could have replaced its content
    assert not trusted_file(f)
    f.chmod(0o644)
    os.chown(f, 65534, 65534)  # another user's file
    assert not trusted_file(f)
    os.chown(f, os.getuid(), os.getgid())
    tmp_path.chmod(0o777)  # in a folder where anyone may swap it
    assert not trusted_file(f)
    tmp_path.chmod(0o1777)  # ... unless the folder is sticky, like /tmp
    assert trusted_file(f)


# ----------------------------------------------------------------------------- the generator's training state

def test_train_generator_resume_refuses_a_crafted_state(tmp_path):
    cfg = GanConfig(steps=2, batch_size=8, z_dim=8, g_width=8, d_width=8, sample_every=2, checkpoint_every=2)
    work = tmp_path / "g.work"
    work.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": "mgr-generator-training-state", "version": 1, "meta": {}, "G": _Exploit(marker)}, work / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt: not a readable weights-only checkpoint"):
        train_generator(DataConfig("digits", ratio=0.1), cfg, tmp_path / "g.pt", resume=True, fid=False, quiet=True,
                        device="cpu")
    assert not marker.exists() and not (tmp_path / "g.pt").exists()
