"""The Clerk user sync: idempotent, order-proof upserts, tombstones, the sign-up race."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

import auth
from engine import Engine, define_schema

SECRET = "whsec_" + base64.b64encode(b"clerk-sync-test-secret-0123").decode()
SCHEMA = define_schema({"users": auth.clerk_users_table()})


def deliver(engine: Engine, event: dict[str, Any], msg_id: str = "msg_1") -> Any:
    body = json.dumps(event)
    ts = int(time.time())
    key = base64.b64decode(SECRET[6:])
    sig = base64.b64encode(
        hmac.new(key, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
    ).decode()
    headers = {"svix-id": msg_id, "svix-timestamp": str(ts), "svix-signature": f"v1,{sig}"}
    return auth.handle_clerk_webhook(engine, SECRET, headers, body)


def user_event(kind: str, updated_at: int, first: str = "Ada") -> dict[str, Any]:
    return {
        "type": kind,
        "timestamp": updated_at,
        "data": {
            "id": "user_1",
            "first_name": first,
            "last_name": "L",
            "updated_at": updated_at,
            "primary_email_address_id": "e1",
            "image_url": "https://img/1.png",
            "email_addresses": [
                {"id": "e0", "email_address": "old@x.dev"},
                {"id": "e1", "email_address": "ada@x.dev"},
            ],
        },
    }


def rows(engine: Engine) -> list[dict[str, Any]]:
    return engine.query(lambda ctx: ctx.db.query("users").collect())


@pytest.fixture
def engine(db_path: Path):  # type: ignore[no-untyped-def]
    with Engine.open(db_path, schema=SCHEMA, durability="none") as handle:
        yield handle
        handle.check()


def test_fields_from_a_clerk_payload() -> None:
    fields = auth.clerk_user_fields(user_event("user.created", 5)["data"])
    assert fields == {
        "externalId": "user_1",
        "name": "Ada L",
        "email": "ada@x.dev",
        "pictureUrl": "https://img/1.png",
        "clerkUpdatedAt": 5.0,
    }


def test_duplicates_and_out_of_order_updates(engine: Engine) -> None:
    deliver(engine, user_event("user.created", 10))
    deliver(engine, user_event("user.created", 10))  # duplicate delivery
    deliver(engine, user_event("user.updated", 30, first="Grace"))
    deliver(engine, user_event("user.updated", 20, first="Stale"))  # arrives late
    [row] = rows(engine)
    assert row["name"] == "Grace L" and row["clerkUpdatedAt"] == 30.0


def test_delete_before_create_leaves_a_tombstone(engine: Engine) -> None:
    deliver(engine, {"type": "user.deleted", "timestamp": 50, "data": {"id": "user_1"}})
    deliver(engine, user_event("user.created", 10))  # late create must not resurrect
    [row] = rows(engine)
    assert row["deletedAt"] == 50.0 and "name" not in row


def test_sign_up_race(engine: Engine) -> None:
    identity = auth.UserIdentity.from_claims({"iss": "https://i", "sub": "user_1", "name": "Ada"})
    assert engine.query(lambda ctx: auth.current_user(ctx), auth=identity) is None
    made = engine.mutation(lambda ctx: auth.current_user(ctx), auth=identity)
    assert made["name"] == "Ada" and made["clerkUpdatedAt"] == 0.0
    deliver(engine, user_event("user.created", 10))
    [row] = rows(engine)
    assert row["_id"] == made["_id"] and row["email"] == "ada@x.dev"


def test_bad_signature_changes_nothing(engine: Engine) -> None:
    body = json.dumps(user_event("user.created", 10))
    with pytest.raises(auth.WebhookVerificationError):
        auth.handle_clerk_webhook(
            engine,
            SECRET,
            {"svix-id": "m", "svix-timestamp": str(int(time.time())), "svix-signature": "v1,AAAA"},
            body,
        )
    assert rows(engine) == []


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ([1, 2], "a JSON object"),
        ({"type": "user.created", "data": [1]}, "data of the Clerk event 'user.created'"),
        ({"type": "user.updated", "data": "x"}, "data of the Clerk event 'user.updated'"),
        (
            {"type": "user.deleted", "data": {"id": "user_1"}, "timestamp": "soon"},
            "timestamp of the Clerk event 'user.deleted'",
        ),
        (
            {"type": "user.deleted", "data": {"id": "user_1"}, "timestamp": float("nan")},
            "timestamp",
        ),
        (
            {"type": "user.deleted", "data": {"id": "user_1"}, "timestamp": 10**400},
            "timestamp",
        ),
        # Found by the docs audit: a user's data of another shape raised KeyError,
        # ValueError, TypeError or AttributeError (HTTP 500), or stored str() of an id.
        ({"type": "user.created", "data": {}}, "'id' of the Clerk user"),
        ({"type": "user.created", "data": {"id": 7}}, "'id' of the Clerk user"),
        ({"type": "user.deleted", "data": {"id": {"a": 1}}}, "'id' of the Clerk user"),
        (
            {"type": "user.updated", "data": {"id": "user_1", "updated_at": "x"}},
            "'updated_at' of the Clerk user",
        ),
        (
            {"type": "user.updated", "data": {"id": "user_1", "created_at": float("nan")}},
            "'created_at' of the Clerk user",
        ),
        (
            {"type": "user.created", "data": {"id": "user_1", "first_name": 5}},
            "'first_name' of the Clerk user",
        ),
        (
            {"type": "user.created", "data": {"id": "user_1", "email_addresses": [5]}},
            "'email_addresses' of the Clerk user",
        ),
    ],
)
def test_a_signed_body_clerk_never_sends_is_a_bad_delivery(
    engine: Engine, event: Any, expected: str
) -> None:
    """Signed, but not an event of Clerk's shape: WebhookVerificationError (HTTP 400),
    not an AttributeError or ValueError, and nothing written."""
    with pytest.raises(auth.WebhookVerificationError, match=expected):
        deliver(engine, event)
    assert rows(engine) == []


def test_other_events_and_a_null_data_still_pass(engine: Engine) -> None:
    assert deliver(engine, {"type": "session.created", "data": [1]})["type"] == "session.created"
    assert deliver(engine, {"type": "user.deleted", "data": None})["data"] is None
    assert rows(engine) == []


def test_a_user_whose_metadata_is_not_a_convex_value_still_syncs(engine: Engine) -> None:
    """Hunt (auth): the whole of Clerk's user data went to upsert_from_clerk, so a user
    whose metadata (unsafe_metadata is written by the user's own browser) held a
    non-ASCII or "$" key, an int past 64 bits or JSON nested past 64 levels made every
    delivery about them an ArgumentValidationError (HTTP 500, retried by Svix for days)
    and their row never synced. Only the fields the sync reads are passed on."""
    event = user_event("user.updated", 10)
    event["data"]["unsafe_metadata"] = {"prénom": "Ada", "$x": 1, "big": 2**70}
    event["data"]["public_metadata"] = {"deep": json.loads("[" * 70 + "]" * 70)}
    event["data"]["email_addresses"][1]["verification"] = {"é": 1}
    assert deliver(engine, event)["data"]["unsafe_metadata"]["prénom"] == "Ada"
    [row] = rows(engine)
    assert row["name"] == "Ada L" and row["email"] == "ada@x.dev" and row["clerkUpdatedAt"] == 10.0
    assert auth.clerk_sync.synced_user_data(event["data"]) == {
        "id": "user_1",
        "first_name": "Ada",
        "last_name": "L",
        "updated_at": 10,
        "primary_email_address_id": "e1",
        "image_url": "https://img/1.png",
        "email_addresses": [
            {"id": "e0", "email_address": "old@x.dev"},
            {"id": "e1", "email_address": "ada@x.dev"},
        ],
    }
