"""Convex's per-execution limits: documents, bytes and ranges read; documents written;
the metrics of ``ctx.meta.get_transaction_metrics()`` and nested ``transaction_limits``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from engine import (
    UNSET,
    ConvexError,
    Engine,
    LimitExceeded,
    ValidationError,
    action,
    internal_mutation,
    internal_query,
    readset,
    scans,
    transaction,
    v,
)
from tests import app


def fill(engine: Engine, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 10_000):
        ids += engine.run(
            lambda ctx, s=start: [
                ctx.db.insert("t", {"i": i}) for i in range(s, min(n, s + 10_000))
            ]
        )
    return ids


def count_freezes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count, in the returned one-item list, the calls of ReadSet.freeze (a merge of
    every range read)."""
    counted = [0]
    freeze = readset.ReadSet.freeze

    def counting_freeze(self: readset.ReadSet) -> readset.FrozenReadSet:
        counted[0] += 1
        return freeze(self)

    monkeypatch.setattr(readset.ReadSet, "freeze", counting_freeze)
    return counted


def count_ranges_sorted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count, in the returned one-item list, the ranges every FrozenReadSet is built
    from (each such build sorts them: what a count of ranges must not do per read)."""
    counted = [0]
    frozen_init = readset.FrozenReadSet.__init__

    def counting_init(self: readset.FrozenReadSet, intervals: Any) -> None:
        pairs = list(intervals)
        counted[0] += len(pairs)
        frozen_init(self, pairs)

    monkeypatch.setattr(readset.FrozenReadSet, "__init__", counting_init)
    return counted


def test_documents_read_limit_counts_filtered_documents(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scans, "MAX_DOCUMENTS_READ", 100)
    fill(engine, 150)
    assert len(engine.query(lambda ctx: ctx.db.query("t").take(100))) == 100
    with pytest.raises(
        LimitExceeded,
        match=r"Too many documents read in a single function "
        r"execution \(limit: 100\)",
    ) as caught:
        engine.query(
            lambda ctx: ctx.db.query("t").filter(lambda q: q.eq(q.field("i"), -1)).collect()
        )
    assert caught.value.limit == "TooManyDocumentsRead"
    with pytest.raises(LimitExceeded):  # the same in a mutation (the merged scan path)
        engine.run(lambda ctx: ctx.db.query("t").collect())


def test_point_gets_count_against_the_documents_read_limit(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = fill(engine, 12)
    monkeypatch.setattr(scans, "MAX_DOCUMENTS_READ", 10)
    assert len(engine.query(lambda ctx: [ctx.db.get(i) for i in ids[:10]])) == 10
    with pytest.raises(LimitExceeded, match=r"Too many documents read") as caught:
        engine.query(lambda ctx: [ctx.db.get(i) for i in ids[:11]])
    assert caught.value.limit == "TooManyDocumentsRead"


def test_a_mutations_own_writes_count_as_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Convex's reads go through the transaction index, pending writes included, and
    record every document returned (get_inner, IndexRange): reading back documents
    the mutation wrote itself counts against the limits like any other read."""
    monkeypatch.setattr(scans, "MAX_DOCUMENTS_READ", 10)

    def scan_own_inserts(ctx):  # type: ignore[no-untyped-def]
        for i in range(11):
            ctx.db.insert("t", {"i": i})
        return ctx.db.query("t").collect()

    with pytest.raises(LimitExceeded, match="Too many documents read") as caught:
        engine.run(scan_own_inserts)
    assert caught.value.limit == "TooManyDocumentsRead"

    def get_own_inserts(ctx):  # type: ignore[no-untyped-def]
        ids = [ctx.db.insert("t", {"i": i}) for i in range(11)]
        return [ctx.db.get(i) for i in ids]

    with pytest.raises(LimitExceeded, match="Too many documents read"):
        engine.run(get_own_inserts)

    def patch_one_twice_each(ctx):  # type: ignore[no-untyped-def]
        ids = [ctx.db.insert("t", {"i": i}) for i in range(6)]
        for i in ids:
            ctx.db.patch(i, {"i": 1})  # reads the pending document, as Convex's patch does
            ctx.db.patch(i, {"i": 2})

    with pytest.raises(LimitExceeded, match="Too many documents read"):
        engine.run(patch_one_twice_each)
    # Ten reads of own writes stay within the limit.
    assert len(engine.run(lambda ctx: [ctx.db.insert("t", {}) for _ in range(10)])) == 10
    engine.run(lambda ctx: ctx.db.query("t").collect())


