"""atomic_write: the new file replaces the old one whole, and the rename itself reaches the disk. load_meta:
a checkpoint's metadata, read again whenever the file changes."""
import os
import stat

import pytest
import torch

from mgr.checkpoint import CheckpointError, atomic_write_text, load, load_meta, save


def test_atomic_write_fsyncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    """A rename is durable only once the directory holding it is fsynced; before that, a power cut
    can bring back the old directory entry. Record what os.fsync is called on."""
    synced = []  # (is a directory, inode) of each fsynced descriptor, in order
    real_fsync = os.fsync

    def recording_fsync(fd):
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", recording_fsync)

    target = tmp_path / "runs" / "status.json"
    atomic_write_text(target, '{"state": "running"}')
    assert target.read_text() == '{"state": "running"}'
    assert [d for d, _ in synced] == [False, True], "the file, then the directory of the rename"
    assert synced[0][1] == target.stat().st_ino  # the renamed file's own bytes were synced ...
    assert synced[1][1] == target.parent.stat().st_ino  # ... then the folder that now names it


def test_atomic_write_survives_a_directory_that_cannot_be_fsynced(tmp_path, monkeypatch):
    """Some file systems refuse fsync on a directory (EINVAL); the write still succeeds."""
    real_fsync = os.fsync

    def refusing_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", refusing_fsync)
    atomic_write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_step_weights_round_trip_and_a_damaged_or_foreign_file_is_refused(tmp_path):
    """weights/step_N.pt (the trainer's save_step_weights on a real State) loads back bit for bit,
    leaves no temporary file, and a truncated file or one of another kind is a CheckpointError naming it."""
    import pytest
    import torch

    from mgr import checkpoint
    from mgr.data import DataConfig
    from mgr.runstore import Run
    from mgr.trainer import TrainConfig
    from mgr.trainer.checkpoints import load_step_weights, save_step_weights, step_weights_path
    from mgr.trainer.state import build
    s = build(TrainConfig(data=DataConfig("digits", ratio=0.1), method="mgr", width=8, steps=2, device="cpu"))
    s.step = 2
    save_step_weights(Run(tmp_path), s, {"val_acc": 0.5, "test_acc": 0.25})
    path = step_weights_path(tmp_path, 2)
    assert [p.name for p in path.parent.iterdir()] == ["step_0000002.pt"]
    w = load_step_weights(path)
    assert w["meta"]["step"] == 2 and w["meta"]["val_acc"] == 0.5 and w["co_learner"] is None
    for mine, theirs in ((w["model"], s.model), (w["finder"], s.finder)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cut = step_weights_path(tmp_path, 4)
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(checkpoint.CheckpointError, match="step_0000004.pt: not a readable weights-only checkpoint"):
        load_step_weights(cut)
    other = step_weights_path(tmp_path, 6)
    checkpoint.save(other, "mgr-classifier", 1, {"step": 6}, model=s.model.state_dict())
    with pytest.raises(checkpoint.CheckpointError, match="is a 'mgr-classifier' checkpoint, expected a 'mgr-step-weights'"):
        load_step_weights(other)


def test_load_meta_reads_a_changed_file_again_and_its_answer_cannot_be_altered_by_a_caller(tmp_path):
    path = tmp_path / "g.pt"
    save(path, "mgr-generator", 1, {"ratio": 0.1, "classes": ["a", "b"]}, w=torch.zeros(2))
    meta = load_meta(path, "mgr-generator", 1)
    assert meta == load(path, "mgr-generator", 1)["meta"]
    meta["classes"].append("c")  # a caller's change stays its own
    assert load_meta(path, "mgr-generator", 1)["classes"] == ["a", "b"]
    save(path, "mgr-generator", 1, {"ratio": 0.25, "classes": ["a", "b"]}, w=torch.zeros(2))  # replaced in place
    assert load_meta(path, "mgr-generator", 1)["ratio"] == 0.25
    with pytest.raises(CheckpointError, match="expected a 'mgr-generator-training-state'"):
        load_meta(path, "mgr-generator-training-state", 1)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint"):
        load_meta(path, "mgr-generator", 1)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_meta(tmp_path / "gone.pt", "mgr-generator", 1)
