"""One run of a scheduled job or cron, and how its failure is recorded and reported.

The executor (:mod:`engine.executor`) runs a due job through a :class:`_JobRun` (a cron
through :class:`~engine.cronruns.CronRun`): both follow :class:`_Run`, which claims the run,
records its success within a mutation's transaction, or its outcome in a transaction of
its own. A failure is stored as Convex shows it (:func:`_failed`: ``Uncaught <Type>:
<message>``, cut to fit the document) and logged with its traceback (:func:`_log_failure`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConvexError, SchedulerError
from .scheduler import TRANSIENT_ACTION_ERROR, job_problem, now_ms, patch_job, state_kind

if TYPE_CHECKING:
    from .executor import Executor
    from .transaction import Transaction

_log = logging.getLogger("engine.scheduler")

#: The state of an action its executor could not run to its end (Convex's wording).
_TRANSIENT: dict[str, Any] = {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}


def _error_message(error: BaseException) -> str:
    """A failure as stored (a job's ``state.error``, a cron log's ``error``): Convex's
    ``Uncaught <Type>: <message>``, cut at :data:`_MAX_ERROR_CHARS` characters so the
    document that records it always fits the 1 MiB limit (the whole error is logged)."""
    text = f"Uncaught {type(error).__name__}: {_error_text(error)}"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + " ... (truncated)"
    return text


#: Characters of an error kept in a job's state or a cron's log.
_MAX_ERROR_CHARS = 64 * 1024


def _error_text(error: BaseException) -> str:
    """``str(error)``, or a placeholder naming what it raised: a failure is recorded
    whatever the function raised, also an error whose ``__str__`` has a bug (that
    error escaped the recording, and the run stayed pending or inProgress)."""
    try:
        return str(error)
    except Exception as failure:
        return f"<str() of the error raised {type(failure).__name__}>"


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
        super().__init__(_error_text(error))
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
