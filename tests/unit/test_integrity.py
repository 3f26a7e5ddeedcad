"""engine.integrity: Engine.check() reports each kind of damage as CorruptionError.

Each case damages a healthy database with raw LMDB writes (as a bug, a bad tool or
a failing disk would) and expects check() to name the damage; no case may escape as
another exception type (a decoder's or struct's error), which would hide the
problems found so far.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import (
    Engine,
    MutationCtx,
    OptimisticConcurrencyControlFailure,
    QueryCtx,
    define_schema,
    define_table,
    ids,
    v,
)
from engine.catalog import Catalog, decode_catalog, encode_catalog
from engine.encoding import decode, encode
from engine.errors import CorruptionError

SCHEMA = define_schema(
    {"t": define_table({"n": v.number(), "s": v.optional(v.string())}).index("by_n", ["n"])}
)


def _document_key(doc_id: str) -> bytes:
    number, internal = ids.decode_id(doc_id)
    return number.to_bytes(4, "big") + internal


def _rewrite(document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    change(document)
    return encode(document)


# (name, damage(storage, txn, doc_id, stored document), expected message)
CASES: list[tuple[str, Callable[[Any, Any, str, dict[str, Any]], None], str]] = [
    (
        "document bytes that do not decode",
        lambda st, txn, doc_id, doc: txn.put(_document_key(doc_id), b"\xc1\xc1", db=st.documents),
        "does not decode",
    ),
    (
        "a document that is not an object",
        lambda st, txn, doc_id, doc: txn.put(_document_key(doc_id), encode([1]), db=st.documents),
        "does not decode",
    ),
    (
        "an indexed field outside the value model",
        lambda st, txn, doc_id, doc: txn.put(
            _document_key(doc_id),
            _rewrite(doc, lambda d: d.update(n={1: 2})),
            db=st.documents,
        ),
        "has no index keys|is invalid",
    ),
    (
        "an unindexed field outside the value model",
        lambda st, txn, doc_id, doc: txn.put(
            _document_key(doc_id),
            _rewrite(doc, lambda d: d.update(extra={1: 2})),
            db=st.documents,
        ),
        "is invalid: Object keys must be str",
    ),
    (
        "a document that breaks the stored schema",
        lambda st, txn, doc_id, doc: txn.put(
            _document_key(doc_id), _rewrite(doc, lambda d: d.update(s=12)), db=st.documents
        ),
        "does not match the schema",
    ),
    (
        "an index entry with a value",
        lambda st, txn, doc_id, doc: _put_value_on_an_index_entry(st, txn),
        "has a value",
    ),
    (
        "a log key that is not a timestamp",
        lambda st, txn, doc_id, doc: txn.put(b"abc", encode([]), db=st.log),
        "not an 8-byte timestamp",
    ),
    (
        "a log floor newer than the head",
        lambda st, txn, doc_id, doc: txn.put(b"log_floor", struct.pack(">Q", 2**63), db=st.meta),
        "log_floor .* is newer than latest_ts",
    ),
    (
        "a log entry at or below the log floor",
        lambda st, txn, doc_id, doc: txn.put(b"log_floor", struct.pack(">Q", 2**62), db=st.meta),
        "is not newer than log_floor",
    ),
    # Found by the storage hunt: check() read none of these (a head that did not
    # decode escaped as struct.error).
    (
        "the newest log entry missing",
        lambda st, txn, doc_id, doc: txn.delete(_newest_log_key(st, txn), db=st.log),
        "the log has no entry for latest_ts",
    ),
    (
        "a log entry that is not a list of keys",
        lambda st, txn, doc_id, doc: txn.put(_newest_log_key(st, txn), encode({"a": 1}), db=st.log),
        "is not a list of keys",
    ),
    (
        "a schema_ts newer than the head",
        lambda st, txn, doc_id, doc: txn.put(b"schema_ts", struct.pack(">Q", 2**63), db=st.meta),
        "meta/schema_ts .* is newer than latest_ts",
    ),
    (
        "a schema_ts that is not 8 bytes",
        lambda st, txn, doc_id, doc: txn.put(b"schema_ts", b"abc", db=st.meta),
        "meta/schema_ts 616263 is not 8 bytes",
    ),
    (
        "a head that is not 16 bytes",
        lambda st, txn, doc_id, doc: txn.put(b"head", b"abc", db=st.meta),
        "meta/head 616263 is not 16 bytes",
    ),
    (
        "a stored schema that does not decode",
        lambda st, txn, doc_id, doc: txn.put(b"schema", b"\xc1", db=st.meta),
        r"the stored schema \(meta/schema\) does not decode",
    ),
    (
        "a missing format version",
        lambda st, txn, doc_id, doc: txn.delete(b"format", db=st.meta),
        "meta/format is missing",
    ),
    (
        "a key in the main database",
        lambda st, txn, doc_id, doc: txn.put(b"zzz", b"1"),
        "the main database has key b'zzz'",
    ),
    (
        "a _storage row that does not decode",
        lambda st, txn, doc_id, doc: _garble_the_storage_row(st, txn),
        "does not decode",
    ),
    # Found by review: check() compared the size with == (an Int64 5 equals 5.0) and
    # never looked at the row's other fields.
    (
        "a _storage row whose size is an Int64",
        lambda st, txn, doc_id, doc: _change_the_storage_row(st, txn, lambda d: d.update(size=5)),
        "size is 5, a int; the size is a Float64",
    ),
    (
        "a _storage row with a field Convex's rows do not have",
        lambda st, txn, doc_id, doc: _change_the_storage_row(st, txn, lambda d: d.update(evil=1)),
        r"unexpected fields \['evil'\]",
    ),
    (
        "a _storage row whose contentType is not a string",
        lambda st, txn, doc_id, doc: _change_the_storage_row(
            st, txn, lambda d: d.update(contentType=5.0)
        ),
        "contentType is a float",
    ),
]


def _newest_log_key(storage: Any, txn: Any) -> bytes:
    cursor = txn.cursor(db=storage.log)
    assert cursor.last()
    key = bytes(cursor.key())
    cursor.close()
    return key


def _put_value_on_an_index_entry(storage: Any, txn: Any) -> None:
    cursor = txn.cursor(db=storage.indexes)
    assert cursor.first()
    key = bytes(cursor.key())
    cursor.close()
    txn.put(key, b"x", db=storage.indexes)


def _change_the_storage_row(
    storage: Any, txn: Any, change: Callable[[dict[str, Any]], None]
) -> None:
    cursor = txn.cursor(db=storage.documents)
    assert cursor.first()  # _storage (table 1) sorts before user tables
    key = bytes(cursor.key())
    cursor.close()
    txn.put(key, _rewrite(decode(txn.get(key, db=storage.documents)), change), db=storage.documents)


def _garble_the_storage_row(storage: Any, txn: Any) -> None:
    cursor = txn.cursor(db=storage.documents)
    assert cursor.first()  # _storage (table 1) sorts before user tables
    key = bytes(cursor.key())
    cursor.close()
    assert decode(txn.get(key, db=storage.documents))["contentType"] == "text/plain"
    txn.put(key, b"\xc1", db=storage.documents)


@pytest.mark.parametrize(("name", "damage", "message"), CASES, ids=[c[0] for c in CASES])
def test_check_names_the_damage(
    db_path: Path,
    name: str,
    damage: Callable[[Any, Any, str, dict[str, Any]], None],
    message: str,
) -> None:
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        engine.run(lambda ctx: ctx.db.insert("t", {"n": 2.0}))
        engine.store_file(b"hello", "text/plain")
        document = engine.run(lambda ctx: ctx.db.get(doc_id))
        engine.check()  # healthy before
        storage = engine._db.storage
        storage.write(lambda txn: damage(storage, txn, doc_id, document))
        with pytest.raises(CorruptionError, match=message) as caught:
            engine.check()
        assert caught.value.problems


def _rewrite_catalog(storage: Any, txn: Any, change: Callable[[Catalog], Catalog]) -> None:
    catalog = decode_catalog(txn.get(b"catalog", db=storage.meta))
    txn.put(b"catalog", encode_catalog(change(catalog)), db=storage.meta)


def _retable(catalog: Catalog, table: str, **changes: Any) -> Catalog:
    tables = dict(catalog.tables)
    tables[table] = msgspec.structs.replace(tables[table], **changes)
    return msgspec.structs.replace(catalog, tables=tables)


def _renumber_index(catalog: Catalog, table: str, index: str, number: int) -> Catalog:
    indexes = dict(catalog.tables[table].indexes)
    indexes[index] = msgspec.structs.replace(indexes[index], number=number)
    return _retable(catalog, table, indexes=indexes)


def _second_table(engine: Engine) -> None:
    engine.run(lambda ctx: ctx.db.insert("u", {"n": 1}))


# (name, change of the stored catalog, expected message). Found by review: check() read
# the catalog through the per-version cache and checked nothing in it, so two tables or
# two indexes sharing a number (whose keys then mix) passed.
CATALOG_CASES: list[tuple[str, Callable[[Catalog], Catalog], str]] = [
    (
        "two tables with one number",
        lambda c: _retable(c, "u", number=c.tables["t"].number),
        "table 'u' has number 10001, as table 't'",
    ),
    (
        "two indexes with one number",
        lambda c: _renumber_index(c, "u", "by_creation_time", c.tables["t"].indexes["by_n"].number),
        r"index u.by_creation_time has number \d+, as index t.by_n",
    ),
    (
        "an index numbered 0, the catalog's own",
        lambda c: _renumber_index(c, "t", "by_n", 0),
        r"index t.by_n has number 0, outside \[1, ",
    ),
    (
        "a next free index number below an index",
        lambda c: msgspec.structs.replace(c, next_index=2),
        r"outside \[1, 2\)",
    ),
    (
        "a next free table number at a table's",
        lambda c: msgspec.structs.replace(c, next_user_table=c.tables["u"].number),
        r"table 'u' has number 10002, outside the user tables' range \[10001, 10002\)",
    ),
    (
        "a user table with a system number",
        lambda c: _retable(c, "u", number=3),
        "table 'u' has number 3, outside the user tables' range",
    ),
    (
        "a table stored under another name",
        lambda c: _retable(c, "u", name="w"),
        "table 'u' is stored as table 'w'",
    ),
    (
        "a table without by_creation_time",
        lambda c: _retable(
            c,
            "u",
            indexes={k: i for k, i in c.tables["u"].indexes.items() if k != "by_creation_time"},
        ),
        "table 'u' has no by_creation_time index",
    ),
    # Found by the storage hunt: a table without by_id made every open fail with a
    # KeyError (the catalog's lookups), and by_creation_time on fields passed check().
    (
        "a table without by_id",
        lambda c: _retable(
            c, "u", indexes={k: i for k, i in c.tables["u"].indexes.items() if k != "by_id"}
        ),
        "table 'u' has no by_id index",
    ),
    (
        "by_creation_time on fields",
        lambda c: _retable(
            c,
            "u",
            indexes={
                **c.tables["u"].indexes,
                "by_creation_time": msgspec.structs.replace(
                    c.tables["u"].indexes["by_creation_time"], fields=("n",)
                ),
            },
        ),
        r"table 'u' has by_creation_time on fields \('n',\)",
    ),
    (
        "an index in an unknown state",
        lambda c: _retable(
            c,
            "t",
            indexes={
                **c.tables["t"].indexes,
                "by_n": msgspec.structs.replace(c.tables["t"].indexes["by_n"], state="bogus"),
            },
        ),
        "catalog index t.by_n has state 'bogus'",
    ),
    (
        "an index of an unknown kind",
        lambda c: _retable(
            c,
            "t",
            indexes={
                **c.tables["t"].indexes,
                "by_n": msgspec.structs.replace(c.tables["t"].indexes["by_n"], kind="graph"),
            },
        ),
        "catalog index t.by_n has kind 'graph'",
    ),
    (
        "a search index without a search field",
        lambda c: _retable(
            c,
            "t",
            indexes={
                **c.tables["t"].indexes,
                "by_n": msgspec.structs.replace(
                    c.tables["t"].indexes["by_n"], kind="search", fields=()
                ),
            },
        ),
        "catalog search index t.by_n has no search field",
    ),
    (
        "a catalog rewritten under the same version",
        lambda c: msgspec.structs.replace(c, next_index=c.next_index + 1),
        "rewritten without a new version",
    ),
    (
        "a catalog of another version than the head names",
        lambda c: msgspec.structs.replace(c, version=c.version + 7),
        r"the stored catalog has version \d+, the head names",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "message"), CATALOG_CASES, ids=[c[0] for c in CATALOG_CASES]
)
def test_check_names_a_damaged_catalog(
    db_path: Path, name: str, change: Callable[[Catalog], Catalog], message: str
) -> None:
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        _second_table(engine)
        engine.check()  # healthy before
        storage = engine._db.storage
        storage.write(lambda txn: _rewrite_catalog(storage, txn, change))
        with pytest.raises(CorruptionError, match=message) as caught:
            engine.check()
        assert caught.value.problems
    if name == "a catalog rewritten under the same version":
        return  # a gap in the index numbers: harmless to a process that never saw the old one
    # And in a process that never saw the healthy catalog (nothing cached).
    with (
        Engine.open(db_path, durability="none") as engine,
        pytest.raises(CorruptionError, match=message),
    ):
        engine.check()


def test_a_log_floor_newer_than_every_snapshot_is_named_by_the_conflict(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1}))
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(b"log_floor", struct.pack(">Q", 2**63), db=storage.meta))
        engine._db.retry.base = 0.0001
        with pytest.raises(OptimisticConcurrencyControlFailure, match="older than the commit log"):
            engine.run(lambda ctx: ctx.db.patch(doc_id, {"n": ctx.db.get(doc_id)["n"] + 1}))


def test_a_catalog_that_does_not_decode_refuses_to_open(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"n": 1}))
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(b"catalog", b"\xc1", db=storage.meta))
    for schema in (SCHEMA, None):  # every open reads the catalog (indexes left half built)
        with pytest.raises(CorruptionError, match="stored catalog .* restore the folder"):
            Engine.open(db_path, schema=schema, durability="none")


@pytest.mark.parametrize("stored", [b"\xc1", encode({"tables": 5})], ids=["bytes", "shape"])
def test_a_stored_schema_that_does_not_decode_is_named_and_the_apps_schema_repairs_it(
    db_path: Path, stored: bytes
) -> None:
    # Found by the storage hunt: an open without a schema failed with msgspec's
    # DecodeError (or an AttributeError) from deep inside the catalog cache.
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(b"schema", stored, db=storage.meta))
    with pytest.raises(CorruptionError, match=r"stored schema \(meta/schema\) does not decode"):
        Engine.open(db_path, durability="none")
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("t", {"n": 2.0}))
        assert engine.check()["tables"]["t"]["documents"] == 2


@pytest.mark.parametrize("key", [b"head", b"log_floor", b"schema_ts"])
def test_a_meta_timestamp_that_does_not_decode_is_a_corruption_error(
    db_path: Path, key: bytes
) -> None:
    # Found by the storage hunt: each escaped as struct.error from every open (head),
    # every commit (log_floor) or every catalog change (schema_ts).
    with Engine.open(db_path, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1}))
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(key, b"abc", db=storage.meta))
    damaged = f"meta/{key.decode()} 616263 does not decode"
    with pytest.raises(CorruptionError, match=damaged), Engine.open(db_path) as engine:
        engine.run(lambda ctx: ctx.db.patch(doc_id, {"n": ctx.db.get(doc_id)["n"] + 1}))


@pytest.mark.parametrize(
    ("writable", "filtered"), [(False, False), (False, True), (True, False)], ids=str
)
def test_a_query_that_meets_an_entry_without_its_document_raises_corruption_error(
    db_path: Path, writable: bool, filtered: bool
) -> None:
    # Found by the storage hunt: every read path raised a bare AssertionError here.
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        storage = engine._db.storage
        storage.write(lambda txn: txn.delete(_document_key(doc_id), db=storage.documents))

        def body(txn: Any) -> Any:
            ctx = (MutationCtx if writable else QueryCtx)(None, txn, None, 0.0)
            query = ctx.db.query("t").with_index("by_n")
            if filtered:
                query = query.filter(lambda f: f.gt(f.field("n"), 0))
            return query.collect()

        with pytest.raises(CorruptionError, match="points to a missing document") as caught:
            engine._db.run(body, writable=writable)
        assert caught.value.problems


@pytest.mark.parametrize(
    "read",
    ["get", "patch", "delete", "collect", "filtered", "scan"],
)
def test_a_read_that_meets_a_document_that_does_not_decode_raises_corruption_error(
    db_path: Path, read: str
) -> None:
    # Found by the storage hunt: each path raised msgspec's DecodeError.
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(_document_key(doc_id), b"\xc1", db=storage.documents))

        def body(txn: Any) -> Any:
            ctx = (QueryCtx if read in ("collect", "filtered") else MutationCtx)(
                None, txn, None, 0.0
            )
            if read == "get":
                return ctx.db.get(doc_id)
            if read == "patch":
                return ctx.db.patch(doc_id, {"n": 2.0})
            if read == "delete":
                return ctx.db.delete(doc_id)
            query = ctx.db.query("t").with_index("by_n")
            if read == "filtered":
                query = query.filter(lambda f: f.gt(f.field("n"), 0))
            return query.collect()

        writable = read not in ("collect", "filtered")
        with pytest.raises(CorruptionError, match="document .* does not decode") as caught:
            engine._db.run(body, writable=writable)
        assert caught.value.problems


LONG_SCHEMA = define_schema({"t": define_table({"s": v.string()}).index("by_s", ["s"])})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda members: [members[1], members[0]], "no sorted list of the long keys"),
        (lambda rests: [rests[0], b""], "no sorted list"),
        (lambda members: members[:1], "has 1 entries for 2 documents|missing index entry"),
        (lambda members: [*members, members[1] + b"x"], "has 3 entries for 2 documents"),
    ],
    ids=["unsorted", "an empty rest", "a key dropped", "a key added"],
)
def test_check_reads_and_checks_the_entries_of_long_index_keys(
    db_path: Path, damage: Callable[[list[bytes]], list[bytes]], message: str
) -> None:
    # Index keys past LMDB's 511 bytes live in the entry of their first 511 bytes, whose
    # value lists them (engine.longkeys): check() counts and verifies each key listed.
    with Engine.open(db_path, schema=LONG_SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"s": "x" * 600 + c}) for c in "ab"])
        assert engine.check()["tables"]["t"]["indexes"]["by_s"] == 2
        storage = engine._db.storage
        with storage.env.begin(write=True) as txn:
            cursor = txn.cursor(db=storage.indexes)
            entries = [(k, v) for k, v in cursor.iternext() if v]
            assert len(entries) == 1 and len(entries[0][0]) == 511
            key, value = entries[0]
            has_self, members = decode(value)
            txn.put(key, encode([has_self, damage(members)]), db=storage.indexes)
        with pytest.raises(CorruptionError, match=message):
            engine.check()


def test_check_names_long_index_keys_that_readers_would_not_see(db_path: Path) -> None:
    # Readers expand the entries of the indexes meta/long_keys lists, and only those.
    with Engine.open(db_path, schema=LONG_SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"s": "x" * 600 + c}) for c in "ab"])
        storage = engine._db.storage
        with storage.env.begin(write=True) as txn:
            txn.put(b"long_keys", encode({}), db=storage.meta)
        with pytest.raises(CorruptionError, match="meta/long_keys counts"):
            engine.check()


@pytest.mark.parametrize(
    ("where", "damage"),
    [
        ("entry", b"\xc1"),
        ("entry", encode(5)),
        ("entry", encode([True, ["text"]])),
        ("meta", b"\xc1"),
        ("meta", encode([1, 2])),
    ],
    ids=["entry bytes", "entry shape", "entry rest types", "meta bytes", "meta shape"],
)
def test_damaged_long_key_data_is_a_corruption_error(
    db_path: Path, where: str, damage: bytes
) -> None:
    # Found by review: a damaged entry value or meta/long_keys escaped as a raw msgspec
    # DecodeError or TypeError from reads, writes and check() itself.
    with Engine.open(db_path, schema=LONG_SCHEMA, durability="none") as engine:
        ids = engine.run(lambda ctx: [ctx.db.insert("t", {"s": "x" * 600 + c}) for c in "ab"])
        storage = engine._db.storage
        with storage.env.begin(write=True) as txn:
            if where == "meta":
                txn.put(b"long_keys", damage, db=storage.meta)
            else:
                key = next(k for k, v in txn.cursor(db=storage.indexes).iternext() if v)
                txn.put(key, damage, db=storage.indexes)
        with pytest.raises(CorruptionError, match="damaged|broken invariant"):
            engine.query(lambda ctx: ctx.db.query("t").with_index("by_s").collect())
        with pytest.raises(CorruptionError):
            engine.check()
        if where == "entry":
            with pytest.raises(CorruptionError):
                engine.run(lambda ctx: ctx.db.delete(ids[0]))


def test_an_index_whose_long_keys_are_gone_leaves_the_scans_path(db_path: Path) -> None:
    # Found by review: meta/long_keys was never cleared, so one long key inserted and
    # deleted kept the index off the one-loop read paths for good.
    with Engine.open(db_path, schema=LONG_SCHEMA, durability="none") as engine:
        long_id = engine.run(lambda ctx: ctx.db.insert("t", {"s": "x" * 600}))
        storage = engine._db.storage
        with storage.env.begin() as txn:
            assert storage.long_indexes(txn)
        engine.run(lambda ctx: ctx.db.delete(long_id))
        with storage.env.begin() as txn:
            assert not storage.long_indexes(txn)
            assert txn.get(b"long_keys", db=storage.meta) is None
        engine.check()
