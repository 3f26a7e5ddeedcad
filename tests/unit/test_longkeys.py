"""engine.longkeys: the entries that hold index keys longer than LMDB's key size."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import longkeys
from engine.encoding import encode

SPLIT = longkeys.SPLIT
PREFIX = b"\x00\x00\x00\x07" + b"k" * (SPLIT - 4)  # an entry's key: 511 bytes
rests = st.lists(st.binary(min_size=1, max_size=4), unique=True, max_size=8).map(sorted)
# Bounds around the entry: shorter, at, inside and past it.
bounds = st.one_of(
    st.just(b""),
    st.just(PREFIX),
    st.just(PREFIX[:-1]),
    st.just(PREFIX[:-1] + b"l"),
    st.binary(min_size=1, max_size=3).map(lambda rest: PREFIX + rest),
    st.just(b"\xff"),
)


@settings(max_examples=300, deadline=None)
@given(has_self=st.booleans(), rests=rests, lo=bounds, hi=bounds, reverse=st.booleans())
def test_keys_in_is_the_entrys_keys_within_the_range(
    has_self: bool, rests: list[bytes], lo: bytes, hi: bytes, reverse: bool
) -> None:
    keys = ([PREFIX] if has_self else []) + [PREFIX + rest for rest in rests]
    value = encode([has_self, rests]) if rests else b""
    if not rests and not has_self:
        return  # no such entry: an entry holds at least one key
    expected = [key for key in keys if lo <= key < hi]
    found = list(longkeys.keys_in(PREFIX, value, lo, hi, reverse))
    assert found == (expected[::-1] if reverse else expected)


def test_apply_keeps_each_entry_sorted_and_drops_it_when_empty(tmp_path: object) -> None:
    import lmdb

    env = lmdb.open(str(tmp_path), max_dbs=2)
    db, meta = env.open_db(b"indexes"), env.open_db(b"meta")
    long_b, long_a = PREFIX + b"b", PREFIX + b"a"
    with env.begin(write=True) as txn:
        longkeys.apply(txn, db, meta, {long_b: b"", long_a: b"", PREFIX: b""})
    with env.begin() as txn:
        assert list(longkeys.keys_in(PREFIX, txn.get(PREFIX, db=db), b"", b"\xff")) == [
            PREFIX,
            long_a,
            long_b,
        ]
        assert all(longkeys.contains(txn, db, key) for key in (PREFIX, long_a, long_b))
        assert not longkeys.contains(txn, db, PREFIX + b"c")
        assert txn.get(b"format", db=meta) == longkeys.FORMAT
    with env.begin(write=True) as txn:
        longkeys.apply(txn, db, meta, {long_a: None, long_b: None})
    with env.begin() as txn:
        assert txn.get(PREFIX, db=db) == b""  # the 511-byte key alone: a plain entry
    with env.begin(write=True) as txn:
        longkeys.apply(txn, db, meta, {PREFIX: None})
    with env.begin() as txn:
        assert txn.get(PREFIX, db=db) is None
    env.close()


def test_a_range_read_over_long_keys_conflicts_with_an_insert_into_it(tmp_path: object) -> None:
    # The read set holds whole keys: a mutation that read a range of long keys must not
    # commit once another one has inserted a long key inside that range (a phantom).
    import threading

    from engine import Engine, define_schema, define_table, v

    schema = define_schema({"t": define_table({"s": v.string()}).index("by_s", ["s"])})
    long = "x" * 600
    with Engine.open(str(tmp_path), schema=schema, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"s": long + c}) for c in "ac"])
        read, go = threading.Event(), threading.Event()
        seen: list[int] = []

        def count_then_write(ctx: object) -> None:
            rows = (
                ctx.db.query("t")
                .with_index(  # type: ignore[attr-defined]
                    "by_s", lambda q: q.gte("s", long + "a").lte("s", long + "c")
                )
                .collect()
            )
            seen.append(len(rows))
            if len(seen) == 1:
                read.set()
                go.wait(10)
            ctx.db.insert("t", {"s": f"count {len(rows)}"})  # type: ignore[attr-defined]

        worker = threading.Thread(target=lambda: engine.run(count_then_write))
        worker.start()
        assert read.wait(10)
        engine.run(lambda ctx: ctx.db.insert("t", {"s": long + "b"}))
        go.set()
        worker.join(10)
        assert seen == [2, 3]  # the first run conflicted and ran again
        counts = engine.query(
            lambda ctx: [
                d["s"]
                for d in ctx.db.query("t")
                .with_index("by_s", lambda q: q.gte("s", "count").lt("s", "count~"))
                .collect()
            ]
        )
        assert counts == ["count 3"]
        engine.check()


def test_dropping_an_index_of_long_keys_drops_its_count(tmp_path: object) -> None:
    # meta/long_keys counts the entries of long keys per index: a dropped index's
    # entries are gone, and so must its count be (check() compares them).
    from engine import Engine, define_schema, define_table, v

    indexed = define_schema({"t": define_table({"s": v.string()}).index("by_s", ["s"])})
    plain = define_schema({"t": define_table({"s": v.string()})})
    with Engine.open(str(tmp_path), schema=indexed, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"s": "x" * 600}))
    with Engine.open(str(tmp_path), schema=plain, durability="none") as engine:
        storage = engine._db.storage
        with storage.env.begin() as txn:
            assert not storage.long_indexes(txn)
        engine.check()
