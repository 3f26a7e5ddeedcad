"""Read sets: the key intervals a transaction's result depends on.

A point read (``db.get``) adds ``[key, key ‖ 0x00)`` on ``by_id``; an index
scan adds the interval it actually consumed, which grows while the scan runs
(``[start, last key read]`` ascending, ``[last key read, end)`` descending), so
a query that stops after 10 rows depends on those 10 rows' interval only.
Keys carry their 4-byte index number, so intervals of different indexes never
overlap.

Commit validation and subscription invalidation ask one question: does any
key written since the snapshot fall inside an interval? :meth:`ReadSet.freeze`
merges the intervals into sorted disjoint ones and answers it in
``O(log n)`` per key.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from operator import itemgetter

from .errors import LimitExceeded

__all__ = ["MAX_READ_RANGES", "FrozenReadSet", "Interval", "ReadSet", "ScanInterval"]

#: Convex's limit on distinct intervals read by one function execution.
MAX_READ_RANGES = 4096


class Interval:
    """A half-open byte interval ``[lo, hi)`` that a running scan may widen."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: bytes, hi: bytes) -> None:
        self.lo = lo
        self.hi = hi

    def __repr__(self) -> str:
        return f"Interval({self.lo!r}, {self.hi!r})"


class ScanInterval(Interval):
    """The interval of a streaming scan (``Scans.scan``): it only widens, until the
    scan clears ``running`` when it stops (its end, closed, dropped or failed). Every other interval is final once the read
    that added it returns. ``counted``: the bounds :meth:`ReadSet.ranges` last folded
    into its count (None: none yet)."""

    __slots__ = ("counted", "running")

    def __init__(self, lo: bytes, hi: bytes) -> None:
        self.lo = lo
        self.hi = hi
        self.running = True
        self.counted: tuple[bytes, bytes] | None = None


