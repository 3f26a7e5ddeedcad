"""Schema changes on ``Engine.open``: create tables, backfill and drop indexes, check data.

:func:`apply_schema` compares the schema given to ``Engine.open`` with the
catalog and:

1. with schema validation on, checks every existing document of every schema
   table against its new validator *first*, in one snapshot; any mismatch
   refuses to open (:class:`SchemaValidationError` naming the first offending
   documents) and changes nothing;
2. in one LMDB write txn: checks the documents committed since that snapshot
   (found through the log; against the new validators: index keys have no size
   limit), creates missing tables, registers new indexes in
   state ``backfilling`` (writers maintain them from this commit on), removes
   dropped indexes and their entries (also every declared index of a table the
   schema no longer names, as Convex does), and stores the schema with a new catalog
   version and its timestamp (``schema_ts``). Every write is checked against
   the schema stored in its transaction's snapshot, and the committer refuses
   (as a conflict: the mutation re-runs) a write whose snapshot predates
   ``schema_ts``; so no document that breaks the new schema can commit, from
   this process or another, before or after the change;
3. backfills each new index in batches of write txns (each batch reads the
   documents as they are at that moment, so concurrent writers and the
   backfill agree), then marks it ``ready`` (queryable).

A crash during a backfill leaves the index ``backfilling``: the next open,
with or without a schema, finds it and finishes the backfill (re-putting a key
is harmless; :func:`finish_backfills`). A crash
before step 2 commits changes nothing.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from . import longkeys, searchkeys, vectors
from .catalog import (
    BY_CREATION_TIME,
    BY_ID,
    NEXT_TABLE_KEY,
    SCHEMA_KEY,
    SEARCH,
    VECTOR,
    Catalog,
    IndexDef,
    TableDef,
    catalog_key,
    encode_catalog,
    load_catalog,
)
from .commit import read_log
from .encoding import decode, decode_document, encode, encode_sorted
from .errors import SchemaValidationError, ValidationError
from .schema import schema_from_json

if TYPE_CHECKING:
    from .database import Database
    from .schema import SchemaDefinition, TableDefinition

__all__ = ["apply_schema", "declared_indexes", "retokenize", "same_index"]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BATCH = 5_000
_MAX_REPORTED = 5
_PROGRESS_THRESHOLD = 20_000


def _store_catalog(
    wtxn: Any, db: Database, catalog: Catalog, previous: Catalog, *, schema: bool = False
) -> int:
    """Store ``catalog`` (replacing ``previous``) as a commit of its own.

    A schema change is logged like a transaction, under a new timestamp, so
    that everything that follows the log sees it: the entry holds
    ``NEXT_TABLE_KEY``, which every table-creating transaction read (one that
    raced this change conflicts and re-runs on the new catalog, instead of
    committing table numbers this change gave to other tables), and the catalog
    key of each table created here (a query or subscription that found the
    table missing re-runs), and ``SCHEMA_KEY`` when the schema changes with it.
    Returns the commit's timestamp.
    """
    storage = db.storage
    wtxn.put(b"catalog", encode_catalog(catalog), db=storage.meta)
    latest, _ = storage.head(wtxn)
    ts = max(time.time_ns(), latest + 1)
    created = sorted(catalog.tables.keys() - previous.tables.keys())
    logged = [NEXT_TABLE_KEY, *(catalog_key(name) for name in created)]
    if schema:
        logged.append(SCHEMA_KEY)
    wtxn.put(_U64.pack(ts), encode(logged), db=storage.log)
    storage.put_head(wtxn, ts, catalog.version)
    return ts


def _resolver(catalog: Catalog) -> Any:
    names = {t.number: t.name for t in catalog.tables.values()}
    return names.get


def _documents(txn: Any, db: Database, table: TableDef) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``(internal id, document)`` of every document of ``table`` in ``txn``."""
    cursor = txn.cursor(db.storage.documents)
    try:
        if cursor.set_range(table.prefix):
            for key, value in cursor.iternext():
                if bytes(key[:4]) != table.prefix:
                    return
                yield bytes(key[4:]), decode_document(value)
    finally:
        cursor.close()


