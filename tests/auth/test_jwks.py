"""JWKS over HTTP: discovery, caching by Cache-Control, rotation, outages (127.0.0.1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

import auth
from tests.auth.conftest import ISSUER, Clock, JwksServer, Signer


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


def test_a_jwks_url_given_as_jwks_is_fetched_by_either_provider(
    jwks_server: JwksServer, rsa_signer: Signer
) -> None:
    """Hunt (auth): ClerkProvider(jwks="https://.../.well-known/jwks.json"), written as
    Convex's customJwt config writes its jwks, raised ValueError "Expected a JWKS as
    JSON" (CustomJwtProvider took the URL). Both providers fetch a URL given as jwks."""
    jwks_server.keys = [rsa_signer.jwk()]
    url = jwks_server.url + "/jwks"
    for made in (
        auth.ClerkProvider(issuer=ISSUER, jwks=url),
        auth.CustomJwtProvider(issuer=ISSUER, jwks=url),
    ):
        assert auth.AuthConfig(providers=[made]).verify(rsa_signer.token()).subject == "user_123"
    assert jwks_server.hits == {"/jwks": 2}


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


@pytest.mark.parametrize("cache_control", ["no-store", "public, no-cache"])
def test_no_store_and_no_cache_mean_no_cache(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock, cache_control: str
) -> None:
    """``no-cache`` means revalidate before every use (it was cached 300 s here)."""
    jwks_server.keys = [rsa_signer.jwk()]
    jwks_server.cache_control = cache_control
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="1"))
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="2"))
    assert jwks_server.hits["/jwks"] == 2


def test_age_shortens_the_cache(jwks_server: JwksServer, rsa_signer: Signer, clock: Clock) -> None:
    """Convex fetches keys through an HTTP cache: a reply already ``Age`` seconds old (from
    a CDN) is fresh only for the rest of its max-age (it was cached 300 s here)."""
    jwks_server.keys = [rsa_signer.jwk()]
    jwks_server.cache_control = "public, max-age=300"
    jwks_server.headers = {"Age": "290"}
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="3"))
    assert jwks_server.hits["/jwks"] == 1
    clock.now += 5  # 295 s old: still fresh
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="4"))
    assert jwks_server.hits["/jwks"] == 1
    clock.now += 6  # 301 s old: stale, fetched again
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="5"))
    assert jwks_server.hits["/jwks"] == 2

    jwks_server.headers = {"Age": "soon"}  # not a number: ignored
    clock.now += 301
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="6"))
    clock.now += 200
    config.verify(rsa_signer.token(iss=jwks_server.url, jti="7"))
    assert jwks_server.hits["/jwks"] == 3


def test_a_cached_token_expires_without_fetching_keys(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    """A subscription's deadline asks ``seconds_left(token)`` once the token ran out. The
    cached verification already proves the token's signature and gives its exp, yet the
    token was verified again from scratch: with the key set stale by then, the subscription
    worker fetched discovery and JWKS (blocking every subscription and every mutation
    waiting on them for up to the 10 s deadline when the issuer is slow), and a key rotated
    away since made it UnknownKey instead of TokenExpired."""
    jwks_server.keys = [rsa_signer.jwk()]
    now = [time.time()]
    clerk = auth.ClerkProvider(issuer=jwks_server.url, clock=lambda: now[0])
    clerk._keys._clock = clock  # type: ignore[union-attr]
    config = auth.AuthConfig(providers=[clerk])
    token = rsa_signer.token(iss=jwks_server.url, exp=int(now[0]) + 60)
    assert config.seconds_left(token) > 50
    hits = dict(jwks_server.hits)
    clock.now += 301  # the key set went stale meanwhile
    now[0] += 66  # and the token ran out (60 s, plus the 5 s leeway)
    jwks_server.keys = [Signer("RS256", "ins_rotated").jwk()]  # its key rotated away
    for check in (config.seconds_left, config.verify):
        with pytest.raises(auth.TokenExpired):
            check(token)
    assert jwks_server.hits == hits  # decided from the cached verification: no fetch


@pytest.mark.parametrize("forget", ["a full cache", "a configuration change"])
def test_an_expired_token_no_longer_cached_ends_without_fetching_keys(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock, forget: str
) -> None:
    """Hunt (auth): once a full token cache (1024 tokens: a minute of a busy server's
    Clerk tokens) or a configuration change had forgotten a subscription's token, the
    worker's expiry check verified it from scratch: with the key set stale it fetched
    the keys on the subscription worker, so every subscription, and every mutation
    waiting on them, stalled for as long as the issuer took (4.3 s in a scratch repro
    with a hanging issuer, up to the 10 s fetch deadline). seconds_left of an expired
    token is a TokenExpired read from its exp, without a key lookup."""
    jwks_server.keys = [rsa_signer.jwk()]
    now = [time.time()]
    clerk = auth.ClerkProvider(issuer=jwks_server.url, clock=lambda: now[0])
    clerk._keys._clock = clock  # type: ignore[union-attr]
    config = auth.AuthConfig(providers=[clerk])
    config.cache_size = 1
    token = rsa_signer.token(iss=jwks_server.url, exp=int(now[0]) + 60)
    assert config.seconds_left(token) > 50
    if forget == "a full cache":
        config.verify(rsa_signer.token(iss=jwks_server.url, jti="another user"))
    else:
        clerk.leeway = 4.0
    hits = dict(jwks_server.hits)
    clock.now += 301  # the key set went stale meanwhile
    now[0] += 66  # and the token ran out
    jwks_server.delay = 5.0  # the issuer hangs: a fetch would take 5 s
    started = time.monotonic()
    with pytest.raises(auth.TokenExpired, match=r"(?s)expected.*found.*Fix:"):
        config.seconds_left(token)
    assert jwks_server.hits == hits and time.monotonic() - started < 2.5
    jwks_server.delay = 0.0
    fresh = rsa_signer.token(iss=jwks_server.url, exp=int(now[0]) + 60, jti="new")
    assert config.seconds_left(fresh) > 50  # an unexpired token is still verified


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


# -- limits of a fetch ------------------------------------------------------


def _fetching(server: JwksServer, get: object = None) -> auth.AuthConfig:
    kwargs = {} if get is None else {"get": get}
    return auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=server.url, jwks_url=server.url + "/jwks", **kwargs)]
    )


