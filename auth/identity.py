"""``UserIdentity``: a verified caller, built from JWT claims as Convex builds it.

``token_identifier`` is ``"{iss}|{sub}"``; OIDC standard claims map to
snake_case fields (``picture`` → ``picture_url``, ``birthdate`` →
``birthday``, ``zoneinfo`` → ``timezone``, ``locale`` → ``language``);
every other claim is kept in ``claims`` except the hidden ones: those that
change on each refresh or only serve verification. Which claims are hidden is a
provider setting (``hidden_claims``); the defaults are Convex's:
:data:`OIDC_HIDDEN_CLAIMS` for Clerk / OIDC, :data:`CUSTOM_JWT_HIDDEN_CLAIMS`
for customJwt.
``org`` is the Clerk organization, from the v2 ``o`` claim or the v1
``org_*`` claims.

Claims are checked for the shape the identity needs, as Convex's typed claims
are: a standard claim of the wrong type (a list for ``name``, ``"maybe"`` for
``email_verified``), an organization claim that is not Clerk's (``o.id`` a
list), or a date out of the years 1-9999 is a ``MalformedToken`` naming the
claim, never an identity that cannot be hashed or a silently stringified value.
"""

from __future__ import annotations

import copy
import datetime as _dt
from collections.abc import Collection, Mapping
from typing import Any, NoReturn

import msgspec

__all__ = [
    "CUSTOM_JWT_HIDDEN_CLAIMS",
    "OIDC_HIDDEN_CLAIMS",
    "Organization",
    "UserIdentity",
    "decode_organization",
]

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
#: Not surfaced by Convex's OIDC path (research §1.7): the claims its typed ID-token
#: fields consume, and jti, nbf, fva, which change on every refresh and would make each
#: refreshed token a new identity (re-running every subscription).
OIDC_HIDDEN_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp"}
    | {"at_hash", "c_hash", "jti", "nbf", "fva"}
)
#: Not surfaced by Convex's customJwt path: the registered claims and fva (azp shows).
CUSTOM_JWT_HIDDEN_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "fva"})
#: Always fields of the identity (issuer, subject), never claims.
_IDENTITY_FIELDS = frozenset({"iss", "sub"})


#: Seconds since the epoch of 0001-01-01 and of 9999-12-31T23:59:59Z: the dates a
#: NumericDate may hold (datetime's range; Convex's chrono-based parse refuses more).
MIN_DATE = -62135596800
MAX_DATE = 253402300799


_READ_ONLY = (
    "identity claims are read-only: an identity is shared by every call with its token "
    "(the token cache returns the same one). Copy them to change them: dict(claims), "
    "list(value) or copy.deepcopy(claims)"
)


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(_READ_ONLY)


class _ReadOnlyDict(dict[str, Any]):
    """A claims object: a ``dict`` (``==``, ``json.dumps``, ``isinstance`` work) that
    refuses changes. ``copy.copy`` / ``copy.deepcopy`` give plain, mutable copies."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ReadOnlyDict, (dict(self),))


class _ReadOnlyList(list[Any]):
    """A claim's array: a ``list`` that refuses changes (see :class:`_ReadOnlyDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ReadOnlyList, (list(self),))


def _read_only_shell(value: Any) -> Any:
    """An empty read-only container for a dict or list, else ``value`` itself."""
    if isinstance(value, dict):
        return _ReadOnlyDict()
    if isinstance(value, list):
        return _ReadOnlyList()
    return value


def read_only(value: Any) -> Any:
    """``value`` with every dict and list in it made read-only (copied once).

    Iterative, so no depth of nesting (and no depth of the caller's stack) makes it
    raise RecursionError; a container met twice is copied once (a structure that
    contains itself gives a read-only one that does too). Cost: one pass over the
    containers.
    """
    root = _read_only_shell(value)
    if root is value:
        return value
    copies = {id(value): root}
    pending = [(value, root)]
    while pending:
        source, target = pending.pop()
        # The read-only types refuse changes; fill them through the base class.
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in pairs:
            copy_ = copies.get(id(item))
            if copy_ is None:
                copy_ = _read_only_shell(item)
                if copy_ is not item:
                    copies[id(item)] = copy_
                    pending.append((item, copy_))
            if isinstance(target, dict):
                dict.__setitem__(target, key, copy_)
            else:
                list.append(target, copy_)
    return root


