"""Engine.check(): damage the checks of jobs, crons, vector indexes, the catalog
against the stored schema, ``meta`` and documents' system fields must name.

Each case damages a healthy database (through the storage layer's sub-databases, or
as the engine's own system writes do) and expects a :class:`CorruptionError` that
names what is broken and where; never another exception type, which would hide every
problem found so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import CorruptionError, Engine, cron_jobs, define_schema, define_table, ids, v
from engine.catalog import Catalog, IndexDef, decode_catalog
from engine.encoding import decode, encode
from engine.scheduler import engine_writes, patch_job
from tests import app
from tests.app import cronjobs, jobs


@pytest.fixture
def scheduled(db_path: Path) -> Iterator[Engine]:
    """An engine with the test app and one cron ("tick"), without the worker."""
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=60)
    with Engine.open(
        db_path, functions=app, crons=crons, durability="none", scheduler=False
    ) as handle:
        yield handle


def _cron(engine: Engine, name: str) -> dict[str, Any]:
    (cron,) = (
        c
        for c in engine.run(lambda ctx: ctx.db.system.query("_cron_jobs").collect())
        if c["name"] == name
    )
    return cron


def _patch_cron(engine: Engine, cron_id: str, fields: dict[str, Any]) -> None:
    def write(ctx: Any) -> None:
        with engine_writes(ctx._txn):
            ctx._txn.patch(cron_id, fields)

    engine.run(write)


# -- 1: jobs and crons whose fields have the wrong type --------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # An inProgress job's name was looked up in the functions by kind: unhashable.
        (
            {"state": {"kind": "inProgress"}, "name": ["jobs:write_note"]},
            r"name is not a string: \['jobs:write_note'\]",
        ),
        ({"state": {"kind": ["pending"]}}, r"unknown state \{'kind': \['pending'\]\}"),
        ({"state": {"kind": {"a": 1.0}}}, "unknown state"),
    ],
    ids=["list name of an inProgress job", "list state kind", "object state kind"],
)
def test_a_job_field_of_the_wrong_type_is_named(
    scheduled: Engine, fields: dict[str, Any], message: str
) -> None:
    job_id = scheduled.mutation(jobs.later, {"text": "a", "delay": 60.0})
    scheduled.check()
    scheduled.run(lambda ctx: patch_job(ctx._txn, job_id, fields))
    with pytest.raises(CorruptionError, match=message) as caught:
        scheduled.check()
    assert any(p.startswith(f"_scheduled_functions {job_id}: ") for p in caught.value.problems)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"cronSpec": "spec"},
            "cronSpec .spec. does not have Convex.s shape",
        ),
        (
            {
                "cronSpec": {
                    "udfPath": "cronjobs:tick",
                    "udfArgs": [{"label": "t"}],
                    "cronSchedule": {"type": ["interval"], "seconds": 60.0},
                }
            },
            r"cronSpec.cronSchedule type \['interval'\] is not one of",
        ),
        ({"state": {"kind": ["pending"]}}, "neither pending nor inProgress"),
        ({"prevTs": [1.0]}, "prevTs is not a float"),
    ],
    ids=["spec a string", "list schedule type", "list state kind", "list prevTs"],
)
def test_a_cron_field_of_the_wrong_type_is_named(
    scheduled: Engine, fields: dict[str, Any], message: str
) -> None:
    tick = _cron(scheduled, "tick")
    scheduled.check()
    _patch_cron(scheduled, tick["_id"], fields)
    with pytest.raises(CorruptionError, match=message) as caught:
        scheduled.check()
    # The cron is named by its id and its name.
    assert any(p.startswith(f"_cron_jobs {tick['_id']} ('tick'): ") for p in caught.value.problems)


# -- 2: stray vector-index entries are named --------------------------------------------

FOODS = define_schema(
    {
        "foods": define_table(
            {"cuisine": v.optional(v.string()), "embedding": v.optional(v.array(v.float64()))}
        ).vector_index(
            "by_embedding", vector_field="embedding", dimensions=3, filter_fields=["cuisine"]
        )
    }
)


@pytest.mark.parametrize("stray", ["main entry", "filter entry", "entry of a live document"])
def test_a_stray_vector_entry_is_named_with_its_index_and_document(
    db_path: Path, stray: str
) -> None:
    with Engine.open(db_path, schema=FOODS, durability="none") as engine:
        food = engine.run(
            lambda ctx: ctx.db.insert("foods", {"cuisine": "x", "embedding": [1.0, 0.0, 0.0]})
        )
        engine.check()
        storage = engine._db.storage
        index = engine._db.catalog_cache[1].tables["foods"].indexes["by_embedding"]
        number, internal_id = ids.decode_id(food)
        gone = ids.encode_id(number, bytes(16))  # an id no document has
        main = index.prefix + b"\x00" + internal_id
        with storage.env.begin(write=True) as txn:
            value = bytes(txn.get(main, db=storage.indexes))
            if stray == "main entry":  # a vector of a document that is not there
                key = index.prefix + b"\x00" + bytes(16)
                txn.put(key, value, db=storage.indexes)
            elif stray == "filter entry":  # a filter value of a document that is not there
                key = index.prefix + b"\x01" + bytes(16) + bytes(16)
                txn.put(key, b"", db=storage.indexes)
            else:  # a filter value the live document does not have
                key = index.prefix + b"\x01" + b"\xff" * 16 + internal_id
                txn.put(key, b"", db=storage.indexes)
        with pytest.raises(CorruptionError) as caught:
            engine.check()
        problems = caught.value.problems
        if stray == "entry of a live document":
            wanted = f"index entry {key.hex()} of foods.by_embedding does not match document {food}"
        else:
            wanted = (
                f"index entry {key.hex()} of foods.by_embedding points to a missing document {gone}"
            )
        assert wanted in problems, problems
        assert len(problems) == 2, problems  # the count, and the entry: once


# -- 7: a stray search-index entry is reported once -------------------------------------

NOTES = define_schema(
    {"notes": define_table({"body": v.string()}).search_index("search_body", search_field="body")}
)


def test_a_search_entry_of_a_missing_document_is_reported_once(db_path: Path) -> None:
    with Engine.open(db_path, schema=NOTES, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("notes", {"body": "alpha"}))
        engine.check()
        storage = engine._db.storage
        index = engine._db.catalog_cache[1].tables["notes"].indexes["search_body"]
        with storage.env.begin(write=True) as txn:
            cursor = txn.cursor(db=storage.indexes)
            assert cursor.set_range(index.prefix)
            entry = bytes(cursor.key())
            cursor.close()
            stray = entry[:-16] + bytes(16)  # the same token, of a document that is not there
            txn.put(stray, b"", db=storage.indexes)
        with pytest.raises(CorruptionError) as caught:
            engine.check()
        problems = caught.value.problems
        number = engine._db.catalog_cache[1].tables["notes"].number
        missing = (
            f"index entry {stray.hex()} of notes.search_body points to a missing document "
            f"{ids.encode_id(number, bytes(16))}"
        )
        assert problems.count(missing) == 1, problems
        assert len(problems) == len(set(problems)) == 2, problems  # that, and the count


# -- 3: the catalog against the stored schema's declared indexes ------------------------

TABLES = define_schema(
    {
        "t": define_table({"n": v.optional(v.number())}).index("by_n", ["n"]),
        "u": define_table({"n": v.optional(v.number())}),
    }
)


def _indexes(catalog: Catalog, table: str, change: Any) -> Catalog:
    """``catalog`` with ``table``'s indexes changed by ``change`` (a dict in place)."""
    indexes = dict(catalog.tables[table].indexes)
    change(indexes)
    tables = dict(catalog.tables)
    tables[table] = msgspec.structs.replace(tables[table], indexes=indexes)
    return msgspec.structs.replace(catalog, tables=tables)


