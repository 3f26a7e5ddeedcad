"""The shared state of one open database, and the transaction runner.

A :class:`Database` owns the storage, the committer, the catalog cache, the
compiled index-key plans and the schema's document validators. Every
``Engine`` handle on a folder in this process uses one ``Database``.

:meth:`Database.run` runs a function in a transaction and commits it,
re-running the function on a conflict with jittered exponential backoff, up
to Convex's budget (4 retries), then raising
:class:`OptimisticConcurrencyControlFailure` with Convex's message.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .catalog import CATALOG_INDEX, Catalog, CatalogView, TableDef, load_catalog
from .commit import CommitRequest, Committer, Conflict
from .encoding import decode
from .errors import (
    CorruptionError,
    EngineError,
    OptimisticConcurrencyControlFailure,
    closed_error,
)
from .indexing import KeyPlan
from .schema import SchemaDefinition, schema_from_json
from .storage import LMDB_ERRORS, Storage
from .subscriptions import SubscriptionManager
from .transaction import Transaction

__all__ = ["SECRET_BYTES", "Database", "RetryPolicy"]

#: The length of the per-database secret in ``meta`` (the HMAC key of cursors and file
#: URLs); ``Engine.check()`` reports another length.
SECRET_BYTES = 32

T = TypeVar("T")
_log = logging.getLogger("engine.database")
_U32 = struct.Struct(">I")

CommitListener = Callable[[list[CommitRequest]], None]


class RetryPolicy:
    """How conflicting mutations are retried: Convex retries 4 times.

    Backoff before retry ``n`` (from 1) is uniform in ``[0, min(cap, base·2ⁿ⁻¹)]``
    ("full jitter"). Convex's server starts at 100 ms; an embedded engine
    learns of a conflicting commit the moment it lands, so the default base
    here is 2 ms, which keeps hot-key throughput up while still spreading
    retries apart.
    """

    __slots__ = ("base", "cap", "retries")

    def __init__(self, retries: int = 4, base: float = 0.002, cap: float = 2.0) -> None:
        self.retries = retries
        self.base = base
        self.cap = cap

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap, self.base * (2 ** (attempt - 1))))


class _Calls:
    """How deep this thread is in function calls of one database (0: in none)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


class _Local(threading.local):
    """Per thread: its :class:`_Calls`, one object, so that the hot paths pay for one
    thread-local lookup and then plain attribute access (a ``threading.local``
    attribute costs about 90 ns to read or write, a slot about 12)."""

    def __init__(self) -> None:
        self.calls = _Calls()


