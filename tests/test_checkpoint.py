"""atomic_write: the new file replaces the old one whole, and the rename itself reaches the disk."""
import os
import stat

from mgr.checkpoint import atomic_write_text


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
