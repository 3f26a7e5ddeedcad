"""Shared fixtures: a fresh database folder and an open engine per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import Engine


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    with Engine.open(db_path, durability="none") as handle:
        yield handle
        handle.check()


@pytest.fixture
def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Call it to start recording: every ``os.fsync`` from then on still syncs, and the
    real path of what it synced is appended to the list it returns."""

    def start() -> list[str]:
        synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        return synced

    return start
