"""Processes sharing a folder: opens during map growth, readers that die mid-read."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, storage
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.race.workers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_opens_succeed_while_another_process_grows_the_map(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: LMDB sizes the map from the file at open, and a commit of another
    # process that grew the file before open's first txn failed the open with
    # MDB_MAP_RESIZED (18-31% of opens in this setup).
    monkeypatch.setitem(storage.open_storage.__kwdefaults__, "map_size", 1 << 20)
    Engine.open(db_path, durability="none").close()
    grower = _child("grow_map", str(db_path), "3")
    opened = 0
    try:
        while grower.poll() is None:
            with Engine.open(db_path, durability="none") as engine:
                engine.query(lambda ctx: ctx.db.query("big").first())
            opened += 1
    finally:
        grower.wait(30)
        assert grower.stdout is not None
        grower.stdout.close()
    assert grower.returncode == 0
    assert opened > 10
    with Engine.open(db_path, durability="none") as engine:
        engine.check()


def test_a_reader_killed_mid_read_does_not_pin_pages(db_path: Path) -> None:
    # Found by review: the dead process's reader slot kept its snapshot alive, so no page
    # freed after it was reused and the file grew with every overwrite (203 MiB here).
    with Engine.open(db_path, durability="none") as engine:
        doc = engine.run(lambda ctx: ctx.db.insert("t", {"pad": "0" * 500_000}))
        reader = _child("hold_a_read", str(db_path))
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait(30)
        reader.stdout.close()
        for i in range(200):
            engine.run(lambda ctx, i=i: ctx.db.patch(doc, {"pad": str(i % 10) * 500_000}))
        engine.check()
    size = os.path.getsize(db_path / "data.mdb")
    assert size < 16 << 20, f"data.mdb grew to {size >> 20} MiB"


def test_reader_slots_left_by_killed_processes_are_freed_when_the_table_is_full(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: a process that only reads got MDB_READERS_FULL for as long as the
    # slots of killed processes filled the table (they were freed by commits and opens).
    monkeypatch.setattr(storage, "_MAX_READERS", 8)  # the first open sizes the table
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"x": 1}))
        holder = _child("hold_reads", str(db_path), "8")
        assert holder.stdout is not None and holder.stdout.readline().strip() == "reading"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        holder.stdout.close()
        assert len(engine._db.storage.env.readers().splitlines()) - 1 == 8  # all stale
        assert engine.query(lambda ctx: ctx.db.query("t").first())["x"] == 1


def test_a_writer_killed_holding_the_write_lock_does_not_stop_the_others(db_path: Path) -> None:
    # Checked in the process hunt (2026-12-05): LMDB's writer lock is a robust mutex, so
    # the next writer takes it over from a killed holder; a write of this process waiting
    # for it then commits, the killed txn's write is gone, and check() passes.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"x": 1}))
        holder = _child("hold_the_write_lock", str(db_path))
        assert holder.stdout is not None and holder.stdout.readline().strip() == "writing"
        inserted: list[str] = []
        waiting = threading.Thread(
            target=lambda: inserted.append(engine.run(lambda ctx: ctx.db.insert("t", {"x": 2})))
        )
        waiting.start()  # waits for the writer lock the child holds (or takes it after)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        holder.stdout.close()
        waiting.join(30)
        assert len(inserted) == 1
        engine.run(lambda ctx: ctx.db.insert("t", {"x": 3}))
        assert engine.check()["tables"]["t"]["documents"] == 3
        assert engine.run(lambda ctx: ctx.db.query("t").collect())[-1]["x"] == 3
    with Engine.open(db_path, durability="none") as engine:
        engine.check()
        with engine._db.storage.read() as rtxn:
            assert rtxn.get(b"never_committed", None, engine._db.storage.meta) is None


def test_a_write_finding_the_map_full_during_a_backup_lets_other_processes_write(
    db_path: Path,
) -> None:
    # Found by the stall hunt: py-lmdb's abort of a write txn waits until no LMDB call of
    # the process is in flight, and a backup's copy is one call as long as the backup. A
    # write that found the map full was aborted that way: it held LMDB's write lock
    # until the backup ended, and every process's writers waited for it (a 236 MiB
    # backup: another process's one-key write took 0.15 s, the backup's remainder). The
    # copy here writes into a pipe nobody reads: it stays in flight until the test reads.
    s = storage.open_storage(str(db_path), durability="none", map_size=1 << 20)
    blob = b"x" * 4096
    s.write(lambda txn: [txn.put(b"old-%d" % i, blob, db=s.documents) for i in range(100)])
    read_end, write_end = os.pipe()
    errors: list[BaseException] = []

    def guarded(work: Any) -> Any:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # reported below
                errors.append(error)

        return threading.Thread(target=run)

    def backup() -> None:
        with s.read():  # as Storage.copy_to: a gate entry, then the copy
            s.env.copyfd(write_end, compact=True)

    def fill() -> None:  # 1.2 MiB per write: the first finds the map full
        for batch in range(2):
            s.write(
                lambda txn, b=batch: [
                    txn.put(b"new-%d-%d" % (b, i), blob, db=s.documents) for i in range(300)
                ]
            )

    copying, filling = guarded(backup), guarded(fill)
    writer = None
    try:
        copying.start()
        assert select.select([read_end], [], [], 10)[0]  # the copy is under way
        filling.start()
        wait_until(lambda: s._gate.resizing, 10)  # it found the map full
        writer = _child("write_once", str(db_path))
        assert writer.stdout is not None
        written, _ = writer.communicate(timeout=10)  # before the backup ends
        assert written.strip() == "written"
    finally:
        drained = threading.Thread(
            target=lambda: [0 for _ in iter(lambda: os.read(read_end, 1 << 16), b"")]
        )
        drained.start()
        copying.join(30)
        os.close(write_end)
        drained.join(30)
        os.close(read_end)
        filling.join(30)
        if writer is not None and writer.poll() is None:
            writer.communicate(timeout=30)  # its write can go on once the backup ended
        try:
            assert not errors, errors
            with s.read() as txn:
                assert txn.get(b"other_process", db=s.meta) == b"1"
                assert bytes(txn.get(b"new-1-299", db=s.documents)) == blob
        finally:
            s.release()


def test_processes_opening_an_older_folder_at_once_share_one_blobs_sub_database(
    db_path: Path,
) -> None:
    # A folder from before file storage has no `blobs`: every process that opens it tries
    # to create it. LMDB creates a named sub-database under its writer lock, so all of
    # them must end up storing into the same one.
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("things", {}))
        s = engine._db.storage
        s.write(lambda w: w.drop(s.blobs, delete=True))
    children = [_child("store_files", str(db_path), "5") for _ in range(3)]
    stored: dict[str, bytes] = {}
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        for line in out.splitlines():
            _, storage_id, data = line.split()
            stored[storage_id] = data.encode()
    assert len(stored) == 15
    with Engine.open(db_path, durability="none") as engine:
        assert engine.check()["files"] == {"files": 15, "bytes": sum(map(len, stored.values()))}
        for storage_id, data in stored.items():
            assert engine.get_file(storage_id) == data


def _open_in_another_process(path: Path, durability: str) -> str:
    code = (
        "import sys\n"
        "from engine import Engine, EngineError\n"
        "try:\n"
        f"    Engine.open(sys.argv[1], durability={durability!r}).close()\n"
        "    print('opened')\n"
        "except EngineError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_processes_that_sync_and_one_that_does_not_never_share_a_folder(db_path: Path) -> None:
    # Found by review: a durability="none" process rewrote, unsynced, the pages of the
    # last synced commit of a "full" one; after a power loss those acknowledged writes
    # were gone and the file unreadable. LMDB's sync flags are per process.
    for mine, theirs, allowed in [
        ("full", "normal", True),
        ("normal", "full", True),
        ("none", "none", True),
        ("full", "none", False),
        ("normal", "none", False),
        ("none", "full", False),
    ]:
        with Engine.open(db_path, durability=mine):
            answer = _open_in_another_process(db_path, theirs)
        if allowed:
            assert answer == "opened", (mine, theirs, answer)
        else:
            assert f"asks for durability={theirs!r}" in answer, (mine, theirs, answer)
            assert "open in another process" in answer
    assert _open_in_another_process(db_path, "none") == "opened"  # once the others closed


def _indexed_schema(variant: int) -> Any:
    """Table ``t`` with the indexes ``variant``'s bits name: ``by_a``, ``by_b_a``, a
    search index on ``s`` filtered by ``a``."""
    from engine import define_schema, define_table, v

    table = define_table(
        {"a": v.optional(v.any()), "b": v.optional(v.any()), "s": v.optional(v.string())}
    )
    if variant & 1:
        table = table.index("by_a", ["a"])
    if variant & 2:
        table = table.index("by_b_a", ["b", "a"])
    if variant & 4:
        table = table.search_index("search_s", search_field="s", filter_fields=["a"])
    return define_schema({"t": table}, schema_validation=False)


def test_schema_changes_while_other_processes_write_keep_indexes_and_counters(
    db_path: Path,
) -> None:
    # Review (revc): every write kind (patch with UNSET, replace, delete then insert in one
    # mutation, insert) from two processes, while this one adds, drops and redefines the
    # table's indexes: each write's index keys were made from its snapshot's catalog, so a
    # commit that crosses an index change must conflict and re-run. Afterwards check()
    # finds every index entry matching its document, and no committed mutation is lost.
    with Engine.open(db_path, schema=_indexed_schema(0), durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"a": i, "s": "seed"}) for i in range(200)])
    writers = [_child("index_writer", str(db_path), str(seed), "4") for seed in (1, 2)]
    changes = 0
    try:
        while any(w.poll() is None for w in writers) and changes < 200:
            variant = (1, 3, 7, 2, 6, 0, 5, 4)[changes % 8]
            Engine.open(db_path, schema=_indexed_schema(variant), durability="none").close()
            changes += 1
    finally:
        outputs = [w.communicate(timeout=60)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    assert changes >= 8, "the schema changed too few times while the writers ran"
    with Engine.open(db_path, durability="none") as engine:
        report = engine.check()
        for out in outputs:
            counter = next(
                line.split()[1] for line in out.splitlines() if line.startswith("counter")
            )
            done = int(
                next(line.split()[1] for line in out.splitlines() if line.startswith("done"))
            )
            assert done > 0, "a writer committed nothing: nothing was tested"
            assert engine.run(lambda ctx, c=counter: ctx.db.get(c))["n"] == done
    indexes = report["tables"]["t"]["indexes"]
    assert indexes["by_id"] == report["tables"]["t"]["documents"]
