"""auth.require_identity / require_role / require_permission inside engine functions."""

from __future__ import annotations

import pytest

import auth
from engine import ConvexError, Engine


def identity(**org) -> auth.UserIdentity:  # type: ignore[no-untyped-def]
    return auth.UserIdentity.from_claims({"iss": "https://i", "sub": "u1", **org})


def test_guards(db_path) -> None:  # type: ignore[no-untyped-def]
    admin = identity(o={"id": "org_1", "rol": "admin", "per": "read", "fpm": "1"}, fea="o:billing")
    with Engine.open(db_path, durability="none") as engine:
        with pytest.raises(ConvexError) as caught:
            engine.query(lambda ctx: auth.require_identity(ctx))
        assert caught.value.data["code"] == "UNAUTHENTICATED"
        assert engine.query(lambda ctx: auth.require_role(ctx, "admin").subject, auth=admin) == "u1"
        assert (
            engine.query(
                lambda ctx: auth.require_permission(ctx, "org:billing:read").subject, auth=admin
            )
            == "u1"
        )
        with pytest.raises(ConvexError) as caught:
            engine.query(lambda ctx: auth.require_role(ctx, "member"), auth=admin)
        assert caught.value.data["code"] == "FORBIDDEN"
        with pytest.raises(ConvexError):
            engine.query(lambda ctx: auth.require_permission(ctx, "org:x:y"), auth=identity())


def test_guards_given_the_wrong_arguments_say_what_they_take(db_path) -> None:  # type: ignore[no-untyped-def]
    """Hunt (misuse): require_identity(ctx.auth) raised "AttributeError: 'Auth' object has
    no attribute 'auth'", and require_role(ctx, None) "'NoneType' object has no attribute
    'startswith'"; require_permission(ctx, None) answered FORBIDDEN, as if it were a
    permission the caller lacked."""
    admin = identity(o={"id": "org_1", "rol": "admin", "per": "read", "fpm": "1"}, fea="o:billing")
    with Engine.open(db_path, durability="none") as engine:
        for call, expected in [
            (
                lambda ctx: auth.require_identity(ctx.auth),
                r"takes the function's ctx.*not ctx\.auth",
            ),
            (lambda ctx: auth.require_role(ctx.auth, "admin"), r"takes the function's ctx"),
            (lambda ctx: auth.require_permission(None, "a"), r"takes the function's ctx.*None"),
            (
                lambda ctx: auth.require_role(ctx, None),
                r"role.*a non-empty str.*found NoneType None",
            ),
            (lambda ctx: auth.require_permission(ctx, ["org:billing:read"]), r"permission.*str"),
        ]:
            with pytest.raises(TypeError, match=expected):
                engine.query(call, auth=admin)


def test_tokens_through_the_engine(db_path, rsa_signer) -> None:  # type: ignore[no-untyped-def]
    from tests.auth.conftest import ISSUER

    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})]
    )
    with Engine.open(db_path, durability="none", auth=config) as engine:
        who = engine.query(
            lambda ctx: ctx.auth.get_user_identity().token_identifier, auth=rsa_signer.token()
        )
        assert who == f"{ISSUER}|user_123"
        assert engine.query(lambda ctx: ctx.auth.get_user_identity()) is None
        with pytest.raises(auth.TokenExpired):
            engine.query(lambda ctx: None, auth=rsa_signer.token(exp=1))