def test_a_fetch_has_a_total_deadline_of_10_seconds_by_default() -> None:
    import inspect

    from auth import keys

    assert keys.FETCH_DEADLINE == 10.0
    assert inspect.signature(keys.http_get).parameters["deadline"].default == keys.FETCH_DEADLINE


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_a_trickling_server_hits_the_total_deadline(
    jwks_server: JwksServer, rsa_signer: Signer, mode: str
) -> None:
    """A server sending a byte every 50 ms never trips the 5 s per-read timeout; it held
    a fetch for as long as it liked (1 byte/s: 12 s with timeout=5). The fetch's total
    deadline (10 s by default, 0.5 s here) ends it with a KeyFetchError naming the URL."""
    from functools import partial

    from auth import keys

    jwks_server.broken = mode
    config = _fetching(jwks_server, partial(keys.http_get, deadline=0.5))
    started = time.monotonic()
    with pytest.raises(auth.KeyFetchError, match=r"(?s)/jwks.*within 0.5 s.*Fix:"):
        config.verify(rsa_signer.token(iss=jwks_server.url))
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("mode", ["huge", "huge-length"])
def test_a_huge_reply_is_refused_at_1_mib(
    jwks_server: JwksServer, rsa_signer: Signer, mode: str
) -> None:
    """A 300 MB body was read whole (+900 MB of memory); now at most 1 MiB is read."""
    jwks_server.broken = mode
    started = time.monotonic()
    with pytest.raises(auth.KeyFetchError, match=r"(?s)/jwks.*at most 1 MiB.*Fix:"):
        _fetching(jwks_server).verify(rsa_signer.token(iss=jwks_server.url))
    assert time.monotonic() - started < 3.0
    assert jwks_server.sent < 64 << 20  # the client stopped reading (socket buffers aside)


def test_a_custom_getter_is_held_to_the_size_cap(rsa_signer: Signer, clock: Clock) -> None:
    def get(url: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, b'{"keys": []}' + b" " * (1 << 20)

    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer="https://x.example", jwks_url="https://x/j", get=get)]
    )
    with pytest.raises(auth.KeyFetchError, match=r"(?s)https://x/j.*at most 1 MiB.*Fix:"):
        config.verify(rsa_signer.token(iss="https://x.example"))


