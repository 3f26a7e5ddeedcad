"""Verification keys: a PEM key, a static JWKS, or a JWKS fetched over HTTP.

:class:`JwksFetcher` caches the key set for the ``Cache-Control: max-age``
the server gives (5 minutes when it gives none), refetches at most once per
``cooldown`` when a token names an unknown ``kid`` (key rotation), and keeps
serving the cached keys when a refresh fails (an outage of the issuer does
not log everybody out). A failed fetch is not retried before a ``cooldown``
has passed, and while one caller refreshes stale keys the others keep using
them instead of queueing behind the request; with no keys cached, the callers
queued behind the first fetch use the keys it brought (even a reply that may not
be cached), so a cold cache costs one fetch. Every fetch failure (HTTP error,
broken reply, a document of the wrong shape) is a :class:`KeyFetchError`.
The HTTP getter and the clock are injectable.

The default getter is :func:`auth.fetch.http_get` (re-exported here), which
bounds each fetch in time (10 s) and size (1 MiB); any getter's body is held
to that size too.

``Cache-Control: no-cache`` counts as ``no-store`` (revalidate before each use)
and an ``Age`` header shortens ``max-age``, as in an HTTP cache.

A key is only chosen for a token if its type fits the token's ``alg``
(RS256: RSA of 2048 to 8192 bits; ES256: EC P-256; EdDSA: Ed25519 only, as
Convex's verifiers) and the JWK's own ``alg``, when it has one, is the token's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from .errors import InvalidSignature, KeyFetchError, UnknownKey
from .fetch import (
    FETCH_DEADLINE,
    MAX_FETCH_BYTES,
    HttpGet,
    _LimitExceeded,
    _too_large,
    http_get,
    is_http_url,
)

__all__ = [
    "FETCH_DEADLINE",
    "MAX_FETCH_BYTES",
    "HttpGet",
    "JwksFetcher",
    "Key",
    "KeySet",
    "decode_data_uri",
    "http_get",
    "key_fits",
    "keys_from_jwks",
    "select_key",
]

#: The RSA modulus sizes Convex's verifiers accept (ring's RSA_PKCS1_2048_8192_SHA256).
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192
_KTY_FAMILY = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
#: What each algorithm needs, for messages.
_NEEDS = {
    "RS256": "an RSA key of 2048 to 8192 bits (kty RSA)",
    "ES256": "an EC P-256 key (kty EC, crv P-256)",
    "EdDSA": "an Ed25519 key (kty OKP, crv Ed25519; Ed448 is not allowed)",
}


class Key(NamedTuple):
    """One public key: its ``kid`` and JWK ``alg`` (either may be absent) and the key."""

    kid: str | None
    alg: str | None
    key: Any


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"a {key.key_size}-bit RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey):
        return "an Ed448 key"
    return f"a {type(key).__name__}"


def key_fits(alg: str, key: Key) -> bool:
    """Whether ``key`` may verify a token signed with ``alg`` (key type and JWK ``alg``)."""
    if key.alg is not None and key.alg != alg:
        return False
    public = key.key
    if alg.startswith(("RS", "PS")):
        # Convex verifies RS256 with ring's RSA_PKCS1_2048_8192_SHA256: a shorter modulus
        # is refused (pyjwt would only warn), a longer one too. ring rounds the length up
        # to whole bytes for the lower bound, so it takes 2041 to 2047 bits; we do not
        # (pyjwt would warn on every verification with them; no issuer mints them).
        return isinstance(public, rsa.RSAPublicKey) and (
            RSA_MIN_BITS <= public.key_size <= RSA_MAX_BITS
        )
    if alg == "ES256":
        return isinstance(public, ec.EllipticCurvePublicKey) and isinstance(
            public.curve, ec.SECP256R1
        )
    if alg == "EdDSA":  # Convex allows EdDSA with Ed25519 only (research §1.3)
        return isinstance(public, ed25519.Ed25519PublicKey)
    return False


def select_key(keys: Sequence[Key], kid: str | None, alg: str, *, source: str) -> Any:
    """The one key of ``keys`` for a token with ``kid`` and ``alg``.

    With a ``kid``, only keys with that ``kid`` are candidates (a set of exactly
    one key without a kid, such as a PEM key, matches any ``kid``); without one,
    every key that fits ``alg``. Raises :class:`UnknownKey` when no key has the
    ``kid`` (or several fit), :class:`InvalidSignature` when the named key's type
    does not fit ``alg``. ``source`` names the key set in messages.
    """
    if kid is not None:
        named = [k for k in keys if k.kid == kid]
        if not named and len(keys) == 1 and keys[0].kid is None:
            named = list(keys)  # one key without a kid (a PEM key): any kid
    else:
        named = list(keys)
    fitting = [k for k in named if key_fits(alg, k)]
    if len(fitting) == 1:
        return fitting[0].key
    known = sorted(str(k.kid) for k in keys)
    if kid is not None and not named:
        raise UnknownKey(
            f"No key with kid {kid!r}: expected one of the kids of {source}, {known}; found "
            "none. Fix: if the issuer rotated its keys, give the new key (or use jwks_url / "
            "discovery, which refetch the key set on an unknown kid); otherwise check that "
            "the token comes from this issuer."
        )
    if not fitting:
        found = ", ".join(
            f"kid {k.kid!r} is {_describe(k.key)}" + (f" for alg {k.alg}" if k.alg else "")
            for k in named
        )
        raise InvalidSignature(
            f"Key type does not fit the token's alg {alg}: expected "
            f"{_NEEDS.get(alg, 'a matching key')}; found "
            f"{found or 'no keys'} in {source}. Fix: the token and the key do not belong "
            "together (a forged or mislabeled token); sign with the key its kid names."
        )
    raise UnknownKey(
        f"Expected exactly one key of {source} for a token with alg {alg}"
        + ("" if kid is None else f" and kid {kid!r}")
        + f"; found {len(fitting)}: {known}. Fix: put a kid in the token's header"
        " (or give each key of the JWKS its own kid)."
    )


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:`` URI (``data:[<media type>][;base64],<data>``).

    The data is percent-decoded, then base64-decoded when the URI says
    ``;base64`` (standard or URL-safe alphabet, padding optional). Raises
    ValueError for anything else.
    """
    fix = (
        "Fix: give data:application/json;base64,<base64 of the JWKS> or "
        "data:application/json,<percent-encoded JWKS>."
    )
    if not uri.startswith("data:"):
        raise ValueError(f"Expected a data: URI; found {_show(uri)}. {fix}")
    meta, comma, data = uri[5:].partition(",")
    if not comma:
        raise ValueError(f"Expected a ',' after the media type of the data: URI; found none. {fix}")
    raw = urllib.parse.unquote_to_bytes(data)
    if meta.split(";")[-1].strip().lower() == "base64":
        text = re.sub(rb"\s+", b"", raw).translate(bytes.maketrans(b"-_", b"+/"))
        try:
            raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(
                f"Expected base64 data in the data: URI; found {_show(data)} ({error}). {fix}"
            ) from error
    return raw


