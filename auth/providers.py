"""Identity providers: ``ClerkProvider`` (Convex's OIDC provider + Clerk's extras),
``CustomJwtProvider`` (Convex's ``customJwt``), and ``AuthConfig`` that routes a
token to the first provider whose issuer and audience match, as Convex does.

``AuthConfig`` implements the engine's identity-provider protocol:
``Engine.open(..., auth=AuthConfig(...))`` and ``engine.query(..., auth=token)``
give functions ``ctx.auth.get_user_identity()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jwt
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
from .identity import UserIdentity
from .keys import HttpGet, JwksFetcher, KeySet, http_get, keys_from_jwks

__all__ = ["AuthConfig", "ClerkProvider", "CustomJwtProvider", "normalize_issuer"]


def normalize_issuer(url: str) -> str:
    """Convex's issuer normalization: add ``https://`` if no scheme, drop a trailing ``/``."""
    if not url.startswith(("http://", "https://")):
        url = "https://" + url
    return url.rstrip("/")


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if aud is None:
        return []
    return [aud] if isinstance(aud, str) else [str(a) for a in aud]


class _Provider:
    algorithms: tuple[str, ...] = ()

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
    ) -> None:
        self.issuer = normalize_issuer(issuer)
        self.application_id = application_id
        self.leeway = leeway
        self._clock = clock
        self._keys: KeySet | JwksFetcher
        if public_key is not None:
            pem = public_key.encode() if isinstance(public_key, str) else public_key
            self._keys = KeySet({None: load_pem_public_key(pem)})
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
        iss = claims.get("iss")
        if not isinstance(iss, str) or normalize_issuer(iss) != self.issuer:
            return False
        return self.application_id is None or self.application_id in _audiences(claims)

    def verify(self, token: str) -> UserIdentity:
        """Verify ``token`` with this provider; returns the identity or raises AuthError."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as error:
            raise MalformedToken(f"Not a JWT: {error}") from error
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidSignature(
                f"Algorithm {alg!r} is not allowed for {self!r}; allowed: "
                f"{', '.join(self.algorithms)} (never 'none' or HS*)."
            )
        self._check_header(header)
        key = self._keys.key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                leeway=self.leeway,
                audience=self.application_id,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": self.application_id is not None,
                    "verify_iss": False,
                },
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenExpired(f"Token expired: {error}") from error
        except jwt.ImmatureSignatureError as error:
            raise TokenNotYetValid(f"Token not yet valid: {error}") from error
        except jwt.InvalidAudienceError as error:
            raise InvalidAudience(
                f"Invalid audience: {self.application_id!r} not in the token's aud"
            ) from error
        except jwt.MissingRequiredClaimError as error:
            raise MissingClaim(f"Missing claim: {error}") from error
        except jwt.InvalidSignatureError as error:
            raise InvalidSignature(f"Invalid signature: {error}") from error
        except jwt.InvalidTokenError as error:
            raise MalformedToken(f"Invalid token: {error}") from error
        if normalize_issuer(str(claims["iss"])) != self.issuer:
            raise InvalidIssuer(f"Invalid issuer: {claims['iss']} != {self.issuer}")
        self._check_claims(claims)
        return UserIdentity.from_claims(claims)

    def _check_header(self, header: dict[str, Any]) -> None:
        return None

    def _check_claims(self, claims: dict[str, Any]) -> None:
        return None


class ClerkProvider(_Provider):
    """Clerk (Convex's OIDC provider): ``iss`` = the Frontend API URL, ``aud`` ∋ ``convex``.

    Keys come from ``public_key`` (PEM, networkless), ``jwks`` (a static JWKS),
    ``jwks_url``, or, with none of these, OIDC discovery on the issuer. Both
    Clerk token shapes verify: a session token with ``aud: "convex"`` (the
    Convex integration) and the legacy ``convex`` JWT template.
    ``authorized_parties`` checks ``azp`` when the token carries one.
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
        )
        self.authorized_parties = None if authorized_parties is None else set(authorized_parties)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        azp = claims.get("azp")
        if (
            self.authorized_parties is not None
            and azp is not None
            and azp not in self.authorized_parties
        ):
            raise InvalidAuthorizedParty(
                f"Invalid authorized party: azp {azp!r} is not one of "
                f"{sorted(self.authorized_parties)}"
            )


class CustomJwtProvider(_Provider):
    """Convex's ``customJwt``: a fixed issuer, ``RS256`` or ``ES256``, ``kid`` required.

    Without ``application_id`` the audience is not checked (Convex warns that
    this is often insecure).
    """

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
        )
        self.algorithms = (algorithm,)

    def _check_header(self, header: dict[str, Any]) -> None:
        if not header.get("kid") and not isinstance(self._keys, KeySet):
            raise MalformedToken("A custom JWT needs a 'kid' header.")


class AuthConfig:
    """The providers a database accepts tokens from (Convex's ``auth.config.ts``).

    Example::

        auth_config = AuthConfig(providers=[
            ClerkProvider(issuer="https://example.clerk.accounts.dev"),
        ])
        identity = auth_config.verify(token)
    """

    #: Verified tokens kept (a client sends the same token with every call until it expires).
    cache_size = 1024

    def __init__(self, providers: Iterable[_Provider]) -> None:
        self.providers = list(providers)
        self._verified: dict[str, tuple[UserIdentity, float, float]] = {}

    def verify(self, token: str) -> UserIdentity:
        """The identity of ``token``, or an :class:`AuthError` (never a partial identity).

        Cost: a signature check (~150 µs for RS256) the first time; a dictionary
        lookup and an expiry check while the same token is reused.
        """
        cached = self._verified.get(token) if isinstance(token, str) else None
        if cached is not None:
            identity, expires, leeway = cached
            if time.time() < expires + leeway:
                return identity
            self._verified.pop(token, None)
        identity, expires, leeway = self._verify(token)
        if len(self._verified) >= self.cache_size:
            self._verified.clear()
        self._verified[token] = (identity, expires, leeway)
        return identity

    def _verify(self, token: str) -> tuple[UserIdentity, float, float]:
        if not isinstance(token, str) or token.count(".") != 2:
            raise MalformedToken("Expected a JWT (three base64url parts separated by dots).")
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError as error:
            raise MalformedToken(f"Could not parse JWT payload: {error}") from error
        if not isinstance(claims.get("iss"), str):
            raise MissingClaim("Missing issuer claim ('iss') in the token.")
        for provider in self.providers:
            if provider.matches(claims):
                return provider.verify(token), float(claims["exp"]), provider.leeway
        raise NoProviderMatches(
            "No auth provider found matching the given token. Check that your JWT's issuer and "
            f"audience match one of your configured providers: {self.providers}"
        )
