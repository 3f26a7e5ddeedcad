"""Auth: token verifications/s with a cached key, and the cost a token adds to a query call."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import auth
from tests.auth.conftest import ISSUER, Signer


def run(report: Any) -> None:
    from engine import Engine

    seconds = 0.5 if report.quick else 2.0
    for alg, kid in (("RS256", "ins_rsa"), ("ES256", "ec_1")):
        signer = Signer(alg, kid)
        provider: Any = (
            auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [signer.jwk()]})
            if alg == "RS256"
            else auth.CustomJwtProvider(
                issuer=ISSUER,
                jwks={"keys": [signer.jwk()]},
                algorithm="ES256",
                application_id="convex",
            )
        )
        config = auth.AuthConfig(providers=[provider])
        token = signer.token(name="Ada", email="a@x.dev")
        # The signature check itself (the JWKS key is cached; the token cache is bypassed).
        report.measure(
            f"verify {alg}",
            lambda c=config, t=token: c._verify(t),
            seconds=seconds,
            group=f"verify a token ({alg}, cached key)",
            system="convexlite auth",
        )
        report.measure(
            f"verify {alg} again",
            lambda c=config, t=token: c.verify(t),
            seconds=seconds,
            group=f"the same token again ({alg}, token cache)",
            system="convexlite auth",
        )
    claims = {"iss": ISSUER, "sub": "user_1", "name": "Ada", "sid": "s", "v": 2}
    report.measure(
        "identity",
        lambda: auth.UserIdentity.from_claims(claims),
        seconds=seconds,
        group="build a UserIdentity from claims",
        system="convexlite auth",
    )
    signer = Signer("RS256", "ins_rsa")
    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [signer.jwk()]})]
    )
    token = signer.token()
    with (
        tempfile.TemporaryDirectory() as folder,
        Engine.open(os.path.join(folder, "db"), durability="none", auth=config) as engine,
    ):
        verified = config.verify(token)
        query = lambda: engine.query(lambda ctx: ctx.auth.get_user_identity())  # noqa: E731
        report.measure(
            "query", query, seconds=seconds, group="query call", system="convexlite, no auth"
        )
        report.measure(
            "query",
            lambda: engine.query(lambda ctx: ctx.auth.get_user_identity(), auth=verified),
            seconds=seconds,
            group="query call",
            system="convexlite, verified identity",
        )
        report.measure(
            "query",
            lambda: engine.query(lambda ctx: ctx.auth.get_user_identity(), auth=token),
            seconds=seconds,
            group="query call",
            system="convexlite, raw token (RS256)",
        )
