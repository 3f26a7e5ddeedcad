"""Transactions: one snapshot, a read set, a write set, and Convex's document rules.

A :class:`Transaction` reads from one LMDB read txn (a consistent snapshot at
``snapshot_ts``), records what it read (:mod:`engine.readset`) and buffers
what it writes (:mod:`engine.writeset`). It never writes to LMDB itself:
:mod:`engine.commit` validates the read set against every commit since the
snapshot and applies the write set, or reports a conflict so the function
runs again.

This module implements the semantics of ``ctx.db``'s point operations
(``get``, ``insert``, ``patch``, ``replace``, ``delete``); the index scans
that queries are built on come from :class:`engine.scans.Scans`.
:mod:`engine.readers` wraps them in the reader and writer types that
functions see.
"""

from __future__ import annotations

import math
import os
import re
import struct
import time
from typing import TYPE_CHECKING, Any

from . import ids
from . import scans as _scans
from .catalog import NEXT_TABLE_KEY, Catalog, CatalogView, TableDef, catalog_key
from .encoding import DecodeError, decode_document, document_decoder, encode_document
from .errors import (
    DocumentNotFound,
    InvalidId,
    InvalidTable,
    LimitExceeded,
    ReadOnlyError,
    SystemTableError,
    ValidationError,
)
from .ids import FIRST_USER_TABLE_NUMBER
from .indexing import KeyPlan
from .readset import ReadSet
from .scans import MAX_BYTES_READ, MAX_DOCUMENTS_READ, Scans
from .storage import LMDB_ERRORS
from .values import UNSET, convert_document, values_equal
from .writeset import WriteSet

if TYPE_CHECKING:
    from .database import Database
    from .scheduler import Scheduler

__all__ = [
    "MAX_BYTES_READ",
    "MAX_BYTES_WRITTEN",
    "MAX_DOCUMENTS_READ",
    "MAX_DOCUMENTS_WRITTEN",
    "Transaction",
]

MAX_DOCUMENTS_WRITTEN = 16_000
MAX_BYTES_WRITTEN = 16 << 20
_SYSTEM_FIELDS = ("_id", "_creationTime")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_decode_document = document_decoder()  # decode_document without a Python frame
#: Decoded ids (a pure function's results, bounded): ids are read again and again.
_DECODED_IDS = ids.RECENT_IDS
_FIRST_USER_DOCUMENT_KEY = _scans.FIRST_USER_DOCUMENT_KEY


def check_table_name(name: object, *, system: bool = False) -> str:
    """Check a table name against Convex's rules; returns it.

    User tables are identifiers not starting with ``_``; system tables
    (``system=True``) must start with ``_``.
    """
    if type(name) is str and name in _CHECKED_NAMES:  # one set lookup for the usual names
        if system or name[0] != "_":
            return name
    elif not isinstance(name, str) or not _IDENTIFIER.match(name) or set(name) == {"_"}:
        raise InvalidTable(
            f"Invalid table name {name!r}: table names must be identifiers "
            "([A-Za-z_][A-Za-z0-9_]*, at most 64 characters, not all underscores).",
            table=name if isinstance(name, str) else None,
        )
    elif type(name) is str and len(_CHECKED_NAMES) < _MAX_CHECKED_NAMES:
        _CHECKED_NAMES.add(name)
    if name.startswith("_") and not system:
        raise ReadOnlyError(f"System tables (prefixed with `_`) are read-only. (table {name!r})")
    return name


#: Table names that are identifiers, remembered (a few, from the app's code) so that
#: checking one again is a set lookup, not a regex match; bounded for apps that make
#: names at run time.
_CHECKED_NAMES: set[str] = set()
_MAX_CHECKED_NAMES = 4096


