"""Identity providers: ``ClerkProvider`` (Convex's OIDC provider + Clerk's extras),
``CustomJwtProvider`` (Convex's ``customJwt``), and ``AuthConfig`` that routes a
token to the first provider whose issuer and audience match, as Convex does.

``AuthConfig`` implements the engine's identity-provider protocol:
``Engine.open(..., auth=AuthConfig(...))`` and ``engine.query(..., auth=token)``
give functions ``ctx.auth.get_user_identity()``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import (
    InvalidAudience,
    InvalidAuthorizedParty,
    InvalidIssuer,
    InvalidSignature,
    MalformedToken,
    MissingClaim,
    NoProviderMatches,
    TokenExpired,
    TokenNotYetValid,
)
from .identity import (
    CUSTOM_JWT_HIDDEN_CLAIMS,
    MAX_DATE,
    MIN_DATE,
    OIDC_HIDDEN_CLAIMS,
    UserIdentity,
    _show,
    decode_organization,
)
from .keys import HttpGet, JwksFetcher, Key, KeySet, http_get, keys_from_jwks

__all__ = [
    "MAX_TOKEN_LENGTH",
    "AuthConfig",
    "ClerkProvider",
    "CustomJwtProvider",
    "normalize_issuer",
]

#: AuthConfig's default cap on a token's length, in characters: 16 KiB.
MAX_TOKEN_LENGTH = 16 * 1024

_RESEND = "Fix: send the token exactly as the issuer minted it (Authorization: Bearer <token>)."


def normalize_issuer(url: str) -> str:
    """Convex's issuer normalization: add ``https://`` if no scheme, drop a trailing ``/``."""
    if not url.startswith(("http://", "https://")):
        url = "https://" + url
    return url.rstrip("/")


# A credential is never quoted in an error (messages reach logs and HTTP answers, and
# the "token" may be an API key pasted by mistake): parse errors describe its shape only.


def _part(segment: str, what: str) -> dict[str, Any]:
    """One base64url JSON part of a JWT, which must be an object."""
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken(
            f"Could not parse JWT {what}: expected base64url-encoded JSON; found "
            f"{len(segment)} characters that do not decode as base64url. {_RESEND}"
        ) from None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedToken(
            f"Could not parse JWT {what}: expected base64url-encoded JSON; found base64url "
            f"of {len(data)} bytes that are not JSON. {_RESEND}"
        ) from None
    if not isinstance(value, dict):
        raise MalformedToken(
            f"Could not parse JWT {what}: expected a JSON object; found a JSON "
            f"{_JSON_TYPES.get(type(value), type(value).__name__)}. {_RESEND}"
        )
    return value


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def parse_unverified(token: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of ``token`` without checking anything but their shape.

    Errors describe what the token looks like (its type, length, number of parts),
    never its text: it may be a credential that must not reach a log.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        found = (
            f"a value of type {type(token).__name__}"
            if not isinstance(token, str)
            else f"{len(token)} characters with {token.count('.')} dots"
        )
        raise MalformedToken(
            f"Expected a JWT (three base64url parts separated by dots); found {found}. {_RESEND}"
        )
    head, payload, _ = token.split(".")
    return _part(head, "header"), _part(payload, "payload")


def _audiences(claims: dict[str, Any]) -> list[str]:
    """``aud`` as a list (a string is one audience, no claim none); MalformedToken otherwise."""
    aud = claims.get("aud")
    if aud is None:
        return []
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return list(aud)
    raise MalformedToken(
        f"Invalid claim 'aud': expected a string or a list of strings; found {_show(aud)}. "
        f"{_RESEND}"
    )


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # Compared as they are: float() of a huge int overflows, NaN fails both bounds.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not MIN_DATE <= value <= MAX_DATE
    ):
        raise MalformedToken(
            f"Invalid claim {name!r}: expected a NumericDate (seconds since the epoch, a "
            f"number for a date in the years 1-9999); found {_show(value)}. Fix: have the "
            f"issuer mint {name} as such a number."
        )
    return float(value)


#: Versions of provider settings: every assignment to a provider's attribute takes
#: the next one, so a config sees that its cached verifications are out of date.
_VERSIONS = itertools.count()


