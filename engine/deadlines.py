"""``Deadlines``: when to look at items again, soonest first.

The subscription worker keeps one, holding each subscription made with a token
until the time the token runs out. A min-heap of ``[deadline, order, item,
live]`` entries; removing an item only marks its entry dead (a heap cannot drop
an inner entry cheaply), and once most entries are dead the heap is rebuilt
without them, so removed items are not kept alive until their deadlines.
Not thread-safe: the owner serializes calls (the subscription manager's lock).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Deadlines"]

T = TypeVar("T", bound=Hashable)


class Deadlines(Generic[T]):
    """Items with a deadline each (monotonic seconds); :meth:`pop_due` gives the due ones.

    Cost: ``O(log n)`` to add, ``O(1)`` to remove (amortized, with the rebuild),
    ``O(log n)`` per entry popped; looking when nothing is due is ``O(1)``.

    Example::

        deadlines = Deadlines()
        deadlines.add(subscription, time.monotonic() + 60)
        for subscription in deadlines.pop_due(time.monotonic()):
            ...
    """

    #: Dead entries tolerated before the heap is rebuilt (and only once they are most).
    rebuild_after = 64

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._live: dict[T, list[Any]] = {}
        self._order = itertools.count()
        self._dead = 0

    def __len__(self) -> int:
        """Entries in the heap, dead ones included (at most about twice the live ones)."""
        return len(self._heap)

    def __contains__(self, item: object) -> bool:
        return item in self._live

    def add(self, item: T, deadline: float) -> None:
        """Give ``item`` the deadline ``deadline`` (replacing an earlier one)."""
        self.discard(item)
        entry = [deadline, next(self._order), item, True]
        heapq.heappush(self._heap, entry)
        self._live[item] = entry

    def discard(self, item: T) -> None:
        """Forget ``item``'s deadline, if it has one."""
        entry = self._live.pop(item, None)
        if entry is None:
            return
        entry[3] = False
        self._dead += 1
        if self._dead > self.rebuild_after and 2 * self._dead > len(self._heap):
            self._heap = [e for e in self._heap if e[3]]
            heapq.heapify(self._heap)
            self._dead = 0

    def pop_due(self, now: float) -> list[T]:
        """The items whose deadline is at or before ``now``, soonest first; they are
        forgotten (add them again to be told again)."""
        due: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if entry[3]:
                del self._live[entry[2]]
                due.append(entry[2])
            else:
                self._dead -= 1
        return due