def _extra_index(catalog: Catalog, table: str, state: str) -> Catalog:
    extra = IndexDef("by_x", catalog.next_index, ("n",), state)
    changed = _indexes(catalog, table, lambda ixs: ixs.update(by_x=extra))
    return msgspec.structs.replace(changed, next_index=catalog.next_index + 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: _indexes(c, "t", lambda ixs: ixs.pop("by_n")),
            "the stored schema declares index t.by_n, the catalog has no such index",
        ),
        (
            lambda c: _indexes(
                c, "t", lambda ixs: ixs.update(by_n=msgspec.structs.replace(ixs["by_n"], fields=()))
            ),
            r"catalog index t.by_n is database index on \(\), the stored schema declares "
            r"database index on \('n',\)",
        ),
        (
            lambda c: _extra_index(c, "u", "ready"),
            "catalog index u.by_x is not declared by the stored schema",
        ),
        (
            lambda c: msgspec.structs.replace(
                c, tables={n: t for n, t in c.tables.items() if n != "u"}
            ),
            "the stored schema declares table 'u', the catalog has no such table",
        ),
    ],
    ids=["declared index missing", "other fields", "undeclared index", "declared table missing"],
)
def test_the_catalog_must_have_the_stored_schemas_indexes(
    db_path: Path, change: Any, message: str
) -> None:
    with Engine.open(db_path, schema=TABLES, durability="none") as engine:
        engine.check()
        _store_catalog(engine, change)
        with pytest.raises(CorruptionError, match=message):
            engine.check()


