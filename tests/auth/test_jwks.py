"""JWKS over HTTP: discovery, caching by Cache-Control, rotation, outages (127.0.0.1)."""

from __future__ import annotations

import threading
import time

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


@pytest.mark.parametrize("broken", ["garbage", "truncated", "list", "issuer-null"])
def test_broken_replies_are_key_fetch_errors_and_keep_cached_keys(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock, broken: str
) -> None:
    """Review 9 bug 4: a non-HTTP reply, a truncated body, a JSON list or a discovery
    document with ``issuer: null`` is a KeyFetchError, and cached keys keep serving."""
    jwks_server.keys = [rsa_signer.jwk()]
    jwks_server.broken = broken
    cold = auth.AuthConfig(providers=[provider(jwks_server, clock)])
    with pytest.raises(auth.KeyFetchError, match=r"(?s)[Ee]xpected.*found.*Fix:"):
        cold.verify(rsa_signer.token(iss=jwks_server.url))
    jwks_server.broken = None
    warm = auth.AuthConfig(providers=[provider(jwks_server, clock)])
    warm.verify(rsa_signer.token(iss=jwks_server.url))
    jwks_server.broken = broken
    clock.now += 301  # the cached keys are stale: the refresh fails, the stale keys serve
    assert warm.verify(rsa_signer.token(iss=jwks_server.url, jti="stale")).subject == "user_123"


def test_failed_refresh_waits_a_cooldown_before_the_next_fetch(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    """Review 9 bug 5: during an outage after the cache expired, 50 verifications make
    one request, not 50; the next attempt comes one cooldown (30 s) later."""
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url))
    jwks_server.down = True
    clock.now += 301
    for i in range(50):
        assert config.verify(rsa_signer.token(iss=jwks_server.url, jti=str(i))).subject
    assert jwks_server.hits["/jwks"] == 2
    clock.now += 31
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="after-cooldown"))
    assert jwks_server.hits["/jwks"] == 3
    jwks_server.down = False
    clock.now += 31
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="recovered"))
    assert jwks_server.hits["/jwks"] == 4
    clock.now += 299  # fresh again (max-age=300): no request
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="fresh"))
    assert jwks_server.hits["/jwks"] == 4


def test_cold_cache_failure_also_waits_a_cooldown(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    jwks_server.down = True
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    for i in range(5):
        with pytest.raises(auth.KeyFetchError, match="HTTP 503"):
            config.verify(rsa_signer.token(iss=jwks_server.url, jti=str(i)))
    assert jwks_server.hits["/jwks"] == 1
    jwks_server.down = False
    clock.now += 31
    assert config.verify(rsa_signer.token(iss=jwks_server.url, jti="up")).subject == "user_123"
    assert jwks_server.hits["/jwks"] == 2


def test_slow_outage_does_not_serialize_callers(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    """Review 9 bug 5: 8 concurrent verifications while the issuer takes 1 s to fail
    take about 1 s in all (one request), not 8 s one after another under the lock."""
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url))
    jwks_server.down = True
    jwks_server.delay = 1.0
    clock.now += 301
    tokens = [rsa_signer.token(iss=jwks_server.url, jti=f"slow{i}") for i in range(8)]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda t=t: results.append(config.verify(t).subject))
        for t in tokens
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == ["user_123"] * 8
    assert jwks_server.hits["/jwks"] == 2
    assert elapsed < 3.0, f"{elapsed:.1f} s: callers waited for each other's refresh"
