"""Channels: create them and list them."""

from __future__ import annotations

from typing import Any

from engine import ConvexError, MutationCtx, QueryCtx, internal_mutation, mutation, query, v

from .users import require_user


@mutation(args={"name": v.string(), "topic": v.optional(v.string())}, returns=v.id("channels"))
def create(ctx: MutationCtx, name: str, topic: str | None = None) -> str:
    """Create a channel; names are unique (checked in the same transaction)."""
    require_user(ctx)
    taken = ctx.db.query("channels").with_index("by_name", lambda q: q.eq("name", name)).first()
    if taken is not None:
        raise ConvexError({"code": "NAME_TAKEN", "name": name})
    fields: dict[str, Any] = {"name": name}
    if topic is not None:
        fields["topic"] = topic
    return ctx.db.insert("channels", fields)


@query(args={})
def list(ctx: QueryCtx) -> list[dict[str, Any]]:  # Convex-style name, shadows list here
    """Every channel, by name."""
    return ctx.db.query("channels").with_index("by_name").collect()


@query(args={"name": v.string()})
def by_name(ctx: QueryCtx, name: str) -> dict[str, Any] | None:
    return ctx.db.query("channels").with_index("by_name", lambda q: q.eq("name", name)).unique()


@internal_mutation(args={})
def refresh_topics(ctx: MutationCtx) -> int:
    """Set each channel's topic to its message count (run hourly by a cron: crons.py)."""
    channels = ctx.db.query("channels").collect()
    for channel in channels:
        count = len(
            ctx.db.query("messages")
            .with_index("by_channel", lambda q, c=channel["_id"]: q.eq("channel", c))
            .collect()
        )
        ctx.db.patch(channel["_id"], {"topic": f"{count} message{'' if count == 1 else 's'}"})
    return len(channels)
