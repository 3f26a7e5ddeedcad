"""Signed tokens whose claims have the wrong shape: huge numbers, lists and objects
where a string belongs. Each is a MalformedToken naming the claim, never an
OverflowError, a ValueError or an identity that cannot be hashed."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

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


# -- nesting ------------------------------------------------------------------


def _signed(signer: Signer, deep: str) -> str:
    """A token signed by ``signer`` whose claim ``deep`` is the JSON text ``deep`` (built
    by hand: json.dumps itself recurses, and gives up thousands of levels down)."""
    now = int(time.time())
    payload = (
        f'{{"iss":"{ISSUER}","sub":"user_123","aud":"convex","iat":{now - 1},'
        f'"exp":{now + 60},"deep":{deep}}}'
    ).encode()
    header = json.dumps({"alg": "RS256", "typ": "JWT", "kid": signer.kid}).encode()
    signing_input = _b64(header) + "." + _b64(payload)
    signature = signer.private.sign(  # type: ignore[call-arg, union-attr]
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return signing_input + "." + _b64(signature)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


def _objects(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def _configs(signer: Signer) -> list[auth.AuthConfig]:
    jwks = {"keys": [signer.jwk()]}
    return [
        clerk(signer),
        auth.AuthConfig(providers=[auth.CustomJwtProvider(ISSUER, jwks=jwks)]),
    ]


@pytest.mark.parametrize("levels", [128, 450, 600, 1500])  # 1500: past json's own limit
@pytest.mark.parametrize("shape", [_arrays, _objects], ids=["arrays", "objects"])
def test_claims_nested_too_deep_are_malformed_tokens(
    rsa_signer: Signer, shape: Callable[[int], str], levels: int
) -> None:
    """Hunt (auth): a signed token whose claim nested a few hundred levels (arrays ~450,
    objects ~600) raised RecursionError from read_only, not an AuthError. A payload is
    nested 128 levels at most, itself included (a claim 127)."""
    token = _signed(rsa_signer, shape(levels))
    for config in _configs(rsa_signer):
        with pytest.raises(
            auth.MalformedToken, match=r"(?s)expected JSON nested at most 128.*Fix:"
        ):
            config.verify(token)


@pytest.mark.parametrize("shape", [_arrays, _objects], ids=["arrays", "objects"])
def test_claims_nested_to_the_limit_verify(
    db_path: Path, rsa_signer: Signer, shape: Callable[[int], str]
) -> None:
    """127 levels in a claim (128 with the payload) verify: the identity is hashable, its
    claims read-only all the way down, also through the engine, whose stack is deeper."""
    token = _signed(rsa_signer, shape(127))
    for config in _configs(rsa_signer):
        identity = config.verify(token)
        assert hash(identity) == hash(identity)
    inner: Any = clerk(rsa_signer).verify(token).claims["deep"]
    depth = 1
    while True:
        child = (inner[0] if inner else None) if isinstance(inner, list) else inner.get("a")
        if not isinstance(child, (list, dict)):
            break
        inner, depth = child, depth + 1
    assert depth == 127
    with pytest.raises(TypeError, match="read-only"):
        inner.clear()
    with Engine.open(db_path, durability="none", auth=clerk(rsa_signer)) as engine:
        assert engine.query(whoami, {}, auth=token) == "user_123"
        with pytest.raises(auth.MalformedToken, match="nested at most 128"):
            engine.query(whoami, {}, auth=_signed(rsa_signer, shape(128)))


def test_read_only_and_flattening_do_not_recurse() -> None:
    """Whatever the depth of a host's claims (or of the caller's stack), making them
    read-only or flattening them (customJwt) uses no stack per level."""
    from auth.claims import _flatten
    from auth.identity import read_only

    levels = sys.getrecursionlimit() * 20
    arrays: Any = []
    objects: Any = {}
    for _ in range(levels):
        arrays, objects = [arrays], {"a": objects}
    frozen = read_only({"arrays": arrays, "objects": objects})
    depth, inner = 0, frozen["arrays"]
    while inner:
        depth, inner = depth + 1, inner[0]
    assert depth == levels
    with pytest.raises(TypeError, match="read-only"):
        inner.append(1)
    flat = _flatten({"objects": objects, "x": 1})
    assert list(flat) == ["objects" + ".a" * levels, "x"]
    assert flat["objects" + ".a" * levels] == {}


def test_read_only_keeps_order_and_sharing() -> None:
    """read_only copies each list and object once, keeping key order; a structure that
    contains itself (a host's) gives a read-only one that does too, never a hang."""
    from auth.identity import read_only

    shared = {"k": 1}
    value: dict[str, Any] = {"b": [shared, shared], "a": {"z": 1, "y": [2, 3]}}
    frozen = read_only(value)
    assert frozen == value and list(frozen) == ["b", "a"] and list(frozen["a"]) == ["z", "y"]
    assert frozen["b"][0] is frozen["b"][1]
    loop: list[Any] = [1]
    loop.append(loop)
    frozen_loop = read_only(loop)
    assert frozen_loop[1] is frozen_loop and frozen_loop is not loop


def _stack_depth() -> int:
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
    return depth


def _with_frames_left(frames: int, call: Callable[[], Any]) -> Any:
    """``call()`` with only ``frames`` levels of Python recursion left above this one
    (a caller deep in its own stack), the outcome or the exception returned."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + frames)
    try:
        return call()
    except Exception as error:
        return error
    finally:
        sys.setrecursionlimit(limit)


def test_nested_claims_never_raise_recursion_error_however_deep_the_stack(
    rsa_signer: Signer,
) -> None:
    """A caller already deep in its stack (the engine's is deeper than a test's) gets an
    identity or a MalformedToken for a token at the nesting limit, never RecursionError;
    with about 200 levels of stack above what a flat token needs, it verifies (making the
    claims read-only took two levels of stack per level of nesting, 254 here)."""
    flat, deep = _signed(rsa_signer, "1"), _signed(rsa_signer, _arrays(127))
    for config in _configs(rsa_signer):
        verify = config.providers[0].verify  # uncached: each call verifies
        needed = next(
            frames
            for frames in range(10, 1000, 5)
            if isinstance(_with_frames_left(frames, lambda: verify(flat)), auth.UserIdentity)
        )
        for frames in range(needed, needed + 260, 3):
            outcome = _with_frames_left(frames, lambda: verify(deep))
            assert isinstance(outcome, (auth.UserIdentity, auth.MalformedToken)), (frames, outcome)
        outcome = _with_frames_left(needed + 200, lambda: verify(deep))
        assert isinstance(outcome, auth.UserIdentity), outcome
