"""``ctx.scheduler``: run a mutation or action later, recorded in ``_scheduled_functions``.

A job is a document of the system table ``_scheduled_functions``, in Convex's
shape (stored data is camelCase, times in milliseconds)::

    {"name": "messages:destruct",        # the target's function name
     "args": [{"id": "..."}],            # [argsObject]
     "scheduledTime": 1767225600000.0,   # ms since the epoch, as requested
     "completedTime": 1767225600012.5,   # ms; set once the job is done or canceled
     "state": {"kind": "pending"}}       # | inProgress | success
                                         # | {"kind": "failed", "error": "..."} | canceled

From a mutation, scheduling and canceling are writes of the mutation's own
transaction: they commit with it and roll back with it (also inside a nested
``ctx.run_mutation`` that raises and is caught). From an action each call is
its own transaction and takes effect at once, whatever the action does next.
:mod:`engine.executor` runs the jobs.

Users read jobs with ``ctx.db.system.get(id)`` and
``ctx.db.system.query("_scheduled_functions")``; only the engine writes them
(``ctx.db.patch`` of a job raises :class:`ReadOnlyError`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import ids
from .catalog import NEXT_TABLE_KEY, TableDef
from .encoding import decode_document
from .errors import FunctionNotFound, InvalidId, LimitExceeded, SchedulerError
from .values import MAX_DOCUMENT_SIZE, value_size

if TYPE_CHECKING:
    from collections.abc import Generator

    from .database import Database
    from .functions import FunctionDef, Runtime
    from .transaction import Transaction

__all__ = [
    "BY_STATE",
    "MAX_SCHEDULED_ARGS_BYTES",
    "MAX_SCHEDULED_PER_MUTATION",
    "SCHEDULED_FUNCTIONS",
    "TRANSIENT_ACTION_ERROR",
    "ActionCancel",
    "ActionJobId",
    "Scheduler",
    "check_jobs",
]

#: The system table of scheduled jobs.
SCHEDULED_FUNCTIONS = "_scheduled_functions"
#: Its index for the executor: pending jobs in scheduled-time order.
BY_STATE = "by_state"
_BY_STATE_FIELDS = ("state.kind", "scheduledTime")
#: Bytes of job documents the executor reads per page (or batch), well inside a
#: transaction's 16 MiB read limit: a job's arguments may be up to 1 MiB, so 256 of them
#: would not fit.
PAGE_BYTES = 4 << 20
#: Convex's limit on the functions one mutation may schedule.
MAX_SCHEDULED_PER_MUTATION = 1000
#: Convex's limit on the total size of their arguments (Convex's size formula).
MAX_SCHEDULED_ARGS_BYTES = 16 << 20
#: Convex refuses a time more than five years away from now, either way.
_FIVE_YEARS_MS = 5 * 365 * 24 * 3600 * 1000.0
#: The error of an action whose executor died while it ran (Convex's wording).
TRANSIENT_ACTION_ERROR = "Transient error while executing action"
#: The largest state a job takes whatever happens (a longer error is cut to fit, see
#: :func:`fitting`): scheduling keeps room for it, so a stored job can always be claimed,
#: completed, canceled or failed.
_ROOMIEST_STATE = {"kind": "failed", "error": TRANSIENT_ACTION_ERROR}
#: The longest id a document has (31 to 37 characters): a job is measured before its id.
_LONGEST_ID = "0" * 37


#: The job of the scheduled action running in this context (asyncio task, and the
#: threads ``ctx.run_mutation`` uses, which copy it), or None. Functions the action
#: calls see it: what they schedule after the job is canceled is created canceled,
#: and they cannot cancel the job (Convex's rules for a job's "execution context").
current_job: ContextVar[str | None] = ContextVar("convexlite_scheduled_job", default=None)


def jobs_table(txn: Transaction) -> TableDef:
    """``_scheduled_functions`` as ``txn`` sees it, created (with its index) if missing."""
    return system_table(txn, SCHEDULED_FUNCTIONS, {BY_STATE: _BY_STATE_FIELDS})


def system_table(txn: Transaction, name: str, indexes: dict[str, tuple[str, ...]]) -> TableDef:
    """System table ``name`` as ``txn`` sees it, created with ``indexes`` if missing."""
    table = txn.table(name)
    if table is None:
        txn._require_writable()
        txn.reads.add_point(NEXT_TABLE_KEY)  # as Transaction._create_table does
        catalog = txn._catalog.with_table(name, system=True, indexes=indexes)
        txn.writes.catalog = catalog
        table = catalog.tables[name]
    return table


@contextmanager
def engine_writes(txn: Transaction) -> Iterator[None]:
    """Inside: the engine's own writes to system tables (users' writes are refused).

    Not counted against the function's write limits: the bookkeeping written in a
    function's transaction (a job's state, a cron's next run) is the engine's, and a
    function may write up to the limits itself.
    """
    previous = txn.system_writes
    writes = txn.writes
    counts = writes.writes, writes.bytes_written
    txn.system_writes = True
    writes.writes = writes.bytes_written = 0
    try:
        yield
    finally:
        txn.system_writes = previous
        writes.writes, writes.bytes_written = counts


def fitting(job: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """``state``, to be written with ``completedTime`` on ``job`` (as read), its error cut
    to the room the 1 MiB document limit leaves: the 64 Ki characters of a failure do not
    fit beside arguments of almost 1 MiB. Cost: one pass over the job's size."""
    error = state.get("error")
    if error is None:
        return state
    room = MAX_DOCUMENT_SIZE - value_size(
        dict(job, state={**state, "error": ""}, completedTime=0.0)
    )
    cut = cut_error(error, room)
    return state if cut is error else {**state, "error": cut}