def test_discovery_must_name_the_issuer_exactly(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    """Convex (openidconnect) requires the discovery document's issuer to be the issuer
    exactly; one with a trailing '/' was accepted."""
    jwks_server.keys = [rsa_signer.jwk()]
    jwks_server.broken = "issuer-slash"
    config = auth.AuthConfig(providers=[provider(jwks_server, clock)])
    with pytest.raises(auth.KeyFetchError, match=r"(?s)issuer.*/'.*Fix:"):
        config.verify(rsa_signer.token(iss=jwks_server.url))


@pytest.mark.parametrize(
    ("cache_control", "age", "fresh_for"),
    [
        ("public, max-age=600, s-maxage=60", "", 60.0),  # a shared cache takes s-maxage
        ("s-maxage=60", "", 60.0),
        ("private, max-age=600", "", 0.0),  # a shared cache keeps no private reply
        ('no-cache="set-cookie", max-age=600', "", 600.0),  # only that field
        ("no-cache", "", 0.0),
        ("max-age=600", "590", 10.0),
        ("foo-max-age=5", "", 300.0),  # not max-age: the default
        ("", "", 300.0),
    ],
)
def test_freshness_is_a_shared_http_caches(cache_control: str, age: str, fresh_for: float) -> None:
    """Convex fetches keys through http-cache-semantics with ``shared: true``: found by
    review, s-maxage and private were read as a private cache reads them."""
    fetcher = auth.JwksFetcher("https://issuer.example/jwks")
    headers = {"cache-control": cache_control, **({"age": age} if age else {})}
    assert fetcher._max_age(headers) == fresh_for


# -- odd key entries --------------------------------------------------------


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "odd",
    [
        {"kty": ["RSA"]},  # unhashable kty: was a TypeError
        {"kty": {"x": 1}},
        {"kty": 7},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "x5c": _nested(5000)},  # was a RecursionError
    ],
    ids=["kty-list", "kty-object", "kty-number", "deep-entry"],
)
def test_an_odd_key_entry_is_skipped(rsa_signer: Signer, odd: dict[str, object]) -> None:
    """Hunt (auth): an entry whose kty is not a string, or one nested thousands of levels,
    is skipped like any key of an unknown type, in a static jwks= as over HTTP."""
    from auth.keys import keys_from_jwks

    good = rsa_signer.jwk()
    assert [key.kid for key in keys_from_jwks({"keys": [odd, good]})] == [rsa_signer.kid]
    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [odd, good]})]
    )
    assert config.verify(rsa_signer.token()).subject == "user_123"


def test_an_odd_key_entry_over_http_is_skipped_and_the_keys_cached(
    jwks_server: JwksServer, rsa_signer: Signer, clock: Clock
) -> None:
    """Hunt (auth): an issuer's JWKS gaining an entry with a non-string kty made every
    verification raise TypeError and fetch the keys again (3 verifications, 3 fetches);
    the entry is skipped, and the key set is cached as usual."""
    jwks_server.keys = [rsa_signer.jwk()]
    config = auth.AuthConfig(
        providers=[provider(jwks_server, clock, jwks_url=jwks_server.url + "/jwks")]
    )
    config.verify(rsa_signer.token(iss=jwks_server.url))
    jwks_server.keys = [{"kty": {"x": 1}}, rsa_signer.jwk()]
    clock.now += 301  # the cached keys are stale
    for i in range(3):
        token = rsa_signer.token(iss=jwks_server.url, jti=f"odd{i}")
        assert config.verify(token).subject == "user_123"
    assert jwks_server.hits["/jwks"] == 2  # one refresh, then cached for max-age


class _CountingLock:
    """The fetcher's lock, counting the callers that asked for it with blocking=True."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self.waiters = 0

    def acquire(self, blocking: bool = True) -> bool:
        if blocking:
            with self._changed:
                self.waiters += 1
                self._changed.notify_all()
        return self._lock.acquire(blocking)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wait_for_waiters(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.waiters >= count, timeout=10.0)


@pytest.mark.parametrize("cache_control", ["no-store", "max-age=0"])
def test_a_cold_cache_makes_one_fetch_for_all_waiting_callers(
    jwks_server: JwksServer, rsa_signer: Signer, cache_control: str
) -> None:
    """Hunt (auth): with a cold cache and a reply that may not be cached, 12 concurrent
    first verifications made 12 fetches one after another (each waiter found the keys
    stale once it had the lock, and fetched again). Every caller that found the cache
    cold and waited for the fetch uses the keys it brought: one fetch."""
    jwks_server.keys = [rsa_signer.jwk()]
    jwks_server.cache_control = cache_control
    callers = 12
    lock = _CountingLock()
    all_waiting: list[bool] = []

    def get(url: str) -> tuple[int, Mapping[str, str], bytes]:
        # The fetch starts only once every caller has asked for the lock: the first
        # holds it, the others wait behind it for the keys.
        all_waiting.append(lock.wait_for_waiters(callers))
        return auth.keys.http_get(url)

    provider = auth.ClerkProvider(
        issuer=jwks_server.url,
        jwks_url=jwks_server.url + "/jwks",
        get=get,
    )
    provider._keys._lock = lock  # type: ignore[union-attr, assignment]
    config = auth.AuthConfig(providers=[provider])
    tokens = [rsa_signer.token(iss=jwks_server.url, jti=f"cold{i}") for i in range(callers)]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda t=t: results.append(config.verify(t).subject))
        for t in tokens
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all_waiting[0], f"only {lock.waiters} of {callers} callers reached the lock"
    assert results == ["user_123"] * callers
    assert jwks_server.hits["/jwks"] == 1
