"""The exception tree of the auth shim.

::

    AuthError
    ├── MalformedToken              not a JWT, a header or claim of the wrong shape, no kid (customJwt)
    ├── NoProviderMatches           no configured provider has this iss and aud
    ├── InvalidSignature            bad signature, an algorithm outside the pinned list, or a key
    │                               whose type does not fit the algorithm
    ├── UnknownKey                  no key with the token's kid
    ├── KeyFetchError               the JWKS or discovery document could not be fetched
    ├── TokenExpired                exp is in the past (beyond the leeway)
    ├── TokenNotYetValid            nbf or iat is in the future (beyond the leeway)
    ├── InvalidIssuer               iss is not the provider's issuer
    ├── InvalidAudience             aud does not hold the application id (Clerk: is not exactly it)
    ├── InvalidAuthorizedParty      azp is missing or not one of the authorized parties
    ├── MissingClaim                a required claim (sub, iss, exp) is absent
    └── WebhookVerificationError    a webhook's signature, timestamp or headers are wrong

Messages say what was expected, what was found, and the fix.
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
