"""Cron jobs: mutations and actions run on a recurring schedule, as Convex's crons.

Define them in the module ``crons`` of the functions package (Convex's
``convex/crons.ts``)::

    # myapp/functions/crons.py
    from engine import cron_jobs
    from . import presence, reports

    crons = cron_jobs()
    crons.interval("clear presence", presence.clear, minutes=5)
    crons.daily("daily report", reports.send, {"kind": "daily"}, hour_utc=7, minute_utc=15)
    crons.cron("weekday digest", "0 8 * * 1-5", reports.digest)

Each schedule method also takes Convex's own argument order, a schedule dict before
the function: ``crons.daily("daily report", {"hourUTC": 7, "minuteUTC": 15},
reports.send, {"kind": "daily"})``.

``Engine.open(..., functions=pkg)`` makes the stored crons match the package's (as a
Convex deploy does): new ones are added, changed ones updated, and ones no longer
defined deleted with their logs. A package without a ``crons`` module has no crons.

Stored data (system tables, readable with ``ctx.db.system.query(...)``; the shapes
follow Convex's, times in milliseconds)::

    _cron_jobs:     {"name": "clear presence",
                     "cronSpec": {"udfPath": "presence:clear", "udfArgs": [{}],
                                  "cronSchedule": {"type": "interval", "seconds": 300}},
                     "state": {"kind": "pending"},        # | {"kind": "inProgress"}
                     "prevTs": 1767225300000.0,           # the last run's time, once run
                     "nextTs": 1767225600000.0}           # the next run's time
    _cron_job_logs: {"name", "ts", "udfPath", "udfArgs", "executionTime" (seconds),
                     "status": {"type": "success", "result": ...}
                             | {"type": "err", "error": "Uncaught ..."}
                             | {"type": "canceled", "numCanceled": n}}

The executor (:mod:`engine.executor`) runs a cron when its ``nextTs`` comes, with
the guarantees of scheduled functions: a mutation runs exactly once per run (its
log and the cron's next time commit with its writes), an action at most once (the
cron is marked ``inProgress`` first; an executor that dies leaves it to be failed
with Convex's transient error by the next executor that starts alone). One run of a
cron at a time: runs that came due meanwhile are skipped and logged
``canceled`` with their count, as Convex does. The five newest logs of each cron
are kept (Convex's ``MAX_LOGS_PER_CRON``).
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cronschedule import DAYS_OF_WEEK, after_skips, next_run, next_ts, parse_cron
from .errors import (
    ArgumentValidationError,
    EngineError,
    FunctionNotFound,
    LimitExceeded,
    SchedulerError,
)
from .query import Query
from .scheduler import (
    _LONGEST_ID,
    BY_STATE,
    SCHEDULED_FUNCTIONS,
    TRANSIENT_ACTION_ERROR,
    all_documents,
    cut_error,
    engine_writes,
    now_ms,
    resolve_target,
    state_kind,
    system_table,
)
from .values import MAX_DOCUMENT_SIZE, nesting, value_size

if TYPE_CHECKING:
    from .database import Database
    from .executor import Executor
    from .functions import FunctionDef, Runtime
    from .transaction import Transaction

__all__ = ["CRON_JOBS", "CRON_JOB_LOGS", "CronRun", "Crons", "cron_jobs", "sync_crons"]

#: The system table of the crons, and its indexes (Convex's).
CRON_JOBS = "_cron_jobs"
BY_NEXT_TS = "by_next_ts"
BY_NAME = "by_name"
_CRON_INDEXES: dict[str, tuple[str, ...]] = {BY_NEXT_TS: ("nextTs",), BY_NAME: ("name",)}
#: The system table of the runs' logs, and its index.
CRON_JOB_LOGS = "_cron_job_logs"
BY_NAME_AND_TS = "by_name_and_ts"
_LOG_INDEXES: dict[str, tuple[str, ...]] = {BY_NAME_AND_TS: ("name", "ts")}
#: Logs kept per cron (Convex's ``MAX_LOGS_PER_CRON``).
MAX_LOGS_PER_CRON = 5
#: A run's result is logged whole up to this size (Convex's size measure), else as the
#: first characters of its text (Convex truncates results over 1,000 characters).
_MAX_LOGGED_RESULT = 1000
_MAX_LOGGED_NESTING = 14

#: Where a damaged cron met at Engine.open is reported (the executor's logger).
_log_damage = logging.getLogger("engine.scheduler")

_IDENTIFIER = re.compile(r"[a-zA-Z0-9_ '-]+")


def cron_jobs() -> Crons:
    """A new, empty set of cron jobs (Convex's ``cronJobs()``); see :class:`Crons`."""
    return Crons()


@dataclass(frozen=True, slots=True)
class CronDef:
    """One cron as defined: its schedule (Convex's JSON form) and target."""

    name: str
    schedule: dict[str, Any]
    function: Any  # a FunctionDef or a function name
    args: dict[str, Any] | None


class Crons:
    """The cron jobs of a functions package (Convex's ``Crons``).

    Each method adds one named cron; names are unique within the set. Targets are
    mutations or actions (public or internal), as decorated functions or names;
    ``args`` is checked against the target's validator when the engine opens.
    Schedules are in UTC. Cost: nothing until ``Engine.open`` stores them.

    Example::

        crons = cron_jobs()
        crons.interval("clear presence", presence.clear, seconds=30)
        crons.weekly("digest", mail.digest, day_of_week="monday", hour_utc=8, minute_utc=0)
    """

    def __init__(self) -> None:
        self.crons: dict[str, CronDef] = {}

    def __repr__(self) -> str:
        return f"<Crons {sorted(self.crons)}>"

    def __len__(self) -> int:
        return len(self.crons)

    def __iter__(self) -> Iterator[CronDef]:
        return iter(self.crons.values())

    # -- schedules -----------------------------------------------------------------

    def interval(
        self,
        name: str,
        *target: Any,
        seconds: int | None = None,
        minutes: int | None = None,
        hours: int | None = None,
    ) -> None:
        """Run ``function(args)`` every ``seconds``, ``minutes`` or ``hours`` (exactly
        one, an integer > 0), the first time when the engine first opens with it.

        ``crons.interval(name, function, args=None, *, seconds=|minutes=|hours=)``, or
        Convex's order ``crons.interval(name, {"minutes": 5}, function, args=None)``.
        """
        given, function, args = _split(
            "interval", target, {"seconds": seconds, "minutes": minutes, "hours": hours}
        )
        units = {k: v for k, v in given.items() if v is not None}
        if len(units) != 1 or set(units) - {"seconds", "minutes", "hours"}:
            raise SchedulerError(
                "Must specify one of seconds, minutes, or hours: e.g. "
                f"crons.interval({name!r}, fn, minutes=5). (got {units or given!r})"
            )
        ((unit, count),) = units.items()
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise SchedulerError(
                f"Interval must be an integer greater than 0 (cron {name!r}: {unit}={count!r})."
            )
        factor = {"seconds": 1, "minutes": 60, "hours": 3600}[unit]
        self._add(name, {"type": "interval", "seconds": count * factor}, function, args)

    def hourly(self, name: str, *target: Any, minute_utc: int | None = None) -> None:
        """Run ``function(args)`` every hour at ``minute_utc`` (0-59).

        Left out, the minute is derived from the name (Convex picks one at random, to
        spread crons over the hour). Also Convex's order: ``(name, {"minuteUTC": m},
        function, args=None)``.
        """
        given, function, args = _split("hourly", target, {"minuteUTC": minute_utc})
        minute = _minute(name, given)
        self._add(name, {"type": "hourly", "minuteUTC": minute}, function, args)

    def daily(
        self,
        name: str,
        *target: Any,
        hour_utc: int | None = None,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``function(args)`` every day at ``hour_utc`` (0-23) : ``minute_utc``
        (0-59; left out, derived from the name). Also Convex's order: ``(name,
        {"hourUTC": h, "minuteUTC": m}, function, args=None)``."""
        given, function, args = _split(
            "daily", target, {"hourUTC": hour_utc, "minuteUTC": minute_utc}
        )
        schedule = {
            "type": "daily",
            "hourUTC": _hour(name, given),
            "minuteUTC": _minute(name, given),
        }
        self._add(name, schedule, function, args)

    def weekly(
        self,
        name: str,
        *target: Any,
        day_of_week: str | None = None,
        hour_utc: int | None = None,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``function(args)`` every week on ``day_of_week`` (``"monday"``, ...) at
        ``hour_utc`` : ``minute_utc``. Also Convex's order: ``(name, {"dayOfWeek": d,
        "hourUTC": h, "minuteUTC": m}, function, args=None)``."""
        given, function, args = _split(
            "weekly",
            target,
            {"dayOfWeek": day_of_week, "hourUTC": hour_utc, "minuteUTC": minute_utc},
        )
        day = given.get("dayOfWeek")
        if not isinstance(day, str) or day not in DAYS_OF_WEEK:
            raise SchedulerError(
                f'Day of week must be a string like "monday". (cron {name!r}: got {day!r})'
            )
        schedule = {
            "type": "weekly",
            "dayOfWeek": day,
            "hourUTC": _hour(name, given),
            "minuteUTC": _minute(name, given),
        }
        self._add(name, schedule, function, args)

    def monthly(
        self,
        name: str,
        *target: Any,
        day: int | None = None,
        hour_utc: int | None = None,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``function(args)`` every month on ``day`` (1-31; months without that day
        are skipped) at ``hour_utc`` : ``minute_utc``. Also Convex's order: ``(name,
        {"day": d, "hourUTC": h, "minuteUTC": m}, function, args=None)``."""
        given, function, args = _split(
            "monthly", target, {"day": day, "hourUTC": hour_utc, "minuteUTC": minute_utc}
        )
        number = given.get("day")
        if not _int_in(number, 1, 31):
            raise SchedulerError(
                f"Day of month must be an integer from 1 to 31. (cron {name!r}: got {number!r})"
            )
        schedule = {
            "type": "monthly",
            "day": number,
            "hourUTC": _hour(name, given),
            "minuteUTC": _minute(name, given),
        }
        self._add(name, schedule, function, args)

    def cron(self, name: str, expression: str, function: Any, args: Any = None) -> None:
        """Run ``function(args)`` on a 5-field cron expression in UTC,
        ``"minute hour day-of-month month day-of-week"`` (see :func:`parse_cron`),
        e.g. ``"15 7 * * *"`` every day at 7:15. Convex's argument order."""
        if next_run(parse_cron(expression), now_ms()) is None:
            raise SchedulerError(
                f"Invalid cron expression {expression!r}: it matches no date (a day that "
                "month never has?)."
            )
        _check_target(name, function, args)
        self._add(name, {"type": "cron", "cron": expression}, function, args)

    def _add(self, name: str, schedule: dict[str, Any], function: Any, args: Any) -> None:
        if not isinstance(name, str) or _IDENTIFIER.fullmatch(name) is None:
            raise SchedulerError(
                f"Invalid cron identifier {name!r}: use ASCII letters, numbers, spaces, "
                "underscores, dashes and apostrophes"
            )
        if name in self.crons:
            raise SchedulerError(f"Cron identifier registered twice: {name}")
        _check_target(name, function, args)
        self.crons[name] = CronDef(name, schedule, function, args)


def _split(
    kind: str, target: tuple[Any, ...], keywords: dict[str, Any]
) -> tuple[dict[str, Any], Any, Any]:
    """(schedule fields, function, args) of a schedule method's arguments, in either
    form: ``(function, args=None)`` with keywords, or Convex's ``(schedule, function,
    args=None)``."""
    if target and isinstance(target[0], dict):
        if any(v is not None for v in keywords.values()):
            raise SchedulerError(
                f"crons.{kind}: give the schedule either as a dict before the function "
                "(Convex's form) or as keywords, not both."
            )
        schedule, *rest = target
        given = dict(schedule)
    else:
        rest = list(target)
        given = {k: v for k, v in keywords.items() if v is not None}
    if not 1 <= len(rest) <= 2:
        raise SchedulerError(
            f"crons.{kind} takes the cron's name, then the function and optionally its "
            f"arguments (a dict); got {len(rest)} positional argument(s) after the name."
        )
    return given, rest[0], rest[1] if len(rest) == 2 else None


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _hour(name: str, given: dict[str, Any]) -> int:
    hour = given.get("hourUTC")
    if not _int_in(hour, 0, 23):
        raise SchedulerError(
            f"Hour of day must be an integer from 0 to 23. (cron {name!r}: got {hour!r})"
        )
    assert isinstance(hour, int)
    return hour


def _minute(name: str, given: dict[str, Any]) -> int:
    minute = given.get("minuteUTC")
    if minute is None:  # stable across processes and opens, unlike Convex's random pick
        return zlib.crc32(name.encode()) % 60
    if not _int_in(minute, 0, 59):
        raise SchedulerError(
            f"Minute of hour must be an integer from 0 to 59. (cron {name!r}: got {minute!r})"
        )
    assert isinstance(minute, int)
    return minute


def _check_target(name: str, function: Any, args: Any) -> None:
    from .functions import FunctionDef

    if not isinstance(function, FunctionDef | str):
        raise SchedulerError(
            f"Cron {name!r}: the target must be a mutation or action (a decorated function "
            f"or its name), got {type(function).__name__}: {function!r}."
        )
    if isinstance(function, FunctionDef) and function.kind not in ("mutation", "action"):
        raise SchedulerError(
            f"Cron {name!r}: {function!r} is a {function.kind}; a cron runs a mutation or an "
            "action (public or internal)."
        )
    if args is not None and not isinstance(args, dict):
        raise SchedulerError(
            f"Cron {name!r}: arguments are a dict, got {type(args).__name__}: {args!r}."
        )


# -- stored crons --------------------------------------------------------------------------


def defined_crons(package_crons: Crons | None, runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each cron of ``package_crons`` as its stored ``cronSpec``, by name; the targets
    are resolved and the arguments checked. Raises :class:`FunctionNotFound`,
    :class:`SchedulerError` (a target that is not a mutation or action),
    :class:`ArgumentValidationError`, :class:`LimitExceeded` (arguments that leave the
    cron or its logs no room in the 1 MiB document limit)."""
    specs: dict[str, dict[str, Any]] = {}
    if package_crons is None:
        return specs
    for cron in package_crons:
        prefix = f"Cron {cron.name!r}: "
        try:
            name, function = resolve_target(runtime, cron.function, prefix)
        except FunctionNotFound as error:
            if str(error).startswith(prefix):
                raise
            raise FunctionNotFound(f"{prefix}{error}", name=error.name) from None
        try:
            args = runtime.check_args(name, function, cron.args)
        except ArgumentValidationError as error:
            raise ArgumentValidationError(f"Cron {cron.name!r}: {error}", path=error.path) from None
        spec = {"udfPath": name, "udfArgs": [args], "cronSchedule": cron.schedule}
        _check_room(cron.name, spec)
        specs[cron.name] = spec
    return specs


#: The largest status a run's log takes: a result is logged whole up to
#: :data:`_MAX_LOGGED_RESULT` bytes, else as that many characters of text (up to 4 bytes
#: each); an error is cut to the room left (see :func:`_log`).
_ROOMIEST_STATUS = {"type": "success", "truncated": "\U0010ffff" * _MAX_LOGGED_RESULT}


def _check_room(name: str, spec: dict[str, Any]) -> None:
    """Refuse a cron whose stored document or run's log would not fit the 1 MiB document
    limit once it runs: the cron takes ``prevTs`` and ``inProgress``, and each log holds
    the arguments beside the run's status. Stored, such a cron could never record a run
    (the executor retried it at every pass), so it is refused when the engine opens, as
    a job is when scheduled. Cost: two passes over the arguments' size."""
    cron = {
        "name": name,
        "cronSpec": spec,
        "state": {"kind": "inProgress"},
        "prevTs": 0.0,
        "nextTs": 0.0,
    }
    log = _log_record(name, spec, 0.0, _ROOMIEST_STATUS, 0.0)
    for table, document in ((CRON_JOBS, cron), (CRON_JOB_LOGS, log)):
        size = _stored_size(document)
        if size > MAX_DOCUMENT_SIZE:
            raise LimitExceeded(
                f"Cron {name!r}: its arguments do not fit: a document of {table} would "
                f"measure {size} bytes once the cron runs (with room for its state and a "
                f"logged result), over the limit of {MAX_DOCUMENT_SIZE}. The cron's "
                f"arguments are stored in {CRON_JOBS} and in each run's log in "
                f"{CRON_JOB_LOGS}, so they are bounded by the 1 MiB document limit. Pass "
                "the ids of stored documents, or of a file in ctx.storage, instead.",
                limit="DocumentTooLarge",
                path="$",
            )


def sync_crons(runtime: Runtime, specs: dict[str, dict[str, Any]]) -> None:
    """Make ``_cron_jobs`` hold exactly ``specs`` (Convex's deploy of ``crons.ts``): add the
    new, update the changed (a changed schedule moves the next run), delete the rest
    and their logs. One transaction; writes nothing when they already match."""

    def body(txn: Transaction) -> None:
        stored: dict[str, dict[str, Any]] = {}
        damaged: list[tuple[dict[str, Any], list[str]]] = []
        if txn.table(CRON_JOBS) is not None:
            for doc in Query(txn, CRON_JOBS).collect():
                problems = cron_problems(doc)
                if not problems and doc["name"] in stored:
                    problems = [f"name {doc['name']!r} is not unique"]
                if problems:
                    damaged.append((doc, problems))
                else:
                    stored[doc["name"]] = doc
        if not specs and not stored and not damaged:
            return
        now = now_ms()
        with engine_writes(txn):
            system_table(txn, CRON_JOBS, _CRON_INDEXES)
            for doc, problems in damaged:
                # Not a cron the executor could run: a defined one is stored afresh below
                # (with its logs), any other deleted with its logs, as undefined crons are.
                txn.delete(doc["_id"])
                found = doc.get("name")
                known = found if isinstance(found, str) else None
                defined = known is not None and known in specs
                if known is not None and not defined and known not in stored:
                    _trim_logs(txn, known, 0)
                _log_damage.warning(
                    "%s %s%s is damaged (%s): deleted%s.",
                    CRON_JOBS,
                    doc["_id"],
                    "" if known is None else f" ({known!r})",
                    "; ".join(problems),
                    " and stored afresh from its definition"
                    if defined and known not in stored
                    else "",
                )
            for name, spec in specs.items():
                cron = stored.pop(name, None)
                if cron is None:
                    schedule = spec["cronSchedule"]
                    document = {
                        "name": name,
                        "cronSpec": spec,
                        "state": {"kind": "pending"},
                        "nextTs": next_ts(schedule, None, now),
                    }
                    txn.insert(CRON_JOBS, document, system=True)
                elif cron["cronSpec"] != spec:
                    changed = dict(cron, cronSpec=spec)
                    if cron["cronSpec"]["cronSchedule"] != spec["cronSchedule"]:
                        changed["nextTs"] = next_ts(spec["cronSchedule"], cron.get("prevTs"), now)
                    txn.replace(cron["_id"], _user_fields(changed))
            for cron in stored.values():
                txn.delete(cron["_id"])
                _trim_logs(txn, cron["name"], 0)

    runtime.db.run(body, writable=True, source="crons")


def engine_indexes(table_name: str) -> tuple[str, ...]:
    """The indexes the engine makes its system table ``table_name`` with (the scheduler's
    and the crons' tables, made by their first write), or () for another table: a query
    may name them before the table exists, and reads an empty table (Convex's system
    tables always exist)."""
    if table_name == SCHEDULED_FUNCTIONS:
        return (BY_STATE,)
    if table_name == CRON_JOBS:
        return tuple(_CRON_INDEXES)
    if table_name == CRON_JOB_LOGS:
        return tuple(_LOG_INDEXES)
    return ()


def _user_fields(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if not k.startswith("_")}


def _trim_logs(txn: Transaction, name: str, keep: int) -> None:
    """Delete all but the ``keep`` newest logs of cron ``name`` (call in engine_writes)."""
    if txn.table(CRON_JOB_LOGS) is None:
        return
    logs = (
        Query(txn, CRON_JOB_LOGS)
        .with_index(BY_NAME_AND_TS, lambda q: q.eq("name", name))
        .order("desc")
    )
    for index, log in enumerate(logs):
        if index >= keep:
            txn.delete(log["_id"])


def _log_record(
    name: str, spec: dict[str, Any], ts: float, status: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The fields of a run's log in ``_cron_job_logs`` (the system fields come at insert)."""
    return {
        "name": name,
        "ts": ts,
        "udfPath": spec["udfPath"],
        "udfArgs": spec["udfArgs"],
        "status": status,
        "executionTime": seconds,
    }


def _stored_size(fields: dict[str, Any]) -> int:
    """The size of a system document with ``fields`` once stored, by Convex's rule (with
    the longest ``_id`` and a ``_creationTime``)."""
    return value_size({"_id": _LONGEST_ID, "_creationTime": 0.0, **fields})


def _log(
    txn: Transaction, cron: dict[str, Any], ts: float, status: dict[str, Any], seconds: float
) -> None:
    """Insert a run's log and keep the newest :data:`MAX_LOGS_PER_CRON` (in engine_writes)."""
    system_table(txn, CRON_JOB_LOGS, _LOG_INDEXES)
    log = _log_record(cron["name"], cron["cronSpec"], ts, status, seconds)
    if status.get("type") == "err":
        # The error is cut to the room the 1 MiB limit leaves beside the cron's arguments,
        # which the log holds too (as a job's error, see scheduler.fitting).
        room = MAX_DOCUMENT_SIZE - _stored_size(dict(log, status={**status, "error": ""}))
        log["status"] = {**status, "error": cut_error(status["error"], room)}
    txn.insert(CRON_JOB_LOGS, log, system=True)
    _trim_logs(txn, cron["name"], MAX_LOGS_PER_CRON)


def success_status(result: Any) -> dict[str, Any]:
    """A successful run's logged status: the result whole when small, else its text cut."""
    # The log nests the result two levels down (log, status): a result nested deeper than
    # a document may be (16 levels) is kept as text too, so the log can always be stored.
    if result is None or (
        value_size(result) <= _MAX_LOGGED_RESULT and nesting(result) <= _MAX_LOGGED_NESTING
    ):
        return {"type": "success", "result": result}
    from .formatting import format_value

    return {"type": "success", "truncated": format_value(result, _MAX_LOGGED_RESULT)}


def complete_run(
    txn: Transaction, cron: dict[str, Any], status: dict[str, Any], seconds: float, now: float
) -> None:
    """Log a finished run of ``cron`` (whose ``nextTs`` is the run's time) and set the
    next one, skipping (and logging) those that came due meanwhile. In ``txn``."""
    prev = cron["nextTs"]
    schedule = cron["cronSpec"]["cronSchedule"]
    following, skipped = after_skips(schedule, prev, now)
    with engine_writes(txn):
        _log(txn, cron, prev, status, seconds)
        if skipped:
            _log(
                txn,
                cron,
                next_ts(schedule, prev, now),
                {"type": "canceled", "numCanceled": skipped},
                0.0,
            )
        changed = dict(cron, state={"kind": "pending"}, prevTs=prev, nextTs=following)
        txn.replace(cron["_id"], _user_fields(changed))


def mark_in_progress(txn: Transaction, cron: dict[str, Any]) -> None:
    """Claim an action cron's run (in ``txn``)."""
    with engine_writes(txn):
        txn.patch(cron["_id"], {"state": {"kind": "inProgress"}})


def all_crons(txn: Transaction) -> list[dict[str, Any]]:
    """Every cron, soonest next run first."""
    if txn.table(CRON_JOBS) is None:
        return []
    return Query(txn, CRON_JOBS).with_index(BY_NEXT_TS).collect()


def package_crons(modules: list[tuple[str, Any]]) -> Crons | None:
    """The :class:`Crons` of a package's module ``crons`` (Convex's ``convex/crons.ts``),
    or None without that module. Raises :class:`EngineError` for a module ``crons``
    holding none or several."""
    for module_path, module in modules:
        if module_path != "crons":
            continue
        found = [value for value in vars(module).values() if isinstance(value, Crons)]
        if len(found) != 1:
            raise EngineError(
                f"The module {module.__name__!r} defines the package's crons (as Convex's "
                "convex/crons.ts): it must hold exactly one `crons = cron_jobs()`, found "
                f"{len(found)}."
            )
        return found[0]
    return None


def target_function(runtime: Runtime, cron: dict[str, Any]) -> FunctionDef | None:
    """The function a stored cron runs, if this engine has it."""
    return runtime.registry.by_name.get(cron["cronSpec"]["udfPath"])


def fail_orphaned_crons(txn: Transaction) -> int:
    """Complete every cron left ``inProgress`` (its executor died while its action ran)
    with Convex's transient error, and set its next run. Run by an executor that starts
    alone on the folder."""
    stuck = [
        cron
        for cron in all_crons(txn)
        if state_kind(cron) == "inProgress" and not cron_problems(cron)  # damaged: left
    ]
    now = now_ms()
    for cron in stuck:
        complete_run(txn, cron, {"type": "err", "error": TRANSIENT_ACTION_ERROR}, 0.0, now)
    return len(stuck)


class CronRun:
    """One run of a cron, for the executor (its ``_Run`` protocol): due when its
    ``nextTs`` has come (``advance_ms`` later than now, for ``finish_*``)."""

    __slots__ = ("_advance_ms", "_cron", "_executor", "key", "label", "name", "own_job", "source")

    own_job: str | None

    def __init__(
        self, executor: Executor, cron: dict[str, Any], kind: str, advance_ms: float
    ) -> None:
        self._executor = executor
        self._cron = cron
        self._advance_ms = advance_ms
        self.key = cron["_id"]
        self.name = cron["cronSpec"]["udfPath"]
        self.label = f"cron {cron['name']!r}"
        self.source = f"Cron {kind} {self.name}"
        self.own_job = None

    def _now(self) -> float:
        return now_ms() + self._advance_ms

    def start(self, txn: Transaction, *, claim: bool) -> tuple[Any, float] | None:
        cron = txn.get(self.key)
        if (
            cron is None
            or cron_problems(cron)  # damaged since the pass read it: skipped
            or cron["state"]["kind"] != "pending"
            or cron["nextTs"] > self._now()
            or cron["cronSpec"]["udfPath"] != self.name  # redefined meanwhile
        ):
            return None
        self._cron = cron
        if claim:
            mark_in_progress(txn, cron)
        return cron["cronSpec"]["udfArgs"], cron["nextTs"]

    def succeed(self, txn: Transaction, result: Any, seconds: float) -> None:
        complete_run(txn, self._cron, success_status(result), seconds, self._now())

    def record(self, state: dict[str, Any], result: Any, seconds: float, *, running: bool) -> bool:
        if state["kind"] == "success":
            status = success_status(result)
        else:
            status = {"type": "err", "error": state["error"]}
        expected = self._cron["nextTs"]

        def body(txn: Transaction) -> bool:
            cron = txn.get(self.key)
            if cron is None or cron_problems(cron):
                return False  # deleted meanwhile (no longer defined), or damaged: skipped
            kind = cron["state"]["kind"]
            if running and kind != "inProgress":
                return False
            if not running and (kind != "pending" or cron["nextTs"] != expected):
                return False  # another executor ran it meanwhile
            complete_run(txn, cron, status, seconds, self._now())
            return True

        return self._executor.write_outcome(body, self.label)


#: The states a stored cron may be in.
_KINDS = ("pending", "inProgress")
_CRON_FIELDS = frozenset({"_id", "_creationTime", "name", "cronSpec", "state", "prevTs", "nextTs"})
_SCHEDULE_TYPES = frozenset({"interval", "hourly", "daily", "weekly", "monthly", "cron"})


def _spec_problems(spec: object) -> list[str]:
    """What keeps a stored ``cronSpec`` from Convex's shape (``{udfPath: str, udfArgs:
    [object], cronSchedule: {type, ...}}``), one line per field; empty if it has it."""
    if not isinstance(spec, dict):
        return [f"cronSpec {spec!r:.80} does not have Convex's shape (an object)"]
    found: list[str] = []
    if not isinstance(spec.get("udfPath"), str):
        found.append(f"cronSpec.udfPath {spec.get('udfPath')!r:.80} is not a string")
    args = spec.get("udfArgs")
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict)):
        found.append(f"cronSpec.udfArgs {args!r:.80} is not [argsObject]")
    schedule = spec.get("cronSchedule")
    kind = schedule.get("type") if isinstance(schedule, dict) else None
    if not isinstance(schedule, dict):
        found.append(f"cronSpec.cronSchedule {schedule!r:.80} is not an object")
    elif not isinstance(kind, str) or kind not in _SCHEDULE_TYPES:
        found.append(
            f"cronSpec.cronSchedule type {kind!r:.80} is not one of "
            f"{', '.join(sorted(_SCHEDULE_TYPES))}"
        )
    elif (problem := _schedule_problem(schedule)) is not None:
        found.append(f"cronSpec.cronSchedule: {problem}")
    return found


def _schedule_problem(schedule: dict[str, Any]) -> str | None:
    """What keeps a stored ``cronSchedule`` (its ``type`` known) from giving the next run's
    time, or None: a field of the wrong type or out of range, an expression that does not
    parse. Cost: a few type checks (a parse of a ``cron`` expression)."""
    kind = schedule["type"]
    if kind == "interval":
        seconds = schedule.get("seconds")
        if (
            isinstance(seconds, int | float)
            and not isinstance(seconds, bool)
            and 0 < seconds < math.inf
        ):
            return None
        return f"interval seconds {seconds!r:.80} is not a number > 0"
    if kind == "cron":
        try:
            parse_cron(schedule.get("cron"))  # type: ignore[arg-type]  # checked by the parse
        except SchedulerError as error:
            return f"cron expression: {error}"
        return None
    ranges = {"minuteUTC": (0, 59), "hourUTC": (0, 23), "day": (1, 31)}
    wanted = {
        "hourly": ("minuteUTC",),
        "daily": ("hourUTC", "minuteUTC"),
        "weekly": ("hourUTC", "minuteUTC"),
        "monthly": ("day", "hourUTC", "minuteUTC"),
    }[kind]
    for field in wanted:
        if not _int_in(schedule.get(field), *ranges[field]):
            low, high = ranges[field]
            return f"{field} {schedule.get(field)!r:.80} is not an integer from {low} to {high}"
    if kind == "weekly" and schedule.get("dayOfWeek") not in DAYS_OF_WEEK:
        return f"dayOfWeek {schedule.get('dayOfWeek')!r:.80} is not a day like 'monday'"
    return None


def _sound_state(cron: dict[str, Any]) -> bool:
    state = cron.get("state")
    return isinstance(state, dict) and set(state) == {"kind"} and state_kind(cron) in _KINDS


def cron_problems(cron: dict[str, Any]) -> list[str]:
    """What keeps a stored cron from being run, one line per field: its state is not
    ``{"kind": "pending" | "inProgress"}``, its name not a string, its ``cronSpec`` not
    Convex's shape (with a schedule the next run's time can be computed from), ``nextTs``
    (``prevTs`` if present) not a float. Empty for a sound cron. The executor and the
    crons' sync at ``Engine.open`` skip a cron with problems; ``Engine.check()`` names
    them. Cost: a few type checks."""
    found: list[str] = []
    if not _sound_state(cron):
        found.append(f"state {cron.get('state')!r:.80} is neither pending nor inProgress")
    name = cron.get("name")
    if not isinstance(name, str):
        found.append(f"name {name!r:.80} is not a string")
    found.extend(_spec_problems(cron.get("cronSpec")))
    if not isinstance(cron.get("nextTs"), float):
        found.append(f"nextTs is not a float: {cron.get('nextTs', '(missing)')!r:.80}")
    if "prevTs" in cron and not isinstance(cron["prevTs"], float):
        found.append(f"prevTs is not a float: {cron['prevTs']!r:.80}")
    return found


def check_crons(db: Database, rtxn: Any) -> tuple[dict[str, int], list[str]]:
    """Check every stored cron's shape in the LMDB txn ``rtxn`` (the snapshot the rest of
    ``Engine.check()`` reads); returns (crons by state, problems). Cost: one pass over
    ``_cron_jobs``."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    names: set[str] = set()
    for cron in all_documents(db, rtxn, CRON_JOBS):
        name = cron.get("name")
        # Named by id and, when it has one, by name: the name is what the app declared.
        where = f"{CRON_JOBS} {cron['_id']}" + (f" ({name!r})" if isinstance(name, str) else "")
        found = cron_problems(cron)
        if _sound_state(cron):
            kind = cron["state"]["kind"]
            counts[kind] = counts.get(kind, 0) + 1
        if set(cron) - _CRON_FIELDS:
            found.append(f"unexpected fields {sorted(set(cron) - _CRON_FIELDS)}")
        if isinstance(name, str):
            if name in names:
                found.append(f"name {name!r} is not unique")
            names.add(name)
        problems.extend(f"{where}: {p}" for p in found)
    return counts, problems
