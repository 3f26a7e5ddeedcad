"""Verification keys: a PEM key, a static JWKS, or a JWKS fetched over HTTP.

:class:`JwksFetcher` caches the key set for the ``Cache-Control: max-age``
the server gives (5 minutes when it gives none), refetches at most once per
``cooldown`` when a token names an unknown ``kid`` (key rotation), and keeps
serving the cached keys when a refresh fails (an outage of the issuer does
not log everybody out). The HTTP getter and the clock are injectable.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from .errors import KeyFetchError, UnknownKey

__all__ = ["HttpGet", "JwksFetcher", "KeySet", "http_get", "keys_from_jwks"]

#: (url) -> (status, headers, body)
HttpGet = Callable[[str], tuple[int, Mapping[str, str], bytes]]
_MAX_AGE = re.compile(r"max-age=(\d+)")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Mapping[str, str], bytes]:
    """GET ``url`` with the standard library; returns status, headers and body."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers or {}), error.read()


def keys_from_jwks(jwks: Mapping[str, Any] | str) -> dict[str | None, Any]:
    """Public keys of a JWKS document, by ``kid`` (keys of unknown types are skipped)."""
    document = json.loads(jwks) if isinstance(jwks, str) else jwks
    algorithms = get_default_algorithms()
    keys: dict[str | None, Any] = {}
    for jwk in document.get("keys", []):
        kty = jwk.get("kty")
        family = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}.get(kty)
        if family is None or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[jwk.get("kid")] = algorithms[family].from_jwk(json.dumps(jwk))
        except (jwt.InvalidKeyError, ValueError, KeyError):
            continue
    return keys


class KeySet:
    """Keys known ahead of time (a PEM key or a static JWKS)."""

    def __init__(self, keys: dict[str | None, Any]) -> None:
        self._keys = keys

    def key(self, kid: str | None) -> Any:
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if None in self._keys and len(self._keys) == 1:  # one key without a kid (PEM)
            return self._keys[None]
        raise UnknownKey(f"No key with kid {kid!r}; known: {sorted(map(str, self._keys))}")


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
        self._lock = threading.Lock()
        self._keys: dict[str | None, Any] | None = None
        self._expires = 0.0
        self._last_fetch = -1e18
        self.fetches = 0

    def _fetch_json(self, url: str) -> tuple[Any, float]:
        try:
            status, headers, body = self._get(url)
        except OSError as error:
            raise KeyFetchError(f"Could not fetch {url}: {error}") from error
        if status != 200:
            raise KeyFetchError(f"Fetching {url} returned HTTP {status}")
        lowered = {k.lower(): v for k, v in headers.items()}
        match = _MAX_AGE.search(lowered.get("cache-control", ""))
        no_store = "no-store" in lowered.get("cache-control", "")
        max_age = 0.0 if no_store else (float(match.group(1)) if match else self._default_max_age)
        try:
            return json.loads(body), max_age
        except ValueError as error:
            raise KeyFetchError(f"{url} did not return JSON: {error}") from error

    def _refresh(self) -> None:
        self._last_fetch = self._clock()
        self.fetches += 1
        url = self._url
        if url is None:
            assert self._issuer is not None
            discovery, _ = self._fetch_json(
                self._issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            if discovery.get("issuer", "").rstrip("/") != self._issuer.rstrip("/"):
                raise KeyFetchError(
                    f"Discovery for {self._issuer} returned issuer {discovery.get('issuer')!r}"
                )
            url = discovery.get("jwks_uri")
            if not isinstance(url, str):
                raise KeyFetchError(f"Discovery for {self._issuer} has no jwks_uri")
        document, max_age = self._fetch_json(url)
        self._keys = keys_from_jwks(document)
        self._expires = self._clock() + max_age

    def key(self, kid: str | None) -> Any:
        """The key for ``kid``, fetching or refreshing the key set when needed."""
        with self._lock:
            now = self._clock()
            if self._keys is None or now >= self._expires:
                try:
                    self._refresh()
                except KeyFetchError:
                    if self._keys is None:
                        raise
                    # keep serving the cached keys through an outage
            keys = self._keys
            assert keys is not None
            unknown = kid not in keys and not (kid is None and len(keys) == 1)
            if unknown and now - self._last_fetch >= self._cooldown:
                try:
                    self._refresh()
                except KeyFetchError:
                    pass
                keys = self._keys
                assert keys is not None
            return KeySet(keys).key(kid)
