from __future__ import annotations

from engine import MutationCtx, internal_mutation, v


@internal_mutation(args={"id": v.string()})
def remove(ctx: MutationCtx, id: str) -> None:
    ctx.db.delete(id)
