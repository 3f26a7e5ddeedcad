"""engine.scheduler and engine.executor: ctx.scheduler, _scheduled_functions, running jobs."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import (
    UNSET,
    ArgumentValidationError,
    ConvexError,
    CorruptionError,
    Engine,
    EngineError,
    FunctionNotFound,
    IndexNotFound,
    InvalidId,
    LimitExceeded,
    ReadOnlyError,
    SchedulerError,
)
from engine.collector import _COLLECT_SOURCE
from engine.executor import Executor
from engine.scheduler import patch_job
from tests import app
from tests.app import jobs
from tests.waiting import wait_until

SYSTEM = "_scheduled_functions"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    """An engine without the background worker: jobs run when the test says so."""
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as handle:
        yield handle
        handle.check()


def job(engine: Engine, job_id: str) -> dict[str, Any]:
    found = engine.run(lambda ctx: ctx.db.system.get(job_id))
    assert found is not None
    return found  # type: ignore[no-any-return]


def jobs_of(engine: Engine) -> list[dict[str, Any]]:
    return engine.run(lambda ctx: ctx.db.system.query(SYSTEM).collect())  # type: ignore[no-any-return]


# -- scheduling ------------------------------------------------------------------


def test_run_after_writes_a_pending_job_in_convex_shape(engine: Engine) -> None:
    before = time.time() * 1000
    job_id = engine.mutation(jobs.later, {"text": "hi", "delay": 30.0})
    doc = job(engine, job_id)
    assert doc["name"] == "jobs:write_note"
    assert doc["args"] == [{"text": "hi"}]
    assert doc["state"] == {"kind": "pending"}
    assert "completedTime" not in doc
    assert before + 30_000 <= doc["scheduledTime"] <= time.time() * 1000 + 30_000
    assert isinstance(doc["scheduledTime"], float)
    assert [d["_id"] for d in jobs_of(engine)] == [job_id]
    assert engine.query(jobs.notes) == []


def test_run_at_takes_seconds_or_datetime(engine: Engine) -> None:
    when = time.time() + 100
    job_id = engine.mutation(jobs.at, {"text": "x", "at": when})
    assert job(engine, job_id)["scheduledTime"] == pytest.approx(when * 1000)
    moment = datetime.now(UTC) + timedelta(hours=1)
    other = engine.run(lambda ctx: ctx.scheduler.run_at(moment, jobs.write_note, {"text": "d"}))
    assert job(engine, other)["scheduledTime"] == pytest.approx(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        (-1, "must be non-negative"),
        (math.inf, "must be a finite number"),
        (math.nan, "must be a finite number"),
        (10**400, "must be a finite number"),  # an int past the floats' range
        ("1", "must be a number"),
    ],
)
def test_run_after_rejects_bad_delays(engine: Engine, delay: Any, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        engine.run(lambda ctx: ctx.scheduler.run_after(delay, jobs.write_note, {"text": "x"}))
    assert jobs_of(engine) == []


def test_run_at_must_be_within_five_years(engine: Engine) -> None:
    far = time.time() + 6 * 365 * 86400
    with pytest.raises(EngineError, match="5 years"):
        engine.run(lambda ctx: ctx.scheduler.run_at(far, jobs.write_note, {"text": "x"}))
    with pytest.raises(EngineError, match="5 years"):
        engine.run(lambda ctx: ctx.scheduler.run_at(-far, jobs.write_note, {"text": "x"}))
    with pytest.raises(EngineError, match="must be a datetime or a timestamp"):
        engine.run(lambda ctx: ctx.scheduler.run_at("soon", jobs.write_note, {"text": "x"}))
    # Times past the floats' range, or without a timestamp: SchedulerError, not Python's.
    for when in (10**400, datetime.min, datetime.min.replace(tzinfo=UTC), datetime.max):
        with pytest.raises(SchedulerError):
            engine.run(lambda ctx, w=when: ctx.scheduler.run_at(w, jobs.write_note, {"text": "x"}))
    assert jobs_of(engine) == []


def test_targets_are_mutations_or_actions_and_args_are_checked(engine: Engine) -> None:
    with pytest.raises(EngineError, match="mutation or an action"):
        engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.notes, {}))
    with pytest.raises(FunctionNotFound):
        engine.run(lambda ctx: ctx.scheduler.run_after(0, "jobs:nope", {}))
    with pytest.raises(ArgumentValidationError, match="write_note"):
        engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.write_note, {"text": 1}))
    assert jobs_of(engine) == []


def test_queries_have_no_scheduler(engine: Engine) -> None:
    with pytest.raises(AttributeError):
        engine.query(lambda ctx: ctx.scheduler)
    assert engine.run(lambda ctx: repr(ctx.scheduler)) == "<Scheduler of a mutation>"


def test_scheduling_rolls_back_with_the_mutation(engine: Engine) -> None:
    with pytest.raises(ConvexError):
        engine.mutation(jobs.later_then_fail, {"text": "x"})
    assert jobs_of(engine) == []


def test_scheduling_in_a_caught_sub_mutation_rolls_back_with_it(engine: Engine) -> None:
    kept = engine.mutation(jobs.nested_caught, {})
    assert [d["_id"] for d in jobs_of(engine)] == [kept]
    assert engine.finish_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["outer"]


def test_a_rolled_back_sub_mutation_gives_back_its_share_of_the_limit(engine: Engine) -> None:
    # Found by review: the child's 600 jobs were rolled back but still counted, so the
    # parent could not schedule 600 of its own (limit 1000 per mutation).
    engine.mutation(jobs.schedule_many_after_a_failed_child, {"n": 600})
    assert len(jobs_of(engine)) == 600
    with pytest.raises(LimitExceeded, match="Too many functions scheduled"):
        engine.mutation(jobs.schedule_many_after_a_failed_child, {"n": 1001})


def test_users_cannot_write_the_system_table(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "x", "delay": 30.0})
    with pytest.raises(ReadOnlyError):
        engine.run(lambda ctx: ctx.db.patch(job_id, {"state": {"kind": "success"}}))
    with pytest.raises(ReadOnlyError):
        engine.run(lambda ctx: ctx.db.delete(job_id))
    with pytest.raises(ReadOnlyError):
        engine.run(lambda ctx: ctx.db.insert(SYSTEM, {"name": "x"}))
    assert job(engine, job_id)["state"] == {"kind": "pending"}


def test_at_most_1000_scheduled_per_mutation(engine: Engine) -> None:
    engine.mutation(jobs.schedule_many, {"n": 1000})
    with pytest.raises(LimitExceeded, match="1000"):
        engine.mutation(jobs.schedule_many, {"n": 1001})
    assert len(jobs_of(engine)) == 1000


def test_scheduled_arguments_are_limited_to_16_mib_per_mutation(engine: Engine) -> None:
    engine.mutation(jobs.schedule_big, {"size": 900_000, "n": 2})
    with pytest.raises(LimitExceeded, match="limit: 16777216 bytes") as caught:
        engine.mutation(jobs.schedule_big, {"size": 900_000, "n": 19})
    assert caught.value.limit == "ScheduledFunctionsArgumentsTooLarge"
    assert len(jobs_of(engine)) == 2


def test_arguments_that_do_not_fit_in_one_job_say_so(engine: Engine) -> None:
    # Found by a scratch run: arguments over the 1 MiB document limit, or nested deeper
    # than a document may be, raised the document errors of an insert ("the document at $
    # measures ...", "Document is too nested ... Flatten the document"), naming no job and
    # no function: the caller of run_after wrote no document.
    from tests.app import pets

    def schedule(args: dict[str, Any]) -> Any:
        return engine.run(lambda ctx: ctx.scheduler.run_after(0, pets.create, args))

    deep: Any = "bottom"
    for _ in range(14):
        deep = {"down": deep}
    for args, limit in (
        ({"doc": {"text": "x" * (1 << 20)}}, "DocumentTooLarge"),
        ({"doc": deep}, "NestingTooDeep"),
    ):
        with pytest.raises(LimitExceeded) as caught:
            schedule(args)
        assert caught.value.limit == limit
        message = str(caught.value)
        assert "The arguments of pets:create do not fit in one scheduled job" in message
        assert "Pass the ids of stored documents" in message
    schedule({"doc": deep["down"]})  # 13 levels inside the arguments object fit
    assert len(jobs_of(engine)) == 1


def test_a_job_as_large_as_can_be_scheduled_can_be_canceled_run_and_failed(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by a scratch run: a job just under the 1 MiB document limit was stored but could
    # not take its later states: cancel raised LimitExceeded ("the document at $ measures
    # ..."), and a failure (or an action's claim) could not be written, so the executor's
    # pass raised at that job every time and the due jobs behind it never ran.
    caplog.set_level(logging.CRITICAL, logger="engine.scheduler")

    class Fits(Exception):
        pass

    def largest(ref: Any) -> int:
        """The longest payload a job of ``ref`` takes (found by bisection)."""

        def fits(n: int) -> bool:
            def body(ctx: Any) -> None:
                ctx.scheduler.run_after(0, ref, {"payload": "p" * n, "error_chars": 0})
                raise Fits  # rolls the job back

            try:
                engine.run(body)
            except Fits:
                return True
            except LimitExceeded:
                return False
            raise AssertionError("unreachable")

        low, high = 1_000_000, 1 << 20
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        return low

    def schedule(ref: Any, n: int, error_chars: int) -> str:
        args = {"payload": "p" * n, "error_chars": error_chars}
        return engine.run(lambda ctx: ctx.scheduler.run_after(0, ref, args))  # type: ignore[no-any-return]

    n, n_action = largest(jobs.fail_long), largest(jobs.fail_long_action)
    canceled = schedule(jobs.fail_long, n, 0)
    engine.run(lambda ctx: ctx.scheduler.cancel(canceled))
    assert job(engine, canceled)["state"] == {"kind": "canceled"}
    failing = schedule(jobs.fail_long, n, 20_000)
    failing_action = schedule(jobs.fail_long_action, n_action, 20_000)
    behind = engine.mutation(jobs.later, {"text": "behind", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 3
    for job_id in (failing, failing_action):
        state = job(engine, job_id)["state"]
        assert state["kind"] == "failed"
        assert state["error"].startswith("Uncaught ValueError: eeee")
        assert state["error"].endswith(" ... (truncated)")  # cut to what the job has room for
    assert job(engine, behind)["state"] == {"kind": "success"}
    assert engine.query(jobs.notes) == ["behind"]


def test_scheduled_jobs_do_not_count_against_the_functions_write_limits(engine: Engine) -> None:
    # Found by a scratch run: a job's document counted as a write of the scheduling function,
    # so a mutation that wrote what get_transaction_metrics() said remained could not
    # schedule its next batch (TooManyWrites). Convex counts writes to system tables apart
    # from the user's limits (Writes::update), as this engine does for a cancel's write.
    def metrics(ctx: Any) -> tuple[Any, Any]:
        before = ctx.meta.get_transaction_metrics()
        ctx.scheduler.run_after(60, jobs.write_note, {"text": "x" * 1000})
        return before, ctx.meta.get_transaction_metrics()

    before, after = engine.run(metrics)
    assert after["documentsWritten"] == before["documentsWritten"]
    assert after["bytesWritten"] == before["bytesWritten"]
    assert after["functionsScheduled"]["used"] == 1

    def fill_then_schedule(ctx: Any) -> tuple[str, Any]:
        left = ctx.meta.get_transaction_metrics()["documentsWritten"]["remaining"]
        for _ in range(left):
            ctx.db.insert("job_notes", {"text": "n"})
        job_id = ctx.scheduler.run_after(0, jobs.write_note, {"text": "next batch"})
        return job_id, ctx.meta.get_transaction_metrics()["documentsWritten"]

    job_id, written = engine.run(fill_then_schedule)
    assert written == {"used": 16000, "remaining": 0}
    assert job(engine, job_id)["state"] == {"kind": "pending"}


def test_the_indexes_of_the_engines_tables_may_be_queried_before_the_tables_exist(
    engine: Engine,
) -> None:
    # Found by a scratch run: with_index("by_state") on _scheduled_functions (as
    # scheduled-functions.md shows to inspect jobs) raised IndexNotFound "table does not
    # exist yet" until a first job was scheduled, and _cron_jobs' by_name / by_next_ts and
    # _cron_job_logs' by_name_and_ts did so on a database without crons. They are the
    # engine's tables, with these indexes from their first write: until then, empty.
    def read(table: str, index: str, field: str, value: Any) -> Any:
        return engine.run(
            lambda ctx: (
                ctx.db.system.query(table).with_index(index, lambda q: q.eq(field, value)).collect()
            )
        )

    assert read(SYSTEM, "by_state", "state.kind", "pending") == []
    assert read("_cron_jobs", "by_name", "name", "report") == []
    assert read("_cron_jobs", "by_next_ts", "nextTs", 0.0) == []
    assert read("_cron_job_logs", "by_name_and_ts", "name", "report") == []
    with pytest.raises(IndexNotFound):  # an index these tables do not have
        read(SYSTEM, "by_name", "name", "jobs:write_note")

    def schedule_then_list(ctx: Any) -> tuple[str, list[str]]:
        pending = ctx.db.system.query(SYSTEM).with_index(
            "by_state", lambda q: q.eq("state.kind", "pending")
        )
        job_id = ctx.scheduler.run_after(60, jobs.write_note, {"text": "x"})  # makes the table
        return job_id, [j["_id"] for j in pending.collect()]

    job_id, listed = engine.run(schedule_then_list)
    assert listed == [job_id]


def test_a_scheduled_mutation_cannot_cancel_itself(engine: Engine) -> None:
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.cancel_own_job))
    assert engine.finish_scheduled_functions() == 1
    state = job(engine, job_id)["state"]
    assert state["kind"] == "failed"
    assert "A mutation cannot cancel itself" in state["error"]


# -- running -----------------------------------------------------------------------


def test_due_mutation_runs_once_with_success_written_with_it(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "hi", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 1
    assert engine.finish_scheduled_functions() == 0
    assert engine.query(jobs.notes) == ["hi"]
    doc = job(engine, job_id)
    assert doc["state"] == {"kind": "success"}
    assert doc["completedTime"] >= doc["scheduledTime"]


def test_future_jobs_wait_unless_all_are_finished(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "later", "delay": 3600.0})
    assert engine.finish_scheduled_functions() == 0
    assert job(engine, job_id)["state"] == {"kind": "pending"}
    assert engine.finish_all_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["later"]


def test_finish_all_runs_future_mutations_at_their_time(engine: Engine) -> None:
    # convex-test's finishAllScheduledFunctions(vi.runAllTimers) runs a job with the fake
    # clock at its time: Date.now() >= scheduledTime, and what it schedules counts from there.
    first = engine.run(
        lambda ctx: ctx.scheduler.run_after(3600, jobs.expire_if_due, {"due": ctx.now + 3.6e6})
    )
    assert engine.finish_all_scheduled_functions() == 2
    assert engine.query(jobs.notes) == ["expired", "a minute later"]
    second = next(j for j in jobs_of(engine) if j["name"] == "jobs:write_note")
    assert second["scheduledTime"] == job(engine, first)["scheduledTime"] + 60_000


def test_finish_with_advance_runs_the_jobs_due_by_then(engine: Engine) -> None:
    # convex-test's vi.advanceTimersByTime(5000) leaves a job due in 10 s pending; 11 s runs
    # it, at its time, and what it schedules within the window runs too.
    first = engine.run(
        lambda ctx: ctx.scheduler.run_after(10, jobs.expire_if_due, {"due": ctx.now + 1e4})
    )
    assert engine.finish_scheduled_functions(advance=5) == 0
    assert job(engine, first)["state"] == {"kind": "pending"}
    assert engine.finish_scheduled_functions(advance=11) == 1  # its note comes 60 s later
    assert engine.query(jobs.notes) == ["expired"]
    assert engine.finish_scheduled_functions(advance=timedelta(seconds=75)) == 1
    assert engine.query(jobs.notes) == ["expired", "a minute later"]
    for bad in (-1, math.inf, math.nan, "5", True):
        with pytest.raises(SchedulerError, match="advance"):
            engine.finish_scheduled_functions(advance=bad)  # type: ignore[arg-type]


def test_past_run_at_runs_right_away(engine: Engine) -> None:
    engine.mutation(jobs.at, {"text": "past", "at": time.time() - 3600})
    assert engine.finish_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["past"]


def test_identity_is_not_propagated(engine: Engine) -> None:
    engine.mutation(jobs.later, {"text": "who", "delay": 0.0}, auth=object())
    engine.finish_scheduled_functions()
    rows = engine.run(lambda ctx: ctx.db.query("job_notes").collect())
    assert [r["identity"] for r in rows] == [None]


def test_failed_mutation_rolls_back_and_records_the_error(engine: Engine) -> None:
    job_id = engine.mutation(jobs.schedule_failing, {})
    assert engine.finish_scheduled_functions() == 1
    doc = job(engine, job_id)
    assert doc["state"]["kind"] == "failed"
    assert "job failed on purpose" in doc["state"]["error"]
    assert "completedTime" in doc
    assert engine.query(jobs.notes) == []


@pytest.mark.parametrize("target", [jobs.fail_undecodable, jobs.fail_undecodable_action])
def test_an_error_holding_a_lone_surrogate_is_recorded_escaped(engine: Engine, target: Any) -> None:
    # Found by review: an error message with a lone surrogate (a file name that is not
    # UTF-8, through os.fsdecode) is no Convex string, so the failure could not be
    # written: the mutation's job stayed pending and finish_scheduled_functions raised
    # ValidationError; the action's job stayed inProgress.
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, target, {}))
    assert engine.finish_scheduled_functions(timeout=5) == 1
    assert job(engine, job_id)["state"] == {
        "kind": "failed",
        "error": "Uncaught ValueError: cannot read caf\\udce9.txt",
    }
    assert engine.query(jobs.notes) == []


def test_scheduled_action_runs_and_succeeds(engine: Engine) -> None:
    job_id = engine.mutation(jobs.schedule_action, {"text": "a"})
    assert engine.finish_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["action:a"]
    assert job(engine, job_id)["state"] == {"kind": "success"}


def test_failing_action_is_marked_failed(engine: Engine) -> None:
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.failing_action))
    assert engine.finish_scheduled_functions() == 1
    state = job(engine, job_id)["state"]
    assert state["kind"] == "failed"
    assert "action failed on purpose" in state["error"]


def test_a_failing_job_is_logged_with_its_traceback(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by a first-time user: a failed job was silent, and its state kept only the
    # message ("Uncaught RuntimeError: ..."): the traceback was lost.
    caplog.set_level(logging.WARNING, logger="engine.scheduler")
    crash_m = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.crashing_mutation))
    crash_a = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.crashing_action))
    expected = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.failing_action))
    assert engine.finish_scheduled_functions() == 3
    records = {r.getMessage(): r for r in caplog.records if r.name == "engine.scheduler"}
    assert len(records) == 3, list(records)
    for kind, name, job_id in [
        ("mutation", "jobs:crashing_mutation", crash_m),
        ("action", "jobs:crashing_action", crash_a),
    ]:
        record = records[f"Scheduled {kind} {name} (job {job_id}) failed"]
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert f"{kind} crashed on purpose" in caplog.text
        assert "raise RuntimeError" in caplog.text  # the traceback, down to the raise
    convex = records[
        f"Scheduled action jobs:failing_action (job {expected}) failed: action failed on purpose"
    ]
    assert convex.levelno == logging.WARNING and convex.exc_info is None
    assert job(engine, crash_m)["state"]["error"] == (
        "Uncaught RuntimeError: mutation crashed on purpose"
    )


def test_scheduling_from_an_action_survives_its_failure(engine: Engine) -> None:
    with pytest.raises(ConvexError):
        engine.action(jobs.action_schedules_then_fails, {"text": "kept"})
    assert engine.finish_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["kept"]


def test_an_action_may_await_its_scheduler_calls(engine: Engine) -> None:
    # Convex's actions write `await ctx.scheduler.runAfter(...)`; the plain call works too.
    kept, dropped, plain = engine.action(jobs.action_awaits_scheduler, {"text": "awaited"})
    assert all(type(job_id) is str for job_id in (kept, dropped, plain))
    assert job(engine, kept)["state"] == {"kind": "pending"}
    assert job(engine, dropped)["state"] == job(engine, plain)["state"] == {"kind": "canceled"}
    assert engine.finish_all_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["awaited"]
    returned = engine.action(jobs.action_returns_its_job)
    assert type(returned) is str and job(engine, returned)["state"] == {"kind": "pending"}
    scheduled = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.action_returns_its_job))
    assert engine.finish_scheduled_functions() == 1
    assert job(engine, scheduled)["state"] == {"kind": "success"}


# -- cancel ----------------------------------------------------------------------------


def test_cancel_pending_never_runs_and_cancel_again_is_a_no_op(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "no", "delay": 0.0})
    engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
    doc = job(engine, job_id)
    assert doc["state"] == {"kind": "canceled"}
    assert "completedTime" in doc
    assert engine.finish_all_scheduled_functions() == 0
    assert engine.query(jobs.notes) == []
    engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
    assert job(engine, job_id)["state"] == {"kind": "canceled"}


def test_cancel_of_a_completed_job_is_a_no_op(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
    engine.finish_scheduled_functions()
    engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
    assert job(engine, job_id)["state"] == {"kind": "success"}


def test_cancel_rolls_back_with_the_mutation(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "yes", "delay": 0.0})

    def cancel_then_fail(ctx: Any) -> None:
        ctx.scheduler.cancel(job_id)
        raise ConvexError("no")

    with pytest.raises(ConvexError):
        engine.run(cancel_then_fail)
    assert engine.finish_scheduled_functions() == 1
    assert engine.query(jobs.notes) == ["yes"]


def test_cancel_rejects_ids_of_other_tables(engine: Engine) -> None:
    note = engine.run(lambda ctx: ctx.db.insert("job_notes", {"text": "x"}))
    with pytest.raises(InvalidId, match="Invalid scheduled function ID"):
        engine.run(lambda ctx: ctx.scheduler.cancel(note))
    for wrong in (None, 123, b"x"):  # not "A mutation cannot cancel itself" for None
        with pytest.raises(InvalidId, match="Invalid scheduled function ID"):
            engine.run(lambda ctx, w=wrong: ctx.scheduler.cancel(w))


def test_cancel_takes_a_job_id_held_by_a_str_enum_member(engine: Engine) -> None:
    """Ids held by a str subclass are the ids they hold (as db.get takes them); cancel
    read str(id), which for a (str, Enum) member is its name ("Held.JOB"): InvalidId."""
    import enum

    job_id = engine.mutation(jobs.later, {"text": "no", "delay": 0.0})

    class Held(str, enum.Enum):  # noqa: UP042 (on purpose: str() is "Held.JOB")
        JOB = job_id

    engine.run(lambda ctx: ctx.scheduler.cancel(Held.JOB))
    assert job(engine, job_id)["state"] == {"kind": "canceled"}


# -- the background worker ---------------------------------------------------------------


def test_worker_runs_a_job_within_milliseconds_of_the_commit(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        job_id = engine.mutation(jobs.later, {"text": "fast", "delay": 0.0})
        took = wait_until(lambda: job(engine, job_id)["state"]["kind"] == "success")
        assert took < 0.25  # the commit wakes the worker; its poll tick is much longer
        assert engine.query(jobs.notes) == ["fast"]


def test_worker_runs_a_delayed_job_on_time(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        job_id = engine.mutation(jobs.later, {"text": "soon", "delay": 0.05})
        took = wait_until(lambda: job(engine, job_id)["state"]["kind"] == "success")
        assert 0.03 <= took < 0.4


def test_worker_picks_up_jobs_of_another_handle(db_path: Path) -> None:
    with (
        Engine.open(db_path, functions=app, durability="none") as runner,
        Engine.open(db_path, functions=app, durability="none", scheduler=False) as writer,
    ):
        job_id = writer.mutation(jobs.schedule_action, {"text": "other"})
        wait_until(lambda: job(runner, job_id)["state"]["kind"] == "success")
        assert runner.query(jobs.notes) == ["action:other"]


def test_close_stops_the_worker_and_pending_jobs_survive(db_path: Path) -> None:
    engine = Engine.open(db_path, functions=app, durability="none")
    job_id = engine.mutation(jobs.later, {"text": "x", "delay": 3600.0})
    engine.close()
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        assert job(again, job_id)["state"] == {"kind": "pending"}
        assert again.finish_all_scheduled_functions() == 1


def test_close_waits_for_a_running_action(db_path: Path) -> None:
    engine = Engine.open(db_path, functions=app, durability="none")
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 0.2}))
    wait_until(lambda: job(engine, job_id)["state"]["kind"] == "inProgress")
    engine.close()
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        assert job(again, job_id)["state"] == {"kind": "success"}
        assert again.query(jobs.notes) == ["slow done"]


def test_orphaned_in_progress_action_fails_on_open(db_path: Path) -> None:
    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    job_id = engine.run(
        lambda ctx: ctx.scheduler.run_after(0, jobs.note_from_action, {"text": "x"})
    )
    # What a killed executor leaves behind: the job claimed, the action never finished.
    engine.run(lambda ctx: patch_job(ctx._txn, job_id, {"state": {"kind": "inProgress"}}))
    engine.close()
    with Engine.open(db_path, functions=app, durability="none") as again:
        state = job(again, job_id)["state"]
        assert state == {"kind": "failed", "error": "Transient error while executing action"}


def test_in_progress_action_of_a_live_executor_is_left_alone(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()  # the action runs until the second engine has looked
    monkeypatch.setattr(jobs, "ACTION_GATE", gate)
    with Engine.open(db_path, functions=app, durability="none") as first:
        try:
            job_id = first.run(lambda ctx: ctx.scheduler.run_after(0, jobs.gated_action, {}))
            wait_until(lambda: job(first, job_id)["state"]["kind"] == "inProgress")
            with Engine.open(db_path, functions=app, durability="none") as second:
                assert job(second, job_id)["state"] == {"kind": "inProgress"}
        finally:
            gate.set()  # also when it failed: close() then need not wait for the action
        wait_until(lambda: job(first, job_id)["state"]["kind"] == "success")


def test_cancel_in_progress_action_cancels_what_it_schedules(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.cancel_self_then_schedule))
        wait_until(lambda: "started" in engine.query(jobs.notes))
        engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
        engine.run(lambda ctx: ctx.db.insert("job_notes", {"text": "go"}))
        wait_until(lambda: len(jobs_of(engine)) == 2)
        engine.finish_scheduled_functions()
        child = next(d for d in jobs_of(engine) if d["_id"] != job_id)
        assert child["state"] == {"kind": "canceled"}
        assert job(engine, job_id)["state"] == {"kind": "canceled"}
        assert "child" not in engine.query(jobs.notes)


def test_close_cancels_an_action_that_outlives_the_shutdown_timeout(db_path: Path) -> None:
    engine = Engine.open(db_path, functions=app, durability="none")
    assert engine._executor is not None
    engine._executor.shutdown_timeout = 0.05
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 30.0}))
    wait_until(lambda: job(engine, job_id)["state"]["kind"] == "inProgress")
    start = time.monotonic()
    engine.close()
    assert time.monotonic() - start < 2.0
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        state = job(again, job_id)["state"]
        assert state == {"kind": "failed", "error": "Transient error while executing action"}
        assert again.query(jobs.notes) == []


@pytest.mark.parametrize("through_a_thread", [False, True])
def test_a_scheduled_action_closing_its_own_engine_is_refused(
    engine: Engine, through_a_thread: bool
) -> None:
    # Found by hunt: close() waited for the action calling it (shutdown_timeout, then 5 s
    # more), stalling every action on the loop, then cancelled it as a transient failure.
    # Found by review: through asyncio.to_thread (another thread) it still did.
    assert engine._executor is not None
    engine._executor.shutdown_timeout = 0.2  # keeps the stall short if the refusal breaks
    jobs.ENGINES_TO_CLOSE[:] = [engine]
    args = {"through_a_thread": through_a_thread}
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.close_own_engine, args))
    assert engine.finish_scheduled_functions() == 1
    state = job(engine, job_id)["state"]
    assert state["kind"] == "failed"
    assert "close() was called from inside a scheduled action" in state["error"]
    assert engine.query(jobs.notes) == []  # still open


def test_a_scheduled_action_calling_finish_on_its_own_engine_is_refused(engine: Engine) -> None:
    # Found by hunt: finish_*() waits until no job is in progress, the calling action's own
    # job included, so it waited out its whole timeout, then blamed "jobs in progress in
    # another executor".
    jobs.ENGINES_TO_FINISH[:] = [engine]
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.finish_from_own_action, {}))
    start = time.monotonic()
    assert engine.finish_scheduled_functions() == 1
    assert time.monotonic() - start < 10.0  # not the inner finish's 20 s timeout
    state = job(engine, job_id)["state"]
    assert state["kind"] == "failed"
    assert "called from inside a scheduled action" in state["error"]


def test_a_close_interrupted_while_it_waits_for_actions_still_releases_the_folder(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by hunt: Ctrl-C while close() waited for running scheduled actions left the
    # handle marked closed with the folder still held (and its HTTP servers serving):
    # a second close() did nothing, so the process kept it open for good.
    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    assert engine._executor is not None

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine._executor, "stop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.close()
    # Released: a handle of this process with another durability may open it again.
    with Engine.open(db_path, functions=app, durability="full", scheduler=False) as again:
        assert again.query(jobs.notes) == []


def test_finish_refuses_to_run_on_an_event_loop_thread(engine: Engine) -> None:
    import asyncio

    async def inside() -> None:
        with pytest.raises(EngineError, match="asyncio.to_thread"):
            engine.finish_scheduled_functions()
        engine.mutation(jobs.later, {"text": "t", "delay": 0.0})
        assert await asyncio.to_thread(engine.finish_scheduled_functions) == 1

    asyncio.run(inside())


def test_engine_without_functions_has_no_executor(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as bare:
        assert bare._executor is None
        with pytest.raises(EngineError, match="no functions"):
            bare.finish_scheduled_functions()


def test_subscription_sees_the_job_finish(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        with engine.subscribe(jobs.job_summary, {}) as sub:
            engine.mutation(jobs.schedule_bumps, {"keys": ["s"]})
            for value in sub:
                if value["states"] == {"success": 2}:
                    break
        assert engine.query(jobs.job_summary)["runs"] == {"s": 1, "action:s": 1}


def test_subscriptions_reflect_what_finish_ran_when_it_returns(engine: Engine) -> None:
    # Found by review: engine.mutation() and engine.run() return once this process's
    # subscriptions reflect their commit (read-your-writes), but finish_*() returned as
    # soon as the jobs had committed, so a test reading sub.value right after it saw
    # the state before the jobs ran.
    with engine.subscribe(jobs.slow_notes, {}) as sub:
        engine.mutation(jobs.later, {"text": "soon", "delay": 0.0})
        engine.mutation(jobs.schedule_action, {"text": "a"})
        assert engine.finish_scheduled_functions() == 2  # a mutation's job, an action's
        assert sorted(sub.value) == ["action:a", "soon"]
        engine.mutation(jobs.later, {"text": "later", "delay": 3600.0})
        assert engine.finish_all_scheduled_functions() == 1
        assert sorted(sub.value) == ["action:a", "later", "soon"]


def test_subscriptions_reflect_the_jobs_finish_waited_for_beside_the_worker(
    db_path: Path,
) -> None:
    # Found by hunt: finish_*() caught subscriptions up only when it ran a job itself, so
    # after waiting for an action the background worker ran (finish returned 0: "no job
    # is due or running anywhere"), sub.value still showed the state before it.
    with (
        Engine.open(db_path, functions=app, durability="none") as engine,
        engine.subscribe(jobs.slow_notes, {}) as sub,
    ):
        job_id = engine.run(
            lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 0.2})
        )
        wait_until(lambda: job(engine, job_id)["state"]["kind"] == "inProgress")
        assert engine.finish_scheduled_functions() == 0  # the worker ran it
        assert sub.value == ["slow done"]


def test_finish_waits_for_a_canceled_action_that_still_runs(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by hunt: a canceled action keeps running (Convex), but its job is no longer
    # inProgress, so finish_*() returned at once ("no job is due or running anywhere")
    # while the action went on writing.
    # The action runs until finish_*() has found something still running (its _busy
    # said so); a finish that does not wait for it returns while the note is unwritten.
    gate = threading.Event()
    monkeypatch.setattr(jobs, "ACTION_GATE", gate)
    with Engine.open(db_path, functions=app, durability="none") as engine:
        assert engine._executor is not None
        real_busy = engine._executor._busy

        def busy(*args: Any, **kwargs: Any) -> bool:
            found = real_busy(*args, **kwargs)
            if found:
                gate.set()
            return found

        monkeypatch.setattr(engine._executor, "_busy", busy)
        try:
            job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.gated_action, {}))
            wait_until(lambda: job(engine, job_id)["state"]["kind"] == "inProgress")
            engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
            assert engine.finish_scheduled_functions() == 0
            assert engine.query(jobs.notes) == ["gated done"]
            assert job(engine, job_id)["state"]["kind"] == "canceled"
        finally:
            gate.set()  # also when it failed: close() then need not wait for the action


def test_subscriptions_reflect_what_an_action_committed_when_it_returns(engine: Engine) -> None:
    # Found by review: Engine.action() returned as soon as its inner mutations had
    # committed, unlike mutation(), run() and finish_*(), so sub.value read right after
    # it could miss them; also when the action raised after writing.
    with engine.subscribe(jobs.slow_notes, {}) as sub:
        assert engine.action(jobs.note_now, {"text": "a", "fail": False}) == "a"
        assert sub.value == ["action:a"]
        with pytest.raises(ConvexError, match="failed after writing"):
            engine.action(jobs.note_now, {"text": "b", "fail": True})
        assert sorted(sub.value) == ["action:a", "action:b"]
        assert asyncio.run(engine.aaction(jobs.note_now, {"text": "c", "fail": False})) == "c"
        assert sorted(sub.value) == ["action:a", "action:b", "action:c"]


def test_finish_stops_a_job_that_reschedules_itself(engine: Engine) -> None:
    engine.run(
        lambda ctx: ctx.scheduler.run_after(3600, jobs.reschedule_forever, {"delay": 3600.0})
    )
    with pytest.raises(SchedulerError, match="after 5 passes"):
        engine.finish_all_scheduled_functions(max_iterations=5)
    engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.reschedule_forever, {"delay": 0.0}))
    with pytest.raises(SchedulerError, match="after 0.2 s"):
        engine.finish_scheduled_functions(timeout=0.2)


def test_scheduled_mutation_retries_conflicts_past_the_retry_budget(engine: Engine) -> None:
    """Exactly once: a conflict is never a failure for a scheduled mutation."""
    import threading

    engine._db.retry.retries = 0  # every conflict raises at once
    counter = engine.run(lambda ctx: ctx.db.insert("job_counter", {"n": 0}))
    job_id = engine.run(
        lambda ctx: ctx.scheduler.run_after(0, jobs.increment_shared, {"pause": 0.02})
    )

    def add_1000(ctx: Any) -> None:
        ctx.db.patch(counter, {"n": ctx.db.get(counter)["n"] + 1000})

    def hammer() -> None:  # ten writes to the row the job reads, while it pauses
        for _ in range(10):
            engine.run(add_1000)
            time.sleep(0.005)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        assert engine.finish_scheduled_functions() == 1
    finally:
        thread.join()
    assert job(engine, job_id)["state"] == {"kind": "success"}
    assert engine.query(jobs.shared_count) == 10_001


def test_jobs_of_functions_this_engine_lacks_are_left_pending(
    engine: Engine, db_path: Path
) -> None:
    from tests.app import notes

    job_id = engine.mutation(jobs.later, {"text": "elsewhere", "delay": 0.0})
    with Engine.open(db_path, functions=notes, durability="none") as other:
        assert other.finish_all_scheduled_functions() == 0
        time.sleep(0.05)  # its background worker skips the job too
        assert job(other, job_id)["state"] == {"kind": "pending"}
    assert engine.finish_scheduled_functions() == 1


def test_jobs_survive_schema_changes(db_path: Path) -> None:
    from engine import define_schema, define_table, v

    first = define_schema(
        {"job_notes": define_table({"text": v.string()})}, schema_validation=False
    )
    second = define_schema(
        {"job_notes": define_table({"text": v.string()}).index("by_text", ["text"])},
        schema_validation=False,
    )
    with Engine.open(db_path, functions=app, schema=first, scheduler=False) as engine:
        job_id = engine.mutation(jobs.later, {"text": "kept", "delay": 0.0})
    with Engine.open(db_path, functions=app, schema=second, scheduler=False) as engine:
        assert engine.finish_scheduled_functions() == 1
        assert job(engine, job_id)["state"] == {"kind": "success"}
        engine.check()


def test_cancel_in_progress_action_cancels_what_its_functions_schedule(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        job_id = engine.run(
            lambda ctx: ctx.scheduler.run_after(0, jobs.cancel_self_then_schedule_via_functions)
        )
        wait_until(lambda: "started" in engine.query(jobs.notes))
        engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
        engine.run(lambda ctx: ctx.db.insert("job_notes", {"text": "go"}))
        wait_until(lambda: len(jobs_of(engine)) == 3)
        engine.finish_scheduled_functions()
        children = [d for d in jobs_of(engine) if d["_id"] != job_id]
        assert [d["state"] for d in children] == [{"kind": "canceled"}] * 2
        assert engine.query(jobs.notes) == ["started", "go"]


def test_a_mutation_called_by_a_scheduled_action_cannot_cancel_its_job(engine: Engine) -> None:
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.cancel_own_job_via_mutation))
    assert engine.finish_scheduled_functions() == 1
    assert job(engine, job_id)["state"] == {"kind": "success"}
    assert any("A mutation cannot cancel itself" in t for t in engine.query(jobs.notes))


def test_check_counts_jobs_and_finds_broken_ones(engine: Engine) -> None:
    done = engine.mutation(jobs.later, {"text": "a", "delay": 0.0})
    engine.finish_scheduled_functions()
    pending = engine.mutation(jobs.later, {"text": "b", "delay": 60.0})
    assert engine.check()["scheduled_functions"] == {"success": 1, "pending": 1}
    # A mutation's job is never stored inProgress; a final job always has completedTime.
    engine.run(lambda ctx: patch_job(ctx._txn, pending, {"state": {"kind": "inProgress"}}))
    engine.run(lambda ctx: patch_job(ctx._txn, done, {"completedTime": UNSET}))
    with pytest.raises(CorruptionError) as caught:
        engine.check()
    problems = "\n".join(caught.value.problems)
    assert "a mutation's job is stored inProgress" in problems
    assert "completedTime must be set exactly when a job is final" in problems
    # Put back, so the fixture's own check passes.
    engine.run(lambda ctx: patch_job(ctx._txn, pending, {"state": {"kind": "pending"}}))
    engine.run(lambda ctx: patch_job(ctx._txn, done, {"completedTime": 1.0}))


def test_thousands_of_orphans_are_failed_in_several_transactions(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More orphans than one transaction may touch: open still succeeds and fails them all."""
    from engine import readset, schedulerlock

    handle = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    ids = handle.run(
        lambda ctx: [
            ctx.scheduler.run_after(0, jobs.note_from_action, {"text": "x"}) for _ in range(120)
        ]
    )
    for start in range(0, len(ids), 20):  # what a killed executor leaves behind
        handle.run(
            lambda ctx, part=ids[start : start + 20]: [
                patch_job(ctx._txn, i, {"state": {"kind": "inProgress"}}) for i in part
            ]
        )
    handle.close()
    # Scaled down: a transaction may read 100 ranges, recovery fails 30 jobs per transaction.
    monkeypatch.setattr(readset, "MAX_READ_RANGES", 100)
    monkeypatch.setattr(schedulerlock, "_ORPHAN_BATCH", 30)
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        monkeypatch.undo()
        states = {j["state"].get("error") for j in jobs_of(again)}
        assert states == {"Transient error while executing action"}
        again.check()