def cut_error(error: str, room: int) -> str:
    """``error`` itself if its UTF-8 takes at most ``room`` bytes (what a document has
    left beside an empty error), else cut to them and marked ``... (truncated)``."""
    encoded = error.encode("utf-8", "surrogatepass")
    if len(encoded) <= room:
        return error
    suffix = " ... (truncated)"
    kept = encoded[: max(0, room - len(suffix))].decode("utf-8", "ignore")
    return kept + suffix if room >= len(suffix) else ""


def patch_job(txn: Transaction, job_id: str, fields: dict[str, Any]) -> None:
    """Engine-internal write of a job document (see :func:`engine_writes`)."""
    with engine_writes(txn):
        txn.patch(job_id, fields)


def get_job(txn: Transaction, job_id: str) -> dict[str, Any] | None:
    """The job with this id, or None; raises :class:`InvalidId` for an id of another table."""
    try:
        number, _ = ids.decode_id(job_id)
    except InvalidId:
        number = -1
    table = txn.table(SCHEDULED_FUNCTIONS)
    if table is None or table.number != number:
        raise InvalidId(
            f"Invalid scheduled function ID. The ID must be an ID on the "
            f"'{SCHEDULED_FUNCTIONS}' table. (got {job_id!r}; ids of jobs are what "
            "ctx.scheduler.run_after / run_at return)",
            value=job_id,
        )
    return txn.get(job_id)


def state_kind(document: dict[str, Any]) -> str | None:
    """``document["state"]["kind"]`` (a job's or a cron's) if it is a string, else None:
    a damaged document (its state not an object) is in no state."""
    state = document.get("state")
    kind = state.get("kind") if isinstance(state, dict) else None
    return kind if isinstance(kind, str) else None


def job_problem(job: dict[str, Any]) -> str | None:
    """What keeps the executor from running (or from waiting for) a stored job, or None:
    its ``name`` is not a string, or its ``scheduledTime`` not a float. Such a job (an
    old or foreign process's, or damage) is skipped; ``Engine.check()`` names it. Cost:
    two type checks."""
    name = job.get("name")
    if not isinstance(name, str):
        return f"name is not a string: {name!r:.80}"
    if not isinstance(job.get("scheduledTime"), float):
        return f"scheduledTime is not a float: {job.get('scheduledTime', '(missing)')!r:.80}"
    return None


_STATES = frozenset({"pending", "inProgress", "success", "failed", "canceled"})
_FINAL = frozenset({"success", "failed", "canceled"})
_FIELDS = frozenset(
    {"_id", "_creationTime", "name", "args", "scheduledTime", "completedTime", "state"}
)


