"""Crash tests for file storage: SIGKILL a process storing and deleting files.

After each kill the parent reopens the folder: ``Engine.check()`` must pass
(every ``_storage`` row has all its chunks with the recorded size and sha256,
no chunk lacks a row), every acknowledged file reads back byte for byte, and
every acknowledged deletion is gone.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from engine import Engine
from tests.crash import kill_worker_after


def kill_after(
    path: Path, durability: str, delay: float
) -> tuple[dict[str, str], set[str], set[str]]:
    """Run the file writer, SIGKILL it ``delay`` seconds past its start; return what it
    acknowledged: (files stored, deletions committed, deletions started)."""
    out = kill_worker_after(delay, "file_writer", str(path), durability)
    stored: dict[str, str] = {}
    deleted: set[str] = set()
    deleting: set[str] = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "stored":
            stored[words[1]] = words[2]
        elif len(words) == 2 and words[0] == "deleted":
            deleted.add(words[1])
        elif len(words) == 2 and words[0] == "deleting":
            deleting.add(words[1])
    return stored, deleted, deleting


def verify(path: Path, stored: dict[str, str], deleted: set[str], deleting: set[str]) -> None:
    with Engine.open(path) as engine:
        report = engine.check()
        for storage_id, sha in stored.items():
            found = engine.get_file(storage_id)
            if storage_id in deleted:
                assert found is None, f"acknowledged deletion of {storage_id} was lost"
            elif storage_id in deleting and found is None:
                pass  # killed after the delete committed, before it was acknowledged
            else:
                assert found is not None, f"acknowledged file {storage_id} was lost"
                assert hashlib.sha256(found).hexdigest() == sha
        assert report["files"]["files"] >= len(set(stored) - deleted - deleting)


def rounds(path: Path, durability: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    stored: dict[str, str] = {}
    deleted: set[str] = set()
    deleting: set[str] = set()
    for _ in range(count):
        new_stored, new_deleted, new_deleting = kill_after(path, durability, rng.uniform(0.2, 0.5))
        stored.update(new_stored)
        deleted |= new_deleted
        deleting |= new_deleting
        verify(path, stored, deleted, deleting)
    assert stored, "no file was acknowledged: nothing was tested"
    assert deleted, "no deletion was acknowledged: deletes were not tested"


def test_sigkill_keeps_files_whole(tmp_path: Path) -> None:
    rounds(tmp_path / "db", "full", 2, 5)


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["full", "none"])
def test_sigkill_files_many_times(tmp_path: Path, durability: str) -> None:
    rounds(tmp_path / "db", durability, 25, 13)