class Organization(msgspec.Struct, frozen=True):
    """A Clerk organization: id, slug, role (``org:admin``) and permissions."""

    id: str
    slug: str | None = None
    role: str | None = None
    permissions: tuple[str, ...] = ()

    def __hash__(self) -> int:
        return hash(_freeze(msgspec.structs.astuple(self)))


def _freeze(value: Any) -> Any:
    """A hashable stand-in for ``value``, equal for equal values (hashes must agree
    with ``==``); anything unhashable a host put in an identity hashes by its repr."""
    if isinstance(value, dict):
        items = ((str(k), _freeze(v)) for k, v in value.items())
        return ("dict", tuple(sorted(items, key=lambda item: item[0])))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, msgspec.Struct):
        return (type(value).__name__, _freeze(msgspec.structs.astuple(value)))
    try:
        hash(value)
    except TypeError:
        return ("unhashable", type(value).__name__, repr(value))
    return value


class UserIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """The verified caller. Immutable and hashable (subscriptions key on it).

    Identities built from tokens have read-only ``claims`` (nested lists and
    objects too): the token cache gives every call with a token the same
    identity, so no caller may change what the next one sees. Changing them
    raises ``TypeError``; ``copy.deepcopy(identity.claims)`` is a mutable copy.

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
        return hash(_freeze((self.token_identifier, self.name, self.email, self.org, self.claims)))

    @classmethod
    def from_claims(
        cls, claims: Mapping[str, Any], *, hidden: Collection[str] = OIDC_HIDDEN_CLAIMS
    ) -> UserIdentity:
        """The identity of verified ``claims`` (``iss`` and ``sub`` required).

        Claims named in ``hidden`` are not surfaced, neither as a standard field nor
        in ``claims`` (``iss`` and ``sub`` are always the ``issuer`` and ``subject``
        fields); ``org`` is decoded from all claims. A str ``hidden`` is a TypeError
        (it would hide every claim named by a part of it). Cost: one pass over the claims.

        Example::

            UserIdentity.from_claims({"iss": "https://i", "sub": "u", "team": "core"})
        """
        if isinstance(hidden, str):  # "sid" would hide "id", "s", "i", "d" too
            raise TypeError(
                f"hidden takes claim names (a set or list): expected {{{hidden!r}}}; found "
                f"the str {hidden!r}, which would hide every claim named by a part of it. "
                f"Fix: hidden={{{hidden!r}}}."
            )
        issuer, subject = claims.get("iss"), claims.get("sub")
        if not isinstance(issuer, str) or not isinstance(subject, str):
            from .errors import MissingClaim

            raise MissingClaim("A token needs string 'iss' and 'sub' claims to make an identity.")
        fields: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in claims.items():
            if key in hidden or key in _IDENTITY_FIELDS:
                continue
            target = _STANDARD.get(key)
            if target is None:
                extra[key] = value
            elif key == "address":
                fields[target] = _address(value)
            elif key == "updated_at":
                fields[target] = _rfc3339(value)
            elif key in ("email_verified", "phone_number_verified"):
                fields[target] = _flag(key, value)
            else:
                fields[target] = _text(key, value, "a string")
        return cls(
            token_identifier=f"{issuer}|{subject}",
            subject=subject,
            issuer=issuer,
            claims=read_only(extra),
            org=decode_organization(claims),
            **fields,
        )


def _text(claim: str, value: Any, expected: str) -> str | None:
    """``value`` if it is a string or None, else a MalformedToken naming ``claim``."""
    if value is None or isinstance(value, str):
        return value
    raise _malformed(claim, expected, value)


def _flag(claim: str, value: Any) -> bool | None:
    """A boolean claim: a bool, or the legacy template's ``"true"`` / ``"false"``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _malformed(claim, 'a boolean (or the string "true" or "false")', value)


def _address(value: Any) -> str | None:
    """OIDC's address claim: its ``formatted`` string (a plain string is kept)."""
    if isinstance(value, dict):
        return _text("address", value.get("formatted"), 'an object whose "formatted" is a string')
    return _text("address", value, 'an object with a "formatted" string')


