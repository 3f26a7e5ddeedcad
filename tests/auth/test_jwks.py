"""JWKS over HTTP: discovery, caching by Cache-Control, rotation, outages (127.0.0.1)."""

from __future__ import annotations

import pytest

import auth
from tests.auth.conftest import Clock, JwksServer, Signer


def provider(server: JwksServer, clock: Clock, **kwargs) -> auth.ClerkProvider:  # type: ignore[no-untyped-def]
    p = auth.ClerkProvider(issuer=server.url, **kwargs)
    p._keys._clock = clock  # type: ignore[union-attr]
    return p


def test_discovery_then_cached_keys(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(providers=[provider(jwks_server, clock)])
    for i in range(5):  # distinct tokens: a repeated token would not even look at the keys
        assert config.verify(rsa_signer.token(iss=jwks_server.url, jti=str(i))).subject == (
            "user_123"
        )
    assert jwks_server.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}
    clock.now += 301  # max-age=300 passed
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="later"))
    assert jwks_server.hits["/jwks"] == 2


def test_unknown_kid_refetches_once_per_cooldown(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url))
    rotated = Signer("RS256", "ins_new")
    jwks_server.keys = [rsa_signer.jwk(), rotated.jwk()]
    clock.now += 31  # past the cooldown: the unknown kid triggers one refetch
    assert config.verify(rotated.token(iss=jwks_server.url)).subject == "user_123"
    hits = jwks_server.hits["/jwks"]
    stranger = Signer("RS256", "ins_nobody")
    for _ in range(3):
        with pytest.raises(auth.UnknownKey):
            config.verify(stranger.token(iss=jwks_server.url))
    assert jwks_server.hits["/jwks"] == hits  # within the cooldown: no refetch storm


def test_outage_keeps_serving_cached_keys(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(providers=[provider(jwks_server, clock)])
    config.verify(rsa_signer.token(iss=jwks_server.url))
    jwks_server.down = True
    clock.now += 1000
    fresh = rsa_signer.token(iss=jwks_server.url, jti="during-outage")
    assert config.verify(fresh).subject == "user_123"
    assert jwks_server.hits["/.well-known/openid-configuration"] >= 2  # it tried to refresh


def test_first_fetch_failure_is_an_auth_error(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    jwks_server.down = True
    config = auth.AuthConfig(providers=[provider(jwks_server, clock)])
    with pytest.raises(auth.KeyFetchError, match="HTTP 503"):
        config.verify(rsa_signer.token(iss=jwks_server.url))


def test_no_store_means_no_cache(jwks_server: JwksServer, rsa_signer: Signer, clock: Clock) -> None:
    jwks_server.keys = [rsa_signer.jwk()]
    jwks_server.cache_control = "no-store"
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="1"))
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="2"))
    assert jwks_server.hits["/jwks"] == 2