def keys_from_jwks(jwks: Mapping[str, Any] | str | bytes) -> list[Key]:
    """The public keys of a JWKS document (a mapping, JSON text or a ``data:`` URI).

    Entries that are not objects, keys of unknown types (a ``kty`` that is not one
    of ``RSA``, ``EC``, ``OKP``, including one that is not a string), with ``use``
    other than ``sig``, or that do not parse (nested too deep to encode, too) are
    skipped. Raises ValueError when the document is not a JWKS: not JSON, not an
    object, or without a ``keys`` list; nothing else.
    """
    fix = 'Fix: give a JWKS, {"keys": [{"kty": "RSA", "kid": ..., "n": ..., "e": ...}, ...]}.'
    document: Any = jwks
    if isinstance(jwks, str) and jwks.startswith("data:"):
        document = decode_data_uri(jwks)
    if isinstance(document, (str, bytes)):
        try:
            document = json.loads(document)
        except (ValueError, RecursionError) as error:
            raise ValueError(
                f"Expected a JWKS as JSON; found {_show(document)} ({error}). {fix}"
            ) from error
    if not isinstance(document, Mapping):
        raise ValueError(f"Expected a JWKS (a JSON object); found {_show(document)}. {fix}")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError(
            f"Expected a JWKS with a 'keys' list; found keys = {_show(entries)}. {fix}"
        )
    algorithms = get_default_algorithms()
    keys: list[Key] = []
    for jwk in entries:
        if not isinstance(jwk, Mapping):
            continue
        kty = jwk.get("kty")
        # A kty that is not a string (a list, an object) is a type we do not know:
        # looking it up as it is would raise TypeError (unhashable) out of a fetch.
        family = _KTY_FAMILY.get(kty) if isinstance(kty, str) else None
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if (
            family is None
            or jwk.get("use", "sig") != "sig"
            or not isinstance(kid, (str, type(None)))
            or not isinstance(alg, (str, type(None)))
        ):
            continue
        try:
            keys.append(Key(kid, alg, algorithms[family].from_jwk(json.dumps(dict(jwk)))))
        except (jwt.InvalidKeyError, ValueError, KeyError, TypeError, RecursionError):
            continue  # RecursionError: json.dumps of an entry nested thousands of levels
    return keys


