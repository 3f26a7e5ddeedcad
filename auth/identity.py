"""``UserIdentity``: a verified caller, built from JWT claims as Convex builds it.

``token_identifier`` is ``"{iss}|{sub}"``; OIDC standard claims map to
snake_case fields (``picture`` → ``picture_url``, ``birthdate`` →
``birthday``, ``zoneinfo`` → ``timezone``, ``locale`` → ``language``);
every other claim is kept in ``claims`` except the ones that change on each
refresh or only serve verification (``jti nbf fva iat exp aud azp``).
``org`` is the Clerk organization, from the v2 ``o`` claim or the v1
``org_*`` claims.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["Organization", "UserIdentity", "decode_organization"]

_STANDARD = {
    "name": "name",
    "given_name": "given_name",
    "family_name": "family_name",
    "nickname": "nickname",
    "preferred_username": "preferred_username",
    "profile": "profile_url",
    "picture": "picture_url",
    "website": "website_url",
    "email": "email",
    "email_verified": "email_verified",
    "gender": "gender",
    "birthdate": "birthday",
    "zoneinfo": "timezone",
    "locale": "language",
    "phone_number": "phone_number",
    "phone_number_verified": "phone_number_verified",
    "address": "address",
    "updated_at": "updated_at",
}
_HIDDEN = {"iss", "sub", "jti", "nbf", "fva", "iat", "exp", "aud", "azp"}


class Organization(msgspec.Struct, frozen=True):
    """A Clerk organization: id, slug, role (``org:admin``) and permissions."""

    id: str
    slug: str | None = None
    role: str | None = None
    permissions: tuple[str, ...] = ()


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class UserIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """The verified caller. Immutable and hashable (subscriptions key on it).

    Example::

        identity = auth_config.verify(token)
        identity.token_identifier    # 'https://x.clerk.accounts.dev|user_123'
        identity.org.role            # 'org:admin'
    """

    token_identifier: str
    subject: str
    issuer: str
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    nickname: str | None = None
    preferred_username: str | None = None
    profile_url: str | None = None
    picture_url: str | None = None
    website_url: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    gender: str | None = None
    birthday: str | None = None
    timezone: str | None = None
    language: str | None = None
    phone_number: str | None = None
    phone_number_verified: bool | None = None
    address: str | None = None
    updated_at: str | None = None
    claims: dict[str, Any] = {}
    org: Organization | None = None

    def __hash__(self) -> int:
        return hash((self.token_identifier, self.name, self.email, self.org, _freeze(self.claims)))

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> UserIdentity:
        """The identity of verified ``claims`` (``iss`` and ``sub`` required)."""
        issuer, subject = claims.get("iss"), claims.get("sub")
        if not isinstance(issuer, str) or not isinstance(subject, str):
            from .errors import MissingClaim

            raise MissingClaim("A token needs string 'iss' and 'sub' claims to make an identity.")
        fields: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in claims.items():
            if key in _HIDDEN:
                continue
            target = _STANDARD.get(key)
            if target is None:
                extra[key] = value
            elif key == "address":
                fields[target] = value.get("formatted") if isinstance(value, dict) else value
            elif key == "updated_at":
                fields[target] = _rfc3339(value)
            elif key in ("email_verified", "phone_number_verified"):
                fields[target] = value if isinstance(value, bool) else str(value).lower() == "true"
            else:
                fields[target] = value if value is None else str(value)
        return cls(
            token_identifier=f"{issuer}|{subject}",
            subject=subject,
            issuer=issuer,
            claims=extra,
            org=decode_organization(claims),
            **fields,
        )


def _rfc3339(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value  # Clerk templates give ms
        try:
            moment = _dt.datetime.fromtimestamp(seconds, _dt.UTC)
        except (OverflowError, ValueError, OSError):
            raise _malformed("updated_at", "a time in seconds or milliseconds", value) from None
        return moment.isoformat().replace("+00:00", "Z")
    return str(value)


def _malformed(claim: str, expected: str, found: Any) -> Exception:
    from .errors import MalformedToken

    return MalformedToken(
        f"Invalid claim {claim!r}: expected {expected}; found {found!r}. Fix: check the "
        "issuer's token template (the token is signed, so the issuer minted it this way)."
    )


def decode_organization(claims: Mapping[str, Any]) -> Organization | None:
    """The active organization of a Clerk token (v2 ``o`` claim, or v1 ``org_*``)."""
    o = claims.get("o")
    if isinstance(o, dict) and isinstance(o.get("id"), str):
        role = o.get("rol")
        return Organization(
            id=o["id"],
            slug=o.get("slg"),
            role=None if role is None else f"org:{role}",
            permissions=_v2_permissions(claims.get("fea"), o),
        )
    org_id = claims.get("org_id")
    if isinstance(org_id, str):
        permissions = claims.get("org_permissions") or ()
        if not isinstance(permissions, (list, tuple)):
            raise _malformed("org_permissions", "a list of permission keys", permissions)
        return Organization(
            id=org_id,
            slug=claims.get("org_slug"),
            role=claims.get("org_role"),
            permissions=tuple(str(p) for p in permissions),
        )
    return None


def _v2_permissions(features_claim: Any, o: Mapping[str, Any]) -> tuple[str, ...]:
    """Clerk's v2 encoding: org features × permissions, selected by bit masks (``fpm``)."""
    if not isinstance(features_claim, str) or not o.get("per") or not o.get("fpm"):
        return ()
    features = []
    for entry in features_claim.split(","):
        scope, sep, name = entry.partition(":")
        if sep and "o" in scope:  # "o:", "ou:", "uo:" are organization features
            features.append(name)
    perms = str(o["per"]).split(",")
    masks = str(o["fpm"]).split(",")
    out = []
    for i, feature in enumerate(features):
        if i >= len(masks):
            break
        text = masks[i].strip()
        if not text.isascii() or not text.isdigit():
            raise _malformed(
                "o.fpm", "comma-separated integers (Clerk's feature-permission masks)", o["fpm"]
            )
        mask = int(text)
        for j, perm in enumerate(perms):
            if mask >> j & 1:
                out.append(f"org:{feature}:{perm}")
    return tuple(out)
