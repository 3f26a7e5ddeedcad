"""The storage gate: many transactions use the memory map, or one thread remaps it.

:class:`Gate` is what lets the map grow (and a fork, a close) wait for this process's
LMDB transactions without a lock on the path of every transaction: see
:mod:`engine.storage`, its only user.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Gate"]


class Gate:
    """Lets any number of transactions use the map, or one thread remap it.

    ``mdb_env_set_mapsize`` unmaps and remaps the file, which would pull the
    memory out from under a transaction in another thread, so a resize waits
    until no transaction of this process is active, and holds new ones back.

    Entering and leaving take no lock (they run on every transaction): each
    active transaction holds one entry of ``active``, a list whose
    ``append``/``pop`` are atomic under the GIL. A transaction enters first and
    checks ``resizing`` second, and a resizer sets ``resizing`` first and
    counts entries second, so one of them always sees the other. Cost: about
    0.1 µs on entry and on exit; the condition is only touched while a resize
    is pending (rare: the map doubles each time).
    """

    __slots__ = ("_cond", "active", "resizing")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.active: list[None] = []
        self.resizing = False

    def enter(self) -> None:
        active = self.active
        while True:
            active.append(None)
            if not self.resizing:
                return
            self.leave()  # a resize is pending: step back and wait for it
            with self._cond:
                while self.resizing:
                    self._cond.wait()

    def leave(self) -> None:
        self.active.pop()
        if self.resizing:
            self.wake_resizer()

    def wake_resizer(self) -> None:
        """Tell a pending resize that a transaction left."""
        with self._cond:
            self._cond.notify_all()

    def pause(self, timeout: float) -> tuple[bool, bool]:
        """Hold new transactions back and wait up to ``timeout`` seconds for the running
        ones to end: ``(held, quiet)``; call :meth:`resume` when ``held``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.resizing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, False
                self._cond.wait(left)
            self.resizing = True
            try:
                while self.active:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return True, False
                    self._cond.wait(min(left, 0.01))
            except BaseException:  # a KeyboardInterrupt while waiting: let them in again
                self.resizing = False
                self._cond.notify_all()
                raise
            return True, True

    def resume(self) -> None:
        """Let transactions in again after :meth:`pause`."""
        with self._cond:
            self.resizing = False
            self._cond.notify_all()

    def held_back(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` with new transactions held back; the running ones go on.

        For an abort of the write txn (see :meth:`engine.storage.Storage.write`): py-lmdb's
        abort waits until no LMDB call of any thread of this process is in
        flight, which two threads stepping cursors back to back can keep from
        ever happening. With no new transaction let in, the running ones end,
        and the wait with them. If a resize is already pending, it holds them
        back already (and waits for the caller's own transaction to end).
        """
        mine = False
        try:  # the flag is set inside: an interrupt at the lock's release still resumes
            with self._cond:
                mine = not self.resizing
                self.resizing = True
            fn()
        finally:
            if mine:
                self.resume()

    def exclusive(
        self,
        fn: Callable[[], None],
        slow: Callable[[int], None] | None = None,
        patience: float = 30.0,
    ) -> None:
        """Run ``fn`` with no transaction active; the caller must not be in one.

        ``slow(n)`` is called once (the condition's lock held) if ``n`` transactions
        are still active after ``patience`` seconds: the wait has no bound. The
        time counts from the call, a wait behind another thread's pending resize (which
        waits for the same transactions) included.
        """
        with self._cond:
            since = time.monotonic()
            while self.resizing:
                self._cond.wait(None if slow is None else 0.01)
                slow = self._patience(slow, since, patience)
            self.resizing = True
            try:
                while self.active:
                    # The timeout only bounds a missed wakeup; leave() notifies.
                    self._cond.wait(0.01)
                    slow = self._patience(slow, since, patience)
                fn()
            finally:
                self.resizing = False
                self._cond.notify_all()

    def _patience(
        self, slow: Callable[[int], None] | None, since: float, patience: float
    ) -> Callable[[int], None] | None:
        """For :meth:`exclusive` (its lock held): ``slow`` once ``patience`` seconds have
        passed since ``since``, called if transactions are active, then None."""
        if slow is None or time.monotonic() - since <= patience:
            return slow
        if self.active:
            slow(len(self.active))
        return None
