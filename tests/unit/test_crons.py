"""engine.crons and the modules it re-exports (cronschedule, crontables, cronsync, cronruns):
cron definitions, schedules, storage, runs."""

from __future__ import annotations

import logging
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    ArgumentValidationError,
    Crons,
    Engine,
    EngineError,
    FunctionNotFound,
    LimitExceeded,
    SchedulerError,
    cron_jobs,
)
from engine.cronschedule import next_run, next_ts, parse_cron
from engine.scheduler import engine_writes
from tests import app
from tests.app import cronjobs
from tests.waiting import wait_until

CRONS = "_cron_jobs"
LOGS = "_cron_job_logs"


def at(text: str) -> float:
    """ms since the epoch of an ISO time in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000.0


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).strftime("%Y-%m-%d %H:%M")


def stored(engine: Engine, table: str = CRONS) -> list[dict[str, Any]]:
    return engine.run(lambda ctx: ctx.db.system.query(table).collect())  # type: ignore[no-any-return]


def by_name(engine: Engine) -> dict[str, dict[str, Any]]:
    return {cron["name"]: cron for cron in stored(engine)}


def logs(engine: Engine, name: str) -> list[dict[str, Any]]:
    return [log for log in stored(engine, LOGS) if log["name"] == name]


def open_with(db_path: Path, crons: Crons, **options: Any) -> Engine:
    options.setdefault("scheduler", False)
    return Engine.open(db_path, functions=app, crons=crons, durability="none", **options)


# -- schedules ---------------------------------------------------------------------------


def test_next_ts_follows_convexs_own_test_vectors() -> None:
    # The cases of Convex's compute_next_ts tests (crates/model/src/cron_jobs/next_ts.rs).
    now = at("2023-03-01 08:35")
    interval = {"type": "interval", "seconds": 60}
    assert next_ts(interval, None, now) == now
    assert next_ts(interval, now, now) == at("2023-03-01 08:36")
    hourly = {"type": "hourly", "minuteUTC": 5}
    assert next_ts(hourly, None, now) == at("2023-03-01 09:05")
    assert next_ts(hourly, at("2023-03-01 09:05"), now) == at("2023-03-01 10:05")
    now = at("2023-02-28 08:35")
    daily = {"type": "daily", "hourUTC": 8, "minuteUTC": 30}
    assert next_ts(daily, None, now) == at("2023-03-01 08:30")
    assert next_ts(daily, at("2023-03-01 08:30"), now) == at("2023-03-02 08:30")
    weekly = {"type": "weekly", "dayOfWeek": "tuesday", "hourUTC": 12, "minuteUTC": 30}
    assert next_ts(weekly, None, now) == at("2023-02-28 12:30")
    assert next_ts(weekly, at("2023-02-28 12:30"), now) == at("2023-03-07 12:30")
    monthly = {"type": "monthly", "day": 1, "hourUTC": 12, "minuteUTC": 30}
    assert next_ts(monthly, None, now) == at("2023-03-01 12:30")
    assert next_ts(monthly, at("2023-03-01 12:30"), now) == at("2023-04-01 12:30")
    cron = {"type": "cron", "cron": "0 12 * * 1,5"}  # Mondays and Fridays at noon
    assert next_ts(cron, None, now) == at("2023-03-03 12:00")
    assert next_ts(cron, at("2023-03-03 12:00"), now) == at("2023-03-06 12:00")


def test_parse_cron_reads_values_ranges_steps_lists_and_names() -> None:
    parsed = parse_cron("*/15 9-17/4 1,15 jan-mar MON-fri")
    assert parsed.minutes == (0, 15, 30, 45)
    assert parsed.hours == (9, 13, 17)
    assert parsed.days == {1, 15}
    assert parsed.months == {1, 2, 3}
    assert parsed.weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("5/20 * ? * *").minutes == (5, 25, 45)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 12 * * 7", "day of week field '7': 7 is outside 0-6"),
        ("* * *", "expected 5 fields"),
        ("60 * * * *", "60 is outside 0-59"),
        ("* 5-2 * * *", "range '5-2' runs backwards"),
        ("*/0 * * * *", "step '0' must be a whole number from 1"),
        ("* * L * *", "L, W and # are not supported"),
        ("* * * * 5#2", "L, W and # are not supported"),
        ("x * * * *", "'x' is not a number"),
        ("* * * foo *", "'foo' is not a number or a name"),
        ("? * * * *", "'?' is not a number"),  # only the day fields take ?
    ],
)
def test_parse_cron_refuses_what_it_cannot_read(expression: str, message: str) -> None:
    with pytest.raises(SchedulerError, match="Invalid cron expression") as raised:
        parse_cron(expression)
    assert message in str(raised.value)


def _matches(expression: str, when: datetime) -> bool:
    """A second reading of cron's rules, for the property below."""
    fields = expression.split()

    def within(field: str, value: int, low: int, high: int) -> bool:
        for part in field.split(","):
            base, _, step = part.partition("/")
            start, end = (
                (low, high) if base == "*" else (int(base.split("-")[0]), int(base.split("-")[-1]))
            )
            if "/" in part and base != "*" and "-" not in base:
                end = high
            if start <= value <= end and (value - start) % int(step or 1) == 0:
                return True
        return False

    weekday = (when.weekday() + 1) % 7
    day = within(fields[2], when.day, 1, 31)
    week = within(fields[4], weekday, 0, 6)
    if fields[2].startswith("*") or fields[4].startswith("*"):  # Vixie cron's "star" fields
        either = day and week
    else:
        either = day or week
    return (
        within(fields[0], when.minute, 0, 59)
        and within(fields[1], when.hour, 0, 23)
        and within(fields[3], when.month, 1, 12)
        and either
    )


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    single = st.one_of(
        st.just("*"),
        value.map(str),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.tuples(st.sampled_from(["*", str(low)]), st.integers(1, 7)).map(
            lambda p: f"{p[0]}/{p[1]}"
        ),
    )
    return st.lists(single, min_size=1, max_size=3).map(",".join)


