"""Processes sharing a folder: opens during map growth, readers that die mid-read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Engine, storage

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