def _rfc3339(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:  # an RFC 3339 time is rendered as Convex renders it (in UTC, "+00:00")
            moment = _dt.datetime.fromisoformat(value)
        except ValueError:
            return value  # not one: kept as the issuer wrote it
        if moment.tzinfo is None or "T" not in value.upper():
            return value  # no offset (or no time): not RFC 3339, kept as it is
        try:
            return _render(moment.astimezone(_dt.UTC))
        except (OverflowError, ValueError):  # before the year 1 in UTC
            return value
    expected = "a time in seconds or milliseconds since the epoch, in the years 1-9999"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not MIN_DATE <= value <= MAX_DATE * 1000 + 999
    ):
        raise _malformed("updated_at", expected, value)
    # Clerk templates give ms: split exactly (a float of ms would blur the last digits)
    seconds, ms = divmod(value, 1000) if value > 10**11 else (value, 0)
    try:
        moment = _dt.datetime.fromtimestamp(seconds, _dt.UTC) + _dt.timedelta(milliseconds=ms)
    except (OverflowError, ValueError, OSError):
        raise _malformed("updated_at", expected, value) from None
    return _render(moment)


def _render(moment: _dt.datetime) -> str:
    """A UTC time as chrono's ``to_rfc3339()`` renders it (Convex's rendering):
    ``+00:00``, not ``Z``, and the sub-second digits only when not zero, in groups
    of three."""
    fraction = moment.microsecond
    digits = (
        ""
        if not fraction
        else f".{fraction // 1000:03d}"
        if not fraction % 1000
        else f".{fraction:06d}"
    )
    return moment.replace(microsecond=0, tzinfo=None).isoformat() + digits + "+00:00"


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages (never raises)."""
    try:
        text = repr(value)
    except ValueError:  # an int past the digit limit of int-to-str conversion
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _malformed(claim: str, expected: str, found: Any) -> Exception:
    from .errors import MalformedToken

    return MalformedToken(
        f"Invalid claim {claim!r}: expected {expected}; found {_show(found)}. Fix: check the "
        "issuer's token template (the token is signed, so the issuer minted it this way)."
    )


def decode_organization(claims: Mapping[str, Any]) -> Organization | None:
    """The active organization of a Clerk token (v2 ``o`` claim, or v1 ``org_*``).

    Every part must have Clerk's shape (strings, a list of strings for
    ``org_permissions``); anything else is a ``MalformedToken`` naming the claim.
    """
    o = claims.get("o")
    if o is not None:
        if not isinstance(o, dict):
            raise _malformed("o", "Clerk's organization object {id, slg, rol, per, fpm}", o)
        org_id = o.get("id")
        if not isinstance(org_id, str):
            raise _malformed("o.id", "a string (the organization id)", org_id)
        role = _text("o.rol", o.get("rol"), "a string (the role without 'org:')")
        return Organization(
            id=org_id,
            slug=_text("o.slg", o.get("slg"), "a string (the organization slug)"),
            role=None if role is None else f"org:{role}",
            permissions=_v2_permissions(claims.get("fea"), o),
        )
    org_id = claims.get("org_id")
    if org_id is None:
        return None
    if not isinstance(org_id, str):
        raise _malformed("org_id", "a string (the organization id)", org_id)
    permissions = claims.get("org_permissions") or ()
    if not isinstance(permissions, (list, tuple)) or not all(
        isinstance(p, str) for p in permissions
    ):
        raise _malformed("org_permissions", "a list of permission keys (strings)", permissions)
    return Organization(
        id=org_id,
        slug=_text("org_slug", claims.get("org_slug"), "a string (the organization slug)"),
        role=_text("org_role", claims.get("org_role"), "a string such as 'org:admin'"),
        permissions=tuple(permissions),
    )


def _v2_permissions(features_claim: Any, o: Mapping[str, Any]) -> tuple[str, ...]:
    """Clerk's v2 encoding: org features × permissions, selected by bit masks (``fpm``)."""
    features_text = _text("fea", features_claim, "a comma-separated string of features")
    per = _text("o.per", o.get("per"), "a comma-separated string of permissions")
    fpm = _text("o.fpm", o.get("fpm"), "a comma-separated string of bit masks")
    if not features_text or not per or not fpm:
        return ()
    features = []
    for entry in features_text.split(","):
        scope, sep, name = entry.partition(":")
        if sep and "o" in scope:  # "o:", "ou:", "uo:" are organization features
            features.append(name)
    perms = per.split(",")
    masks = fpm.split(",")
    out = []
    for i, feature in enumerate(features):
        if i >= len(masks):
            break
        text = masks[i].strip()
        expected = "comma-separated integers (Clerk's feature-permission masks)"
        if not text.isascii() or not text.isdigit():
            raise _malformed("o.fpm", expected, fpm)
        try:
            mask = int(text)
        except ValueError:  # more digits than int() converts
            raise _malformed("o.fpm", expected, fpm) from None
        for j, perm in enumerate(perms):
            if mask >> j & 1:
                out.append(f"org:{feature}:{perm}")
    return tuple(out)