class _Provider:
    algorithms: tuple[str, ...] = ()
    #: Claims not surfaced in identities (by default Convex's for the provider kind);
    #: ``hidden_claims=`` sets them per provider.
    hidden_claims: frozenset[str] = OIDC_HIDDEN_CLAIMS
    #: Changes with every attribute assignment (see AuthConfig's token cache).
    _version = 0

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_version", next(_VERSIONS))

    def __init__(
        self,
        issuer: str,
        application_id: str | None,
        *,
        jwks_url: str | None,
        jwks: Any,
        public_key: str | bytes | None,
        leeway: float,
        discovery: bool,
        get: HttpGet,
        clock: Callable[[], float],
        hidden_claims: Iterable[str] | None,
    ) -> None:
        if hidden_claims is not None:
            if isinstance(hidden_claims, str):
                raise TypeError("hidden_claims takes claim names (a set or list), not a str")
            self.hidden_claims = frozenset(hidden_claims)
        self.issuer = normalize_issuer(issuer)
        self.application_id = application_id
        self.leeway = leeway
        self._clock = clock
        self._keys: KeySet | JwksFetcher
        #: One PEM key: it verifies tokens whatever their kid (or without one).
        self._pem = public_key is not None
        if jwks_url is not None and jwks_url.startswith("data:"):
            jwks, jwks_url = jwks_url, None
        if public_key is not None:
            pem = public_key.encode() if isinstance(public_key, str) else public_key
            self._keys = KeySet([Key(None, None, load_pem_public_key(pem))])
        elif jwks is not None:
            self._keys = KeySet(keys_from_jwks(jwks))
        elif jwks_url is not None:
            self._keys = JwksFetcher(jwks_url, get=get)
        elif discovery:
            self._keys = JwksFetcher(discovery_issuer=self.issuer, get=get)
        else:
            raise ValueError(f"{type(self).__name__} needs jwks_url, jwks or public_key")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(issuer={self.issuer!r}, application_id={self.application_id!r})"
        )

    def matches(self, claims: dict[str, Any]) -> bool:
        """Convex's routing: the issuer matches and ``aud`` contains the application id."""
        iss = claims.get("iss")
        if not isinstance(iss, str) or normalize_issuer(iss) != self.issuer:
            return False
        return self.application_id is None or self.application_id in _audiences(claims)

    def verify(self, token: str) -> UserIdentity:
        """Verify ``token`` with this provider; returns the identity or raises AuthError.

        Order: the header (``alg`` pinned, ``kid`` a string), the key (its type
        must fit ``alg``), the signature, then the claims: ``iss``, ``aud``,
        ``sub``, ``exp`` / ``nbf`` / ``iat`` against this provider's clock
        with ``leeway`` seconds, and the provider's own checks.
        """
        header, _ = parse_unverified(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidSignature(
                f"Algorithm {_show(alg)} is not allowed for {self!r}: expected one of "
                f"{', '.join(self.algorithms)}; found {_show(alg)} (never 'none' or HS*). "
                "Fix: sign the token with an allowed algorithm, or configure a provider for it."
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise MalformedToken(
                f"Invalid header 'kid': expected a string (the id of the signing key); found "
                f"{_show(kid)}. {_RESEND}"
            )
        self._check_header(header)
        key = self._keys.key(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError as error:
            raise InvalidSignature(
                f"Invalid signature: expected a signature by key {kid!r} of {self!r}; found one "
                "that does not verify. Fix: check that the token comes from this issuer (not "
                "another instance or environment) and was not modified."
            ) from error
        except jwt.PyJWTError as error:
            raise MalformedToken(
                f"Invalid token: expected a JWT signed with {alg}; found {error}. {_RESEND}"
            ) from error
        self._check_standard_claims(claims)
        self._check_claims(claims)
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> UserIdentity:
        """The identity of verified ``claims`` (OIDC: nested custom claims stay nested)."""
        return UserIdentity.from_claims(claims, hidden=self.hidden_claims)

    def _check_standard_claims(self, claims: dict[str, Any]) -> None:
        iss = _string_claim(
            claims,
            "iss",
            "Missing issuer claim ('iss'): expected the issuer's URL; found none. "
            "Fix: have the issuer set iss.",
            "expected a string",
            _RESEND,
        )
        self._check_issuer(iss)
        self._check_audience(_audiences(claims), "aud" in claims)
        _string_claim(
            claims,
            "sub",
            "Missing subject: expected a 'sub' claim (the user id); found none. "
            "Fix: have the issuer set sub.",
            "expected a string (the user id)",
            "Fix: have the issuer mint sub as a string.",
        )
        exp = _number(claims, "exp")
        nbf = _number(claims, "nbf")
        iat = _number(claims, "iat")
        if exp is None:
            raise MissingClaim(
                "Missing expiry: expected an 'exp' claim; found none. Fix: have the issuer "
                "set exp (Convex refuses tokens that never expire)."
            )
        now = self._clock()
        if exp <= now - self.leeway:
            raise _expired(exp, now, self.leeway)
        for name, value in (("nbf", nbf), ("iat", iat)):
            if value is not None and value > now + self.leeway:
                raise TokenNotYetValid(
                    f"Token not yet valid ({name}): expected {name} ({value:.0f}) at most now "
                    f"({now:.0f}) plus the {self.leeway:g} s leeway; found it {value - now:.0f} "
                    "s in the future. Fix: check the clocks of this host and of the issuer, or "
                    "raise leeway."
                )

    def _check_issuer(self, iss: str) -> None:
        """Convex's customJwt rule: ``iss`` normalized is the issuer."""
        if normalize_issuer(iss) != self.issuer:
            raise InvalidIssuer(
                f"Invalid issuer: {iss} != {self.issuer}. Expected iss {self.issuer!r} (after "
                f"adding https:// and dropping a trailing /); found {_show(iss)}. Fix: configure "
                "the provider with the issuer that mints these tokens (Clerk: the Frontend API "
                "URL)."
            )

    def _check_audience(self, audiences: list[str], present: bool) -> None:
        """Convex's customJwt rule: ``aud`` contains the application id (when one is set)."""
        if self.application_id is None:
            return
        if not present:
            raise InvalidAudience(
                f"Missing audience claim ('aud'): expected one containing "
                f"{self.application_id!r}; found none. Fix: have the issuer set aud."
            )
        if self.application_id not in audiences:
            raise InvalidAudience(
                f"Invalid audience: {self.application_id} not in {audiences}. Expected aud "
                f"to contain {self.application_id!r}; found {audiences}. Fix: mint the token "
                "for this application, or configure the provider's application_id."
            )

    def _check_header(self, header: dict[str, Any]) -> None:
        return None

    def _check_claims(self, claims: dict[str, Any]) -> None:
        return None


class ClerkProvider(_Provider):
    """Clerk (Convex's OIDC provider): ``iss`` = the Frontend API URL, ``aud`` = ``convex``.

    Keys come from ``public_key`` (PEM, networkless), ``jwks`` (a static JWKS,
    also as a ``data:`` URI), ``jwks_url``, or, with none of these, OIDC
    discovery on the issuer. Both Clerk token shapes verify: a session token
    with ``aud: "convex"`` (the Convex integration) and the legacy ``convex``
    JWT template. As Convex's OIDC verifier does, the audience must be exactly
    the application id: ``"convex"`` or ``["convex"]``, no other audience; ``iss``
    must be exactly the issuer (``https://`` added when the configured one has no
    scheme, a trailing ``/`` dropped): ``"https://x/"`` would name the same user with
    another ``token_identifier``; ``iat`` is required; the header's ``typ``, if any,
    is ``JWT`` or ``JOSE`` (not ``at+jwt``), and ``cty`` and ``crit`` are refused.
    Algorithms: RS256, and EdDSA with an Ed25519 key.
    ``authorized_parties`` requires ``azp`` to be present and one of them
    (Clerk #8877; an empty list refuses every token). ``clock`` (seconds since
    the epoch) is the time ``exp``, ``nbf`` and ``iat`` are checked against.
    ``hidden_claims`` are not surfaced in identities (default: Convex's OIDC set,
    :data:`auth.identity.OIDC_HIDDEN_CLAIMS`).

    Example::

        ClerkProvider(issuer="https://verb-noun-00.clerk.accounts.dev",
                      hidden_claims=ClerkProvider.hidden_claims | {"sid"})
    """

    algorithms = ("RS256", "EdDSA")

    def __init__(
        self,
        issuer: str,
        application_id: str | None = "convex",
        *,
        jwks_url: str | None = None,
        jwks: Any = None,
        public_key: str | bytes | None = None,
        authorized_parties: Sequence[str] | None = None,
        leeway: float = 5.0,
        get: HttpGet = http_get,
        clock: Callable[[], float] = time.time,
        hidden_claims: Iterable[str] | None = None,
    ) -> None:
        super().__init__(
            issuer,
            application_id,
            jwks_url=jwks_url,
            jwks=jwks,
            public_key=public_key,
            leeway=leeway,
            discovery=True,
            get=get,
            clock=clock,
            hidden_claims=hidden_claims,
        )
        #: A frozenset: changing the parties means assigning a new value, which the
        #: token cache notices (an in-place change of a set would go unseen).
        self.authorized_parties = (
            None if authorized_parties is None else frozenset(authorized_parties)
        )

    def _check_audience(self, audiences: list[str], present: bool) -> None:
        """Convex's OIDC rule: ``aud`` holds the application id and no other audience."""
        super()._check_audience(audiences, present)
        if self.application_id is not None and set(audiences) != {self.application_id}:
            raise InvalidAudience(
                f"Invalid audience: expected aud to be exactly {self.application_id!r} (Convex's "
                f"OIDC verifier rejects any other audience); found {audiences}. Fix: mint the "
                f"token with aud {self.application_id!r} only (Clerk's Convex integration or the "
                "'convex' JWT template), or use CustomJwtProvider, whose aud only has to "
                "contain the application id."
            )

    def _check_issuer(self, iss: str) -> None:
        """Convex's OIDC rule: ``iss`` is the issuer exactly (require_issuer_match against
        the discovery document's issuer; no normalization)."""
        if iss != self.issuer:
            raise InvalidIssuer(
                f"Invalid issuer: expected iss to be exactly {self.issuer!r}; found "
                f"{_show(iss)}. A trailing '/', a missing scheme or another case would give "
                "the same user another token_identifier, and Convex's OIDC verifier compares "
                "the issuer exactly. Fix: send tokens minted by this issuer unchanged (Clerk "
                "always sets its Frontend API URL, without a trailing '/'); for an OIDC issuer "
                "whose URL ends in '/', use CustomJwtProvider."
            )

    def _check_header(self, header: dict[str, Any]) -> None:
        """Convex's OIDC verifier: ``typ`` absent, JWT or JOSE; no nested token (``cty``);
        and no ``crit`` extension, none being implemented (RFC 7515 §4.1.11)."""
        typ = header.get("typ")
        if typ is not None and _media_type(typ) not in ("application/jwt", "application/jose"):
            raise MalformedToken(
                f"Invalid header 'typ': expected none, 'JWT' or 'JOSE' (an ID or session "
                f"token); found {_show(typ)}. Fix: send the session token (or the 'convex' "
                "template's token), not an access token or another kind of JWT."
            )
        for name, meaning in (("cty", "a nested token"), ("crit", "critical extensions")):
            if name in header:
                raise MalformedToken(
                    f"Invalid header {name!r}: expected none ({meaning} are not accepted); "
                    f"found {_show(header[name])}. Fix: send the token the issuer minted for "
                    "sign-in, without nesting or extensions."
                )

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if claims.get("iat") is None:
            raise MissingClaim(
                "Missing issued-at claim ('iat'): expected the time the token was minted; "
                "found none. Convex's OIDC verifier requires it (its clients refresh tokens "
                "by it). Fix: have the issuer set iat, or use CustomJwtProvider, where it is "
                "optional."
            )
        if self.authorized_parties is None:
            return
        azp = claims.get("azp")
        if not isinstance(azp, str) or azp not in self.authorized_parties:
            found = "no azp claim" if "azp" not in claims else f"azp {_show(azp)}"
            raise InvalidAuthorizedParty(
                f"Invalid authorized party: expected azp to be one of "
                f"{sorted(self.authorized_parties)}; found {found}. Fix: add your frontend's "
                "origin to authorized_parties; a token without azp (minted without an Origin "
                "header) is refused while authorized_parties is set, as Clerk's SDKs do."
            )


class CustomJwtProvider(_Provider):
    """Convex's ``customJwt``: a fixed issuer, ``RS256`` or ``ES256``, ``kid`` required.

    ``jwks`` is a JWKS (a dict or JSON text), an ``http(s)`` URL, or a ``data:``
    URI (``data:application/json;base64,...`` or percent-encoded JSON), as in
    Convex. A token without ``kid`` is refused (Convex's ``KidMissing``) unless
    the provider has a single PEM ``public_key``. Without ``application_id`` the
    audience is not checked (Convex warns that this is often insecure); with
    one, ``aud`` must contain it. ``clock`` is the time ``exp``, ``nbf`` and
    ``iat`` are checked against. ``hidden_claims`` are not surfaced in identities
    (default: Convex's customJwt set, the registered claims and ``fva``; ``azp``
    shows).
    """

    hidden_claims = CUSTOM_JWT_HIDDEN_CLAIMS

    def __init__(
        self,
        issuer: str,
        *,
        jwks: Any = None,
        jwks_url: str | None = None,
        public_key: str | bytes | None = None,
        algorithm: str = "RS256",
        application_id: str | None = None,
        leeway: float = 5.0,
        get: HttpGet = http_get,
        clock: Callable[[], float] = time.time,
        hidden_claims: Iterable[str] | None = None,
    ) -> None:
        if algorithm not in ("RS256", "ES256"):
            raise ValueError(f"algorithm must be 'RS256' or 'ES256', got {algorithm!r}")
        if isinstance(jwks, str) and jwks.startswith(("http://", "https://")):
            jwks_url, jwks = jwks, None
        super().__init__(
            issuer,
            application_id,
            jwks_url=jwks_url,
            jwks=jwks,
            public_key=public_key,
            leeway=leeway,
            discovery=False,
            get=get,
            clock=clock,
            hidden_claims=hidden_claims,
        )
        self.algorithms = (algorithm,)

    def _identity(self, claims: dict[str, Any]) -> UserIdentity:
        """As Convex's customJwt: nested objects of the claims are flattened with dots
        (``{"properties": {"id": "123"}}`` gives the claim ``"properties.id"``); two
        claims flattening to one name are a MalformedToken. The organization is
        decoded from the claims as minted, as ClerkProvider does."""
        identity = UserIdentity.from_claims(_flatten(claims), hidden=self.hidden_claims)
        return msgspec.structs.replace(identity, org=decode_organization(claims))

    def _check_header(self, header: dict[str, Any]) -> None:
        if not header.get("kid") and not self._pem:
            raise MalformedToken(
                "A custom JWT needs a 'kid' header (Convex: KidMissing): expected the id of a "
                f"key of the provider's JWKS; found {_show(header.get('kid'))}. Fix: have the "
                "issuer put the key's kid in the JWT header, or configure the provider with "
                "public_key=<PEM> to verify with that one key."
            )


class AuthConfig:
    """The providers a database accepts tokens from (Convex's ``auth.config.ts``).

    ``max_token_length`` (16 KiB by default) caps the tokens it looks at: a longer
    one is a :class:`MalformedToken` before any parsing or cache lookup.

    Example::

        auth_config = AuthConfig(providers=[
            ClerkProvider(issuer="https://example.clerk.accounts.dev"),
        ])
        identity = auth_config.verify(token)
    """

    #: Verified tokens kept (a client sends the same token with every call until it expires).
    cache_size = 1024

    def __init__(
        self, providers: Iterable[_Provider], *, max_token_length: int = MAX_TOKEN_LENGTH
    ) -> None:
        self.providers = list(providers)
        #: Longer tokens are a MalformedToken before any parsing (Clerk's fit a 4 KB cookie).
        self.max_token_length = max_token_length
        #: token -> (identity, exp, leeway, the provider's clock)
        self._verified: dict[str, tuple[UserIdentity, float, float, Callable[[], float]]] = {}
        #: The providers (and their versions) the cached verifications were made with.
        self._cached_with: list[tuple[_Provider, int]] = []

    def _config_changed(self) -> bool:
        """True if the provider list or a provider's settings changed since the cached
        verifications were made (then they are dropped and the new settings noted).
        Cost: one comparison per provider."""
        providers = self.providers
        cached_with = self._cached_with
        if len(providers) == len(cached_with):
            for provider, (seen, version) in zip(providers, cached_with, strict=True):
                if provider is not seen or provider._version != version:
                    break
            else:
                return False
        self._verified.clear()
        self._cached_with = [(p, p._version) for p in providers]
        return True

    def verify(self, token: str) -> UserIdentity:
        """The identity of ``token``, or an :class:`AuthError` (never a partial identity).

        Cost: a signature check (~150 µs for RS256) the first time; a dictionary
        lookup and an expiry check (with the provider's clock and leeway) while
        the same token is reused and the providers are unchanged (assigning to a
        provider's attribute, or changing ``providers``, verifies cached tokens
        again). The identity returned for a token is shared by every call with
        it: its ``claims`` are read-only.
        """
        return self._entry(token)[0]

    def seconds_left(self, token: str) -> float:
        """Seconds until ``token`` stops verifying: its ``exp`` plus its provider's
        ``leeway``, minus now on the provider's clock. Always positive.

        The engine ends a subscription made with ``auth=token`` when this runs out,
        as Convex ends a session whose token expired. Raises what :meth:`verify`
        raises, so :class:`TokenExpired` once no time is left.
        Cost: that of :meth:`verify` (a dictionary lookup for a cached token).

        Example::

            auth_config.seconds_left(token)   # 42.3
        """
        _, expires, leeway, clock = self._entry(token)
        now = clock()
        left = expires + leeway - now
        if left <= 0:
            raise _expired(expires, now, leeway)
        return left

    def _entry(self, token: str) -> tuple[UserIdentity, float, float, Callable[[], float]]:
        """The cache entry of ``token``: (identity, exp, leeway, clock), verified if needed.

        A cached entry serves only while the configuration is the one it was verified
        with: a change of the provider list or of a provider's settings drops them all.
        """
        if isinstance(token, str) and len(token) > self.max_token_length:
            raise MalformedToken(
                f"Token too long: expected at most {self.max_token_length} characters "
                f"(AuthConfig.max_token_length); found {len(token)}. Fix: send the token as "
                "minted (a Clerk session token fits a 4 KB cookie); if your issuer mints "
                "bigger tokens, raise max_token_length."
            )
        self._config_changed()
        cached = self._verified.get(token) if isinstance(token, str) else None
        if cached is not None:
            identity, expires, leeway, clock = cached
            if clock() < expires + leeway:
                return cached
            self._verified.pop(token, None)
        identity, expires, provider = self._verify(token)
        if len(self._verified) >= self.cache_size:
            self._verified.clear()
        entry = (identity, expires, provider.leeway, provider._clock)
        self._verified[token] = entry
        return entry

    def _verify(self, token: str) -> tuple[UserIdentity, float, _Provider]:
        """Route ``token`` to the first matching provider and verify it there."""
        _, claims = parse_unverified(token)
        iss = claims.get("iss")
        if iss is None:
            raise MissingClaim(
                "Missing issuer claim ('iss') in the token: expected the issuer's URL; found "
                "none. Fix: have the issuer set iss (Convex routes tokens by it)."
            )
        if not isinstance(iss, str):
            raise MalformedToken(
                f"Invalid claim 'iss': expected a string; found {_show(iss)}. {_RESEND}"
            )
        for provider in self.providers:
            if provider.matches(claims):
                identity = provider.verify(token)
                return identity, float(claims["exp"]), provider
        raise NoProviderMatches(
            "No auth provider found matching the given token. Check that your JWT's issuer and "
            f"audience match one of your configured providers: {self.providers}. Expected iss "
            "and aud of one of them; found iss "
            f"{_show(iss)}, aud {_show(claims.get('aud'))}. Fix: configure a provider with this "
            "issuer and application id, or send a token minted for one of them."
        )


def _media_type(typ: Any) -> str | None:
    """A ``typ`` header as a media type (RFC 7515 §4.1.9: ``JWT`` = ``application/jwt``)."""
    if not isinstance(typ, str):
        return None
    text: str = typ.lower()
    return text if "/" in text else "application/" + text


def _expired(exp: float, now: float, leeway: float) -> TokenExpired:
    """The TokenExpired of a token whose ``exp`` is ``leeway`` seconds or more before ``now``."""
    return TokenExpired(
        f"Token expired: expected exp ({exp:.0f}) after now ({now:.0f}) minus the "
        f"{leeway:g} s leeway; found it {now - exp:.0f} s in the past. Fix: send a "
        "fresh token (the client refreshes them before they expire), or check this "
        "host's clock."
    )


def _string_claim(claims: dict[str, Any], name: str, missing: str, expected: str, fix: str) -> str:
    """Claim ``name`` as a string: ``MissingClaim(missing)`` if absent, ``MalformedToken``
    saying what was ``expected``, what was found and the ``fix`` if not a string."""
    value = claims.get(name)
    if value is None:
        raise MissingClaim(missing)
    if not isinstance(value, str):
        raise MalformedToken(f"Invalid claim {name!r}: {expected}; found {_show(value)}. {fix}")
    return value


def _flatten(
    claims: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``claims`` with nested objects spread into dotted keys; arrays and scalars kept.

    Two claims that flatten to one name (``{"a.b": 1, "a": {"b": 2}}``) are a
    MalformedToken: neither may silently replace the other.
    """
    out = {} if out is None else out
    for key, value in claims.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _flatten(value, f"{name}.", out)
        elif name in out:
            raise MalformedToken(
                f"Invalid claim {name!r}: expected each flattened claim name once "
                "(customJwt claims are flattened with dots, as in Convex); found it twice, "
                "from a dotted name and a nested object. Fix: have the issuer mint only one "
                "of them."
            )
        else:
            out[name] = value
    return out
