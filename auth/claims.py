"""A JWT's parts and claims, read before and after the signature check.

:func:`parse_unverified` splits a token into its header and claims, checking
only their shape; the other helpers read one claim each (``iss`` normalized as
Convex routes by it, ``aud`` as a list, NumericDates, strings) or flatten
customJwt claims. Every failure is an :class:`~auth.errors.AuthError` whose
message says what was expected, what was found and the fix, and never quotes
the token: it may be a credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any

from .errors import MalformedToken, MissingClaim, TokenExpired
from .identity import MAX_DATE, MIN_DATE, _show

__all__ = ["normalize_issuer", "parse_unverified"]

_RESEND = "Fix: send the token exactly as the issuer minted it (Authorization: Bearer <token>)."


def normalize_issuer(url: str) -> str:
    """Convex's issuer normalization: add ``https://`` if no scheme, drop a trailing ``/``."""
    if not url.startswith(("http://", "https://")):
        url = "https://" + url
    return url.rstrip("/")


# A credential is never quoted in an error (messages reach logs and HTTP answers, and
# the "token" may be an API key pasted by mistake): parse errors describe its shape only.


_FAILED: Any = object()  # what _unjson returns for input that is not JSON (null is None)
_TOO_DEEP: Any = object()  # what _unjson returns for JSON nested past the stack

#: Levels of arrays and objects a JWT part may nest, the part itself included.
#: serde_json, which Convex's backend parses JSON with, stops at 128 by default; the
#: bound keeps every identity usable where it is walked recursively (hashing it for a
#: subscription, copy.deepcopy, json.dumps, returning a claim from a function).
MAX_NESTING = 128


def _unbase64(segment: str) -> bytes | None:
    """``segment`` base64url-decoded, or None."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def _unjson(data: bytes) -> Any:
    """``data`` parsed as JSON, or ``_FAILED`` (the error, whose ``.object`` or ``.doc``
    holds all of ``data``, is dropped here, not kept as a ``__context__``)."""
    try:
        return json.loads(data)
    except ValueError:
        return _FAILED
    except RecursionError:
        return _TOO_DEEP


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels (``value``
    being level 1). Iterative; cost: one pass over the containers."""
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if level > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                pending.append((child, level + 1))
    return False


def _part(segment: str, what: str) -> dict[str, Any]:
    """One base64url JSON part of a JWT, which must be an object.

    The MalformedTokens are raised outside any ``except`` block: a decoding error
    holds the decoded bytes (the credential), and ``from None`` would still leave it
    reachable as ``__context__``.
    """
    data = _unbase64(segment)
    if data is None:
        raise MalformedToken(
            f"Could not parse JWT {what}: expected base64url-encoded JSON; found "
            f"{len(segment)} characters that do not decode as base64url. {_RESEND}"
        )
    value = _unjson(data)
    if value is _TOO_DEEP or (isinstance(value, dict) and _nesting_exceeds(value, MAX_NESTING)):
        raise _too_deep(what, "found deeper nesting" if value is not _TOO_DEEP else None)
    if value is _FAILED:
        raise MalformedToken(
            f"Could not parse JWT {what}: expected base64url-encoded JSON; found base64url "
            f"of {len(data)} bytes that are not JSON. {_RESEND}"
        )
    if not isinstance(value, dict):
        raise MalformedToken(
            f"Could not parse JWT {what}: expected a JSON object; found a JSON "
            f"{_JSON_TYPES.get(type(value), type(value).__name__)}. {_RESEND}"
        )
    return value


def _too_deep(what: str, found: str | None = None) -> MalformedToken:
    """The MalformedToken for a JWT part nested too deep (for the bound, or for the
    Python stack left to parse it: json.loads recurses once per level)."""
    found = found or (
        "JSON nested deeper than the Python stack left here could parse (recursion "
        f"limit {sys.getrecursionlimit()})"
    )
    return MalformedToken(
        f"Could not parse JWT {what}: expected JSON nested at most {MAX_NESTING} levels deep "
        f"(arrays and objects, the {what} itself included); {found}. Fix: have the issuer "
        "mint flatter claims (serde_json, which Convex's backend parses JSON with, stops "
        f"at {MAX_NESTING} levels by default)."
    )


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def parse_unverified(token: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of ``token`` without checking anything but their shape.

    Errors describe what the token looks like (its type, length, number of parts),
    never its text: it may be a credential that must not reach a log.
    """
    if isinstance(token, str) and token[:7].lower() == "bearer ":
        # The Authorization header's value pasted as the token: say so, rather than
        # that the header "does not decode as base64url".
        raise MalformedToken(
            "Expected a JWT alone; found the scheme 'Bearer ' in front of it. Fix: pass "
            "the token without 'Bearer ' (only an Authorization header carries the scheme)."
        )
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


def _flatten(claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` with nested objects spread into dotted keys; arrays and scalars kept.

    Two claims that flatten to one name (``{"a.b": 1, "a": {"b": 2}}``) are a
    MalformedToken: neither may silently replace the other. Iterative (depth first,
    in claim order), so no depth of nesting makes it raise RecursionError.
    """
    out: dict[str, Any] = {}
    # The objects being walked, innermost last: each with its name prefix and the
    # iterator over the claims not yet flattened.
    walking = [("", iter(claims.items()))]
    while walking:
        prefix, items = walking[-1]
        for key, value in items:
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walking.append((f"{name}.", iter(value.items())))
                break
            if name in out:
                raise MalformedToken(
                    f"Invalid claim {name!r}: expected each flattened claim name once "
                    "(customJwt claims are flattened with dots, as in Convex); found it "
                    "twice, from a dotted name and a nested object. Fix: have the issuer "
                    "mint only one of them."
                )
            out[name] = value
        else:
            walking.pop()  # this object is done
    return out
