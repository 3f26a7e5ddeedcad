"""Differential test: the same tokens through Clerk's own Python SDK and through ``auth``.

Every disagreement is listed and explained; anything else must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import auth
from tests.auth.conftest import ISSUER, Signer

security = pytest.importorskip("clerk_backend_api.security")


@dataclass
class Request:
    headers: dict[str, str] = field(default_factory=dict)


def clerk_accepts(signer: Signer, token: str, parties: list[str] | None) -> bool:
    options = security.AuthenticateRequestOptions(
        jwt_key=signer.public_pem.decode(), audience="convex", authorized_parties=parties
    )
    state = security.authenticate_request(Request({"Authorization": f"Bearer {token}"}), options)
    return bool(state.is_signed_in)


def ours_accepts(signer: Signer, token: str, parties: list[str] | None) -> bool:
    config = auth.AuthConfig(
        providers=[
            auth.ClerkProvider(
                issuer=ISSUER, public_key=signer.public_pem, authorized_parties=parties
            )
        ]
    )
    try:
        config.verify(token)
        return True
    except auth.AuthError:
        return False


# (name, token overrides, authorized parties, Clerk SDK accepts, auth accepts, why they differ)
CASES = [
    ("valid session token", {}, None, True, True, ""),
    ("legacy template token", {"sid": None, "v": None, "name": "Ada"}, None, True, True, ""),
    ("expired", {"exp": lambda now: now - 60}, None, False, False, ""),
    ("not yet valid", {"nbf": lambda now: now + 60}, None, False, False, ""),
    ("wrong audience", {"aud": "other"}, None, False, False, ""),
    ("listed azp", {}, ["https://app.example.com"], True, True, ""),
    (
        "unlisted azp",
        {"azp": "https://evil.example"},
        ["https://app.example.com"],
        False,
        False,
        "",
    ),
    (
        "wrong issuer",
        {"iss": "https://evil.example"},
        None,
        True,
        False,
        "Clerk's SDK does not check iss (verify_iss=False); Convex routes by iss and must.",
    ),
    # Both SDKs of Clerk now require azp when authorized parties are set (clerk/javascript
    # #8877; /work/shared/research/auth-clerk-svix.md §2.5 step 6, §2.6, §7.8, pitfall 18),
    # and so do we: a token without azp is refused (review 9, bug 1).
    ("no azp with parties", {"azp": None}, ["https://app.example.com"], False, False, ""),
    (
        "list azp with parties",
        {"azp": ["https://app.example.com"]},
        ["https://app.example.com"],
        False,
        False,
        "",
    ),
]


@pytest.mark.parametrize(
    ("name", "overrides", "parties", "clerk", "ours", "why"), CASES, ids=[c[0] for c in CASES]
)
def test_same_tokens_both_ways(
    rsa_signer: Signer,
    name: str,
    overrides: dict,  # type: ignore[type-arg]
    parties: list[str] | None,
    clerk: bool,
    ours: bool,
    why: str,
) -> None:
    token = rsa_signer.token(**overrides)
    assert clerk_accepts(rsa_signer, token, parties) is clerk, name
    assert ours_accepts(rsa_signer, token, parties) is ours, name
    assert (clerk == ours) or why, f"{name}: an unexplained disagreement"


def test_bad_signature_both_reject(rsa_signer: Signer) -> None:
    other = Signer("RS256", rsa_signer.kid)
    token = other.token()
    assert not clerk_accepts(rsa_signer, token, None)
    assert not ours_accepts(rsa_signer, token, None)
