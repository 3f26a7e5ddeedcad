"""Reactive subscriptions: re-run a query only when a commit touches what it read.

One worker thread per open database (started by the first subscription,
stopped with the last) follows the ``log``. For each batch of new commits it:

1. opens one LMDB snapshot at the newest commit ``ts``;
2. asks the :class:`~engine.intervals.IntervalIndex` which watched queries
   hold a read interval containing any key those commits wrote (old or new
   index keys), so the cost follows the queries affected, not the number open;
3. re-runs exactly those queries on that one snapshot, and runs the initial
   execution of queries subscribed since;
4. publishes every changed result, all at the same ``ts``, and wakes the
   iterations; a result equal to the previous one is not delivered again. The
   callbacks hear of each result in order on a thread of their own (the callback
   thread), so a slow or blocked callback never holds up the worker.

Commits made through this process wake the worker at once, and the mutation
call returns only after the worker has caught up with its commit
(read-your-writes). Commits of other processes are found by polling
the head every :attr:`SubscriptionManager.poll_interval` seconds.

Identical subscriptions (same function, arguments and identity) share one
execution.

A subscription made with a token ends when the token expires (Convex ends the
session with ``TokenExpired``): the worker keeps the subscriptions' deadlines
(:class:`~engine.deadlines.Deadlines`) and, when one is due, asks the token how
long it has left; once it has none, that subscription alone ends with the
provider's error. A paginated query keeps its page boundary across re-runs: the end
cursor of its first run is remembered (Convex's query journal) and later runs
return exactly ``(cursor, endCursor]``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import queue
import struct
import threading
import time
import traceback
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from . import keys
from .deadlines import Deadlines
from .encoding import decode, encode
from .errors import EngineError, closed_error
from .functions import fresh_args
from .intervals import IntervalIndex
from .storage import ReadersFull

if TYPE_CHECKING:
    from .catalog import Catalog
    from .database import Database
    from .functions import FunctionDef, Runtime

__all__ = ["Subscription", "SubscriptionManager", "SubscriptionSet"]


def _forget_frames(error: BaseException) -> None:
    """Clear the locals of the finished frames in ``error``'s tracebacks (and its
    causes'): a stored error kept the snapshot's LMDB txn alive through them, holding a
    reader slot per failing subscription (1,022 filled the table) and the environment
    (a fork child could not reopen the folder). File names and lines stay."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        if current.__traceback__ is not None:
            # A finished frame links to its caller's frame (f_back): the re-run's
            # callers, whose locals held the txn. Frames still running are skipped.
            frame = current.__traceback__.tb_frame.f_back
            while frame is not None:
                try:
                    frame.clear()
                except RuntimeError:
                    pass
                frame = frame.f_back
        current = current.__cause__ or current.__context__


def _worker_failed(
    error: BaseException, what: str = "The subscription worker failed"
) -> EngineError:
    failure = EngineError(
        f"{what} ({type(error).__name__}: {error}); this "
        "subscription no longer follows its query. Subscribe again."
    )
    failure.__cause__ = error
    return failure


#: (the version of a published outcome, a function giving its value or raising its error)
_Versioned = tuple[Any, Callable[[], Any]]
#: How the manager holds a subscription: the object itself when it has a callback (it is
#: followed for the callback's sake, kept handle or not), else a weak reference (a handle
#: dropped without close() is let go: see SubscriptionManager._let_go).
_Entry: TypeAlias = "Subscription | weakref.ReferenceType[Subscription]"

_U64 = struct.Struct(">Q")
_log = logging.getLogger("convexlite.subscriptions")
_NOTHING: Any = object()


def _nothing(txn: Any) -> None:
    """A read that reads nothing: its snapshot timestamp is the head's."""


