"""Svix / Standard Webhooks: the official vectors, the svix package, and every rejection."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest

import auth

A_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
A_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
A_TS = 1614265330
A_BODY = '{"test": 2432232314}'
A_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
B_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
B_ID = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"
B_TS = 1649367553
B_BODY = '{"email":"test@example.com","username":"test_user"}'
B_SIG = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="


def headers(msg_id: str, ts: int, sig: str, prefix: str = "svix") -> dict[str, str]:
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(ts), f"{prefix}-signature": sig}


def test_official_vectors() -> None:
    assert auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS) == {
        "test": 2432232314
    }
    assert (
        auth.verify_webhook(B_SECRET, headers(B_ID, B_TS, B_SIG), B_BODY.encode(), now=B_TS)[
            "username"
        ]
        == "test_user"
    )


def test_official_negative_and_multi_signature_cases() -> None:
    with pytest.raises(auth.WebhookVerificationError, match="No matching signature"):
        auth.verify_webhook(
            A_SECRET,
            headers(A_ID, A_TS, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="),
            A_BODY,
            now=A_TS,
        )
    other = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    multi = f"v1,{other} v2,{other} {A_SIG} v1,{other}"
    auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, multi), A_BODY, now=A_TS)
    with pytest.raises(auth.WebhookVerificationError):
        auth.verify_webhook(
            A_SECRET, headers(A_ID, A_TS, f"v1,{other} v2,{other}"), A_BODY, now=A_TS
        )
    for bad in ["v1,", A_SIG[:8], "garbage", "v1,a,b", "v1,!!!"]:
        with pytest.raises(auth.WebhookVerificationError):
            auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, bad), A_BODY, now=A_TS)


def test_unbranded_headers_and_secret_without_prefix() -> None:
    auth.verify_webhook(A_SECRET[6:], headers(A_ID, A_TS, A_SIG, "webhook"), A_BODY, now=A_TS)
    upper = {k.upper(): v for k, v in headers(A_ID, A_TS, A_SIG).items()}
    auth.verify_webhook(A_SECRET, upper, A_BODY, now=A_TS)


def test_tolerance_is_five_minutes_both_ways() -> None:
    auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS + 300)
    with pytest.raises(auth.WebhookVerificationError, match="too old"):
        auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS + 301)
    with pytest.raises(auth.WebhookVerificationError, match="too new"):
        auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS - 301)


@pytest.mark.parametrize(
    "broken",
    [
        {"svix-timestamp": str(A_TS), "svix-signature": A_SIG},
        {"svix-id": A_ID, "svix-signature": A_SIG},
        {"svix-id": A_ID, "svix-timestamp": str(A_TS)},
        {"svix-id": A_ID, "svix-timestamp": "hello", "svix-signature": A_SIG},
        {"svix-id": A_ID, "svix-timestamp": "-1614265330", "svix-signature": A_SIG},
    ],
)
def test_bad_headers(broken: dict[str, str]) -> None:
    with pytest.raises(auth.WebhookVerificationError):
        auth.verify_webhook(A_SECRET, broken, A_BODY, now=A_TS)


def test_reserialized_body_is_refused() -> None:
    with pytest.raises(auth.WebhookVerificationError, match="raw request body"):
        auth.verify_webhook(
            A_SECRET,
            headers(A_ID, A_TS, A_SIG),
            json.loads(A_BODY),  # type: ignore[arg-type]
            now=A_TS,
        )
    with pytest.raises(auth.WebhookVerificationError):
        auth.verify_webhook(A_SECRET, headers(A_ID, A_TS, A_SIG), '{"test":2432232314}', now=A_TS)


def test_payloads_signed_by_the_svix_package() -> None:
    svix = pytest.importorskip("svix.webhooks")
    secret = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLWNvbnZleGxpdGU="
    body = json.dumps({"type": "user.created", "data": {"id": "user_1"}})
    now = int(time.time())
    from datetime import datetime

    signature = svix.Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), body)
    event = auth.verify_webhook(secret, headers("msg_1", now, signature), body)
    assert event["data"]["id"] == "user_1"


@pytest.mark.parametrize(
    "stamp",
    [
        "\u00b2",  # superscript two: str.isdigit() is True, int() raises ValueError
        "١٦١٤٢٦٥٣٣٠",  # Arabic-Indic digits: int() accepts them
        "１６１４２６５３３０",  # fullwidth digits
        " 1614265330",
        "1614265330\n",
        "+1614265330",
        "1614265330.9",
        "9" * 5000,  # beyond int()'s digit limit
        "",
    ],
)
def test_timestamp_must_be_ascii_digits(stamp: str) -> None:
    """Review 9 bug 8: only ASCII digits are a timestamp, and every failure is a
    WebhookVerificationError (research §3 step 3)."""
    broken = {"svix-id": A_ID, "svix-timestamp": stamp, "svix-signature": A_SIG}
    with pytest.raises(auth.WebhookVerificationError):
        auth.verify_webhook(A_SECRET, broken, A_BODY, now=A_TS)


@pytest.mark.parametrize(
    ("secret", "headers_", "body"),
    [
        (A_SECRET, {"svix-id": A_ID, "svix-timestamp": A_TS, "svix-signature": A_SIG}, A_BODY),
        (A_SECRET, {"svix-id": A_ID, "svix-timestamp": str(A_TS), "svix-signature": 1}, A_BODY),
        (A_SECRET, {1: "x"}, A_BODY),
        (
            A_SECRET,
            {"svix-id": "\ud800", "svix-timestamp": str(A_TS), "svix-signature": A_SIG},
            A_BODY,
        ),
        (A_SECRET, "not a mapping", A_BODY),
        (12345, headers(A_ID, A_TS, A_SIG), A_BODY),
        (A_SECRET, headers(A_ID, A_TS, A_SIG), "\ud800"),
    ],
    ids=[
        "int-timestamp",
        "int-signature",
        "int-header-name",
        "surrogate-id",
        "str-headers",
        "int-secret",
        "surrogate-body",
    ],
)
def test_wrong_types_are_webhook_verification_errors(secret, headers_, body) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(auth.WebhookVerificationError):
        auth.verify_webhook(secret, headers_, body, now=A_TS)