def test_reads_of_system_tables_do_not_count_against_the_limits(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Convex counts the documents of system tables (_storage, _scheduled_functions)
    apart and never raises for them (ReadSet::record_read_document skips is_system
    tables): listing many scheduled jobs is not a TooManyDocumentsRead."""
    from tests.app import jobs

    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        job_ids = engine.run(
            lambda ctx: [
                ctx.scheduler.run_after(3600, jobs.write_note, {"text": str(i)}) for i in range(8)
            ]
        )
        monkeypatch.setattr(scans, "MAX_DOCUMENTS_READ", 5)
        listed = lambda ctx: ctx.db.system.query("_scheduled_functions").collect()
        assert len(engine.query(listed)) == 8
        assert len(engine.run(listed)) == 8  # the streaming path of a mutation
        got = engine.query(lambda ctx: [ctx.db.system.get(i) for i in job_ids])
        assert all(got)
        page = engine.run(
            lambda ctx: ctx.db.system.query("_scheduled_functions").paginate(
                {"numItems": 8, "cursor": None, "maximumBytesRead": 1}
            )
        )
        assert len(page["page"]) == 1 and page["pageStatus"] == "SplitRequired"

        def user_rows_still_count(ctx):  # type: ignore[no-untyped-def]
            listed(ctx)
            for _ in range(6):
                ctx.db.insert("t", {})
            return ctx.db.query("t").collect()

        with pytest.raises(LimitExceeded, match="Too many documents read"):
            engine.run(user_rows_still_count)


def test_real_limit_is_32000(engine: Engine) -> None:
    assert transaction.MAX_DOCUMENTS_READ == 32_000
    assert transaction.MAX_BYTES_READ == 16 << 20
    assert readset.MAX_READ_RANGES == 4096
    assert transaction.MAX_DOCUMENTS_WRITTEN == 16_000


def test_bytes_read_limit(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scans, "MAX_BYTES_READ", 10_000)
    engine.run(lambda ctx: [ctx.db.insert("t", {"pad": "x" * 1000}) for _ in range(20)])
    with pytest.raises(LimitExceeded, match="Too many bytes read") as caught:
        engine.query(lambda ctx: ctx.db.query("t").collect())
    assert caught.value.limit == "TooManyBytesRead"


def test_read_ranges_limit_merges_adjacent_ranges(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 50)
    ids = fill(engine, 120)
    # the same document read many times is one range after merging
    engine.query(lambda ctx: [ctx.db.get(ids[0]) for _ in range(200)])
    with pytest.raises(
        LimitExceeded,
        match=r"Too many reads in a single function execution "
        r"\(limit: 50\)",
    ) as caught:
        engine.query(lambda ctx: [ctx.db.get(i) for i in ids[::2]])
    assert caught.value.limit == "TooManyReads"


def test_the_read_that_passes_the_ranges_limit_raises_even_as_the_last_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Convex raises TooManyReads at the read that records range limit + 1
    (``ReadSet::record_indexed_directly``), not at a later one. A scan is counted when it
    starts, empty, and a query's one-loop read is counted whole, then cut where it
    stopped: a function whose last read was one of these used to end with 11 ranges
    under a limit of 10, and no error."""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 10)
    fill(engine, 30)
    times = engine.query(lambda ctx: [d["_creationTime"] for d in ctx.db.query("t").collect()])

    def reads(n: int, then: Any = None) -> Any:
        def body(ctx: Any) -> int:
            for k in range(n):  # n disjoint ranges: a row lies between each two
                ctx.db.query("t").with_index(
                    "by_creation_time", lambda q, k=k: q.gte("_creationTime", times[2 * k + 2])
                ).first()
            if then is not None:
                then(ctx)
            used: int = ctx.meta.get_transaction_metrics()["databaseQueries"]["used"]
            return used

        return body

    after_the_last = lambda q: q.gt("_creationTime", times[-1])
    last_reads = {
        # an 11th disjoint range (a mutation's first() scans)
        "first": lambda ctx: (
            ctx.db.query("t")
            .with_index("by_creation_time", lambda q: q.gte("_creationTime", times[24]))
            .first()
        ),
        # a range joining all ten, cut at its first row: an 11th range
        "cut": lambda ctx: ctx.db.query("t").first(),
        "page": lambda ctx: ctx.db.query("t").paginate({"numItems": 1, "cursor": None}),
        # an iteration of an empty range, to its end: an 11th range
        "empty": lambda ctx: list(ctx.db.query("t").with_index("by_creation_time", after_the_last)),
    }
    for run in (engine.query, engine.run):
        assert run(reads(10)) == 10
        assert run(reads(10, lambda ctx: ctx.db.query("t").collect())) == 1  # one range
        outcomes = {}
        for name, last in last_reads.items():
            try:
                outcomes[name] = f"no error, {run(reads(10, last))} ranges"
            except LimitExceeded as error:
                assert str(error).startswith(
                    "Too many reads in a single function execution (limit: 10)."
                )
                outcomes[name] = error.limit
        assert outcomes == dict.fromkeys(last_reads, "TooManyReads"), run.__name__