def check_jobs(
    db: Database, rtxn: Any, kinds: dict[str, str]
) -> tuple[dict[str, int], list[str], dict[str, int]]:
    """Check every job's shape in the LMDB txn ``rtxn`` (the snapshot the rest of
    ``Engine.check()`` reads); returns (jobs by state, problems, pending jobs by name
    for the names this engine does not know).

    Invariants: Convex's fields and no others; ``args`` is ``[object]``; a known
    state, with ``error`` (a string) exactly when failed; ``completedTime`` exactly
    when the job is final; a job ``inProgress`` is an action's (``kinds``: function
    name → kind, for the functions this engine knows). Cost: one pass over the table.
    """
    counts: dict[str, int] = {}
    problems: list[str] = []
    unknown: dict[str, int] = {}
    for job in all_documents(db, rtxn, SCHEDULED_FUNCTIONS):
        where = f"{SCHEDULED_FUNCTIONS} {job['_id']}"
        state = job.get("state")
        kind = state.get("kind") if isinstance(state, dict) else None
        # Fields of any type may be stored here: compare only strings with the sets
        # (a list or an object is unhashable).
        if not isinstance(kind, str) or kind not in _STATES:
            problems.append(
                f"{where}: unknown state {state!r} (state.kind is one of "
                f"{', '.join(sorted(_STATES))})"
            )
            continue
        assert isinstance(state, dict)
        counts[kind] = counts.get(kind, 0) + 1
        if set(job) - _FIELDS:
            problems.append(f"{where}: unexpected fields {sorted(set(job) - _FIELDS)}")
        name = job.get("name")
        if not isinstance(name, str):
            problems.append(f"{where}: name is not a string: {name!r}")
            name = None
        args = job.get("args")
        if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict)):
            problems.append(f"{where}: args is not [argsObject]: {args!r}")
        if not isinstance(job.get("scheduledTime"), float):
            problems.append(f"{where}: scheduledTime is not a float")
        wanted_state_fields = {"kind", "error"} if kind == "failed" else {"kind"}
        if set(state) != wanted_state_fields or not isinstance(state.get("error", ""), str):
            problems.append(f"{where}: state {state!r} does not have Convex's shape")
        completed = job.get("completedTime")
        if (kind in _FINAL) != isinstance(completed, float):
            problems.append(f"{where}: completedTime must be set exactly when a job is final")
        for field, value in (
            ("scheduledTime", job.get("scheduledTime")),
            ("completedTime", completed),
        ):
            if isinstance(value, float) and not math.isfinite(value):
                # A float, but no time: never due, or never old enough to be deleted.
                problems.append(f"{where}: {field} is not a finite time: {value!r}")
        if kind == "inProgress" and name is not None and kinds.get(name) == "mutation":
            problems.append(f"{where}: a mutation's job is stored inProgress")
        if kind == "pending" and name is not None and name not in kinds:
            unknown[name] = unknown.get(name, 0) + 1
    return counts, problems, unknown


def all_documents(db: Database, rtxn: Any, table_name: str) -> Iterator[dict[str, Any]]:
    """Every document of a table, read straight from storage in the LMDB txn ``rtxn`` (no
    read limits: for checks). One that does not decode to an object with an ``_id`` is
    left out: ``Engine.check()``'s data pass, in the same snapshot, reports it. Cost: one
    scan of the table."""
    storage = db.storage
    table = db.catalog_at(rtxn).tables.get(table_name)
    if table is None:
        return
    prefix = table.prefix
    cursor = rtxn.cursor(db=storage.documents)
    try:
        if cursor.set_range(prefix):
            for key, raw in cursor.iternext(keys=True, values=True):
                if bytes(key[:4]) != prefix:
                    break
                try:
                    document = decode_document(raw)
                except Exception:  # reported by the data pass
                    continue
                if isinstance(document.get("_id"), str):
                    yield document
    finally:
        cursor.close()


