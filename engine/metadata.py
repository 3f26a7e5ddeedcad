"""``Engine.check()``'s checks of the metadata: ``meta``'s records and the catalog.

Invariants 8 and 9 of :mod:`engine.integrity` (which runs them in its snapshot): the
catalog, read afresh, against the head, itself and the stored schema's declared
indexes; the main database and ``meta`` (format, head, schema, schema_ts, secret).
Each function reports through ``problem`` (one line per broken invariant). Cost: linear
in the catalog's tables and indexes; a few point reads of ``meta``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import vectors
from .catalog import (
    BY_CREATION_TIME,
    BY_ID,
    FIRST_SYSTEM_TABLE_NUMBER,
    SEARCH,
    VECTOR,
    Catalog,
    load_catalog,
)
from .database import SECRET_BYTES
from .encoding import decode
from .errors import CorruptionError
from .ids import FIRST_USER_TABLE_NUMBER
from .migration import Declared, declared_indexes, same_index
from .schema import schema_from_json
from .storage import HEAD, HEAD_KEY, READABLE_FORMATS, SUB_DATABASES

if TYPE_CHECKING:
    from .schema import SchemaDefinition

__all__ = ["check_catalog", "check_declared", "check_meta", "problem_of"]

_U64 = struct.Struct(">Q")


def problem_of(error: CorruptionError) -> str:
    """The damage a :class:`CorruptionError` from a read names, as one report line."""
    return error.problems[0] if error.problems else str(error)


def check_meta(rtxn: Any, storage: Any, problem: Any) -> bool:
    """Invariant 9: the environment's main database names only the sub-databases, and
    ``meta`` holds this format version, a head that decodes, and a stored schema (with
    its timestamp, not after the head's) that decodes. False if the head does not
    decode (then nothing else can be checked)."""
    cursor = rtxn.cursor()
    try:
        for raw_key in cursor.iternext(True, False):
            if bytes(raw_key) not in SUB_DATABASES:
                problem(f"the main database has key {bytes(raw_key)!r:.60}, not a sub-database")
    finally:
        cursor.close()
    raw = rtxn.get(b"format", None, storage.meta)
    if raw is None or bytes(raw).decode("ascii", "replace") not in READABLE_FORMATS:
        found = "missing" if raw is None else repr(bytes(raw)[:20])
        problem(f"meta/format is {found}, not one of {', '.join(READABLE_FORMATS)}")
    raw = rtxn.get(HEAD_KEY, None, storage.meta)
    if raw is not None and len(raw) != HEAD.size:
        problem(f"meta/head {bytes(raw)[:40].hex()} is not {HEAD.size} bytes")
        return False
    latest = storage.head(rtxn)[0]
    raw = rtxn.get(b"schema_ts", None, storage.meta)
    if raw is not None and len(raw) != 8:
        problem(f"meta/schema_ts {bytes(raw)[:40].hex()} is not 8 bytes")
    elif raw is not None and _U64.unpack(raw)[0] > latest:
        # Every write's snapshot would predate the schema change: all would conflict.
        problem(f"meta/schema_ts {_U64.unpack(raw)[0]} is newer than latest_ts {latest}")
    raw = rtxn.get(b"secret", None, storage.meta)
    if raw is not None and len(raw) != SECRET_BYTES:
        # The HMAC key of pagination cursors and file URLs: made once, of this length; a
        # short one makes them easier to forge.
        problem(f"meta/secret is {len(raw)} bytes, not {SECRET_BYTES}")
    raw = rtxn.get(b"schema", None, storage.meta)
    if raw is not None:
        try:
            schema_from_json(decode(raw))
        except Exception as error:
            problem(f"the stored schema (meta/schema) does not decode: {error}")
    return True


def check_catalog(rtxn: Any, storage: Any, cached: Catalog, problem: Any) -> None:
    """Invariant 8: the stored catalog, decoded afresh, against the head and itself."""
    try:
        stored = load_catalog(rtxn, storage.meta)
    except CorruptionError as error:
        problem(problem_of(error))
        return
    version = storage.head(rtxn)[1]
    if stored.version != version:
        problem(f"the stored catalog has version {stored.version}, the head names {version}")
    elif stored != cached:
        problem(
            f"the stored catalog differs from the one this process read for version "
            f"{version} (it was rewritten without a new version)"
        )
    tables_by_number: dict[int, str] = {}
    indexes_by_number: dict[int, str] = {}
    for name, table in stored.tables.items():
        where = f"catalog table {name!r}"
        if table.name != name:
            problem(f"{where} is stored as table {table.name!r}")
        system = name.startswith("_")
        low, high, kind = (
            (FIRST_SYSTEM_TABLE_NUMBER, stored.next_system_table, "system")
            if system
            else (FIRST_USER_TABLE_NUMBER, stored.next_user_table, "user")
        )
        if system and high > FIRST_USER_TABLE_NUMBER:
            high = FIRST_USER_TABLE_NUMBER
        _check_number(
            problem,
            where,
            table.number,
            (low, high),
            f"the {kind} tables' range",
            tables_by_number,
            f"table {name!r}",
        )
        for required in (BY_ID, BY_CREATION_TIME):
            if required not in table.indexes:
                problem(f"{where} has no {required} index")
            elif table.indexes[required].fields:
                # Keys never hold them: a range on them would read wrong rows.
                problem(f"{where} has {required} on fields {table.indexes[required].fields}")
        for index_name, index in table.indexes.items():
            label = f"{name}.{index_name}"
            if index.name != index_name:
                problem(f"catalog index {label} is stored as index {index.name!r}")
            if index.state not in ("ready", "backfilling"):
                # Neither queryable nor finished by an open: its entries go unchecked.
                problem(f"catalog index {label} has state {index.state!r}")
            if index.kind not in ("database", SEARCH, VECTOR):
                # Read as a database index: its keys would not be the ones it holds.
                problem(f"catalog index {label} has kind {index.kind!r}")
            elif index.is_search and not index.fields:
                problem(f"catalog search index {label} has no search field")
            elif index.is_vector and (
                not index.fields
                or not vectors.MIN_DIMENSIONS <= index.dimensions <= vectors.MAX_DIMENSIONS
            ):
                problem(
                    f"catalog vector index {label} has fields {index.fields} and dimensions "
                    f"{index.dimensions}: it needs a vector field and 2 to 4096 dimensions"
                )
            _check_number(
                problem,
                f"catalog index {label}",
                index.number,
                (1, stored.next_index),
                "",
                indexes_by_number,
                f"index {label}",
            )


def check_declared(
    catalog: Catalog, schema: SchemaDefinition | None, problem: Callable[[str], None]
) -> None:
    """Invariant 8, against the stored schema: every table it declares is in the catalog
    with exactly the indexes it declares (same kind, fields and dimensions), and no user
    table has another index, except one still backfilling. ``apply_schema`` stores both
    in one LMDB txn; without a declared index, queries on it raise IndexNotFound and
    writers skip its entries; an undeclared one is kept up by every write for nothing.
    System tables keep the indexes the engine gives them. Cost: linear in the indexes."""
    declared_tables = {} if schema is None else schema.tables
    declared = {name: declared_indexes(d) for name, d in declared_tables.items()}
    for name, wanted_indexes in declared.items():
        table = catalog.tables.get(name)
        if table is None:
            problem(f"the stored schema declares table {name!r}, the catalog has no such table")
            continue
        for index_name, wanted in wanted_indexes.items():
            index = table.indexes.get(index_name)
            if index is None:
                problem(
                    f"the stored schema declares index {name}.{index_name}, the catalog has "
                    "no such index"
                )
            elif not same_index(wanted, index):
                stored = (index.kind, index.fields, index.dimensions)
                problem(
                    f"catalog index {name}.{index_name} is {_described(stored)}, the stored "
                    f"schema declares {_described(wanted)}"
                )
    for table in catalog.tables.values():
        if table.name.startswith("_"):
            continue
        wanted_names = declared.get(table.name, {})
        for index_name, index in table.indexes.items():
            if (
                index_name not in (BY_ID, BY_CREATION_TIME)
                and index_name not in wanted_names
                and index.state != "backfilling"
            ):
                problem(
                    f"catalog index {table.name}.{index_name} is not declared by the stored schema"
                )


def _described(index: Declared) -> str:
    kind, fields, dimensions = index
    return f"{kind} index on {fields}" + (f" of {dimensions} dimensions" if dimensions else "")


def _check_number(
    problem: Any,
    where: str,
    number: int,
    bounds: tuple[int, int],
    range_name: str,
    taken: dict[int, str],
    owner: str,
) -> None:
    """``number`` (of ``owner``, described as ``where``) lies in ``bounds`` (the upper
    one the next free number) and no other owner in ``taken`` has it."""
    low, high = bounds
    if not low <= number < high:
        problem(
            f"{where} has number {number}, outside {range_name + ' ' if range_name else ''}"
            f"[{low}, {high}) (the next free number is below it)"
        )
    other = taken.setdefault(number, owner)
    if other != owner:
        problem(f"{where} has number {number}, as {other}")
