"""Messages: send, list a channel page by page, and an action that summarizes."""

from __future__ import annotations

from typing import Any

from engine import (
    ActionCtx,
    MutationCtx,
    QueryCtx,
    action,
    mutation,
    pagination_opts,
    query,
    v,
)

from .users import require_user


@mutation(args={"channel": v.id("channels"), "body": v.string()}, returns=v.id("messages"))
def send(ctx: MutationCtx, channel: str, body: str) -> str:
    """Post a message as the signed-in user."""
    user = require_user(ctx)  # signed out: ConvexError({"code": "UNAUTHENTICATED", ...})
    return ctx.db.insert("messages", {"author": user["_id"], "channel": channel, "body": body})


@query(args={"channel": v.id("channels"), "paginationOpts": pagination_opts})
def list_channel(ctx: QueryCtx, channel: str, paginationOpts: dict[str, Any]) -> Any:
    """Newest messages of a channel first, one page at a time."""
    return (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .order("desc")
        .paginate(paginationOpts)
    )


@action(args={"channel": v.string()})
async def summarize(ctx: ActionCtx, channel: str) -> dict[str, Any]:
    """Read a channel (a query), then record a summary message (a mutation)."""
    found = await ctx.run_query("channels:by_name", {"name": channel})
    if found is None:
        return {"messages": 0, "summary": None}
    page = await ctx.run_query(
        list_channel, {"channel": found["_id"], "paginationOpts": {"numItems": 100, "cursor": None}}
    )
    words = sum(len(m["body"].split()) for m in page["page"])
    summary = f"{len(page['page'])} messages, {words} words"
    await ctx.run_mutation(send, {"channel": found["_id"], "body": f"[summary] {summary}"})
    return {"messages": len(page["page"]), "summary": summary}
