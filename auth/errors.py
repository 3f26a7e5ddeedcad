"""The exception tree of the auth shim.

::

    AuthError
    ├── MalformedToken              not a JWT, longer than max_token_length, a header or claim
    │                               of the wrong shape (a date outside the years 1-9999, a list
    │                               where a string belongs, a flattening collision, nested
    │                               past 128 levels), no kid (customJwt), a typ other than
    │                               JWT/JOSE or a cty/crit (Clerk)
    ├── NoProviderMatches           no configured provider has this iss and aud
    ├── InvalidSignature            bad signature, an algorithm outside the pinned list, or a key
    │                               whose type does not fit the algorithm (Ed448 for EdDSA)
    ├── UnknownKey                  no key with the token's kid
    ├── KeyFetchError               the JWKS or discovery document could not be fetched: an HTTP
    │                               or connection failure, a broken reply, past the 10 s deadline
    │                               or over the 1 MiB cap
    ├── TokenExpired                exp is in the past (beyond the leeway); also ends a
    │                               subscription made with the token
    ├── TokenNotYetValid            nbf or iat is in the future (beyond the leeway)
    ├── InvalidIssuer               iss is not the provider's issuer (Clerk: not exactly it)
    ├── InvalidAudience             aud does not hold the application id (Clerk: is not exactly it)
    ├── InvalidAuthorizedParty      azp is missing or not one of the authorized parties
    ├── MissingClaim                a required claim (sub, iss, exp; iat for Clerk) is absent
    └── WebhookVerificationError    a webhook's signature, timestamp or headers are wrong, or
                                    verify_webhook's arguments are (a NaN now)

Messages say what was expected, what was found, and the fix; they never quote a
credential (the token's text, a webhook secret).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "InvalidAudience",
    "InvalidAuthorizedParty",
    "InvalidIssuer",
    "InvalidSignature",
    "KeyFetchError",
    "MalformedToken",
    "MissingClaim",
    "NoProviderMatches",
    "TokenExpired",
    "TokenNotYetValid",
    "UnknownKey",
    "WebhookVerificationError",
]


class AuthError(Exception):
    """Root of every error the auth shim raises; never returned as an identity."""


class MalformedToken(AuthError):
    """The token is not a well-formed JWT."""


class NoProviderMatches(AuthError):
    """No configured provider matches the token's issuer and audience."""


class InvalidSignature(AuthError):
    """The signature does not verify, or the algorithm is not allowed."""


class UnknownKey(AuthError):
    """No key of the provider has the token's ``kid``."""


class KeyFetchError(AuthError):
    """The provider's keys could not be fetched (and none are cached): any HTTP or
    connection failure, or a reply that is not the expected JSON document."""


class TokenExpired(AuthError):
    """The token's ``exp`` has passed."""


class TokenNotYetValid(AuthError):
    """The token's ``nbf`` (or ``iat``) is in the future."""


class InvalidIssuer(AuthError):
    """The token's ``iss`` is not the provider's issuer."""


class InvalidAudience(AuthError):
    """The token's ``aud`` does not contain the application id (for Clerk: is not exactly it)."""


class InvalidAuthorizedParty(AuthError):
    """The token's ``azp`` is missing or not one of the provider's authorized parties."""


class MissingClaim(AuthError):
    """A required claim is missing."""


class WebhookVerificationError(AuthError):
    """A webhook could not be verified: headers, timestamp or signature."""