class ReadSet:
    """The intervals one transaction read, in the order it read them.

    Cost: an append per read; merging happens once, at :meth:`freeze`, or
    when the count passes the limit (to count merged intervals as Convex does).
    """

    __slots__ = ("_intervals", "_merged", "limit", "points", "room")

    # ``points`` and ``room`` are public for the hottest caller (a point get):
    # it may append to ``points`` itself and must call :meth:`check_room` when
    # ``len(points) > room``, exactly as :meth:`add_point` does.

    def __init__(self) -> None:
        #: Scan intervals: live objects that running scans keep widening (those that
        #: can change no more move to ``_merged`` when :meth:`ranges` counts).
        self._intervals: list[Interval] = []
        #: Point reads since the last merge.
        self.points: list[bytes] = []
        #: Points (and, by :meth:`ranges`, final intervals) folded together: sorted,
        #: disjoint, touching ones joined, immutable pairs.
        self._merged: list[tuple[bytes, bytes]] = []
        #: How many point reads fit before the count must be checked by merging;
        #: the most ranges allowed (Convex's ``databaseQueries``), which a nested call's
        #: ``transaction_limits`` may lower for its duration (:meth:`set_limit`).
        self.room = self.limit = MAX_READ_RANGES

    def __len__(self) -> int:
        return len(self._intervals) + len(self.points) + len(self._merged)

    def add_point(self, key: bytes) -> None:
        """Record a read of exactly ``key``. Cost: one append (no object per point)."""
        points = self.points
        points.append(key)
        if len(points) > self.room:
            self._merge()

    def check_room(self) -> None:
        """Fold point reads together, raising past Convex's limit (see ``points``)."""
        self._merge()

    def ranges(self) -> int:
        """How many ranges count against the limit (adjacent ones merged, as Convex's
        ``databaseQueries``): ``len(self.freeze())``, without its sort of every range.

        Reads since the last call are folded into the merged ranges, a bisection each:
        point reads, ranges of reads that returned, scans done (then forgotten here,
        as final) and the ranges of scans not done as far as they reached (checked for
        widening on each call: a scan only widens, so the merged ranges stay exactly
        the union of every range read). A loop that reads and asks again costs
        ``O(log n)`` per turn, plus a look at each scan still open (iterated, paused:
        a scan stopped early, as a ``first()`` does, is done). Call it between reads,
        not from inside ``Scans.read_rows``, whose range is not final until it returns
        (:meth:`_merge` counts that one apart).
        """
        merged = self._merged
        points = self.points
        if points:
            for key in points:
                _insert(merged, key, key + b"\x00")
            # Each folded point may have added a range: the room it had is used.
            self.room -= len(points)
            points.clear()  # the same list: hot paths hold on to it
        intervals = self._intervals
        kept: list[Interval] = []
        for interval in intervals:
            lo, hi = interval.lo, interval.hi
            if type(interval) is ScanInterval:
                counted = interval.counted
                # Identity, not equality: a scan widens with new bytes objects, and a
                # scan dropped long ago is looked at on every call.
                if (counted is None or counted[0] is not lo or counted[1] is not hi) and lo < hi:
                    _insert(merged, lo, hi)  # it contains what it was when counted
                    interval.counted = (lo, hi)
                if interval.running:
                    kept.append(interval)  # it may widen yet
            elif lo < hi:
                _insert(merged, lo, hi)  # counted in room when added
        intervals[:] = kept
        return len(merged)

    def check_read(self) -> None:
        """Raise :class:`LimitExceeded` if the read that just got its final range took
        the count past the limit, as Convex raises at the read that records it.

        For a read counted before its range was known: a scan (added empty), once it
        ends or its reader stops it (``take``, a page), and :meth:`Scans.read_rows`, once
        it has cut its range where it stopped (counted whole, it may have joined ranges
        the cut one does not). ``room`` counted each as one range: only below 0 can the
        count have passed the limit, and then the ranges are merged and counted. A scan
        left open (a loop the function broke out of) is counted at the next read.
        Cost: one comparison; a merge only at the limit.
        """
        if self.room < 0:
            self._merge()

    def set_limit(self, limit: int) -> None:
        """Make ``limit`` the most ranges allowed from now on (a nested call's lowered
        limit, or its caller's again once it returns). Call it between reads, as
        :meth:`ranges`.

        Raises nothing, even below the ranges read already: the next read raises, as
        in Convex. Cost: :meth:`ranges`.
        """
        self.limit = limit
        counted = self.ranges()  # leaves only running scans in _intervals
        # A running scan that read nothing yet adds a range when it does; the others
        # only widen, which can join ranges but never add one.
        empty = sum(1 for interval in self._intervals if interval.lo >= interval.hi)
        self.room = limit - counted - empty

    def add_interval(self, lo: bytes, hi: bytes) -> Interval:
        """Record ``[lo, hi)``; the returned interval may be changed by the caller until
        its read returns (``Scans.read_rows`` cuts it where it stopped)."""
        interval = Interval(lo, hi)
        self._add(interval)
        return interval

    def add_scan(self, lo: bytes, hi: bytes) -> ScanInterval:
        """:meth:`add_interval` for a streaming scan, which widens it while it runs."""
        interval = ScanInterval(lo, hi)
        self._add(interval)
        return interval

    def _add(self, interval: Interval) -> None:
        self._intervals.append(interval)
        self.room -= 1
        if len(self.points) > self.room:
            # The read that added it has not returned: Scans.read_rows may cut it yet.
            self._merge(interval if type(interval) is Interval else None)

    def _merge(self, pending: Interval | None = None) -> None:
        """Count ranges as Convex does (adjacent ones merged), raise past the limit, and
        set ``room``: how many reads fit before the count must be checked again.

        What can change no more (point reads, ranges of reads that returned, scans
        done) is folded into the merged ranges by :meth:`ranges`, a bisection each: a
        merge costs what was read since the last one. (It sorted everything read, and
        near the limit, where the room is a few reads, every few reads: 28,630 first()
        calls over 4,090 ranges took 31 s.) ``pending``, the range of a read that has
        not returned (:meth:`Scans.read_rows` cuts it where it stopped), is counted as
        it is now, not folded, and as one range of its own in ``room``.
        """
        intervals = self._intervals
        if pending is not None:
            intervals.pop()  # _add has just appended it
        try:
            settled = self.ranges()  # leaves only running scans in _intervals
        finally:
            if pending is not None:
                intervals.append(pending)
        count = settled
        if pending is not None and pending.lo < pending.hi:
            merged = self._merged  # the ranges it touches join it into one
            first = bisect_left(merged, pending.lo, key=_HI)
            count += 1 - (bisect_right(merged, pending.hi, key=_LO) - first)
        if count > self.limit:
            raise LimitExceeded(
                f"Too many reads in a single function execution (limit: {self.limit}). "
                "Consider using smaller limits in your queries, paginating your queries, or "
                "using indexed queries with a selective index range expressions.",
                limit="TooManyReads",
            )
        # Running scans only widen, which can join ranges but never add one, except that
        # one still empty adds one when it starts reading.
        empty = sum(1 for i in intervals if i.lo >= i.hi and i is not pending)
        self.room = self.limit - settled - empty - (pending is not None)

    def freeze(self) -> FrozenReadSet:
        """The merged, sorted, immutable form used for overlap tests."""
        pairs = [(i.lo, i.hi) for i in self._intervals]
        pairs.extend((key, key + b"\x00") for key in self.points)
        pairs.extend(self._merged)
        return FrozenReadSet(pairs)