class Database:
    """Storage, committer and caches of one open database (shared per process)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.committer = Committer(self)
        self.retry = RetryPolicy()
        self._catalog_lock = threading.Lock()
        self.catalog_cache: tuple[int, CatalogView] = (-1, CatalogView(Catalog()))
        self._plans: dict[int, KeyPlan] = {}
        #: The stored schema last decoded, by its stored bytes (schemas change rarely).
        self._schema_cache: tuple[bytes, SchemaDefinition] | None = None
        self.listeners: list[CommitListener] = []
        self._local = _Local()
        self._secret: bytes | None = None
        self._subscriptions: SubscriptionManager | None = None
        #: One entry per call running in :meth:`run` (list append/pop: atomic, no lock).
        self._calls: list[None] = []
        #: Set by :meth:`shutdown`: new calls raise the engine-closed error.
        self.closing = False
        #: How long :meth:`shutdown` waits for running calls before the storage closes.
        self.close_timeout = 30.0
        storage.in_transaction = self.in_function  # a fork from a function: no wait

    @property
    def subscriptions(self) -> SubscriptionManager:
        """The subscription manager (made on first use)."""
        if self._subscriptions is None:
            with self._catalog_lock:
                if self._subscriptions is None:
                    self._subscriptions = SubscriptionManager(self)
        return self._subscriptions

    def shutdown(self) -> None:
        """The last handle closes: end the subscriptions, refuse new calls, and wait
        (up to :attr:`close_timeout` seconds) for the calls other threads run, a
        mutation between its function and its commit included; the storage closes next.
        """
        self.closing = True
        if self._subscriptions is not None:
            self._subscriptions.shutdown()
        deadline = time.monotonic() + self.close_timeout
        while self._calls and time.monotonic() < deadline:
            time.sleep(0.001)

    def subscriptions_active(self) -> bool:
        """True if this process has subscriptions to keep up to date."""
        manager = self._subscriptions
        return manager is not None and bool(manager.active)

    def catch_up_subscriptions(self) -> None:
        """Read-your-writes for calls whose commits do not hand their timestamps back
        (an action's mutations, scheduled jobs): block until subscriptions reflect the
        latest commit. Cost: nothing without subscriptions, else a head read and the wait."""
        manager = self._subscriptions
        if manager is not None and manager.active:
            try:
                with self.storage.read() as rtxn:
                    ts = self.storage.head(rtxn)[0]
            except EngineError:
                if self.closing:  # closed meanwhile: its subscriptions ended with it, and
                    return  # the caller's own outcome must not give way to this read's
                raise
            manager.wait_for(ts)

    def wait_for_subscriptions(self, ts: int) -> None:
        """Read-your-writes: block until subscriptions reflect commit ``ts``."""
        manager = self._subscriptions
        if manager is not None and manager.active:
            manager.wait_for(ts)

    # -- caches ---------------------------------------------------------------

    def catalog_at(self, rtxn: Any) -> CatalogView:
        """The catalog as of an LMDB txn; decoded once per catalog version."""
        return self.catalog_view(rtxn, self.storage.head(rtxn)[1])

    def catalog_view(self, rtxn: Any, version: int) -> CatalogView:
        """The catalog of ``version``, read from ``rtxn`` unless it is cached."""
        cached = self.catalog_cache
        if cached[0] == version:
            return cached[1]
        view = CatalogView(load_catalog(rtxn, self.storage.meta))
        # A schema change always stores a new catalog version: the version names the schema
        # and the time it changed too.
        view.schema = self._stored_schema(rtxn)
        view.schema_ts = self.storage.meta_timestamp(rtxn, b"schema_ts")
        with self._catalog_lock:
            if self.catalog_cache[0] < version:
                self.catalog_cache = (version, view)
        return view

    def latest_catalog(self) -> CatalogView:
        with self.storage.read() as rtxn:
            return self.catalog_at(rtxn)

    def key_plan(self, table: TableDef) -> KeyPlan:
        plan = self._plans.get(id(table))
        if plan is None or plan.table is not table:
            plan = KeyPlan(table)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[id(table)] = plan
        return plan

    def table_of_key(self, key: bytes, catalog: Catalog) -> str | None:
        """The table whose index ``key`` belongs to (for conflict messages)."""
        if len(key) < 4:
            return None
        number = _U32.unpack(key[:4])[0]
        if number == CATALOG_INDEX:
            return key[6:].decode(errors="replace") if key[4:6] == b"t:" else None
        for table in catalog.tables.values():
            for index in table.indexes.values():
                if index.number == number:
                    return table.name
        return None

    def cursor_secret(self) -> bytes:
        """The per-database key that authenticates pagination cursors and file URLs
        (made on first use, by :meth:`engine.Engine.open`, and synced to disk then in
        every durability mode that syncs: URLs signed with it outlive the process)."""
        secret = self._secret
        if secret is None:
            with self.storage.read() as rtxn:
                raw = rtxn.get(b"secret", db=self.storage.meta)
                secret = bytes(raw) if raw is not None else None
            if secret is None:
                fresh = os.urandom(SECRET_BYTES)

                def store(wtxn: Any) -> bytes:
                    existing = wtxn.get(b"secret", db=self.storage.meta)
                    if existing is not None:  # another process made one first
                        return bytes(existing)
                    wtxn.put(b"secret", fresh, db=self.storage.meta)
                    return fresh

                secret = self.storage.write(store)
                if secret is fresh:  # ours: on disk before anything is signed with it
                    self.storage.make_durable()
            self._secret = secret
        return secret

    def _stored_schema(self, rtxn: Any) -> SchemaDefinition | None:
        """The schema stored as of ``rtxn`` (decoded once per distinct schema), or None."""
        raw = rtxn.get(b"schema", None, self.storage.meta)
        if raw is None:
            return None
        cached = self._schema_cache
        if cached is not None and cached[0] == raw:
            return cached[1]
        try:
            schema = schema_from_json(decode(raw))
        except Exception as error:  # msgspec's, or a shape schema_from_json cannot read
            problem = f"the stored schema (meta/schema) does not decode: {error}"
            raise CorruptionError.damaged(
                problem,
                "Open it with the app's schema (Engine.open(path, schema=...)), which "
                "stores that schema again, or restore the folder from a backup "
                "(Engine.backup).",
            ) from None
        self._schema_cache = (raw, schema)
        return schema

    # -- hooks ----------------------------------------------------------------

    def validate_document(self, txn: Transaction, table: str, document: dict[str, Any]) -> None:
        """Check ``document`` against ``table``'s schema as stored in ``txn``'s snapshot.

        The stored schema, not the one this process opened with: every handle and
        process on the folder enforces the schema last stored (a Convex deployment
        has one schema). A write checked against a schema that a later commit
        replaced conflicts at commit (see ``Committer``) and re-runs on the new one.
        Raises :class:`SchemaValidationError`.
        """
        schema = txn.catalog.schema
        if schema is None or not schema.schema_validation or table not in schema.tables:
            return

        def resolve(number: int) -> str | None:
            # The transaction's own view: tables it created count, and a table found
            # missing is recorded as read (a concurrent creation then conflicts).
            found = txn.table_by_number(number)
            return None if found is None else found.name

        schema.check_document(table, document, resolve, for_write=True)

    def after_commit(self, requests: list[CommitRequest]) -> None:
        """Called by the committer with the requests it just made durable.

        A listener that raises is logged (``engine.database``) and the others are still
        told: the group is committed, and the leading thread must report it so, not
        return a listener's error for a mutation that is in the database.
        """
        for listener in list(self.listeners):
            try:
                listener(requests)
            except Exception:
                _log.exception("A commit listener failed (the commits stand): %r", listener)

    # -- running transactions ---------------------------------------------------

    def begin(self, *, writable: bool) -> Transaction:
        return Transaction(self, writable)

    def in_function(self) -> bool:
        """True while this thread runs a query or mutation of this database."""
        return bool(self._local.calls.depth)

    def enter_function(self) -> None:
        """This thread starts running a function outside :meth:`run` and
        :meth:`open_query` (a subscription's re-run); pair with :meth:`leave_function`."""
        self._local.calls.depth += 1

    def leave_function(self) -> None:
        self._local.calls.depth -= 1

    def reentry_error(self, call: str = "An engine call") -> EngineError:
        """The error :meth:`refuse_reentry` raises (for a caller that checks inline)."""
        return _reentry_error(call)

    def refuse_reentry(self, call: str = "An engine call") -> None:
        """Raise :class:`EngineError` if this thread runs a query or mutation: an engine
        call from there would wait for the running transaction, commit outside it (and
        again on each of its retries), or open a snapshot of its own that can wait for
        ever on a map resize waiting for the running function's snapshot to end."""
        if self._local.calls.depth:
            raise _reentry_error(call)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count a call that reads in several snapshots or outside :meth:`run`
        (``Engine.check``, ``Engine.backup``) as running, as :meth:`run` counts its
        own: :meth:`shutdown` waits for it, and once closing it raises the engine's
        closed error instead of reading a closed map."""
        calls = self._calls
        calls.append(None)
        try:
            if self.closing:
                raise closed_error()
            yield
        finally:
            calls.pop()

    def open_query(self) -> Transaction:
        """A read-only transaction for one top-level call; pair with :meth:`close_query`.

        :meth:`run` without a retry loop or a closure (``Runtime.query``, the path
        of every ``Engine.query``, has these steps inline). Cost: about 1 µs (LMDB
        reader slot, head, read set).
        Raises :class:`EngineError` when this thread is already running a
        function (an engine call from inside a query or mutation would wait for
        itself).
        """
        calls = self._local.calls
        if calls.depth:
            raise _reentry_error("A query (Engine.query, Engine.aquery)")
        if self.closing:
            raise closed_error()
        txn = Transaction(self, False)  # positional: keywords cost a class call ~0.1 µs
        calls.depth = 1
        return txn

    def close_query(self, txn: Transaction) -> None:
        """End a transaction from :meth:`open_query`."""
        self._local.calls.depth = 0
        txn.close()

    def run(
        self, fn: Callable[[Transaction], T], *, writable: bool = True, source: str = ""
    ) -> tuple[T, int]:
        """:meth:`_run`, counted as a running call (:meth:`shutdown` waits for it)."""
        calls = self._calls
        calls.append(None)  # atomic under the GIL, as the storage gate's entries
        try:
            if self.closing:
                raise closed_error()
            return self._run(fn, writable=writable, source=source)
        finally:
            calls.pop()

    def counted(self, fn: Callable[[], T]) -> T:
        """``fn()`` counted as a running call, as :meth:`run` counts one (:meth:`shutdown`
        waits for it; refused with the engine's closed error once it is closing), for a
        read that takes its own snapshot (``storage.read()``): a vector search, a large
        file's chunks. Under :meth:`run` it would hold a second LMDB reader slot, unused.
        A damaged page met by ``fn`` is a :class:`CorruptionError`. While ``fn`` runs,
        its thread counts as running a function, as in :meth:`run`: an engine call from
        code it runs (a vector search's filter) is refused (see :meth:`refuse_reentry`),
        and a fork from there does not wait for ``fn``'s snapshot. Cost: ~0.3 µs.

        Example::

            found = db.counted(lambda: vectors.vector_search(db, "foods", "v", vector))
        """
        calls = self._calls
        local = self._local.calls
        calls.append(None)
        local.depth += 1
        try:
            if self.closing:
                raise closed_error()
            return fn()
        except LMDB_ERRORS as error:
            raise self.storage.mapped(error) from error
        finally:
            local.depth -= 1
            calls.pop()

    def _run(
        self, fn: Callable[[Transaction], T], *, writable: bool = True, source: str = ""
    ) -> tuple[T, int]:
        """Run ``fn`` in a transaction, commit, retry on conflict; returns (result, ts).

        ``ts`` is the commit timestamp, or the snapshot timestamp for a
        transaction that wrote nothing (read-only transactions never
        validate). An exception from ``fn`` discards every write and
        propagates unchanged.
        """
        if not writable:  # the common case, kept short: no write set, no commit
            txn = self.open_query()
            try:
                return fn(txn), txn.snapshot_ts
            except LMDB_ERRORS as error:  # a damaged page met by a read
                raise self.storage.mapped(error) from error
            finally:
                self.close_query(txn)
        local = self._local.calls
        if local.depth:
            raise _reentry_error(f"A call of {source}" if source else "A mutation")
        attempt = 0
        committer = self.committer
        while True:
            committer.yield_to_commit()
            txn = self.begin(writable=writable)
            local.depth += 1
            try:
                result = fn(txn)
            except LMDB_ERRORS as error:  # a damaged page met by a read
                txn.close()
                raise self.storage.mapped(error) from error
            except BaseException:
                txn.close()
                raise
            finally:
                local.depth -= 1
            if not txn.writes:
                txn.close()
                return result, txn.snapshot_ts
            request = CommitRequest.from_transaction(txn)
            txn.close()  # commit validates against the log, not the snapshot
            self.committer.commit(request)
            if request.error is not None:
                raise request.error
            if request.conflict is None:
                return result, request.ts
            attempt += 1
            if attempt > self.retry.retries:
                raise _occ_failure(request.conflict, attempt - 1, source)
            time.sleep(self.retry.delay(attempt))


def _reentry_error(call: str = "An engine call") -> EngineError:
    return EngineError(
        f"{call} was made from inside a running query or mutation: it would wait for the "
        "running transaction, or commit outside it (and again on each of its retries). "
        "Functions call each other with ctx.run_query / ctx.run_mutation, which join the "
        "running transaction, and use ctx.storage and ctx.scheduler (schedule an action "
        "with ctx.scheduler.run_after(0, ...)); call the engine after the function returns."
    )


def _occ_failure(
    conflict: Conflict, retries: int, source: str
) -> OptimisticConcurrencyControlFailure:
    where = f" {source}." if source else ""
    if conflict.key == b"" and conflict.table is None:  # see Committer._validate
        return OptimisticConcurrencyControlFailure(
            "This mutation's snapshot was older than the commit log kept for validating "
            f"it (log_floor {conflict.ts}) on every attempt.{where} A mutation must finish "
            "within the log's retention window; if it does, run Engine.check(): the "
            "stored log_floor may be damaged.",
            table=None,
            retries=retries,
        )
    table = conflict.table or "unknown"
    return OptimisticConcurrencyControlFailure(
        f'Documents read from or written to the "{table}" table changed while this mutation '
        f"was being run and on every subsequent retry.{where} See https://docs.convex.dev/error#1",
        table=conflict.table,
        retries=retries,
    )
