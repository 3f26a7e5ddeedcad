"""Paginating functions that call each other (each run may paginate once)."""

from __future__ import annotations

from typing import Any

from engine import mutation, pagination_opts, query


@query(args={"opts": pagination_opts})
def child_page(ctx: Any, opts: dict[str, Any]) -> dict[str, Any]:
    return ctx.db.query("rows").paginate(opts)  # type: ignore[no-any-return]


@query(args={"opts": pagination_opts})
def parent_page(ctx: Any, opts: dict[str, Any]) -> dict[str, Any]:
    mine = ctx.db.query("rows").order("desc").paginate(opts)
    theirs = ctx.run_query(child_page, {"opts": opts})
    return {"mine": [d["n"] for d in mine["page"]], "theirs": [d["n"] for d in theirs["page"]]}


@query(args={})
def two_children(ctx: Any) -> list[int]:
    a = ctx.run_query(child_page, {"opts": {"numItems": 2, "cursor": None}})
    b = ctx.run_query(child_page, {"opts": {"numItems": 3, "cursor": None}})
    return [d["n"] for d in a["page"] + b["page"]]


@mutation(args={})
def two_children_in_a_mutation(ctx: Any) -> list[int]:
    a = ctx.run_query(child_page, {"opts": {"numItems": 2, "cursor": None}})
    b = ctx.run_query(child_page, {"opts": {"numItems": 3, "cursor": None}})
    return [d["n"] for d in a["page"] + b["page"]]
