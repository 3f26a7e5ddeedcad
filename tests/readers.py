"""Counting the LMDB read transactions a call holds at once (its reader slots)."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Engine


class ReaderCount:
    """Counts ``engine``'s read transactions where LMDB makes them: ``peak`` is the most
    this process held open at once since :meth:`reset`.

    Wraps the storage's LMDB environment (its ``begin`` of a read txn: through
    ``Storage.begin_read``, or ``Transaction``'s inline fast path of it) and
    ``Storage.end_read``, which closes every read txn.
    """

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        storage = engine._db.storage
        env, end = storage.env, storage.end_read
        self.open = self.peak = 0
        count = self

        class CountingEnv:
            def begin(
                self, db: Any = None, parent: Any = None, write: bool = False, buffers: bool = False
            ) -> Any:
                txn = env.begin(db, parent, write, buffers)
                if not write:
                    count.open += 1
                    count.peak = max(count.peak, count.open)
                return txn

            def __getattr__(self, name: str) -> Any:
                return getattr(env, name)

        def counted_end(txn: Any) -> None:
            self.open -= 1
            end(txn)

        monkeypatch.setattr(storage, "env", CountingEnv())
        monkeypatch.setattr(storage, "end_read", counted_end)

    def reset(self) -> None:
        self.peak = self.open
