"""Functions made by a factory and exported here: named ``pets:create``, ``pets:count``."""

from __future__ import annotations

from typing import Any

from engine import ActionCtx, MutationCtx, QueryCtx, action, mutation, query, v

from .factory import make_crud

create, count = make_crud("pets")

#: Called by ``mutate_args`` after its read (a test makes a concurrent commit there).
after_read: list[Any] = []


@query(args={"id": v.id("pets")}, returns=v.id("pets"))
def echo_pet(ctx: QueryCtx, id: str) -> str:
    return id


@mutation(args={"tags": v.array(v.string()), "meta": v.object({"n": v.int64()})})
def mutate_args(ctx: MutationCtx, tags: list[str], meta: dict[str, Any]) -> Any:
    """Changes its arguments in place, then conflicts once (see the retry test)."""
    seen = (list(tags), dict(meta))
    tags.append("changed")
    meta["n"] += 1
    ctx.db.query("pets").collect()  # a read a concurrent insert conflicts with
    for hook in after_read:
        hook()
    ctx.db.insert("pet_log", {"tags": tags})  # a write: a read-only mutation never conflicts
    return seen


@action(args={})
async def count_from_action(ctx: ActionCtx) -> Any:
    return await ctx.run_query(count, {})
