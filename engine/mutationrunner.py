"""Scheduled mutations: each run exactly once, its job's state committed with its writes.

One transaction checks the run (a job's or a cron's) is still pending, runs the
mutation and records its success, so the run's state commits with the mutation's writes
or not at all; conflicts are retried while the engine is open. What the function raises
is the run's failure, recorded in a transaction of its own; a system error around it
(:class:`StorageError`) is retried with backoff, then left to a later pass.
:class:`MutationRunner` is a base class of :class:`~engine.executor.Executor`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .contexts import MutationCtx
from .errors import OptimisticConcurrencyControlFailure, StorageError
from .runs import _failed, _JobFailed, _log_failure, _Run
from .scheduler import Scheduler, now_ms
from .storage import LMDB_ERRORS

if TYPE_CHECKING:
    from .database import Database
    from .functions import FunctionDef, Runtime
    from .transaction import Transaction

__all__ = ["MutationRunner"]

_log = logging.getLogger("engine.scheduler")

#: In-place retries of a scheduled mutation that failed on a system error, with backoff
#: (20 ms, 40 ms, ... 320 ms); after them the job is left pending for a later pass.
_SYSTEM_RETRIES = 4


class MutationRunner:
    """Runs a scheduled mutation's run; a base of the executor, which sets ``_runtime``,
    ``_db`` and ``_stopping``."""

    # Set by the executor.
    _runtime: Runtime
    _db: Database
    _stopping: bool

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
                # What the run records is the checked value (a tuple a list, UNSET None).
                result = runtime.check_result(name, function, result, txn)
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
