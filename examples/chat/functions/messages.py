"""Messages: send, list a channel page by page, an action that summarizes, reminders
posted later by the scheduler, file attachments, and search by words and by meaning."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from engine import (
    ActionCtx,
    MutationCtx,
    QueryCtx,
    action,
    internal_mutation,
    internal_query,
    mutation,
    pagination_opts,
    query,
    v,
)

from .users import require_user


@mutation(
    args={
        "channel": v.id("channels"),
        "body": v.string(),
        "attachment": v.optional(v.id("_storage")),
    },
    returns=v.id("messages"),
)
def send(ctx: MutationCtx, channel: str, body: str, attachment: str | None = None) -> str:
    """Post a message as the signed-in user, with a stored file attached if given."""
    user = require_user(ctx)  # signed out: ConvexError({"code": "UNAUTHENTICATED", ...})
    message = {"author": user["_id"], "channel": channel, "body": body, "embedding": embed(body)}
    if attachment is not None:
        message["attachment"] = attachment
    return ctx.db.insert("messages", message)


@mutation(
    args={"channel": v.id("channels"), "body": v.string(), "seconds": v.float64()},
    returns=v.id("_scheduled_functions"),
)
def remind(ctx: MutationCtx, channel: str, body: str, seconds: float) -> str:
    """Schedule a reminder message: the job commits with this mutation, or not at all."""
    user = require_user(ctx)
    return ctx.scheduler.run_after(  # type: ignore[no-any-return]
        seconds, post_reminder, {"channel": channel, "author": user["_id"], "body": body}
    )


@internal_mutation(args={"channel": v.id("channels"), "author": v.id("users"), "body": v.string()})
def post_reminder(ctx: MutationCtx, channel: str, author: str, body: str) -> None:
    """Run by the scheduler (no identity), exactly once."""
    text = f"[reminder] {body}"
    ctx.db.insert(
        "messages", {"author": author, "channel": channel, "body": text, "embedding": embed(text)}
    )


@action(args={"channel": v.id("channels"), "name": v.string(), "text": v.string()})
async def attach(ctx: ActionCtx, channel: str, name: str, text: str) -> str:
    """Store a text file, then post a message carrying it; returns the message id."""
    storage_id = await ctx.storage.store(text.encode(), "text/plain")
    message: str = await ctx.run_mutation(
        send, {"channel": channel, "body": f"attached {name}", "attachment": storage_id}
    )
    return message


@query(args={"message": v.id("messages")})
def attachment_url(ctx: QueryCtx, message: str) -> str | None:
    """A download URL of the message's file (None without one)."""
    found = ctx.db.get(message)
    if found is None or "attachment" not in found:
        return None
    return ctx.storage.get_url(found["attachment"])  # type: ignore[no-any-return]


@query(args={"channel": v.id("channels"), "paginationOpts": pagination_opts})
def list_channel(ctx: QueryCtx, channel: str, paginationOpts: dict[str, Any]) -> Any:
    """Newest messages of a channel first, one page at a time."""
    return (
        ctx.db.query("messages")
        .with_index("by_channel", lambda q: q.eq("channel", channel))
        .order("desc")
        .paginate(paginationOpts)
    )


@query(args={"channel": v.id("channels"), "text": v.string()})
def search(ctx: QueryCtx, channel: str, text: str) -> list[str]:
    """The bodies of the channel's 5 messages most relevant to ``text`` (full-text search;
    the last word also matches as a prefix)."""
    found = (
        ctx.db.query("messages")
        .with_search_index("search_body", lambda q: q.search("body", text).eq("channel", channel))
        .take(5)
    )
    return [message["body"] for message in found]


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


def embed(text: str) -> list[float]:
    """A toy 32-dimension embedding (each word hashed to a signed dimension, the sum
    scaled to length 1): deterministic, so a mutation may compute it. A real app calls an
    embedding model from an action and stores the vector with ``ctx.run_mutation``."""
    vector = [0.0] * 32
    for word in text.lower().replace("-", " ").split():
        digest = hashlib.blake2b(word.strip("[]().,:;!?").encode(), digest_size=2).digest()
        vector[digest[0] % 32] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


@action(args={"channel": v.id("channels"), "text": v.string()})
async def similar(ctx: ActionCtx, channel: str, text: str) -> list[str]:
    """The bodies of the channel's 3 messages nearest to ``text`` by embedding (a vector
    search, in an action as in Convex; the documents are loaded with a query)."""
    results = await ctx.vector_search(
        "messages",
        "by_embedding",
        vector=embed(text),
        limit=3,
        filter=lambda q: q.eq("channel", channel),
    )
    found: list[str] = await ctx.run_query(bodies, {"ids": [r["_id"] for r in results]})
    return found


@internal_query(args={"ids": v.array(v.id("messages"))})
def bodies(ctx: QueryCtx, ids: list[str]) -> list[str]:
    """The bodies of messages ``ids``, in order (deleted ones left out)."""
    return [m["body"] for m in (ctx.db.get(i) for i in ids) if m is not None]
