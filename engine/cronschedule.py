"""Cron schedules: 5-field cron expressions and when a cron runs next (Convex's rules).

Every schedule but ``interval`` is a cron expression in UTC (Convex turns ``hourly``,
``daily``, ``weekly`` and ``monthly`` into one), evaluated at minute resolution.
:func:`_schedule_problem` says what keeps a stored schedule from giving the next run's
time (``Engine.check()`` and the executor skip such a cron).
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import SchedulerError

__all__ = [
    "DAYS_OF_WEEK",
    "CronExpression",
    "after_skips",
    "count_runs",
    "next_run",
    "next_ts",
    "parse_cron",
]

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
#: How far :func:`next_run` looks for a match: the Gregorian calendar repeats, weekdays
#: included, every 400 years, so a date not found within them never comes.
_HORIZON_MONTHS = 400 * 12 + 1
_DIGITS = re.compile(r"[0-9]+")
#: The last year :func:`next_run` looks at (``datetime``'s own limit).
_MAX_YEAR = 9998


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
        if _DIGITS.fullmatch(part) is None:
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
            if _DIGITS.fullmatch(step_text) is None or int(step_text) == 0:
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
    the epoch, UTC), in ms; None when no date ever matches (``"0 0 30 2 *"``).

    Looks as far as 400 years ahead, the Gregorian calendar's whole cycle (weekdays
    included), so a rare match (``"0 0 */29 2 1"``: a Monday that is February 1st) is
    found. Cost: a step per month skipped, per day of a matching month, and per hour and
    minute of the day found: microseconds for common schedules, a few milliseconds for
    dates years apart.
    """
    when = datetime.fromtimestamp(math.floor(after_ms / 60000.0) * 60.0 + 60.0, UTC)
    year, month = when.year, when.month
    first_day = when.day
    for _ in range(_HORIZON_MONTHS):
        if month in expression.months:
            for day_number in range(first_day, calendar.monthrange(year, month)[1] + 1):
                day = datetime(year, month, day_number, tzinfo=UTC)
                if not expression.day_matches(day):
                    continue
                same_day = day.date() == when.date()
                for hour in expression.hours:
                    if same_day and hour < when.hour:
                        continue
                    first_minute = when.minute if same_day and hour == when.hour else 0
                    for minute in expression.minutes:
                        if minute >= first_minute:
                            found = day.replace(hour=hour, minute=minute)
                            return found.timestamp() * 1000.0
        month += 1
        if month == 13:
            year, month = year + 1, 1
        first_day = 1
        if year > _MAX_YEAR:
            return None
    return None


def count_runs(expression: CronExpression, after_ms: float, before_ms: float) -> int:
    """How many minutes matching ``expression`` lie strictly between ``after_ms`` and
    ``before_ms``. Cost: a step per day between them, plus the minutes of the two days
    at the ends (a year of outage: 365 steps)."""
    start = datetime.fromtimestamp(math.floor(after_ms / 60000.0) * 60.0 + 60.0, UTC)
    end_ms = before_ms
    if start.timestamp() * 1000.0 >= end_ms:
        return 0
    per_day = len(expression.hours) * len(expression.minutes)
    count = 0
    day = start.replace(hour=0, minute=0)
    while day.timestamp() * 1000.0 < end_ms:
        next_day = day + timedelta(days=1)
        if expression.day_matches(day):
            whole = day >= start and next_day.timestamp() * 1000.0 <= end_ms
            if whole:
                count += per_day
            else:
                for hour in expression.hours:
                    for minute in expression.minutes:
                        at = day.replace(hour=hour, minute=minute)
                        if at >= start and at.timestamp() * 1000.0 < end_ms:
                            count += 1
        day = next_day
    return count


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
            "date ever (a day that month never has?)."
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
    expression = _expression(schedule)
    # Every match in (prev_ts, now) is skipped; the next run is the first not before now:
    # the first match after the minute before the first whole minute not before now (a
    # run ending 0.5 ms past a matching minute skips it, as it counts it skipped).
    skipped = count_runs(expression, prev_ts, now)
    found = next_run(expression, math.ceil(now / 60000.0) * 60000.0 - 1.0)
    if found is None:  # cannot happen: it matched moments ago, and matches recur
        raise SchedulerError(f"Could not compute next timestamp for cron schedule {schedule!r}.")
    return found, skipped


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


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
