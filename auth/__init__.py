"""convexlite's auth shim: Clerk / OIDC tokens to ``UserIdentity``, and webhook checks.

Everything public is importable from here::

    import auth

    config = auth.AuthConfig(providers=[auth.ClerkProvider(issuer="https://x.clerk.accounts.dev")])
    identity = config.verify(token)
    event = auth.verify_webhook(secret, headers, body)
"""

from __future__ import annotations

from .clerk_sync import (
    clerk_user_fields,
    clerk_users_table,
    current_user,
    delete_from_clerk,
    handle_clerk_webhook,
    upsert_from_clerk,
)
from .config import AuthConfig
from .errors import (
    AuthError,
    InvalidAudience,
    InvalidAuthorizedParty,
    InvalidIssuer,
    InvalidSignature,
    KeyFetchError,
    MalformedToken,
    MissingClaim,
    NoProviderMatches,
    TokenExpired,
    TokenNotYetValid,
    UnknownKey,
    WebhookVerificationError,
)
from .guards import require_identity, require_permission, require_role
from .identity import Organization, UserIdentity
from .keys import JwksFetcher
from .providers import ClerkProvider, CustomJwtProvider
from .webhooks import verify_webhook

__all__ = [
    "AuthConfig",
    "AuthError",
    "ClerkProvider",
    "CustomJwtProvider",
    "InvalidAudience",
    "InvalidAuthorizedParty",
    "InvalidIssuer",
    "InvalidSignature",
    "JwksFetcher",
    "KeyFetchError",
    "MalformedToken",
    "MissingClaim",
    "NoProviderMatches",
    "Organization",
    "TokenExpired",
    "TokenNotYetValid",
    "UnknownKey",
    "UserIdentity",
    "WebhookVerificationError",
    "clerk_user_fields",
    "clerk_users_table",
    "current_user",
    "delete_from_clerk",
    "handle_clerk_webhook",
    "require_identity",
    "require_permission",
    "require_role",
    "upsert_from_clerk",
    "verify_webhook",
]