def test_the_worker_runs_a_bounded_number_of_actions_at_once(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        assert engine._executor is not None
        engine._executor.max_running_actions = 2
        engine.run(
            lambda ctx: [
                ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 0.05}) for _ in range(6)
            ]
        )
        most = 0

        def done() -> bool:
            nonlocal most
            kinds = [j["state"]["kind"] for j in jobs_of(engine)]
            most = max(most, kinds.count("inProgress"))
            return kinds == ["success"] * 6

        wait_until(done)
        assert most == 2
        assert engine.query(jobs.notes) == ["slow done"] * 6


def test_jobs_of_unknown_functions_do_not_starve_the_jobs_behind_them(
    engine: Engine, db_path: Path
) -> None:
    """More due jobs of a function this engine lacks than a page: the rest still run."""

    def schedule_gone(ctx: Any) -> None:
        for _ in range(300):  # a renamed function's, or another process package's
            job_id = ctx.scheduler.run_after(0, jobs.write_note, {"text": "gone"})
            patch_job(ctx._txn, job_id, {"name": "gone:function"})

    engine.run(schedule_gone)
    engine.mutation(jobs.later, {"text": "behind", "delay": 0.0})
    assert engine.finish_scheduled_functions(timeout=2) == 1
    assert engine.query(jobs.notes) == ["behind"]
    with Engine.open(db_path, functions=app, durability="none") as worker:
        job_id = worker.mutation(jobs.later, {"text": "worker", "delay": 0.0})
        wait_until(lambda: job(worker, job_id)["state"]["kind"] == "success")
    report = engine.check()
    assert report["scheduled_functions"] == {"pending": 300, "success": 2}
    assert report["scheduled_functions_unknown"] == {"gone:function": 300}