class Transaction(Scans):
    """One function execution's view of the database.

    ``writable=False`` makes every write raise :class:`ReadOnlyError`; such a
    transaction never validates or commits. Close it with :meth:`close`
    (releases the LMDB reader slot).

    Example::

        txn = Transaction(db, writable=True)
        try:
            new_id = txn.insert("tasks", {"text": "hi"})
            txn.get(new_id)["text"]      # 'hi': a transaction reads its own writes
        finally:
            txn.close()
    """

    __slots__ = (
        "_next_creation_time",
        "_owns_rtxn",
        "_plans",
        "_rtxn",
        "_storage",
        "catalog",
        "db",
        "journal",
        "paginated",
        "reads",
        "scheduler",
        "snapshot_ts",
        "system_writes",
        "writable",
        "writes",
    )

    #: A mutation's ``ctx.scheduler``, set by it when made (unset until then: the
    #: scheduler counts the jobs and argument bytes ``limits`` bounds).
    scheduler: Scheduler

    def __init__(self, db: Database, writable: bool, rtxn: Any = None) -> None:
        self.db = db
        self.writable = writable
        storage = self._storage = db.storage
        #: A shared LMDB txn (subscriptions re-run many queries on one snapshot) is
        #: not ours to close.
        self._owns_rtxn = rtxn is None
        if rtxn is None:
            # Storage.begin_read's fast path, inline: enter the storage gate, then
            # mdb_txn_begin; anything unusual (a resize pending, an LMDB error) is
            # left to begin_read itself, after leaving the gate.
            gate = storage._gate
            gate.active.append(None)
            try:
                rtxn = None if gate.resizing else storage.env.begin()
            except LMDB_ERRORS:
                pass
            except BaseException:
                gate.leave()
                raise
            if rtxn is None:
                gate.leave()
                rtxn = storage.begin_read()
        self._rtxn: Any = rtxn
        try:
            head = storage.head_cache  # Storage.snapshot_head, inline for the common case
            ts, version = head[1] if head[0] == rtxn.id() else storage.snapshot_head(rtxn)
            self.snapshot_ts: int = ts
            cached = db.catalog_cache  # Database.catalog_view, inline for the common case
            self.catalog: CatalogView = (
                cached[1] if cached[0] == version else db.catalog_view(rtxn, version)
            )
        except BaseException:
            self.close()
            raise
        self.reads = ReadSet()
        # A read-only transaction never writes: it shares one empty write set.
        self.writes = WriteSet() if writable else _NO_WRITES
        self.documents_read = 0
        self.bytes_read = 0
        self.system_bytes_read = 0
        self.limits = None  # Convex's limits, until a nested call lowers them
        #: Key plans of the tables this transaction wrote (made by the first write).
        self._plans: dict[str, KeyPlan] | None = None
        #: True while engine-internal code (scheduler, storage) writes system tables.
        self.system_writes = False
        #: Set by the first .paginate() of this function run (Convex allows one).
        self.paginated = False
        #: A subscription's query journal: the end cursor its paginated query keeps.
        self.journal: dict[str, Any] | None = None
        self._next_creation_time = 0.0  # set by the first insert

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Release the snapshot. Idempotent."""
        rtxn, self._rtxn = self._rtxn, None
        if rtxn is not None and self._owns_rtxn:
            self._storage.end_read(rtxn)

    @property
    def closed(self) -> bool:
        return self._rtxn is None

    def _txn(self) -> Any:
        rtxn = self._rtxn
        if rtxn is None:
            raise ValidationError(
                "This transaction has finished: a query or document read outlived the "
                "function that started it. Finish reading inside the function."
            )
        return rtxn

    # -- catalog -----------------------------------------------------------

    @property
    def _catalog(self) -> Catalog:
        return self.writes.catalog or self.catalog.catalog

    def table(self, name: str) -> TableDef | None:
        """The table called ``name``, or None (recording that it was missing)."""
        pending = self.writes.catalog
        table = (pending.tables if pending is not None else self.catalog.tables).get(name)
        if table is None:
            self.reads.add_point(catalog_key(name))
        return table

    def table_by_number(self, number: int) -> TableDef | None:
        table = self.catalog.table_by_number.get(number)
        if table is None and self.writes.catalog is not None:
            for candidate in self.writes.catalog.tables.values():
                if candidate.number == number:
                    return candidate
        if table is None:
            self.reads.add_point(NEXT_TABLE_KEY)
        return table

    def _create_table(self, name: str, *, system: bool) -> TableDef:
        self._require_writable()
        self.reads.add_point(NEXT_TABLE_KEY)
        self.writes.catalog = self._catalog.with_table(name, system=system)
        return self.writes.catalog.tables[name]

    def plan(self, table: TableDef) -> KeyPlan:
        plans = self._plans
        if plans is None:
            plans = self._plans = {}
        plan = plans.get(table.name)
        if plan is None or plan.table is not table:
            plan = self.db.key_plan(table)
            plans[table.name] = plan
        return plan

    # -- reads ---------------------------------------------------------------

    def _locate(self, document_id: object) -> tuple[TableDef | None, bytes, bytes]:
        """(table or None, document key, internal id) for an id string."""
        if not isinstance(document_id, str):
            raise InvalidId(
                f"Expected a document ID string, got {type(document_id).__name__}: {document_id!r}",
                value=document_id,
            )
        number, internal_id, doc_key = ids.decode_id_key(document_id)
        table = self.table_by_number(number)
        return table, doc_key, internal_id

    def _raw(self, table: TableDef, doc_key: bytes, internal_id: bytes) -> bytes | None:
        """The newest version of a document visible here, recording the read."""
        self.reads.add_point(table.by_id.prefix + internal_id)
        if doc_key in self.writes.documents:
            raw = self.writes.documents[doc_key]
        else:
            raw = self._txn().get(doc_key, None, self._storage.documents)
        if raw is None:
            return None
        self._count_document(doc_key, len(raw))  # an own write too, as Convex's get_inner
        return raw

    def get(self, document_id: str, system: bool | None = None) -> dict[str, Any] | None:
        """The document with this id, or None. Cost: one B-tree lookup, one decode.

        ``system``: None reads any table (engine-internal code); False (``ctx.db.get``)
        and True (``ctx.db.system.get``) raise :class:`SystemTableError` for an id of
        a system, resp. user, table, whether or not the document exists, as Convex.
        """
        # The common case inline (an id seen before, of a committed table): this
        # is the hottest call in most apps.
        decoded = _DECODED_IDS.get(document_id) if type(document_id) is str else None
        known = None if decoded is None else self.catalog.by_id_prefix.get(decoded[0])
        if known is None:
            table, doc_key, internal_id = self._locate(document_id)
            if system is not None:
                _guard(_U32.unpack(doc_key[:4])[0], system, table)
            if table is None:
                return None
            self.reads.add_point(table.by_id.prefix + internal_id)
        else:
            if system is not None and (decoded[0] < FIRST_USER_TABLE_NUMBER) is not system:  # type: ignore[index]
                _guard(decoded[0], system, known[0])  # type: ignore[index]
            _, internal_id, doc_key = decoded  # type: ignore[misc]
            reads = self.reads
            points = reads.points  # ReadSet.add_point, inline
            points.append(known[1] + internal_id)
            if len(points) > reads.room:
                reads.check_room()
        pending = self.writes.documents
        if pending and doc_key in pending:
            raw = pending[doc_key]
            if raw is None:
                return None
            # Counted as Convex counts it: its get reads the pending writes too.
            self._count_document(doc_key, len(raw))
            return decode_document(raw)
        rtxn = self._rtxn
        if rtxn is None:
            rtxn = self._txn()  # raises: the transaction has finished
        found = rtxn.get(doc_key, None, self._storage.documents)
        if found is None:
            return None
        if doc_key < _FIRST_USER_DOCUMENT_KEY:
            # A system table (_storage, _scheduled_functions): Convex counts its reads
            # apart, outside the limits (ReadSet::record_read_document).
            self.system_bytes_read += len(found)
            return _decode_document(found)
        # Counted inline: the common case stays under Convex's limits, with no nested
        # call's lower ones, in three compares.
        self.documents_read += 1
        self.bytes_read += len(found)
        if (
            self.documents_read > _scans.MAX_DOCUMENTS_READ
            or self.bytes_read > _scans.MAX_BYTES_READ
            or self.limits is not None
        ):
            self._check_reads()
        try:
            return _decode_document(found)
        except DecodeError as error:
            raise _scans.damaged_document(doc_key, error) from None

    # -- writes --------------------------------------------------------------

    def _require_writable(self) -> None:
        """Every write starts here: refuse it in a query, and yield to a group commit.

        Yielding: while a leader applies a group under LMDB's write lock, each of
        its py-lmdb calls releases the GIL and any thread running Python can take
        it; pausing writers here (as new mutations pause before they begin) gives
        the leader the GIL back sooner. With 16 threads: ~25% more commits/s.
        """
        if not self.writable:
            raise ReadOnlyError(
                "This function is a query (or runs in a read-only context): it cannot write. "
                "Use a mutation to insert, patch, replace or delete documents."
            )
        if self._rtxn is None:
            self._txn()  # raises: a ctx kept after its mutation returned would write nowhere
        self.db.committer.yield_to_commit()

    def _new_id(self, table: TableDef) -> tuple[str, bytes]:
        # 14 random bytes from the OS per id: one syscall, cheaper than seeding a PRNG
        # per transaction, and unpredictable as Convex's ChaCha ids are.
        internal_id = ids.new_internal_id(os.urandom(14), time.time() * 1000.0)
        return ids.encode_id(table.number, internal_id), internal_id

    def _creation_time(self) -> float:
        """``max(now, snapshot)`` in ms for the first insert, then strictly increasing."""
        value = self._next_creation_time
        if not value:
            snapshot_ms = self.snapshot_ts / 1e6
            value = max(time.time() * 1000.0, snapshot_ms)
            if value <= snapshot_ms:
                value = math.nextafter(value, math.inf)
        self._next_creation_time = math.nextafter(value, math.inf)
        return value

    def _store(
        self,
        table: TableDef,
        doc_key: bytes,
        internal_id: bytes,
        document: dict[str, Any] | None,
        previous: dict[str, Any] | None,
        *,
        keys_kept: bool = False,
    ) -> None:
        """Buffer ``document`` (None: delete) as the newest version of ``doc_key``.

        ``previous`` is the version it replaces (None for an insert);
        ``keys_kept``: the caller knows that ``document`` has every index key of
        ``previous`` (a patch of fields no index covers), so they are not computed.
        """
        plan = self.plan(table)
        writes = self.writes
        previous_keys: tuple[bytes, ...] | None = None  # of ``previous``, if needed
        snapshot_keys: tuple[bytes, ...] | None = None
        if not writes.touched(doc_key):
            previous_keys = snapshot_keys = (
                () if previous is None else plan.keys(previous, internal_id)
            )
        keys: tuple[bytes, ...] = ()
        raw: bytes | None = None
        if document is not None:
            raw = encode_document(document)
            if keys_kept:
                keys = writes.current_keys[doc_key] if previous_keys is None else previous_keys
            else:
                keys = plan.keys(document, internal_id)
        limits = self.limits  # None: Convex's, else a nested call's lower ones
        max_writes = MAX_DOCUMENTS_WRITTEN if limits is None else limits.documents_written
        if writes.writes >= max_writes:
            raise LimitExceeded(
                f"Too many documents written in a single function execution (limit: {max_writes}).",
                limit="TooManyWrites",
            )
        # Counted once the write is accepted: a refused write the caller catches
        # leaves the count as it was.
        written = writes.bytes_written + (0 if raw is None else len(raw))
        max_bytes = MAX_BYTES_WRITTEN if limits is None else limits.bytes_written
        if written > max_bytes:
            raise LimitExceeded(
                f"Too many bytes written in a single function execution (limit: "
                f"{max_bytes} bytes).",
                limit="TooManyBytesWritten",
            )
        writes.bytes_written = written
        writes.write(table.name, doc_key, snapshot_keys, raw, keys)

    def insert(self, table_name: str, value: dict[str, Any], *, system: bool = False) -> str:
        """Insert a document; returns its new id. The table is created if needed.

        Raises :class:`ValidationError` for values outside the value model or
        system fields in ``value``, :class:`SchemaValidationError` when the
        table's schema rejects it, :class:`ReadOnlyError` for system tables.
        """
        self._require_writable()
        check_table_name(table_name, system=system)
        if not isinstance(value, dict):
            raise ValidationError(
                f"insert into {table_name!r} expects a dict, got {type(value).__name__}", path="$"
            )
        for field in _SYSTEM_FIELDS:
            if field in value:
                if value[field] is UNSET:  # left out, as Convex drops undefined fields
                    value = {k: v for k, v in value.items() if k != field}
                    continue
                raise ValidationError(
                    f'Failed to insert or update a document in table "{table_name}": the '
                    f"system field `{field}` cannot be set by insert; the engine assigns it.",
                    path=f"$.{field}",
                )
        pending = self.writes.catalog
        table = self.table(table_name) or self._create_table(table_name, system=system)
        try:
            document_id, internal_id = self._new_id(table)
            document = {"_id": document_id, "_creationTime": self._creation_time(), **value}
            document = convert_document(document)
            self.db.validate_document(self, table_name, document)
            self._store(table, table.prefix + internal_id, internal_id, document, None)
        except BaseException:
            # A refused insert creates no table (the caller may catch it and commit).
            self.writes.catalog = pending
            raise
        return document_id

    def _existing(self, document_id: str, verb: str) -> tuple[TableDef, bytes, bytes, bytes]:
        table, doc_key, internal_id = self._locate(document_id)
        raw = None if table is None else self._raw(table, doc_key, internal_id)
        if table is None or raw is None:
            raise DocumentNotFound(
                f"{verb} on nonexistent document ID {document_id}", id=document_id
            )
        if table.name.startswith("_") and not self.system_writes:
            raise ReadOnlyError(
                f"System tables (prefixed with `_`) are read-only. "
                f"(document {document_id} is in {table.name!r})"
            )
        return table, doc_key, internal_id, raw

    def _check_system_fields(
        self, fields: dict[str, Any], old: dict[str, Any], document_id: str
    ) -> None:
        """Refuse a system field in ``fields`` that differs from ``old``'s (set to
        ``UNSET`` it is no change: Convex drops it, or puts it back after a patch)."""
        if "_id" in fields and fields["_id"] is not UNSET and fields["_id"] != old["_id"]:
            raise ValidationError(
                f"Provided document ID \"{fields['_id']}\" doesn't match '_id' field "
                f'"{old["_id"]}"',
                path="$._id",
            )
        if (
            "_creationTime" in fields
            and fields["_creationTime"] is not UNSET
            and not values_equal(fields["_creationTime"], old["_creationTime"])
        ):
            raise ValidationError(
                f"Provided creation time {fields['_creationTime']!r} doesn't match "
                f"'_creationTime' field {old['_creationTime']!r} of document {document_id} "
                "(InvalidCreationTimeError): system fields cannot be changed.",
                path="$._creationTime",
            )

    def patch(self, document_id: str, fields: dict[str, Any]) -> None:
        """Shallow-merge ``fields`` into a document; ``UNSET`` removes a field.

        A patch that leaves the document unchanged writes nothing. Raises
        :class:`DocumentNotFound` (``Update on nonexistent document ID …``).
        """
        self._require_writable()
        if not isinstance(fields, dict):
            raise ValidationError(
                f"patch expects a dict of fields, got {type(fields).__name__}", path="$"
            )
        table, doc_key, internal_id, raw = self._existing(document_id, "Update")
        old = _decode_stored(raw, doc_key)
        self._check_system_fields(fields, old, document_id)
        document = dict(old)
        for name, value in fields.items():
            if value is UNSET:
                if name not in _SYSTEM_FIELDS:  # Convex puts those back: no change
                    document.pop(name, None)
            else:
                document[name] = value
        document = convert_document(document)
        # Only the patched fields can differ from ``old``.
        if all(values_equal(document.get(name, UNSET), old.get(name, UNSET)) for name in fields):
            return
        self.db.validate_document(self, table.name, document)
        plan = self.plan(table)
        self._store(
            table, doc_key, internal_id, document, old, keys_kept=plan.fields.isdisjoint(fields)
        )

    def replace(self, document_id: str, value: dict[str, Any]) -> None:
        """Replace every user field of a document, keeping ``_id`` and ``_creationTime``."""
        self._require_writable()
        if not isinstance(value, dict):
            raise ValidationError(f"replace expects a dict, got {type(value).__name__}", path="$")
        table, doc_key, internal_id, raw = self._existing(document_id, "Replace")
        old = _decode_stored(raw, doc_key)
        self._check_system_fields(value, old, document_id)
        document = {"_id": old["_id"], "_creationTime": old["_creationTime"]}
        document.update((k, v) for k, v in value.items() if k not in _SYSTEM_FIELDS)
        document = convert_document(document)
        if values_equal(document, old):
            return
        self.db.validate_document(self, table.name, document)
        self._store(table, doc_key, internal_id, document, old)

    def delete(self, document_id: str) -> None:
        """Delete a document. Raises :class:`DocumentNotFound` if it does not exist."""
        self._require_writable()
        table, doc_key, internal_id, raw = self._existing(document_id, "Delete")
        self._store(table, doc_key, internal_id, None, _decode_stored(raw, doc_key))


_NO_WRITES = WriteSet()


def _decode_stored(raw: bytes, doc_key: bytes) -> dict[str, Any]:
    """:func:`decode_document` of a document read for a write; CorruptionError if damaged."""
    try:
        return decode_document(raw)
    except DecodeError as error:
        raise _scans.damaged_document(doc_key, error) from None


def _guard(number: int, system: bool, table: TableDef | None) -> None:
    """Convex's ``system_table_guard``: ``ctx.db`` reads user tables, ``ctx.db.system``
    system tables, whether or not the document exists."""
    if (number < FIRST_USER_TABLE_NUMBER) is system:
        return
    which = f'an ID of table "{table.name}"' if table is not None else "that ID"
    if system:
        raise SystemTableError(
            f"User tables cannot be accessed with db.system. Read {which} with ctx.db.get(id).",
            table=None if table is None else table.name,
        )
    raise SystemTableError(
        f"System tables can only be accessed with db.system. Read {which} with "
        "ctx.db.system.get(id).",
        table=None if table is None else table.name,
    )
