"""Functions exercising every part of the runtime."""

from __future__ import annotations

from typing import Any

from engine import (
    ActionCtx,
    ConvexError,
    LimitExceeded,
    MutationCtx,
    QueryCtx,
    action,
    internal_query,
    mutation,
    query,
    v,
)


@mutation(args={"text": v.string()}, returns=v.string())
def add(ctx: MutationCtx, text: str) -> str:
    return ctx.db.insert("notes", {"text": text})


@query(args={}, returns=v.array(v.string()))
def texts(ctx: QueryCtx) -> list[str]:
    return [n["text"] for n in ctx.db.query("notes").collect()]


@query
def untyped(ctx: QueryCtx, **args: Any) -> Any:
    return args


@query(args={})
def bad_return(ctx: QueryCtx) -> Any:
    return {1, 2}


@query(args={}, returns=v.string())
def wrong_return(ctx: QueryCtx) -> Any:
    return 5


@query(args={})
def try_write(ctx: QueryCtx) -> None:
    ctx.db.insert("notes", {"text": "no"})  # type: ignore[attr-defined]


@query(args={})
def who(ctx: QueryCtx) -> Any:
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


@internal_query(args={})
def secret(ctx: QueryCtx) -> str:
    return "internal"


@query(args={})
def call_secret(ctx: QueryCtx) -> str:
    return str(ctx.run_query(secret))


@mutation(args={"fail": v.boolean()})
def child(ctx: MutationCtx, fail: bool) -> None:
    ctx.db.insert("notes", {"text": "child"})
    if fail:
        raise ConvexError({"code": "CHILD_FAILED"})


@mutation(args={})
def parent(ctx: MutationCtx) -> str:
    ctx.db.insert("notes", {"text": "parent"})
    ctx.run_mutation(child, {"fail": False})
    try:
        ctx.run_mutation(child, {"fail": True})
    except ConvexError as error:
        return str(error.data["code"])
    return "no error"


@mutation(args={})
def fail_with_data(ctx: MutationCtx) -> None:
    ctx.db.insert("notes", {"text": "never"})
    raise ConvexError({"code": "NOPE", "n": 1})


@mutation(args={})
def clock(ctx: MutationCtx) -> list[Any]:
    return [ctx.now, ctx.now, ctx.random.random(), ctx.env.get("GREETING")]


@action(args={"text": v.string()})
async def add_and_count(ctx: ActionCtx, text: str) -> dict[str, Any]:
    await ctx.run_mutation(add, {"text": text})
    notes = await ctx.run_query(texts, {})
    who_am_i = await ctx.run_query(who, {})
    return {"count": len(notes), "who": who_am_i}


@action(args={})
async def mutation_error_in_action(ctx: ActionCtx) -> None:
    await ctx.run_mutation(fail_with_data, {})


@query(args={"n": v.float64()})
def long_text(ctx: QueryCtx, n: float) -> str:
    return "x" * int(n)


@mutation(args={"n": v.float64()})
def catches_a_long_text(ctx: MutationCtx, n: float) -> str:
    ctx.db.insert("notes", {"text": "kept"})
    try:
        ctx.run_query(long_text, {"n": n})
    except LimitExceeded as error:
        return error.limit
    return "no error"


@action(args={"text": v.string()})
async def forgets_await(ctx: ActionCtx, text: str) -> Any:
    return ctx.run_mutation(add, {"text": text})  # no await: a bug the engine names


@query(args={"level": v.float64()})
def deep(ctx: QueryCtx, level: float) -> str:
    return "bottom" if level == 0 else str(ctx.run_query(deep, {"level": level - 1}))