def test_a_system_error_around_a_scheduled_mutation_is_retried_not_its_failure(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient storage error at commit: the job stays pending and runs once."""
    from engine import StorageError

    job_id = engine.mutation(jobs.later, {"text": "once", "delay": 0.0})
    storage = engine._db.storage
    real_write = storage.write
    faults = [StorageError("LMDB error: Input/output error (simulated)")]

    def flaky_write(fn: Any) -> Any:
        if faults:
            raise faults.pop()
        return real_write(fn)

    monkeypatch.setattr(storage, "write", flaky_write)
    assert engine.finish_scheduled_functions(timeout=5) == 1
    assert job(engine, job_id)["state"] == {"kind": "success"}
    assert engine.query(jobs.notes) == ["once"]
    # The function's own errors are still the job's failure (not retried).
    failing = engine.mutation(jobs.schedule_failing, {})
    assert engine.finish_scheduled_functions() == 1
    assert job(engine, failing)["state"]["kind"] == "failed"


def test_a_system_error_recording_an_actions_outcome_is_retried(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient storage error when the action's outcome is written: written again."""
    # Found by hunt: the mutation path retried such errors, but the action's outcome was
    # written once: the error escaped finish_*() and the job stayed inProgress, with
    # nothing running it, so every later finish_*() waited for it until its timeout.
    from engine import StorageError

    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.failing_action, {}))
    storage = engine._db.storage
    real_write = storage.write
    writes = [0]

    def flaky_write(fn: Any) -> Any:
        writes[0] += 1
        if writes[0] == 2:  # the claim is the first write, the outcome the second
            raise StorageError("LMDB error: Input/output error (simulated)")
        return real_write(fn)

    monkeypatch.setattr(storage, "write", flaky_write)
    assert engine.finish_scheduled_functions(timeout=2) == 1
    assert job(engine, job_id)["state"] == {
        "kind": "failed",
        "error": "Uncaught ConvexError: action failed on purpose",
    }
    assert writes[0] == 3