class _Watched:
    """One shared execution: a query, its arguments and identity, and its last result."""

    __slots__ = (
        "args",
        "error",
        "error_tb",
        "function",
        "identity",
        "journal",
        "key",
        "name",
        "published",
        "result",
        "result_bytes",
        "runtime",
        "subscribers",
        "ts",
        "version",
    )

    def __init__(
        self,
        key: Any,
        runtime: Runtime,
        name: str,
        function: FunctionDef,
        args: dict[str, Any],
        identity: Any,
    ) -> None:
        self.key = key
        self.runtime = runtime
        self.name = name
        self.function = function
        self.args = args
        self.identity = identity
        self.journal: dict[str, Any] = {}
        self.result: Any = _NOTHING
        self.result_bytes: bytes | None = None
        #: (result, its bytes), replaced as one: what copy_of reads from other threads.
        self.published: tuple[Any, bytes] | None = None
        self.error: BaseException | None = None
        #: The stored error and the traceback it had when the query raised it.
        self.error_tb: tuple[BaseException, TracebackType | None] | None = None
        self.ts = 0
        #: Counts the outcomes published (a new result or error), for iterations.
        self.version = 0
        #: Who follows this execution, as the manager holds them (see :data:`_Entry`).
        self.subscribers: list[_Entry] = []

    def live_subscribers(self) -> list[Subscription]:
        """The subscriptions following this execution, those let go left out."""
        return [s for s in map(_live, self.subscribers) if s is not None]

    def detached(self) -> _Watched:
        """A copy of the published outcome that no worker updates (the lock is held):
        what a closed subscription keeps."""
        kept = _Watched(self.key, self.runtime, self.name, self.function, self.args, self.identity)
        kept.result, kept.result_bytes, kept.published = (
            self.result,
            self.result_bytes,
            self.published,
        )
        kept.error, kept.error_tb, kept.ts, kept.version = (
            self.error,
            self.error_tb,
            self.ts,
            self.version,
        )
        return kept

    def copy_of(self, result: Any) -> Any:
        """A copy of ``result`` (a value this execution published) that nothing else
        holds: decoded from the stored bytes while they are ``result``'s (any thread)."""
        if type(result) not in (dict, list):
            return result  # immutable
        published = self.published  # one read: the worker replaces the pair as one
        if published is not None and published[0] is result:
            return decode(published[1])
        return decode(encode(result))

    def outcome(self) -> tuple[Any, BaseException | None]:
        """The published result, or the error (with the query's traceback)."""
        error = self.failure()
        return (None, error) if error is not None else (self.result, None)

    def failure(self) -> BaseException | None:
        """The stored error, its traceback set back to the query's own: raising one
        exception object again adds the raiser's frames to its traceback, so every read
        of a failing subscription grew the stored chain (and kept the readers' frames
        and locals alive)."""
        error = self.error
        if error is None:
            return None
        pair = self.error_tb
        return error.with_traceback(pair[1] if pair is not None and pair[0] is error else None)


def _live(entry: _Entry) -> Subscription | None:
    """The subscription ``entry`` holds (None: its handle was dropped and collected)."""
    return entry if type(entry) is Subscription else entry()  # type: ignore[operator]


