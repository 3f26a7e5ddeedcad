"""Shared fixtures: a fresh database folder and an open engine per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from engine import Engine

# Hypothesis's defaults fail a test whose one example took over 200 ms (deadline), or
# whose data took long to generate (too_slow): timings, not behaviour. A stall of a
# busy 2-core CI machine (a GC pause, another process's burst) can do both to a test
# whose examples take 0-7 ms. Every test here asserts behaviour; pytest-timeout bounds
# the time. Loaded here, before the test modules: their @settings(...) inherit it.
settings.register_profile("convexlite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("convexlite")


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