def test_a_job_raising_system_exit_or_keyboard_interrupt_fails_and_the_worker_survives(
    db_path: Path,
) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        exits = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.exit_mutation))
        interrupts = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.interrupt_action))
        wait_until(lambda: job(engine, interrupts)["state"]["kind"] == "failed", 2)
        after = engine.mutation(jobs.schedule_action, {"text": "after"})
        wait_until(lambda: job(engine, after)["state"]["kind"] == "success", 2)
        assert job(engine, exits)["state"] == {"kind": "failed", "error": "Uncaught SystemExit: 3"}
        assert job(engine, interrupts)["state"] == {
            "kind": "failed",
            "error": "Uncaught KeyboardInterrupt: ",
        }
        assert engine.query(jobs.notes) == ["action:after"]


def test_a_job_failing_with_an_error_whose_str_raises_is_recorded_failed(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by review: the failure's text was str(error), so an error whose __str__
    # raised escaped the recording: the mutation's job stayed pending (and ran again
    # on every pass), the action's inProgress for good, and finish_* raised it.
    failing = [
        engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.fail_unprintably)),
        engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.fail_unprintably_action)),
    ]
    with caplog.at_level(logging.CRITICAL, logger="engine.scheduler"):
        assert engine.finish_scheduled_functions(timeout=5) == 2
    for job_id in failing:
        assert job(engine, job_id)["state"] == {
            "kind": "failed",
            "error": "Uncaught UnprintableError: <exception str() failed>",
        }
    assert engine.query(jobs.notes) == []
    assert engine.finish_scheduled_functions(timeout=5) == 0  # nothing left to run


