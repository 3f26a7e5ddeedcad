"""Crash tests for Engine.backup: SIGKILL a process that backs up over and over.

After each kill, every backup the child reported done opens and passes
``Engine.check()`` with every row acknowledged before it began, and the backup it
was writing when killed is either whole (it opens, checks, and holds those rows) or
has no ``data.mdb`` at all: never a cut-short file that looks like a database. An
open refuses that folder (not a new, empty database), and the parent then backs up
into it: the killed backup's leftover is written over.

Found by a crash hunt: LMDB's copy wrote ``data.mdb`` in place, so a kill during the
copy left a truncated ``data.mdb`` behind (2 of 12 kills), which an open refused as
damaged or, cut at a page boundary, could take for the whole database.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from engine import Engine, StorageError
from tests.crash import kill_worker_after


def fill(path: Path) -> None:
    """About 4 MB of rows, so that a copy takes long enough for kills to land in it."""
    with Engine.open(path, durability="none") as engine:
        for _ in range(10):
            engine.run(
                lambda ctx: [
                    ctx.db.insert("rows", {"i": i, "pad": os.urandom(2000).hex()})
                    for i in range(100)
                ]
            )


def verify_copy(folder: Path, acked: int) -> None:
    """The backup in ``folder`` opens, checks, and holds the 1000 rows and the gens
    acknowledged before it began (``acked``: the highest)."""
    with Engine.open(folder, durability="none") as copy:
        report = copy.check()
        assert report["tables"]["rows"]["documents"] == 1000
        gens = {g["n"] for g in copy.query(lambda ctx: ctx.db.query("gens").collect())}
        assert set(range(1, acked + 1)) <= gens, f"{folder}: acknowledged rows are missing"


def kill_rounds(tmp_path: Path, kills: int, seed: int) -> tuple[int, int]:
    """``kills`` rounds of: start the backup loop, SIGKILL it, verify; returns (rounds
    killed with no data.mdb in the unfinished backup, rounds with a whole one)."""
    rng = random.Random(seed)
    source = tmp_path / "db"
    fill(source)
    missing = whole = 0
    for round_ in range(kills):
        target = tmp_path / f"round{round_}"
        out = kill_worker_after(
            rng.uniform(0.0, 0.25), "backup_loop", str(source), str(target), after="opened"
        )
        acked = [int(line.split()[1]) for line in out.splitlines() if line.startswith("ack ")]
        done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("done ")]
        if done:
            verify_copy(target / str(done[-1]), done[-1])
        if not acked or (done and done[-1] == acked[-1]):
            continue  # killed before a backup began: nothing unfinished to look at
        unfinished = target / str(acked[-1])
        if (unfinished / "data.mdb").exists():
            verify_copy(unfinished, acked[-1])  # killed after the copy was named
            whole += 1
            continue
        missing += 1
        if unfinished.exists():  # a killed backup's leftover is refused by an open and
            if (unfinished / "data.mdb.partial").exists():  # written over by a backup
                with pytest.raises(StorageError, match="holds an unfinished backup"):
                    Engine.open(unfinished, durability="none")
            with Engine.open(source, durability="none") as engine:
                engine.backup(unfinished)
            verify_copy(unfinished, acked[-1])
    return missing, whole


def test_a_killed_backup_leaves_a_whole_copy_or_no_data_mdb(tmp_path: Path) -> None:
    missing, whole = kill_rounds(tmp_path, 6, 3)
    assert missing + whole > 0, "no kill landed in a backup: nothing was tested"


@pytest.mark.slow
def test_a_killed_backup_leaves_a_whole_copy_or_no_data_mdb_many_times(tmp_path: Path) -> None:
    missing, _ = kill_rounds(tmp_path, 30, 17)
    assert missing > 0, "no kill landed inside a copy: nothing was tested"
