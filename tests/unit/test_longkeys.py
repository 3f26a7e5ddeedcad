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