def test_finish_records_a_keyboard_interrupt_then_stops(engine: Engine) -> None:
    interrupts = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.interrupt_action))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during finish_* still stops the host
        engine.finish_scheduled_functions()
    assert job(engine, interrupts)["state"]["error"] == "Uncaught KeyboardInterrupt: "
    exits = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.exit_mutation))
    assert engine.finish_scheduled_functions() == 1  # SystemExit: the job's failure only
    assert job(engine, exits)["state"]["error"] == "Uncaught SystemExit: 3"


def test_a_job_whose_function_became_a_query_fails_with_convexs_error(engine: Engine) -> None:
    def schedule_then_change(ctx: Any) -> str:
        job_id: str = ctx.scheduler.run_after(0, jobs.write_note, {"text": "x"})
        patch_job(ctx._txn, job_id, {"name": "jobs:notes", "args": [{}]})  # now a query
        return job_id

    job_id = engine.run(schedule_then_change)
    assert engine.finish_scheduled_functions() == 1
    assert job(engine, job_id)["state"] == {
        "kind": "failed",
        "error": "Unsupported function type query in scheduler: only Mutation and Action can "
        "be scheduled",
    }


def test_finish_raced_by_close_raises_the_closed_engine_error(db_path: Path) -> None:
    import threading

    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    engine.mutation(jobs.schedule_increments, {"n": 5, "pause": 0.05})
    raised: list[BaseException] = []

    def finish() -> None:
        try:
            engine.finish_all_scheduled_functions()
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=finish)
    thread.start()
    time.sleep(0.03)
    engine.close()
    thread.join(5)
    assert len(raised) == 1 and type(raised[0]) is EngineError, raised
    assert "This engine is closed" in str(raised[0])
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        states = [j["state"]["kind"] for j in jobs_of(again)]
        assert again.query(jobs.shared_count) == states.count("success")  # none half-applied
        again.check()


def test_finish_done_in_time_does_not_raise_the_timeout(engine: Engine) -> None:
    engine.mutation(jobs.schedule_increments, {"n": 1, "pause": 0.15})
    assert engine.finish_scheduled_functions(timeout=0.05) == 1  # ran past it, nothing left
    assert engine.finish_scheduled_functions(timeout=0) == 0
    assert engine.finish_all_scheduled_functions(timeout=0, max_iterations=1) == 0


def test_finish_raises_its_timeout_while_an_action_it_runs_is_still_running(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a scratch run: with scheduler=False, finish_* waited for the action it had
    # started with no bound, so an action that never ended hung the caller whatever its
    # timeout (beside the background worker the same call raised at the timeout).
    gate = threading.Event()
    monkeypatch.setattr(jobs, "ACTION_GATE", gate)
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.gated_action, {}))
    began = time.monotonic()
    try:
        with pytest.raises(SchedulerError, match=r"still due or running after 0\.2 s"):
            engine.finish_scheduled_functions(timeout=0.2)
        assert time.monotonic() - began < 5  # the gate holds the action for 10 s
        assert job(engine, job_id)["state"] == {"kind": "inProgress"}  # it runs on
        with pytest.raises(SchedulerError, match=r"still due or running after 0\.1 s"):
            engine.finish_all_scheduled_functions(timeout=0.1)  # waits for it, as long
    finally:
        gate.set()
    assert engine.finish_scheduled_functions() == 0  # ran nothing: waited for it to end
    assert job(engine, job_id)["state"] == {"kind": "success"}
    assert engine.query(jobs.notes) == ["gated done"]


def test_finish_counts_an_action_that_ends_as_its_wait_times_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: finish_* waited with future.result(timeout) and, on its
    # TimeoutError, re-raised it when the future was done by then ("raised by the task
    # itself"): an action ending between the two raised a bare TimeoutError from
    # finish_scheduled_functions. The race is made certain here.
    import concurrent.futures

    class EndsAsTheWaitTimesOut(concurrent.futures.Future[Any]):
        def __init__(self, inner: concurrent.futures.Future[Any]) -> None:
            super().__init__()
            self.inner = inner
            inner.add_done_callback(lambda done: self.set_result(done.result()))

        def result(self, timeout: float | None = None) -> Any:
            if timeout is not None:
                self.inner.result()  # the action ends ...
                raise concurrent.futures.TimeoutError  # ... as the wait times out
            return super().result()

    executor = engine._executor
    assert executor is not None
    claim = executor._claim_and_start

    def claimed(run: Any, function: Any) -> Any:
        future = claim(run, function)
        return None if future is None else EndsAsTheWaitTimesOut(future)

    monkeypatch.setattr(executor, "_claim_and_start", claimed)
    job_id = engine.run(
        lambda ctx: ctx.scheduler.run_after(0, jobs.note_from_action, {"text": "a"})
    )
    assert engine.finish_scheduled_functions(timeout=5) == 1
    assert job(engine, job_id)["state"] == {"kind": "success"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": float("nan")},  # never past it: a job left in progress looped for ever
        {"timeout": -1},
        {"timeout": "5"},
        {"timeout": None},
        {"timeout": True},
        {"max_iterations": 0},
        {"max_iterations": -3},
        {"max_iterations": 2.5},
        {"max_iterations": "10"},
    ],
)
def test_finish_refuses_a_bad_timeout_or_max_iterations(
    engine: Engine, kwargs: dict[str, Any]
) -> None:
    # Found by review: these reached `time.monotonic() + timeout` (a raw TypeError) or were
    # taken as given (NaN never times out; max_iterations=0 raised after one pass).
    name = next(iter(kwargs))
    with pytest.raises(SchedulerError, match=rf"{name}=\.\.\.\) must be"):
        engine.finish_all_scheduled_functions(**kwargs)
    if name == "timeout":
        with pytest.raises(SchedulerError, match=r"timeout=\.\.\.\) must be"):
            engine.finish_scheduled_functions(**kwargs)


def test_due_jobs_whose_arguments_pass_16_mib_together_all_run(engine: Engine) -> None:
    # Found by review: the executor read due jobs 256 per page with a function's read
    # limits, so 20 due jobs of 900 KB (each within the limits) stopped every pass with
    # "Too many bytes read" and no job ran again.
    for _ in range(10):
        engine.mutation(jobs.schedule_big_now, {"size": 900_000, "n": 2})
    assert engine.finish_scheduled_functions() == 20

    def pages(read: Any) -> list[Any]:  # 8 per query: 20 of them pass 16 MiB of reads
        rows, cursor, done = [], None, False
        while not done:
            page = engine.run(lambda ctx: read(ctx).paginate({"numItems": 8, "cursor": cursor}))
            rows += page["page"]
            cursor, done = page["continueCursor"], page["isDone"]
        return rows

    assert len(pages(lambda ctx: ctx.db.query("job_notes"))) == 20
    states = [j["state"]["kind"] for j in pages(lambda ctx: ctx.db.system.query(SYSTEM))]
    assert states == ["success"] * 20


def test_a_scheduled_mutation_may_write_up_to_the_limit(engine: Engine) -> None:
    # Found by review: the job's own state writes (inProgress, success) counted against
    # the function's 16,000 writes; a job writing 15,999 documents (allowed when called
    # directly) failed its success write as a system error and was re-run forever.
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.write_many, {"n": 15_999}))
    assert engine.finish_scheduled_functions(timeout=30) == 1
    assert job(engine, job_id)["state"] == {"kind": "success"}
    assert engine.query(lambda ctx: len(ctx.db.query("many").collect())) == 15_999
    over = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.write_many, {"n": 16_001}))
    assert engine.finish_scheduled_functions(timeout=30) == 1
    state = job(engine, over)["state"]
    assert state["kind"] == "failed" and "Too many documents written" in state["error"]


def test_orphaned_actions_with_large_arguments_are_failed_at_open(db_path: Path) -> None:
    # Found by review: the orphans were read 100 per transaction with a function's read
    # limits: 50 orphaned jobs of 400 KB made Engine.open(functions=...) raise LimitExceeded.
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        ids = engine.run(
            lambda ctx: [
                ctx.scheduler.run_after(0, jobs.slow_big_action, {"seconds": 0.0, "size": i})
                for i in range(50)
            ]
        )
        pad = "x" * 400_000
        for job_id in ids:  # as a SIGKILLed executor leaves them, with large arguments
            engine.run(
                lambda ctx, j=job_id: patch_job(
                    ctx._txn, j, {"state": {"kind": "inProgress"}, "args": [{"pad": pad}]}
                )
            )
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        states = {job(engine, j)["state"]["kind"] for j in ids}
        assert states == {"failed"}


def test_close_waits_for_an_action_that_finish_runs_on_another_thread(db_path: Path) -> None:
    # Found by review: close() waited only for the background worker's actions; one run
    # by finish_scheduled_functions() on another thread was left inProgress for good.
    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 0.5}))
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            engine.finish_scheduled_functions()
        except BaseException as error:  # the engine closes under it: checked below
            errors.append(error)

    worker = threading.Thread(target=finish)
    worker.start()
    wait_until(lambda: job(engine, job_id)["state"]["kind"] == "inProgress")
    engine.close()
    worker.join(10)
    assert len(errors) <= 1 and all("closed" in str(e) for e in errors), errors
    with Engine.open(db_path, durability="none") as again:
        assert again.run(lambda ctx: ctx.db.system.get(job_id))["state"] == {"kind": "success"}


