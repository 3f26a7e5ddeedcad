"""A ready-made Clerk user sync: a ``users`` table kept up to date by Clerk's webhooks.

Put the table in your schema and route Clerk's webhook to :func:`handle_clerk_webhook`::

    schema = define_schema({"users": auth.clerk_users_table(), ...})

    # in the host's HTTP handler for POST /clerk-users-webhook:
    auth.handle_clerk_webhook(engine, secret, request.headers, request.body)

Deliveries are idempotent and order-proof: a duplicate changes nothing, an
older ``updated_at`` never overwrites a newer one, and ``user.deleted``
leaves a tombstone (``deletedAt``) so a late ``user.created`` cannot bring
the user back. :func:`current_user` handles the sign-up race (an
authenticated call that arrives before the ``user.created`` webhook) by
creating the row from the token's identity, which the webhook then updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine import Engine, MutationCtx, QueryCtx, define_table, internal_mutation, v

from .errors import WebhookVerificationError
from .webhooks import verify_webhook

__all__ = [
    "clerk_user_fields",
    "clerk_users_table",
    "current_user",
    "delete_from_clerk",
    "handle_clerk_webhook",
    "synced_user_data",
    "upsert_from_clerk",
]


def clerk_users_table() -> Any:
    """The ``users`` table: one row per Clerk user, looked up by ``externalId``."""
    return define_table(
        {
            "externalId": v.string(),
            "name": v.optional(v.string()),
            "email": v.optional(v.string()),
            "pictureUrl": v.optional(v.string()),
            "clerkUpdatedAt": v.float64(),
            "deletedAt": v.optional(v.float64()),
        }
    ).index("byExternalId", ["externalId"])


def clerk_user_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``users`` fields of a Clerk ``user.created`` / ``user.updated`` payload's ``data``.

    Raises :class:`~auth.WebhookVerificationError` for data not of Clerk's shape (an
    ``id`` that is not a string, a name that is not a string, a time that is not a
    number): a bad delivery, answered HTTP 400.
    """
    _check_user_data(data)
    fields: dict[str, Any] = {"externalId": data["id"]}
    name = " ".join(p for p in (data.get("first_name"), data.get("last_name")) if p)
    if name or data.get("username"):
        fields["name"] = name or str(data["username"])
    primary = data.get("primary_email_address_id")
    for address in data.get("email_addresses") or []:
        if address.get("id") == primary and address.get("email_address"):
            fields["email"] = str(address["email_address"])
    if data.get("image_url"):
        fields["pictureUrl"] = str(data["image_url"])
    fields["clerkUpdatedAt"] = float(data.get("updated_at") or data.get("created_at") or 0)
    return fields


#: The fields of a Clerk user's data that :func:`clerk_user_fields` reads.
_SYNCED = (
    "id",
    "first_name",
    "last_name",
    "username",
    "image_url",
    "primary_email_address_id",
    "updated_at",
    "created_at",
)


def synced_user_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a Clerk ``user.created`` / ``user.updated`` ``data`` the sync reads,
    to pass to :func:`upsert_from_clerk` (which stores the same row as from all of it).

    The rest (``public_metadata``, ``unsafe_metadata``, which the user's own browser
    writes, verification details) need not be a Convex value: a non-ASCII or ``$``
    key, an int past 64 bits or nesting past 64 levels would make the mutation's
    arguments an ``ArgumentValidationError``, and every delivery about that user fail.
    Raises :class:`~auth.WebhookVerificationError` as :func:`clerk_user_fields` does.
    Cost: one pass over the email addresses.

    Example::

        await ctx.run_mutation(upsert_from_clerk, {"data": synced_user_data(event["data"])})
    """
    _check_user_data(data)
    out = {name: data[name] for name in _SYNCED if name in data}
    addresses = data.get("email_addresses")
    if addresses is not None:
        out["email_addresses"] = [
            {k: address[k] for k in ("id", "email_address") if k in address}
            for address in addresses
        ]
    return out


def _shape_error(field: str, expected: str, found: object) -> WebhookVerificationError:
    return WebhookVerificationError(
        f"Expected {expected} as the {field!r} of the Clerk user, found "
        f"{type(found).__name__} {found!r:.40}: send Clerk's event payload as it was signed."
    )


def _check_user_data(data: Mapping[str, Any]) -> None:
    """Refuse a user's ``data`` that Clerk never sends, before anything reads it."""
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise _shape_error("id", "a non-empty string", data.get("id"))
    for name in ("first_name", "last_name", "username", "image_url", "primary_email_address_id"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise _shape_error(name, "a string or null", value)
    addresses = data.get("email_addresses")
    if addresses is not None and not (
        isinstance(addresses, list)
        and all(
            isinstance(address, dict)
            and all(isinstance(address.get(k), str | None) for k in ("id", "email_address"))
            for address in addresses
        )
    ):
        raise _shape_error("email_addresses", "a list of email address objects", addresses)
    for name in ("updated_at", "created_at"):
        value = data.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -_MAX_TIMESTAMP <= value <= _MAX_TIMESTAMP  # NaN, ±inf, 10**400
        ):
            raise _shape_error(name, "a number (milliseconds) or null", value)


