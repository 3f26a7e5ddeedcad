"""Index scans: reading a key range of an index inside a transaction.

:meth:`Scans.scan` streams ``(index key, document)`` pairs of ``[lo, hi)`` in
either direction, merging the transaction's own uncommitted writes over the
LMDB scan; :meth:`Scans.read_rows` is the one-loop path for read-only
transactions (``collect``/``take``/``paginate`` of a query). Both record in the read set
exactly the interval they consumed, and count documents and bytes read
against Convex's limits (:data:`MAX_DOCUMENTS_READ`, :data:`MAX_BYTES_READ`, or
the lower ones a nested call's ``transaction_limits`` set: :mod:`engine.limits`).
``by_id`` has no entries in ``indexes``: its scans read ``documents`` directly.

:class:`Scans` is a part of :class:`engine.transaction.Transaction`, kept in
its own module; it uses the transaction's snapshot, read set and write set.

Example::

    txn = Transaction(db, writable=False)
    for key, document in txn.scan(table, index, lo, hi, reverse=True):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from itertools import islice, takewhile
from typing import TYPE_CHECKING, Any, NamedTuple

from . import keys, longkeys
from .catalog import BY_ID, IndexDef, TableDef
from .encoding import DecodeError, document_decoder
from .errors import CorruptionError, LimitExceeded
from .ids import FIRST_USER_TABLE_NUMBER

if TYPE_CHECKING:
    from .limits import Limits
    from .readset import ReadSet
    from .storage import Storage
    from .writeset import WriteSet

__all__ = ["MAX_BYTES_READ", "MAX_DOCUMENTS_READ", "Rows", "Scans", "damaged_document"]

#: Convex's limits on what one function execution reads.
MAX_DOCUMENTS_READ = 32_000
MAX_BYTES_READ = 16 << 20
_READ_HINT = (
    "Consider using smaller limits in your queries, paginating your queries, or "
    "using indexed queries with a selective index range expressions."
)
_decode_document = document_decoder()
#: Document keys start with the table number (4 bytes, big-endian): keys below this
#: one are documents of system tables.
FIRST_USER_DOCUMENT_KEY = FIRST_USER_TABLE_NUMBER.to_bytes(4, "big")
#: Index keys read per chunk by the plain one-loop path (Scans._read_plain).
_CHUNK = 128
#: Up to this many rows wanted, Scans.read_rows reads row by row, without chunks
#: (measured: row by row is faster up to about 8 rows, chunks past that).
_FEW_ROWS = 8


class Scans:
    """The range reads of a transaction (a base class of ``Transaction``)."""

    #: Documents and bytes read so far, counted against Convex's limits; bytes read
    #: from system tables, which Convex does not count against them; the limits: None
    #: for Convex's (the module's constants, read when checked), else those a nested
    #: call's ``transaction_limits`` lowered them to (:mod:`engine.limits`).
    __slots__ = ("bytes_read", "documents_read", "limits", "system_bytes_read")

    bytes_read: int
    documents_read: int
    system_bytes_read: int
    limits: Limits | None
    # Provided by Transaction.
    reads: ReadSet
    writes: WriteSet
    writable: bool
    _storage: Storage
    _rtxn: Any

    if TYPE_CHECKING:

        def _txn(self) -> Any: ...

    def _count_document(self, doc_key: bytes, size: int) -> None:
        """Count one document read of ``size`` bytes: against Convex's limits, or apart
        for a system table (``_storage``, ``_scheduled_functions``), as Convex does."""
        if doc_key < FIRST_USER_DOCUMENT_KEY:
            self.system_bytes_read += size
        else:
            self._count_read(size)

    def _count_read(self, size: int) -> None:
        self.documents_read += 1
        self.bytes_read += size
        if (
            self.documents_read > MAX_DOCUMENTS_READ
            or self.bytes_read > MAX_BYTES_READ
            or self.limits is not None
        ):
            self._check_reads()

    def _check_reads(self) -> None:
        """Raise :class:`LimitExceeded` if the reads counted so far pass the limits
        (documents checked first, as Convex's ``record_read_document``)."""
        limits = self.limits
        max_documents = MAX_DOCUMENTS_READ if limits is None else limits.documents_read
        max_bytes = MAX_BYTES_READ if limits is None else limits.bytes_read
        if self.documents_read > max_documents:
            raise LimitExceeded(
                f"Too many documents read in a single function execution (limit: "
                f"{max_documents}). {_READ_HINT}",
                limit="TooManyDocumentsRead",
            )
        if self.bytes_read > max_bytes:
            raise LimitExceeded(
                f"Too many bytes read in a single function execution (limit: {max_bytes} "
                f"bytes). {_READ_HINT}",
                limit="TooManyBytesRead",
            )

    def scan(
        self, table: TableDef, index: IndexDef, lo: bytes, hi: bytes, reverse: bool = False
    ) -> Generator[tuple[bytes, dict[str, Any]], None, None]:
        """Yield ``(index key, document)`` for keys in ``[lo, hi)``, own writes merged in.

        The read set grows with the scan: it covers exactly the keys consumed
        so far (or the whole interval once the scan is exhausted). Cost: one
        seek, then one step and one document lookup per row.
        """
        interval = self.reads.add_scan(hi, hi) if reverse else self.reads.add_scan(lo, lo)
        try:
            # Convex counts reads of system tables (_storage, _scheduled_functions) apart,
            # outside the limits (ReadSet::record_read_document skips is_system tables).
            system = table.number < FIRST_USER_TABLE_NUMBER
            writes = self.writes
            generation = writes.generation
            added = writes.added
            removed = writes.removed
            pending_docs = writes.documents
            documents_db = self._storage.documents
            table_prefix = table.prefix
            rtxn = self._txn()
            overlay = iter(added.irange(lo, hi, inclusive=(True, False), reverse=reverse))
            if index.name == BY_ID:
                base = _scan_by_id(rtxn, documents_db, table, index, lo, hi, reverse)
            elif index.number in self._storage.long_indexes(rtxn):
                base = _scan_index(rtxn, self._storage.indexes, lo, hi, reverse)
            else:
                base = _scan_lmdb(rtxn, self._storage.indexes, lo, hi, reverse)
            next_overlay = next(overlay, None)
            next_base = next(base, None)
            while next_overlay is not None or next_base is not None:
                if next_base is not None and (
                    next_overlay is None
                    or (next_base > next_overlay if reverse else next_base < next_overlay)
                ):
                    key = next_base
                    next_base = next(base, None)
                    if key in removed:
                        continue
                else:
                    key = next_overlay  # type: ignore[assignment]
                    next_overlay = next(overlay, None)
                if reverse:
                    interval.lo = key
                else:
                    interval.hi = key + b"\x00"
                doc_key = table_prefix + key[-16:]
                if doc_key in pending_docs:
                    raw = pending_docs[doc_key]
                    if raw is None:  # cannot happen: a deleted document has no keys
                        continue
                else:
                    found = rtxn.get(doc_key, None, documents_db)
                    if found is None:
                        raise _missing_document(key)
                    raw = found
                # Own writes count too: Convex's index range reads the transaction's
                # pending writes with the snapshot and records every document it returns.
                if system:
                    self.system_bytes_read += len(raw)
                else:
                    self._count_read(len(raw))
                try:
                    document = _decode_document(raw)
                except DecodeError as error:
                    raise damaged_document(doc_key, error) from None
                yield key, document
                if self._rtxn is None:
                    self._txn()  # raises: the function that started this scan has returned
                if writes.generation != generation:
                    # The caller wrote while iterating: the overlay changed under the scan.
                    # Re-seek it past the last key yielded, so no key comes twice, none that
                    # exists is skipped, and rows written ahead of the scan are read.
                    generation = writes.generation
                    overlay = iter(
                        added.irange(lo, key, inclusive=(True, False), reverse=True)
                        if reverse
                        else added.irange(key, hi, inclusive=(False, False))
                    )
                    next_overlay = next(overlay, None)
            if reverse:
                interval.lo = lo
            else:
                interval.hi = hi
        finally:
            # However it stops (its end, its reader closing it, as a take() or a page
            # does, or dropping it, an error), it reads no more: its range is final as far
            # as it got, and the read set stops looking at it for widening. (A scan its
            # reader keeps, paused, stays running.)
            interval.running = False
        # Counted as one range when it started, empty: now that it has its bounds, it may
        # be one more than the limit allows (Convex raises at the read that records it).
        self.reads.check_read()

    def read_rows(
        self,
        table: TableDef,
        index: IndexDef,
        lo: bytes,
        hi: bytes,
        *,
        reverse: bool,
        limit: int | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        with_keys: bool = False,
    ) -> Rows | None:
        """Read ``[lo, hi)`` in one loop, stopping at the first bound reached.

        Bounds: ``limit`` documents accepted by ``keep``; ``max_rows`` rows
        scanned (rejected ones included); ``max_bytes`` bytes of documents
        scanned. Only for read-only transactions (nothing to merge); returns
        None otherwise, and the caller streams with :meth:`scan`. The read set
        records the interval consumed, as a scan would: up to the last row
        read when a bound stopped the loop, the whole range otherwise.
        Cost: one seek, then per row one step, one lookup and one decode,
        without a generator between them.

        Example::

            rows = txn.read_rows(table, index, lo, hi, reverse=False, limit=10)
            rows.documents, rows.stopped   # up to 10 documents, "limit" if cut short
        """
        if self.writable or index.name == BY_ID:
            return None
        rtxn = self._txn()
        if lo >= hi:
            # An empty or inverted range holds no key: nothing to read, and no read range
            # to record (as in Convex, and as the scans of a mutation skip it). Recorded,
            # it would stay in the read set as an empty range that might still grow.
            return Rows([], [], 0, None, None)
        if index.number in self._storage.long_indexes(rtxn):
            # An index holding keys past LMDB's key size (engine.longkeys), rare: the
            # scan reads them in order.
            return None
        interval = self.reads.add_interval(lo, hi)  # the whole range unless cut short below
        get = rtxn.get
        documents_db = self._storage.documents
        table_prefix = table.prefix
        decode = _decode_document
        out: list[dict[str, Any]] = []
        out_keys: list[bytes] = []
        append = out.append
        read = 0
        size = 0
        # Convex's limits, checked per row (the common case: two compares); none for
        # system tables, whose reads Convex does not count against them.
        system = table.number < FIRST_USER_TABLE_NUMBER
        limits = self.limits
        if system:
            budget = byte_budget = 1 << 62
        elif limits is None:
            budget = MAX_DOCUMENTS_READ - self.documents_read
            byte_budget = MAX_BYTES_READ - self.bytes_read
        else:
            budget = limits.documents_read - self.documents_read
            byte_budget = limits.bytes_read - self.bytes_read
        row_bound = max_rows if max_rows is not None else -1  # never equals a count
        byte_bound = max_bytes if max_bytes is not None else 1 << 62  # never reached
        last_key: bytes | None = None
        stopped: str | None = None
        cursor = rtxn.cursor(self._storage.indexes)
        try:
            keys: Any
            if reverse:
                positioned = cursor.prev() if cursor.set_range(hi) else cursor.last()
                keys = cursor.iterprev(True, False) if positioned else ()
            else:
                positioned = cursor.set_range(lo)
                keys = cursor.iternext(True, False) if positioned else ()
            if (
                keep is None
                and max_rows is None
                and max_bytes is None
                and (limit is None or limit > _FEW_ROWS)
            ):
                # No filter and no bounds but the limit (the common case): by chunks.
                # Not for a few rows (first(), unique(), take(5)): the chunks' setup
                # costs more there (~2 µs at take(1)) than the plain loop below.
                read, size, last_key, stopped = self._read_plain(
                    table,
                    keys,
                    lo,
                    hi,
                    reverse,
                    limit,
                    out,
                    out_keys if with_keys else None,
                    budget,
                    byte_budget,
                )
                keys = ()
            for key in keys:  # bytes: storage's txns do not hand out buffers
                if (key < lo) if reverse else (key >= hi):
                    break
                found = get(table_prefix + key[-16:], None, documents_db)
                if found is None:
                    raise _missing_document(key)
                read += 1
                size += len(found)
                if read > budget or size > byte_budget:  # stop at Convex's limit, not after
                    # Count the rows before this one, then this one as the scan would:
                    # the same counters, and the same error (documents checked first).
                    self.documents_read += read - 1
                    self.bytes_read += size - len(found)
                    read = size = 0
                    self._count_read(len(found))  # raises
                last_key = key
                if with_keys:
                    out_keys.append(key)
                try:
                    document = decode(found)
                except DecodeError as error:
                    raise damaged_document(table_prefix + key[-16:], error) from None
                if keep is None or keep(document):
                    append(document)
                    if limit is not None and len(out) >= limit:
                        stopped = "limit"
                if stopped is None and (read == row_bound or size >= byte_bound):
                    stopped = "rows" if read == row_bound else "bytes"
                if stopped is not None:
                    if reverse:
                        interval.lo = key
                    else:
                        interval.hi = key + b"\x00"
                    break
        finally:
            cursor.close()
            if system:
                self.system_bytes_read += size
            else:
                self.documents_read += read
                self.bytes_read += size
        if stopped is not None and last_key is not None:  # the plain path cut short
            if reverse:
                interval.lo = last_key
            else:
                interval.hi = last_key + b"\x00"
        if (
            self.documents_read > MAX_DOCUMENTS_READ
            or self.bytes_read > MAX_BYTES_READ
            or limits is not None
        ):
            self._check_reads()
        if stopped is not None:
            # Counted whole when added, the range is now cut where the read stopped: it
            # may no longer join the ranges the whole one joined.
            self.reads.check_read()
        return Rows(out, out_keys, read, last_key, stopped)

    def _read_plain(
        self,
        table: TableDef,
        keys: Iterator[bytes],
        lo: bytes,
        hi: bytes,
        reverse: bool,
        limit: int | None,
        out: list[dict[str, Any]],
        out_keys: list[bytes] | None,
        budget: int,
        byte_budget: int,
    ) -> tuple[int, int, bytes | None, str | None]:
        """:meth:`read_rows` with no filter and no bounds: index keys a chunk at a time,
        then their documents and decodes in comprehensions (a fifth faster per row than
        one statement-heavy loop). Appends to ``out`` (and each document's index key to
        ``out_keys`` if given: with no filter every row scanned is accepted); returns (rows, bytes, last key, stopped). Chunks keep
        what is held before a limit check small.
        """
        # C-level comparisons (bound methods of bytes), not a Python call per key.
        in_range = lo.__le__ if reverse else hi.__gt__
        wanted = takewhile(in_range, keys)
        get = self._txn().get
        documents_db = self._storage.documents
        table_prefix = table.prefix
        read = 0
        size = 0
        last_key: bytes | None = None
        while True:
            chunk_size = _CHUNK if limit is None else min(_CHUNK, limit - len(out))
            chunk = list(islice(wanted, chunk_size))
            if not chunk:
                return read, size, last_key, None
            raws = [get(table_prefix + key[-16:], None, documents_db) for key in chunk]
            if None in raws:
                missing = chunk[raws.index(None)]
                raise _missing_document(missing)
            chunk_bytes = sum(map(len, raws))
            if read + len(chunk) > budget or size + chunk_bytes > byte_budget:
                # A limit is crossed inside this chunk: count row by row from its start,
                # so the error is raised at the row (and with the kind) a scan would.
                self.documents_read += read
                self.bytes_read += size
                for raw in raws:
                    self._count_read(len(raw))  # raises at the row past a limit
            read += len(chunk)
            size += chunk_bytes
            try:
                out.extend(map(_decode_document, raws))
            except DecodeError:
                for key, raw in zip(chunk, raws, strict=True):  # name the damaged one
                    try:
                        _decode_document(raw)
                    except DecodeError as error:
                        raise damaged_document(table_prefix + key[-16:], error) from None
                raise
            if out_keys is not None:
                out_keys.extend(chunk)
            last_key = chunk[-1]
            if limit is not None and len(out) >= limit:
                return read, size, last_key, "limit"
            if len(chunk) < chunk_size:
                return read, size, last_key, None


_CHECK_AND_RESTORE = (
    "Run Engine.check() to list the damage, and restore the folder from a backup (Engine.backup)."
)


def damaged_document(doc_key: bytes, error: Exception) -> CorruptionError:
    """The error of a read that met stored document bytes that do not decode."""
    problem = f"document {doc_key.hex()} does not decode: {error}"
    return CorruptionError.damaged(problem, _CHECK_AND_RESTORE)


def _missing_document(key: bytes) -> CorruptionError:
    """The error of a scan that met an index entry without its document (damage)."""
    problem = f"index entry {key.hex()} points to a missing document"
    return CorruptionError.damaged(problem, _CHECK_AND_RESTORE)


class Rows(NamedTuple):
    """What :meth:`Scans.read_rows` read."""

    #: The documents accepted, in scan order.
    documents: list[dict[str, Any]]
    #: The index key of each row scanned, rejected ones included (only when asked
    #: ``with_keys``): Convex places a page's split cursor among the rows scanned.
    keys: list[bytes]
    #: Rows scanned, rejected ones included.
    rows: int
    #: The index key of the last row scanned (None if none).
    last_key: bytes | None
    #: Which bound stopped the loop: ``"limit"``, ``"rows"``, ``"bytes"``; None when
    #: the range was read to its end.
    stopped: str | None


def _scan_by_id(
    rtxn: Any,
    documents_db: Any,
    table: TableDef,
    index: IndexDef,
    lo: bytes,
    hi: bytes,
    reverse: bool,
) -> Iterator[bytes]:
    """``by_id`` keys in ``[lo, hi)``, read from ``documents`` (which is ``by_id``)."""
    index_prefix, table_prefix = index.prefix, table.prefix
    table_end = keys.prefix_end(table_prefix) or b"\xff" * 5

    def translate(key: bytes) -> bytes:
        if key[:4] == index_prefix:
            return table_prefix + key[4:]
        return table_prefix if key < index_prefix else table_end

    for key in _scan_lmdb(rtxn, documents_db, translate(lo), translate(hi), reverse):
        yield index_prefix + key[4:]


#: LMDB's largest key (``mdb_env_get_maxkeysize``: 511 bytes in py-lmdb's build): longer
#: index keys live in the entry of their first 511 bytes (:mod:`engine.longkeys`).
MAX_KEY_SIZE = longkeys.SPLIT


def _scan_index(rtxn: Any, db: Any, lo: bytes, hi: bytes, reverse: bool) -> Iterator[bytes]:
    """Index keys in ``[lo, hi)``, ascending or descending: :func:`_scan_lmdb` over the
    ``indexes`` sub-database, the keys an entry of :data:`longkeys.SPLIT` bytes holds
    read in place (its own key when it is one, then the long keys it lists)."""
    split = longkeys.SPLIT
    cursor = rtxn.cursor(db)
    try:
        if not reverse:
            # The entry holding a long ``lo`` (its first bytes) sorts before ``lo``.
            if not cursor.set_range(lo[:split]):
                return
            for key in cursor.iternext(True, False):
                if key >= hi:  # and so is every key an entry from here on holds
                    return
                if len(key) == split:
                    yield from longkeys.keys_in(key, cursor.value(), lo, hi)
                elif key >= lo:
                    yield key
        else:
            # An entry at or past ``hi`` holds no key below it (its keys start with it).
            positioned = cursor.set_range(hi)
            positioned = cursor.prev() if positioned else cursor.last()
            if not positioned:
                return
            for key in cursor.iterprev(True, False):
                if len(key) == split:
                    yield from longkeys.keys_in(key, cursor.value(), lo, hi, reverse=True)
                    if key < lo:  # every entry before it holds keys below ``lo``
                        return
                elif key < lo:
                    return
                else:
                    yield key
    finally:
        cursor.close()


def _scan_lmdb(rtxn: Any, db: Any, lo: bytes, hi: bytes, reverse: bool) -> Iterator[bytes]:
    """Keys of LMDB sub-database ``db`` in ``[lo, hi)``, ascending or descending."""
    cursor = rtxn.cursor(db)
    try:
        if not reverse:
            if not cursor.set_range(lo):
                return
            for key in cursor.iternext(True, False):
                if key >= hi:
                    return
                yield key
        else:
            positioned = cursor.set_range(hi)
            if positioned:
                positioned = cursor.prev()
            else:
                positioned = cursor.last()
            if not positioned:
                return
            for key in cursor.iterprev(True, False):
                if key < lo:
                    return
                yield key
    finally:
        cursor.close()