def test_close_waits_for_an_action_claimed_but_not_yet_started_on_another_thread(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found chasing a flaky run of the test above: finish_* on another thread commits the
    # claim (inProgress) before it registers the action as running, and close() arriving
    # in between saw nothing running: it stopped the loop (joining a loop thread not yet
    # started raised RuntimeError) or closed the storage under the action, which was left
    # inProgress for good (and the finishing thread waited on it for ever).

    claimed = threading.Event()
    release = threading.Event()
    real_action = Executor._action

    def gated_action(self: Executor, *args: Any) -> Any:  # between the claim and the registration
        claimed.set()
        assert release.wait(10)
        return real_action(self, *args)

    monkeypatch.setattr(Executor, "_action", gated_action)
    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 0.0}))
    errors: list[BaseException] = []

    def run(target: Any) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except BaseException as error:  # checked below
                errors.append(error)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        return thread

    finisher = run(engine.finish_scheduled_functions)
    assert claimed.wait(10)
    assert job(engine, job_id)["state"] == {"kind": "inProgress"}
    closer = run(engine.close)
    closer.join(0.5)  # a close that does not wait for the claimed action ends here
    release.set()
    closer.join(10)
    finisher.join(10)
    assert not closer.is_alive() and not finisher.is_alive()
    assert len(errors) <= 1 and all("closed" in str(e) for e in errors), errors
    with Engine.open(db_path, durability="none") as again:
        assert again.run(lambda ctx: ctx.db.system.get(job_id))["state"] == {"kind": "success"}
        assert again.query(jobs.notes) == ["slow done"]


