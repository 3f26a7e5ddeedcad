"""Svix / Standard Webhooks verification (Clerk sends its webhooks through Svix).

The signed content is ``"{id}.{timestamp}.{raw body}"``; the key is the
base64 part of the ``whsec_`` secret; the header holds space-separated
``v1,<base64 HMAC-SHA256>`` entries (several during secret rotation), any
of which may match; timestamps more than 5 minutes away (either way) are
refused. The body must be the raw bytes as received: a re-serialized body
would not match, so a dict is refused outright.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
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
    tolerance: int = TOLERANCE_SECONDS,
) -> Any:
    """Verify a webhook delivery and return its parsed JSON payload.

    ``headers`` are the raw request headers (``svix-*`` or ``webhook-*``, any
    case); ``body`` the raw request body. Raises
    :class:`WebhookVerificationError` for missing headers, a bad timestamp,
    a timestamp outside the tolerance, or no matching signature; every other
    failure (wrong types, a secret that is not base64) is one too.
    """
    if not isinstance(body, (bytes, bytearray, str)):
        raise WebhookVerificationError(
            "verify_webhook needs the raw request body (bytes or str), not a parsed object: a "
            "re-serialized body does not match the signature."
        )
    try:
        raw = body.encode() if isinstance(body, str) else bytes(body)
    except UnicodeEncodeError as error:
        raise WebhookVerificationError(
            f"Expected the raw request body; found a str that is not valid text ({error}). "
            "Fix: pass the body's bytes as received."
        ) from error
    if not isinstance(headers, Mapping):
        raise WebhookVerificationError(
            f"Expected the request headers as a mapping; found {type(headers).__name__}. "
            "Fix: pass the request's headers (e.g. dict(request.headers))."
        )
    lowered = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    msg_id = lowered.get("svix-id") or lowered.get("webhook-id")
    stamp = lowered.get("svix-timestamp") or lowered.get("webhook-timestamp")
    signatures = lowered.get("svix-signature") or lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "Missing required headers (svix-id, svix-timestamp, "
            "svix-signature or their webhook-* forms)"
        )
    for name, value in (("id", msg_id), ("timestamp", stamp), ("signature", signatures)):
        if not isinstance(value, str):
            raise WebhookVerificationError(
                f"Expected the svix-{name} header as a str; found {type(value).__name__}. "
                "Fix: pass the request's headers as received (decoded to str)."
            )
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError(
            f"Invalid timestamp header {stamp[:40]!r}: expected seconds since the epoch in "
            "ASCII digits. Fix: pass the svix-timestamp header as received."
        )
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("Message timestamp too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("Message timestamp too new")
    key = _key(secret)
    try:
        prefix = f"{msg_id}.{timestamp}.".encode()
    except UnicodeEncodeError as error:
        raise WebhookVerificationError(
            f"Expected the svix-id header as text; found {msg_id[:40]!r} ({error}). "
            "Fix: pass the request's headers as received."
        ) from error
    expected = base64.b64encode(hmac.new(key, prefix + raw, hashlib.sha256).digest())
    for entry in signatures.split(" "):
        version, _, signature = entry.partition(",")
        if (
            version == "v1"
            and signature
            and hmac.compare_digest(signature.encode("utf-8", "replace"), expected)
        ):
            try:
                return json.loads(raw)
            except (ValueError, RecursionError) as error:
                raise WebhookVerificationError(f"The verified body is not JSON: {error}") from error
    raise WebhookVerificationError("No matching signature found")


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, (bytes, bytearray)):
        if not secret:
            raise WebhookVerificationError("The webhook secret is empty")
        return bytes(secret)
    if not isinstance(secret, str):
        raise WebhookVerificationError(
            f"Expected the webhook secret as str ('whsec_...') or bytes; found "
            f"{type(secret).__name__}. Fix: pass the signing secret from the dashboard."
        )
    text = secret[6:] if secret.startswith("whsec_") else secret
    if not text:
        raise WebhookVerificationError("The webhook secret is empty")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise WebhookVerificationError(f"The webhook secret is not base64: {error}") from error