class _Notifier:
    """Wakes blocked iterators (threads) when new values are published."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Counts the wake-ups: each iteration waits for one it has not seen (a shared
        #: flag, cleared by the first iteration to wake, left the others asleep).
        self._wakes = 0
        self._closed = False
        #: Why the subscriptions stopped, if their worker failed or a callback raised
        #: what is not an Exception (iteration raises it), and which of the two it was.
        self._failure: BaseException | None = None
        self._failed = "The subscription worker failed"
        #: Why this subscription ended (its token expired): ``.value`` and iteration raise it.
        self._ended: BaseException | None = None
        #: The version of the last failed outcome an iteration raised: a new iteration
        #: waits for the next outcome rather than raise it again (see _follow).
        self._raised: Any = None
        #: The event loops of ``async for`` iterations, and the event each waits on.
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def _raise_if_stopped(self) -> None:
        """Raise why following stopped: the worker failed, or the token expired."""
        if self._failure is not None:
            raise _worker_failed(self._failure, self._failed)
        if self._ended is not None:
            raise self._ended.with_traceback(None)

    def _wake(self) -> None:
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()
        for loop, event in list(self._async_waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed
                pass

    def _current(self) -> _Versioned:
        """The version of what was published, and a function giving the value (or
        raising the error), read together."""
        raise NotImplementedError

    def _follow(self, current: Callable[[], _Versioned]) -> Iterator[Any]:
        """The value now, then again after each wake-up that brought a new one, until
        closed. ``current()`` gives the version of what was published and a function
        giving the value (or raising the error), read together: a wake-up for a value
        already yielded (read early, when the commit that woke us had already been
        followed by another) yields nothing.

        A closed notifier yields nothing; one whose worker failed raises.
        """
        with self._cond:
            woken = self._wakes
        self._raise_if_stopped()  # the worker failed, or the token expired, before this began
        if self._closed:
            return
        seen, value = current()
        if seen != self._raised:
            yield self._iterated(seen, value)
        while True:
            with self._cond:
                while self._wakes == woken and not self._closed:
                    self._cond.wait()
                woken = self._wakes
            self._raise_if_stopped()
            if self._closed:
                return
            version, value = current()
            if version != seen:
                seen = version
                yield self._iterated(version, value)

    def _iterated(self, version: Any, value: Callable[[], Any]) -> Any:
        """``value()``; if it raises (the query failed), note ``version`` as raised.

        An iteration that begins on a failed outcome another iteration already raised
        skips it and waits for the next one: so the retry loop the docs suggest
        (``while True: try: for v in sub: ... except ...``) blocks until a commit
        changes the outcome, instead of raising the same error again at full speed.
        ``.value`` still raises it every time.
        """
        try:
            return value()
        except BaseException:
            self._raised = version
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[Any]:
        """:meth:`_follow` for ``async for``: it waits on an :class:`asyncio.Event` of the
        iterating loop, which :meth:`_wake` sets from the worker's thread."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        self._async_waiters.append(waiter)
        try:
            self._raise_if_stopped()
            if self._closed:
                return
            seen, value = self._current()
            if seen != self._raised:  # else an error an iteration raised: see _iterated
                yield self._iterated(seen, value)
            while not self._closed:
                await event.wait()
                event.clear()
                self._raise_if_stopped()
                if self._closed:
                    return
                version, value = self._current()
                if version != seen:  # else woken for a value already yielded
                    seen = version
                    yield self._iterated(version, value)
            self._raise_if_stopped()  # ended while the value was being consumed
        finally:
            self._async_waiters.remove(waiter)

    def _fail(self, error: BaseException, what: str) -> None:
        """End iterations with ``error`` (``what``: the worker died, or a callback raised
        what is not an Exception)."""
        self._failure = error
        self._failed = what
        self._closed = True
        self._wake()

    def _end(self, error: BaseException) -> None:
        """Stop following because ``error`` (the token expired); ``.value`` raises it."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription(_Notifier):
    """A live query result: ``.value``, iteration, async iteration, ``close()``.

    Iteration yields the current value first, then each changed value; it
    ends when the subscription is closed. A slow consumer sees the newest
    value, not every intermediate one. If a re-run raises, iteration raises
    that error (and ``.value`` does too) until a later commit fixes the data;
    iterate again to keep following it: a new iteration does not raise again an
    error an iteration already raised, it waits for the next outcome.

    Example::

        with engine.subscribe("messages:list", {"channel": "general"}) as sub:
            for messages in sub:
                render(messages)
    """

    def __init__(
        self,
        manager: SubscriptionManager,
        watched: _Watched,
        callback: Callable[[Any], None] | None,
        on_error: Callable[[BaseException], None] | None,
    ) -> None:
        super().__init__()
        self._manager = manager
        self._watched = watched
        self._callback = callback
        self._on_error = on_error
        self._sets: list[SubscriptionSet] = []
        #: True once a value or error was delivered (a joiner's first value is sent once).
        self._delivered = False
        #: Seconds the subscription's token has left (raises once none): see Engine.subscribe.
        self._expiry: Callable[[], float] | None = None
        #: (a published result, this subscription's own copy of it): see _mine.
        self._copy: tuple[Any, Any] | None = None
        #: The head's commit timestamp when subscribe() was called: results of older
        #: snapshots are not for it (it may join while the worker re-runs on one).
        self._since = 0
        #: The manager's weak reference to this subscription, if it has no callback.
        self._ref: weakref.ReferenceType[Subscription] | None = None

    def _entry(self) -> _Entry:
        """How the manager holds this subscription (see :data:`_Entry`)."""
        ref = self._ref
        return self if ref is None else ref

    def _mine(self, result: Any) -> Any:
        """This subscription's own copy of the published ``result`` for ``.value`` and
        iterations, made once per result (callbacks get copies of their own).

        Identical subscriptions share one execution, and so one result object: handed
        out as is, a caller sorting ``value["page"]`` in place changed what every other
        subscriber (and a later ``.value``) saw. Cost: one decode of the stored result
        per result and subscription that reads it.
        """
        copy = self._copy
        if copy is not None and copy[0] is result:
            return copy[1]
        mine = self._watched.copy_of(result)
        self._copy = (result, mine)
        return mine

    def _published(self) -> Any:
        """The newest result as published (shared: not for handing out), or raise."""
        self._raise_if_stopped()
        watched = self._watched
        error = watched.failure()
        if error is not None:
            raise error
        return watched.result

    @property
    def value(self) -> Any:
        """The newest result (raises the newest error if the last run failed, and
        ``EngineError`` if the subscription worker failed: the value is stale)."""
        return self._mine(self._published())

    @property
    def ts(self) -> int:
        """The commit timestamp of the snapshot the newest result was computed at."""
        return self._watched.ts

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop following the query. Idempotent; ends running iterations."""
        if self._closed:
            return
        self._closed = True
        self._manager._unsubscribe(self)
        self._wake()

    def _fail(self, error: BaseException, what: str) -> None:
        self._manager._unsubscribe(self)
        super()._fail(error, what)

    def _end(self, error: BaseException) -> None:
        """The token expired (on the worker): unsubscribe, tell ``on_error``, wake iterations."""
        if self._closed:
            return
        self._ended = error
        self._closed = True
        self._manager._unsubscribe(self)
        on_error = self._on_error
        if on_error is not None:
            self._manager._callbacks_later(lambda: self._tell(on_error, error))
        self._wake()
        for member_of in self._sets:
            member_of._end(error)

    def _tell(self, function: Callable[[Any], None], value: Any) -> None:
        """Run one callback (on the callback thread), logging what it raises."""
        try:
            function(value)
        except Exception:
            # A failing callback must not stop the deliveries of every other subscription.
            _log.exception("subscription callback for %s raised", self._watched.name)

    def _deliver(self, outcome: tuple[Any, BaseException | None]) -> None:
        """Called by the worker once ``outcome`` (a result, or an error with the
        query's traceback) was published for this subscription: its callback or
        ``on_error`` hears of it on the callback thread, in order, with that very
        outcome (a later one may be published meanwhile: each is heard of once)."""
        if self._closed:
            return
        self._delivered = True
        result, error = outcome
        if error is None:
            callback = self._callback
            if callback is not None:
                watched = self._watched
                self._manager._callbacks_later(
                    lambda: self._callback_now(callback, result, watched.copy_of)
                )
            return
        on_error = self._on_error
        if on_error is not None:
            pair = self._watched.error_tb  # the query's traceback (a raise adds to it)
            tb = pair[1] if pair is not None and pair[0] is error else None
            self._manager._callbacks_later(
                lambda: self._callback_now(on_error, error.with_traceback(tb))
            )

    def _callback_now(
        self,
        function: Callable[[Any], None],
        value: Any,
        copy: Callable[[Any], Any] | None = None,
    ) -> None:
        """Run a callback (on the callback thread) unless the subscription closed
        meanwhile; ``copy``: give it its own copy of ``value``, made only now."""
        if not self._closed:  # closed by an earlier callback: it hears nothing more
            self._tell(function, value if copy is None else copy(value))

    def _current(self) -> _Versioned:
        """The version of the published outcome, and a function giving its value (or
        raising its error), read together under the manager's lock."""
        with self._manager._lock:
            watched = self._watched
            version, error, result = watched.version, watched.failure(), watched.result
        if error is not None:

            def fail() -> Any:
                raise error

            return version, fail
        return version, lambda: self._mine(result)

    def __iter__(self) -> Iterator[Any]:
        return self._follow(self._current)