def test_actions_started_on_two_threads_at_once_share_one_loop(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found with the race above: two threads starting the first actions at once (the
    # worker and finish_*, or two finish_* calls) each made an event loop; close()
    # stopped only the one it kept, and the other loop's thread ran on for good.
    import asyncio

    def loop_threads() -> int:
        return sum(t.name == "convexlite-scheduled-actions" for t in threading.enumerate())

    before = loop_threads()
    made: list[Any] = []
    second = threading.Event()
    real_new_event_loop = asyncio.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        made.append(None)
        if len(made) == 1:
            second.wait(1.0)  # a second thread that gets here makes a second loop
        else:
            second.set()
        return real_new_event_loop()

    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    ids = engine.run(
        lambda ctx: [
            ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 0.0}) for _ in range(2)
        ]
    )
    monkeypatch.setattr(asyncio, "new_event_loop", new_event_loop)
    threads = [threading.Thread(target=engine.finish_scheduled_functions) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    monkeypatch.undo()
    assert [job(engine, i)["state"] for i in ids] == [{"kind": "success"}] * 2
    engine.close()
    assert len(made) == 1
    assert loop_threads() == before


def test_an_action_whose_event_loop_cannot_start_is_left_pending(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by hunt: the job was claimed (inProgress) before the actions' event-loop thread
    # was started; when that thread could not start, the error escaped with the job left
    # inProgress and nothing running it, until some later lone start failed orphans.
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name == "convexlite-scheduled-actions":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        job_id = engine.mutation(jobs.schedule_action, {"text": "x"})
        monkeypatch.setattr(threading.Thread, "start", start)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            engine.finish_scheduled_functions(timeout=2)
        monkeypatch.undo()
        assert job(engine, job_id)["state"] == {"kind": "pending"}  # nothing ran: not claimed
        assert engine.finish_scheduled_functions(timeout=2) == 1
        assert job(engine, job_id)["state"] == {"kind": "success"}
        assert engine.query(jobs.notes) == ["action:x"]


@pytest.mark.parametrize("fault", ["stored args not [argsObject]", "loop refuses the task"])
def test_an_action_that_cannot_start_after_its_claim_is_recorded_failed(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    # Found by hunt: an error between the claim's commit and the action's start (stored
    # args without [0], the loop refusing the task) escaped finish_*() (or a worker's
    # pass) and left the job inProgress with nothing running it. Convex records an action
    # its executor failed to run as failed with the transient error; the cause is logged.
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        broken = engine.mutation(jobs.schedule_action, {"text": "broken"})
        after = engine.run(
            lambda ctx: ctx.scheduler.run_after(0.001, jobs.note_from_action, {"text": "after"})
        )
        if fault == "stored args not [argsObject]":
            engine.run(lambda ctx: patch_job(ctx._txn, broken, {"args": []}))
        else:
            real = asyncio.run_coroutine_threadsafe

            def refuse(coro: Any, loop: Any) -> Any:
                if broken in str(coro.cr_frame.f_locals.get("job_id", "")):
                    coro.close()
                    raise RuntimeError("Event loop is closed (simulated)")
                return real(coro, loop)

            monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", refuse)
        time.sleep(0.002)
        with caplog.at_level(logging.ERROR, logger="engine.scheduler"):
            assert engine.finish_scheduled_functions(timeout=2) == 2
        monkeypatch.undo()
        assert job(engine, broken)["state"] == {
            "kind": "failed",
            "error": "Transient error while executing action",
        }
        assert job(engine, broken)["completedTime"] > 0
        assert job(engine, after)["state"] == {"kind": "success"}  # the pass went on
        assert engine.query(jobs.notes) == ["action:after"]
        [record] = [r for r in caplog.records if broken in r.getMessage()]
        assert "could not be started" in record.getMessage()
        assert record.exc_info is not None
        if fault == "stored args not [argsObject]":
            engine.run(lambda ctx: patch_job(ctx._txn, broken, {"args": [{"text": "broken"}]}))
        engine.check()


def test_close_cleans_up_when_recording_a_late_actions_failure_fails(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by hunt: when recording the failure of an action that outlived its
    # cancellation raised (a StorageError after the retries), the rest of close() was
    # skipped: the actions' loop ran on, the commit listener stayed, and the scheduler
    # lock stayed held, so no later executor found itself alone to fail the orphan.
    import concurrent.futures

    from engine import StorageError, actionrunner

    engine = Engine.open(db_path, functions=app, durability="none", scheduler=False)
    runner = engine._executor
    assert runner is not None
    db = engine._db
    runner.shutdown_timeout = 0.05
    monkeypatch.setattr(actionrunner, "_CANCEL_GRACE", 0.05)
    job_id = engine.run(
        lambda ctx: ctx.scheduler.run_after(0, jobs.note_from_action, {"text": "x"})
    )
    engine.run(lambda ctx: patch_job(ctx._txn, job_id, {"state": {"kind": "inProgress"}}))
    runner._action_loop()
    loop_thread = runner._loop_thread
    assert loop_thread is not None
    runner._running[job_id] = concurrent.futures.Future()  # an action that never ends

    def failing_complete(*args: Any) -> bool:
        raise StorageError("LMDB error: Input/output error (simulated)")

    monkeypatch.setattr(runner, "_complete", failing_complete)
    with caplog.at_level(logging.ERROR, logger="engine.scheduler"):
        engine.close()
    assert any(job_id in r.getMessage() for r in caplog.records)
    loop_thread.join(2)
    assert not loop_thread.is_alive()
    assert runner._on_commit not in db.listeners
    assert runner._lock_fd is None
    # The lock is released: the next executor is alone and fails the orphan.
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        assert job(again, job_id)["state"] == {
            "kind": "failed",
            "error": "Transient error while executing action",
        }


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ("raise_cancelled_error", "Uncaught CancelledError: the action gave up"),
        ("await_a_cancelled_task", "Uncaught CancelledError: "),
    ],
)
def test_an_action_raising_cancelled_error_itself_fails_with_its_error(
    engine: Engine, action: str, error: str
) -> None:
    # Found by hunt: any CancelledError was taken for close()'s cancellation and recorded
    # as Convex's "Transient error while executing action" (the system's fault); raised by
    # the action's own code it is the action's failure, as any error it throws.
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, getattr(jobs, action)))
    assert engine.finish_scheduled_functions(timeout=2) == 1
    assert job(engine, job_id)["state"] == {"kind": "failed", "error": error}


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt for the test, as in a terminal, whatever the suite
    inherited: a shell without job control starts `make test &` with SIGINT ignored, and
    these tests' Ctrl-C then did nothing (DID NOT RAISE KeyboardInterrupt)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_finish_waits_for_an_action_cancels_it_as_a_transient_failure(
    engine: Engine, ctrl_c_raises: None
) -> None:
    # The executor's own cancellation (here: Ctrl-C in finish_*) stays the transient error.
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread")
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 30.0}))
    ctrl_c = threading.Timer(
        0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        engine.finish_scheduled_functions()
    ctrl_c.join()
    wait_until(lambda: job(engine, job_id)["state"]["kind"] == "failed")
    assert job(engine, job_id)["state"]["error"] == "Transient error while executing action"
    assert engine.query(jobs.notes) == []


def test_a_close_interrupted_while_it_waits_for_actions_cancels_them_and_stops_the_loop(
    db_path: Path, ctrl_c_raises: None
) -> None:
    # Found by hunt: Ctrl-C while close() waited for running scheduled actions released
    # the folder but left the actions running on the loop's (daemon) thread, and their
    # jobs inProgress with the lock still held, so no executor failed them.
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread")
    engine = Engine.open(db_path, functions=app, durability="none")
    runner = engine._executor
    assert runner is not None
    job_id = engine.run(lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 30.0}))
    wait_until(lambda: job(engine, job_id)["state"]["kind"] == "inProgress")
    loop_thread = runner._loop_thread
    assert loop_thread is not None
    ctrl_c = threading.Timer(
        0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    start = time.monotonic()
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        engine.close()  # waits up to shutdown_timeout (10 s) for the action
    assert time.monotonic() - start < 3.0
    ctrl_c.join()
    assert not loop_thread.is_alive()
    assert runner._lock_fd is None
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as again:
        assert job(again, job_id)["state"] == {
            "kind": "failed",
            "error": "Transient error while executing action",
        }
        assert again.query(jobs.notes) == []


def test_a_huge_error_is_cut_so_the_failed_job_can_be_recorded(engine: Engine) -> None:
    # Found by review (crons): an error message over 1 MiB made the job's failed state
    # too large to store; the job stayed pending and was re-run on every pass.
    job_id = engine.run(
        lambda ctx: ctx.scheduler.run_after(0, "cronjobs:huge_error", {"size": 2 << 20})
    )
    assert engine.finish_scheduled_functions(timeout=5) == 1
    state = job(engine, job_id)["state"]
    assert state["kind"] == "failed"
    assert state["error"].endswith("... (truncated)") and len(state["error"]) < 70_000


def test_a_job_whose_bookkeeping_fails_does_not_stop_the_pass(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A job's outcome (a claim, a failure, an action's end) that could not be written
    # (here forced; a document too large did it before its room was kept) raised out of
    # the executor's pass: the due jobs behind it never ran in that pass. Now each such
    # job is logged with its id and left as stored, the jobs behind it run, and
    # finish_scheduled_functions raises the first error once the pass is over.
    from engine import executor, runs

    caplog.set_level(logging.ERROR, logger="engine.scheduler")
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:

        def schedule(ref: Any, args: dict[str, Any]) -> str:
            return engine.run(lambda ctx: ctx.scheduler.run_after(0, ref, args))  # type: ignore[no-any-return]

        failing = schedule(jobs.write_then_fail, {"text": "never"})
        claimed = schedule(jobs.note_from_action, {"text": "claimed"})
        acting = schedule(jobs.failing_action, {})
        behind = schedule(jobs.write_note, {"text": "behind"})
        real_patch_job = executor.patch_job

        def broken_patch_job(txn: Any, job_id: str, fields: dict[str, Any]) -> None:
            claim = fields["state"]["kind"] == "inProgress"
            if (job_id == claimed and claim) or (job_id in (failing, acting) and not claim):
                raise LimitExceeded("forced bookkeeping failure", limit="DocumentTooLarge")
            real_patch_job(txn, job_id, fields)

        for module in (executor, runs):  # a job's claim is in runs, its outcome in executor
            monkeypatch.setattr(module, "patch_job", broken_patch_job)
        with pytest.raises(LimitExceeded, match="forced bookkeeping failure"):
            engine.finish_scheduled_functions(timeout=10)
        assert engine.query(jobs.notes) == ["behind"]  # the job behind them ran
        assert job(engine, behind)["state"] == {"kind": "success"}
        assert job(engine, failing)["state"] == {"kind": "pending"}  # its writes discarded
        assert job(engine, claimed)["state"] == {"kind": "pending"}  # never started
        assert job(engine, acting)["state"] == {"kind": "inProgress"}  # ran, not recorded
        logged = "\n".join(record.getMessage() for record in caplog.records)
        for job_id in (failing, claimed, acting):
            assert f"job {job_id}" in logged
        monkeypatch.undo()
    # Nothing lost, nothing run twice: reopened alone, the executor fails the action
    # left inProgress; the others run once.
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        assert engine.finish_scheduled_functions(timeout=10) == 2
        assert job(engine, acting)["state"]["kind"] == "failed"
        assert job(engine, failing)["state"]["kind"] == "failed"
        assert job(engine, claimed)["state"] == {"kind": "success"}
        assert sorted(engine.query(jobs.notes)) == ["action:claimed", "behind"]
        engine.check()


def test_the_worker_runs_the_jobs_behind_one_whose_bookkeeping_fails(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine import executor, runs

    caplog.set_level(logging.ERROR, logger="engine.scheduler")
    real_patch_job = executor.patch_job
    failing: list[str] = []

    def broken_patch_job(txn: Any, job_id: str, fields: dict[str, Any]) -> None:
        if job_id in failing and fields["state"]["kind"] == "failed":
            raise LimitExceeded("forced bookkeeping failure", limit="DocumentTooLarge")
        real_patch_job(txn, job_id, fields)

    for module in (executor, runs):  # a job's claim is in runs, its outcome in executor
        monkeypatch.setattr(module, "patch_job", broken_patch_job)
    with Engine.open(db_path, functions=app, durability="none") as engine:

        def body(ctx: Any) -> tuple[str, str]:
            first = ctx.scheduler.run_after(0.2, jobs.write_then_fail, {"text": "never"})
            second = ctx.scheduler.run_after(0.3, jobs.write_note, {"text": "behind"})
            failing.append(first)
            return first, second

        first, second = engine.run(body)
        wait_until(lambda: engine.query(jobs.notes) == ["behind"])
        assert job(engine, second)["state"] == {"kind": "success"}
        assert job(engine, first)["state"] == {"kind": "pending"}
        assert any(f"job {first}" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("flag", ["no", "false", 0, None])
def test_the_scheduler_option_must_be_a_bool(db_path: Path, flag: object) -> None:
    # Engine.open(..., scheduler="false") (from an env var) started the background
    # scheduler: a test meant to run jobs with finish_scheduled_functions raced it.
    with pytest.raises(EngineError, match=r"scheduler=.*True or False"):
        Engine.open(db_path, scheduler=flag)  # type: ignore[arg-type]
    assert not db_path.exists()  # refused before anything opens


# -- damaged jobs ------------------------------------------------------------------------
# A job document whose fields have the wrong type (an old or foreign process, corruption)
# must not stop the executor: it is skipped, logged once with its id and what is wrong,
# named by check(), and every other job still runs.

DAMAGES = {
    "string scheduledTime": {"scheduledTime": "soon"},
    "list name": {"name": ["jobs:write_note"]},
    "missing scheduledTime": {"scheduledTime": UNSET},
    "object name": {"name": {"a": 1.0}},
}


def _damage(engine: Engine, job_id: str, fields: dict[str, Any]) -> None:
    engine.run(lambda ctx: patch_job(ctx._txn, job_id, fields))


@pytest.mark.parametrize("fields", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_pending_job_is_skipped_logged_once_and_the_others_run(
    db_path: Path, fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.scheduler")
    with Engine.open(db_path, functions=app, durability="none", scheduler=False) as engine:
        before = engine.mutation(jobs.later, {"text": "before", "delay": 0.0})
        damaged = engine.mutation(jobs.later, {"text": "damaged", "delay": 0.0})
        after = engine.mutation(jobs.later, {"text": "after", "delay": 0.0})
        _damage(engine, damaged, fields)
        assert engine.finish_scheduled_functions(timeout=5) == 2
        assert engine.finish_all_scheduled_functions(timeout=5) == 0  # not waited for
        assert sorted(engine.query(jobs.notes)) == ["after", "before"]
        assert job(engine, before)["state"] == job(engine, after)["state"] == {"kind": "success"}
        assert job(engine, damaged)["state"] == {"kind": "pending"}  # left as stored
        logged = [r.getMessage() for r in caplog.records if damaged in r.getMessage()]
        assert len(logged) == 1, logged  # once, however many passes met it
        assert "skipped" in logged[0]
        with pytest.raises(CorruptionError) as caught:
            engine.check()
        assert any(p.startswith(f"{SYSTEM} {damaged}: ") for p in caught.value.problems)


def test_the_worker_skips_a_damaged_job_and_keeps_running_the_others(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.scheduler")
    with Engine.open(db_path, functions=app, durability="none") as engine:

        def schedule_damaged(ctx: Any) -> str:
            job_id = ctx.scheduler.run_after(0, jobs.write_note, {"text": "damaged"})
            patch_job(ctx._txn, job_id, {"scheduledTime": "soon", "name": ["x"]})
            return job_id  # type: ignore[no-any-return]

        damaged = engine.run(schedule_damaged)
        for text in ("one", "two"):
            job_id = engine.mutation(jobs.later, {"text": text, "delay": 0.0})
            wait_until(lambda j=job_id: job(engine, j)["state"] == {"kind": "success"})
        time.sleep(3 * engine._executor.poll_interval)  # type: ignore[union-attr]
        job_id = engine.mutation(jobs.later, {"text": "three", "delay": 0.0})
        wait_until(lambda: job(engine, job_id)["state"] == {"kind": "success"})
        assert engine.query(jobs.notes) == ["one", "two", "three"]
        messages = [r.getMessage() for r in caplog.records]
        assert not any("failed a pass" in m for m in messages), messages
        assert len([m for m in messages if damaged in m]) == 1


def test_cancel_of_a_job_whose_state_is_not_an_object_does_nothing(engine: Engine) -> None:
    job_id = engine.mutation(jobs.later, {"text": "x", "delay": 60.0})
    _damage(engine, job_id, {"state": "pending"})
    engine.run(lambda ctx: ctx.scheduler.cancel(job_id))
    assert job(engine, job_id)["state"] == "pending"
    assert engine.finish_all_scheduled_functions(timeout=5) == 0
    _damage(engine, job_id, {"state": {"kind": "pending"}})  # the fixture's check passes


# -- retention of completed jobs (Convex's SCHEDULED_JOB_RETENTION) ---------------------


def test_completed_jobs_are_deleted_once_the_retention_has_passed(engine: Engine) -> None:
    """Success, failed and canceled jobs go once their completedTime is the retention
    (7 days) old; pending jobs and newer completed ones stay (the clock is injected)."""
    executor = engine._executor
    assert executor is not None
    assert executor.completed_job_retention == 7 * 24 * 3600.0
    done = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
    failed = engine.mutation(jobs.schedule_failing, {})
    canceled = engine.mutation(jobs.later, {"text": "canceled", "delay": 60.0})
    engine.run(lambda ctx: ctx.scheduler.cancel(canceled))
    pending = engine.mutation(jobs.later, {"text": "pending", "delay": 3600.0})
    damaged = engine.mutation(jobs.later, {"text": "damaged", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 3
    assert job(engine, failed)["state"]["kind"] == "failed"
    _damage(engine, damaged, {"completedTime": "long ago"})  # never deleted: its time is unknown
    time.sleep(0.02)
    newer = engine.mutation(jobs.later, {"text": "newer", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 1
    times = [job(engine, j)["completedTime"] for j in (done, failed, canceled)]
    old = max(times)
    assert job(engine, newer)["completedTime"] > old
    retention_ms = executor.completed_job_retention * 1000.0
    # A millisecond before the last of them is the retention old, it stays; the others
    # (completed more than a millisecond before it) go.
    earlier = sum(t <= old - 1.0 for t in times)
    assert executor.collect_completed(now=old + retention_ms - 1.0) == earlier
    assert len(jobs_of(engine)) == 6 - earlier
    assert executor.collect_completed(now=old + retention_ms) == 3 - earlier
    left = {j["_id"] for j in jobs_of(engine)}
    assert left == {pending, damaged, newer}
    engine.run(lambda ctx: ctx.scheduler.cancel(done))  # a deleted job's id: a no-op
    assert executor.collect_completed(now=old + 2 * retention_ms) == 1  # the newer one
    _damage(engine, damaged, {"completedTime": 1.0})
    assert executor.collect_completed(now=old + 2 * retention_ms) == 1
    assert {j["_id"] for j in jobs_of(engine)} == {pending}
    assert engine.check()["scheduled_functions"] == {"pending": 1}


def _completed_jobs(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Executor:
    """45 jobs run to success; the collector then reads 10 per batch. Returns the executor."""
    from engine import collector

    executor = engine._executor
    assert executor is not None
    engine.run(
        lambda ctx: [
            ctx.scheduler.run_after(0, jobs.write_note, {"text": str(n)}) for n in range(45)
        ]
    )
    assert engine.finish_scheduled_functions() == 45
    monkeypatch.setattr(collector, "_COLLECT_BATCH", 10)
    return executor


def test_many_completed_jobs_are_deleted_in_bounded_transactions(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = _completed_jobs(engine, monkeypatch)
    batches: list[int] = []
    real_run = engine._db.run

    def counting_run(fn: Any, **options: Any) -> Any:
        result = real_run(fn, **options)
        if options.get("source") == _COLLECT_SOURCE:
            batches.append(result[0][0])
        return result

    monkeypatch.setattr(engine._db, "run", counting_run)
    later = time.time() * 1000.0 + executor.completed_job_retention * 1000.0 + 1000.0
    assert executor.collect_completed(now=later) == 45
    assert batches[:5] == [10, 10, 10, 10, 5] and sum(batches) == 45
    assert jobs_of(engine) == []
    assert engine.query(jobs.notes) == [str(n) for n in range(45)]  # their writes stay
    engine.check()


def test_finish_deletes_jobs_completed_longer_ago_than_the_retention(engine: Engine) -> None:
    executor = engine._executor
    assert executor is not None
    executor.completed_job_retention = 0.2
    done = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
    pending = engine.mutation(jobs.later, {"text": "pending", "delay": 3600.0})
    assert engine.finish_scheduled_functions() == 1
    assert {j["_id"] for j in jobs_of(engine)} == {done, pending}
    time.sleep(0.25)
    assert engine.finish_scheduled_functions() == 0
    assert {j["_id"] for j in jobs_of(engine)} == {pending}


def test_the_worker_deletes_completed_jobs_after_the_retention(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(Executor, "completed_job_retention", 0.3)
    monkeypatch.setattr(Executor, "collect_interval", 0.05)
    with Engine.open(db_path, functions=app, durability="none") as engine:
        pending = engine.mutation(jobs.later, {"text": "pending", "delay": 3600.0})
        done = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
        wait_until(lambda: job(engine, done)["state"] == {"kind": "success"})
        completed = job(engine, done)["completedTime"]
        wait_until(lambda: engine.run(lambda ctx: ctx.db.system.get(done)) is None)
        assert time.time() * 1000.0 >= completed + 300.0  # not before its time
        assert [j["_id"] for j in jobs_of(engine)] == [pending]
        engine.check()


def test_a_completed_job_whose_completed_time_is_not_finite_is_kept_and_named(
    engine: Engine,
) -> None:
    """A NaN (or infinite) completedTime is a float, but no time: the collector never
    found it old enough and check() passed it, so it stayed unseen for ever."""
    done = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 1
    _damage(engine, done, {"completedTime": float("nan")})
    executor = engine._executor
    assert executor is not None
    later = time.time() * 1000.0 + executor.completed_job_retention * 1000.0 + 1000.0
    assert executor.collect_completed(now=later) == 0  # kept: its time is unknown
    with pytest.raises(CorruptionError, match="completedTime is not a finite time"):
        engine.check()
    _damage(engine, done, {"completedTime": 1.0})
    assert executor.collect_completed(now=later) == 1


def _collector_reads(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes of documents each of the collector's transactions reads, from now on."""
    reads: list[int] = []
    real_run = engine._db.run

    def counting_run(fn: Any, **options: Any) -> Any:
        if options.get("source") != _COLLECT_SOURCE:
            return real_run(fn, **options)

        def counted(txn: Any) -> Any:
            result = fn(txn)
            reads.append(txn.system_bytes_read)
            return result

        return real_run(counted, **options)

    monkeypatch.setattr(engine._db, "run", counting_run)
    return reads


def test_finish_does_not_read_the_pending_jobs_scheduled_far_ahead(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs pending for longer than the retention (scheduled far ahead: reminders) were
    read by every sweep, so each finish_* call read them all: 20,000 of them made a
    finish_scheduled_functions() with nothing due take 60 ms instead of 1 ms."""
    executor = engine._executor
    assert executor is not None
    year = 365 * 24 * 3600.0
    engine.run(
        lambda ctx: [
            ctx.scheduler.run_after(year, jobs.write_note, {"text": str(n)}) for n in range(300)
        ]
    )
    done = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 1
    time.sleep(0.01)
    executor.completed_job_retention = 0.005  # the pending jobs were made before the bound
    reads = _collector_reads(engine, monkeypatch)
    assert engine.finish_scheduled_functions() == 0
    assert done not in {j["_id"] for j in jobs_of(engine)}  # the completed one went
    assert len(jobs_of(engine)) == 300  # the pending ones stay
    one_job = len(repr(job(engine, jobs_of(engine)[0]["_id"])))  # ~ its stored size
    assert 0 < sum(reads) < 3 * one_job, reads  # the completed job, none of the pending


def test_finish_deletes_a_backlog_of_completed_jobs_within_its_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finish_*(timeout=...) deleted every old completed job before it looked at the due
    ones, however long it took: 20,000 made finish_scheduled_functions(timeout=0.05)
    take 0.33 s. It deletes one batch at least, and no more batches past its deadline
    (the rest go at the next call, or by the worker)."""
    executor = _completed_jobs(engine, monkeypatch)
    time.sleep(0.01)
    executor.completed_job_retention = 0.005
    reads = _collector_reads(engine, monkeypatch)
    assert engine.finish_scheduled_functions(timeout=0.0) == 0
    assert len(reads) == 1 and len(jobs_of(engine)) == 35  # one batch, then past the deadline
    assert engine.finish_scheduled_functions(timeout=30.0) == 0
    assert jobs_of(engine) == []


def test_the_worker_deletes_a_job_canceled_long_before_its_time(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's sweeps read the completed jobs by state and scheduled time; a job
    canceled long before its scheduledTime is found by its full sweeps (every job made
    before the bound), so it still goes once its completedTime is the retention old."""

    monkeypatch.setattr(Executor, "completed_job_retention", 0.3)
    monkeypatch.setattr(Executor, "collect_interval", 0.05)
    monkeypatch.setattr(Executor, "full_collect_interval", 0.2)
    with Engine.open(db_path, functions=app, durability="none") as engine:
        canceled = engine.mutation(jobs.later, {"text": "canceled", "delay": 3600.0})
        engine.run(lambda ctx: ctx.scheduler.cancel(canceled))
        completed = job(engine, canceled)["completedTime"]
        wait_until(lambda: engine.run(lambda ctx: ctx.db.system.get(canceled)) is None)
        assert time.time() * 1000.0 >= completed + 300.0  # not before its time
        engine.check()


def test_finish_without_a_worker_deletes_a_job_canceled_long_before_its_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a full sweep finds a job canceled long before its scheduledTime, and only the
    worker swept fully: with scheduler=False such jobs were kept for ever. finish_* now
    carries the worker's sweeps, full ones included (its first, then one an interval)."""
    monkeypatch.setattr(Executor, "full_collect_interval", 0.2)
    executor = engine._executor
    assert executor is not None
    executor.completed_job_retention = 0.05
    assert engine.finish_scheduled_functions() == 0  # the first sweep is full: now done
    canceled = engine.mutation(jobs.later, {"text": "canceled", "delay": 3600.0})
    engine.run(lambda ctx: ctx.scheduler.cancel(canceled))
    pending = engine.mutation(jobs.later, {"text": "pending", "delay": 3600.0})
    time.sleep(0.1)
    assert engine.finish_scheduled_functions() == 0
    assert {j["_id"] for j in jobs_of(engine)} == {canceled, pending}  # not full yet
    time.sleep(0.15)
    assert engine.finish_scheduled_functions() == 0
    assert [j["_id"] for j in jobs_of(engine)] == [pending]


def test_a_full_sweep_cut_by_finish_time_share_resumes_at_the_next_call(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full sweep reads every job created before the bound; one finish_* call has a
    tenth of its timeout for it, so with many far-ahead pending jobs no call could read
    them all and the canceled job behind them stayed. Each call resumes the sweep."""
    from engine import collector

    monkeypatch.setattr(collector, "_COLLECT_BATCH", 5)
    year = 365 * 24 * 3600.0
    engine.run(
        lambda ctx: [
            ctx.scheduler.run_after(year, jobs.write_note, {"text": str(n)}) for n in range(40)
        ]
    )
    canceled = engine.mutation(jobs.later, {"text": "canceled", "delay": 3600.0})
    engine.run(lambda ctx: ctx.scheduler.cancel(canceled))
    time.sleep(0.01)
    executor = engine._executor
    assert executor is not None
    executor.completed_job_retention = 0.005
    reads = _collector_reads(engine, monkeypatch)
    calls = 0
    while canceled in {j["_id"] for j in jobs_of(engine)}:
        calls += 1
        assert calls <= 20, reads
        assert engine.finish_scheduled_functions(timeout=0.0) == 0  # one batch a call
    assert calls >= 8  # 40 pending jobs read 5 a batch, one batch a call, then it
    assert len(jobs_of(engine)) == 40


def test_finish_leaves_the_sweep_to_another_thread_finish_already_sweeping(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a worker, the finish_* calls share one sweep: two threads stepping it at
    once would read the same pages and lose each other's place."""
    done = engine.mutation(jobs.later, {"text": "done", "delay": 0.0})
    assert engine.finish_scheduled_functions() == 1
    time.sleep(0.01)
    executor = engine._executor
    assert executor is not None
    executor.completed_job_retention = 0.005
    reads = _collector_reads(engine, monkeypatch)
    with executor._finishing:  # as while another thread's finish_* sweeps
        assert engine.finish_scheduled_functions() == 0
    assert reads == [] and done in {j["_id"] for j in jobs_of(engine)}
    assert engine.finish_scheduled_functions() == 0
    assert reads and done not in {j["_id"] for j in jobs_of(engine)}


def test_a_sweep_whose_jobs_another_executor_deletes_meanwhile_ends_quietly(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Several executors may serve one folder, each sweeping: two sweeps deleting the same
    old jobs conflict, and the loser failed with OptimisticConcurrencyControlFailure after
    its retries, out of finish_* (measured: two executors collecting 20,000 old jobs at
    once, one failed in 3 runs of 3), and logged with a traceback by the worker. Those
    jobs are the other's to delete: the sweep ends, to start again later. Here the other
    executor deletes each page this one reads before this one commits it."""
    from engine import collector

    caplog.set_level(logging.INFO, logger="engine.scheduler")
    monkeypatch.setattr(collector, "_COLLECT_BATCH", 5)
    with (
        Engine.open(db_path, functions=app, durability="none", scheduler=False) as one,
        Engine.open(db_path, functions=app, durability="none", scheduler=False) as two,
    ):
        one.run(
            lambda ctx: [
                ctx.scheduler.run_after(0, jobs.write_note, {"text": str(n)}) for n in range(100)
            ]
        )
        assert one.finish_scheduled_functions() == 100
        time.sleep(0.01)
        mine, other = one._executor, two._executor
        assert mine is not None and other is not None
        mine.completed_job_retention = other.completed_job_retention = 0.005
        real_run = one._db.run  # the handles share it: only this thread's runs are raced
        racer = threading.get_ident()

        def racing_run(fn: Any, **options: Any) -> Any:
            if options.get("source") != _COLLECT_SOURCE or threading.get_ident() != racer:
                return real_run(fn, **options)

            def raced(txn: Any) -> Any:  # this snapshot is taken: the other deletes its page
                bound = time.time() * 1000.0 - 5.0
                helper = threading.Thread(
                    target=lambda: other._collect_batch(bound, "success", None)
                )
                helper.start()
                helper.join(10)
                return fn(txn)

            return real_run(raced, **options)

        monkeypatch.setattr(one._db, "run", racing_run)
        assert one.finish_scheduled_functions() == 0  # raised the conflict
        before = len(jobs_of(one))
        assert before < 100
        mine._next_sweep = 0.0  # finish_*'s sweep ended too: the worker's next is due now
        assert not mine._collect_step()  # the worker's sweep: ended, not failed
        assert len(jobs_of(one)) < before
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        monkeypatch.setattr(one._db, "run", real_run)
        assert mine.collect_completed() > 0
        assert jobs_of(one) == []
        one.check()


def test_finish_gives_old_jobs_a_bounded_share_of_its_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog of old completed jobs must not use up the timeout the due jobs run
    within: finish_* deletes for at most _FINISH_COLLECT_SECONDS (here none: one batch)."""
    from engine import collector

    executor = _completed_jobs(engine, monkeypatch)
    monkeypatch.setattr(collector, "_FINISH_COLLECT_SECONDS", 0.0)
    time.sleep(0.01)
    executor.completed_job_retention = 0.005
    reads = _collector_reads(engine, monkeypatch)
    assert engine.finish_scheduled_functions(timeout=30.0) == 0
    assert len(reads) == 1 and len(jobs_of(engine)) == 35  # one batch, then the due jobs
