"""The catalog: which tables and indexes exist, and the numbers they are stored under.

Stored in ``meta`` under ``catalog`` as msgpack, with a version number that
every change bumps, so each process keeps the decoded catalog cached and
re-reads it only when the version moved (one small ``get`` per transaction).

Numbers:

- table numbers: user tables from 10001 (ids are then 32 characters, as in
  Convex); system tables (``_storage``, ``_scheduled_functions``) from 1;
- index numbers: from 1; index number 0 is the catalog's own key space in
  read sets and the log (``0 ‖ "t:" ‖ table name``), so a transaction that
  saw a table missing conflicts with the commit that creates it.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from .encoding import encode, typed_decoder
from .errors import CorruptionError
from .ids import FIRST_USER_TABLE_NUMBER

__all__ = [
    "BY_CREATION_TIME",
    "BY_ID",
    "CATALOG_INDEX",
    "SEARCH",
    "VECTOR",
    "Catalog",
    "CatalogView",
    "IndexDef",
    "TableDef",
    "catalog_key",
    "index_prefix",
]

BY_ID = "by_id"
BY_CREATION_TIME = "by_creation_time"
#: ``IndexDef.kind`` of a full-text search index (the others are ``"database"``).
SEARCH = "search"
#: ``IndexDef.kind`` of a vector index (:mod:`engine.vectors`).
VECTOR = "vector"
#: The index number reserved for catalog entries in read sets and the log.
CATALOG_INDEX = 0
_U32 = struct.Struct(">I")
FIRST_SYSTEM_TABLE_NUMBER = 1


def index_prefix(number: int) -> bytes:
    """The 4-byte big-endian prefix of every key of index ``number``."""
    return _U32.pack(number)


def catalog_key(name: str) -> bytes:
    """The read-set/log key standing for "table ``name`` exists or not"."""
    return _U32.pack(CATALOG_INDEX) + b"t:" + name.encode()


#: Read by every transaction that creates a table, written by every commit that
#: does: two transactions cannot both take the same next table number.
NEXT_TABLE_KEY = _U32.pack(CATALOG_INDEX) + b"n:next_table"

#: Stands for "the schema": named by the conflict of a write that was checked
#: against a schema another commit has since replaced.
SCHEMA_KEY = _U32.pack(CATALOG_INDEX) + b"s:schema"


class IndexDef(msgspec.Struct, frozen=True):
    """An index: its name, number, and the declared fields (dotted paths).

    ``fields`` excludes the ``_creationTime`` and id that every key ends with.
    ``state`` is ``"ready"`` or ``"backfilling"`` (not yet queryable). ``kind`` is
    ``"database"`` (one key per document, ordered by ``fields``) or ``"search"`` (a
    full-text search index: ``fields`` is the search field, then the filter fields;
    one key per distinct token, see :mod:`engine.searchkeys`) or ``"vector"`` (a vector
    index: ``fields`` is the vector field, then the filter fields; ``dimensions`` its
    vectors' length, see :mod:`engine.vectors`). Catalogs stored before search indexes
    existed have no ``kind``: their indexes decode as ``"database"``.
    """

    name: str
    number: int
    fields: tuple[str, ...]
    state: str = "ready"
    kind: str = "database"
    dimensions: int = 0

    @property
    def prefix(self) -> bytes:
        return _U32.pack(self.number)

    @property
    def is_search(self) -> bool:
        """True for a full-text search index (``kind == "search"``)."""
        return self.kind == SEARCH

    @property
    def is_vector(self) -> bool:
        """True for a vector index (``kind == "vector"``)."""
        return self.kind == VECTOR

    @property
    def search_field(self) -> str:
        """A search index's search field (its first field)."""
        return self.fields[0]

    @property
    def filter_fields(self) -> tuple[str, ...]:
        """A search or vector index's filter fields, in declared order (its fields after
        the first)."""
        return self.fields[1:]


class TableDef(msgspec.Struct, frozen=True):
    """A table: its name, number and indexes (``by_id`` and ``by_creation_time`` included)."""

    name: str
    number: int
    indexes: dict[str, IndexDef]

    @property
    def prefix(self) -> bytes:
        """The 4-byte prefix of this table's keys in ``documents``."""
        return _U32.pack(self.number)

    @property
    def by_id(self) -> IndexDef:
        return self.indexes[BY_ID]

    @property
    def by_creation_time(self) -> IndexDef:
        return self.indexes[BY_CREATION_TIME]

    def secondary(self) -> list[IndexDef]:
        """Indexes with stored entries: every index but ``by_id``."""
        return [ix for name, ix in self.indexes.items() if name != BY_ID]


class Catalog(msgspec.Struct, frozen=True):
    """Every table and index, by name, plus the next free numbers."""

    version: int = 0
    tables: dict[str, TableDef] = {}
    next_user_table: int = FIRST_USER_TABLE_NUMBER
    next_system_table: int = FIRST_SYSTEM_TABLE_NUMBER
    next_index: int = 1

    def bumped(self) -> Catalog:
        """The same catalog under the next version (a schema change names a new version)."""
        return Catalog(
            self.version + 1,
            self.tables,
            self.next_user_table,
            self.next_system_table,
            self.next_index,
        )

    def view(self) -> CatalogView:
        """The lookups transactions need, precomputed once per catalog version."""
        return CatalogView(self)

    def with_table(
        self, name: str, *, system: bool = False, indexes: dict[str, tuple[str, ...]] | None = None
    ) -> Catalog:
        """A new catalog with table ``name`` added (with ``by_id``, ``by_creation_time``)."""
        next_index = self.next_index
        defs: dict[str, IndexDef] = {}
        for index_name, fields in [(BY_ID, ()), (BY_CREATION_TIME, ()), *(indexes or {}).items()]:
            defs[index_name] = IndexDef(index_name, next_index, tuple(fields))
            next_index += 1
        if system:
            number, next_user, next_system = (
                self.next_system_table,
                self.next_user_table,
                self.next_system_table + 1,
            )
        else:
            number, next_user, next_system = (
                self.next_user_table,
                self.next_user_table + 1,
                self.next_system_table,
            )
        tables = dict(self.tables)
        tables[name] = TableDef(name, number, defs)
        return Catalog(self.version + 1, tables, next_user, next_system, next_index)

    def with_indexes(self, table: str, indexes: dict[str, IndexDef]) -> Catalog:
        """A new catalog where ``table``'s indexes are exactly ``indexes``."""
        old = self.tables[table]
        tables = dict(self.tables)
        tables[table] = TableDef(old.name, old.number, indexes)
        highest = max([self.next_index - 1, *(ix.number for ix in indexes.values())])
        return Catalog(
            self.version + 1, tables, self.next_user_table, self.next_system_table, highest + 1
        )


class CatalogView:
    """A catalog with its lookup tables: by table number and by index number.

    Built once per catalog version and shared by every transaction that sees
    that version. Cost: linear in the number of indexes, once.
    """

    __slots__ = (
        "by_id_prefix",
        "catalog",
        "index_owner",
        "schema",
        "schema_ts",
        "table_by_number",
        "tables",
        "vector_tables",
    )

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.tables = catalog.tables
        self.table_by_number: dict[int, TableDef] = {t.number: t for t in catalog.tables.values()}
        #: Table number → (table, prefix of its ``by_id`` keys): what a point read needs.
        #: A table a damaged catalog left without ``by_id`` is left out (its documents
        #: are then not found), so that the folder opens and ``Engine.check()`` names it.
        self.by_id_prefix: dict[int, tuple[TableDef, bytes]] = {
            t.number: (t, t.indexes[BY_ID].prefix)
            for t in catalog.tables.values()
            if BY_ID in t.indexes
        }
        self.index_owner: dict[int, tuple[TableDef, IndexDef]] = {
            ix.number: (t, ix) for t in catalog.tables.values() for ix in t.indexes.values()
        }
        #: Table prefix → the table's vector indexes, for the tables that have some: the
        #: commit leader updates their entries (:func:`engine.vectors.apply`).
        self.vector_tables: dict[bytes, tuple[IndexDef, ...]] = {}
        for t in catalog.tables.values():
            vector = tuple(ix for ix in t.indexes.values() if ix.is_vector)
            if vector:
                self.vector_tables[t.prefix] = vector
        #: The schema stored with this catalog version (a ``SchemaDefinition``), or None:
        #: every write is checked against the schema of its transaction's snapshot.
        self.schema: Any = None
        #: The commit timestamp of the last schema change (0: none): writes from older
        #: snapshots were checked against a replaced schema and must re-run.
        self.schema_ts = 0


_catalog_decoder = typed_decoder(Catalog)


def encode_catalog(catalog: Catalog) -> bytes:
    """The stored form of ``catalog`` (msgpack)."""
    return encode(catalog)


def load_catalog(txn: Any, meta: Any) -> Catalog:
    """The catalog stored in ``meta`` as of LMDB txn ``txn`` (empty before the first
    table); :class:`CorruptionError` if it does not decode."""
    raw = txn.get(b"catalog", None, meta)
    return decode_catalog(raw) if raw is not None else Catalog()


def decode_catalog(data: Any) -> Catalog:
    """Decode a stored catalog; :class:`CorruptionError` if it does not decode."""
    try:
        return _catalog_decoder(data)
    except msgspec.MsgspecError as error:
        problem = f"the stored catalog (meta/catalog) does not decode: {error}"
        raise CorruptionError.damaged(
            problem,
            "Every table's name and indexes are recorded there, so nothing can be read "
            "safely: restore the folder from a backup (Engine.backup, or `mdb_copy`).",
        ) from None
