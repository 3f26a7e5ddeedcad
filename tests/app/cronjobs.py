"""Functions that crons run: the crons' unit tests (tests/unit/test_crons.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from engine import UNSET, ConvexError, internal_action, internal_mutation, mutation, query, v


@internal_mutation(args={"label": v.string()})
def tick(ctx: Any, label: str) -> str:
    ctx.db.insert("ticks", {"label": label, "now": ctx.now})
    return label


@mutation(args={})
def fail(ctx: Any) -> None:
    ctx.db.insert("ticks", {"label": "never committed", "now": ctx.now})
    raise ConvexError("cron failure")


@internal_action(args={"label": v.string(), "seconds": v.number()})
async def act(ctx: Any, label: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    await ctx.run_mutation(tick, {"label": label})
    return f"acted {label}"


@query(args={})
def ticks(ctx: Any) -> list[str]:
    return [doc["label"] for doc in ctx.db.query("ticks").collect()]


@query(args={})
def read_only(ctx: Any) -> None:
    return None


@internal_mutation(args={"cron": v.string()})
def record_run(ctx: Any, cron: str) -> None:
    """Record which run of cron ``cron`` this is (its ``nextTs``, not yet moved on)."""
    row = ctx.db.system.query("_cron_jobs").with_index("by_name", lambda q: q.eq("name", cron))
    ctx.db.insert("cron_runs", {"cron": cron, "run": row.unique()["nextTs"]})


@query(args={})
def runs(ctx: Any) -> list[float]:
    return [doc["run"] for doc in ctx.db.query("cron_runs").collect()]


@internal_mutation(args={"depth": v.int64()})
def deep(ctx: Any, depth: int) -> Any:
    """Return a value nested ``depth`` levels (a valid result up to 64 levels)."""
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    ctx.db.insert("ticks", {"label": "deep", "now": ctx.now})
    return value


@internal_mutation(args={"size": v.int64()})
def huge_error(ctx: Any, size: int) -> None:
    raise ValueError("x" * size)


@internal_mutation(args={"size": v.int64(), "padding": v.string()})
def padded_error(ctx: Any, size: int, padding: str) -> None:
    raise ValueError("x" * size)


@internal_mutation(args={"size": v.int64(), "padding": v.string()})
def padded_result(ctx: Any, size: int, padding: str) -> str:
    """Return a result of ``size`` characters (logged whole up to 1,000 bytes)."""
    return "r" * size


@internal_mutation(args={})
def python_shaped(ctx: Any) -> Any:
    """Return a result in Python's spellings of Convex values (a tuple, a bytearray, an
    UNSET field): the result is the value they stand for."""
    ctx.db.insert("ticks", {"label": "python_shaped", "now": ctx.now})
    return {"pair": (1, 2.5), "raw": bytearray(b"\x00"), "gone": UNSET}


@internal_action(args={})
async def python_shaped_action(ctx: Any) -> Any:
    """:func:`python_shaped`, from an action."""
    return {"pair": (1, 2.5), "raw": bytearray(b"\x00"), "gone": UNSET}


@internal_mutation(args={})
def undefined(ctx: Any) -> Any:
    """Return UNSET (Convex's undefined): the result is null."""
    ctx.db.insert("ticks", {"label": "undefined", "now": ctx.now})
    return UNSET