def resolve_target(runtime: Runtime, ref: Any, prefix: str = "") -> tuple[str, FunctionDef]:
    """The name jobs run ``ref`` by, and its definition: a mutation or action (public or
    internal) registered in the engine's package. ``prefix`` starts the errors' messages.

    Raises :class:`FunctionNotFound` for a name no function has or a function outside
    the package, :class:`SchedulerError` for a query.
    """
    name, function = runtime.resolve(ref, internal=True)
    name = runtime.registry.names.get(id(function), name)
    if runtime.registry.by_name.get(name) is not function:
        raise FunctionNotFound(
            f"{prefix}{function!r} is not registered: the scheduler runs functions by name, "
            "so the target must be in the package passed as Engine.open(functions=...).",
            name=name,
        )
    if function.kind not in ("mutation", "action"):
        raise SchedulerError(
            f"{prefix}{name} is a {function.kind}: the scheduler runs a mutation or an action "
            "(public or internal). Run queries from the scheduled function instead."
        )
    return name, function


def as_seconds(value: object) -> float | None:
    """``value`` as a float if it is a number (``int`` or ``float``, not ``bool``), an
    ``int`` past the floats' range as infinity; None for anything else. For the callers
    that then refuse what is not finite, in their own words."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    return None


def now_ms() -> float:
    return time.time() * 1000.0


class ActionJobId(str):
    """A job id as ``ctx.scheduler.run_after`` / ``run_at`` return it in an action: a
    plain ``str`` that may also be awaited (to the same id), since a Convex action
    writes ``await ctx.scheduler.runAfter(...)``. The job is scheduled by the call
    itself, awaited or not.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, str]:
        yield from ()
        return str(self)


