"""Cron schedules: 5-field cron expressions and when a cron runs next (Convex's rules).

Every schedule but ``interval`` is a cron expression in UTC (Convex turns ``hourly``,
``daily``, ``weekly`` and ``monthly`` into one), evaluated at minute resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import SchedulerError

__all__ = ["DAYS_OF_WEEK", "CronExpression", "after_skips", "next_run", "next_ts", "parse_cron"]

#: Convex's names of the days of the week, Sunday first (Sunday is 0 in expressions).
DAYS_OF_WEEK = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: (field, lowest, highest, names from lowest up).
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAY_NAMES),
)
#: How far :func:`next_run` looks for a match (Feb 29 repeats within 8 years).
_HORIZON_DAYS = 8 * 366 + 1


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed 5-field cron expression: the sorted values of each field."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is ``*``
    any_weekday: bool  # day of week is ``*``

    def day_matches(self, when: datetime) -> bool:
        """Vixie cron's rule: with both day fields restricted, either one matching is
        enough; with one restricted, that one decides."""
        if when.month not in self.months:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def parse_cron(expression: str) -> CronExpression:
    """Parse ``"minute hour day-of-month month day-of-week"`` (UTC).

    Each field is ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``,
    or a comma-separated list of those; months and days of the week may be written as
    three-letter names (``jan``, ``mon``), Sunday is 0 (7 is refused, as Convex's
    parser does); ``?`` is ``*`` in the day fields. Quartz's ``L``, ``W`` and ``#`` are
    refused. Raises :class:`SchedulerError` naming the field and the rule.

    Example::

        >>> parse_cron("0 12 * * 1,5").weekdays == frozenset({1, 5})
        True
    """
    if not isinstance(expression, str):
        raise SchedulerError(
            f"A cron expression is a string like '15 7 * * *', got {type(expression).__name__}"
        )
    fields = expression.split()
    if len(fields) != 5:
        raise SchedulerError(
            f"Invalid cron expression {expression!r}: expected 5 fields (minute hour "
            f"day-of-month month day-of-week), found {len(fields)}."
        )
    values = [
        _cron_field(text, spec, expression, day_field=index in (2, 4))
        for index, (text, spec) in enumerate(zip(fields, _CRON_FIELDS, strict=True))
    ]
    return CronExpression(
        minutes=tuple(sorted(values[0])),
        hours=tuple(sorted(values[1])),
        days=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=frozenset(values[4]),
        any_day=fields[2][0] in "*?",
        any_weekday=fields[4][0] in "*?",
    )


def _cron_field(
    text: str, spec: tuple[str, int, int, tuple[str, ...]], expression: str, *, day_field: bool
) -> set[int]:
    field, low, high, names = spec

    def bad(rule: str) -> SchedulerError:
        return SchedulerError(
            f"Invalid cron expression {expression!r}: {field} field {text!r}: {rule}."
        )

    def number(part: str) -> int:
        lowered = part.lower()
        if names and lowered in names:
            return low + names.index(lowered)
        if not part.isdigit():
            if any(c in part.upper() for c in "LW#"):
                raise bad("L, W and # are not supported")
            raise bad(f"{part!r} is not a number" + (" or a name" if names else ""))
        value = int(part)
        if not low <= value <= high:
            raise bad(f"{value} is outside {low}-{high}")
        return value

    result: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad(f"step {step_text!r} must be a whole number from 1")
            step = int(step_text)
        if base == "*" or (base == "?" and day_field):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise bad(f"range {base!r} runs backwards")
        else:
            start = number(base)
            end = high if slash else start
        result.update(range(start, end + 1, step))
    return result


def next_run(expression: CronExpression, after_ms: float) -> float | None:
    """The first minute matching ``expression`` strictly after ``after_ms`` (ms since
    the epoch, UTC), in ms; None when none comes within 8 years (``"0 0 30 2 *"``).
    Cost: a step per day, hour or minute skipped (a few hundred at most, but a
    sparse day rule scans up to 2,900 days)."""
    start = datetime.fromtimestamp(math.floor(after_ms / 60000.0) * 60.0, UTC)
    when = start + timedelta(minutes=1)
    day = when.replace(hour=0, minute=0)
    for _ in range(_HORIZON_DAYS):
        if expression.day_matches(day):
            first_hour = when.hour if day.date() == when.date() else 0
            for hour in expression.hours:
                if hour < first_hour:
                    continue
                first_minute = (
                    when.minute if (day.date() == when.date() and hour == when.hour) else 0
                )
                for minute in expression.minutes:
                    if minute >= first_minute:
                        found = day.replace(hour=hour, minute=minute)
                        return found.timestamp() * 1000.0
        day += timedelta(days=1)
    return None


def _expression(schedule: dict[str, Any]) -> CronExpression:
    """The cron expression of a non-interval schedule (Convex turns each into one)."""
    kind = schedule["type"]
    minute = schedule.get("minuteUTC")
    hour = schedule.get("hourUTC")
    if kind == "hourly":
        return parse_cron(f"{minute} * * * *")
    if kind == "daily":
        return parse_cron(f"{minute} {hour} * * *")
    if kind == "weekly":
        return parse_cron(f"{minute} {hour} * * {DAYS_OF_WEEK.index(schedule['dayOfWeek'])}")
    if kind == "monthly":
        return parse_cron(f"{minute} {hour} {schedule['day']} * *")
    if kind == "cron":
        return parse_cron(schedule["cron"])
    raise SchedulerError(f"Unknown cron schedule type {kind!r} in {schedule!r}.")


def next_ts(schedule: dict[str, Any], prev_ts: float | None, now: float) -> float:
    """When a cron runs next (Convex's ``compute_next_ts``): an interval ``seconds``
    after its last run (at ``now`` for the first); any other schedule at its first
    match after the last run (after ``now`` for the first)."""
    if schedule["type"] == "interval":
        return now if prev_ts is None else prev_ts + schedule["seconds"] * 1000.0
    found = next_run(_expression(schedule), now if prev_ts is None else prev_ts)
    if found is None:
        raise SchedulerError(
            f"Could not compute next timestamp for cron schedule {schedule!r}: it matches no "
            "date within 8 years (a day that month never has?)."
        )
    return found


def after_skips(schedule: dict[str, Any], prev_ts: float, now: float) -> tuple[float, int]:
    """(next run time not before ``now``, runs skipped between) after a run at ``prev_ts``
    that ended at ``now``: the runs that came due meanwhile are not made up (Convex)."""
    following = next_ts(schedule, prev_ts, now)
    if following >= now:
        return following, 0
    if schedule["type"] == "interval":
        period = schedule["seconds"] * 1000.0
        late = math.ceil((now - following) / period)
        return following + late * period, late
    skipped = 0
    while following < now and skipped < 10_000:
        skipped += 1
        following = next_ts(schedule, following, now)
    if following < now:  # a long outage of a frequent cron: stop counting exactly
        found = next_run(_expression(schedule), now - 1.0)
        assert found is not None  # it matched within the horizon moments ago
        following = found
    return following, skipped