def _check_existing(db: Database, schema: SchemaDefinition, catalog: Catalog, txn: Any) -> None:
    """Every document of every schema table in ``txn`` must match its validator."""
    failures: list[str] = []
    resolver = _resolver(catalog)
    for name in schema.tables:
        table = catalog.tables.get(name)
        if table is None:
            continue
        for _, document in _documents(txn, db, table):
            _check_one(schema, name, document, resolver, failures)
            if len(failures) >= _MAX_REPORTED:
                break
        if len(failures) >= _MAX_REPORTED:
            break
    _refuse(failures)


def _documents_by_id(
    txn: Any, db: Database, table: TableDef, internal_ids: list[bytes]
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``(internal id, document)`` of each of ``internal_ids`` still in ``table``."""
    for internal_id in internal_ids:
        value = txn.get(table.prefix + internal_id, None, db.storage.documents)
        if value is not None:  # deleted since: nothing to check
            yield internal_id, decode_document(value)


def _written_since(
    db: Database, catalog: Catalog, wtxn: Any, after: int
) -> dict[str, list[bytes]] | None:
    """The documents committed after timestamp ``after``: internal ids by table name.

    The log names every document a commit wrote (its ``by_id`` key); ``None`` if
    the log no longer reaches back to ``after`` (pruned): then every document counts.
    """
    storage = db.storage
    if storage.meta_timestamp(wtxn, b"log_floor") > after:
        return None
    view = catalog.view()
    written: dict[str, set[bytes]] = {}
    for _, keys in read_log(wtxn, storage.log, after):
        for key in keys:
            owner = view.index_owner.get(_U32.unpack_from(key)[0]) if len(key) >= 4 else None
            if owner is not None and owner[1].name == BY_ID:
                written.setdefault(owner[0].name, set()).add(bytes(key[4:]))
    return {name: sorted(ids) for name, ids in written.items()}


def _check_written_since(
    db: Database,
    schema: SchemaDefinition,
    catalog: Catalog,
    wtxn: Any,
    written: dict[str, list[bytes]] | None,
) -> None:
    """:func:`_check_existing` for the documents committed since the first check
    (``written``, from :func:`_written_since`; ``None``: every document)."""
    if written is None:
        _check_existing(db, schema, catalog, wtxn)
        return
    failures: list[str] = []
    resolver = _resolver(catalog)
    for name in sorted(written.keys() & schema.tables.keys()):
        table = catalog.tables[name]
        for _, document in _documents_by_id(wtxn, db, table, written[name]):
            _check_one(schema, name, document, resolver, failures)
            if len(failures) >= _MAX_REPORTED:
                break
        if len(failures) >= _MAX_REPORTED:
            break
    _refuse(failures)


def _check_one(
    schema: SchemaDefinition,
    table: str,
    document: dict[str, Any],
    resolver: Any,
    failures: list[str],
) -> None:
    try:
        schema.check_document(table, document, resolver)
    except ValidationError as error:
        failures.append(
            f'Document with ID "{document["_id"]}" in table "{table}" does not '
            f"match the schema: {getattr(error, 'detail', None) or error}"
        )


def _refuse(failures: list[str]) -> None:
    if failures:
        raise SchemaValidationError(
            "Schema validation failed: existing documents do not match the new schema, so the "
            "database was opened with no changes. Fix the documents (or loosen the schema, or "
            "open with define_schema(..., schema_validation=False)). First offending "
            "documents:\n" + "\n".join(failures),
            table=None,
        )


def _same_schema(stored: bytes | None, schema_json: bytes) -> bool:
    """Whether the stored schema is ``schema_json`` (encoded), also when it was stored in
    an older spelling of the same validators (a ``v.record``'s values before they took
    Convex's ``{fieldType, optional}`` form), or declared its tables, fields or indexes
    in another order (maps compare with sorted keys; lists, such as an index's fields
    or a union's members, keep their order): neither must re-check every document.
    Cost: a bytes compare; a decode and re-encode of both when they differ."""
    if stored is None:
        return False
    if stored == schema_json:
        return True
    try:
        stored_form = encode_sorted(schema_from_json(decode(stored)).to_json())
    except Exception:  # a schema that does not decode differs: it is replaced
        return False
    return stored_form == encode_sorted(decode(schema_json))


def apply_schema(db: Database, schema: SchemaDefinition) -> None:
    """Bring the stored catalog in line with ``schema`` (see the module docstring)."""
    storage = db.storage
    schema_json = encode(schema.to_json())
    with storage.read() as rtxn:
        catalog = load_catalog(rtxn, storage.meta)
        checked_at = storage.head(rtxn)[0]
        new_schema = not _same_schema(rtxn.get(b"schema", None, storage.meta), schema_json)
        if schema.schema_validation and new_schema:
            _check_existing(db, schema, catalog, rtxn)

    def change(wtxn: Any) -> list[tuple[str, str]]:
        current = stored = load_catalog(wtxn, db.storage.meta)
        new_schema = not _same_schema(wtxn.get(b"schema", None, storage.meta), schema_json)
        if storage.head(wtxn)[0] > checked_at:
            # Commits since the checks' snapshot: checked against the old schema, and
            # written by handles that did not maintain the indexes this change adds.
            written = _written_since(db, stored, wtxn, checked_at)
            if schema.schema_validation and new_schema:
                _check_written_since(db, schema, stored, wtxn, written)
        changed = new_schema  # a new schema is a new catalog version (it names the schema)
        for name, definition in schema.tables.items():
            # One that changed kind, fields or dimensions is dropped and backfilled again
            # under a new number.
            wanted = declared_indexes(definition)
            table = current.tables.get(name)
            if table is None:
                current = current.with_table(name)
                table = current.tables[name]
                changed = True
            indexes: dict[str, IndexDef] = {}
            next_number = current.next_index
            for index_name, index in table.indexes.items():
                if index_name in (BY_ID, BY_CREATION_TIME) or same_index(
                    wanted.get(index_name), index
                ):
                    indexes[index_name] = index
                else:
                    _drop_entries(wtxn, db, index)
                    changed = True
            for index_name, (kind, fields, dimensions) in wanted.items():
                if index_name not in indexes:
                    indexes[index_name] = IndexDef(
                        index_name, next_number, fields, "backfilling", kind, dimensions
                    )
                    next_number += 1
                    changed = True
            if changed:
                current = current.with_indexes(name, indexes)
        for table in list(current.tables.values()):
            # As Convex: an index the schema does not declare is dropped, also one of a
            # table the schema no longer names (the table and its documents stay,
            # schemaless). System tables keep the indexes the engine gives them.
            if table.name in schema.tables or table.name.startswith("_"):
                continue
            kept = {n: ix for n, ix in table.indexes.items() if n in (BY_ID, BY_CREATION_TIME)}
            if len(kept) != len(table.indexes):
                for index_name, index in table.indexes.items():
                    if index_name not in kept:
                        _drop_entries(wtxn, db, index)
                current = current.with_indexes(table.name, kept)
                changed = True
        if changed:
            if current.version == stored.version:
                current = current.bumped()
            kinds = {ix.kind for t in current.tables.values() for ix in t.indexes.values()}
            if VECTOR in kinds:
                # Versions without vector indexes must not open it (see vectors.FORMAT).
                longkeys.mark_format(wtxn, storage.meta, vectors.FORMAT)
            if SEARCH in kinds:
                # Versions without search indexes, or with another tokenizer, must not
                # open it (see searchkeys.FORMAT).
                longkeys.mark_format(wtxn, storage.meta, searchkeys.FORMAT)
            ts = _store_catalog(wtxn, db, current, stored, schema=new_schema)
            if new_schema:
                wtxn.put(b"schema", schema_json, db=storage.meta)
                wtxn.put(b"schema_ts", _U64.pack(ts), db=storage.meta)
        return [
            (t.name, ix.name)
            for t in current.tables.values()
            for ix in t.indexes.values()
            if ix.state == "backfilling"
        ]

    pending = storage.write(change)
    for table_name, index_name in pending:
        _backfill(db, table_name, index_name)


#: A declared index: (kind, fields, dimensions). A search index's fields are its search
#: field, then its filter fields; a vector index's its vector field, then its filter
#: fields (dimensions are 0 for the other kinds).
Declared = tuple[str, tuple[str, ...], int]


def declared_indexes(definition: TableDefinition) -> dict[str, Declared]:
    """The indexes a schema's table declares, by name (``by_id`` and ``by_creation_time``
    are every table's and not declared). Cost: linear in the indexes."""
    wanted: dict[str, Declared] = {
        index: ("database", tuple(fields), 0) for index, fields in definition.indexes.items()
    }
    for search_name, (field, filters) in definition.search_indexes.items():
        wanted[search_name] = (SEARCH, (field, *filters), 0)
    for vector_name, (field, dimensions, filters) in definition.vector_indexes.items():
        wanted[vector_name] = (VECTOR, (field, *filters), dimensions)
    return wanted


def same_index(wanted: Declared | None, index: IndexDef) -> bool:
    """Whether the declaration ``wanted`` (kind, fields, dimensions) is ``index`` as
    stored. A vector index's filter fields are a set, as Convex keeps them: declaring them
    in another order keeps the index (and its stored order, which numbers its entries)."""
    if wanted is None:
        return False
    kind, fields, dimensions = wanted
    if kind != index.kind or dimensions != index.dimensions:
        return False
    if kind == VECTOR:
        return fields[:1] == index.fields[:1] and set(fields[1:]) == set(index.fields[1:])
    return fields == index.fields


def _drop_entries(wtxn: Any, db: Database, index: IndexDef) -> None:
    cursor = wtxn.cursor(db=db.storage.indexes)
    prefix = index.prefix
    if cursor.set_range(prefix):
        while bytes(cursor.key()[:4]) == prefix:
            if not cursor.delete():
                break
    cursor.close()
    longkeys.forget_index(wtxn, db.storage.meta, index.number)


def _backfill(db: Database, table_name: str, index_name: str) -> None:
    """Write the entries of a ``backfilling`` index, batch by batch, then mark it ready."""
    storage = db.storage
    after: bytes | None = None
    done = 0
    started = time.monotonic()
    total = _count_documents(db, table_name)
    show = total >= _PROGRESS_THRESHOLD and sys.stderr.isatty()
    number: list[int] = []  # the index's number when this backfill started

    def batch(wtxn: Any) -> tuple[bytes | None, int]:
        catalog = load_catalog(wtxn, db.storage.meta)
        table = catalog.tables.get(table_name)
        index = None if table is None else table.indexes.get(index_name)
        if (
            table is None
            or index is None
            or index.state != "backfilling"
            or (number and index.number != number[0])
        ):
            # Dropped, finished by another handle or process, or redefined since (its
            # new definition has a backfill of its own, from the first document).
            return None, 0
        if not number:
            number.append(index.number)
        plan = db.key_plan(table)
        cursor = wtxn.cursor(db=storage.documents)
        start = table.prefix if after is None else after + b"\x00"
        last, count = None, 0
        if cursor.set_range(start):
            for key, value in cursor.iternext(keys=True, values=True):
                key = bytes(key)
                if key[:4] != table.prefix or count >= _BATCH:
                    break
                document = decode_document(value)
                if index.is_vector:  # entries with values, derived as the commits do
                    vectors.update(wtxn, storage.indexes, index, document, key[4:])
                    last, count = key, count + 1
                    continue
                # One key, or for a search index one per distinct token (maybe none).
                for index_key in plan.index_keys(index, document, key[4:]):
                    if len(index_key) < longkeys.SPLIT:
                        wtxn.put(index_key, b"", db=storage.indexes)
                    else:
                        longkeys.apply(wtxn, storage.indexes, storage.meta, {index_key: b""})
                last, count = key, count + 1
        cursor.close()
        if last is None:
            indexes = dict(table.indexes)
            indexes[index_name] = msgspec.structs.replace(index, state="ready")
            _store_catalog(wtxn, db, catalog.with_indexes(table_name, indexes), catalog)
        return last, count

    while True:
        after, count = storage.write(batch)
        done += count
        if show:
            elapsed = time.monotonic() - started
            sys.stderr.write(
                f"\rbackfilling {table_name}.{index_name}: {done}/{total} "
                f"documents ({elapsed:.1f}s)"
            )
            sys.stderr.flush()
        if after is None:
            break
    if show:
        sys.stderr.write("\n")


def finish_backfills(db: Database) -> None:
    """Finish every index left ``backfilling`` (a crash, or another process's open).

    Called by an ``Engine.open`` without a schema; one with a schema does this in
    :func:`apply_schema`. Cost: one read of the catalog; then the backfills, which
    may run beside another process's backfill of the same index (both write the
    same keys; the first to reach the end marks it ready).
    """
    with db.storage.read() as rtxn:
        catalog = db.catalog_at(rtxn)
        pending = [
            (table.name, index.name)
            for table in catalog.tables.values()
            for index in table.indexes.values()
            if index.state == "backfilling"
        ]
    for table_name, index_name in pending:
        _backfill(db, table_name, index_name)


def retokenize(db: Database) -> None:
    """Rebuild the search indexes of a folder of format 5 or 6, whose entries an earlier
    version made with Python's ``str.isalnum`` as its tokenizer's "alphanumeric": text in
    scripts with ``Other_Alphabetic`` marks (Indic vowel signs, Arabic harakat, Hebrew
    points) split where Convex's does not (see :mod:`engine.tokenizer`).

    In one write txn: each search index's entries are dropped and it is ``backfilling``
    again (under its number: a search meanwhile raises Convex's backfilling error), and
    the folder is marked :data:`engine.searchkeys.FORMAT` (7), which earlier versions
    refuse to open (they would write entries of their tokenizer). :func:`apply_schema` or
    :func:`finish_backfills` then backfills them, as any index; a crash before that txn
    commits changes nothing, one after it leaves them ``backfilling`` for the next open.
    Called by every ``Engine.open``. Cost: one read of ``meta/format`` (and of the catalog
    in a 5 or 6 folder); a rebuild once.
    """
    storage = db.storage

    def change(wtxn: Any) -> None:
        stored = wtxn.get(b"format", None, storage.meta)
        if stored is None or bytes(stored) not in (b"5", b"6"):
            return  # none (format 2, 4), or made by this tokenizer (7)
        catalog = current = load_catalog(wtxn, storage.meta)
        for table in catalog.tables.values():
            if not any(ix.is_search for ix in table.indexes.values()):
                continue
            indexes = dict(table.indexes)
            for name, index in table.indexes.items():
                if index.is_search:
                    _drop_entries(wtxn, db, index)
                    indexes[name] = msgspec.structs.replace(index, state="backfilling")
            current = current.with_indexes(table.name, indexes)
        if current is not catalog:
            longkeys.mark_format(wtxn, storage.meta, searchkeys.FORMAT)
            _store_catalog(wtxn, db, current, catalog)

    with storage.read() as rtxn:  # the common case, without the write lock
        stored = rtxn.get(b"format", None, storage.meta)
        if stored is None or bytes(stored) not in (b"5", b"6"):
            return
        tables = load_catalog(rtxn, storage.meta).tables.values()
        if not any(ix.is_search for table in tables for ix in table.indexes.values()):
            return  # a 5 whose search indexes were dropped: nothing to rebuild
    storage.write(change)


def _count_documents(db: Database, table_name: str) -> int:
    storage = db.storage
    with storage.read() as rtxn:
        table = db.catalog_at(rtxn).tables.get(table_name)
        if table is None:
            return 0
        count = 0
        cursor = rtxn.cursor(db=storage.documents)
        if cursor.set_range(table.prefix):
            for key in cursor.iternext(keys=True, values=False):
                if bytes(key[:4]) != table.prefix:
                    break
                count += 1
        cursor.close()
        return count
