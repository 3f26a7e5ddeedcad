"""Commit: validate a transaction against every commit since its snapshot, then apply.

Group commit. Threads that finish a mutation at about the same time hand
their transactions to whichever of them is the *leader*; the leader takes
every transaction waiting, runs one LMDB write txn that validates and applies
each of them in turn, and commits once, so one sync makes the whole group
durable. Throughput of durable commits therefore grows with concurrency
instead of being capped at one fsync per mutation.

Validation (serializability). For each transaction the leader reads the
``log`` entries after its snapshot (written by any process) plus the
commits accepted earlier in the same group; if any key they wrote (old or new
index key of a written document) lies inside the transaction's read set, the
transaction conflicts and its function must run again. Otherwise its writes
are applied, a log entry with all its keys is appended under a new commit
timestamp, and the head (``meta`` key ``head``: latest timestamp, catalog
version) moves forward.

Log retention. Entries older than :data:`LOG_RETENTION_NS` are pruned and
``log_floor`` records the newest pruned timestamp; a transaction whose
snapshot is older than the floor cannot be validated and conflicts.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import blobs as _blobs
from . import longkeys
from . import vectors as _vectors
from .catalog import NEXT_TABLE_KEY, SCHEMA_KEY, Catalog, catalog_key, encode_catalog
from .encoding import decode, encode
from .errors import EngineError
from .readset import FrozenReadSet

if TYPE_CHECKING:
    from .database import Database
    from .transaction import Transaction

__all__ = ["LOG_RETENTION_NS", "CommitRequest", "Committer", "Conflict", "read_log"]

#: How long log entries are kept (transactions older than this conflict).
LOG_RETENTION_NS = 120 * 1_000_000_000
_PRUNE_EVERY = 512
_U64 = struct.Struct(">Q")
#: The read set of every transaction that read nothing (immutable, so shared).
_NO_READS = FrozenReadSet(())


@dataclass(frozen=True)
class Conflict:
    """Why a transaction could not commit: the key that conflicted, and its table."""

    key: bytes
    table: str | None
    ts: int


@dataclass
class CommitRequest:
    """One transaction's changes, as the committer needs them."""

    snapshot_ts: int
    reads: FrozenReadSet
    catalog_version: int
    tables: dict[str, Any]  # table name → TableDef as the transaction saw it
    documents: list[tuple[bytes, bytes | None]]
    index_deletes: list[bytes]
    index_puts: list[bytes]
    log_keys: list[bytes]
    new_catalog: Catalog | None
    done: bool = False
    ts: int = 0
    conflict: Conflict | None = None
    error: BaseException | None = None
    #: Held while the request waits in the queue; released by the leader when the
    #: request is done, or to make its thread the next leader.
    wake: Any = None
    #: Set (under the committer's lock) when the lead is handed to this request.
    lead: bool = False
    #: File bytes to store or delete with ``_storage`` documents (see engine.blobs).
    blobs: dict[bytes, bytes | None] | None = None
    #: The vector index entries of the documents written (``vectors.prepare``), or None.
    vectors: dict[bytes, _vectors.Prepared] | None = None

    @classmethod
    def from_transaction(cls, txn: Transaction) -> CommitRequest:
        documents, deletes, puts, logged = txn.writes.changes()
        tables = {}
        for name in set(txn.writes.tables.values()):
            table = txn.catalog.tables.get(name)
            if table is not None:
                tables[name] = table
        new_catalog = txn.writes.catalog
        if new_catalog is not None:
            for name in new_catalog.tables.keys() - txn.catalog.tables.keys():
                logged.append(catalog_key(name))
            logged.append(NEXT_TABLE_KEY)
        reads = txn.reads
        return cls(
            txn.snapshot_ts,
            # Blind writes (inserts) read nothing: they share one empty read set.
            reads.freeze() if len(reads) else _NO_READS,
            txn.catalog.catalog.version,
            tables,
            documents,
            deletes,
            puts,
            logged,
            new_catalog,
            # A failed hasattr on an unset slot, as this once asked, cost ~0.7 us a commit.
            blobs=None if txn.writes.blobs is None else txn.writes.blob_changes(),
            vectors=(
                _vectors.prepare(txn.catalog.vector_tables, documents)
                if txn.catalog.vector_tables
                else None
            ),
        )