def _row(ctx: QueryCtx, external_id: str) -> dict[str, Any] | None:
    return (
        ctx.db.query("users")
        .with_index("byExternalId", lambda q: q.eq("externalId", external_id))
        .unique()
    )


@internal_mutation(args={"data": v.any()})
def upsert_from_clerk(ctx: MutationCtx, data: dict[str, Any]) -> str | None:
    """Insert or update the row of a Clerk user; older or post-deletion updates are ignored."""
    fields = clerk_user_fields(data)
    row = _row(ctx, fields["externalId"])
    if row is None:
        return ctx.db.insert("users", fields)
    if row.get("deletedAt") is not None and row["deletedAt"] >= fields["clerkUpdatedAt"]:
        return None  # deleted after this update was made
    if row["clerkUpdatedAt"] > fields["clerkUpdatedAt"]:
        return str(row["_id"])  # out of order: a newer update is already stored
    ctx.db.replace(row["_id"], fields)
    return str(row["_id"])


@internal_mutation(args={"id": v.string(), "deletedAt": v.float64()})
def delete_from_clerk(ctx: MutationCtx, id: str, deletedAt: float) -> None:
    """Mark a Clerk user deleted (a tombstone, also when the user was never seen)."""
    row = _row(ctx, id)
    if row is None:
        ctx.db.insert("users", {"externalId": id, "clerkUpdatedAt": 0.0, "deletedAt": deletedAt})
    elif row.get("deletedAt") is None or row["deletedAt"] < deletedAt:
        ctx.db.patch(row["_id"], {"deletedAt": deletedAt})


def current_user(ctx: QueryCtx) -> dict[str, Any] | None:
    """The caller's ``users`` row, or None (anonymous, deleted, or not synced yet in a query).

    In a mutation a caller with no row yet (signed up, webhook not arrived)
    gets one made from the token's identity; the webhook then fills it in.
    """
    identity = ctx.auth.get_user_identity()
    if identity is None:
        return None
    row = _row(ctx, identity.subject)
    if row is not None:
        return None if row.get("deletedAt") is not None else row
    if not isinstance(ctx, MutationCtx):
        return None
    fields: dict[str, Any] = {"externalId": identity.subject, "clerkUpdatedAt": 0.0}
    if getattr(identity, "name", None):
        fields["name"] = identity.name
    if getattr(identity, "email", None):
        fields["email"] = identity.email
    ctx.db.insert("users", fields)
    return _row(ctx, identity.subject)


def handle_clerk_webhook(
    engine: Engine, secret: str, headers: Mapping[str, str], body: bytes | str
) -> dict[str, Any]:
    """Verify a Clerk (Svix) delivery and apply it; returns the event.

    Raises :class:`~auth.WebhookVerificationError` (answer HTTP 400) for a bad
    delivery; events other than ``user.*`` are verified and returned untouched.
    """
    event: dict[str, Any] = verify_webhook(secret, headers, body)
    kind, data = _user_event(event)
    if kind in ("user.created", "user.updated"):
        synced = synced_user_data(data)  # another shape: refused before any write
        engine.run(lambda ctx: ctx.run_mutation(upsert_from_clerk, {"data": synced}))
    elif kind == "user.deleted" and data.get("id"):
        if not isinstance(data["id"], str):
            raise _shape_error("id", "a non-empty string", data["id"])
        deleted_at = float(event.get("timestamp") or 0)  # a number: _user_event checked it
        engine.run(
            lambda ctx: ctx.run_mutation(
                delete_from_clerk, {"id": str(data["id"]), "deletedAt": deleted_at}
            )
        )
    return event


#: Beyond any real time in milliseconds (year 2286 is 1e13), and a float exactly.
_MAX_TIMESTAMP = 1e15


def _user_event(event: object) -> tuple[Any, dict[str, Any]]:
    """The ``type`` and ``data`` of a verified event, refusing a shape Clerk never sends.

    The signature holds, so the sender knows the secret; but a body that is not a JSON
    object, a ``user.*`` event whose ``data`` is not an object, or a ``timestamp`` that
    is not a number of milliseconds is a bad delivery (HTTP 400), not an ``AttributeError``.
    """
    if not isinstance(event, dict):
        raise WebhookVerificationError(
            f"Expected a Clerk event (a JSON object) in the webhook body, found "
            f"{type(event).__name__}: send Clerk's event payload as it was signed."
        )
    kind, data = event.get("type"), event.get("data")
    if data is None:
        data = {}
    timestamp = event.get("timestamp")
    if isinstance(kind, str) and kind.startswith("user."):
        if not isinstance(data, dict):
            raise WebhookVerificationError(
                f"Expected an object as the data of the Clerk event {kind!r}, found "
                f"{type(data).__name__}: send Clerk's event payload as it was signed."
            )
        if timestamp is not None and (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, int | float)
            or not -_MAX_TIMESTAMP <= timestamp <= _MAX_TIMESTAMP  # NaN, ±inf, 10**400
        ):
            raise WebhookVerificationError(
                f"Expected a number (milliseconds) as the timestamp of the Clerk event "
                f"{kind!r}, found {timestamp!r:.40}: send Clerk's event payload as it was signed."
            )
    return kind, data if isinstance(data, dict) else {}
