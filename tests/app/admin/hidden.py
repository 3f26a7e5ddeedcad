"""An internal default export: reachable by name only from other functions."""

from __future__ import annotations

from engine import QueryCtx, internal_query


@internal_query(args={})
def default(ctx: QueryCtx) -> str:
    return "hidden"
