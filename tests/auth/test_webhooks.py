"""Svix / Standard Webhooks: the official vectors, the svix package, and every rejection."""

from __future__ import annotations

import json
import re
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


# -- messages, secrets from env files, refused clocks --------------------------------

MESSAGE = r"(?s)[Ee]xpected.*found.*Fix:"


def _error(secret: object, headers_: object, body: object, **kwargs: object) -> str:
    with pytest.raises(auth.WebhookVerificationError) as caught:
        auth.verify_webhook(secret, headers_, body, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def test_messages_say_expected_and_found() -> None:
    """'Message timestamp too old' said neither how old nor the tolerance; 'No matching
    signature found' and 'Missing required headers' said nothing of what was there."""
    old = _error(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS + 301)
    assert re.search(r"(?s)too old.*within 300 s.*301 s old.*Fix:", old), old
    new = _error(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS - 1000)
    assert re.search(r"(?s)too new.*within 300 s.*1000 s in the future.*Fix:", new), new
    missing = _error(A_SECRET, {"svix-id": A_ID}, A_BODY, now=A_TS)
    assert re.search(r"(?s)svix-timestamp.*svix-signature.*found.*svix-id.*Fix:", missing)
    other = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    wrong = _error(A_SECRET, headers(A_ID, A_TS, f"v1,{other} v2,{other}"), A_BODY, now=A_TS)
    assert re.search(r"(?s)No matching signature.*found 2 signatures.*v1.*v2.*Fix:", wrong)
    cases = [
        (A_SECRET, headers(A_ID, A_TS, "garbage"), A_BODY),
        (A_SECRET, {**headers(A_ID, A_TS, A_SIG), "svix-timestamp": "hello"}, A_BODY),
        ("whsec_", headers(A_ID, A_TS, A_SIG), A_BODY),
        ("whsec_not base64!", headers(A_ID, A_TS, A_SIG), A_BODY),
        (A_SECRET, headers(A_ID, A_TS, A_SIG), {"parsed": True}),
        (A_SECRET, headers(A_ID, A_TS, A_SIG), "{nope"),
        (12345, headers(A_ID, A_TS, A_SIG), A_BODY),
        (A_SECRET, "not a mapping", A_BODY),
    ]
    for secret, headers_, body in cases:
        message = _error(secret, headers_, body, now=A_TS)
        assert re.search(MESSAGE, message), message
    assert "MfKQ9r8GKY" not in _error(
        "whsec_MfKQ9r8GKY!!", headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS
    )


@pytest.mark.parametrize(
    "secret",
    [A_SECRET + "\n", A_SECRET + "\r\n", f"  {A_SECRET}\t", "\n" + A_SECRET[6:] + "\n"],
    ids=["newline", "crlf", "spaces", "bare-base64"],
)
def test_a_secret_read_from_an_env_file_works(secret: str) -> None:
    """A secret with a trailing newline (read from a file) was 'not base64'."""
    assert auth.verify_webhook(secret, headers(A_ID, A_TS, A_SIG), A_BODY, now=A_TS) == {
        "test": 2432232314
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"now": float("nan")},
        {"now": float("inf")},
        {"now": float("-inf")},
        {"now": True},
        {"now": "1614265330"},
        {"tolerance": float("nan")},
        {"tolerance": float("inf")},
        {"tolerance": -1},
        {"tolerance": True},
        # Found by review: math.isfinite() of a huge int raised OverflowError.
        {"now": 10**400},
        {"tolerance": 10**400},
    ],
    ids=str,
)
def test_a_clock_or_tolerance_that_is_not_a_number_is_refused(kwargs: dict[str, object]) -> None:
    """now=NaN made both timestamp checks False, so a delivery of any age passed."""
    kwargs = {"now": A_TS + 10**6, **kwargs}
    message = _error(A_SECRET, headers(A_ID, A_TS, A_SIG), A_BODY, **kwargs)
    assert re.search(r"(?s)(now|tolerance).*[Ee]xpected.*found.*Fix:", message), message