def test_an_undeclared_index_still_backfilling_is_not_reported(db_path: Path) -> None:
    with Engine.open(db_path, schema=TABLES, durability="none") as engine:
        _store_catalog(engine, lambda c: _extra_index(c, "u", "backfilling"))
        engine.check()


def _store_catalog(engine: Engine, change: Any) -> None:
    """Commit ``change`` of the stored catalog as a new catalog version, as a schema
    change does (not a schema change: the stored schema stays)."""
    from engine.migration import _store_catalog as store

    storage = engine._db.storage

    def write(txn: Any) -> None:
        stored = decode_catalog(txn.get(b"catalog", db=storage.meta))
        store(txn, engine._db, change(stored).bumped(), stored)

    storage.write(write)


# -- 5: meta's secret is 32 bytes ------------------------------------------------------


@pytest.mark.parametrize("secret", [b"", b"short", bytes(33)], ids=["empty", "5 bytes", "33 bytes"])
def test_a_secret_of_another_length_than_32_bytes_is_damage(db_path: Path, secret: bytes) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine.check()
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(b"secret", secret, db=storage.meta))
        with pytest.raises(CorruptionError, match=f"meta/secret is {len(secret)} bytes, not 32"):
            engine.check()


# -- 6: a document's _creationTime is a finite, non-negative float ---------------------


@pytest.mark.parametrize(
    "creation_time", [math.nan, -1.0, math.inf, -math.inf], ids=["NaN", "negative", "inf", "-inf"]
)
def test_a_creation_time_that_is_no_time_is_damage(db_path: Path, creation_time: float) -> None:
    with Engine.open(db_path, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        engine.check()
        db = engine._db
        storage = db.storage
        table = db.catalog_cache[1].tables["t"]
        internal_id = ids.decode_id(doc_id)[1]
        key = table.prefix + internal_id

        def write(txn: Any) -> None:
            # The document and its by_creation_time entry, consistently: only the value
            # itself is wrong.
            document = decode(txn.get(key, db=storage.documents))
            index = table.indexes["by_creation_time"]
            plan = db.key_plan(table)
            (old,) = plan.index_keys(index, document, internal_id)
            document["_creationTime"] = creation_time
            (new,) = plan.index_keys(index, document, internal_id)
            txn.put(key, encode(document), db=storage.documents)
            txn.delete(old, db=storage.indexes)
            txn.put(new, b"", db=storage.indexes)

        storage.write(write)
        with pytest.raises(CorruptionError) as caught:
            engine.check()
        assert caught.value.problems == [
            f"document {doc_id} in 't' has _creationTime {creation_time!r}: a creation "
            "time is a finite, non-negative float (milliseconds since the Unix epoch)"
        ]


def _nested(levels: int) -> Any:
    value: Any = 1.0
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # Past a value limit: check() raised LimitExceeded, hiding every other problem.
        ("a", [1.0] * 8193, "Array length is too long (8193 > maximum length 8192)"),
        ("a", _nested(70), "Document is too nested (nested 71 levels deep > maximum nesting 16)"),
        # Past a document rule only: check() found nothing wrong.
        ("a", _nested(16), "Document is too nested (nested 17 levels deep > maximum nesting 16)"),
        ("_x", 1.0, "Field '_x' starts with an underscore"),
        ("a", "x" * (1 << 20), "Value is too large"),
    ],
    ids=["long array", "value nesting", "document nesting", "underscore field", "over 1 MiB"],
)
def test_a_document_that_breaks_a_value_or_document_rule_is_damage(
    db_path: Path, field: str, value: Any, message: str
) -> None:
    """No write stores such a document (each write runs ``convert_document``): one found
    is damage, reported as such beside any other problem."""
    with Engine.open(db_path, durability="none") as engine:
        doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1.0}))
        engine.check()
        storage = engine._db.storage
        table = engine._db.catalog_cache[1].tables["t"]
        key = table.prefix + ids.decode_id(doc_id)[1]

        def write(txn: Any) -> None:  # no index covers the field: only the document changes
            document = decode(txn.get(key, db=storage.documents))
            document[field] = value
            txn.put(key, encode(document), db=storage.documents)
            txn.put(b"secret", b"", db=storage.meta)  # and a second, unrelated problem

        storage.write(write)
        with pytest.raises(CorruptionError) as caught:
            engine.check()
    problems = caught.value.problems
    assert len(problems) == 2
    assert "meta/secret is 0 bytes, not 32" in problems
    (found,) = (p for p in problems if p.startswith(f"document {doc_id} in 't' is invalid: "))
    assert message in found


