"""Shared fixtures: a fresh database folder and an open engine per test."""

from __future__ import annotations

from collections.abc import Iterator
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