class SubscriptionSet(_Notifier):
    """Several queries watched together, always seen at one commit timestamp.

    ``.value`` is a dict of the queries' newest results, all computed on the
    same snapshot; iteration (``for`` or ``async for``) yields such a dict first and
    after each change, until the set is closed.

    Example::

        with engine.subscribe_set({"me": ("users:me", {}),
                                   "inbox": ("messages:inbox", {})}) as live:
            for state in live:
                render(state["me"], state["inbox"])
    """

    def __init__(self, manager: SubscriptionManager, members: dict[str, Subscription]) -> None:
        super().__init__()
        self._manager = manager
        self._members = members
        #: The timestamp the members' kept values are at, once closed (see close).
        self._closed_ts: int | None = None
        for subscription in members.values():
            subscription._sets.append(self)
        manager._track(self)

    @property
    def value(self) -> dict[str, Any]:
        """Every member's newest result, from one snapshot (raises a member's error)."""
        self._raise_if_stopped()
        with self._manager._lock:  # one snapshot; the copies are made outside the lock
            published = {name: sub._published() for name, sub in self._members.items()}
        return {name: self._members[name]._mine(r) for name, r in published.items()}

    @property
    def ts(self) -> int:
        """The commit timestamp the values are consistent at (once closed, that of the
        values the members keep: it no longer moves with other subscriptions)."""
        closed_ts = self._closed_ts
        return self._manager.ts if closed_ts is None else closed_ts

    def close(self) -> None:
        """Close every member. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Under one lock, so that the results the members keep are of one snapshot.
        members = [s for s in self._members.values() if not s._closed]
        for subscription in members:
            subscription._closed = True
        self._closed_ts = self._manager._unsubscribe(*members)
        for subscription in members:
            subscription._wake()
        self._wake()

    def _end(self, error: BaseException) -> None:
        """A member's token expired: the set ends with its error (members share a token)."""
        if not self._closed:
            self._ended = error
            self.close()

    def _current(self) -> _Versioned:
        """The members' versions and a function giving their values (or raising a
        member's error), read together under the manager's lock."""
        with self._manager._lock:
            version = tuple(sub._watched.version for sub in self._members.values())
            try:
                published = {name: sub._published() for name, sub in self._members.items()}
            except Exception as error:
                failure = error

                def fail() -> Any:
                    raise failure

                return version, fail
        members = self._members
        return version, lambda: {name: members[name]._mine(r) for name, r in published.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._follow(self._current)


class SubscriptionManager:
    """The subscriptions of one database in this process, and their worker thread."""

    #: Seconds between checks for commits made by other processes.
    poll_interval = 0.02
    #: How long the worker keeps trying while LMDB's reader table stays full before the
    #: subscriptions end with the StorageError.
    readers_full_patience = 10.0

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Condition(threading.Lock())
        self._watched: dict[Any, _Watched] = {}
        self._new: list[_Watched] = []
        #: Subscriptions that joined an execution which already had a value: the
        #: worker delivers that value to them once (their callback's first value).
        self._joined: list[Subscription] = []
        self._fresh_keys = itertools.count()
        self._index = IntervalIndex()
        self._thread: threading.Thread | None = None
        #: Runs the callbacks, in order, so that a callback never holds up the worker
        #: (each worker has its own queue and callback thread).
        self._callback_thread: threading.Thread | None = None
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._stopping = False
        self._wakeup = False
        self.ts = 0
        #: The catalog the watched queries last ran against (None before the first step).
        self._catalog: Catalog | None = None
        self._worker_error: BaseException | None = None
        #: Set by :meth:`rerun_all`: the next step re-runs every watched query.
        self._rerun = False
        #: When to ask the tokens of subscriptions made with one how long they have left.
        self._deadlines: Deadlines[_Entry] = Deadlines()
        #: (execution, weak reference) of subscriptions whose handle was dropped and
        #: collected, for the worker to let go (see :meth:`_let_go`).
        #: A deque: its appends and pops are atomic, and the collector's appends always
        #: go to this one object (a list swapped for a new one could take an append made
        #: by a thread that had read the old list, after the worker had gone through it).
        self._dropped: collections.deque[tuple[_Watched, weakref.ReferenceType[Subscription]]]
        self._dropped = collections.deque()
        #: The sets made, which shutdown() closes: one with no members is reached through
        #: no subscription, and its iterations would wait for ever.
        self._sets: weakref.WeakSet[SubscriptionSet] = weakref.WeakSet()
        db.listeners.append(self._on_commit)

    # -- subscribing ---------------------------------------------------------

    def subscribe(
        self,
        runtime: Runtime,
        ref: Any,
        args: Any,
        identity: Any,
        callback: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        expiry: Callable[[], float] | None = None,
    ) -> Subscription:
        """Follow a query; ``expiry()`` (seconds the identity's token has left, raising
        once none are left) ends the subscription with its error when it runs out."""
        if threading.current_thread() is self._thread:  # it would wait for itself
            raise EngineError(
                "subscribe() was called on the subscription worker thread, which runs the "
                "subscribed queries: subscribe from another thread (a callback may)."
            )
        name, function = runtime.resolve(ref, internal=False)
        if function.kind != "query":
            raise EngineError(f"Only queries can be subscribed to; {name} is a {function.kind}.")
        args = fresh_args(runtime.check_args(name, function, args))  # kept: not the caller's
        key: tuple[Any, ...] = (id(runtime), name, keys.encode(args), identity)
        deadline = None if expiry is None else time.monotonic() + expiry()
        try:  # the newest commit now, any process's (refused once the engine is closing)
            head = self._db.run(_nothing, writable=False, source="subscribe")[1]
        except ReadersFull:  # for a moment, as the worker's polls find it: wait as before
            head = 0  # for a first run only (its snapshot is no older than this call)
        with self._lock:
            if self._db.closing:  # under the lock: shutdown() collects what to close under it
                raise closed_error()
            watched = self._watched.get(key)
            if watched is not None and watched.journal:
                # It paginated: its page ends where its first run ended, and Convex
                # gives a new subscription a first page of its own (its own journal).
                key = (*key, next(self._fresh_keys))
                watched = None
            if watched is None:
                watched = _Watched(key, runtime, name, function, args, identity)
                self._watched[key] = watched
                self._new.append(watched)
            subscription = Subscription(self, watched, callback, on_error)
            subscription._since = head
            if callback is None and on_error is None:
                ref = weakref.ref(subscription, functools.partial(self._let_go, watched))
                hash(ref)  # now: Deadlines hashes it, and a dead one cannot be hashed anew
                subscription._ref = ref
            watched.subscribers.append(subscription._entry())
            if expiry is not None and deadline is not None:
                subscription._expiry = expiry
                self._deadlines.add(subscription._entry(), deadline)
            if watched.result is not _NOTHING or watched.error is not None:
                self._joined.append(subscription)
            self._ensure_worker()
            self._wakeup = True
            self._lock.notify_all()
            # A joiner waits too while the worker has not seen every commit made before
            # this call (another process's, a scheduled job's): the value it would
            # join can be older than what engine.query showed the caller just now.
            while (watched.result is _NOTHING and watched.error is None) or self.ts < head:
                if self._worker_error is not None:
                    raise EngineError("The subscription worker failed") from self._worker_error
                if subscription._closed:  # ended before a first value: its token expired,
                    if subscription._ended is not None:  # or the last close() came
                        raise subscription._ended.with_traceback(None)
                    raise closed_error()
                self._lock.wait(1.0)
            if subscription._watched is not watched:  # closed as its first value came:
                subscription._watched = watched.detached()  # it keeps that one
        return subscription

    def _track(self, followed: SubscriptionSet) -> None:
        """Note a new set for :meth:`shutdown`; close it at once if the database is
        closing (shutdown() may have collected the sets already)."""
        with self._lock:
            self._sets.add(followed)
            closing = self._db.closing
        if closing:
            followed.close()

    def _unsubscribe(self, *subscriptions: Subscription) -> int:
        """Stop serving ``subscriptions`` (a set's members under one lock). Each keeps
        the outcome it had, detached from the shared execution: an identical
        subscription still open no longer changes a closed one's ``value`` and ``ts``.
        Returns the timestamp the kept outcomes are consistent at (the worker's)."""
        with self._lock:
            for subscription in subscriptions:
                watched = subscription._watched
                entry = subscription._entry()
                if entry in watched.subscribers:
                    watched.subscribers.remove(entry)
                    self._deadlines.discard(entry)
                    subscription._watched = watched.detached()
                self._forget_if_unfollowed(watched)
            if not self._watched:
                self._stopping = True
            self._lock.notify_all()  # the worker, and a subscribe() waiting for a first value
            return self.ts

    def _forget_if_unfollowed(self, watched: _Watched) -> None:
        """Stop running ``watched`` if no subscription follows it (the lock is held)."""
        if not watched.subscribers and self._watched.get(watched.key) is watched:
            del self._watched[watched.key]
            self._index.remove(watched.key)

    def _let_go(self, watched: _Watched, ref: weakref.ReferenceType[Subscription]) -> None:
        """A subscription with no callback was collected (its handle dropped without
        close()): note it for the worker, which stops following it (:meth:`_reap`).

        Runs wherever the garbage collector runs, maybe on a thread holding the lock:
        it takes no lock (a deque append is atomic) and does nothing else. One closed
        before (its entry is gone, and a dead one is never added again) is not noted:
        it would keep its execution and wake the worker for nothing.
        """
        if ref in watched.subscribers:  # compares identities only: runs no Python code
            self._dropped.append((watched, ref))
            self._wakeup = True

    def _reap(self) -> None:
        """Let go the subscriptions collected since the last call (the lock is held).
        Cost: O(subscribers of their executions)."""
        dropped = self._dropped
        while dropped:
            watched, ref = dropped.popleft()
            if ref in watched.subscribers:
                watched.subscribers.remove(ref)
                self._deadlines.discard(ref)
            self._forget_if_unfollowed(watched)
        if not self._watched:
            self._stopping = True  # the worker ends (the caller's loop sees it)

    @property
    def active(self) -> int:
        """How many distinct query executions are being followed."""
        return len(self._watched)

    def rerun_all(self) -> None:
        """Re-run every followed query soon, and tell subscribers of the results that
        changed: something they read outside the database changed (the origin of file
        URLs, as a server starts or stops). Cost: one run of each watched query."""
        with self._lock:
            if self._watched:
                self._rerun = True
                self._wakeup = True
                self._lock.notify_all()

    # -- commits -----------------------------------------------------------------

    def _on_commit(self, requests: list[Any]) -> None:
        if self._watched:
            with self._lock:
                self._wakeup = True
                self._lock.notify_all()

    def wait_for(self, ts: int, timeout: float = 30.0) -> None:
        """Return once every subscription reflects commit ``ts`` (read-your-writes).

        The results, not the callbacks: a callback may wait on the thread that waits
        here (an app lock, a thread it joins), and waiting for it would stall both.
        Callbacks run on their own thread, so a slow or waiting callback holds up
        neither the worker nor this wait; a callback that calls the engine gets
        read-your-writes too. Returns at once on the worker thread itself.
        """
        if not self._watched or threading.current_thread() is self._thread:
            return
        with self._lock:
            self._wakeup = True
            self._lock.notify_all()
            caught_up = self._lock.wait_for(
                lambda: self.ts >= ts or not self._watched or self._thread is None, timeout
            )
        if not caught_up:
            _log.warning(
                "subscriptions had not reached commit %d after %.0f s (a callback still "
                "running?): returning without read-your-writes for them",
                ts,
                timeout,
            )

    # -- the worker ----------------------------------------------------------------

    def _ensure_worker(self) -> None:
        self._stopping = False
        if self._thread is None:
            self._worker_error = None  # a new worker: an earlier one's failure is reported
            tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
            self._queue = tasks
            self._callback_thread = threading.Thread(
                target=self._run_callbacks,
                args=(tasks,),
                name="convexlite-subscription-callbacks",
                daemon=True,
            )
            self._callback_thread.start()
            self._thread = threading.Thread(
                target=self._work, args=(tasks,), name="convexlite-subscriptions", daemon=True
            )
            self._thread.start()

    def _callbacks_later(self, task: Callable[[], None]) -> None:
        """Run ``task`` (a callback) on the callback thread, after those queued before."""
        self._queue.put(task)

    def _run_callbacks(self, tasks: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        """The callback thread: run the worker's callbacks in order until it stops.

        A callback that raises ``Exception`` is logged; one that raises anything else
        (``SystemExit``) ends every subscription with it, as a failed worker does.
        """
        while True:
            task = tasks.get()
            if task is None:
                return
            try:
                task()
            except BaseException as error:
                self._fail_all(error)

    def _work(self, tasks: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        #: When steps began to find the reader table full (None: the last step passed).
        full_since: float | None = None
        try:
            while True:
                with self._lock:
                    if not self._wakeup and not self._stopping:
                        self._lock.wait(self.poll_interval)
                    if self._dropped:
                        self._reap()
                    if self._stopping and not self._watched:
                        self._thread = None
                        self._lock.notify_all()
                        return
                    self._wakeup = False
                    new, self._new = self._new, []
                    joined, self._joined = self._joined, []
                    due = self._deadlines.pop_due(time.monotonic())
                # Helpers, not loops here: this frame lives as long as the worker, and a
                # loop variable left holding a subscription kept it from being let go.
                self._check_expiries(due)
                try:
                    self._step(new)
                except ReadersFull:
                    # Every reader slot is taken for now (they are shared by the processes
                    # on the folder): keep the subscriptions and try again next poll, for
                    # up to readers_full_patience seconds (then they end with the error).
                    now = time.monotonic()
                    if full_since is None:
                        full_since = now
                        _log.warning(
                            "subscriptions wait for a free LMDB reader slot", exc_info=True
                        )
                    elif now - full_since > self.readers_full_patience:
                        raise
                    with self._lock:
                        self._new[:0] = new
                        self._joined[:0] = joined
                        self._wakeup = True
                    time.sleep(self.poll_interval)
                    continue
                full_since = None
                # After the step, which brought the joined executions up to the head that
                # their subscribe() waits for: the callback's first value is that one.
                self._deliver_joined(joined)
                joined.clear()  # nor kept by this frame until the next joiner
        except BaseException as error:  # surfaced to subscribers, never silent
            with self._lock:
                # One lock for all three: a subscribe() in between would start a new
                # worker, whose subscriptions this failure must not end.
                self._thread = None
                self._worker_error = error
                self._lock.notify_all()
                subscriptions = self._subscriptions()
            self._fail(subscriptions, error, "The subscription worker failed")
        finally:
            tasks.put(None)  # the callback thread ends after the callbacks queued

    def _check_expiries(self, due: list[_Entry]) -> None:
        """:meth:`_check_expiry` for each subscription whose token deadline is due."""
        for entry in due:
            subscription = _live(entry)
            if subscription is not None:  # else collected: let go, no token to ask
                self._check_expiry(subscription)

    @staticmethod
    def _deliver_joined(joined: list[Subscription]) -> None:
        """Give the subscriptions that joined an execution its value, once."""
        for subscription in joined:
            if not subscription._delivered:  # else a change reached it already
                subscription._deliver(subscription._watched.outcome())

    def _fail_all(self, error: BaseException) -> None:
        """End every subscription with ``error``: a callback raised what is not an
        ``Exception`` (the worker then goes on, for new ones)."""
        with self._lock:
            self._lock.notify_all()
            subscriptions = self._subscriptions()
        self._fail(subscriptions, error, "A subscription callback raised")

    @staticmethod
    def _fail(subscriptions: list[Subscription], error: BaseException, what: str) -> None:
        for subscription in subscriptions:
            for member_of in subscription._sets:
                member_of._fail(error, what)
            subscription._fail(error, what)
        _log.error(what, exc_info=error)

    def _check_expiry(self, subscription: Subscription) -> None:
        """Ask a due subscription's token how long it has left: end the subscription
        with the error once it has none, else ask again then (a provider clock or a
        leeway can move the deadline)."""
        assert subscription._expiry is not None
        try:
            left = subscription._expiry()
        except Exception as error:  # auth.TokenExpired, or another AuthError
            subscription._end(error)
            return
        entry = subscription._entry()
        with self._lock:
            if entry in subscription._watched.subscribers:
                self._deadlines.add(entry, time.monotonic() + max(left, self.poll_interval))

    def _subscriptions(self) -> list[Subscription]:
        """Every open subscription (the lock is held)."""
        return [s for watched in self._watched.values() for s in watched.live_subscribers()]

    def forked_away(self, error: EngineError) -> None:
        """In a ``fork()`` child: end every subscription with ``error`` (no worker runs
        here, and none may: the storage is the parent's). Takes no lock a thread of the
        parent may have held at the fork: this process's locks are made afresh."""
        self._lock = threading.Condition(threading.Lock())
        self._thread = None
        self._callback_thread = None
        self._queue = queue.SimpleQueue()
        for watched in list(self._watched.values()):
            for subscription in watched.live_subscribers():
                for notifier in (subscription, *subscription._sets):
                    notifier._cond = threading.Condition()
                    notifier._ended = error
                    notifier._closed = True
        for followed in list(self._sets):  # a set with no members too
            followed._cond = threading.Condition()
            followed._ended = error
            followed._closed = True
        self._watched.clear()
        self._new.clear()
        self._joined.clear()
        self._dropped.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Close every subscription and stop the worker: the database is closing.

        Iterations end; ``.value`` keeps the last result; callbacks still queued are
        dropped. Waits up to ``timeout`` seconds (in all) for the worker's running re-run
        and the callback thread's running callback to finish (called from a callback, it
        does not wait for that callback: a thread does not wait for itself).
        """
        with self._lock:
            subscriptions = self._subscriptions()
            sets = list(self._sets)
        for followed in sets:  # with their members; an empty set too
            followed.close()
        for subscription in subscriptions:
            for member_of in subscription._sets:
                member_of.close()
            subscription.close()
        deadline = time.monotonic() + timeout
        for thread in (self._thread, self._callback_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _step(self, new: list[_Watched]) -> None:
        storage = self._db.storage
        with storage.read() as rtxn:
            latest, version = storage.head(rtxn)
            catalog = self._db.catalog_view(rtxn, version).catalog
            with self._lock:  # the interval index changes under subscribe/close
                if self._indexes_changed(catalog) or self._rerun:
                    self._rerun = False
                    affected = set(self._watched)
                else:
                    affected = self._affected(rtxn, latest)
                self._catalog = catalog
            todo = [w for w in new if w.result is _NOTHING and w.error is None]
            with self._lock:
                todo += [
                    self._watched[k]
                    for k in affected
                    if k in self._watched and self._watched[k] not in todo
                ]
            outcomes = [(w, self._run(w, rtxn)) for w in todo]
        # A stored error's traceback refers to this frame: keep no LMDB txn in it (an
        # ended py-lmdb txn still holds its reader slot and its environment), nor any
        # subscription (one whose handle was dropped would never be let go): they are
        # handled by _publish, whose frame no traceback keeps.
        del rtxn
        self._publish(outcomes, latest)

    def _publish(
        self, outcomes: list[tuple[_Watched, tuple[Any, Any, BaseException | None]]], latest: int
    ) -> None:
        """Publish the outcomes of one step's runs on the snapshot at ``latest``, wake
        the iterations and queue the callbacks."""
        changed: list[tuple[list[Subscription], tuple[Any, BaseException | None]]] = []
        with self._lock:
            # Publish every new result of this snapshot at once, so that readers holding
            # the lock (SubscriptionSet.value) never see two timestamps mixed.
            for watched, outcome in outcomes:
                if self._apply(watched, outcome, latest):
                    watched.version += 1
                    # Who hears of it is decided here, under the lock: a subscription
                    # joining after this point gets the value as a joiner, once; so
                    # does one that joined during this step, if its subscribe() came
                    # after this snapshot (this value is older than the call).
                    hear = []
                    for subscription in watched.live_subscribers():
                        if subscription._since <= latest:
                            hear.append(subscription)
                        elif subscription not in self._joined:  # the next step's value
                            self._joined.append(subscription)
                            self._wakeup = True
                    changed.append((hear, watched.outcome()))
            self.ts = max(self.ts, latest)
            self._lock.notify_all()
        # Iterations read the published values: wake them now, each set once (woken per
        # member, a quick iteration would read the new dict between two wakes and then
        # yield it again). Callbacks run on their own thread: one that waits for
        # something (an app lock held by a thread waiting for these results) holds up
        # neither the worker nor the next mutations' read-your-writes.
        sets: dict[SubscriptionSet, None] = {}
        for subscribers, _ in changed:
            for subscription in subscribers:
                subscription._wake()
                sets.update(dict.fromkeys(subscription._sets))
        for member_of in sets:
            member_of._wake()
        for subscribers, published in changed:
            for subscription in subscribers:
                subscription._deliver(published)

    def _indexes_changed(self, catalog: Catalog) -> bool:
        """True if a table the watched queries may have read changed its indexes.

        A schema change that drops or redefines an index moves its entries to a
        new index number: the read sets recorded under the old one would never be
        hit again, so every watched query re-runs (schema changes are rare). New
        tables need no such care: their creation logs their catalog keys, which
        queries that found them missing have read.
        """
        previous = self._catalog
        if previous is None or previous.version == catalog.version:
            return False
        return any(catalog.tables.get(name) != table for name, table in previous.tables.items())

    def _affected(self, rtxn: Any, latest: int) -> set[Any]:
        """Keys of the watched queries that commits in ``(self.ts, latest]`` touched."""
        storage = self._db.storage
        affected: set[Any] = set()
        if latest <= self.ts or not self._index:
            # Nothing new, or no read set to match: the executions followed have not
            # run yet, and run now on this snapshot (the first subscribe() after a quiet
            # period reads none of the log since).
            return affected
        floor = storage.meta_timestamp(rtxn, b"log_floor")
        if self.ts < floor:
            return set(self._watched)  # history pruned: re-run everything
        cursor = rtxn.cursor(storage.log)
        try:
            if cursor.set_range(_U64.pack(self.ts + 1)):
                for _, value in cursor.iternext():
                    affected |= self._index.stab(decode(value))
        finally:
            cursor.close()
        return affected

    def _run(self, watched: _Watched, rtxn: Any) -> tuple[Any, Any, BaseException | None]:
        """Re-run ``watched`` on snapshot ``rtxn``: (result, read set, error)."""
        return watched.runtime.run_on_snapshot(
            watched.name, watched.function, watched.args, watched.identity, rtxn, watched.journal
        )

    def _apply(
        self, watched: _Watched, outcome: tuple[Any, Any, BaseException | None], ts: int
    ) -> bool:
        """Store a re-run's outcome (the lock is held); True if subscribers must hear of it."""
        result, reads, error = outcome
        watched.ts = ts
        if self._watched.get(watched.key) is watched:
            self._index.add(watched.key, reads.pairs())
        if error is not None:
            _forget_frames(error)
            first = (
                watched.error is None
                or type(watched.error) is not type(error)
                or str(watched.error) != str(error)
            )
            watched.error = error
            watched.error_tb = (error, error.__traceback__)
            watched.result_bytes = None
            return first
        result_bytes = encode(result)
        was_error = watched.error is not None
        watched.error = None
        watched.error_tb = None
        if (
            not was_error
            and watched.result is not _NOTHING
            and result_bytes == watched.result_bytes
        ):
            return False
        watched.result = result
        watched.result_bytes = result_bytes
        watched.published = (result, result_bytes)
        return True