@settings(max_examples=150, deadline=None)
@given(
    minute=_field(0, 59),
    hour=_field(0, 23),
    day=_field(1, 31),
    month=st.sampled_from(["*", "1-12", "2", "3,9", "*/2"]),
    weekday=_field(0, 6),
    start=st.integers(at("2023-01-01 00:00") // 60000, at("2031-01-01 00:00") // 60000),
    second=st.integers(0, 59_999),
)
def test_next_run_is_the_first_matching_minute(
    minute: str, hour: str, day: str, month: str, weekday: str, start: int, second: int
) -> None:
    # Checked against a minute-by-minute walk over the next four days.
    expression = f"{minute} {hour} {day} {month} {weekday}"
    after = start * 60000.0 + second
    found = next_run(parse_cron(expression), after)
    when = datetime.fromtimestamp(start * 60.0, UTC)
    for _ in range(4 * 24 * 60):
        when += timedelta(minutes=1)
        if _matches(expression, when):
            assert found == when.timestamp() * 1000.0, expression
            return
    assert found is None or found > when.timestamp() * 1000.0


def test_next_run_of_a_date_that_never_comes_is_none() -> None:
    assert next_run(parse_cron("0 0 30 2 *"), at("2024-01-01 00:00")) is None
    leap = next_run(parse_cron("0 0 29 2 *"), at("2097-01-01 00:00"))  # 2100 is not leap
    assert leap == at("2104-02-29 00:00")


# -- definitions ---------------------------------------------------------------------------


def test_each_schedule_in_pythons_and_convexs_argument_order() -> None:
    crons = cron_jobs()
    crons.interval("a", cronjobs.tick, {"label": "a"}, minutes=5)
    crons.interval("b", {"hours": 2}, cronjobs.tick, {"label": "b"})
    crons.hourly("c", cronjobs.tick, {"label": "c"}, minute_utc=7)
    crons.daily("d", {"hourUTC": 17, "minuteUTC": 30}, "cronjobs:tick", {"label": "d"})
    crons.weekly("e", cronjobs.act, day_of_week="friday", hour_utc=8, minute_utc=0)
    crons.monthly("f", cronjobs.tick, {"label": "f"}, day=31, hour_utc=0, minute_utc=0)
    crons.cron("g", "15 7 * * *", cronjobs.tick, {"label": "g"})
    schedules = {cron.name: cron.schedule for cron in crons}
    assert schedules == {
        "a": {"type": "interval", "seconds": 300},
        "b": {"type": "interval", "seconds": 7200},
        "c": {"type": "hourly", "minuteUTC": 7},
        "d": {"type": "daily", "hourUTC": 17, "minuteUTC": 30},
        "e": {"type": "weekly", "dayOfWeek": "friday", "hourUTC": 8, "minuteUTC": 0},
        "f": {"type": "monthly", "day": 31, "hourUTC": 0, "minuteUTC": 0},
        "g": {"type": "cron", "cron": "15 7 * * *"},
    }
    # A left-out minute is the same for a name in every process (Convex picks one at random).
    again = cron_jobs()
    again.hourly("spread out", cronjobs.tick, {"label": "x"})
    assert next(iter(again)).schedule == {"type": "hourly", "minuteUTC": 12}  # crc32 % 60


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (lambda c: c.interval("n", cronjobs.tick, {}), "Must specify one of seconds, minutes"),
        (lambda c: c.interval("n", cronjobs.tick, seconds=1, minutes=1), "Must specify one of"),
        (
            lambda c: c.interval("n", cronjobs.tick, seconds=0),
            "Interval must be an integer greater",
        ),
        (lambda c: c.interval("n", cronjobs.tick, seconds=1.5), "Interval must be an integer"),
        (
            lambda c: c.hourly("n", cronjobs.tick, minute_utc=60),
            "Minute of hour must be an integer",
        ),
        (lambda c: c.daily("n", cronjobs.tick, minute_utc=0), "Hour of day must be an integer"),
        (lambda c: c.daily("n", cronjobs.tick, hour_utc=True), "Hour of day must be an integer"),
        (
            lambda c: c.weekly("n", cronjobs.tick, day_of_week="Monday", hour_utc=1),
            'Day of week must be a string like "monday"',
        ),
        (lambda c: c.monthly("n", cronjobs.tick, day=0, hour_utc=1), "Day of month must be"),
        (lambda c: c.cron("n", "* * * *", cronjobs.tick), "expected 5 fields"),
        (lambda c: c.cron("bad/name", "* * * * *", cronjobs.tick), "Invalid cron identifier"),
        (lambda c: c.cron("", "* * * * *", cronjobs.tick), "Invalid cron identifier"),
        (lambda c: c.cron("n", "* * * * *", cronjobs.ticks), "is a query; a cron runs"),
        (lambda c: c.cron("n", "* * * * *", print), "the target must be a mutation or action"),
        (lambda c: c.cron("n", "* * * * *", cronjobs.tick, ["x"]), "arguments are a dict"),
        (
            lambda c: c.daily("n", {"hourUTC": 1}, cronjobs.tick, hour_utc=1),
            "either as a dict before the function",
        ),
        (lambda c: c.daily("n", hour_utc=1), "takes the cron's name, then the function"),
    ],
)
def test_definitions_are_checked_with_convexs_messages(define: Any, message: str) -> None:
    with pytest.raises(SchedulerError) as raised:
        define(cron_jobs())
    assert message in str(raised.value)


