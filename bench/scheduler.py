"""Scheduled functions: how soon a job scheduled with no delay runs, and jobs/s.

Latency: a mutation schedules a job with ``run_after(0, ...)``; the time until the
job's mutation has run (the engine's background worker, woken by the commit),
beside calling the same mutation directly after the scheduling one returns.
Throughput: 1,000 due jobs run by ``finish_scheduled_functions`` (each job: a
claim-and-run transaction that also records ``success``) beside the same 1,000
mutations called directly. Durability ``none``: the figures are the code's.
There is no sqlite3 or raw LMDB baseline: neither has a scheduler; the direct
calls are the floor.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from typing import Any

from engine import MutationCtx, internal_mutation, mutation, v

#: Set by the job (a side effect outside the transaction: for this benchmark only).
_DONE: dict[int, threading.Event] = {}


@internal_mutation(args={"token": v.int64()})
def job(ctx: MutationCtx, token: int) -> None:
    ctx.db.insert("done", {"token": token})
    event = _DONE.get(token)
    if event is not None:
        event.set()


@mutation(args={"token": v.int64()})
def schedule_one(ctx: MutationCtx, token: int) -> str:
    return ctx.scheduler.run_after(0, job, {"token": token})  # type: ignore[no-any-return]


@mutation(args={"count": v.int64()})
def schedule_many(ctx: MutationCtx, count: int) -> None:
    for token in range(count):
        ctx.scheduler.run_after(0, job, {"token": -1 - token})


@mutation(args={"token": v.int64()})
def direct(ctx: MutationCtx, token: int) -> None:
    ctx.db.insert("done", {"token": token})


def run(report: Any) -> None:
    from engine import Engine

    functions = sys.modules[__name__]
    quick = getattr(report, "quick", False)
    seconds = 0.5 if quick else 2.0
    count = 200 if quick else 1000
    with tempfile.TemporaryDirectory() as folder:
        with Engine.open(os.path.join(folder, "bg"), functions=functions, durability="none") as db:
            tokens = iter(range(1, 1 << 40))

            def scheduled() -> None:
                token = next(tokens)
                event = _DONE[token] = threading.Event()
                db.mutation(schedule_one, {"token": token})
                if not event.wait(10):
                    raise RuntimeError("a scheduled job did not run within 10 s")
                del _DONE[token]

            report.measure_interleaved(
                "delay-0 job, schedule to done",
                {
                    "convexlite scheduled": scheduled,
                    "convexlite direct call": lambda: db.mutation(direct, {"token": 0}),
                },
                group="a mutation, then another one run for it",
                seconds=seconds,
            )
        path = os.path.join(folder, "fg")
        with Engine.open(path, functions=functions, durability="none", scheduler=False) as db:
            db.mutation(schedule_many, {"count": count})
            started = time.perf_counter()
            ran = db.finish_scheduled_functions(timeout=600)
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            for token in range(count):
                db.mutation(direct, {"token": token})
            direct_elapsed = time.perf_counter() - started
        report.note("jobs run by finish_scheduled_functions", ran)
        report.note("scheduled mutation jobs/s (finish_scheduled_functions)", round(ran / elapsed))
        report.note("the same mutations called directly /s", round(count / direct_elapsed))
