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
  batches of :data:`~engine.collector._COLLECT_BATCH` per transaction; pending jobs are
  not read (see :meth:`Executor.collect_completed`).
- **A damaged job or cron is skipped**: one whose fields have the wrong type (see
  :func:`~engine.scheduler.job_problem`, :func:`~engine.crontables.cron_problems`) is
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
"Transient error while executing action" (see :mod:`engine.schedulerlock`). While
another executor is alive nothing can be told, and such jobs stay ``inProgress``
until a later start finds itself alone.

Close: the worker finishes the job in hand (a mutation job's transaction
commits or is discarded, never half-applied), running actions get
:attr:`Executor.shutdown_timeout` seconds to end, then are cancelled and marked
failed with the transient error (a ``CancelledError`` the action raises itself, not
from the executor's cancel, is the action's own failure).

This module finds the due runs and hands each to its runner; the rest is in:
:mod:`engine.mutationrunner` (a mutation's run), :mod:`engine.actionrunner` (an
action's: claim, event loop, cancel), :mod:`engine.runs` (a job's run and how its
outcome is recorded), :mod:`engine.collector` (deleting completed jobs) and
:mod:`engine.schedulerlock` (the lock, and failing orphaned actions). The runners and
the collector are base classes of :class:`Executor`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from .actionrunner import ActionRunner
from .collector import Collector
from .crontables import CRON_JOBS
from .errors import (
    OptimisticConcurrencyControlFailure,
    SchedulerError,
    StorageError,
    closed_error,
)
from .mutationrunner import _SYSTEM_RETRIES, MutationRunner
from .query import Query
from .runs import (
    _TRANSIENT,
    _JobRun,
    _PastDeadline,
    _Run,
    _timed_out,
    _unsupported,
)
from .scheduler import (
    BY_STATE,
    PAGE_BYTES,
    SCHEDULED_FUNCTIONS,
    fitting,
    job_problem,
    now_ms,
    patch_job,
    state_kind,
)
from .schedulerlock import take_lock

if TYPE_CHECKING:
    from .commit import CommitRequest
    from .functions import Runtime
    from .transaction import Transaction

__all__ = ["Executor"]

_log = logging.getLogger("engine.scheduler")

#: Jobs read per page (each page in its own snapshot; a pass reads pages until the first
#: job not yet due).
_BATCH = 256


class Executor(Collector, MutationRunner, ActionRunner):
    """Runs scheduled jobs for one engine handle (see the module docstring).

    Settings (class attributes): :attr:`poll_interval`, :attr:`shutdown_timeout`,
    :attr:`max_running_actions`, and, from :class:`~engine.collector.Collector`,
    :attr:`completed_job_retention`, :attr:`collect_interval` and
    :attr:`full_collect_interval`.

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

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._db = runtime.db
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        #: Ids of the damaged jobs and crons this executor skipped (each is logged once).
        self._damaged: set[str] = set()
        super().__init__()  # the collector's state, then the actions'

    # -- lifecycle -----------------------------------------------------------

    def start(self, *, background: bool) -> None:
        """Take the executors' lock (failing orphaned actions if alone), start the worker."""
        self._lock_fd = take_lock(self._db)
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
            self._stop_loop()
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
        # Old completed jobs first; without a worker, this call makes its full sweeps.
        self._collect_before_finish(start, deadline, timeout, worker=self._thread is not None)
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
                .paginate({"numItems": _BATCH, "cursor": cursor, "maximumBytesRead": PAGE_BYTES})
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
        from .cronruns import target_function
        from .crontables import all_crons, cron_problems

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
        :func:`~engine.crontables.cron_problems` found in ``document``, a job or a cron of
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
        from .cronruns import CronRun, target_function
        from .crontables import all_crons, cron_problems

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