def test_a_name_registered_twice_is_refused() -> None:
    crons = cron_jobs()
    crons.interval("twice", cronjobs.tick, {"label": "x"}, seconds=5)
    with pytest.raises(SchedulerError, match="Cron identifier registered twice: twice"):
        crons.hourly("twice", cronjobs.tick, {"label": "x"}, minute_utc=0)


# -- stored crons ----------------------------------------------------------------------------


def test_open_stores_the_crons_and_keeps_them_in_step_with_the_definitions(db_path: Path) -> None:
    crons = cron_jobs()
    crons.interval("often", cronjobs.tick, {"label": "one"}, hours=1)
    crons.daily("nightly", cronjobs.tick, {"label": "n"}, hour_utc=3, minute_utc=0)
    before = time.time() * 1000.0
    with open_with(db_path, crons) as engine:
        first = by_name(engine)
        assert set(first) == {"often", "nightly"}
        often = first["often"]
        assert often["cronSpec"] == {
            "udfPath": "cronjobs:tick",
            "udfArgs": [{"label": "one"}],
            "cronSchedule": {"type": "interval", "seconds": 3600},
        }
        assert often["state"] == {"kind": "pending"}
        assert before <= often["nextTs"] <= time.time() * 1000.0  # an interval runs at once
        assert iso(first["nightly"]["nextTs"]).endswith("03:00")
        engine.check()
    with open_with(db_path, crons) as engine:  # the same definitions: nothing written
        assert by_name(engine) == first
    changed = cron_jobs()
    changed.interval("often", cronjobs.tick, {"label": "two"}, hours=1)  # new arguments
    changed.daily("nightly", cronjobs.tick, {"label": "n"}, hour_utc=4, minute_utc=0)
    changed.cron("new", "0 0 1 1 *", cronjobs.tick, {"label": "new"})
    with open_with(db_path, changed) as engine:
        now = by_name(engine)
        assert now["often"]["cronSpec"]["udfArgs"] == [{"label": "two"}]
        assert now["often"]["nextTs"] == often["nextTs"]  # same schedule: same next run
        assert now["often"]["_id"] == often["_id"]
        assert iso(now["nightly"]["nextTs"]).endswith("04:00")  # new schedule: moved
        assert iso(now["new"]["nextTs"]).endswith("01-01 00:00")
    with Engine.open(db_path, durability="none") as engine:  # no functions: left alone
        assert set(by_name(engine)) == {"often", "nightly", "new"}
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        assert stored(engine) == []  # a package without crons has none


