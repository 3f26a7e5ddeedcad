"""Users: who the caller is, and the record the app keeps for them."""

from __future__ import annotations

from typing import Any

from engine import ConvexError, MutationCtx, QueryCtx, internal_query, mutation, query, v


def current_user(ctx: QueryCtx) -> dict[str, Any] | None:
    """The users row of the caller, or None (not signed in, or not stored yet)."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        return None
    return (
        ctx.db.query("users")
        .with_index("byExternalId", lambda q: q.eq("externalId", identity.subject))
        .unique()
    )


def require_user(ctx: QueryCtx) -> dict[str, Any]:
    user = current_user(ctx)
    if user is None:
        raise ConvexError({"code": "UNAUTHENTICATED", "message": "Sign in first."})
    return user


@mutation(args={}, returns=v.id("users"))
def store(ctx: MutationCtx) -> str:
    """Create (or update) the caller's users row from their identity; returns its id."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise ConvexError({"code": "UNAUTHENTICATED", "message": "Sign in first."})
    name = identity.name or identity.subject
    user = current_user(ctx)
    if user is not None:
        if user["name"] != name:
            ctx.db.patch(user["_id"], {"name": name})
        return str(user["_id"])
    return ctx.db.insert("users", {"name": name, "externalId": identity.subject})


@query(args={})
def me(ctx: QueryCtx) -> dict[str, Any] | None:
    """The caller's users row, or None."""
    return current_user(ctx)


@internal_query(args={"id": v.id("users")})
def get(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    return ctx.db.get(id)
