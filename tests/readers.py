"""Counting the LMDB read transactions a call holds at once (its reader slots)."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Engine


class ReaderCount:
    """Wraps ``engine``'s storage ``begin_read``/``end_read``: ``peak`` is the most read
    transactions this process held open at once since :meth:`reset`."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        storage = engine._db.storage
        begin, end = storage.begin_read, storage.end_read
        self.open = self.peak = 0

        def counted_begin(*args: Any) -> Any:
            txn = begin(*args)
            self.open += 1
            self.peak = max(self.peak, self.open)
            return txn

        def counted_end(txn: Any) -> None:
            self.open -= 1
            end(txn)

        monkeypatch.setattr(storage, "begin_read", counted_begin)
        monkeypatch.setattr(storage, "end_read", counted_end)

    def reset(self) -> None:
        self.peak = self.open
