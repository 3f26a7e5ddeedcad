"""The executor: runs the jobs of ``_scheduled_functions`` when they come due.

Each open :class:`~engine.Engine` with functions owns one :class:`Executor`.
With ``Engine.open(..., scheduler=True)`` (the default) a background thread
runs due jobs; with ``scheduler=False`` jobs run only when the host calls
``engine.finish_scheduled_functions()`` / ``finish_all_scheduled_functions()``.

Guarantees (Convex's):

- **A scheduled mutation runs exactly once.** One transaction reads the job,
  checks it is still ``pending``, runs the mutation and writes ``success``
  with ``completedTime``, so the job's state commits with the mutation's
  writes or not at all. Conflicts are retried without a budget (while the
  engine stays open). A user error (raised by the function, or by the
  validation of its arguments or return value) discards the mutation's writes and
  marks the job ``failed`` in a separate transaction. A system error around it (a
  :class:`StorageError` at commit, raised even through the function) is not the
  job's failure: the job stays pending and is retried with backoff, then left to a
  later pass (Convex's ``schedule_retry``).
- **A scheduled action runs at most once.** A transaction claims the job
  (``pending`` → ``inProgress``) before the action starts; the action's
  outcome is written after it ends (``success`` or ``failed``; a system error
  writing it is retried with backoff, the action is not). An action that cannot be
  started once claimed is recorded ``failed`` with the transient error (the cause is
  logged); the loop's thread starts before the claim, so a thread that cannot start
  leaves the job pending.
- **One run's bookkeeping failing is isolated.** A claim or outcome that cannot be
  written is logged with the job's id (or cron's name) and left as stored (pending:
  a later pass tries again; an action inProgress: failed by the next executor that
  starts alone); the runs due after it still run, and ``finish_*`` raises the first
  such error once the pass is over.
- **Bounded parallelism.** The background worker runs at most
  :attr:`Executor.max_running_actions` actions at once; at the cap it stops claiming
  until one ends (Convex's ``SCHEDULED_JOB_EXECUTION_PARALLELISM``).
- **Completed jobs are deleted after** :attr:`Executor.completed_job_retention`
  (7 days, Convex's ``SCHEDULED_JOB_RETENTION``), by the worker every
  :attr:`Executor.collect_interval` seconds and by ``finish_*`` (for at most 0.1 s of it), in
  batches of :data:`_COLLECT_BATCH` per transaction; pending jobs are not read (see
  :meth:`Executor.collect_completed`).
- **A damaged job or cron is skipped**: one whose fields have the wrong type (see
  :func:`~engine.scheduler.job_problem`, :func:`~engine.crons.cron_problems`) is
  logged once with its id and what is wrong, and the others run; ``Engine.check()``
  names it.
- **Several executors** (threads, handles, processes on one folder) may run at
  once: claiming is transactional, so two executors racing for one job
  conflict and the loser, re-running, sees the job is no longer pending.
- Identity is not propagated: scheduled functions run with no user identity.

Wake-up: a commit of this process that writes ``_scheduled_functions`` wakes
the worker at once (a commit listener, O(1) per commit); otherwise it sleeps
until the next pending job is due, or at most :attr:`Executor.poll_interval`
seconds, which is how jobs committed by other processes are found.

Orphaned actions: every executor holds a shared ``flock`` on
``<folder>/scheduler.lock``. When an executor starts and can take that lock
exclusively, no other executor is alive on the folder, so every job left
``inProgress`` belonged to a dead one: it is marked ``failed`` with Convex's
"Transient error while executing action" (in batches of
:data:`_ORPHAN_BATCH` per transaction). While another executor is alive
nothing can be told, and such jobs stay ``inProgress`` until a later start
finds itself alone.

Close: the worker finishes the job in hand (a mutation job's transaction
commits or is discarded, never half-applied), running actions get
:attr:`Executor.shutdown_timeout` seconds to end, then are cancelled and marked
failed with the transient error (a ``CancelledError`` the action raises itself, not
from the executor's cancel, is the action's own failure).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from .catalog import BY_CREATION_TIME
from .contexts import ActionCtx, MutationCtx
from .crons import CRON_JOBS
from .errors import (
    ConvexError,
    OptimisticConcurrencyControlFailure,
    SchedulerError,
    StorageError,
    closed_error,
)
from .folders import no_locks_error
from .query import Query
from .scheduler import (
    BY_STATE,
    SCHEDULED_FUNCTIONS,
    TRANSIENT_ACTION_ERROR,
    Scheduler,
    current_job,
    engine_writes,
    fitting,
    job_problem,
    now_ms,
    patch_job,
    state_kind,
)
from .storage import LMDB_ERRORS

if TYPE_CHECKING:
    from .commit import CommitRequest
    from .functions import FunctionDef, Runtime
    from .transaction import Transaction

__all__ = ["Executor"]

_log = logging.getLogger("engine.scheduler")
#: Jobs read per page (each page in its own snapshot; a pass reads pages until the first
#: job not yet due).
_BATCH = 256
#: Orphaned actions failed per transaction on start (a transaction's reads and writes
#: are limited: thousands of orphans are failed in several transactions).
_ORPHAN_BATCH = 256
#: Bytes of job documents read per page (or orphan batch), well inside a transaction's
#: 16 MiB read limit: a job's arguments may be up to 1 MiB, so 256 of them would not fit.
_PAGE_BYTES = 4 << 20
#: Jobs looked at (and, completed long enough ago, deleted) per transaction by the
#: collector of completed jobs (and at most :data:`_PAGE_BYTES` of them). Convex's
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


def _error_message(error: BaseException) -> str:
    """A failure as stored (a job's ``state.error``, a cron log's ``error``): Convex's
    ``Uncaught <Type>: <message>``, cut at :data:`_MAX_ERROR_CHARS` characters so the
    document that records it always fits the 1 MiB limit (the whole error is logged)."""
    text = f"Uncaught {type(error).__name__}: {error}"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + " ... (truncated)"
    return text


#: Characters of an error kept in a job's state or a cron's log.
_MAX_ERROR_CHARS = 64 * 1024


class Executor:
    """Runs scheduled jobs for one engine handle (see the module docstring).

    Example::

        with Engine.open(path, functions=app, scheduler=False) as engine:
            engine.mutation("messages:send_later", {...})
            engine.finish_scheduled_functions()   # runs what is due, synchronously
    """

    #: Longest sleep between two looks at the table (jobs of other processes).
    poll_interval = 0.5
    #: How long close() waits for running actions before cancelling them.
    shutdown_timeout = 10.0
    #: Most scheduled actions the background worker runs at once (Convex's
    #: ``SCHEDULED_JOB_EXECUTION_PARALLELISM``, 10). Due jobs behind them wait, in
    #: order, until one ends: a burst of thousands of due actions is not claimed at once.
    max_running_actions = 10
    #: Seconds a completed job (``success``, ``failed`` or ``canceled``) is kept after its
    #: ``completedTime``; then the executor deletes it (Convex's ``SCHEDULED_JOB_RETENTION``,
    #: 7 days). See :meth:`collect_completed`.
    completed_job_retention = 7 * 24 * 3600.0
    #: Seconds between two sweeps of the background worker for such jobs (Convex's
    #: collector waits 10 s after a batch). ``finish_*`` sweeps at every call.
    collect_interval = 10.0
    #: Seconds between two full sweeps of the worker, which also find the jobs completed
    #: before their scheduledTime (canceled ahead): they read every job created more than
    #: the retention ago, pending ones included. The first sweep is full.
    full_collect_interval = 3600.0

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._db = runtime.db
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        #: Scheduled actions started on the loop and not yet recorded as finished.
        self._running: dict[str, concurrent.futures.Future[BaseException | None]] = {}
        #: The runs of those actions (a job's, or a cron's), by the same keys.
        self._runs: dict[str, _Run] = {}
        #: Jobs whose action this executor cancelled (close(), Ctrl-C in finish_*): their
        #: CancelledError is the transient error, any other is the action's own failure.
        self._cancelled: set[str] = set()
        #: Claims of actions under way (claimed or being claimed, not yet in ``_running``):
        #: close() waits for them too, and none starts once it has begun.
        self._claiming = 0
        self._idle = threading.Condition()
        self._lock_fd: int | None = None
        #: Ids of the damaged jobs and crons this executor skipped (each is logged once).
        self._damaged: set[str] = set()
        #: The background worker's sweep for completed jobs under way: (the completedTime
        #: bound, the ranges left to read, the page cursor in the first), or None between
        #: sweeps; the next starts at _next_sweep, full from _next_full
        #: (``time.monotonic()``; at once, full, when the worker starts).
        self._sweep: tuple[float, tuple[str, ...], str | None] | None = None
        self._next_sweep = 0.0
        self._next_full = 0.0

    # -- lifecycle -----------------------------------------------------------

    def start(self, *, background: bool) -> None:
        """Take the executors' lock (failing orphaned actions if alone), start the worker."""
        self._lock_fd = self._take_lock()
        self._db.listeners.append(self._on_commit)
        if background:
            self._thread = threading.Thread(
                target=self._work, name="convexlite-scheduler", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the worker, let running actions end (bounded), release the lock. Idempotent.

        The loop, the commit listener and the lock are released whatever happens before
        (a late job's failure that cannot be recorded is logged, the others are still
        recorded). Interrupted (Ctrl-C) while it waits, it cancels the running actions
        all the same, records them and releases everything, then re-raises.
        """
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        try:
            try:
                if self._thread is not None:
                    self._thread.join()
                with self._idle:
                    # A claim under way (finish_* on another thread) has committed, or may
                    # commit, its job inProgress: wait until its action is registered too.
                    if not self._idle.wait_for(
                        lambda: not self._running and not self._claiming, self.shutdown_timeout
                    ):
                        self._cancel_all()
            except BaseException:  # Ctrl-C while it waited: the actions are cancelled anyway
                with self._idle:
                    self._cancel_all()
                raise
            finally:
                with self._idle:
                    late = list(self._running)
                for job_id in late:  # cancelled before it started, or stuck: never finished
                    self._fail_late(job_id)
        finally:
            self._release()

    def _cancel_all(self) -> None:
        """Cancel every running action (call with ``_idle`` held; each task records the
        transient error) and wait up to :data:`_CANCEL_GRACE` for them to end, cancelling
        the actions of claims under way as they register."""

        def ended() -> bool:
            for job_id in list(self._running):
                if job_id not in self._cancelled:
                    self._cancel(job_id)
            return not self._running and not self._claiming

        self._idle.wait_for(ended, _CANCEL_GRACE)

    def _fail_late(self, key: str) -> None:
        """Record an action that did not end in time ``failed`` with the transient error;
        if even that fails (after :meth:`write_outcome`'s retries), log it: the job (or
        cron) stays ``inProgress`` until an executor starts alone on the folder."""
        run = self._runs.get(key) or _JobRun(self, key, "?", "action")
        try:
            run.record(_TRANSIENT, None, 0.0, running=True)
        except Exception:
            _log.exception(
                "Could not record the failure of scheduled action %s, stopped at "
                "close; it stays inProgress until an executor starts with no other alive "
                "on the folder (which fails it).",
                run.label,
            )

    def _release(self) -> None:
        """stop()'s last steps, each one even when one before it fails: stop the actions'
        loop, remove the commit listener, release the lock."""
        try:
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)
                assert self._loop_thread is not None
                self._loop_thread.join(_CANCEL_GRACE)
                if not self._loop_thread.is_alive():
                    loop.close()
        finally:
            try:
                self._db.listeners.remove(self._on_commit)
            except ValueError:
                pass
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def forked_away(self) -> None:
        """In a fork child: drop the inherited descriptor of the parent's lock, unlocked.

        ``flock`` locks belong to the open file, which the child shares: kept open, it
        would hold the parent's shared lock for as long as the child lives, and no
        executor started after the parent's is gone would find itself alone (its
        orphaned actions would stay ``inProgress``). Closing the child's descriptor
        leaves the parent's lock alone; ``flock(LOCK_UN)`` here would release it.
        """
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def on_action_loop(self) -> bool:
        """True inside one of this executor's scheduled actions: on the thread that runs
        them, or in code the action handed to another thread (``asyncio.to_thread``
        copies the context, and with it the job being run)."""
        thread = self._loop_thread
        if thread is not None and thread is threading.current_thread():
            return True
        run = _current_run.get()  # a job's or a cron's
        return run is not None and self._runs.get(run.key) is run

    def _take_lock(self) -> int | None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): orphans cannot be told, none is failed
            return None
        path = os.path.join(self._db.storage.path, "scheduler.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StorageError(
                f"Cannot open the scheduler's lock file {path!r}: {error}. The engine keeps it "
                "beside the database to tell live executors from dead ones: make the folder "
                "writable, or open the engine without functions."
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):  # else: another holds it
                os.close(fd)
                raise no_locks_error(path, error) from error
            alone = False
        else:
            alone = True
        try:
            if alone:
                self._fail_orphans()
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # converts an exclusive lock; waits for one
            except OSError as error:
                raise no_locks_error(path, error) from error
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _fail_orphans(self) -> None:
        """Fail every job left ``inProgress``, :data:`_ORPHAN_BATCH` per transaction."""

        def fail(txn: Transaction) -> int:
            if txn.table(SCHEDULED_FUNCTIONS) is None:
                return 0
            stuck = (
                Query(txn, SCHEDULED_FUNCTIONS)
                .with_index(BY_STATE, lambda q: q.eq("state.kind", "inProgress"))
                .paginate(
                    {"numItems": _ORPHAN_BATCH, "cursor": None, "maximumBytesRead": _PAGE_BYTES}
                )
            )["page"]
            for job in stuck:
                patch_job(
                    txn,
                    job["_id"],
                    {
                        "state": fitting(job, _TRANSIENT),  # a job from before its room was kept
                        "completedTime": now_ms(),
                    },
                )
            return len(stuck)

        while self._db.run(fail, writable=True, source="scheduler recovery")[0]:
            pass  # each batch leaves inProgress: the next one starts at the front again
        from .crons import fail_orphaned_crons

        self._db.run(fail_orphaned_crons, writable=True, source="scheduler recovery")

    def _on_commit(self, requests: list[CommitRequest]) -> None:
        # Called by the committer after every commit group: keep it O(1) per request.
        for request in requests:
            catalog = request.new_catalog
            tables = request.tables
            if (
                SCHEDULED_FUNCTIONS in tables
                or CRON_JOBS in tables
                or (catalog is not None and SCHEDULED_FUNCTIONS in catalog.tables)
            ):
                self._wake.set()
                return

    def _work(self) -> None:
        while not self._stopping:
            self._wake.clear()
            timeout = self.poll_interval
            try:
                _, next_due = self._pass(all_pending=False, background=True)
            except Exception:  # keep the worker alive; the next pass tries again
                _log.exception("The scheduler's worker failed a pass; retrying.")
            else:
                if next_due is not None:
                    timeout = max(0.0, min(timeout, (next_due - now_ms()) / 1000.0))
            if self._stopping:
                return
            if self._collect_step():
                timeout = 0.0  # more to delete: the next batch after the next pass
            elif self._sweep is None:
                timeout = max(0.0, min(timeout, self._next_sweep - time.monotonic()))
            if timeout > 0 or self._stopping:
                self._wake.wait(timeout)

    # -- deleting completed jobs ---------------------------------------------------

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
        deletes the same jobs) ends the sweep: they are the other's to delete. The background worker sweeps every :attr:`collect_interval`
        seconds, one batch between two passes, fully every
        :attr:`full_collect_interval`; ``finish_*`` at each call, not fully, until its
        deadline. Cost: a read of the completed jobs scheduled more than the retention
        ago (a full sweep: of every job created then), a delete of each one old enough.

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

    def _collect_step(self) -> bool:
        """One batch of the background worker's sweep, if one is under way or due (and
        the next ranges' too while they end with nothing deleted); True while the sweep
        has more to read. A failure is logged and the sweep tried again after
        :attr:`collect_interval`."""
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
        except Exception:
            if self._stopping:  # closed meanwhile: its storage fails under us
                return False
            _log.exception(
                "Deleting the completed jobs older than the retention failed; tried again in %s s.",
                self.collect_interval,
            )
            parts = ()
        if not parts:
            self._sweep = None
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
                {"numItems": _COLLECT_BATCH, "cursor": cursor, "maximumBytesRead": _PAGE_BYTES}
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
        if state_kind(job) not in ("success", "failed", "canceled"):
            return False
        completed = job.get("completedTime")
        if not isinstance(completed, float) or not math.isfinite(completed):
            problem = f"completedTime is not a finite time: {completed!r:.80}; kept"
            return self._sound(SCHEDULED_FUNCTIONS, job, problem)  # logged once: False
        return completed <= bound

    # -- running jobs ------------------------------------------------------------

    def finish(
        self, *, all_pending: bool, timeout: float, max_iterations: int, advance_ms: float = 0.0
    ) -> int:
        """Run jobs synchronously until none is due (``all_pending``: none is pending;
        ``advance_ms``: due by that much after now), and no job runs elsewhere; returns
        how many this call ran.

        Raises :class:`SchedulerError` after ``timeout`` seconds or
        ``max_iterations`` passes that each ran something (a job that keeps
        rescheduling itself), but never once nothing is left; :class:`EngineError`
        when the engine is closed meanwhile (the job in hand commits or is discarded).
        An action it runs is waited for until the deadline at most: past it, the call
        raises and the action runs on, as beside the background worker (a mutation runs
        to its end on this thread).
        """
        if self._stopping:
            raise closed_error()
        start = time.monotonic()
        deadline = start + timeout
        # Old completed jobs first, but for a bounded share of the time: a backlog must
        # not use up the timeout the due jobs are run within (the rest go next call).
        self.collect_completed(
            full=False, deadline=min(deadline, start + min(_FINISH_COLLECT_SECONDS, timeout / 10))
        )
        total = 0
        passes = 0
        while True:
            try:
                ran, _ = self._pass(
                    all_pending=all_pending,
                    background=False,
                    advance_ms=advance_ms,
                    deadline=deadline,
                )
                total += ran
                busy = self._busy(all_pending, advance_ms)  # done in time is done
            except _PastDeadline:  # an action it ran still runs: it goes on, on the loop
                raise _timed_out(timeout) from None
            except Exception as error:
                if self._stopping:  # closed meanwhile: its storage fails under us
                    raise closed_error() from error
                raise
            if self._stopping:
                raise closed_error()
            if not busy:
                return total
            if ran:
                passes += 1
                if passes >= max_iterations:
                    raise SchedulerError(
                        f"Scheduled functions kept being scheduled after {max_iterations} "
                        "passes (a function that reschedules itself?): raise max_iterations "
                        "or stop the loop."
                    )
            if time.monotonic() > deadline:
                raise _timed_out(timeout)
            if not ran:
                time.sleep(0.005)

    def _pages(self, kind: str) -> Iterator[list[dict[str, Any]]]:
        """Jobs in state ``kind`` in due order, :data:`_BATCH` per page, each page read
        in its own snapshot (a cursor carries the position: the jobs run between two
        pages leave the range without moving it)."""
        cursor: str | None = None

        def read(txn: Transaction) -> tuple[list[dict[str, Any]], str | None, bool]:
            if txn.table(SCHEDULED_FUNCTIONS) is None:
                return [], None, True
            page = (
                Query(txn, SCHEDULED_FUNCTIONS)
                .with_index(BY_STATE, lambda q: q.eq("state.kind", kind))
                .paginate({"numItems": _BATCH, "cursor": cursor, "maximumBytesRead": _PAGE_BYTES})
            )
            return page["page"], page["continueCursor"], page["isDone"]

        while True:
            jobs, cursor, done = self._db.run(read, writable=False)[0]
            yield jobs
            if done:
                return

    def _due(self, all_pending: bool, now: float) -> Iterator[dict[str, Any]]:
        """Pending jobs due at ``now`` (``all_pending``: every pending job), in due order."""
        for jobs in self._pages("pending"):
            for job in jobs:
                if not self._sound(SCHEDULED_FUNCTIONS, job, job_problem(job)):
                    continue  # damaged: never run, so never waited for
                if not all_pending and job["scheduledTime"] > now:
                    return
                yield job

    def _busy(self, all_pending: bool, advance_ms: float = 0.0) -> bool:
        """True while some job is in progress, or pending, due (by ``advance_ms`` after
        now) and runnable here, or an action of this executor still runs (one canceled
        while running is no longer ``inProgress``, but keeps running, as in Convex)."""
        names = self._runtime.registry.by_name
        # Pages past any number of jobs of other packages' functions.
        due = self._due(all_pending, now_ms() + advance_ms)
        if any(job["name"] in names for job in due):
            return True
        if self._running or self._claiming:  # claimed, maybe canceled, not yet registered
            return True
        # Read after the pending jobs: a job claimed meanwhile is seen in progress here.
        if next(self._pages("inProgress")):
            return True
        from .crons import all_crons, cron_problems, target_function

        until = now_ms() + advance_ms
        for cron in self._db.run(all_crons, writable=False)[0]:
            if not self._sound(CRON_JOBS, cron, cron_problems(cron)):
                continue  # damaged: never run, so never waited for
            if cron["state"]["kind"] != "pending":
                return True  # a cron's action under way (here or elsewhere)
            if cron["nextTs"] <= until and target_function(self._runtime, cron) is not None:
                return True
        return False

    def _pass(
        self,
        *,
        all_pending: bool,
        background: bool,
        advance_ms: float = 0.0,
        deadline: float | None = None,
    ) -> tuple[int, float | None]:
        """Run every due job, then every due cron, once (due by ``advance_ms`` after now,
        for ``finish``, which waits for each action until its ``deadline``, a
        ``time.monotonic()``); returns (runs, time in ms the next one is due).

        A run whose bookkeeping fails (its claim or outcome cannot be written) is logged
        and left as stored, and the pass goes on (see :meth:`_isolated`); not in
        ``background``, the first such error is raised once the pass is over."""
        failed: list[Exception] = []
        ran, next_job = self._pass_jobs(all_pending, background, advance_ms, deadline, failed)
        if not self._stopping:
            ran_crons, next_cron = self._pass_crons(background, advance_ms, deadline, failed)
        else:
            ran_crons, next_job, next_cron = 0, None, None
        if failed and not background:
            raise failed[0]
        dues = [due for due in (next_job, next_cron) if due is not None]
        return ran + ran_crons, min(dues) if dues else None

    def _sound(
        self, table: str, document: dict[str, Any], problems: str | list[str] | None
    ) -> bool:
        """True if ``problems`` (what :func:`~engine.scheduler.job_problem` or
        :func:`~engine.crons.cron_problems` found in ``document``, a job or a cron of
        ``table``) is empty; else the document is skipped, logged once per executor with
        its id and what is wrong: a field of the wrong type (an old or foreign process's
        write, or damage) must not stop the runs of the others."""
        if not problems:
            return True
        key = document["_id"]
        if key not in self._damaged:
            self._damaged.add(key)
            what = problems if isinstance(problems, str) else "; ".join(problems)
            fix = (
                "cancel it with ctx.scheduler.cancel(id) if it is still pending"
                if table == SCHEDULED_FUNCTIONS
                else "Engine.open with the functions stores a defined cron afresh"
            )
            _log.warning(
                "%s %s is damaged (%s): skipped, the executor runs the others. "
                "Engine.check() names it; %s.",
                table,
                key,
                what,
                fix,
            )
        return False

    def _isolated(self, run: _Run, step: Callable[[], bool], failed: list[Exception]) -> bool:
        """``step()``, which runs or records ``run``; if it raises (its claim or outcome
        could not be written, e.g. a document over the size limit), the error is logged
        with the run's label, appended to ``failed``, and False returned, so the runs due
        after it still run in this pass. The run is left as stored: a pending one is
        tried again by a later pass (a mutation's writes were discarded with its
        transaction), an action left inProgress is failed by the next executor that
        starts alone. Not isolated: :class:`_PastDeadline`, and errors once close() has
        begun (the storage fails under the pass)."""
        try:
            return step()
        except _PastDeadline:
            raise
        except Exception as error:
            if self._stopping:
                raise
            _log.exception(
                "%s (%s): its bookkeeping failed (claim or outcome not written); left as "
                "stored, the pass goes on with the runs due after it.",
                run.source,
                run.label,
            )
            failed.append(error)
            return False

    def _pass_jobs(
        self,
        all_pending: bool,
        background: bool,
        advance_ms: float,
        deadline: float | None = None,
        failed: list[Exception] | None = None,
    ) -> tuple[int, float | None]:
        """Run every due job once. Jobs of functions this engine does not know (another
        process's package) are left pending and paged past, so the runnable jobs behind
        them run; so do the jobs behind one whose bookkeeping fails (appended to
        ``failed``, see :meth:`_isolated`)."""
        failed = [] if failed is None else failed
        registry = self._runtime.registry.by_name
        now = now_ms() + advance_ms
        ran = 0
        for jobs in self._pages("pending"):
            for job in jobs:
                if self._stopping:
                    return ran, None
                if not self._sound(SCHEDULED_FUNCTIONS, job, job_problem(job)):
                    continue  # a field of the wrong type: skipped (logged once)
                if not all_pending and job["scheduledTime"] > now:
                    return ran, job["scheduledTime"]
                function = registry.get(job["name"])
                if function is None:
                    continue  # registered by another process's functions: left for it
                run = _JobRun(self, job["_id"], job["name"], function.kind)
                if function.kind == "mutation":
                    step = partial(self._run_mutation, run, function, background)
                elif function.kind != "action":  # it was one when scheduled: code changed
                    step = partial(
                        run.record, _unsupported(function.kind), None, 0.0, running=False
                    )
                else:
                    if background and len(self._running) >= self.max_running_actions:
                        return ran, None  # at the cap: an action's end wakes the worker
                    step = partial(self._run_action, run, function, background, deadline)
                ran += self._isolated(run, step, failed)
        return ran, None

    def _pass_crons(
        self,
        background: bool,
        advance_ms: float,
        deadline: float | None = None,
        failed: list[Exception] | None = None,
    ) -> tuple[int, float | None]:
        """Run every due cron once (only by their time: ``finish_all`` does not run crons
        ahead, they would never end); returns (runs, when the next one is due). A cron
        whose bookkeeping fails is appended to ``failed`` (see :meth:`_isolated`)."""
        from .crons import CronRun, all_crons, cron_problems, target_function

        failed = [] if failed is None else failed
        now = now_ms() + advance_ms
        ran = 0
        for cron in self._db.run(all_crons, writable=False)[0]:
            if self._stopping:
                return ran, None
            if not self._sound(CRON_JOBS, cron, cron_problems(cron)):
                continue  # a field of the wrong type: skipped (logged once)
            function = target_function(self._runtime, cron)
            if function is None or cron["state"]["kind"] != "pending" or cron["_id"] in self._runs:
                continue  # another process's function, or a run under way (here: ending)
            if cron["nextTs"] > now:
                return ran, cron["nextTs"]
            run = CronRun(self, cron, function.kind, advance_ms)
            if function.kind == "mutation":
                step = partial(self._run_mutation, run, function, background)
            elif function.kind != "action":  # it was one when the engine opened: code changed
                step = partial(run.record, _unsupported(function.kind), None, 0.0, running=False)
            else:
                if background and len(self._running) >= self.max_running_actions:
                    return ran, None  # at the cap: an action's end wakes the worker
                step = partial(self._run_action, run, function, background, deadline)
            ran += self._isolated(run, step, failed)
        return ran, None

    def _run_mutation(self, run: _Run, function: FunctionDef, background: bool) -> bool:
        """Run a mutation's job or cron run exactly once; False if it was not due or
        pending (any more), or the engine failed around it (left for a later pass)."""
        runtime = self._runtime
        name = run.name
        from .functions import _txn_resolver, handler_args, refuse_awaitable

        def body(txn: Transaction) -> bool:
            started = run.start(txn, claim=False)
            if started is None:
                return False
            stored_args, scheduled = started
            began = time.monotonic()
            try:  # the function's part: what it raises is the run's failure
                args = runtime.check_args(name, function, stored_args[0], _txn_resolver(txn))
                # A job run before its time (finish_all_scheduled_functions) sees the
                # clock at its time, as convex-test's jobs see fake timers run to it.
                now = max(now_ms(), scheduled)
                ctx = MutationCtx(runtime, txn, None, now, None, runtime.env)
                ctx._scheduler = Scheduler(runtime, txn, ctx.now, own_job=run.own_job)
                result = function.handler(ctx, **handler_args(args))
                refuse_awaitable(name, result)
                runtime.check_result(name, function, result, txn)
            except (OptimisticConcurrencyControlFailure, StorageError):
                raise  # the engine's, even when raised through the function: retried
            except LMDB_ERRORS:
                raise  # a damaged page met by a read: StorageError once out of db.run
            except BaseException as error:  # SystemExit too: the worker survives it
                raise _JobFailed(error, time.monotonic() - began) from error
            run.succeed(txn, result, time.monotonic() - began)
            return True

        attempt = 0
        failures = 0
        while True:
            try:
                return self._db.run(body, writable=True, source=run.source)[0]
            except OptimisticConcurrencyControlFailure:
                # Exactly once: conflicts are retried for as long as the engine is open.
                if self._stopping:
                    return False
                attempt += 1
                time.sleep(min(1.0, 0.01 * attempt))
            except _JobFailed as failed:
                done = run.record(_failed(failed.error), None, failed.seconds, running=False)
                if done:
                    _log_failure("mutation", name, run.label, failed.error)
                if not background and isinstance(failed.error, KeyboardInterrupt):
                    raise failed.error from None  # Ctrl-C in finish_*: recorded, then stops
                return done
            except Exception:
                # Storage or engine around the function (its commit, the run's own reads
                # and writes): not the function's error, so the run stays pending and is
                # retried with backoff (Convex's schedule_retry); then a later pass tries.
                if self._stopping:
                    return False
                failures += 1
                if failures > _SYSTEM_RETRIES:
                    _log.exception(
                        "%s (%s) failed %d times on a system error; left pending for a later pass.",
                        run.source,
                        run.label,
                        failures,
                    )
                    return False
                _log.warning(
                    "%s (%s): system error, retrying.", run.source, run.label, exc_info=True
                )
                time.sleep(min(1.0, 0.01 * 2**failures))

    def _complete(self, job_id: str, expected: tuple[str, ...], state: dict[str, Any]) -> bool:
        """Write a job's final state if it is still in one of the ``expected`` states
        (retried as :meth:`write_outcome` does)."""

        def body(txn: Transaction) -> bool:
            job = txn.get(job_id)
            if job is None or state_kind(job) not in expected:
                return False
            patch_job(txn, job_id, {"state": fitting(job, state), "completedTime": now_ms()})
            return True

        return self.write_outcome(body, f"job {job_id}")

    def write_outcome(self, body: Callable[[Transaction], bool], label: str) -> bool:
        """Commit ``body``, which records a run's outcome; returns what it returns.

        Conflicts are retried; a system error (:class:`StorageError`) is retried with
        backoff, as for a mutation's run: otherwise an action's outcome would be lost
        and its job (or cron) left ``inProgress`` with nothing running it.
        """
        failures = 0
        while True:
            try:
                result: bool = self._db.run(body, writable=True, source="scheduler")[0]
                return result
            except OptimisticConcurrencyControlFailure:
                time.sleep(0.01)
            except StorageError:
                failures += 1
                if failures > _SYSTEM_RETRIES:
                    raise
                _log.warning(
                    "Recording the outcome of %s: system error, retrying.",
                    label,
                    exc_info=True,
                )
                time.sleep(min(1.0, 0.01 * 2**failures))

    def _run_action(
        self, run: _Run, function: FunctionDef, background: bool, deadline: float | None = None
    ) -> bool:
        """Claim an action's job or cron run and run it (at most once); False if it was
        not due or pending, or close() has begun. Not in ``background``, waits for it to
        end, until ``deadline`` (a ``time.monotonic()``) at most: then raises
        :class:`_PastDeadline` and the action runs on."""

        future = self._claim_and_start(run, function)
        if future is None:
            return False
        if background:
            return True
        try:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            # Waited for without raising: an action ending just as the wait timed out
            # is done, not past the deadline (result(wait) raised TimeoutError then, and
            # a done() check after it re-raised that bare TimeoutError from finish_*).
            ended = bool(concurrent.futures.wait([future], wait).done)
            error = future.result() if ended else None
        except concurrent.futures.CancelledError:  # close() cancelled it before it began
            raise closed_error() from None
        except Exception:  # raised by the ended task: its outcome could not be recorded
            raise
        except BaseException:  # Ctrl-C while waiting: the action is cancelled, and recorded
            with self._idle:
                self._cancel(run.key)
            raise
        if not ended:
            raise _PastDeadline
        if isinstance(error, KeyboardInterrupt):
            raise error  # Ctrl-C in finish_*: recorded as the run's failure, then stops
        return True

    def _claim_and_start(
        self, run: _Run, function: FunctionDef
    ) -> concurrent.futures.Future[BaseException | None] | None:
        """Claim an action's run and start it on the loop; None if it was not pending,
        or close() has begun.

        From the claim to the registration in ``_running`` the run is counted in
        ``_claiming``, which close() waits for: otherwise a close() from another thread
        that lands after the claim's commit sees nothing running, stops the loop and
        closes the storage, and the run is left inProgress for good.
        """
        key = run.key
        with self._idle:
            if self._stopping:
                return None
            self._claiming += 1
        try:
            # On the executor's loop even for finish_*, which waits for it: close() then
            # waits for it (and cancels it after shutdown_timeout) as for the worker's.
            # Started before the claim: a loop whose thread cannot start leaves the run
            # pending for a later pass, not claimed with nothing to run it.
            loop = self._action_loop()
            try:
                started = self._db.run(
                    lambda txn: run.start(txn, claim=True), writable=True, source=run.source
                )[0]
            except OptimisticConcurrencyControlFailure:
                return None  # another executor keeps winning it; a later pass looks again
            if started is None:
                return None
            action: Coroutine[Any, Any, BaseException | None] | None = None
            try:
                action = self._action(run, function, started[0][0])
                with self._idle:  # registered before the task can end and unregister itself
                    self._runs[key] = run
                    future = self._running[key] = asyncio.run_coroutine_threadsafe(action, loop)
            except BaseException as error:
                if key in self._running:
                    raise  # handed to the loop: its task records its outcome
                self._runs.pop(key, None)
                if action is not None:
                    action.close()  # never handed to the loop
                return self._not_started(run, error)
            return future
        finally:
            with self._idle:
                self._claiming -= 1
                self._idle.notify_all()

    def _not_started(
        self, run: _Run, error: BaseException
    ) -> concurrent.futures.Future[BaseException | None]:
        """Record a claimed action that could not be started (its stored arguments are
        not ``[argsObject]``, the loop refused its task) ``failed`` with Convex's
        transient error, as Convex does with an action its executor failed to run (the
        system's fault, not the action's); the cause is logged. Returns the run's future,
        already done; re-raises what is not an ``Exception`` (Ctrl-C in finish_*), once
        recorded."""
        _log.error(
            "%s (%s) could not be started after its claim; recorded failed with %r.",
            run.source,
            run.label,
            TRANSIENT_ACTION_ERROR,
            exc_info=(type(error), error, error.__traceback__),
        )
        run.record(_TRANSIENT, None, 0.0, running=True)
        if not isinstance(error, Exception):
            raise error
        future: concurrent.futures.Future[BaseException | None] = concurrent.futures.Future()
        future.set_result(None)
        return future

    def _cancel(self, job_id: str) -> None:
        """Cancel a running action's task (call with ``_idle`` held); marked first, so
        its CancelledError is told from one the action raised itself."""
        future = self._running.get(job_id)
        if future is not None:
            self._cancelled.add(job_id)
            future.cancel()

    def _finished(self, run: _Run) -> None:
        """Unregister ``run``'s action, and only it: a cron's next run, claimed as soon as
        this one's outcome committed, is registered under the same key."""
        job_id = run.key
        with self._idle:
            if len(self._running) >= self.max_running_actions:
                self._wake.set()  # the worker stopped at the cap: room for one more
            if self._runs.get(job_id, run) is run:
                self._running.pop(job_id, None)
                self._runs.pop(job_id, None)
                self._cancelled.discard(job_id)
            self._idle.notify_all()

    def _action_loop(self) -> asyncio.AbstractEventLoop:
        with self._idle:  # the worker and finish_* threads may start the first actions at once
            loop = self._loop
            if loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="convexlite-scheduled-actions", daemon=True
                )
                try:
                    thread.start()
                except BaseException:  # no thread to be had: a later call tries again
                    loop.close()
                    raise
                self._loop_thread = thread
                self._loop = loop  # published once its thread runs it
            return loop

    def _action(
        self, run: _Run, function: FunctionDef, raw_args: Any
    ) -> Coroutine[Any, Any, BaseException | None]:
        """The run's task; it returns what the action raised, if not an Exception."""
        runtime = self._runtime
        job_id, name = run.key, run.name  # a job's id, or a cron's
        from .functions import handler_args, refuse_awaited_result

        async def task() -> BaseException | None:
            state: dict[str, Any]
            raised: BaseException | None = None
            result: Any = None
            began = time.monotonic()
            try:
                args = runtime.check_args(name, function, raw_args)
                current_job.set(run.own_job)  # this task's context only
                _current_run.set(run)
                ctx = ActionCtx(runtime, None, runtime.env)
                result = await function.handler(ctx, **handler_args(args))
                result = refuse_awaited_result(name, result)
                runtime.check_result(name, function, result)
                state = {"kind": "success"}
            except asyncio.CancelledError as error:
                if job_id in self._cancelled:  # close(), or Ctrl-C in finish_*, cancelled it
                    state = _TRANSIENT
                else:  # raised by the action's own code: its failure, as any error it throws
                    state = _failed(error)
                    _log_failure("action", name, run.label, error)
            except Exception as error:
                state = _failed(error)
                _log_failure("action", name, run.label, error)
            except BaseException as error:
                # SystemExit, KeyboardInterrupt: re-raised, they would stop the loop's
                # thread and every action on it; they are this run's failure only.
                state = _failed(error)
                raised = error
                _log_failure("action", name, run.label, error)
            seconds = time.monotonic() - began
            try:
                await asyncio.to_thread(run.record, state, result, seconds, running=True)
            except Exception:
                # Logged here: the worker never reads the task's result (finish_* raises it).
                _log.exception(
                    "%s (%s): its outcome could not be recorded; it stays inProgress until "
                    "an executor starts with no other alive on the folder (which fails it).",
                    run.source,
                    run.label,
                )
                raise
            finally:
                self._finished(run)
            return raised

        return task()


