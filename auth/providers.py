"""Identity providers: ``ClerkProvider`` (Convex's OIDC provider + Clerk's extras)
and ``CustomJwtProvider`` (Convex's ``customJwt``). ``AuthConfig``
(:mod:`auth.config`) routes a token to the first provider whose issuer and
audience match, as Convex does.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .claims import (
    _RESEND,
    _audiences,
    _expired,
    _flatten,
    _media_type,
    _number,
    _string_claim,
    _too_deep,
    normalize_issuer,
    parse_unverified,
)
from .errors import (
    InvalidAudience,
    InvalidAuthorizedParty,
    InvalidIssuer,
    InvalidSignature,
    MalformedToken,
    MissingClaim,
    TokenNotYetValid,
)
from .identity import (
    CUSTOM_JWT_HIDDEN_CLAIMS,
    OIDC_HIDDEN_CLAIMS,
    UserIdentity,
    _show,
    decode_organization,
)
from .keys import HttpGet, JwksFetcher, Key, KeySet, http_get, keys_from_jwks

__all__ = ["ClerkProvider", "CustomJwtProvider", "normalize_issuer"]

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
        public_key: str | bytes | bytearray | memoryview | None,
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
        self.issuer = _configured_issuer(issuer)
        self.application_id = application_id
        self.leeway = leeway
        self._clock = clock
        self._keys: KeySet | JwksFetcher
        #: One PEM key: it verifies tokens whatever their kid (or without one).
        self._pem = public_key is not None
        if jwks_url is not None and jwks_url.startswith("data:"):
            jwks, jwks_url = jwks_url, None
        if isinstance(jwks, str) and jwks.startswith(("http://", "https://")):
            jwks_url, jwks = jwks, None  # a URL, as Convex's customJwt config writes jwks
        if public_key is not None:
            self._keys = KeySet([Key(None, None, _pem_public_key(public_key))])
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

    @property
    def leeway(self) -> float:
        """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``: a finite number,
        at least 0.

        Checked when built or assigned: a NaN compared False with every ``exp`` (an
        expired token verified) and a str made every verification a TypeError.
        """
        return self._leeway

    @leeway.setter
    def leeway(self, seconds: float) -> None:
        fix = "Fix: leeway=5.0 (Clerk's and Convex's clock skew), or leave it out."
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                f"leeway takes seconds: expected a number; found {type(seconds).__name__} "
                f"{_show(seconds)}. {fix}"
            )
        # Compared as it is: float() of a huge int overflows; NaN fails both bounds.
        if not 0 <= seconds <= sys.float_info.max:
            raise ValueError(
                f"leeway takes seconds: expected a finite number of at least 0; found "
                f"{_show(seconds)} (a NaN or an infinite leeway accepts expired tokens). {fix}"
            )
        self._leeway = float(seconds)

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
        too_deep: MalformedToken | None = None
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
        except RecursionError:
            # parse_unverified bounded the nesting, but pyjwt parses the payload again,
            # deeper in the stack: a caller already near the recursion limit can get here.
            too_deep = _too_deep("payload")
        if too_deep is not None:  # raised outside the except: no context holding the token
            raise too_deep
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


def _pem_public_key(public_key: object) -> Any:
    """``public_key=`` loaded; raises naming the parameter for what is no PEM public key
    (cryptography's own error names neither). The value is never quoted: it may be a
    private key pasted by mistake."""
    fix = (
        "Fix: give the issuer's public key in PEM ('-----BEGIN PUBLIC KEY-----...'; Clerk "
        "shows it as the JWKS Public Key), or its keys as jwks=."
    )
    if not isinstance(public_key, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"public_key takes a PEM public key: expected a str or bytes; found "
            f"{type(public_key).__name__}. {fix}"
        )
    # A bytearray or memoryview (a buffer read from a file) loads as its bytes.
    pem = public_key.encode() if isinstance(public_key, str) else bytes(public_key)
    try:
        return load_pem_public_key(pem)
    except ValueError as error:
        if b"PRIVATE KEY-----" in pem:
            found = "a private key (never give it to the verifier: it signs tokens)"
        elif pem.lstrip().startswith(b"{"):
            found = "JSON (a JWKS goes in jwks=)"
        else:
            found = f"{len(pem)} bytes that are no PEM public key ({error})"
        raise ValueError(
            f"public_key takes a PEM public key: expected one; found {found}. {fix}"
        ) from None


def _configured_issuer(issuer: object) -> str:
    """A provider's ``issuer=`` normalized; raises for one that is no URL string (an
    unset environment variable's None, an empty string that would normalize to
    ``https:``)."""
    fix = (
        "Fix: give the URL its tokens carry as iss, e.g. "
        "issuer='https://<your-app>.clerk.accounts.dev' (Clerk's Frontend API URL)."
    )
    if not isinstance(issuer, str):
        raise TypeError(
            f"issuer takes the issuer's URL: expected a str; found "
            f"{type(issuer).__name__} {_show(issuer)}. {fix}"
        )
    if not issuer.strip().strip("/") or issuer.rstrip("/") in ("http:", "https:"):
        raise ValueError(
            f"issuer takes the issuer's URL: expected a non-empty URL; found {_show(issuer)}. {fix}"
        )
    if issuer != issuer.strip():  # read with its newline: tokens would all be refused
        raise ValueError(
            f"issuer takes the issuer's URL: expected it without surrounding whitespace; "
            f"found {_show(issuer)} (read from a file or an environment variable with its "
            f"newline?). Fix: strip it, issuer=value.strip()."
        )
    return normalize_issuer(issuer)


class ClerkProvider(_Provider):
    """Clerk (Convex's OIDC provider): ``iss`` = the Frontend API URL, ``aud`` = ``convex``.

    Keys come from ``public_key`` (PEM, networkless), ``jwks`` (a static JWKS,
    also as a ``data:`` URI, or its ``http(s)`` URL), ``jwks_url``, or, with none of these, OIDC
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
        public_key: str | bytes | bytearray | memoryview | None = None,
        authorized_parties: Iterable[str] | None = None,
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
        self.authorized_parties = authorized_parties

    @property
    def authorized_parties(self) -> frozenset[str] | None:
        """The origins ``azp`` must be one of, or None (``azp`` not looked at).

        A frozenset: changing the parties means assigning a new value (any iterable
        of origins), which the token cache notices (an in-place change of a set would
        go unseen). A str is refused with TypeError: it would be taken as the set of
        its characters.
        """
        return self._authorized_parties

    @authorized_parties.setter
    def authorized_parties(self, parties: Iterable[str] | None) -> None:
        if isinstance(parties, str):
            raise TypeError(
                "authorized_parties takes origins (a list or set), not a str: expected "
                f"[{parties!r}]; found the str {parties!r}, which would authorize each of "
                f"its characters as an origin. Fix: authorized_parties=[{parties!r}]."
            )
        self._authorized_parties = None if parties is None else frozenset(parties)

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
        for name, meaning in (("cty", "nested tokens"), ("crit", "critical extensions")):
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
        public_key: str | bytes | bytearray | memoryview | None = None,
        algorithm: str = "RS256",
        application_id: str | None = None,
        leeway: float = 5.0,
        get: HttpGet = http_get,
        clock: Callable[[], float] = time.time,
        hidden_claims: Iterable[str] | None = None,
    ) -> None:
        if algorithm not in ("RS256", "ES256"):
            raise ValueError(f"algorithm must be 'RS256' or 'ES256', got {algorithm!r}")
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
        claims flattening to one name are a MalformedToken. A hidden claim is hidden
        as minted, with everything it nests (``"properties"`` hides every
        ``"properties.*"``), and a dotted name hides one flattened claim. The
        organization is decoded from the claims as minted, as ClerkProvider does."""
        hidden = self.hidden_claims
        minted = {k: v for k, v in claims.items() if k not in hidden or k in ("iss", "sub")}
        identity = UserIdentity.from_claims(_flatten(minted), hidden=hidden)
        return msgspec.structs.replace(identity, org=decode_organization(claims))

    def _check_header(self, header: dict[str, Any]) -> None:
        if not header.get("kid") and not self._pem:
            raise MalformedToken(
                "A custom JWT needs a 'kid' header (Convex: KidMissing): expected the id of a "
                f"key of the provider's JWKS; found {_show(header.get('kid'))}. Fix: have the "
                "issuer put the key's kid in the JWT header, or configure the provider with "
                "public_key=<PEM> to verify with that one key."
            )