def test_documents_written_limit(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "MAX_DOCUMENTS_WRITTEN", 10)
    with pytest.raises(LimitExceeded, match="Too many documents written") as caught:
        engine.run(lambda ctx: [ctx.db.insert("t", {}) for _ in range(11)])
    assert caught.value.limit == "TooManyWrites"
    assert engine.query(lambda ctx: ctx.db.query("t").collect()) == []


def test_merging_ranges_keeps_live_scans_in_the_read_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge triggered mid-scan must not drop what the scan reads afterwards. (A scan's
    range is a ScanInterval: add_interval's may change only until its read returns.)"""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 8)
    reads = readset.ReadSet()
    scan = reads.add_scan(b"a", b"a")
    for _ in range(20):  # many points on one key merge into one range
        reads.add_point(b"p")
    scan.hi = b"z"  # the scan goes on after the merge
    assert reads.freeze().contains(b"m")


def test_many_scans_of_one_range_merge_without_quadratic_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scans whose ranges merge count as one range, as in Convex, and past the limit
    they are merged again only once per limit's worth of reads (each read past the
    limit used to merge every scan again: 12,000 queries of one range took 10 s)."""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 50)
    freeze = readset.ReadSet.freeze
    merges = count_freezes(monkeypatch)
    reads = readset.ReadSet()
    for _ in range(2000):
        reads.add_interval(b"a", b"b")
    assert len(freeze(reads)) == 1
    assert merges[0] <= 2000 // 49 + 1
    empty = reads.add_scan(b"k", b"k")  # a scan that has read nothing yet
    for _ in range(48):
        reads.add_interval(b"a", b"b")
    empty.hi = b"l"  # it reads: a second range
    for n in range(48):  # the limit still holds exactly: 50 ranges pass, 51 raise
        reads.add_point(bytes([0x70, n]))
    with pytest.raises(LimitExceeded, match="Too many reads"):
        reads.add_point(b"z")


def test_reads_of_empty_ranges_count_no_range_and_cost_no_merges(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index range that holds no key (``gte(x, a).lt(x, a)``, ``gt(x, 5).lt(x, 1)``,
    ``eq("_id", "junk")``) is no read range, as in Convex and in a mutation (whose scan
    skips it). A query's one-loop read recorded it anyway: each stayed in the read set
    as an empty range that might still grow, so past the limit's worth of them every
    read merged them all again (16,000 such first() calls in a query: 32 s, 0.09 s in a
    mutation)."""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 50)
    fill(engine, 20)
    merges = count_freezes(monkeypatch)
    empty_ranges = [
        lambda q, i: q.gte("_creationTime", float(i)).lt("_creationTime", float(i)),
        lambda q, i: q.gt("_creationTime", float(i + 5)).lt("_creationTime", float(i)),
        lambda q, i: q.eq("_id", f"junk{i}"),
    ]

    def reads(ctx: Any) -> int:
        for i in range(600):
            rng = empty_ranges[i % 3]
            index = "by_id" if i % 3 == 2 else "by_creation_time"
            found = ctx.db.query("t").with_index(index, lambda q: rng(q, i)).first()
            assert found is None
        used: int = ctx.meta.get_transaction_metrics()["databaseQueries"]["used"]
        return used

    for run in (engine.query, engine.run):
        merges[0] = 0
        assert run(reads) == 0
        assert merges[0] <= 600 // 49 + 1, run.__name__


