"""Function contexts: what a query, mutation or action handler receives as ``ctx``.

- :class:`QueryCtx`: ``db`` (reader), ``auth``, ``storage`` (reader), ``run_query``,
  ``meta``, ``now``, ``random``, ``env``.
- :class:`MutationCtx`: ``db`` (writer), ``auth``, ``storage`` (writer), ``scheduler``,
  ``run_query``, ``run_mutation`` (a sub-transaction), ``meta``, ``now``, ``random``,
  ``env``.
- :class:`ActionCtx`: ``auth``, ``env``, ``storage``, ``scheduler`` and awaitable ``run_query``,
  ``run_mutation``, ``run_action``, each its own transaction.

Determinism: ``ctx.now`` (milliseconds since the epoch) is frozen when the
function starts and ``ctx.random`` is a ``random.Random`` seeded per run, so
a mutation re-run after a conflict computes from a fresh snapshot with the
same arguments and no hidden inputs. Handlers must not do I/O: side effects
belong in actions.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import random
from collections.abc import Callable, Coroutine, Mapping
from types import CoroutineType, MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from . import limits, vectors
from .errors import VectorSearchError, unavailable_attribute
from .files import StorageActionWriter, StorageReader, StorageWriter
from .readers import Absent, DatabaseReader, DatabaseWriter, visible_names
from .vectors import VectorFilterBuilder

if TYPE_CHECKING:
    from .functions import Kind, Runtime
    from .limits import TransactionLimits, TransactionMetrics
    from .scheduler import Scheduler
    from .transaction import Transaction

__all__ = [
    "ActionCtx",
    "Auth",
    "MutationCtx",
    "MutationMeta",
    "QueryCtx",
    "QueryMeta",
    "UnverifiedIdentity",
]


class UnverifiedIdentity:
    """The identity of an HTTP request whose ``Authorization`` header did not verify.

    Convex lets such a request reach its HTTP action and makes
    ``ctx.auth.get_user_identity()`` raise there (convex-backend#120): :class:`Auth`
    raises ``error`` when asked for this identity, also in the functions the action
    runs with ``ctx.run_query`` and friends.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"UnverifiedIdentity({self.error!r})"


class Auth:
    """``ctx.auth``: the caller's identity, as verified by the configured provider."""

    __slots__ = ("_identity",)

    def __init__(self, identity: Any) -> None:
        self._identity = identity

    def get_user_identity(self) -> Any:
        """The caller's ``UserIdentity``, or None when the call carried no token.

        In an HTTP action whose request had an ``Authorization`` header that did not
        verify, raises the verification error (as Convex does).
        """
        identity = self._identity
        if type(identity) is UnverifiedIdentity:
            raise identity.error.with_traceback(None)
        return identity

    def __repr__(self) -> str:
        return f"Auth({self._identity!r})"


class QueryMeta:
    """``ctx.meta`` of a query: facts about the running function's transaction.

    Of Convex's ``QueryMeta``, convexlite has ``get_transaction_metrics``
    (``getFunctionMetadata`` and ``getDeploymentMetadata`` are not implemented).
    """

    __slots__ = ("_txn",)

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn

    def get_transaction_metrics(self) -> TransactionMetrics:
        """How much of each of Convex's transaction limits is used, and how much remains.

        Returns a dict with Convex's keys ``bytesRead``, ``bytesWritten``,
        ``databaseQueries`` (ranges read, adjacent ones merged), ``documentsRead``,
        ``documentsWritten``, ``functionsScheduled``, ``scheduledFunctionArgsBytes``,
        each ``{"used": int, "remaining": int}``, for the whole transaction: the
        caller's and nested calls' use together, as Convex counts it. ``remaining`` is
        against the limits in force (lower inside a ``run_query`` / ``run_mutation``
        given ``transaction_limits``); it is negative once a read past a limit was
        counted and its ``LimitExceeded`` caught. All seven limits are enforced; bytes
        are convexlite's stored (msgpack) size of documents, near Convex's size
        formula, and scheduled arguments are measured by Convex's formula. See
        :mod:`engine.limits`.

        Cost: a few µs: the ranges read since the last call are merged into the
        count (a bisection each), then a small dict per key; plus ~0.1 µs per query
        of the transaction that stopped before its end (a mutation's ``first()``,
        ``unique()``, ``take(n)``), which may be resumed, so is looked at each time.

        Example::

            @mutation
            def clear(ctx):
                for task in ctx.db.query("tasks"):
                    ctx.db.delete(task["_id"])
                    if ctx.meta.get_transaction_metrics()["documentsWritten"]["remaining"] < 100:
                        ctx.scheduler.run_after(0, "tasks:clear")  # go on in a new one
                        break

        Raises nothing (an action has no ``ctx.meta``: it is no transaction).
        """
        return limits.metrics(self._txn)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class MutationMeta(QueryMeta):
    """``ctx.meta`` of a mutation: :meth:`get_transaction_metrics` as a query's
    (Convex's ``getRequestMetadata`` is not implemented)."""

    __slots__ = ()


_EMPTY_ENV: Mapping[str, str] = MappingProxyType({})
#: ``ctx.auth`` of every call without an identity (Auth is immutable).
_NO_AUTH = Auth(None)


#: Draws each run's ``ctx.random`` seed (cheap: no OS call per run).
_SEEDS = random.Random(os.urandom(16))


def _reseed_after_fork() -> None:
    # A fork child inherits the generator's state: without a fresh seed, parent and
    # child would hand their functions the same ctx.random sequences.
    _SEEDS.seed(os.urandom(16))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)


