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

The modules, one concept each: this one (:class:`SubscriptionManager`, subscribing and
closing), :mod:`engine.subscriptionworker` (the worker and callback threads, token
expiry), :mod:`engine.reruns` (one step: which executions commits touched, their
re-runs, publishing), :mod:`engine.executions` (an execution shared by identical
subscriptions, and copies of its results), :mod:`engine.subscription` and
:mod:`engine.subscriptionset` (the handles callers hold) and :mod:`engine.notifier`
(waking their iterations).
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from . import keys
from .errors import EngineError, closed_error
from .executions import _NOTHING, _Watched
from .functions import fresh_args
from .storage import ReadersFull
from .subscription import Subscription
from .subscriptionset import SubscriptionSet
from .subscriptionworker import SubscriptionWorker

if TYPE_CHECKING:
    from collections.abc import Callable

    from .database import Database
    from .functions import Runtime

__all__ = ["Subscription", "SubscriptionManager", "SubscriptionSet"]


def _nothing(txn: Any) -> None:
    """A read that reads nothing: its snapshot timestamp is the head's."""


class SubscriptionManager(SubscriptionWorker):
    """The subscriptions of one database in this process, and their worker thread (see
    :class:`~engine.subscriptionworker.SubscriptionWorker` for its settings,
    ``poll_interval`` and ``readers_full_patience``)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._fresh_keys = itertools.count()
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