_LO = itemgetter(0)
_HI = itemgetter(1)


def _insert(merged: list[tuple[bytes, bytes]], lo: bytes, hi: bytes) -> None:
    """Add ``[lo, hi)`` to ``merged`` (sorted, disjoint, touching ranges joined, as
    :class:`FrozenReadSet` makes them), joining the ranges it touches. Cost: two
    bisections and a list insert."""
    first = bisect_left(merged, lo, key=_HI)  # the first range ending at or after lo
    end = bisect_right(merged, hi, key=_LO)  # past the last range starting at or before hi
    if first < end:
        lo = min(lo, merged[first][0])
        hi = max(hi, merged[end - 1][1])
    merged[first:end] = [(lo, hi)]


class FrozenReadSet:
    """Sorted disjoint intervals with an ``O(log n)`` membership test."""

    __slots__ = ("_his", "_los")

    def __init__(self, intervals: Iterable[tuple[bytes, bytes]]) -> None:
        los: list[bytes] = []
        his: list[bytes] = []
        for lo, hi in sorted(intervals):
            if lo >= hi:
                continue
            if his and lo <= his[-1]:
                if hi > his[-1]:
                    his[-1] = hi
                continue
            los.append(lo)
            his.append(hi)
        self._los = los
        self._his = his

    def __len__(self) -> int:
        return len(self._los)

    def pairs(self) -> list[tuple[bytes, bytes]]:
        return list(zip(self._los, self._his, strict=True))

    def contains(self, key: bytes) -> bool:
        """True if ``key`` lies inside one of the intervals."""
        i = bisect_right(self._los, key) - 1
        return i >= 0 and key < self._his[i]

    def first_hit(self, keys: Iterable[bytes]) -> bytes | None:
        """The first of ``keys`` inside the read set, or None."""
        los, his = self._los, self._his
        if not los:
            return None
        for key in keys:
            i = bisect_right(los, key) - 1
            if i >= 0 and key < his[i]:
                return key
        return None

    def overlaps_range(self, lo: bytes, hi: bytes) -> bool:
        """True if ``[lo, hi)`` intersects one of the intervals."""
        i = bisect_right(self._los, lo) - 1
        if i >= 0 and lo < self._his[i]:
            return True
        j = i + 1
        return j < len(self._los) and self._los[j] < hi