def test_reads_near_the_ranges_limit_cost_no_sort_of_everything_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Close to the limit, the room left before the count must be checked again is a few
    reads, and each check sorted every range read since the function started (point
    reads, finished queries, and in a mutation every scan a first() had dropped): a
    function reading 4,090 ranges, then the same ones again, took 31 s for 28,630 first()
    calls (0.5 s at 3,000 ranges), 3.6 s for as many gets. The check folds what changed
    since the last one into the merged ranges instead, a bisection each."""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 50)
    ids = fill(engine, 120)
    sorted_pairs = count_ranges_sorted(monkeypatch)

    def first_of(ctx: Any, i: int) -> Any:
        return ctx.db.query("t").with_index("by_id", lambda q: q.eq("_id", ids[2 * i])).first()

    reading = {
        "first": lambda ctx: [first_of(ctx, i) for _ in range(40) for i in range(48)],
        "get": lambda ctx: [ctx.db.get(ids[2 * i]) for _ in range(40) for i in range(48)],
    }
    for run in (engine.query, engine.run):
        for name, read in reading.items():
            sorted_pairs[0] = 0
            assert all(run(read))  # 1,920 reads of 48 ranges: within the limit of 50
            assert sorted_pairs[0] <= 1000, (run.__name__, name, sorted_pairs)


def test_a_range_cut_short_after_a_merge_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scans.read_rows records its whole range, then cuts it where it stopped: a merge
    made in between must not count the ranges that whole range joined as one."""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 3)
    reads = readset.ReadSet()
    for lo in (b"b", b"e", b"h"):
        reads.add_interval(lo, lo + b"\x00")
    whole = reads.add_interval(b"a", b"z")  # merges: one range
    whole.hi = b"a\x00"  # the read stopped at its first key: four ranges
    with pytest.raises(LimitExceeded, match="Too many reads"):
        reads.add_point(b"q")