class Committer:
    """Validates and applies transactions, many per LMDB write txn."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._queue: list[CommitRequest] = []
        self._leading = False
        # Full at start: the first commit of every process prunes, so a database
        # written only by short-lived processes (scripts, cron jobs) is pruned too.
        self._commits_since_prune = _PRUNE_EVERY
        #: Clear while a leader runs the Python part of a group commit (validation
        #: and puts, under LMDB's write lock). Threads about to start a mutation wait
        #: for it (:meth:`yield_to_commit`), so the leader is not starved of the GIL by
        #: new work: with 16 threads, the group's Python ran ~10× slower than alone.
        #: The syncs that follow run without the GIL, and new mutations overlap them.
        self.idle = threading.Event()
        self.idle.set()
        #: Statistics: commits, conflicts, groups (LMDB write txns), for benchmarks.
        self.stats = {"commits": 0, "conflicts": 0, "groups": 0}

    def commit(self, request: CommitRequest) -> None:
        """Validate and apply ``request``; on return it is ``done`` (check ``conflict``).

        A thread that finds no leader leads: it takes every queued request,
        commits them as one group, wakes exactly their threads, and hands the
        lead to the thread of the oldest request queued meanwhile (or drops it).
        Other threads queue and sleep on their request's own lock, so a group's
        end wakes only the threads it concerns, not every waiting thread.

        A waiting thread interrupted by an exception from a signal handler (a
        ``KeyboardInterrupt``) withdraws its request if no leader has taken it
        yet, and passes the lead on if it had just been handed to it.
        """
        with self._lock:
            self._queue.append(request)
            leads = not self._leading
            if leads:
                self._leading = True
            else:
                wake = request.wake = threading.Lock()
                wake.acquire()
        if not leads:
            try:
                wake.acquire()  # released when done, or when this thread is to lead
            except BaseException:
                self._withdraw(request)
                raise
            if request.done:
                return
        batch: list[CommitRequest] = []
        try:  # from here on an interrupt cannot strand the lead: _finish passes it on
            with self._lock:
                batch, self._queue = self._queue, []
            self._run(batch)
        finally:
            self._finish(request, batch)

    def _finish(self, leader: CommitRequest, batch: list[CommitRequest]) -> None:
        """Wake the threads of ``batch`` and hand the lead on (or drop it).

        An empty ``batch`` means the leader was interrupted before it took the
        queue: its own request is still queued, and is withdrawn unapplied.
        """
        if not batch:
            with self._lock:
                self._queue = [r for r in self._queue if r is not leader]
            leader.error = EngineError("The commit was interrupted before it was applied.")
            leader.done = True
        for other in batch:
            if not other.done:  # only if the group was interrupted half-way
                other.error = other.error or EngineError("The commit was interrupted.")
                other.done = True
            if other is not leader:
                other.wake.release()
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leading = False
            else:
                successor.lead = True
        if successor is not None:
            successor.wake.release()  # its thread leads the next group

    def _withdraw(self, request: CommitRequest) -> None:
        """Take ``request`` out of the queue after its thread stopped waiting.

        A request a leader already took is left to it (it may commit); one still
        queued is dropped unapplied; if the lead had been handed to it, the lead
        passes to the next queued request, so the queue never stalls.
        """
        with self._lock:
            position = next((i for i, r in enumerate(self._queue) if r is request), None)
            if position is None:
                return
            del self._queue[position]
            request.error = EngineError("The commit was interrupted before it was applied.")
            request.done = True
            if not request.lead:
                return
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leading = False
            else:
                successor.lead = True
                successor.wake.release()

    def yield_to_commit(self) -> None:
        """Wait while a leader applies a group (cheap when none does)."""
        idle = self.idle
        if not idle.is_set():
            idle.wait(0.05)  # bounded: a slow apply must not stall new work for long

    def _run(self, batch: list[CommitRequest]) -> None:
        #: The outcomes of the write txn's last attempt (a full map runs it again).
        decided: list[list[tuple[int, Conflict | None]]] = []

        def apply(wtxn: Any) -> list[tuple[int, Conflict | None]]:
            outcomes = self._apply_yielding(wtxn, batch)
            decided[:] = [outcomes]
            return outcomes

        try:
            outcomes = self._db.storage.write(apply)
        except BaseException as error:
            # An interrupt (KeyboardInterrupt, SystemExit) is only this thread's, which
            # raises it. A Ctrl-C during the commit's syncs is raised as LMDB's commit
            # returns: the group is written, and its members committed.
            if not isinstance(error, Exception) and decided and self._written(decided[0], batch):
                self._record(batch, decided[0])
                raise
            # The write txn was abandoned: no member was applied. An error of the
            # storage is every member's; the others get an error they can handle for
            # an interrupt, as members of a group interrupted half-way (see _finish).
            shared = error
            if not isinstance(error, Exception):
                shared = EngineError(
                    f"The commit was interrupted: a {type(error).__name__} reached the "
                    "thread that was committing this mutation's group, and the group was "
                    "not applied. Run the mutation again."
                )
            for request in batch:
                request.error = shared
                request.done = True
            raise
        self._record(batch, outcomes)

    def _record(
        self, batch: list[CommitRequest], outcomes: list[tuple[int, Conflict | None]]
    ) -> None:
        """Hand each member of the written group its outcome, and tell the listeners."""
        for request, (ts, conflict) in zip(batch, outcomes, strict=True):
            request.ts = ts
            request.conflict = conflict
            request.done = True
            self.stats["conflicts" if conflict else "commits"] += 1
        self.stats["groups"] += 1
        self._db.after_commit([r for r in batch if r.conflict is None])

    def _written(
        self, outcomes: list[tuple[int, Conflict | None]], batch: list[CommitRequest]
    ) -> bool:
        """True if the group decided as ``outcomes`` is in the database: its first
        committed member's log entry is there (its timestamp is new, and unique). A
        group of conflicts writes nothing and is decided either way. False if that
        cannot be read (the storage closed meanwhile): then the group counts as not
        applied, as it did before this check."""
        storage = self._db.storage
        for request, (ts, conflict) in zip(batch, outcomes, strict=True):
            if conflict is None:
                try:
                    with storage.read() as rtxn:
                        found = rtxn.get(_U64.pack(ts), None, storage.log)
                except Exception:
                    return False
                return found is not None and bytes(found) == encode(request.log_keys)
        return True

    def _apply_yielding(
        self, wtxn: Any, batch: list[CommitRequest]
    ) -> list[tuple[int, Conflict | None]]:
        if len(batch) == 1 and not self._queue:
            return self._apply(wtxn, batch)  # nobody else is committing: nothing to hold back
        self.idle.clear()
        try:
            return self._apply(wtxn, batch)
        finally:
            self.idle.set()

    def _apply(self, wtxn: Any, batch: list[CommitRequest]) -> list[tuple[int, Conflict | None]]:
        """Validate and apply every request of ``batch`` in one write txn.

        Pure with respect to ``batch``: if the write txn must be retried (the
        map grew), running it again gives the same decisions.
        """
        storage = self._db.storage
        meta = storage.meta
        latest, catalog_version = storage.head(wtxn)
        floor = storage.meta_timestamp(wtxn, b"log_floor")
        # Decoded once per catalog version (a schema change stores a new version, so the
        # view also knows when the schema last changed).
        view = self._db.catalog_view(wtxn, catalog_version)
        catalog, schema_ts = view.catalog, view.schema_ts
        # Only transactions that read something validate against the log; a group
        # of blind writes (inserts) needs no history at all.
        readers = [r.snapshot_ts for r in batch if len(r.reads)]
        history = read_log(wtxn, storage.log, min(readers)) if readers else []
        outcomes: list[tuple[int, Conflict | None]] = []
        # The group's net effect, in commit order (a later request's write of a key
        # replaces an earlier one's), applied below with one call per sub-database:
        # py-lmdb releases the GIL in every call, and each release lets another
        # thread's Python run while this one holds LMDB's write lock.
        documents: dict[bytes, bytes | None] = {}
        index_keys: dict[bytes, bytes | None] = {}  # key → b"" (put) or None (delete)
        log_entries: list[tuple[bytes, bytes]] = []
        blob_changes: dict[bytes, bytes | None] = {}
        vector_entries: dict[bytes, _vectors.Prepared] = {}
        new_catalog = False
        for request in batch:
            conflict = self._validate(request, history, floor, catalog, schema_ts)
            if conflict is not None:
                outcomes.append((0, conflict))
                continue
            if request.new_catalog is not None:
                catalog = _merge_catalog(catalog, request.new_catalog)
                new_catalog = True
            documents.update(request.documents)
            if request.blobs:
                blob_changes.update(request.blobs)
            if request.vectors:
                vector_entries.update(request.vectors)
            index_keys.update(dict.fromkeys(request.index_deletes))
            index_keys.update(dict.fromkeys(request.index_puts, b""))
            ts = max(time.time_ns(), latest + 1)
            latest = ts
            log_entries.append((_U64.pack(ts), encode(request.log_keys)))
            history.append((ts, request.log_keys))
            outcomes.append((ts, None))
        if log_entries:
            if new_catalog:
                wtxn.put(b"catalog", encode_catalog(catalog), db=meta)
            _apply_net(wtxn, storage.documents, documents)
            if vector_entries:  # derived from the documents by their transactions
                _vectors.apply(wtxn, storage.indexes, vector_entries)
            if blob_changes:  # in the same LMDB txn as the _storage rows they belong to
                _blobs.apply(wtxn, storage.blobs, blob_changes)
            _apply_index_keys(wtxn, storage, index_keys)
            if len(log_entries) == 1:  # one py-lmdb call either way; put makes no cursor
                wtxn.put(*log_entries[0], True, True, True, storage.log)
            else:
                wtxn.cursor(storage.log).putmulti(log_entries, True, True, True)
            commits = len(log_entries)
            storage.put_head(wtxn, latest, catalog.version)
            storage.clear_dead_readers()
            self._commits_since_prune += commits
            if self._commits_since_prune >= _PRUNE_EVERY:
                self._commits_since_prune = 0
                _prune_log(wtxn, storage, latest)
        return outcomes

    def _validate(
        self,
        request: CommitRequest,
        history: list[tuple[int, list[bytes]]],
        floor: int,
        catalog: Catalog,
        schema_ts: int,
    ) -> Conflict | None:
        if request.snapshot_ts < floor:
            return Conflict(b"", None, floor)
        if request.snapshot_ts < schema_ts and request.documents:
            # Its writes were checked against the schema of its snapshot, which a
            # schema change has since replaced: re-run against the new one.
            return Conflict(SCHEMA_KEY, next(iter(request.tables), None), schema_ts)
        for name, seen in request.tables.items():
            if catalog.tables.get(name) != seen:
                # The table's indexes changed under us: our index keys are stale.
                return Conflict(b"", name, 0)
        proposed = request.new_catalog
        if proposed is not None and request.catalog_version != catalog.version:
            # The catalog changed since our snapshot and we created tables: the
            # numbers we took may be taken. Schema changes log NEXT_TABLE_KEY, so
            # validation below catches this too; this check does not rely on it.
            created = sorted(proposed.tables.keys() - catalog.tables.keys())
            return Conflict(NEXT_TABLE_KEY, created[0] if created else None, 0)
        reads = request.reads
        if not len(reads):
            return None
        for ts, keys in history:
            if ts <= request.snapshot_ts:
                continue
            hit = reads.first_hit(keys)
            if hit is not None:
                return Conflict(hit, self._db.table_of_key(hit, catalog), ts)
        return None


def _apply_net(wtxn: Any, db: Any, changes: dict[bytes, bytes | None]) -> None:
    """Put every ``key → value`` of ``changes`` and delete every ``key → None``."""
    puts = []
    for key, value in changes.items():
        if value is None:
            wtxn.delete(key, b"", db)
        else:
            puts.append((key, value))
    if len(puts) == 1:  # one py-lmdb call either way; put makes no cursor
        wtxn.put(*puts[0], True, True, False, db)
    elif puts:
        puts.sort()  # neighbouring keys land on pages already touched
        wtxn.cursor(db).putmulti(puts)


def _apply_index_keys(wtxn: Any, storage: Any, changes: dict[bytes, bytes | None]) -> None:
    """:func:`_apply_net` for index keys: those of LMDB's key size or longer go to the
    entries of :mod:`engine.longkeys` (rare: one length check per key otherwise)."""
    if changes and max(map(len, changes)) >= longkeys.SPLIT:
        long = {key: value for key, value in changes.items() if len(key) >= longkeys.SPLIT}
        changes = {key: value for key, value in changes.items() if len(key) < longkeys.SPLIT}
        longkeys.apply(wtxn, storage.indexes, storage.meta, long)
    _apply_net(wtxn, storage.indexes, changes)


def read_log(wtxn: Any, log: Any, after: int) -> list[tuple[int, list[bytes]]]:
    """Every log entry with a timestamp greater than ``after``, oldest first."""
    entries: list[tuple[int, list[bytes]]] = []
    cursor = wtxn.cursor(log)
    try:
        if cursor.set_range(_U64.pack(after + 1)):
            for key, value in cursor.iternext():
                entries.append((_U64.unpack(key)[0], decode(value)))
    finally:
        cursor.close()
    return entries


def _prune_log(wtxn: Any, storage: Any, latest: int) -> None:
    cutoff = latest - LOG_RETENTION_NS
    if cutoff <= 0:
        return
    newest_pruned = 0
    cursor = wtxn.cursor(db=storage.log)
    try:
        if cursor.first():
            while True:
                ts = _U64.unpack(cursor.key())[0]
                if ts >= cutoff:
                    break
                newest_pruned = ts
                if not cursor.delete():
                    break
    finally:
        cursor.close()
    if newest_pruned:
        wtxn.put(b"log_floor", _U64.pack(newest_pruned), db=storage.meta)


def _merge_catalog(current: Catalog, proposed: Catalog) -> Catalog:
    """Add the tables of ``proposed`` missing from ``current``.

    Validation already guaranteed that the catalog did not change since the
    proposer's snapshot (its version, and ``NEXT_TABLE_KEY`` in the log), so
    the numbers it took are still free.
    """
    tables = dict(current.tables)
    for name, table in proposed.tables.items():
        tables.setdefault(name, table)
    return Catalog(
        current.version + 1,
        tables,
        max(current.next_user_table, proposed.next_user_table),
        max(current.next_system_table, proposed.next_system_table),
        max(current.next_index, proposed.next_index),
    )