# -- 8: the error says what to do -------------------------------------------------------


def test_the_error_lists_every_problem_and_says_how_to_repair(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine.check()
        storage = engine._db.storage
        storage.write(lambda txn: txn.put(b"secret", b"", db=storage.meta))
        with pytest.raises(CorruptionError) as caught:
            engine.check()
    message = str(caught.value)
    assert message.startswith(
        f"Engine.check() found 1 broken invariant(s) in {str(db_path)!r}:\n"
        "- meta/secret is 0 bytes, not 32\n"
    )
    assert message.endswith(
        "Restore the folder from a backup made with Engine.backup (run Engine.check() on the "
        "copy first); Engine.check() lists every problem it finds, so run it again after a "
        "repair to see what is left."
    )


def test_more_problems_than_listed_are_counted(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"n": float(i)}) for i in range(60)])
        engine.check()
        storage = engine._db.storage
        table = engine._db.catalog_cache[1].tables["t"]

        def garble(txn: Any) -> None:
            cursor = txn.cursor(db=storage.documents)
            assert cursor.set_range(table.prefix)
            for key in list(cursor.iternext(keys=True, values=False))[:60]:
                txn.put(bytes(key), b"\xc1", db=storage.documents)
            cursor.close()

        storage.write(garble)
        with pytest.raises(CorruptionError) as caught:
            engine.check()
    assert len(caught.value.problems) == 50
    assert str(caught.value).startswith("Engine.check() found 120 broken invariant(s)")
    assert "(the first 50 listed)" in str(caught.value)


# -- the jobs and crons passes now run beside the data pass: damage both meet -----------


@pytest.mark.parametrize("table", ["_scheduled_functions", "_cron_jobs"])
@pytest.mark.parametrize("damage", ["bytes that do not decode", "no _id", "not an object"])
def test_a_job_or_cron_that_does_not_decode_is_reported_once_as_corruption(
    scheduled: Engine, table: str, damage: str
) -> None:
    scheduled.mutation(jobs.later, {"text": "a", "delay": 60.0})
    scheduled.check()
    storage = scheduled._db.storage
    prefix = scheduled._db.catalog_cache[1].tables[table].prefix

    def write(txn: Any) -> None:
        cursor = txn.cursor(db=storage.documents)
        assert cursor.set_range(prefix)
        key = bytes(cursor.key())
        cursor.close()
        document = decode(txn.get(key, db=storage.documents))
        del document["_id"]
        value = {"bytes that do not decode": b"\xc1", "no _id": encode(document)}.get(
            damage, encode([1.0])
        )
        txn.put(key, value, db=storage.documents)

    storage.write(write)
    with pytest.raises(CorruptionError, match="does not decode") as caught:
        scheduled.check()
    assert len(caught.value.problems) == len(set(caught.value.problems))
