"""Functions using file storage: the shape of a Convex app that keeps avatars."""

from __future__ import annotations

from typing import Any

from engine import (
    ActionCtx,
    ConvexError,
    MutationCtx,
    QueryCtx,
    action,
    internal_mutation,
    mutation,
    query,
    v,
)


@mutation(args={})
def upload_url(ctx: MutationCtx) -> str:
    return ctx.storage.generate_upload_url()


@mutation(args={"name": v.string(), "avatar": v.id("_storage")}, returns=v.id("profiles"))
def save_profile(ctx: MutationCtx, name: str, avatar: str) -> str:
    return ctx.db.insert("profiles", {"name": name, "avatar": avatar})


@query(args={"id": v.id("profiles")})
def profile(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    row = ctx.db.get(id)
    if row is None:
        return None
    return {
        "name": row["name"],
        "url": ctx.storage.get_url(row["avatar"]),
        "file": ctx.db.system.get(row["avatar"]),
    }


@query(args={})
def files(ctx: QueryCtx) -> list[dict[str, Any]]:
    return ctx.db.system.query("_storage").collect()


@query(args={"id": v.id("_storage")})
def url(ctx: QueryCtx, id: str) -> str | None:
    return ctx.storage.get_url(id)


@mutation(args={"id": v.id("profiles")})
def remove_profile(ctx: MutationCtx, id: str) -> None:
    row = ctx.db.get(id)
    if row is None:
        raise ConvexError("no such profile")
    ctx.storage.delete(row["avatar"])
    ctx.db.delete(id)


@mutation(args={"id": v.id("_storage"), "fail": v.boolean()})
def delete_file(ctx: MutationCtx, id: str, fail: bool) -> None:
    ctx.storage.delete(id)
    if fail:
        raise ConvexError("changed my mind")


@internal_mutation(args={"id": v.id("_storage")})
def delete_inner(ctx: MutationCtx, id: str) -> None:
    ctx.storage.delete(id)
    raise ConvexError("inner failed")


@mutation(args={"id": v.id("_storage")})
def delete_nested(ctx: MutationCtx, id: str) -> bool:
    ctx.db.insert("audit", {"tried": id})  # so the outer mutation commits something
    try:
        ctx.run_mutation(delete_inner, {"id": id})
    except ConvexError:
        return ctx.db.system.get(id) is not None
    return False


@action(args={"text": v.string(), "name": v.string()})
async def make_profile(ctx: ActionCtx, text: str, name: str) -> dict[str, Any]:
    storage_id = await ctx.storage.store(text.encode(), "text/plain")
    profile_id = await ctx.run_mutation(save_profile, {"name": name, "avatar": storage_id})
    return {
        "storageId": storage_id,
        "profileId": profile_id,
        "bytes": await ctx.storage.get(storage_id),
        "url": await ctx.storage.get_url(storage_id),
        "metadata": await ctx.storage.get_metadata(storage_id),
    }


@action(args={"id": v.id("_storage")})
async def drop(ctx: ActionCtx, id: str) -> Any:
    await ctx.storage.delete(id)
    return [await ctx.storage.get(id), await ctx.storage.get_url(id)]