class ActionCancel:
    """What ``ctx.scheduler.cancel`` returns in an action: ``None`` to await (the job
    was canceled by the call itself), so ``await ctx.scheduler.cancel(id)`` works as in
    Convex."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()

    def __repr__(self) -> str:
        return "<canceled>"


_ACTION_CANCEL = ActionCancel()


class Scheduler:
    """``ctx.scheduler`` of a mutation or an action: ``run_after``, ``run_at``, ``cancel``.

    In a mutation it writes to the mutation's transaction; in an action each
    call commits its own small transaction at once. Cost per call: argument
    validation, a pass measuring the job's size (with room for its final state) and
    one document insert (or one read and one patch for ``cancel``).

    Example::

        @mutation(args={"id": v.id("messages")})
        def send_expiring(ctx, id):
            ctx.scheduler.run_after(60, internal.messages.destruct, {"id": id})
    """

    __slots__ = ("_bytes", "_count", "_now", "_own_job", "_parent_job", "_runtime", "_txn")

    def __init__(
        self,
        runtime: Runtime,
        txn: Transaction | None,
        now: float | None = None,
        parent_job: str | None = None,
        own_job: str | None = None,
    ) -> None:
        self._runtime = runtime
        self._txn = txn
        #: A mutation's frozen clock (Convex's ``Date.now()``); None: the wall clock.
        self._now = now
        #: The job of the scheduled action this scheduler belongs to, if any.
        self._parent_job = parent_job
        #: The job of the scheduled mutation this scheduler belongs to (it cannot cancel it).
        self._own_job = own_job
        self._count = 0
        self._bytes = 0
        if txn is not None:
            txn.scheduler = self  # its counts are the transaction's (ctx.meta metrics)

    def __repr__(self) -> str:
        where = "mutation" if self._txn is not None else "action"
        return f"<Scheduler of a {where}>"

    # -- scheduling ----------------------------------------------------------

    def run_after(self, delay: float, ref: Any, args: dict[str, Any] | None = None) -> str:
        """Run ``ref(args)`` ``delay`` seconds from now; returns the job's id.

        ``ref`` is a mutation or an action (public or internal), as a
        decorated function or its name; ``args`` are checked against its
        validators now. Delay 0 runs it right after this function commits.

        Raises :class:`SchedulerError` for a delay that is not a finite
        number ≥ 0, :class:`FunctionNotFound`, :class:`ArgumentValidationError`,
        :class:`LimitExceeded` past 1000 jobs, or 16 MiB of their arguments, in
        one mutation, or for arguments that do not fit in one job.
        """
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise SchedulerError(
                f"`delay` must be a number (seconds), got {type(delay).__name__}: {delay!r}."
            )
        try:
            delay = float(delay)
        except OverflowError:  # an int past the floats' range
            delay = math.inf
        if not math.isfinite(delay):
            raise SchedulerError(f"`delay` must be a finite number (seconds), got {delay!r}.")
        if delay < 0:
            raise SchedulerError(
                f"`delay` must be non-negative, got {delay!r}: use 0 to run right after "
                "this function."
            )
        return self._schedule(self._clock() + delay * 1000.0, ref, args)

    def run_at(self, when: float | datetime, ref: Any, args: dict[str, Any] | None = None) -> str:
        """Run ``ref(args)`` at ``when`` (seconds since the epoch, or a ``datetime``).

        A time in the past runs right away. ``when`` must lie within 5 years of
        now. A naive ``datetime`` is read as local time, as ``datetime.timestamp()``
        does. Raises as :meth:`run_after` does.
        """
        if isinstance(when, datetime):
            try:
                seconds = when.timestamp()
            except (ValueError, OverflowError, OSError) as error:  # datetime.min, local time
                raise SchedulerError(
                    f"The invoke time {when!r} has no timestamp ({error}): it must lie within "
                    "5 years of now."
                ) from None
        elif (number := as_seconds(when)) is not None:
            seconds = number
        else:
            raise SchedulerError(
                f"The invoke time must be a datetime or a timestamp (seconds since the "
                f"epoch), got {type(when).__name__}: {when!r}."
            )
        if not math.isfinite(seconds):
            raise SchedulerError(f"The invoke time must be a finite number, got {when!r}.")
        return self._schedule(seconds * 1000.0, ref, args)

    def _clock(self) -> float:
        return self._now if self._now is not None else now_ms()

    def _schedule(self, when_ms: float, ref: Any, args: dict[str, Any] | None) -> str:
        now = self._clock()
        if abs(when_ms - now) > _FIVE_YEARS_MS:
            direction = "future" if when_ms > now else "past"
            raise SchedulerError(
                f"UnixTimestamp({when_ms / 1000.0!r}s) is more than 5 years in the "
                f"{direction}: scheduled times must be within 5 years of now. run_at takes "
                "seconds since the epoch (not milliseconds) or a datetime; run_after a delay "
                "in seconds."
            )
        runtime = self._runtime
        name, function = resolve_target(runtime, ref)
        txn = self._txn
        if txn is None:
            checked = runtime.check_args(name, function, args)
            result: str = runtime.db.run(
                lambda t: self._insert(t, name, checked, when_ms),
                writable=True,
                source="ctx.scheduler",
            )[0]
            return ActionJobId(result)  # awaitable: `await ctx.scheduler.run_after(...)`
        from .functions import _txn_resolver

        checked = runtime.check_args(name, function, args, _txn_resolver(txn))
        limits = txn.limits  # None: Convex's, else a nested call's lower ones
        max_jobs = MAX_SCHEDULED_PER_MUTATION if limits is None else limits.functions_scheduled
        if self._count >= max_jobs:
            raise LimitExceeded(
                f"Too many functions scheduled by this mutation (limit: {max_jobs}). "
                "Schedule one function that schedules the rest in batches.",
                limit="TooManyFunctionsScheduled",
            )
        size = value_size([checked])
        max_bytes = (
            MAX_SCHEDULED_ARGS_BYTES if limits is None else limits.scheduled_function_args_bytes
        )
        if self._bytes + size > max_bytes:
            raise LimitExceeded(
                "Too large total size of the arguments of scheduled functions from this "
                f"mutation (limit: {max_bytes} bytes). Pass ids of stored documents instead "
                "of large values.",
                limit="ScheduledFunctionsArgumentsTooLarge",
            )
        job_id = self._insert(txn, name, checked, when_ms)
        self._count += 1
        self._bytes += size
        return job_id

    def usage(self) -> tuple[int, int]:
        """(jobs scheduled, bytes of their arguments) so far: a savepoint of the limits."""
        return self._count, self._bytes

    def restore_usage(self, usage: tuple[int, int]) -> None:
        """Go back to :meth:`usage` (a rolled-back sub-transaction's jobs are gone)."""
        self._count, self._bytes = usage

    def _insert(self, txn: Transaction, name: str, args: dict[str, Any], when_ms: float) -> str:
        jobs_table(txn)
        state = "pending"
        if self._parent_job is not None:
            parent = txn.get(self._parent_job)
            if parent is not None and state_kind(parent) == "canceled":
                state = "canceled"  # a canceled action's new jobs never run (Convex)
        job: dict[str, Any] = {
            "name": name,
            "args": [args],
            "scheduledTime": float(when_ms),
            "state": {"kind": state},
        }
        if state == "canceled":  # as Convex records it: scheduled and completed now
            job["scheduledTime"] = job["completedTime"] = now_ms()
        # Room for its later states too: stored, a job must be able to take them.
        final = {"_id": _LONGEST_ID, "_creationTime": 0.0, **job, "completedTime": 0.0}
        size = value_size(dict(final, state=_ROOMIEST_STATE))
        if size > MAX_DOCUMENT_SIZE:
            what = (
                f"the job would measure {size} bytes once completed, over the limit of "
                f"{MAX_DOCUMENT_SIZE}"
            )
            limit, path = "DocumentTooLarge", "$"
        else:
            try:
                with engine_writes(txn):  # a system write: not the function's (Convex)
                    return txn.insert(SCHEDULED_FUNCTIONS, job, system=True)
            except LimitExceeded as error:
                if error.limit not in ("DocumentTooLarge", "NestingTooDeep"):
                    raise
                what = str(error).rsplit(". ", 1)[0]  # without its fix, for a document's writer
                limit, path = error.limit, error.path
        raise LimitExceeded(
            f"The arguments of {name} do not fit in one scheduled job: {what}. A job is "
            f"a document of {SCHEDULED_FUNCTIONS} with the arguments object at "
            "`args[0]`, so one job's arguments are bounded by the 1 MiB document limit "
            "and by its 16 levels of nesting (the arguments object is level 3; Convex "
            "stores them as bytes and allows more). Pass the ids of stored documents, "
            "or of a file in ctx.storage, instead.",
            limit=limit,
            path=path,
        )

    # -- canceling -------------------------------------------------------------

    def cancel(self, job_id: str) -> ActionCancel | None:
        """Cancel a job: a pending one never runs; a running action keeps running,
        but what it schedules from now on is created canceled.

        Canceling a job that already finished or was canceled does nothing (as
        Convex's backend does). Raises :class:`InvalidId` for an id that is not
        a ``_scheduled_functions`` id, :class:`SchedulerError` when a scheduled
        mutation cancels its own job. Returns ``None`` in a mutation; in an action,
        where the call commits at once, something to ``await`` (to ``None``), as a
        Convex action writes ``await ctx.scheduler.cancel(id)``.
        """
        if not isinstance(job_id, str):
            raise InvalidId(
                f"Invalid scheduled function ID. The ID must be an ID on the "
                f"'{SCHEDULED_FUNCTIONS}' table. (got {type(job_id).__name__} {job_id!r}; ids "
                "of jobs are what ctx.scheduler.run_after / run_at return)",
                value=job_id,
            )
        # The string held (an ActionJobId, as an action's run_after returns it, or a
        # (str, Enum) member, whose str() is its name).
        job_id = str.__str__(job_id)
        if job_id == self._own_job:
            raise SchedulerError(
                "A mutation cannot cancel itself: a scheduled mutation's job completes with "
                "its transaction. Return early instead."
            )
        txn = self._txn
        if txn is None:
            self._runtime.db.run(lambda t: _cancel(t, job_id), writable=True, source="cancel")
            return _ACTION_CANCEL
        _cancel(txn, job_id)
        return None


def _cancel(txn: Transaction, job_id: str) -> None:
    job = get_job(txn, job_id)
    if job is None or state_kind(job) not in ("pending", "inProgress"):
        return  # done, canceled, or damaged (not in any state: Engine.check() names it)
    patch_job(txn, job_id, {"state": {"kind": "canceled"}, "completedTime": now_ms()})
