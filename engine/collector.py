"""The collector of completed jobs: deletes those older than the retention.

Convex's garbage collection of scheduled jobs: a completed job (``success``, ``failed``
or ``canceled``) is deleted once its ``completedTime`` is
``Executor.completed_job_retention`` old (7 days), :data:`_COLLECT_BATCH` per
transaction, by the background worker every ``Executor.collect_interval`` seconds
(fully every ``Executor.full_collect_interval``) and by ``finish_*``. :class:`Collector`
is a base class of :class:`~engine.executor.Executor`, which is where these settings are
read and set (see :meth:`Collector.collect_completed`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from .catalog import BY_CREATION_TIME
from .errors import OptimisticConcurrencyControlFailure
from .query import Query
from .scheduler import (
    BY_STATE,
    PAGE_BYTES,
    SCHEDULED_FUNCTIONS,
    engine_writes,
    now_ms,
    state_kind,
)

if TYPE_CHECKING:
    from .database import Database
    from .transaction import Transaction

__all__ = ["Collector"]

_log = logging.getLogger("engine.scheduler")

#: Jobs looked at (and, completed long enough ago, deleted) per transaction by the
#: collector of completed jobs (and at most :data:`PAGE_BYTES` of them). Convex's
#: ``SCHEDULED_JOB_GARBAGE_COLLECTION_BATCH_SIZE`` is 1000, with its own read-size bound.
_COLLECT_BATCH = 256
#: At most this many seconds (and a tenth of its timeout) of a ``finish_*`` call go to
#: deleting completed jobs past the retention (one batch always runs).
_FINISH_COLLECT_SECONDS = 0.1
#: The source of the collector's transactions.
_COLLECT_SOURCE = "scheduler: completed jobs"
#: What a sweep reads, one range after the other: the ``by_state`` range of each completed
#: state, scheduled up to the bound (a job completes after its scheduledTime, unless it was
#: canceled or run before it); a full sweep then every job created up to the bound
#: (:data:`_CREATED`), the pending ones scheduled far ahead included.
_COMPLETED_STATES = ("success", "failed", "canceled")
_CREATED = "created"


class Collector:
    """Deletes the completed jobs past the retention; a base of the executor, which sets
    ``_db`` and ``_stopping`` and provides ``_sound`` (see :meth:`collect_completed`)."""

    #: Seconds a completed job (``success``, ``failed`` or ``canceled``) is kept after its
    #: ``completedTime``; then the executor deletes it (Convex's ``SCHEDULED_JOB_RETENTION``,
    #: 7 days). See :meth:`collect_completed`.
    completed_job_retention = 7 * 24 * 3600.0
    #: Seconds between two sweeps of the background worker for such jobs (Convex's
    #: collector waits 10 s after a batch). ``finish_*`` sweeps at every call.
    collect_interval = 10.0
    #: Seconds between two full sweeps of the worker (or, without one, of ``finish_*``),
    #: which also find the jobs completed before their scheduledTime (canceled ahead): they
    #: read every job created more than the retention ago, pending ones included. The
    #: first sweep is full.
    full_collect_interval = 3600.0

    # Set by the executor.
    _db: Database
    _stopping: bool

    if TYPE_CHECKING:

        def _sound(
            self, table: str, document: dict[str, Any], problems: str | list[str] | None
        ) -> bool: ...

    def __init__(self) -> None:
        #: The background worker's sweep for completed jobs under way: (the completedTime
        #: bound, the ranges left to read, the page cursor in the first), or None between
        #: sweeps; the next starts at _next_sweep, full from _next_full
        #: (``time.monotonic()``; at once, full, when the worker starts).
        self._sweep: tuple[float, tuple[str, ...], str | None] | None = None
        self._next_sweep = 0.0
        self._next_full = 0.0
        #: Held by the ``finish_*`` call that carries the sweeps when no worker runs.
        self._finishing = threading.Lock()
        super().__init__()

    def collect_completed(
        self, now: float | None = None, *, full: bool = True, deadline: float | None = None
    ) -> int:
        """Delete every completed job (``success``, ``failed`` or ``canceled``) whose
        ``completedTime`` is :attr:`completed_job_retention` old at ``now`` (ms since the
        epoch; default: the clock); returns how many. Convex's garbage collection of
        scheduled jobs: pending and ``inProgress`` jobs are never deleted, nor a job whose
        ``completedTime`` is not a float (damage: kept, logged once, named by
        ``Engine.check()``).

        Reads the ``by_state`` range of each completed state up to the bound (by
        scheduledTime: pending jobs, however many, are not read), then, if ``full``, every
        job created up to the bound (for the jobs completed before their scheduledTime:
        canceled, or run, ahead of it), :data:`_COLLECT_BATCH` (and at most 4 MiB of them)
        per transaction, which deletes the ones old enough: never one huge transaction.
        With a ``deadline`` (``time.monotonic()``), no batch starts past it (the first
        always runs). A batch that conflicts on every retry (another executor of the folder
        deletes the same jobs) ends the sweep: they are the other's to delete. The
        background worker sweeps every :attr:`collect_interval` seconds, one batch between
        two passes, fully every :attr:`full_collect_interval`; ``finish_*`` at each call,
        for a bounded share of its timeout, fully only without a worker
        (:meth:`_collect_before_finish`). Cost: a read of the completed jobs scheduled
        more than the retention ago (a full sweep: of every job created then), a delete of
        each one old enough.

        Example::

            deleted = engine._executor.collect_completed()
        """
        bound = (now_ms() if now is None else now) - self.completed_job_retention * 1000.0
        total = 0
        for part in (*_COMPLETED_STATES, _CREATED) if full else _COMPLETED_STATES:
            cursor: str | None = None
            while True:
                try:
                    deleted, cursor, done = self._collect_batch(bound, part, cursor)
                except OptimisticConcurrencyControlFailure:
                    _log.debug("Another executor deletes the completed jobs: sweep ended.")
                    return total
                total += deleted
                if deadline is not None and time.monotonic() >= deadline:
                    return total
                if done:
                    break
        return total

    def _collect_before_finish(
        self, start: float, deadline: float, timeout: float, *, worker: bool
    ) -> None:
        """The sweep of a ``finish_*`` call started at ``start`` (a ``time.monotonic()``)
        with ``timeout`` seconds, until ``deadline``, for a bounded share of the time: at
        most :data:`_FINISH_COLLECT_SECONDS` and a tenth of ``timeout`` (one batch always
        runs): a backlog must not use up the timeout the due jobs are run within (the rest
        go next call).

        With a background ``worker``, which makes the full sweeps, it is not full. Without
        one (``scheduler=False``) ``finish_*`` carries the worker's sweeps: full every
        :attr:`full_collect_interval` (a job canceled ahead of its scheduledTime is found by
        no other), each resumed where the last call stopped, so a long one ends too."""
        until = min(deadline, start + min(_FINISH_COLLECT_SECONDS, timeout / 10))
        if worker:
            self.collect_completed(full=False, deadline=until)
            return
        if not self._finishing.acquire(blocking=False):
            return  # another thread's finish_* sweeps: two would read the same pages
        try:
            self._next_sweep = 0.0  # finish_* sweeps at every call
            while self._advance_sweep() and time.monotonic() < until:
                pass
        finally:
            self._finishing.release()

    def _collect_step(self) -> bool:
        """One batch of the background worker's sweep (:meth:`_advance_sweep`); True while
        the sweep has more to read. A failure is logged and the sweep tried again after
        :attr:`collect_interval`."""
        try:
            return self._advance_sweep()
        except Exception:
            self._sweep = None
            self._next_sweep = time.monotonic() + self.collect_interval
            if not self._stopping:  # closed meanwhile: its storage fails under us
                _log.exception(
                    "Deleting the completed jobs older than the retention failed; "
                    "tried again in %s s.",
                    self.collect_interval,
                )
            return False

    def _advance_sweep(self) -> bool:
        """One batch of the sweep under way, or of a new one if one is due (full if
        :attr:`full_collect_interval` has passed since the last full one), and the next
        ranges' too while they end with nothing deleted; True while the sweep has more to
        read. A conflict with another executor deleting the same jobs ends the sweep
        quietly; another error ends it and is raised."""
        sweep = self._sweep
        if sweep is None:
            now = time.monotonic()
            if now < self._next_sweep:
                return False
            parts: tuple[str, ...] = _COMPLETED_STATES
            if now >= self._next_full:
                parts = (*_COMPLETED_STATES, _CREATED)
                self._next_full = now + self.full_collect_interval
            sweep = (now_ms() - self.completed_job_retention * 1000.0, parts, None)
        bound, parts, cursor = sweep
        self._sweep = None  # until it is known to go on
        try:
            while parts:
                deleted, cursor, done = self._collect_batch(bound, parts[0], cursor)
                if not done:
                    break
                parts, cursor = parts[1:], None
                if deleted:
                    break  # one batch that wrote per step: the due jobs come first
        except OptimisticConcurrencyControlFailure:  # another executor deletes them
            _log.debug("Another executor deletes the completed jobs: sweep ended.")
            parts = ()
        if not parts:
            self._next_sweep = time.monotonic() + self.collect_interval
            return False
        self._sweep = (bound, parts, cursor)
        return True

    def _collect_batch(
        self, bound: float, part: str, cursor: str | None
    ) -> tuple[int, str | None, bool]:
        """In a transaction of its own: read the next page (from ``cursor``) of range
        ``part`` (a completed state's jobs scheduled up to ``bound``, ms, or
        :data:`_CREATED`: the jobs created up to it) and delete those completed up to
        ``bound``; returns (deleted, the next page's cursor, whether this was the last
        page)."""

        def body(txn: Transaction) -> tuple[int, str | None, bool]:
            if txn.table(SCHEDULED_FUNCTIONS) is None:
                return 0, None, True
            query = Query(txn, SCHEDULED_FUNCTIONS)
            if part == _CREATED:
                query = query.with_index(BY_CREATION_TIME, lambda q: q.lte("_creationTime", bound))
            else:
                query = query.with_index(
                    BY_STATE, lambda q: q.eq("state.kind", part).lte("scheduledTime", bound)
                )
            page = query.paginate(
                {"numItems": _COLLECT_BATCH, "cursor": cursor, "maximumBytesRead": PAGE_BYTES}
            )
            deleted = 0
            with engine_writes(txn):
                for job in page["page"]:
                    if self._collectable(job, bound):
                        txn.delete(job["_id"])
                        deleted += 1
            return deleted, page["continueCursor"], page["isDone"]

        result: tuple[int, str | None, bool] = self._db.run(
            body, writable=True, source=_COLLECT_SOURCE
        )[0]
        return result

    def _collectable(self, job: dict[str, Any], bound: float) -> bool:
        """True if ``job`` is completed and its ``completedTime`` is at most ``bound``
        (Convex keeps a job while ``completedTime + retention > now``)."""
        if state_kind(job) not in _COMPLETED_STATES:
            return False
        completed = job.get("completedTime")
        if not isinstance(completed, float) or not math.isfinite(completed):
            problem = f"completedTime is not a finite time: {completed!r:.80}; kept"
            return self._sound(SCHEDULED_FUNCTIONS, job, problem)  # logged once: False
        return completed <= bound
