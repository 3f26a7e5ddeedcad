"""A function factory (like a ``make_crud`` helper): its functions are defined here but
exported, and so named, by the modules that call it."""

from __future__ import annotations

from typing import Any

from engine import FunctionDef, MutationCtx, QueryCtx, mutation, query, v


def make_crud(table: str) -> tuple[FunctionDef, FunctionDef]:
    @mutation(args={"doc": v.any()})
    def create(ctx: MutationCtx, doc: Any) -> str:
        return ctx.db.insert(table, doc)

    @query(args={})
    def count(ctx: QueryCtx) -> int:
        return len(ctx.db.query(table).collect())

    return create, count
