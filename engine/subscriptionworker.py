"""The subscription worker: the thread that follows the log for one database's
subscriptions, and the callback thread that runs their callbacks in order.

One worker per open database, started by the first subscription and stopped with the
last. It wakes at a commit of this process (:meth:`SubscriptionWorker._on_commit`) or
every :attr:`~SubscriptionWorker.poll_interval` (other processes' commits), lets go the
subscriptions whose handle was collected, ends those whose token expired, and runs one
step (:mod:`engine.reruns`); :meth:`~SubscriptionWorker.wait_for` gives mutations
read-your-writes.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .deadlines import Deadlines
from .intervals import IntervalIndex
from .reruns import Reruns
from .storage import ReadersFull
from .subscription import _Entry, _live

if TYPE_CHECKING:
    from .catalog import Catalog
    from .database import Database
    from .executions import _Watched
    from .subscription import Subscription

_log = logging.getLogger("convexlite.subscriptions")


class SubscriptionWorker(Reruns):
    """The state of one database's subscriptions and the threads that follow them: the
    base of :class:`~engine.subscriptions.SubscriptionManager`, which adds subscribing."""

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
        #: Set by :meth:`~engine.subscriptions.SubscriptionManager.rerun_all`: the next
        #: step re-runs every watched query.
        self._rerun = False
        #: When to ask the tokens of subscriptions made with one how long they have left.
        self._deadlines: Deadlines[_Entry] = Deadlines()
        #: (execution, weak reference) of subscriptions whose handle was dropped and
        #: collected, for the worker to let go (see
        #: :meth:`~engine.subscriptions.SubscriptionManager._let_go`).
        #: A deque: its appends and pops are atomic, and the collector's appends always
        #: go to this one object (a list swapped for a new one could take an append made
        #: by a thread that had read the old list, after the worker had gone through it).
        self._dropped: collections.deque[tuple[_Watched, weakref.ReferenceType[Subscription]]]
        self._dropped = collections.deque()

    def _forget_if_unfollowed(self, watched: _Watched) -> None:
        """Stop running ``watched`` if no subscription follows it (the lock is held)."""
        if not watched.subscribers and self._watched.get(watched.key) is watched:
            del self._watched[watched.key]
            self._index.remove(watched.key)

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