class KeySet:
    """Keys known ahead of time (a PEM key or a static JWKS)."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self._keys = list(keys)

    def key(self, kid: str | None, alg: str) -> Any:
        """The key for a token with ``kid`` and ``alg`` (see :func:`select_key`)."""
        return select_key(self._keys, kid, alg, source="the configured keys")


class JwksFetcher:
    """A JWKS URL (or OIDC discovery) with HTTP caching and rotation handling."""

    def __init__(
        self,
        url: str | None = None,
        *,
        discovery_issuer: str | None = None,
        get: HttpGet = http_get,
        clock: Callable[[], float] = time.monotonic,
        cooldown: float = 30.0,
        default_max_age: float = 300.0,
    ) -> None:
        if url is None and discovery_issuer is None:
            raise ValueError("JwksFetcher needs a JWKS url or an issuer for discovery")
        self._url = url
        self._issuer = discovery_issuer
        self._get = get
        self._clock = clock
        self._cooldown = cooldown
        self._default_max_age = default_max_age
        #: Held while fetching; the cached keys are read without it.
        self._lock = threading.Lock()
        self._keys: list[Key] | None = None
        self._expires = 0.0
        self._last_fetch = -1e18  # when the last fetch started (it may have failed)
        self._retry_at = -1e18  # after a failed fetch: no new fetch before this
        self._error: KeyFetchError | None = None
        self.fetches = 0

    @property
    def _source(self) -> str:
        return f"the JWKS of {self._url or self._issuer}"

    def _fail(self, url: str, expected: str, found: str, fix: str | None = None) -> KeyFetchError:
        fix = (
            fix
            or "check that the URL (or the issuer, for discovery) is right and reachable from this host"
        )
        return KeyFetchError(
            f"Fetching keys from {url}: expected {expected}; found {found}. Fix: {fix}; "
            f"cached keys keep serving meanwhile, and the fetch is retried after "
            f"{self._cooldown:g} s."
        )

    def _fetch_json(self, url: str) -> tuple[dict[str, Any], float]:
        try:
            status, headers, body = self._get(url)
            lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        except _LimitExceeded as error:
            raise self._fail(url, error.expected, error.found, error.fix) from error
        except Exception as error:  # any failure of the getter is a failed fetch
            raise self._fail(url, "an HTTP reply", f"{type(error).__name__}: {error}") from error
        if isinstance(body, (bytes, bytearray)) and len(body) > MAX_FETCH_BYTES:
            too_large = _too_large(url, f"{len(body)} bytes", MAX_FETCH_BYTES)
            raise self._fail(url, too_large.expected, too_large.found, too_large.fix)
        if status != 200:
            raise self._fail(url, "HTTP 200", f"HTTP {status}")
        max_age = self._max_age(lowered)
        try:
            document = json.loads(body)
        except (ValueError, TypeError, RecursionError) as error:
            raise self._fail(url, "a JSON body", f"{_show(body)} ({error})") from error
        if not isinstance(document, dict):
            raise self._fail(url, "a JSON object", _show(document))
        return document, max_age

    def _max_age(self, headers: Mapping[str, str]) -> float:
        """Seconds a reply with ``headers`` (lower-cased names) stays fresh, as a shared
        HTTP cache reckons it (Convex's, http-cache-semantics with ``shared: true``):
        none for ``no-store``, ``no-cache`` (revalidate before each use) or ``private``;
        else ``s-maxage``, or ``max-age``, or the default, minus the ``Age`` the reply
        already had (a CDN's copy). ``no-cache="field"`` only concerns that header field.
        """
        directives: dict[str, str | None] = {}
        for part in headers.get("cache-control", "").lower().split(","):
            name, equals, value = part.strip().partition("=")
            directives.setdefault(name.strip(), value.strip().strip('"') if equals else None)
        if "no-store" in directives or "private" in directives:
            return 0.0
        if "no-cache" in directives and directives["no-cache"] is None:
            return 0.0
        max_age = self._default_max_age
        for name in ("s-maxage", "max-age"):
            seconds = directives.get(name)
            if seconds is not None and seconds.isascii() and seconds.isdigit():
                max_age = float(seconds)
                break
        age = headers.get("age", "").strip()
        if age.isascii() and age.isdigit():
            max_age -= float(age)
        return max(max_age, 0.0)

    def _refresh(self) -> None:
        """Fetch the key set (through discovery without a url); KeyFetchError on failure."""
        self._last_fetch = self._clock()
        self.fetches += 1
        url = self._url
        if url is None:
            assert self._issuer is not None
            discovery_url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
            discovery, _ = self._fetch_json(discovery_url)
            issuer = discovery.get("issuer")
            if issuer != self._issuer:  # exactly, as Convex (openidconnect) compares it
                raise self._fail(
                    discovery_url,
                    f"a discovery document with issuer {self._issuer!r}",
                    f"issuer {_show(issuer)}",
                )
            url = discovery.get("jwks_uri")
            if not isinstance(url, str) or not is_http_url(url):
                raise self._fail(
                    discovery_url,
                    "a discovery document with a jwks_uri, an http:// or https:// URL",
                    f"{_show(url)}",
                )
        document, max_age = self._fetch_json(url)
        try:
            keys = keys_from_jwks(document)
        except ValueError as error:
            raise self._fail(url, "a JWKS", str(error)) from error
        self._keys = keys
        self._expires = self._clock() + max_age
        self._error = None

    def _try_refresh(self) -> None:
        """Refresh (the lock held); on failure, no new attempt for a cooldown."""
        try:
            self._refresh()
        except KeyFetchError as error:
            self._retry_at = self._clock() + self._cooldown
            self._error = error
            raise

    def _current(self) -> list[Key]:
        """Fresh keys, fetching when needed; stale keys while a refresh fails or runs."""
        keys = self._keys
        if keys is not None and self._clock() < self._expires:
            return keys
        if keys is not None:
            if not self._lock.acquire(blocking=False):
                return keys  # another caller is refreshing: serve the cached keys meanwhile
        else:
            self._lock.acquire()  # cold cache: wait for the fetch in flight (one fetch)
        try:
            if keys is None and self._keys is not None:
                # Keys arrived while this caller waited: use them, even if the reply may
                # not be cached (no-store, max-age=0), or each waiter would fetch again.
                return self._keys
            now = self._clock()
            if self._keys is not None and now < self._expires:
                return self._keys  # refreshed by another caller meanwhile
            if now < self._retry_at:
                if self._keys is not None:
                    return self._keys
                assert self._error is not None
                raise KeyFetchError(
                    f"{self._error} (The last fetch failed {now - self._last_fetch:.0f} s ago; "
                    f"the next one is in {self._retry_at - now:.0f} s.)"
                )
            try:
                self._try_refresh()
            except KeyFetchError:
                if self._keys is None:
                    raise
            assert self._keys is not None
            return self._keys  # fresh, or stale through an outage
        finally:
            self._lock.release()

    def key(self, kid: str | None, alg: str) -> Any:
        """The key for ``kid`` and ``alg``, fetching or refreshing the key set when needed."""
        keys = self._current()
        try:
            return select_key(keys, kid, alg, source=self._source)
        except UnknownKey:
            if kid is None or any(k.kid == kid for k in keys):
                raise  # a refetch cannot help (ambiguous, or no kid)
        with self._lock:  # an unknown kid: a rotation? refetch, at most once per cooldown
            if self._clock() - self._last_fetch >= self._cooldown:
                try:
                    self._try_refresh()
                except KeyFetchError:
                    pass
            refreshed = self._keys
        assert refreshed is not None
        return select_key(refreshed, kid, alg, source=self._source)