class _Elsewhere(Absent):
    """A name a query's or mutation's ``ctx`` lacks (``ctx.scheduler`` in a query):
    reading it raises the AttributeError that says where it is available."""

    __slots__ = ()

    def missing(self, obj: object) -> NoReturn:
        _unavailable(obj, self.name, "query" if type(obj) is QueryCtx else "mutation")


class QueryCtx:
    """The context of a query: read-only database access.

    Example::

        @query(args={"channel": v.string()})
        def count(ctx, channel):
            return len(ctx.db.query("messages").with_index(
                "by_channel", lambda q: q.eq("channel", channel)).collect())
    """

    __slots__ = ("_depth", "_random", "_runtime", "_seed", "_txn", "auth", "db", "env", "now")

    def __init__(
        self,
        runtime: Runtime | None,
        txn: Transaction,
        identity: Any,
        now: float,
        seed: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._runtime = runtime
        self._txn = txn
        self._depth = 0  # nesting of ctx.run_query / ctx.run_mutation
        self.db: DatabaseReader = self._reader(txn)
        self.auth = _NO_AUTH if identity is None else Auth(identity)
        self.now = now
        self._seed = seed
        self._random: random.Random | None = None
        self.env = env if env is not None else _EMPTY_ENV

    @property
    def random(self) -> random.Random:
        """A ``random.Random`` seeded for this run (made on first use: seeding costs µs)."""
        rng = self._random
        if rng is None:
            seed = self._seed
            rng = self._random = random.Random(_SEEDS.getrandbits(64) if seed is None else seed)
        return rng

    #: The class of ``ctx.db`` (a class attribute, not a method: one call less per run).
    _reader: Any = DatabaseReader

    if TYPE_CHECKING:  # as before: type checkers let any name through

        def __getattr__(self, name: str) -> Any: ...

    else:
        # "'QueryCtx' object has no attribute 'scheduler'" did not say where the
        # attribute is: these do (MutationCtx defines its own scheduler and
        # run_mutation; see Absent).
        scheduler = _Elsewhere()
        run_mutation = _Elsewhere()
        run_action = _Elsewhere()
        vector_search = _Elsewhere()

    def __dir__(self) -> list[str]:
        return visible_names(self)  # without the names above (a mutation's own stay)

    @property
    def storage(self) -> StorageReader:
        """``ctx.storage``: file URLs and metadata (see :mod:`engine.files`).

        Made on each use (cheap, and nothing to set up for the runs that never
        touch files).
        """
        return StorageReader(self._txn, self._runtime)

    @property
    def meta(self) -> QueryMeta:
        """``ctx.meta``: :meth:`QueryMeta.get_transaction_metrics` (made on each use)."""
        return QueryMeta(self._txn)

    def run_query(
        self,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        transaction_limits: TransactionLimits | None = None,
    ) -> Any:
        """Run another query inside this transaction (same snapshot, same identity).

        ``transaction_limits`` (Convex's ``transactionLimits``): a dict of any of
        :meth:`QueryMeta.get_transaction_metrics`'s keys, each how much *more* the
        nested call may use, e.g. ``{"documentsRead": 100}``; past it the call raises
        :class:`LimitExceeded` as at Convex's own limits. Limits only go down: a value
        past the limit in force keeps that limit, a key left out keeps it too; the
        caller's limits are back when the call returns or raises. A budget that is not
        such a dict raises :class:`ValidationError`.
        """
        if self._runtime is None:
            raise RuntimeError("run_query needs functions registered with Engine.open")
        if transaction_limits is not None:
            return _run_limited(self._runtime, self, ref, args, "query", transaction_limits)
        return self._runtime.nested(self, ref, args, kind="query")


class MutationCtx(QueryCtx):
    """The context of a mutation: read-write database access, sub-transactions."""

    #: ``_scheduler`` is set on first use (queries never pay for it); a nested
    #: ``run_mutation`` shares its caller's, so the per-mutation limit counts both.
    __slots__ = ("_scheduler",)

    db: DatabaseWriter
    _scheduler: Scheduler

    _reader = DatabaseWriter

    @property
    def meta(self) -> MutationMeta:
        """``ctx.meta``: :meth:`QueryMeta.get_transaction_metrics` (made on each use)."""
        return MutationMeta(self._txn)

    @property
    def storage(self) -> StorageWriter:
        """``ctx.storage``: the reader plus ``generate_upload_url`` and ``delete``
        (transactional: a rollback keeps the file)."""
        return StorageWriter(self._txn, self._runtime)

    @property
    def scheduler(self) -> Scheduler:
        """``ctx.scheduler``: ``run_after``, ``run_at``, ``cancel``, part of this transaction.

        Example::

            ctx.scheduler.run_after(60, "messages:destruct", {"id": message_id})
        """
        try:
            return self._scheduler
        except AttributeError:
            if self._runtime is None:
                raise RuntimeError(
                    "ctx.scheduler needs functions registered with Engine.open"
                ) from None
            from .scheduler import Scheduler, current_job

            job = current_job.get()  # set while a scheduled action runs this mutation
            scheduler = self._scheduler = Scheduler(
                self._runtime, self._txn, self.now, parent_job=job, own_job=job
            )
            return scheduler

    def run_mutation(
        self,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        transaction_limits: TransactionLimits | None = None,
    ) -> Any:
        """Run another mutation as a sub-transaction of this one.

        If it raises and the caller catches the error, only its writes are
        rolled back; otherwise its writes commit with the caller's.
        ``transaction_limits`` lowers the limits for the call, as in :meth:`run_query`;
        a caller can so keep room for what it does after the call, even when the call
        fails::

            left = ctx.meta.get_transaction_metrics()["documentsWritten"]["remaining"]
            try:
                ctx.run_mutation(
                    "tasks:process", {}, transaction_limits={"documentsWritten": left - 10}
                )
            except LimitExceeded:
                ctx.db.insert("log", {"failed": True})  # room is left for this write
        """
        if self._runtime is None:
            raise RuntimeError("run_mutation needs functions registered with Engine.open")
        if transaction_limits is not None:
            return _run_limited(self._runtime, self, ref, args, "mutation", transaction_limits)
        return self._runtime.nested(self, ref, args, kind="mutation")


class ActionCtx:
    """The context of an action: no ``db``; each ``run_*`` call is its own transaction."""

    __slots__ = ("_runtime", "_scheduler", "auth", "env", "identity")

    def __init__(
        self, runtime: Runtime, identity: Any, env: Mapping[str, str] | None = None
    ) -> None:
        self._runtime = runtime
        self.identity = identity
        self.auth = Auth(identity)
        self.env = env if env is not None else _EMPTY_ENV
        self._scheduler: Scheduler | None = None

    def __getattr__(self, name: str) -> Any:
        _unavailable(self, name, "action")

    @property
    def scheduler(self) -> Scheduler:
        """``ctx.scheduler``: each call commits its own transaction at once.

        What is scheduled stays scheduled even if the action fails afterwards.
        The methods are plain (not ``async``): each is one short commit; what they
        return may also be awaited (``await ctx.scheduler.run_after(...)``, as in Convex).
        """
        scheduler = self._scheduler
        if scheduler is None:
            from .scheduler import Scheduler, current_job

            job = current_job.get()  # the job of the scheduled action this runs in, if any
            scheduler = self._scheduler = Scheduler(self._runtime, None, parent_job=job)
        return scheduler

    @property
    def storage(self) -> StorageActionWriter:
        """``ctx.storage``: awaitable ``store``, ``get``, ``get_url``, ``delete``,
        ``generate_upload_url``, ``get_metadata``; each call is its own transaction."""
        return StorageActionWriter(self._runtime)

    def run_query(self, ref: Any, args: dict[str, Any] | None = None) -> Coroutine[Any, Any, Any]:
        """Run a query in its own read transaction, as the caller's identity (await it).

        The arguments are taken when the call is made, as Convex serializes them then:
        changing the dict afterwards (before the call is awaited, or while it runs on
        a worker thread) does not reach the query.
        """
        return self._call(ref, args, "query")

    def run_mutation(
        self, ref: Any, args: dict[str, Any] | None = None
    ) -> Coroutine[Any, Any, Any]:
        """Run a mutation in its own transaction, as the caller's identity (await it).

        The arguments are taken when the call is made (see :meth:`run_query`).
        """
        return self._call(ref, args, "mutation")

    def run_action(self, ref: Any, args: dict[str, Any] | None = None) -> Coroutine[Any, Any, Any]:
        """Run another action, as the caller's identity (await it).

        The arguments are taken when the call is made (see :meth:`run_query`).
        """
        return self._call(ref, args, "action")

    def _call(self, ref: Any, args: Any, kind: Kind) -> Coroutine[Any, Any, Any]:
        call = self._runtime.acall(ref, taken(args), self.identity, kind=kind, internal=True)
        if isinstance(call, CoroutineType):  # Python's "coroutine ... was never awaited"
            call.__qualname__ = f"ActionCtx.run_{kind}"  # then names the call made
        return call

    async def vector_search(
        self,
        table: str,
        index: str,
        query: Mapping[str, Any] | None = None,
        *,
        vector: Any = None,
        limit: float | None = None,
        filter: Callable[[VectorFilterBuilder], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Convex's ``ctx.vectorSearch``: the documents nearest to ``vector`` in vector
        index ``index`` of ``table``, as ``[{"_id": id, "_score": cosine similarity}]``,
        best first (see :mod:`engine.vectors`).

        ``limit`` is 1 to 256 (default 10); ``filter`` is ``lambda q: q.eq(field, value)``
        or an ``q.or_(...)`` of such, on the index's filter fields. Convex's form, one
        dict ``{"vector": ..., "limit": ..., "filter": ...}``, works too. Reads the
        latest commit, in a worker thread; load the documents with ``ctx.run_query``.

        Example::

            results = await ctx.vector_search(
                "foods", "by_embedding", vector=embedding, limit=16,
                filter=lambda q: q.or_(q.eq("cuisine", "French"), q.eq("cuisine", "Thai")),
            )
        """
        if query is not None:
            if vector is not None or limit is not None or filter is not None:
                raise VectorSearchError(
                    "vector_search takes its query as keywords (vector=..., limit=..., "
                    "filter=...) or as Convex's dict ({'vector': ..., 'limit': ...}), not both.",
                    code="InvalidVectorSearch",
                )
            if not isinstance(query, Mapping):
                raise VectorSearchError(
                    f'vector_search expects {{"vector": [...], "limit": n}}, got {query!r:.60}',
                    code="InvalidVectorSearch",
                )
            unknown = sorted(set(query) - {"vector", "limit", "filter"})
            if unknown:
                raise VectorSearchError(
                    f"vector_search: unknown query keys {unknown}; expected vector, limit "
                    "and filter.",
                    code="InvalidVectorSearch",
                )
            vector, limit, filter = query.get("vector"), query.get("limit"), query.get("filter")
        db = self._runtime.db
        search = functools.partial(
            vectors.vector_search,
            db,
            table,
            index,
            vector,
            limit=limit,
            filter=filter,
        )
        # Counted as a running call (close() waits for it) and refused with the engine's
        # closed error once it is closing (the search's LMDB txn raised LMDB's
        # "closed/deleted/dropped object" then); the search's snapshot is its only one.
        counted = functools.partial(db.counted, search)
        # In the action's context, as asyncio.to_thread would run it: a filter callback
        # may read the action's context variables.
        run = contextvars.copy_context().run
        found: list[dict[str, Any]] = await asyncio.get_running_loop().run_in_executor(
            vectors.executor(), run, counted
        )
        return found


#: How deep :func:`taken` copies: past Convex's nesting limit (64), validation refuses
#: the arguments anyway, and a cycle is not followed for ever.
_TAKEN_DEPTH = 66


def taken(value: Any, depth: int = 0) -> Any:
    """A call's arguments as they are now (an action's ``ctx.run_*``, the host's
    ``Engine.aquery``/``amutation``/``aaction``): their lists and objects (tuples,
    ``bytearray`` and ``memoryview`` too) copied, since the call reads them only when
    it runs. Anything else is kept as it is, for the call's validation to judge.
    Cost: one container per list or object in the arguments."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if depth > _TAKEN_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: taken(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [taken(v, depth + 1) for v in value]
    if isinstance(value, bytearray | memoryview):
        try:
            return bytes(value)
        except (ValueError, TypeError):  # a released view: validation says what it is
            return value
    return value


def _run_limited(
    runtime: Runtime, ctx: QueryCtx, ref: Any, args: Any, kind: Kind, budget: object
) -> Any:
    """A nested call under ``transaction_limits=budget`` (:func:`engine.limits.limited`)."""
    with limits.limited(ctx._txn, budget):
        return runtime.nested(ctx, ref, args, kind=kind)


#: What a context of each kind lacks, and where to find it instead.
_ELSEWHERE = {
    "scheduler": {
        "query": "a query only reads; schedule from a mutation or an action",
    },
    "run_mutation": {
        "query": "a query only reads; call mutations from a mutation or an action",
    },
    "run_action": {
        "query": "actions run from actions only",
        "mutation": "a mutation cannot run an action (its effects would outlive a mutation "
        "that fails); schedule it with ctx.scheduler.run_after(0, ...) instead",
    },
    "db": {
        "action": "an action has no database of its own; read and write through "
        "ctx.run_query and ctx.run_mutation",
    },
    # Convex's ActionMeta has no getTransactionMetrics ("getTransactionMetrics() can only
    # be called from a query or mutation"), and convexlite none of ActionMeta's others.
    "meta": {
        "action": "get_transaction_metrics() can only be called from a query or mutation; "
        "it is not available in actions, which are no transaction (each ctx.run_query and "
        "ctx.run_mutation is its own). Call ctx.meta.get_transaction_metrics() inside the "
        "query or mutation the action runs",
    },
    # Convex's vectorSearch is on ActionCtx alone: a search is no transaction's read.
    "vector_search": {
        "query": "vector search runs in actions only, as in Convex; search from an action "
        "and load the documents with ctx.run_query",
        "mutation": "vector search runs in actions only, as in Convex; search from an "
        "action, then write with ctx.run_mutation",
    },
    "now": {"action": "an action may read the clock itself (time.time() * 1000)"},
    "random": {"action": "an action may use the random module itself"},
}


def _unavailable(ctx: object, name: str, kind: str) -> NoReturn:
    """Raise the AttributeError for ``ctx.<name>``, saying where it is when it exists elsewhere."""
    unavailable_attribute(ctx, name, f"ctx.{name}", kind, _ELSEWHERE.get(name, {}).get(kind))
