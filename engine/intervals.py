"""An index of byte intervals by owner: which owners' intervals contain a key?

Subscriptions register their read sets here; after each commit the
subscription worker asks which subscriptions hold an interval containing a
written key. The cost per key must follow the number of owners hit, not the
number registered, so the index keeps:

- a *static* part: intervals sorted by ``lo`` with a max-``hi`` tree over
  them, so a stabbing query descends only into subtrees that can contain the
  key: ``O((hits + 1) · log n)``;
- a *delta* list of intervals added since the last rebuild (checked one by
  one) and a set of removed owners (skipped), both kept small by rebuilding
  when they pass a fraction of the static part, for ``O(log n)`` amortized
  insertion and removal.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterable

__all__ = ["IntervalIndex"]


class IntervalIndex:
    """Owners' half-open byte intervals ``[lo, hi)``, searchable by key.

    Example::

        index = IntervalIndex()
        index.add("sub-1", [(b"a", b"c")])
        index.stab([b"b"])        # {'sub-1'}
        index.remove("sub-1")
    """

    def __init__(self) -> None:
        self._owners: dict[Hashable, list[tuple[bytes, bytes]]] = {}
        self._los: list[bytes] = []
        self._his: list[bytes] = []
        self._items: list[Hashable] = []
        self._tree: list[bytes] = [b""]
        self._size = 1
        self._delta: list[tuple[bytes, bytes, Hashable]] = []
        self._removed: set[Hashable] = set()
        self._static_owners: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, owner: Hashable) -> bool:
        return owner in self._owners

    def add(self, owner: Hashable, intervals: Iterable[tuple[bytes, bytes]]) -> None:
        """Register ``owner``'s intervals (replacing any it had)."""
        if owner in self._owners:
            self.remove(owner)
        pairs = [(lo, hi) for lo, hi in intervals if lo < hi]
        self._owners[owner] = pairs
        for lo, hi in pairs:
            self._delta.append((lo, hi, owner))
        self._maybe_rebuild()

    def remove(self, owner: Hashable) -> None:
        """Forget ``owner`` and its intervals. Idempotent."""
        if self._owners.pop(owner, None) is None:
            return
        if owner in self._static_owners:
            self._removed.add(owner)
        self._delta = [item for item in self._delta if item[2] != owner]
        self._maybe_rebuild()

    def stab(self, keys: Iterable[bytes]) -> set[Hashable]:
        """Every owner with an interval containing one of ``keys``."""
        hits: set[Hashable] = set()
        los, his, items, tree, size = self._los, self._his, self._items, self._tree, self._size
        removed, delta = self._removed, self._delta
        for key in keys:
            for lo, hi, owner in delta:
                if lo <= key < hi:
                    hits.add(owner)
            limit = bisect_right(los, key)
            if not limit:
                continue
            stack = [(1, 0, size)]
            while stack:
                node, left, right = stack.pop()
                if left >= limit or tree[node] <= key:
                    continue
                if right - left == 1:
                    owner = items[left]
                    if his[left] > key and owner not in removed:
                        hits.add(owner)
                    continue
                middle = (left + right) // 2
                stack.append((2 * node, left, middle))
                stack.append((2 * node + 1, middle, right))
        # An owner removed from the static part and re-added lives in delta only.
        return hits

    def _maybe_rebuild(self) -> None:
        if len(self._delta) + len(self._removed) > max(64, len(self._los) // 8):
            self._rebuild()

    def _rebuild(self) -> None:
        entries = sorted(
            ((lo, hi, owner) for owner, pairs in self._owners.items() for lo, hi in pairs),
            key=lambda e: (e[0], e[1]),
        )
        self._los = [e[0] for e in entries]
        self._his = [e[1] for e in entries]
        self._items = [e[2] for e in entries]
        size = 1
        while size < len(entries):
            size *= 2
        tree = [b""] * (2 * size)
        for i, hi in enumerate(self._his):
            tree[size + i] = hi
        for node in range(size - 1, 0, -1):
            left, right = tree[2 * node], tree[2 * node + 1]
            tree[node] = left if left > right else right
        self._tree = tree
        self._size = size
        self._delta = []
        self._removed = set()
        self._static_owners = set(self._items)
