"""Engine.backup: a consistent, compacted copy of a live database, ready to open."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine, EngineError, StorageError


def test_a_backup_taken_while_writers_run_opens_and_holds_one_snapshot(
    db_path: Path, tmp_path: Path
) -> None:
    with Engine.open(db_path, durability="none") as engine:
        for i in range(200):
            engine.run(lambda ctx, i=i: ctx.db.insert("t", {"i": i, "pad": "x" * 300}))
        stored = engine.store_file(b"file bytes" * 1000, content_type="text/plain")
        stop = threading.Event()

        def write() -> None:
            # Two inserts per commit: a copy that mixed snapshots could hold an odd count.
            while not stop.is_set():
                engine.run(lambda ctx: [ctx.db.insert("pairs", {"half": h}) for h in (0, 1)])

        writer = threading.Thread(target=write)
        writer.start()
        try:
            size = engine.backup(tmp_path / "copy")
        finally:
            stop.set()
            writer.join()
        assert size == (tmp_path / "copy" / "data.mdb").stat().st_size > 0
    with Engine.open(tmp_path / "copy") as copy:
        report = copy.check()
        assert report["tables"]["t"]["documents"] == 200
        pairs = copy.query(lambda ctx: len(ctx.db.query("pairs").collect()))
        assert pairs % 2 == 0
        assert copy.get_file(stored) == b"file bytes" * 1000


def test_a_backup_goes_to_a_new_or_empty_folder_only(db_path: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"i": 1}))
        for target, words in [
            (busy, "is not empty"),
            (a_file, "is a file"),
            (db_path, "is the database itself"),
            (tmp_path / "a\0b", "has a NUL byte"),
        ]:
            with pytest.raises(EngineError, match=words):
                engine.backup(target)
        assert (busy / "notes.txt").read_text() == "mine"
        empty = tmp_path / "empty"
        empty.mkdir()
        engine.backup(empty)
        engine.backup(tmp_path / "new" / "nested")
    for folder in (tmp_path / "empty", tmp_path / "new" / "nested"):
        with Engine.open(folder) as copy:
            assert copy.check()["tables"]["t"]["documents"] == 1
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.backup(tmp_path / "after")


def test_an_empty_destination_path_is_refused(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # backup("") wrote data.mdb into an empty working directory.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with (
        Engine.open(db_path, durability="none") as engine,
        pytest.raises(EngineError, match=r"Engine.backup\(''\): the destination is empty"),
    ):
        engine.backup("")
    assert list(cwd.iterdir()) == []


def test_a_destination_under_a_file_is_a_storage_error(tmp_path: Path) -> None:
    """A parent that is a file: StorageError naming the destination, not a bare OSError."""
    (tmp_path / "plain").write_text("x")
    with Engine.open(tmp_path / "db", durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {}))
        with pytest.raises(StorageError, match=r"cannot make the destination folder"):
            engine.backup(tmp_path / "plain" / "copy")


def test_a_backup_is_on_disk_when_backup_returns(
    db_path: Path, tmp_path: Path, record_fsyncs: Callable[[], list[str]]
) -> None:
    # Found by review: LMDB's copy writes data.mdb and closes it without a sync, and
    # nothing synced the folders, so a power loss soon after backup() returned could
    # leave an empty or partial copy (or none at all) of a database kept in full mode.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
        synced = record_fsyncs()
        engine.backup(tmp_path / "copies" / "a" / "copy")
    copy = os.path.realpath(tmp_path / "copies" / "a" / "copy")
    # the bytes, under the partial name (the same file, named data.mdb once synced),
    # then the folder's entry for data.mdb
    assert synced.index(os.path.join(copy, "data.mdb.partial")) < synced.index(copy)
    assert os.listdir(copy) == ["data.mdb"]
    assert os.path.dirname(copy) in synced  # the parent's entry for the folder made
    # and the entries of every folder backup() made on the way (found by review: only
    # the innermost parent was synced).
    assert os.path.realpath(tmp_path / "copies") in synced
    assert os.path.realpath(tmp_path) in synced


def test_two_backups_racing_to_one_folder_keep_the_winners_copy(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a lifecycle hunt: two backups to one new folder can both pass the "new or
    # empty" check; LMDB's copy makes data.mdb exclusively, so the second failed with
    # "File exists", and then removed data.mdb as its own partial file: the copy the
    # first backup reported written was gone. Here the other backup runs to its end
    # between this one's check and its copy.
    from engine import engine as engine_module

    real = engine_module.missing_folders
    won: list[int] = []

    def the_other_backup_first(path: str) -> list[str]:
        monkeypatch.setattr(engine_module, "missing_folders", real)
        won.append(engine.backup(path))
        return real(path)

    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"i": i}) for i in range(100)])
        monkeypatch.setattr(engine_module, "missing_folders", the_other_backup_first)
        with pytest.raises(EngineError, match="the destination is not empty"):
            engine.backup(tmp_path / "copy")
    assert won and (tmp_path / "copy" / "data.mdb").stat().st_size == won[0]
    with Engine.open(tmp_path / "copy", durability="none") as copy:
        assert copy.check()["tables"]["t"]["documents"] == 100


def test_a_killed_backups_partial_file_is_written_over_by_the_next_backup(
    db_path: Path, tmp_path: Path
) -> None:
    # A backup killed midway leaves data.mdb.partial (and no data.mdb): the folder is not
    # "in use", and backing up into it again must work, not be refused as not empty.
    target = tmp_path / "copy"
    target.mkdir()
    (target / "data.mdb.partial").write_bytes(b"\xff" * 50_000)  # cut short, nobody's
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"i": i}) for i in range(10)])
        size = engine.backup(target)
    assert os.listdir(target) == ["data.mdb"]
    assert (target / "data.mdb").stat().st_size == size
    with Engine.open(target, durability="none") as copy:
        assert copy.check()["tables"]["t"]["documents"] == 10


def test_a_leftover_partial_file_with_another_name_is_not_emptied(
    db_path: Path, tmp_path: Path
) -> None:
    # A backup killed between naming its copy data.mdb and dropping the partial name
    # leaves one file under both; if data.mdb was then moved away, writing over the
    # partial file in place would empty the moved copy.
    target = tmp_path / "copy"
    target.mkdir()
    kept = tmp_path / "kept.mdb"
    kept.write_bytes(b"a whole copy")
    os.link(kept, target / "data.mdb.partial")
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {}))
        engine.backup(target)
    assert kept.read_bytes() == b"a whole copy"
    assert os.listdir(target) == ["data.mdb"]


def test_a_second_backup_into_a_folder_being_written_is_refused(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first backup holds data.mdb.partial locked until it is named data.mdb: a
    # second backup into the folder must not take the half-written file for a stale one.
    from engine import backupfile

    real_publish = backupfile.PartialCopy.publish
    writing = threading.Event()
    go_on = threading.Event()

    def publish_when_told(self: backupfile.PartialCopy) -> int:
        writing.set()
        assert go_on.wait(10)
        return real_publish(self)

    monkeypatch.setattr(backupfile.PartialCopy, "publish", publish_when_told)
    target = tmp_path / "copy"
    sizes: list[int] = []
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"i": i}) for i in range(10)])
        first = threading.Thread(target=lambda: sizes.append(engine.backup(target)))
        first.start()
        try:
            assert writing.wait(10)
            with pytest.raises(EngineError, match="is being written by another backup"):
                engine.backup(target)
        finally:
            go_on.set()
            first.join()
    assert sizes == [(target / "data.mdb").stat().st_size]
    assert os.listdir(target) == ["data.mdb"]
    with Engine.open(target, durability="none") as copy:
        assert copy.check()["tables"]["t"]["documents"] == 10


def test_a_folder_holding_only_an_unfinished_backup_is_not_opened_as_a_new_database(
    tmp_path: Path,
) -> None:
    # Found by a crash hunt: a backup killed midway leaves data.mdb.partial and no
    # data.mdb; Engine.open made a new, empty database there, silently, so a user
    # restoring from that folder got an empty app.
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "data.mdb.partial").write_bytes(b"\xff" * 10_000)
    with pytest.raises(StorageError) as raised:
        Engine.open(folder, durability="none")
    message = str(raised.value)
    assert "holds an unfinished backup (data.mdb.partial, no data.mdb)" in message
    assert "run the backup again into this folder" in message
    assert "delete the folder" in message
    assert os.listdir(folder) == ["data.mdb.partial"]  # nothing made, nothing removed


def test_a_partial_file_that_cannot_be_written_is_a_storage_error(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError on the partial file (here ENOSPC emptying it): StorageError naming the
    backup, not a bare OSError, and nothing left behind."""
    import errno

    from engine import backupfile

    def no_space(self: backupfile.PartialCopy) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(backupfile.PartialCopy, "restart", no_space)
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {}))
        with pytest.raises(StorageError, match=r"could not be written \(No space left on device\)"):
            engine.backup(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()  # the folder it made, removed with the file


def test_opening_a_backup_drops_the_second_name_a_killed_backup_left(
    db_path: Path, tmp_path: Path
) -> None:
    # A backup killed between naming its copy data.mdb and dropping the partial name
    # leaves the copy under both names; opening it as a database drops the partial name
    # (nobody's: not locked), so the folder holds a database and nothing else of ours.
    target = tmp_path / "copy"
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"i": i}) for i in range(5)])
        engine.backup(target)
    os.link(target / "data.mdb", target / "data.mdb.partial")
    with Engine.open(target, durability="none") as copy:
        assert copy.check()["tables"]["t"]["documents"] == 5
    assert "data.mdb.partial" not in os.listdir(target)
    with Engine.open(target, durability="none") as copy:  # the file itself is untouched
        assert copy.check()["tables"]["t"]["documents"] == 5


def test_opening_a_folder_keeps_a_partial_file_that_is_not_the_databases(
    db_path: Path, tmp_path: Path
) -> None:
    # Only the second name of data.mdb itself is dropped: another file under the partial
    # name (not a backup's leftover of this copy) is left for the user to look at.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {}))
    (db_path / "data.mdb.partial").write_bytes(b"something else")
    with Engine.open(db_path, durability="none"):
        pass
    assert (db_path / "data.mdb.partial").read_bytes() == b"something else"


def test_opening_a_folder_keeps_a_partial_name_a_running_backup_holds(
    db_path: Path, tmp_path: Path
) -> None:
    fcntl = pytest.importorskip("fcntl")
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {}))
    os.link(db_path / "data.mdb", db_path / "data.mdb.partial")
    fd = os.open(db_path / "data.mdb.partial", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a backup about to drop it itself
        with Engine.open(db_path, durability="none"):
            pass
        assert (db_path / "data.mdb.partial").exists()
    finally:
        os.close(fd)
