"""Scheduled actions: claimed, then run as tasks on the executor's event loop.

An action's run (a job's or a cron's) is claimed (``inProgress``) in a transaction, then
run as a task on one event-loop thread per executor, started on first use; its outcome
is recorded when it ends (at most once: a run is never started twice). ``finish_*``
waits for the task until its deadline; ``close()`` waits for the running ones, then
cancels them (:meth:`ActionRunner._cancel_all`), and a cancelled action is recorded
failed with Convex's transient error. :class:`ActionRunner` is a base class of
:class:`~engine.executor.Executor`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .contexts import ActionCtx
from .errors import OptimisticConcurrencyControlFailure, closed_error
from .runs import _TRANSIENT, _failed, _log_failure, _PastDeadline, _Run
from .scheduler import TRANSIENT_ACTION_ERROR, current_job

if TYPE_CHECKING:
    from .database import Database
    from .functions import FunctionDef, Runtime

__all__ = ["ActionRunner"]

_log = logging.getLogger("engine.scheduler")

#: The run (a job's or a cron's) of the scheduled action running in this context: the
#: action's task and the threads it hands work to, which copy the context.
_current_run: ContextVar[_Run | None] = ContextVar("convexlite_scheduled_run", default=None)

#: Seconds close() waits for cancelled actions to end, then for the loop's thread to stop
#: (an action that ignores its cancellation, or blocks the loop, is then left behind).
_CANCEL_GRACE = 5.0


class ActionRunner:
    """Claims, runs, waits for and cancels scheduled actions; a base of the executor,
    which sets ``_runtime``, ``_db``, ``_stopping``, ``_wake`` and
    ``max_running_actions``."""

    # Set by the executor.
    _runtime: Runtime
    _db: Database
    _stopping: bool
    _wake: threading.Event
    max_running_actions: int

    def __init__(self) -> None:
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
        super().__init__()

    def on_action_loop(self) -> bool:
        """True inside one of this executor's scheduled actions: on the thread that runs
        them, or in code the action handed to another thread (``asyncio.to_thread``
        copies the context, and with it the job being run)."""
        thread = self._loop_thread
        if thread is not None and thread is threading.current_thread():
            return True
        run = _current_run.get()  # a job's or a cron's
        return run is not None and self._runs.get(run.key) is run

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
                # What the run records is the checked value (a tuple a list, UNSET None).
                result = runtime.check_result(name, function, result)
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

    def _stop_loop(self) -> None:
        """Stop the actions' loop, wait up to :data:`_CANCEL_GRACE` for its thread, and
        close the loop if the thread ended (close()'s step)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            assert self._loop_thread is not None
            self._loop_thread.join(_CANCEL_GRACE)
            if not self._loop_thread.is_alive():
                loop.close()