def test_a_package_module_named_crons_holds_the_crons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "cronpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "work.py").write_text(
        textwrap.dedent(
            """
            from engine import internal_mutation

            @internal_mutation(args={})
            def tidy(ctx):
                ctx.db.insert("tidied", {"at": ctx.now})
            """
        )
    )
    (package / "crons.py").write_text(
        textwrap.dedent(
            """
            from engine import cron_jobs
            from . import work

            crons = cron_jobs()
            crons.interval("tidy", work.tidy, minutes=10)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import cronpkg  # type: ignore[import-not-found]

    try:
        with Engine.open(
            tmp_path / "db", functions=cronpkg, durability="none", scheduler=False
        ) as e:
            assert [c["cronSpec"]["udfPath"] for c in stored(e)] == ["work:tidy"]
            assert e.finish_scheduled_functions() == 1
            assert len(e.run(lambda ctx: ctx.db.query("tidied").collect())) == 1
            with pytest.raises(EngineError, match="functions package also has crons"):
                Engine.open(
                    tmp_path / "db", functions=cronpkg, crons=cron_jobs(), durability="none"
                )
        (package / "crons.py").write_text("X = 1\n")
        for name in [m for m in sys.modules if m.startswith("cronpkg")]:
            del sys.modules[name]
        import cronpkg as reloaded

        with pytest.raises(EngineError, match="exactly one `crons = cron_jobs\\(\\)`, found 0"):
            Engine.open(tmp_path / "db", functions=reloaded, durability="none")
    finally:
        for name in [m for m in sys.modules if m.startswith("cronpkg")]:
            del sys.modules[name]


@pytest.mark.parametrize(
    ("target", "args", "error", "message"),
    [
        (
            "cronjobs:missing",
            {},
            FunctionNotFound,
            "Could not find function for 'cronjobs:missing'",
        ),
        ("cronjobs:read_only", {}, SchedulerError, "is a query: the scheduler runs a mutation"),
        ("cronjobs:tick", {"label": 1}, ArgumentValidationError, "label"),
    ],
)
def test_open_refuses_crons_it_could_not_run(
    db_path: Path, target: str, args: dict[str, Any], error: type[Exception], message: str
) -> None:
    crons = cron_jobs()
    crons.interval("bad", target, args, seconds=10)
    with pytest.raises(error) as raised:
        open_with(db_path, crons)
    assert message in str(raised.value)
    assert str(raised.value).startswith("Cron 'bad': ")


def test_crons_without_functions_or_of_another_type_are_refused(db_path: Path) -> None:
    with pytest.raises(EngineError, match="was given without functions"):
        Engine.open(db_path, crons=cron_jobs())
    with pytest.raises(EngineError, match="takes the result of cron_jobs"):
        Engine.open(db_path, functions=app, crons={"a": 1})  # type: ignore[arg-type]


# -- runs -----------------------------------------------------------------------------------


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=60)
    # Half an hour from now, so that "act" is due in an hour's advance but never at once
    # (at minute 0 it came due when the hour turned between the open and a finish).
    half_hour_on = (int(time.time() // 60) + 30) % 60  # the UTC minute, thirty on
    crons.hourly("act", cronjobs.act, {"label": "a", "seconds": 0.0}, minute_utc=half_hour_on)
    # Twelve hours from now, so that "fail" is due in a day's advance but never in an hour's,
    # whatever the time of day the suite runs at (at 0:00 UTC it was due from 23:00 on).
    far_hour = (int(time.time() // 3600) + 12) % 24  # the UTC hour, twelve on
    crons.daily("fail", cronjobs.fail, hour_utc=far_hour, minute_utc=0)
    with open_with(db_path, crons) as handle:
        yield handle
        handle.check()


def test_a_due_mutation_runs_once_and_logs_with_its_next_run(engine: Engine) -> None:
    tick = by_name(engine)["tick"]
    assert engine.finish_scheduled_functions() == 1  # only the interval is due at once
    assert engine.query(cronjobs.ticks) == ["t"]
    after = by_name(engine)["tick"]
    assert after["prevTs"] == tick["nextTs"]
    assert after["nextTs"] == tick["nextTs"] + 60_000.0
    (log,) = logs(engine, "tick")
    assert log["ts"] == tick["nextTs"]
    assert log["status"] == {"type": "success", "result": "t"}
    assert log["udfPath"] == "cronjobs:tick" and log["udfArgs"] == [{"label": "t"}]
    assert 0.0 <= log["executionTime"] < 5.0
    assert engine.finish_scheduled_functions() == 0  # not due again yet
    assert engine.finish_all_scheduled_functions() == 0  # crons are not run ahead of time


def test_a_failing_mutation_commits_nothing_but_its_log_and_next_run(engine: Engine) -> None:
    assert engine.finish_scheduled_functions(advance=timedelta(days=1)) == 3
    assert "never committed" not in engine.query(cronjobs.ticks)
    (log,) = logs(engine, "fail")
    assert log["status"] == {"type": "err", "error": "Uncaught ConvexError: cron failure"}
    fail = by_name(engine)["fail"]
    assert fail["nextTs"] - fail["prevTs"] == 86_400_000.0
    assert fail["state"] == {"kind": "pending"}


def test_an_action_runs_at_most_once_and_logs_its_result(engine: Engine) -> None:
    assert engine.finish_scheduled_functions(advance=3600) == 2  # tick, act
    assert sorted(engine.query(cronjobs.ticks)) == ["a", "t"]
    (log,) = logs(engine, "act")
    assert log["status"] == {"type": "success", "result": "acted a"}
    act = by_name(engine)["act"]
    assert act["state"] == {"kind": "pending"}
    assert act["nextTs"] - act["prevTs"] == 3_600_000.0


def test_runs_that_came_due_meanwhile_are_skipped_and_counted(engine: Engine) -> None:
    # The clock moves a day on: the interval cron runs once, not 1,440 times.
    assert engine.finish_scheduled_functions(advance=timedelta(days=1)) == 3
    assert engine.query(cronjobs.ticks).count("t") == 1
    entries = logs(engine, "tick")
    assert [log["status"]["type"] for log in entries] == ["success", "canceled"]
    assert entries[1]["status"]["numCanceled"] == 1440
    tick = by_name(engine)["tick"]
    assert tick["nextTs"] >= time.time() * 1000.0 + 86_400_000.0 - 60_000.0


def test_the_five_newest_logs_of_each_cron_are_kept(db_path: Path) -> None:
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=60)
    with open_with(db_path, crons) as engine:
        for step in range(7):
            assert engine.finish_scheduled_functions(advance=60 * step) == 1
        entries = logs(engine, "tick")
        assert len(entries) == 5
        assert all(log["status"]["type"] == "success" for log in entries)
        assert engine.query(cronjobs.ticks) == ["t"] * 7
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        assert stored(engine, LOGS) == []  # deleted with their cron


def test_two_executors_run_each_due_cron_once(db_path: Path) -> None:
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=60)
    first = open_with(db_path, crons)
    second = open_with(db_path, crons)
    try:
        ran: list[int] = []
        barrier = threading.Barrier(2)

        def finish(engine: Engine) -> None:
            for step in range(5):
                barrier.wait()
                ran.append(engine.finish_scheduled_functions(advance=60 * step))

        threads = [threading.Thread(target=finish, args=(e,)) for e in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(ran) == 5
        assert first.query(cronjobs.ticks) == ["t"] * 5
        first.check()
    finally:
        first.close()
        second.close()


def test_the_background_worker_runs_crons_as_they_come_due(db_path: Path) -> None:
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=1)
    with open_with(db_path, crons, scheduler=True) as engine:
        deadline = time.monotonic() + 10
        while len(engine.query(cronjobs.ticks)) < 2:
            assert time.monotonic() < deadline, "the cron did not run twice within 10 s"
            time.sleep(0.05)
        runs = [log["ts"] for log in logs(engine, "tick")]
        assert runs[1] - runs[0] == 1000.0  # one second apart, by their runs' times


def test_an_action_left_in_progress_by_a_dead_executor_is_failed_by_the_next(
    db_path: Path,
) -> None:
    crons = cron_jobs()
    crons.hourly("act", cronjobs.act, {"label": "a", "seconds": 0.0}, minute_utc=0)
    with open_with(db_path, crons) as engine:
        act = by_name(engine)["act"]

        def claim(ctx: Any) -> None:
            with engine_writes(ctx._txn):
                ctx._txn.patch(act["_id"], {"state": {"kind": "inProgress"}})

        engine.run(claim)  # as the executor claims it; then the process "dies"
    with open_with(db_path, crons) as engine:  # alone on the folder: fails the orphan
        (log,) = logs(engine, "act")
        assert log["status"] == {"type": "err", "error": "Transient error while executing action"}
        after = by_name(engine)["act"]
        assert after["state"] == {"kind": "pending"}
        assert after["prevTs"] == act["nextTs"]
        assert after["nextTs"] > act["nextTs"]


def test_check_counts_the_crons_and_reports_a_damaged_one(engine: Engine) -> None:
    from engine import CorruptionError

    assert engine.check()["crons"] == {"pending": 3}
    tick = by_name(engine)["tick"]

    def damage(ctx: Any) -> None:
        with engine_writes(ctx._txn):
            ctx._txn.patch(tick["_id"], {"state": {"kind": "done"}, "nextTs": 5})

    engine.run(damage)
    with pytest.raises(CorruptionError, match="broken invariant") as raised:
        engine.check()
    assert any("neither pending nor inProgress" in p for p in raised.value.problems)
    assert any("nextTs is not a float" in p for p in raised.value.problems)
    engine.run(lambda ctx: _restore(ctx, tick))


def _restore(ctx: Any, cron: dict[str, Any]) -> None:
    with engine_writes(ctx._txn):
        ctx._txn.replace(cron["_id"], {k: v for k, v in cron.items() if not k.startswith("_")})


def test_a_target_outside_the_functions_package_is_refused(db_path: Path) -> None:
    from engine import internal_mutation

    @internal_mutation(args={})
    def stray(ctx: Any) -> None:
        return None

    crons = cron_jobs()
    crons.interval("stray", stray, seconds=5)
    with pytest.raises(FunctionNotFound, match="Cron 'stray': .* is not registered"):
        open_with(db_path, crons)


def test_a_run_read_before_another_executor_ran_it_does_not_run_again(engine: Engine) -> None:
    # Two executors read the same due cron; the one that starts second must see, in its
    # own transaction, that the run is done (its next time has moved on), for mutations
    # and for actions.
    from engine.crons import CronRun

    runner = engine._executor
    assert runner is not None
    stale = by_name(engine)
    assert engine.finish_scheduled_functions(advance=3600) == 2  # tick and act ran
    for name, kind, function in (
        ("tick", "mutation", cronjobs.tick),
        ("act", "action", cronjobs.act),
    ):
        run = CronRun(runner, stale[name], kind, 3600 * 1000.0)
        if kind == "mutation":
            assert runner._run_mutation(run, function, background=False) is False
        else:
            assert runner._run_action(run, function, background=False) is False
    assert sorted(engine.query(cronjobs.ticks)) == ["a", "t"]  # each ran once


# -- found by review --------------------------------------------------------------------------


def test_a_rare_date_more_than_eight_years_apart_is_found() -> None:
    # "Feb 1st or the 30th that is a Monday" (a day field starting with * ANDs the days):
    # Mondays that are February 1st come 5 to 11 years apart.
    expression = parse_cron("0 0 */29 2 1")
    first = next_run(expression, at("2026-12-03 00:00"))
    assert first is not None and iso(first) == "2027-02-01 00:00"
    second = next_run(expression, first)
    assert second is not None and iso(second) == "2038-02-01 00:00"


def test_an_expression_that_matches_no_date_is_refused_where_it_is_defined() -> None:
    with pytest.raises(SchedulerError, match="matches no date"):
        cron_jobs().cron("never", "0 0 30 2 *", cronjobs.tick, {"label": "x"})


def test_non_ascii_digits_are_refused_as_cron_syntax() -> None:
    for expression in ("² * * * *", "٣ * * * *", "*/² * * * *"):
        with pytest.raises(SchedulerError, match="Invalid cron expression"):
            parse_cron(expression)


def test_skipped_runs_are_counted_exactly_after_a_long_outage() -> None:
    from engine.cronschedule import after_skips, count_runs

    every_minute = {"type": "cron", "cron": "* * * * *"}
    start = at("2025-03-01 00:00")
    year_later = at("2026-03-01 00:00")  # 365 days
    assert after_skips(every_minute, start, year_later) == (year_later, 365 * 1440 - 1)
    hourly = {"type": "hourly", "minuteUTC": 30}
    following, skipped = after_skips(hourly, at("2025-03-01 00:30"), at("2025-03-03 00:10"))
    assert (iso(following), skipped) == ("2025-03-03 00:30", 47)
    assert (
        count_runs(parse_cron("0 12 * * 1,5"), at("2023-02-28 08:35"), at("2023-03-07 00:00")) == 2
    )


def test_a_run_ending_within_a_millisecond_after_a_matching_minute_skips_that_minute() -> None:
    # Found by a scratch run: the next run was looked for from 1 ms before the run's end,
    # so a run ending less than a millisecond after a matching minute took that minute,
    # already past, as its next run while also counting it skipped: it was logged
    # canceled and ran all the same. Convex skips every run before the end (next < now).
    from engine.cronschedule import after_skips

    daily = {"type": "daily", "hourUTC": 12, "minuteUTC": 0}
    ended = at("2026-01-03 12:00") + 0.25
    assert after_skips(daily, at("2026-01-01 12:00"), ended) == (at("2026-01-04 12:00"), 2)
    every_minute = {"type": "cron", "cron": "* * * * *"}
    prev = at("2026-01-01 11:58")
    noon = at("2026-01-01 12:00")
    assert after_skips(every_minute, prev, noon) == (noon, 1)  # on the minute: it runs
    for late in (0.0005, 0.5, 0.999, 1.0, 30_000.0):
        assert after_skips(every_minute, prev, noon + late) == (at("2026-01-01 12:01"), 2)


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(
        ["* * * * *", "*/7 3-5 * * *", "0 0 1,15 * 1", "30 */2 * jan-mar *"]
    ),
    start=st.integers(at("2024-01-01 00:00") // 60000, at("2025-01-01 00:00") // 60000),
    minutes=st.integers(0, 3 * 1440),
    second=st.integers(0, 59_999),
)
def test_count_runs_counts_what_next_run_walks(
    expression: str, start: int, minutes: int, second: int
) -> None:
    from engine.cronschedule import count_runs

    parsed = parse_cron(expression)
    after = start * 60000.0 + second
    before = after + minutes * 60000.0
    walked = 0
    found = next_run(parsed, after)
    while found is not None and found < before:
        walked += 1
        found = next_run(parsed, found)
    assert count_runs(parsed, after, before) == walked


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        (cronjobs.python_shaped, {"pair": [1, 2.5], "raw": b"\x00"}),
        (cronjobs.python_shaped_action, {"pair": [1, 2.5], "raw": b"\x00"}),
        (cronjobs.undefined, None),
    ],
    ids=["mutation", "action", "UNSET"],
)
def test_a_result_is_logged_as_the_convex_value_it_stands_for(
    db_path: Path, target: Any, logged: Any
) -> None:
    # Found by review: the run logged the result as the function returned it, not as
    # checked: a tuple (or a bytearray, an UNSET field, UNSET itself) made measuring it
    # for the log raise TypeError, so a mutation cron retried as on a system error and
    # never committed, and an action cron's TypeError escaped finish_scheduled_functions.
    crons = cron_jobs()
    crons.interval("shaped", target, {}, minutes=10)
    with open_with(db_path, crons) as engine:
        assert engine.finish_scheduled_functions(timeout=5) == 1
        (log,) = logs(engine, "shaped")
        assert log["status"] == {"type": "success", "result": logged}
        assert "prevTs" in by_name(engine)["shaped"]


def test_an_error_holding_a_lone_surrogate_is_logged_escaped(db_path: Path) -> None:
    # Found by review: the cron's failure could not be logged (no Convex string holds a
    # lone surrogate) and the cron never moved on.
    from tests.app import jobs

    crons = cron_jobs()
    crons.interval("undecodable", jobs.fail_undecodable, {}, minutes=10)
    with open_with(db_path, crons) as engine:
        assert engine.finish_scheduled_functions(timeout=5) == 1
        (log,) = logs(engine, "undecodable")
        assert log["status"] == {
            "type": "err",
            "error": "Uncaught ValueError: cannot read caf\\udce9.txt",
        }
        assert "prevTs" in by_name(engine)["undecodable"]


def test_a_deeply_nested_result_is_logged_as_text_and_the_cron_moves_on(db_path: Path) -> None:
    crons = cron_jobs()
    crons.interval("deep", cronjobs.deep, {"depth": 15}, minutes=10)
    with open_with(db_path, crons) as engine:
        assert engine.finish_scheduled_functions(timeout=5) == 1
        (log,) = logs(engine, "deep")
        assert log["status"]["type"] == "success" and "truncated" in log["status"]
        assert engine.query(cronjobs.ticks) == ["deep"]
        assert "prevTs" in by_name(engine)["deep"]


def test_a_huge_error_is_cut_so_its_log_fits(db_path: Path) -> None:
    crons = cron_jobs()
    crons.interval("huge", cronjobs.huge_error, {"size": 2 << 20}, minutes=10)
    with open_with(db_path, crons) as engine:
        assert engine.finish_scheduled_functions(timeout=5) == 1
        (log,) = logs(engine, "huge")
        assert log["status"]["error"].startswith("Uncaught ValueError: xxx")
        assert log["status"]["error"].endswith("... (truncated)")
        assert len(log["status"]["error"]) < 70_000


def test_an_error_is_cut_to_the_room_its_arguments_leave_in_the_log(db_path: Path) -> None:
    # Found by review: a cron's log holds its arguments, and an error of up to 64 Ki
    # characters beside arguments that fit in the cron (as the scheduler's jobs keep room
    # for theirs) made the log too large: the run's outcome was never written, and
    # finish_scheduled_functions raised DocumentTooLarge (the cron was never logged).
    # (As large as a cron's arguments may be: room is kept for a logged result too.)
    crons = cron_jobs()
    padding = "a" * ((1 << 20) - 6000)
    crons.interval(
        "padded", cronjobs.padded_error, {"size": 60_000, "padding": padding}, minutes=10
    )
    with open_with(db_path, crons) as engine:
        assert engine.finish_scheduled_functions(timeout=5) == 1
        (log,) = logs(engine, "padded")
        assert log["status"]["error"].startswith("Uncaught ValueError: xxx")
        assert log["status"]["error"].endswith("... (truncated)")
        assert log["udfArgs"] == [{"size": 60_000, "padding": padding}]


def test_a_cron_run_ending_does_not_unregister_the_next_run_of_the_same_cron(
    engine: Engine,
) -> None:
    # Found by review: every run of a cron has the cron's id as its key; the next run,
    # claimed as soon as this one's outcome committed, was unregistered by this run's
    # task ending after it, and close() then neither waited for it nor recorded it.
    import concurrent.futures

    from engine.crons import CronRun

    runner = engine._executor
    assert runner is not None
    act = by_name(engine)["act"]
    ending = CronRun(runner, act, "action", 0.0)
    next_run_ = CronRun(runner, act, "action", 0.0)
    runner._runs[act["_id"]] = next_run_
    runner._running[act["_id"]] = concurrent.futures.Future()
    runner._finished(ending)
    assert runner._runs.get(act["_id"]) is next_run_  # still registered
    # And a pass does not claim a cron whose run is still registered here.
    assert runner._pass_crons(False, 3600 * 1000.0)[0] == 1  # tick only
    assert by_name(engine)["act"]["state"] == {"kind": "pending"}
    runner._finished(next_run_)
    assert act["_id"] not in runner._runs and act["_id"] not in runner._running


def test_finish_called_from_a_cron_actions_thread_is_refused(db_path: Path) -> None:
    from tests.app import jobs

    crons = cron_jobs()
    crons.interval("finisher", jobs.finish_from_own_action, minutes=10)
    with open_with(db_path, crons) as engine:
        jobs.ENGINES_TO_FINISH[:] = [engine]
        started = time.monotonic()
        assert engine.finish_scheduled_functions() == 1
        assert time.monotonic() - started < 10.0  # not its own 20 s timeout
        (log,) = logs(engine, "finisher")
        assert "called from inside a scheduled action" in log["status"]["error"]


def test_a_cron_whose_runs_would_not_fit_is_refused_when_registered(db_path: Path) -> None:
    # Arguments that fit in _cron_jobs when the cron is stored could leave no room for
    # what its runs write: the log holds the arguments beside a result of up to 1,000
    # bytes (and the cron takes prevTs and inProgress). The run's outcome never
    # committed and finish_scheduled_functions raised DocumentTooLarge at every pass,
    # so the cron stalled. Such a cron is refused when the engine opens, by name.
    crons = cron_jobs()
    padding = "a" * ((1 << 20) - 600)
    crons.interval("padded", cronjobs.padded_result, {"size": 900, "padding": padding}, minutes=10)
    with pytest.raises(LimitExceeded) as raised:
        open_with(db_path, crons).close()
    message = str(raised.value)
    assert raised.value.limit == "DocumentTooLarge"
    assert "Cron 'padded'" in message and str(1 << 20) in message
    assert "Pass the ids of stored documents" in message
    # With the room its runs need, the same cron registers, runs and is logged.
    crons = cron_jobs()
    padding = "a" * ((1 << 20) - 6000)
    crons.interval("padded", cronjobs.padded_result, {"size": 900, "padding": padding}, minutes=10)
    with open_with(db_path, crons) as engine:
        assert engine.finish_scheduled_functions(timeout=5) == 1
        (log,) = logs(engine, "padded")
        assert log["status"] == {"type": "success", "result": "r" * 900}
        assert "prevTs" in by_name(engine)["padded"]


def test_a_cron_whose_bookkeeping_fails_does_not_stop_the_pass(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A run's outcome that could not be written (forced here) raised out of the
    # executor's pass, and the crons due after it did not run in that pass. Now it is
    # logged with the cron's name, the cron is left as stored, the others run, and
    # finish_scheduled_functions raises the error once the pass is over.
    import logging

    import engine.cronruns as cronruns  # CronRun reads complete_run there

    caplog.set_level(logging.ERROR, logger="engine.scheduler")
    crons = cron_jobs()
    crons.interval("fail", cronjobs.fail, minutes=10)
    crons.interval("tick", cronjobs.tick, {"label": "t"}, minutes=10)
    real_complete_run = cronruns.complete_run

    def broken_complete_run(
        txn: Any, cron: dict[str, Any], status: dict[str, Any], *a: Any
    ) -> None:
        if status["type"] == "err":
            raise LimitExceeded("forced bookkeeping failure", limit="DocumentTooLarge")
        real_complete_run(txn, cron, status, *a)

    with open_with(db_path, crons) as engine:
        fail, tick = by_name(engine)["fail"], by_name(engine)["tick"]

        def fail_first(ctx: Any) -> None:  # both are due at once: order them
            with engine_writes(ctx._txn):
                ctx._txn.patch(fail["_id"], {"nextTs": tick["nextTs"] - 1000.0})

        engine.run(fail_first)
        fail = by_name(engine)["fail"]
        monkeypatch.setattr(cronruns, "complete_run", broken_complete_run)
        with pytest.raises(LimitExceeded, match="forced bookkeeping failure"):
            engine.finish_scheduled_functions(timeout=5)
        assert engine.query(cronjobs.ticks) == ["t"]  # the cron behind it ran
        assert logs(engine, "fail") == [] and by_name(engine)["fail"] == fail  # as stored
        assert any("cron 'fail'" in record.getMessage() for record in caplog.records)
        monkeypatch.setattr(cronruns, "complete_run", real_complete_run)
        assert engine.finish_scheduled_functions(timeout=5) == 1  # now recorded, once
        assert [log["status"]["type"] for log in logs(engine, "fail")] == ["err"]
        assert engine.query(cronjobs.ticks) == ["t"]


# -- damaged crons -----------------------------------------------------------------------
# A cron document whose fields have the wrong type (an old or foreign process, corruption)
# must neither fail Engine.open nor stop the executor.

CRON_DAMAGES = {
    "state a string": {"state": "pending"},
    "spec a string": {"cronSpec": "spec"},
    "string nextTs": {"nextTs": "soon"},
    "list name": {"name": ["tick"]},
    "list schedule type": {
        "cronSpec": {
            "udfPath": "cronjobs:tick",
            "udfArgs": [{"label": "t"}],
            "cronSchedule": {"type": ["interval"], "seconds": 60.0},
        }
    },
    "string interval": {
        "cronSpec": {
            "udfPath": "cronjobs:tick",
            "udfArgs": [{"label": "t"}],
            "cronSchedule": {"type": "interval", "seconds": "60"},
        }
    },
}


def _damage_cron(engine: Engine, cron_id: str, fields: dict[str, Any]) -> None:
    def write(ctx: Any) -> None:
        with engine_writes(ctx._txn):
            ctx._txn.patch(cron_id, fields)

    engine.run(write)


def _two_crons() -> Crons:
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=60)
    crons.interval("tock", cronjobs.tick, {"label": "o"}, seconds=60)
    return crons


@pytest.mark.parametrize("fields", CRON_DAMAGES.values(), ids=CRON_DAMAGES.keys())
def test_a_damaged_cron_is_skipped_logged_once_and_the_others_run(
    db_path: Path, fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from engine import CorruptionError

    caplog.set_level(logging.WARNING, logger="engine.scheduler")
    with open_with(db_path, _two_crons()) as engine:
        tick = by_name(engine)["tick"]
        _damage_cron(engine, tick["_id"], fields)
        for step in range(3):
            assert engine.finish_scheduled_functions(timeout=5, advance=60 * step) == 1
        assert engine.query(cronjobs.ticks) == ["o"] * 3  # "tock" ran on, "tick" never
        logged = [r.getMessage() for r in caplog.records if tick["_id"] in r.getMessage()]
        assert len(logged) == 1, logged
        assert "skipped" in logged[0]
        with pytest.raises(CorruptionError) as caught:
            engine.check()
        assert any(p.startswith(f"{CRONS} {tick['_id']}") for p in caught.value.problems)


@pytest.mark.parametrize("fields", CRON_DAMAGES.values(), ids=CRON_DAMAGES.keys())
def test_open_replaces_a_damaged_cron_by_its_definition(
    db_path: Path, fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.scheduler")
    with open_with(db_path, _two_crons()) as engine:
        tick = by_name(engine)["tick"]
        _damage_cron(engine, tick["_id"], fields)
    # The next open (a deploy of the same crons) stores the defined cron afresh; the
    # damaged document is deleted, and said so.
    with open_with(db_path, _two_crons()) as engine:
        assert sorted(by_name(engine)) == ["tick", "tock"]
        assert by_name(engine)["tick"]["cronSpec"]["udfArgs"] == [{"label": "t"}]
        assert tick["_id"] in "\n".join(r.getMessage() for r in caplog.records)
        assert engine.finish_scheduled_functions(timeout=5) == 2
        engine.check()
    # Opened with other crons, the damaged one is deleted like any cron no longer defined.
    with open_with(db_path, _two_crons()) as engine:
        _damage_cron(engine, by_name(engine)["tick"]["_id"], fields)
    crons = cron_jobs()
    crons.interval("tock", cronjobs.tick, {"label": "o"}, seconds=60)
    with open_with(db_path, crons) as engine:
        assert [c["name"] for c in stored(engine)] == ["tock"]
        engine.check()


def test_the_worker_survives_a_damaged_cron(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.scheduler")
    crons = cron_jobs()
    crons.interval("tick", cronjobs.tick, {"label": "t"}, seconds=3600)
    crons.interval("often", cronjobs.tick, {"label": "o"}, seconds=1)
    with open_with(db_path, crons, scheduler=True) as engine:
        wait_until(lambda: "t" in engine.query(cronjobs.ticks))
        _damage_cron(engine, by_name(engine)["tick"]["_id"], {"nextTs": "soon"})
        count = len(engine.query(cronjobs.ticks))
        wait_until(lambda: len(engine.query(cronjobs.ticks)) >= count + 2, timeout=10)
        messages = [r.getMessage() for r in caplog.records]
        assert not any("failed a pass" in m for m in messages), messages
