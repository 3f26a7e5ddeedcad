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

The executor (:mod:`engine.executor`) runs a cron when its ``nextTs`` comes, with
the guarantees of scheduled functions: a mutation runs exactly once per run (its
log and the cron's next time commit with its writes), an action at most once (the
cron is marked ``inProgress`` first; an executor that dies leaves it to be failed
with Convex's transient error by the next executor that starts alone). One run of a
cron at a time: runs that came due meanwhile are skipped and logged
``canceled`` with their count, as Convex does. The five newest logs of each cron
are kept (Convex's ``MAX_LOGS_PER_CRON``).

The stored crons' tables, their documents' shape and its checker are in
:mod:`engine.crontables`, the definitions' sync with them at ``Engine.open`` in
:mod:`engine.cronsync`, a run and its log in :mod:`engine.cronruns`, and the schedules
(cron expressions, the next run's time) in :mod:`engine.cronschedule`; this module holds
the definitions (:class:`Crons`) and re-exports the names it used to define.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .cronruns import MAX_LOGS_PER_CRON as MAX_LOGS_PER_CRON
from .cronruns import CronRun
from .cronruns import complete_run as complete_run
from .cronruns import fail_orphaned_crons as fail_orphaned_crons
from .cronruns import mark_in_progress as mark_in_progress
from .cronruns import success_status as success_status
from .cronruns import target_function as target_function
from .cronschedule import DAYS_OF_WEEK, _int_in, next_run, parse_cron
from .cronsync import defined_crons as defined_crons
from .cronsync import sync_crons
from .crontables import BY_NAME as BY_NAME
from .crontables import BY_NAME_AND_TS as BY_NAME_AND_TS
from .crontables import BY_NEXT_TS as BY_NEXT_TS
from .crontables import CRON_JOB_LOGS, CRON_JOBS
from .crontables import all_crons as all_crons
from .crontables import check_crons as check_crons
from .crontables import cron_problems as cron_problems
from .crontables import engine_indexes as engine_indexes
from .errors import EngineError, SchedulerError
from .scheduler import now_ms

__all__ = ["CRON_JOBS", "CRON_JOB_LOGS", "CronRun", "Crons", "cron_jobs", "sync_crons"]

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
