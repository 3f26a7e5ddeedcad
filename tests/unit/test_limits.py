"""Convex's per-execution limits: documents, bytes and ranges read; documents written."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import (
    ConvexError,
    Engine,
    LimitExceeded,
    internal_mutation,
    readset,
    scans,
    transaction,
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


def test_documents_written_limit(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "MAX_DOCUMENTS_WRITTEN", 10)
    with pytest.raises(LimitExceeded, match="Too many documents written") as caught:
        engine.run(lambda ctx: [ctx.db.insert("t", {}) for _ in range(11)])
    assert caught.value.limit == "TooManyWrites"
    assert engine.query(lambda ctx: ctx.db.query("t").collect()) == []


def test_merging_ranges_keeps_live_scans_in_the_read_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge triggered mid-scan must not drop what the scan reads afterwards."""
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 8)
    reads = readset.ReadSet()
    scan = reads.add_interval(b"a", b"a")
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
    merges = 0
    freeze = readset.ReadSet.freeze

    def counting_freeze(self: readset.ReadSet) -> readset.FrozenReadSet:
        nonlocal merges
        merges += 1
        return freeze(self)

    monkeypatch.setattr(readset.ReadSet, "freeze", counting_freeze)
    reads = readset.ReadSet()
    for _ in range(2000):
        reads.add_interval(b"a", b"b")
    assert len(freeze(reads)) == 1
    assert merges <= 2000 // 49 + 1
    empty = reads.add_interval(b"k", b"k")  # a scan that has read nothing yet
    for _ in range(48):
        reads.add_interval(b"a", b"b")
    empty.hi = b"l"  # it reads: a second range
    for n in range(48):  # the limit still holds exactly: 50 ranges pass, 51 raise
        reads.add_point(bytes([0x70, n]))
    with pytest.raises(LimitExceeded, match="Too many reads"):
        reads.add_point(b"z")


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