_TRANSIENT: dict[str, Any] = {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}

#: The run (a job's or a cron's) of the scheduled action running in this context: the
#: action's task and the threads it hands work to, which copy the context.
_current_run: ContextVar[_Run | None] = ContextVar("convexlite_scheduled_run", default=None)

#: Seconds close() waits for cancelled actions to end, then for the loop's thread to stop
#: (an action that ignores its cancellation, or blocks the loop, is then left behind).
_CANCEL_GRACE = 5.0


#: In-place retries of a scheduled mutation that failed on a system error, with backoff
#: (20 ms, 40 ms, ... 320 ms); after them the job is left pending for a later pass.
_SYSTEM_RETRIES = 4


class _PastDeadline(Exception):
    """``finish_*``'s deadline passed while it waited for an action it had started."""


def _timed_out(timeout: float) -> SchedulerError:
    return SchedulerError(
        f"Scheduled functions were still due or running after {timeout} s (a function "
        "that keeps rescheduling itself, or runs longer, jobs in progress in another "
        "executor, or left inProgress by a dead process): raise timeout, or inspect "
        "ctx.db.system.query('_scheduled_functions') and ctx.db.system.query('_cron_jobs')."
    )


class _JobFailed(Exception):
    """What a scheduled function (or its argument or return validation) raised, and
    after how many seconds."""

    def __init__(self, error: BaseException, seconds: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.seconds = seconds


def _unsupported(kind: str) -> dict[str, Any]:
    """The failure of a job whose function is now neither a mutation nor an action."""
    return {
        "kind": "failed",
        "error": f"Unsupported function type {kind} in scheduler: only Mutation and Action "
        "can be scheduled",
    }


def _log_failure(kind: str, name: str, label: str, error: BaseException) -> None:
    """Log a scheduled function's failure, as Convex shows it in the function logs.

    The job's ``state.error`` keeps the message only; without this the traceback was
    lost and a failing job was silent. A ``ConvexError`` (an expected failure) is a
    WARNING without traceback, anything else an ERROR with it (as for HTTP actions).
    """
    if isinstance(error, ConvexError):
        _log.warning("Scheduled %s %s (%s) failed: %s", kind, name, label, error)
    else:
        _log.error(
            "Scheduled %s %s (%s) failed",
            kind,
            name,
            label,
            exc_info=(type(error), error, error.__traceback__),
        )


def _failed(error: BaseException) -> dict[str, Any]:
    return {"kind": "failed", "error": _error_message(error)}


class _Run(Protocol):
    """One run of a scheduled job or of a cron: how the executor starts and records it."""

    #: The job's or cron's id (keys ``_running``).
    key: str
    #: The function's name.
    name: str
    #: What logs and errors call it ("job <id>", "cron 'name'").
    label: str
    #: The source of its transactions.
    source: str
    #: The job a scheduled function belongs to (it cannot cancel it; what an action
    #: schedules after its job is canceled is created canceled), or None.
    own_job: str | None

    def start(self, txn: Transaction, *, claim: bool) -> tuple[Any, float] | None:
        """In ``txn``: (stored arguments ``[argsObject]``, the run's time) if it is pending
        and due, else None; ``claim`` (an action's) marks it inProgress. The arguments
        are taken out of their list by the caller, where a damaged list is the run's
        failure."""

    def succeed(self, txn: Transaction, result: Any, seconds: float) -> None:
        """In a mutation's ``txn``: record its success, to commit with its writes."""

    def record(self, state: dict[str, Any], result: Any, seconds: float, *, running: bool) -> bool:
        """In a transaction of its own: record the outcome ``state`` (``{"kind":
        "success"}`` or ``failed``) of a run that was claimed (``running``) or pending;
        False if it was not in that state any more."""


class _JobRun:
    """A job of ``_scheduled_functions`` (see :class:`_Run`)."""

    __slots__ = ("_executor", "key", "label", "name", "own_job", "source")

    own_job: str | None

    def __init__(self, executor: Executor, job_id: str, name: str, kind: str) -> None:
        self._executor = executor
        self.key = self.own_job = job_id
        self.name = name
        self.label = f"job {job_id}"
        self.source = f"Scheduled {kind} {name}"

    def start(self, txn: Transaction, *, claim: bool) -> tuple[Any, float] | None:
        job = txn.get(self.key)
        if job is None or state_kind(job) != "pending" or job_problem(job) is not None:
            return None  # run, canceled, or damaged since the pass read it
        patch_job(txn, self.key, {"state": {"kind": "inProgress"}})  # as it sees itself
        return job["args"], job["scheduledTime"]

    def succeed(self, txn: Transaction, result: Any, seconds: float) -> None:
        patch_job(txn, self.key, {"state": {"kind": "success"}, "completedTime": now_ms()})

    def record(self, state: dict[str, Any], result: Any, seconds: float, *, running: bool) -> bool:
        expected = ("inProgress",) if running else ("pending",)
        return self._executor._complete(self.key, expected, state)