def test_bytes_written_roll_back_with_the_writes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: a nested mutation that raised (caught by its caller) kept its bytes
    # in the count, and so did a write refused for its size: the count disagreed with the
    # documents count, which rolled back, and the caller hit the limit under it.
    monkeypatch.setattr(transaction, "MAX_BYTES_WRITTEN", 10_000)

    @internal_mutation(args={})
    def child(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("t", {"pad": "x" * 6_000})
        raise ConvexError("changed my mind")

    def parent(ctx):  # type: ignore[no-untyped-def]
        try:
            ctx.run_mutation(child, {})
        except ConvexError:
            pass
        try:
            ctx.db.insert("t", {"pad": "z" * 11_000})  # refused: over the limit alone
        except LimitExceeded:
            pass
        ctx.db.insert("t", {"pad": "y" * 6_000})

    engine.run(parent)
    assert [len(d["pad"]) for d in engine.query(lambda ctx: ctx.db.query("t").collect())] == [6_000]
    with pytest.raises(LimitExceeded, match="Too many bytes written"):
        engine.run(lambda ctx: [ctx.db.insert("t", {"pad": "w" * 6_000}) for _ in range(2)])


# -- ctx.meta.get_transaction_metrics() and transaction_limits= ---------------------------

METRIC_KEYS = [
    "bytesRead",
    "bytesWritten",
    "databaseQueries",
    "documentsRead",
    "documentsWritten",
    "functionsScheduled",
    "scheduledFunctionArgsBytes",
]
CONVEX_LIMITS = {
    "bytesRead": 16 << 20,
    "bytesWritten": 16 << 20,
    "databaseQueries": 4096,
    "documentsRead": 32_000,
    "documentsWritten": 16_000,
    "functionsScheduled": 1000,
    "scheduledFunctionArgsBytes": 16 << 20,
}


def used(metrics: Any) -> dict[str, int]:
    return {key: metrics[key]["used"] for key in METRIC_KEYS}


def test_metrics_have_convexs_keys_and_limits(engine: Engine) -> None:
    for run in (engine.query, engine.run):
        metrics = run(lambda ctx: ctx.meta.get_transaction_metrics())
        assert sorted(metrics) == METRIC_KEYS
        assert metrics == {k: {"used": 0, "remaining": n} for k, n in CONVEX_LIMITS.items()}


def test_metrics_count_reads_and_remaining_goes_down(engine: Engine) -> None:
    ids = fill(engine, 20)

    def reads(ctx):  # type: ignore[no-untyped-def]
        steps = [ctx.meta.get_transaction_metrics()]
        ctx.db.get(ids[0])
        steps.append(ctx.meta.get_transaction_metrics())
        ctx.db.query("t").take(5)
        steps.append(ctx.meta.get_transaction_metrics())
        ctx.db.query("t").filter(lambda q: q.eq(q.field("i"), -1)).collect()  # 20 scanned
        steps.append(ctx.meta.get_transaction_metrics())
        return steps

    for run in (engine.query, engine.run):  # the read-only path and a mutation's
        steps = run(reads)
        assert [s["documentsRead"]["used"] for s in steps] == [0, 1, 6, 26]
        # A get is one range, and so is each query; the two scans of the whole table
        # from its start merge into one with the get's range inside it.
        assert [s["databaseQueries"]["used"] for s in steps] == [0, 1, 2, 2]
        bytes_read = [s["bytesRead"]["used"] for s in steps]
        assert bytes_read[0] == 0 and bytes_read[1] > 0 and bytes_read[3] > bytes_read[2]
        for step in steps:
            for key in METRIC_KEYS:
                metric = step[key]
                assert metric["used"] + metric["remaining"] == CONVEX_LIMITS[key]
        assert used(steps[-1])["documentsWritten"] == 0


def test_metrics_count_writes_and_their_bytes(engine: Engine) -> None:
    def writes(ctx):  # type: ignore[no-untyped-def]
        first = ctx.db.insert("t", {"pad": "x" * 100})
        after_one = ctx.meta.get_transaction_metrics()
        ctx.db.insert("t", {"pad": "y" * 100})
        ctx.db.patch(first, {"pad": "z"})  # reads the document, then writes it again
        return after_one, ctx.meta.get_transaction_metrics()

    after_one, after_three = engine.run(writes)
    assert after_one["documentsWritten"] == {"used": 1, "remaining": 15_999}
    assert 100 < after_one["bytesWritten"]["used"] < 200
    assert after_three["documentsWritten"] == {"used": 3, "remaining": 15_997}
    assert after_three["bytesWritten"]["used"] > 2 * after_one["bytesWritten"]["used"]
    assert after_three["documentsRead"]["used"] == 1  # the patch's read of its document


def test_metrics_count_scheduled_functions_and_their_arguments(db_path: Path) -> None:
    from engine.values import value_size
    from tests.app import jobs

    @internal_query(args={})
    def seen_by_a_nested_query(ctx):  # type: ignore[no-untyped-def]
        return ctx.meta.get_transaction_metrics()

    def schedule(ctx):  # type: ignore[no-untyped-def]
        before = ctx.meta.get_transaction_metrics()
        ctx.scheduler.run_after(60, jobs.write_note, {"text": "a"})
        ctx.scheduler.run_after(60, jobs.write_note, {"text": "bcd"})
        return before, ctx.meta.get_transaction_metrics(), ctx.run_query(seen_by_a_nested_query)

    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        before, after, nested = engine.run(schedule)
    args_bytes = value_size([{"text": "a"}]) + value_size([{"text": "bcd"}])
    assert before["functionsScheduled"] == {"used": 0, "remaining": 1000}
    assert after["functionsScheduled"] == {"used": 2, "remaining": 998}
    assert after["scheduledFunctionArgsBytes"] == {
        "used": args_bytes,
        "remaining": (16 << 20) - args_bytes,
    }
    assert nested == after  # the transaction's, seen from a nested call


def test_remaining_is_negative_after_a_caught_limit_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Convex (remaining is an isize): the read past the limit was counted."""
    fill(engine, 8)
    monkeypatch.setattr(scans, "MAX_DOCUMENTS_READ", 5)

    def over(ctx):  # type: ignore[no-untyped-def]
        try:
            ctx.db.query("t").collect()
        except LimitExceeded:
            pass
        return ctx.meta.get_transaction_metrics()["documentsRead"]

    assert engine.query(over) == {"used": 6, "remaining": -1}


@internal_query(args={"n": v.int64()})
def read_n(ctx, n):  # type: ignore[no-untyped-def]
    return len(ctx.db.query("t").take(n))


@internal_query(args={})
def metrics_inside(ctx):  # type: ignore[no-untyped-def]
    return ctx.meta.get_transaction_metrics()


@internal_mutation(args={"n": v.int64(), "pad": v.int64()})
def write_n(ctx, n, pad):  # type: ignore[no-untyped-def]
    for _ in range(n):
        ctx.db.insert("t", {"pad": "x" * pad})


def test_transaction_limits_are_a_budget_on_top_of_what_was_used(engine: Engine) -> None:
    """Convex's from_budget: each value is how much more the nested call may use."""
    fill(engine, 20)

    def parent(ctx):  # type: ignore[no-untyped-def]
        ctx.db.query("t").take(3)
        inside = ctx.run_query(metrics_inside, transaction_limits={"documentsRead": 5})
        assert ctx.run_query(read_n, {"n": 5}, transaction_limits={"documentsRead": 5}) == 5
        with pytest.raises(LimitExceeded) as caught:
            ctx.run_query(read_n, {"n": 6}, transaction_limits={"documentsRead": 5})
        after = ctx.meta.get_transaction_metrics()
        return inside, str(caught.value), caught.value.limit, after

    for run in (engine.query, engine.run):
        inside, message, limit, after = run(parent)
        assert inside["documentsRead"] == {"used": 3, "remaining": 5}
        # The keys left out keep the caller's limits.
        assert inside["bytesRead"]["used"] + inside["bytesRead"]["remaining"] == 16 << 20
        assert inside["documentsWritten"]["remaining"] == 16_000
        # Convex's message, naming the absolute limit the nested call ran under (3 + 5,
        # then 8 + 5), and the read past it counted, as Convex counts it.
        assert message.startswith(
            "Too many documents read in a single function execution (limit: 13). Consider"
        )
        assert limit == "TooManyDocumentsRead"
        assert after["documentsRead"] == {"used": 14, "remaining": 32_000 - 14}


def test_the_callers_limits_are_back_after_a_nested_call_returns_or_raises(
    engine: Engine,
) -> None:
    ids = fill(engine, 30)

    def parent(ctx):  # type: ignore[no-untyped-def]
        try:
            ctx.run_query(read_n, {"n": 10}, transaction_limits={"documentsRead": 2})
        except LimitExceeded:
            pass
        ctx.run_query(read_n, {"n": 1}, transaction_limits={"databaseQueries": 1})
        # Well past both nested limits: 30 reads, 15 separate ranges.
        ctx.db.query("t").collect()
        [ctx.db.get(i) for i in ids[::2]]
        return ctx.meta.get_transaction_metrics()

    for run in (engine.query, engine.run):
        metrics = run(parent)
        assert metrics["documentsRead"]["remaining"] == 32_000 - metrics["documentsRead"]["used"]
        assert metrics["databaseQueries"]["remaining"] == 4096 - metrics["databaseQueries"]["used"]


def test_transaction_limits_only_lower_the_limits(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value past the limit in force keeps that limit (Convex clamps; no error), also
    for a call nested in a call that lowered it."""
    fill(engine, 20)
    monkeypatch.setattr(scans, "MAX_DOCUMENTS_READ", 10)

    @internal_query(args={"budget": v.int64(), "n": v.int64()})
    def lowered_again(ctx, budget, n):  # type: ignore[no-untyped-def]
        return ctx.run_query(read_n, {"n": n}, transaction_limits={"documentsRead": budget})

    def parent(ctx):  # type: ignore[no-untyped-def]
        ctx.db.query("t").take(4)
        inside = ctx.run_query(metrics_inside, transaction_limits={"documentsRead": 1_000_000})
        assert inside["documentsRead"] == {"used": 4, "remaining": 6}
        with pytest.raises(LimitExceeded, match=r"\(limit: 10\)"):
            ctx.run_query(read_n, {"n": 7}, transaction_limits={"documentsRead": 1_000_000})

    engine.query(parent)

    def nested_twice(ctx):  # type: ignore[no-untyped-def]
        ctx.db.query("t").take(1)
        # An inner call cannot raise what its caller lowered: 1 + 2, not 1 + 100.
        with pytest.raises(LimitExceeded, match=r"\(limit: 3\)"):
            ctx.run_query(
                lowered_again, {"budget": 100, "n": 3}, transaction_limits={"documentsRead": 2}
            )

    engine.query(nested_twice)


def test_a_nested_mutation_over_its_write_limits_rolls_back_and_the_caller_goes_on(
    engine: Engine,
) -> None:
    def parent(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("t", {"who": "parent"})
        errors = []
        for budget in ({"documentsWritten": 2}, {"bytesWritten": 250}):
            try:
                ctx.run_mutation(write_n, {"n": 3, "pad": 100}, transaction_limits=budget)
            except LimitExceeded as error:
                errors.append((error.limit, str(error)))
        ctx.run_mutation(write_n, {"n": 2, "pad": 100}, transaction_limits={"bytesWritten": 400})
        ctx.db.insert("t", {"who": "parent"})
        return errors, ctx.meta.get_transaction_metrics()["documentsWritten"]

    errors, written = engine.run(parent)
    assert [limit for limit, _ in errors] == ["TooManyWrites", "TooManyBytesWritten"]
    assert errors[0][1] == "Too many documents written in a single function execution (limit: 3)."
    assert errors[1][1].startswith("Too many bytes written in a single function execution")
    assert written == {"used": 4, "remaining": 15_996}
    assert len(engine.query(lambda ctx: ctx.db.query("t").collect())) == 4


@internal_query(args={"ids": v.array(v.id("t"))})
def get_all(ctx, ids):  # type: ignore[no-untyped-def]
    return [ctx.db.get(i) for i in ids]


@internal_query(args={})
def scan_all(ctx):  # type: ignore[no-untyped-def]
    return [row for row in ctx.db.query("t")]  # iteration: the streaming scan


@pytest.mark.parametrize(
    ("callee", "budget", "code"),
    [
        (get_all, {"documentsRead": 2}, "TooManyDocumentsRead"),
        (get_all, {"bytesRead": 40}, "TooManyBytesRead"),
        (read_n, {"documentsRead": 2}, "TooManyDocumentsRead"),
        (read_n, {"bytesRead": 40}, "TooManyBytesRead"),
        (scan_all, {"documentsRead": 2}, "TooManyDocumentsRead"),
        (scan_all, {"bytesRead": 40}, "TooManyBytesRead"),
    ],
)
def test_lowered_read_limits_hold_on_every_read_path(
    engine: Engine, callee: Any, budget: dict[str, int], code: str
) -> None:
    """A point get, a query's one-loop read (in a query) or merged scan (in a mutation),
    and an iterated query all stop at a nested call's lower limits."""
    ids = fill(engine, 5)
    args = {"ids": ids[:3]} if callee is get_all else {"n": 3} if callee is read_n else {}
    for run in (engine.query, engine.run):
        with pytest.raises(LimitExceeded) as caught:
            run(lambda ctx: ctx.run_query(callee, args, transaction_limits=budget))
        assert caught.value.limit == code
        assert run(lambda ctx: ctx.run_query(callee, args))  # the same call, unlimited


def test_transaction_limits_on_read_ranges(engine: Engine) -> None:
    ids = fill(engine, 20)

    def parent(ctx):  # type: ignore[no-untyped-def]
        ctx.db.get(ids[19])
        assert ctx.run_query(
            get_all, {"ids": ids[0:8:2]}, transaction_limits={"databaseQueries": 4}
        )
        with pytest.raises(LimitExceeded) as caught:
            ctx.run_query(get_all, {"ids": ids[8:18:2]}, transaction_limits={"databaseQueries": 4})
        # The same document again is no new range.
        ctx.run_query(get_all, {"ids": [ids[19]] * 50}, transaction_limits={"databaseQueries": 0})
        return str(caught.value), caught.value.limit

    message, limit = engine.query(parent)
    assert message.startswith("Too many reads in a single function execution (limit: 9).")
    assert limit == "TooManyReads"


def test_transaction_limits_on_scheduling(db_path: Path) -> None:
    from tests.app import jobs

    @internal_mutation(args={"texts": v.array(v.string())})
    def schedule_all(ctx, texts):  # type: ignore[no-untyped-def]
        for text in texts:
            ctx.scheduler.run_after(60, jobs.write_note, {"text": text})

    def parent(ctx):  # type: ignore[no-untyped-def]
        ctx.scheduler.run_after(60, jobs.write_note, {"text": "parent"})
        caught = []
        for budget in ({"functionsScheduled": 1}, {"scheduledFunctionArgsBytes": 100}):
            with pytest.raises(LimitExceeded) as error:
                ctx.run_mutation(
                    schedule_all, {"texts": ["a" * 60, "b" * 60]}, transaction_limits=budget
                )
            caught.append((error.value.limit, str(error.value)))
        ctx.run_mutation(
            schedule_all, {"texts": ["c"]}, transaction_limits={"functionsScheduled": 1}
        )
        return caught, ctx.meta.get_transaction_metrics()["functionsScheduled"]

    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        caught, scheduled = engine.run(parent)
        assert (
            len(engine.query(lambda ctx: ctx.db.system.query("_scheduled_functions").collect()))
            == 2
        )
    assert caught[0] == (
        "TooManyFunctionsScheduled",
        "Too many functions scheduled by this mutation (limit: 2). Schedule one function "
        "that schedules the rest in batches.",
    )
    assert caught[1][0] == "ScheduledFunctionsArgumentsTooLarge"
    assert "Too large total size of the arguments of scheduled functions" in caught[1][1]
    assert scheduled == {"used": 2, "remaining": 998}  # the failed calls' jobs rolled back


@pytest.mark.parametrize(
    ("budget", "path", "words"),
    [
        ([("documentsRead", 1)], "", "must be a dict of Convex's keys"),
        ({"documents_read": 1}, ".documents_read", "Convex's name for it is 'documentsRead'"),
        ({"rows": 1}, ".rows", "the keys are bytesRead, bytesWritten"),
        ({"documentsRead": -1}, ".documentsRead", "a whole number >= 0"),
        ({"documentsRead": 2.5}, ".documentsRead", "got float: 2.5"),
        ({"documentsRead": True}, ".documentsRead", "got bool: True"),
        ({"documentsRead": None}, ".documentsRead", "Leave the key out"),
    ],
)
def test_a_malformed_budget_is_refused_before_the_call_runs(
    engine: Engine, budget: Any, path: str, words: str
) -> None:
    ran = []

    @internal_query(args={})
    def callee(ctx):  # type: ignore[no-untyped-def]
        ran.append(1)

    with pytest.raises(ValidationError, match=re.escape(words)) as caught:
        engine.query(lambda ctx: ctx.run_query(callee, transaction_limits=budget))
    assert caught.value.path == path
    assert ran == []


def test_a_whole_float_and_unset_are_accepted_as_convexs_json_numbers_and_undefined(
    engine: Engine,
) -> None:
    fill(engine, 5)
    inside = engine.query(
        lambda ctx: ctx.run_query(
            metrics_inside, transaction_limits={"documentsRead": 2.0, "bytesRead": UNSET}
        )
    )
    assert inside["documentsRead"]["remaining"] == 2
    assert inside["bytesRead"]["remaining"] == 16 << 20


def test_actions_have_no_transaction_metrics_nor_limits(engine: Engine) -> None:
    """Convex's ActionMeta has no getTransactionMetrics, and an action's runQuery no
    transactionLimits: an action is no transaction."""

    @action(args={})
    async def metrics_in_action(ctx):  # type: ignore[no-untyped-def]
        return ctx.meta.get_transaction_metrics()

    with pytest.raises(AttributeError) as caught:
        engine.action(metrics_in_action, {})
    message = str(caught.value)
    assert message.startswith("ctx.meta is not available in an action:")
    assert "get_transaction_metrics() can only be called from a query or mutation" in message
    assert "inside the query or mutation the action runs" in message

    @action(args={})
    async def limited_in_action(ctx):  # type: ignore[no-untyped-def]
        return await ctx.run_query(metrics_inside, {}, transaction_limits={"documentsRead": 1})

    with pytest.raises(TypeError, match="transaction_limits"):
        engine.action(limited_in_action, {})


def test_metrics_in_a_loop_of_reads_cost_no_sort_of_everything_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Convex's own example asks for the metrics after each document it deletes: the
    ranges count must not sort every range read on each call (500 turns of a loop of
    gets and queries sorted 250,000 ranges; now the reads since the last call are
    merged in, a bisection each)."""
    ids = fill(engine, 500)
    sorted_ranges = count_ranges_sorted(monkeypatch)

    def loop(ctx):  # type: ignore[no-untyped-def]
        for i in ids:
            ctx.db.get(i)
            ctx.db.query("t").with_index("by_id", lambda q, i=i: q.eq("_id", i)).first()
            ctx.meta.get_transaction_metrics()
        for document in ctx.db.query("t"):  # a scan running while asked: still counted
            if document["_id"] == ids[100]:
                return ctx.meta.get_transaction_metrics()["databaseQueries"]

    for run in (engine.query, engine.run):  # read_rows's ranges, and dropped scans'
        sorted_ranges[0] = 0
        # A range per id (its get and its query read the same key), and the scan's.
        assert run(loop) == {"used": 501, "remaining": 3595}
        assert sorted_ranges[0] < 2_000
