"""Svix / Standard Webhooks verification (Clerk sends its webhooks through Svix).

The signed content is ``"{id}.{timestamp}.{raw body}"``; the key is the
base64 part of the ``whsec_`` secret; the header holds space-separated
``v1,<base64 HMAC-SHA256>`` entries (several during secret rotation), any
of which may match; timestamps more than 5 minutes away (either way) are
refused. The body must be the raw bytes as received: a re-serialized body
would not match, so a dict is refused outright.

A ``str`` secret is stripped of surrounding whitespace first (a secret read
from an env file keeps its newline); a ``bytes`` secret is the raw HMAC key,
used as is. Every message says what was expected, what was found and the fix,
and never quotes the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from .errors import WebhookVerificationError

__all__ = ["TOLERANCE_SECONDS", "verify_webhook"]

TOLERANCE_SECONDS = 300


#: A timestamp is ASCII digits only (``str.isdigit`` would take "²" or Arabic-Indic
#: digits); 19 digits at most, like Svix's i64 (longer ones are not times anyway).
_TIMESTAMP = re.compile(r"[0-9]{1,19}")


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> Any:
    """Verify a webhook delivery and return its parsed JSON payload.

    ``headers`` are the raw request headers (``svix-*`` or ``webhook-*``, any
    case); ``body`` the raw request body; ``now`` the current time in seconds
    (``time.time()`` by default) and ``tolerance`` how far the delivery's
    timestamp may be from it, either way (both finite numbers, ``tolerance``
    at least 0). Cost: one HMAC-SHA256 over the body and a JSON parse.

    Raises :class:`WebhookVerificationError` for missing headers, a bad timestamp,
    a timestamp outside the tolerance, or no matching signature; every other
    failure (wrong types, a secret that is not base64, a ``now`` or
    ``tolerance`` that is not a finite number) is one too.

    Example::

        event = verify_webhook(os.environ["CLERK_WEBHOOK_SECRET"], request.headers,
                               request.body)
    """
    current = _clock(now, tolerance)
    raw = _raw_body(body)
    msg_id, stamp, signatures = _headers(headers)
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError(
            f"Invalid timestamp header: expected seconds since the epoch in ASCII digits "
            f"(svix-timestamp); found {stamp[:40]!r}. Fix: pass the svix-timestamp header "
            "as received."
        )
    timestamp = int(stamp)
    if timestamp < current - tolerance:
        raise WebhookVerificationError(
            f"Message timestamp too old: expected a timestamp within {tolerance:g} s of now "
            f"({current:.0f}); found {timestamp}, {current - timestamp:.0f} s old. Fix: "
            "verify deliveries as they arrive (a replayed or long-queued delivery is "
            "refused), and check this host's clock."
        )
    if timestamp > current + tolerance:
        raise WebhookVerificationError(
            f"Message timestamp too new: expected a timestamp within {tolerance:g} s of now "
            f"({current:.0f}); found {timestamp}, {timestamp - current:.0f} s in the future. "
            "Fix: check this host's clock."
        )
    key = _key(secret)
    try:
        prefix = f"{msg_id}.{timestamp}.".encode()
    except UnicodeEncodeError:
        raise WebhookVerificationError(
            f"Invalid svix-id header: expected text; found {msg_id[:40]!r}, which is not "
            "valid Unicode. Fix: pass the request's headers as received."
        ) from None
    expected = base64.b64encode(hmac.new(key, prefix + raw, hashlib.sha256).digest())
    entries = signatures.split(" ")
    for entry in entries:
        version, _, signature = entry.partition(",")
        if (
            version == "v1"
            and signature
            and hmac.compare_digest(signature.encode("utf-8", "replace"), expected)
        ):
            try:
                return json.loads(raw)
            except (ValueError, RecursionError) as error:
                raise WebhookVerificationError(
                    f"The verified body is not JSON: expected a JSON payload; found "
                    f"{len(raw)} bytes that do not parse ({error}). Fix: pass the raw body "
                    "as received (the signature matched, so the sender sent it this way)."
                ) from error
    versions = ", ".join(sorted({e.partition(",")[0] or "(none)" for e in entries}))
    raise WebhookVerificationError(
        f"No matching signature found: expected a v1 signature made with this secret over "
        f"the id, timestamp and raw body; found {len(entries)} "
        f"signature{'s' if len(entries) != 1 else ''} (versions {versions}), none matching. "
        "Fix: use this endpoint's signing secret (whsec_..., from the webhook's page in the "
        "dashboard) and pass the body exactly as received, not re-serialized."
    )


_LARGEST = sys.float_info.max


def _clock(now: float | None, tolerance: float) -> float:
    """``now`` (or the time) after checking it and ``tolerance`` are usable numbers: a NaN
    compares False with everything, which would pass a delivery of any age."""
    for name, value in (("now", now), ("tolerance", tolerance)):
        if value is None and name == "now":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            # Compared as they are (float() and isfinite() of a huge int overflow); NaN
            # and the infinities fail the bounds.
            or not -_LARGEST <= value <= _LARGEST
            or (name == "tolerance" and value < 0)
        ):
            expected = (
                "seconds since the epoch, a finite number (or None for the time now)"
                if name == "now"
                else "seconds, a finite number of at least 0"
            )
            raise WebhookVerificationError(
                f"Invalid {name} for verify_webhook: expected {expected}; found "
                f"{value!r:.40}. Fix: pass {name}={'time.time()' if name == 'now' else '300'}"
                " or leave it out."
            )
    return time.time() if now is None else float(now)


def _raw_body(body: Any) -> bytes:
    if not isinstance(body, (bytes, bytearray, str)):
        raise WebhookVerificationError(
            f"verify_webhook needs the raw request body: expected bytes or str; found "
            f"{type(body).__name__}. Fix: pass the body as received; a re-serialized body "
            "does not match the signature."
        )
    try:
        return body.encode() if isinstance(body, str) else bytes(body)
    except UnicodeEncodeError as error:
        raise WebhookVerificationError(
            f"Expected the raw request body; found a str that is not valid text ({error}). "
            "Fix: pass the body's bytes as received."
        ) from error


_NAMES = ("id", "timestamp", "signature")


def _headers(headers: Any) -> tuple[str, str, str]:
    """The id, timestamp and signature headers (``svix-*`` before ``webhook-*``)."""
    if not isinstance(headers, Mapping):
        raise WebhookVerificationError(
            f"Expected the request headers as a mapping; found {type(headers).__name__}. "
            "Fix: pass the request's headers (e.g. dict(request.headers))."
        )
    lowered = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    values = [lowered.get(f"svix-{n}") or lowered.get(f"webhook-{n}") for n in _NAMES]
    missing = [f"svix-{n}" for n, value in zip(_NAMES, values, strict=True) if not value]
    if missing:
        present = sorted(k for k in lowered if k.startswith(("svix-", "webhook-")))
        raise WebhookVerificationError(
            f"Missing required headers: expected svix-id, svix-timestamp and svix-signature "
            f"(or their webhook-* forms); found no {', '.join(missing)} (present: "
            f"{', '.join(present) or 'none of them'}). Fix: pass all the request's headers "
            "as received; a proxy may have dropped them."
        )
    for name, value in zip(_NAMES, values, strict=True):
        if not isinstance(value, str):
            raise WebhookVerificationError(
                f"Expected the svix-{name} header as a str; found {type(value).__name__}. "
                "Fix: pass the request's headers as received (decoded to str)."
            )
    msg_id, stamp, signatures = values
    assert isinstance(msg_id, str) and isinstance(stamp, str) and isinstance(signatures, str)
    return msg_id, stamp, signatures


def _key(secret: str | bytes) -> bytes:
    """The HMAC key of a ``whsec_`` secret (stripped of surrounding whitespace), or of
    raw ``bytes``. Messages never quote the secret."""
    fix = "Fix: pass the endpoint's signing secret (whsec_...) from the dashboard."
    if isinstance(secret, (bytes, bytearray)):
        if not secret:
            raise WebhookVerificationError(
                f"Empty webhook secret: expected the raw key bytes; found none. {fix}"
            )
        return bytes(secret)
    if not isinstance(secret, str):
        raise WebhookVerificationError(
            f"Expected the webhook secret as str ('whsec_...') or bytes; found "
            f"{type(secret).__name__}. {fix}"
        )
    text = secret.strip()  # read from an env file, a secret keeps its newline
    text = text[6:] if text.startswith("whsec_") else text
    if not text:
        raise WebhookVerificationError(
            f"Empty webhook secret: expected 'whsec_' and base64; found nothing after it. {fix}"
        )
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError(
            f"The webhook secret is not base64: expected 'whsec_' and base64 (the secret as "
            f"the dashboard shows it); found {len(text)} characters that do not decode. {fix}"
        ) from None
