"""Functions that use ``ctx.scheduler``: the scheduler's unit, app and race tests."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from engine import ConvexError, action, internal_action, internal_mutation, mutation, query, v


@internal_mutation(args={"text": v.string()})
def write_note(ctx: Any, text: str) -> None:
    identity = ctx.auth.get_user_identity()
    ctx.db.insert("job_notes", {"text": text, "identity": None if identity is None else "set"})


@query(args={})
def notes(ctx: Any) -> list[str]:
    return [doc["text"] for doc in ctx.db.query("job_notes").collect()]


@mutation(args={"text": v.string(), "delay": v.number()})
def later(ctx: Any, text: str, delay: float) -> str:
    job_id: str = ctx.scheduler.run_after(delay, write_note, {"text": text})
    return job_id


@mutation(args={"text": v.string(), "at": v.number()})
def at(ctx: Any, text: str, at: float) -> str:
    job_id: str = ctx.scheduler.run_at(at, "jobs:write_note", {"text": text})
    return job_id


@mutation(args={"text": v.string()})
def later_then_fail(ctx: Any, text: str) -> None:
    ctx.scheduler.run_after(0, write_note, {"text": text})
    raise ConvexError("rolled back")


@internal_mutation(args={"text": v.string()})
def schedule_and_raise(ctx: Any, text: str) -> None:
    ctx.scheduler.run_after(0, write_note, {"text": text})
    raise ConvexError("inner failed")


@mutation(args={})
def nested_caught(ctx: Any) -> str:
    try:
        ctx.run_mutation(schedule_and_raise, {"text": "inner"})
    except ConvexError:
        pass
    job_id: str = ctx.scheduler.run_after(0, write_note, {"text": "outer"})
    return job_id


@internal_mutation(args={"text": v.string()})
def write_then_fail(ctx: Any, text: str) -> None:
    ctx.db.insert("job_notes", {"text": text})
    raise ConvexError("job failed on purpose")


@mutation(args={})
def schedule_failing(ctx: Any) -> str:
    job_id: str = ctx.scheduler.run_after(0, write_then_fail, {"text": "never"})
    return job_id


@internal_action(args={"text": v.string()})
async def note_from_action(ctx: Any, text: str) -> str:
    await asyncio.sleep(0)
    await ctx.run_mutation(write_note, {"text": "action:" + text})
    return text


@internal_action(args={"seconds": v.number()})
async def slow_action(ctx: Any, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await ctx.run_mutation(write_note, {"text": "slow done"})


#: What ``gated_action`` waits for (a test gives it a fresh event and sets it).
ACTION_GATE = threading.Event()


@internal_action(args={})
async def gated_action(ctx: Any) -> None:
    """Runs until ACTION_GATE is set (10 s at most), then notes it: a running action that
    stays running until the test says so, however slow the machine."""
    await asyncio.to_thread(ACTION_GATE.wait, 10)
    await ctx.run_mutation(write_note, {"text": "gated done"})


@internal_action(args={})
async def failing_action(ctx: Any) -> None:
    raise ConvexError("action failed on purpose")


@internal_mutation(args={})
def crashing_mutation(ctx: Any) -> None:
    raise RuntimeError("mutation crashed on purpose")


@internal_action(args={})
async def crashing_action(ctx: Any) -> None:
    raise RuntimeError("action crashed on purpose")


@mutation(args={"text": v.string()})
def schedule_action(ctx: Any, text: str) -> str:
    job_id: str = ctx.scheduler.run_after(0, note_from_action, {"text": text})
    return job_id


@action(args={"text": v.string(), "fail": v.boolean()})
async def note_now(ctx: Any, text: str, fail: bool) -> str:
    """Write a note through a mutation, then raise if ``fail``."""
    await ctx.run_mutation(write_note, {"text": "action:" + text})
    if fail:
        raise ConvexError("failed after writing")
    return text


@action(args={"text": v.string()})
async def action_schedules_then_fails(ctx: Any, text: str) -> None:
    ctx.scheduler.run_after(0, write_note, {"text": text})
    raise ConvexError("the action failed after scheduling")


@action(args={"text": v.string()})
async def action_awaits_scheduler(ctx: Any, text: str) -> list[str]:
    """Awaits ``ctx.scheduler``, as a Convex action writes ``await ctx.scheduler.runAfter``."""
    kept = await ctx.scheduler.run_after(0, write_note, {"text": text})
    dropped = await ctx.scheduler.run_at(time.time() + 60, write_note, {"text": "never"})
    await ctx.scheduler.cancel(dropped)
    plain = ctx.scheduler.run_after(3600, write_note, {"text": "later"})  # not awaited
    ctx.scheduler.cancel(plain)
    return [kept, dropped, plain]


@action(args={}, returns=v.id("_scheduled_functions"))
async def action_returns_its_job(ctx: Any) -> str:
    job_id: str = ctx.scheduler.run_after(3600, write_note, {"text": "returned"})
    return job_id  # not awaited: still the id, not "an awaitable"


@internal_action(args={})
async def cancel_self_then_schedule(ctx: Any) -> None:
    # The test cancels this job while it runs; what it schedules afterwards is
    # created already canceled.
    await ctx.run_mutation(write_note, {"text": "started"})
    for _ in range(500):
        notes = await ctx.run_query(notes_query_internal, {})
        if "go" in notes:
            break
        await asyncio.sleep(0.01)
    ctx.scheduler.run_after(0, write_note, {"text": "child"})


@query(args={})
def notes_query_internal(ctx: Any) -> list[str]:
    return [doc["text"] for doc in ctx.db.query("job_notes").collect()]


@mutation(args={"n": v.int64()})
def schedule_many(ctx: Any, n: int) -> None:
    for i in range(n):
        ctx.scheduler.run_after(60, write_note, {"text": str(i)})


@internal_mutation(args={"n": v.int64()})
def schedule_many_and_raise(ctx: Any, n: int) -> None:
    schedule_many.handler(ctx, n)
    raise ConvexError("inner failed")


@mutation(args={"n": v.int64()})
def schedule_many_after_a_failed_child(ctx: Any, n: int) -> None:
    try:
        ctx.run_mutation(schedule_many_and_raise, {"n": n})
    except ConvexError:
        pass
    schedule_many.handler(ctx, n)


@internal_mutation(args={"key": v.string()})
def bump(ctx: Any, key: str) -> None:
    """One row per run of job ``key``: the race tests check each ran exactly once."""
    ctx.db.insert("job_runs", {"key": key})


@internal_action(args={"key": v.string()})
async def bump_from_action(ctx: Any, key: str) -> None:
    await ctx.run_mutation(bump, {"key": key})


@internal_mutation(args={"due": v.float64()})
def expire_if_due(ctx: Any, due: float) -> None:
    """A job scheduled at ``due`` that checks the clock, as a Convex job checks
    ``Date.now()`` (the deadline may have moved since it was scheduled)."""
    ctx.db.insert("job_notes", {"text": "expired" if ctx.now >= due else "not yet"})
    ctx.scheduler.run_after(60, write_note, {"text": "a minute later"})


@mutation(args={"keys": v.array(v.string())})
def schedule_bumps(ctx: Any, keys: list[str]) -> list[str]:
    """Schedule, for each key, a mutation job and an action job (``action:<key>``)."""
    mutations = [ctx.scheduler.run_after(0, bump, {"key": key}) for key in keys]
    actions = [
        ctx.scheduler.run_after(0, bump_from_action, {"key": "action:" + key}) for key in keys
    ]
    return mutations + actions


@query(args={})
def job_summary(ctx: Any) -> dict[str, Any]:
    """Job states by kind, and runs by key."""
    states: dict[str, int] = {}
    for job in ctx.db.system.query("_scheduled_functions").collect():
        states[job["state"]["kind"]] = states.get(job["state"]["kind"], 0) + 1
    runs: dict[str, int] = {}
    for row in ctx.db.query("job_runs").collect():
        runs[row["key"]] = runs.get(row["key"], 0) + 1
    return {"states": states, "runs": runs}


@internal_mutation(args={"delay": v.number()})
def reschedule_forever(ctx: Any, delay: float) -> None:
    ctx.scheduler.run_after(delay, reschedule_forever, {"delay": delay})


@internal_mutation(args={"pause": v.number()})
def increment_shared(ctx: Any, pause: float) -> None:
    """Every job reads and writes one row: scheduled jobs conflict with each other.

    ``pause`` (seconds, between the read and the write) widens the window in which
    executors' transactions overlap, so conflicts happen on every run.
    """
    row = ctx.db.query("job_counter").first()
    time.sleep(pause)
    if row is None:
        ctx.db.insert("job_counter", {"n": 1})
    else:
        ctx.db.patch(row["_id"], {"n": row["n"] + 1})


@mutation(args={"n": v.int64(), "pause": v.number()})
def schedule_increments(ctx: Any, n: int, pause: float) -> None:
    for _ in range(n):
        ctx.scheduler.run_after(0, increment_shared, {"pause": pause})


@query(args={})
def shared_count(ctx: Any) -> int:
    row = ctx.db.query("job_counter").first()
    return 0 if row is None else int(row["n"])


@internal_mutation(args={})
def cancel_own_job(ctx: Any) -> None:
    own = ctx.db.system.query("_scheduled_functions").first()
    ctx.scheduler.cancel(own["_id"])


@mutation(args={"size": v.int64(), "n": v.int64()})
def schedule_big(ctx: Any, size: int, n: int) -> None:
    for _ in range(n):
        ctx.scheduler.run_after(3600, write_note, {"text": "x" * size})


@internal_action(args={})
async def cancel_self_then_schedule_via_functions(ctx: Any) -> None:
    """As cancel_self_then_schedule, but the children come from functions it calls."""
    await ctx.run_mutation(write_note, {"text": "started"})
    for _ in range(500):
        if "go" in await ctx.run_query(notes_query_internal, {}):
            break
        await asyncio.sleep(0.01)
    await ctx.run_mutation(later, {"text": "via mutation", "delay": 0.0})
    await ctx.run_action(schedule_from_action, {})


@internal_action(args={})
async def schedule_from_action(ctx: Any) -> None:
    ctx.scheduler.run_after(0, write_note, {"text": "via action"})


@internal_action(args={})
async def cancel_own_job_via_mutation(ctx: Any) -> str:
    try:
        await ctx.run_mutation(cancel_own_job, {})
    except Exception as error:
        await ctx.run_mutation(write_note, {"text": str(error)})
    return "done"


@internal_mutation(args={})
def exit_mutation(ctx: Any) -> None:
    ctx.db.insert("job_notes", {"text": "never"})
    raise SystemExit(3)


@internal_action(args={})
async def interrupt_action(ctx: Any) -> None:
    raise KeyboardInterrupt


@internal_action(args={})
async def raise_cancelled_error(ctx: Any) -> None:
    raise asyncio.CancelledError("the action gave up")


@internal_action(args={})
async def await_a_cancelled_task(ctx: Any) -> None:
    # Awaiting a task the action cancelled itself raises CancelledError in the action,
    # though nobody cancelled the action.
    task = asyncio.ensure_future(asyncio.sleep(30))
    await asyncio.sleep(0)
    task.cancel()
    await task


@mutation(args={"size": v.int64(), "n": v.int64()})
def schedule_big_now(ctx: Any, size: int, n: int) -> None:
    for _ in range(n):
        ctx.scheduler.run_after(0, write_note, {"text": "x" * size})


@internal_mutation(args={"n": v.int64()})
def write_many(ctx: Any, n: int) -> None:
    for i in range(n):
        ctx.db.insert("many", {"i": i})


@internal_action(args={"seconds": v.number(), "size": v.int64()})
async def slow_big_action(ctx: Any, seconds: float, size: int) -> None:
    await asyncio.sleep(seconds)


@query(args={})
def slow_notes(ctx: Any) -> list[str]:
    """``notes``, slowly: a subscription to it lags a commit by 50 ms."""
    time.sleep(0.05)
    return [doc["text"] for doc in ctx.db.query("job_notes").collect()]


#: The engine ``close_own_engine`` closes (set by the test that schedules it).
ENGINES_TO_CLOSE: list[Any] = []


@internal_action(args={"through_a_thread": v.optional(v.boolean())})
async def close_own_engine(ctx: Any, through_a_thread: bool = False) -> None:
    engine = ENGINES_TO_CLOSE.pop()
    if through_a_thread:  # as async code calls blocking code
        await asyncio.to_thread(engine.close)
    else:
        engine.close()


#: The engine ``finish_from_own_action`` calls finish_scheduled_functions on.
ENGINES_TO_FINISH: list[Any] = []


@internal_action(args={})
async def finish_from_own_action(ctx: Any) -> None:
    engine = ENGINES_TO_FINISH.pop()
    # A timeout well past what the tests allow: a finish that waits it out (for its own
    # job) fails them by its time as well as by its error.
    await asyncio.to_thread(engine.finish_scheduled_functions, timeout=20.0)


@internal_mutation(args={"payload": v.string(), "error_chars": v.int64()})
def fail_long(ctx: Any, payload: str, error_chars: int) -> None:
    """Fails with an error of ``error_chars`` characters (a ``payload`` makes the job large)."""
    raise ValueError("e" * error_chars)


@internal_action(args={"payload": v.string(), "error_chars": v.int64()})
async def fail_long_action(ctx: Any, payload: str, error_chars: int) -> None:
    """``fail_long`` as an action."""
    raise ValueError("e" * error_chars)


@internal_mutation(args={})
def fail_undecodable(ctx: Any) -> None:
    """Fail with a message holding a lone surrogate, as text from ``os.fsdecode`` of a
    file name that is not UTF-8 does."""
    ctx.db.insert("job_notes", {"text": "never"})
    raise ValueError("cannot read " + os.fsdecode(b"caf\xe9.txt"))


@internal_action(args={})
async def fail_undecodable_action(ctx: Any) -> None:
    """:func:`fail_undecodable`, from an action."""
    raise ValueError("cannot read " + os.fsdecode(b"caf\xe9.txt"))


class UnprintableError(Exception):
    """An error whose ``str()`` itself raises (a custom ``__str__`` with a bug)."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ failed on purpose")


@internal_mutation(args={})
def fail_unprintably(ctx: Any) -> None:
    ctx.db.insert("job_notes", {"text": "never"})
    raise UnprintableError


@internal_action(args={})
async def fail_unprintably_action(ctx: Any) -> None:
    raise UnprintableError
