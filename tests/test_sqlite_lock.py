"""The SQLite single-driver lock is keyed by the database file, not by how its path is
written, and SQLite on a network filesystem is refused (issue 21). A second driver got in
through a symlink and closed the first one's live trials as orphans."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from search import liveness
from search.errors import StoreError, StudyLocked
from search.liveness import SqliteLock, filesystem_type


def test_sqlite_lock_a_symlink_or_another_spelling_gets_no_second_driver(tmp_path):
    real = tmp_path / "data" / "optuna.db"
    real.parent.mkdir()
    real.write_bytes(b"")
    link = tmp_path / "link.db"
    link.symlink_to(real)
    (tmp_path / "alias").symlink_to(real.parent, target_is_directory=True)
    spellings = [
        link,
        tmp_path / "alias" / "optuna.db",
        tmp_path / "data" / ".." / "data" / "optuna.db",
    ]
    with SqliteLock(real, "tiny"):
        for other in spellings:
            with pytest.raises(StudyLocked, match=f"pid {os.getpid()}"):
                SqliteLock(other, "tiny").acquire()
        with SqliteLock(link, "other"):  # another study in the same file is fine
            pass
    with SqliteLock(link, "tiny"), pytest.raises(StudyLocked):  # any spelling takes it now
        SqliteLock(real, "tiny").acquire()


def _mounts(tmp_path: Path, kind: str, point: Path) -> Path:
    mounts = tmp_path / "mounts"
    escaped = str(point).replace(" ", "\\040")
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"server:/export {escaped} {kind} rw,relatime,vers=4.2 0 0\n"
    )
    return mounts


@pytest.mark.parametrize("kind", ["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs"])
def test_sqlite_on_a_network_filesystem_is_refused_with_one_clear_line(tmp_path, monkeypatch, kind):
    share = tmp_path / "shared runs"
    share.mkdir()
    monkeypatch.setattr(liveness, "MOUNTS", _mounts(tmp_path, kind, share))
    with pytest.raises(StoreError, match=f"network filesystem \\({kind}\\).*PostgreSQL"):
        SqliteLock(share / "optuna.db", "tiny").acquire()
    # beside the share, on the local disk, it is taken
    with SqliteLock(tmp_path / "optuna.db", "tiny"):
        pass


def test_filesystem_type_reads_the_longest_mount_above_the_real_path(tmp_path):
    share = tmp_path / "nfs"
    share.mkdir()
    (tmp_path / "via").symlink_to(share, target_is_directory=True)
    mounts = _mounts(tmp_path, "nfs4", share)
    assert filesystem_type(tmp_path / "via" / "x.db", mounts) == "nfs4"
    assert filesystem_type(share, mounts) == "nfs4"
    assert filesystem_type(tmp_path / "nfs-other", mounts) == "ext4"  # a prefix, not inside
    assert filesystem_type(tmp_path, tmp_path / "no-such-file") is None
