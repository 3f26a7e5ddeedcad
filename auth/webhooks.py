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
import time
from collections.abc import Mapping
from typing import Any

from .errors import WebhookVerificationError

__all__ = ["TOLERANCE_SECONDS", "verify_webhook"]

TOLERANCE_SECONDS = 300


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
    a timestamp outside the tolerance, or no matching signature.
    """
    if not isinstance(body, (bytes, bytearray, str)):
        raise WebhookVerificationError(
            "verify_webhook needs the raw request body (bytes or str), not a parsed object: a "
            "re-serialized body does not match the signature."
        )
    raw = body.encode() if isinstance(body, str) else bytes(body)
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("svix-id") or lowered.get("webhook-id")
    stamp = lowered.get("svix-timestamp") or lowered.get("webhook-timestamp")
    signatures = lowered.get("svix-signature") or lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "Missing required headers (svix-id, svix-timestamp, "
            "svix-signature or their webhook-* forms)"
        )
    if not stamp.isdigit():
        raise WebhookVerificationError(f"Invalid timestamp header {stamp!r}")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("Message timestamp too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("Message timestamp too new")
    key = _key(secret)
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    )
    for entry in signatures.split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and signature and hmac.compare_digest(signature.encode(), expected):
            try:
                return json.loads(raw)
            except ValueError as error:
                raise WebhookVerificationError(f"The verified body is not JSON: {error}") from error
    raise WebhookVerificationError("No matching signature found")


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        if not secret:
            raise WebhookVerificationError("The webhook secret is empty")
        return secret
    text = secret[6:] if secret.startswith("whsec_") else secret
    if not text:
        raise WebhookVerificationError("The webhook secret is empty")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise WebhookVerificationError(f"The webhook secret is not base64: {error}") from error
