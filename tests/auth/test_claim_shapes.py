"""Signed tokens whose claims have the wrong shape: huge numbers, lists and objects
where a string belongs. Each is a MalformedToken naming the claim, never an
OverflowError, a ValueError or an identity that cannot be hashed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import auth
from engine import Engine, QueryCtx, query
from tests.auth.conftest import ISSUER, Signer


def clerk(signer: Signer) -> auth.AuthConfig:
    return auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [signer.jwk()]})]
    )


@pytest.mark.parametrize(
    ("claims", "name"),
    [
        ({"exp": 10**400}, "exp"),
        ({"iat": 10**400}, "iat"),
        ({"nbf": -(10**400)}, "nbf"),
        ({"exp": 10**300}, "exp"),  # a float, but no date: the token would never expire
        ({"iat": -(10**20)}, "iat"),
        ({"updated_at": 10**400}, "updated_at"),
        ({"o": {"id": "org_1", "per": "read", "fpm": "9" * 5000}, "fea": "o:docs"}, "o.fpm"),
    ],
)
def test_huge_numbers_are_malformed_tokens(
    rsa_signer: Signer, claims: dict[str, Any], name: str
) -> None:
    """exp=10**400 raised OverflowError (math.isfinite of a huge int), a 5000-digit fpm
    mask ValueError (int()'s digit limit)."""
    with pytest.raises(auth.MalformedToken, match=rf"(?s)'{name}'.*expected.*found.*Fix:"):
        clerk(rsa_signer).verify(rsa_signer.token(**claims))


def test_dates_up_to_the_year_9999_are_fine(rsa_signer: Signer) -> None:
    token = rsa_signer.token(exp=253402300799, updated_at=253402300799000)  # ms, as Clerk
    assert clerk(rsa_signer).verify(token).updated_at == "9999-12-31T23:59:59+00:00"


SHAPES: list[tuple[dict[str, Any], str]] = [
    ({"o": {"id": ["org_1"]}}, "o.id"),
    ({"o": {"id": {"x": 1}}}, "o.id"),
    ({"o": ["org_1"]}, "o"),
    ({"o": {"id": "org_1", "slg": ["acme"]}}, "o.slg"),
    ({"o": {"id": "org_1", "rol": {"admin": True}}}, "o.rol"),
    ({"o": {"id": "org_1", "per": ["read"], "fpm": "1"}, "fea": "o:a"}, "o.per"),
    ({"o": {"id": "org_1", "per": "read", "fpm": 1}, "fea": "o:a"}, "o.fpm"),
    ({"o": {"id": "org_1", "per": "read", "fpm": "1"}, "fea": ["o:a"]}, "fea"),
    ({"org_id": ["org_1"]}, "org_id"),
    ({"org_id": "org_1", "org_slug": ["acme"]}, "org_slug"),
    ({"org_id": "org_1", "org_role": {"r": 1}}, "org_role"),
    ({"org_id": "org_1", "org_permissions": [["org:a:read"]]}, "org_permissions"),
    ({"name": ["Ada"]}, "name"),
    ({"email": {"primary": "a@x.dev"}}, "email"),
    ({"picture": 5}, "picture"),
    ({"email_verified": "maybe"}, "email_verified"),
    ({"phone_number_verified": [True]}, "phone_number_verified"),
    ({"address": ["1 Main St"]}, "address"),
    ({"address": {"formatted": ["1 Main St"]}}, "address"),
    ({"updated_at": [1]}, "updated_at"),
]


@pytest.mark.parametrize(("claims", "name"), SHAPES)
def test_claims_of_the_wrong_shape_are_malformed_tokens(
    rsa_signer: Signer, claims: dict[str, Any], name: str
) -> None:
    """A list or object where Clerk puts a string made an identity that could not be
    hashed (subscribe() crashed with TypeError) or was silently turned into text."""
    with pytest.raises(auth.MalformedToken, match=rf"(?s)'{name}'.*expected.*found.*Fix:"):
        clerk(rsa_signer).verify(rsa_signer.token(**claims))


@query(args={})
def whoami(ctx: QueryCtx) -> Any:
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


def test_subscribe_with_a_malformed_org_is_an_auth_error(db_path: Path, rsa_signer: Signer) -> None:
    token = rsa_signer.token(o={"id": "org_1", "slg": ["acme"]})
    with (
        Engine.open(db_path, durability="none", auth=clerk(rsa_signer)) as engine,
        pytest.raises(auth.MalformedToken, match="o.slg"),
    ):
        engine.subscribe(whoami, {}, auth=token)


def test_identities_built_by_hand_are_always_hashable() -> None:
    identity = auth.UserIdentity(
        token_identifier="i|u",
        subject="u",
        issuer="i",
        name=["not", "a", "string"],  # type: ignore[arg-type]
        claims={"tags": {"a", "b"}, "nested": {"x": [1, {"y": 2}]}},
        org=auth.Organization(id="org_1", slug=["acme"]),  # type: ignore[arg-type]
    )
    assert hash(identity) == hash(identity)
    assert hash(identity.org) == hash(identity.org)
    assert {identity: 1}[identity] == 1
    # Equal identities hash equal (hash(x) == hash(x) alone could only fail by raising):
    # the same claims inserted in another order.
    twin = auth.UserIdentity(
        token_identifier="i|u",
        subject="u",
        issuer="i",
        name=["not", "a", "string"],  # type: ignore[arg-type]
        claims={"nested": {"x": [1, {"y": 2}]}, "tags": {"b", "a"}},
        org=auth.Organization(id="org_1", slug=["acme"]),  # type: ignore[arg-type]
    )
    assert twin == identity
    assert hash(twin) == hash(identity)
    assert {identity: 1}[twin] == 1
