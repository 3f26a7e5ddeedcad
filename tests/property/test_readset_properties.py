"""``ReadSet.ranges()`` (the ``databaseQueries`` of ``ctx.meta.get_transaction_metrics()``)
counts what ``len(ReadSet.freeze())`` counts, the model: every range read, sorted and
merged where they touch.

``ranges()`` folds what can change no more (point reads, ranges of reads that returned,
scans done or dropped) into its merged ranges as it goes, and merges only the running
scans anew; random reads, scans widening either way, scans ending and cut ranges, with
the count asked between any two steps, must keep it equal to the model's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import LimitExceeded
from engine.readset import FrozenReadSet, ReadSet, ScanInterval

keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 4 for x in b))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("point"), keys),
        st.tuples(st.just("range"), keys, keys, st.none() | keys),  # a cut, as read_rows's
        st.tuples(st.just("scan"), keys, st.booleans()),  # reverse or not
        st.tuples(st.just("widen"), st.integers(0, 20), keys),
        st.tuples(st.just("end"), st.integers(0, 20)),
        st.tuples(st.just("ask"), st.none()),
        st.tuples(st.just("limit"), st.integers(0, 12)),  # ReadSet.set_limit
    ),
    max_size=60,
)


def _scan_step(step: Any, scans: list[tuple[ScanInterval, bool]]) -> None:
    """A ``widen`` step (a running scan reads further, down when it runs in reverse) or an
    ``end`` step (it stops) on one of ``scans``, chosen by the step's number."""
    if not scans:
        return
    scan, reverse = scans[step[1] % len(scans)]
    if step[0] == "end":
        scan.running = False
    elif scan.running:
        if reverse:
            scan.lo = min(scan.lo, step[2])
        else:
            scan.hi = max(scan.hi, step[2])


@settings(max_examples=300, deadline=None)
@given(steps=steps)
def test_ranges_counts_as_the_sorted_merge_of_every_range(steps: list[Any]) -> None:
    """And folding what it counted keeps the read set itself (what commit validation
    and subscriptions test writes against) every range read, as far as each reached."""
    reads = ReadSet()
    scans: list[tuple[ScanInterval, bool]] = []
    model: list[Any] = []  # every range read: (lo, hi) pairs and the live intervals

    def read_so_far() -> list[tuple[bytes, bytes]]:
        pairs = [r if isinstance(r, tuple) else (r.lo, r.hi) for r in model]
        return FrozenReadSet(pairs).pairs()

    for step in steps:
        kind = step[0]
        if kind == "point":
            reads.add_point(step[1])
            model.append((step[1], step[1] + b"\x00"))
        elif kind == "range":
            lo, hi = sorted(step[1:3])
            interval = reads.add_interval(lo, hi)
            if step[3] is not None:  # cut short before the read returns
                interval.hi = max(lo, min(hi, step[3]))
            model.append(interval)
        elif kind == "scan":
            scans.append((reads.add_scan(step[1], step[1]), step[2]))
            model.append(scans[-1][0])
        elif kind in ("widen", "end"):
            _scan_step(step, scans)
        elif kind == "ask":
            assert reads.ranges() == len(read_so_far())
        assert reads.freeze().pairs() == read_so_far()
    assert reads.ranges() == len(read_so_far())
    assert reads.ranges() == len(read_so_far())  # asking again changes nothing
    assert reads.freeze().pairs() == read_so_far()


@settings(max_examples=500, deadline=None)
@given(steps=steps)
# A scan that had read nothing when the limit was set, then reads: one range more.
@example(
    steps=[
        ("point", b"\x00"),
        ("scan", b"\x02", False),
        ("limit", 2),
        ("widen", 0, b"\x03"),
        ("point", b"\x01"),
    ]
)
def test_a_limit_set_between_reads_holds_as_convexs_does(steps: list[Any]) -> None:
    """``set_limit`` (a nested call's ``databaseQueries``, then its caller's again) keeps
    the limit as Convex checks it: a read raises if and only if the ranges read, itself
    included, pass the limit; a range read_rows cuts afterwards, and a scan that ends,
    are counted by ``check_read`` then (as the engine calls it), scans still widening
    by the next read."""
    reads = ReadSet()
    scans: list[tuple[ScanInterval, bool]] = []
    for step in steps:
        kind = step[0]
        if kind == "limit":
            reads.set_limit(step[1])
        elif kind in ("point", "range", "scan"):
            try:
                if kind == "point":
                    reads.add_point(step[1])
                elif kind == "range":
                    interval = reads.add_interval(*sorted(step[1:3]))
                else:
                    scans.append((reads.add_scan(step[1], step[1]), step[2]))
            except LimitExceeded:
                assert len(reads.freeze()) > reads.limit  # no raise within the limit
                return
            assert len(reads.freeze()) <= reads.limit  # nor a read past it
            if kind == "range" and step[3] is not None:  # read_rows stopped early
                interval.hi = max(interval.lo, min(interval.hi, step[3]))
                if not _checked(reads):
                    return
        elif kind in ("widen", "end"):
            _scan_step(step, scans)
            if kind == "end" and not _checked(reads):
                return
        elif kind == "ask":
            reads.ranges()


def _checked(reads: ReadSet) -> bool:
    """``reads.check_read()``: raises if and only if the ranges read pass the limit.
    False if it raised."""
    try:
        reads.check_read()
    except LimitExceeded:
        assert len(reads.freeze()) > reads.limit
        return False
    assert len(reads.freeze()) <= reads.limit
    return True
