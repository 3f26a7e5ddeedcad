"""Token verification: every acceptance and rejection, with RSA and EC keys."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

import auth
from tests.auth.conftest import ISSUER, Signer


def clerk(signer: Signer, **kwargs) -> auth.AuthConfig:  # type: ignore[no-untyped-def]
    return auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [signer.jwk()]}, **kwargs)]
    )


def test_clerk_session_token_gives_an_identity(rsa_signer: Signer) -> None:
    token = rsa_signer.token(
        name="Ada L",
        email="a@x.dev",
        email_verified=True,
        o={"id": "org_1", "slg": "acme", "rol": "admin", "per": "manage,read", "fpm": "3,2"},
        fea="o:dashboard,o:teams",
    )
    identity = clerk(rsa_signer).verify(token)
    assert identity.token_identifier == f"{ISSUER}|user_123"
    assert (identity.subject, identity.issuer, identity.name) == ("user_123", ISSUER, "Ada L")
    assert identity.email_verified is True
    for hidden in ("jti", "nbf", "fva", "iat", "exp", "aud", "azp"):
        assert hidden not in identity.claims
    assert identity.claims["sid"] == "sess_1" and identity.claims["v"] == 2
    assert identity.org == auth.Organization(
        id="org_1",
        slug="acme",
        role="org:admin",
        permissions=("org:dashboard:manage", "org:dashboard:read", "org:teams:read"),
    )
    assert hash(identity) == hash(clerk(rsa_signer).verify(token))


def test_clerk_permission_decoding_test_vector() -> None:
    org = auth.UserIdentity.from_claims(
        {
            "iss": "https://i",
            "sub": "u",
            "fea": "u:solo,o:impersonation,o:memberships",
            "o": {"id": "org_1", "rol": "member", "per": "read,manage", "fpm": "1,3"},
        }
    ).org
    assert org is not None and org.permissions == (
        "org:impersonation:read",
        "org:memberships:read",
        "org:memberships:manage",
    )


def test_legacy_convex_template_token(rsa_signer: Signer) -> None:
    token = rsa_signer.token(
        sid=None,
        v=None,
        fva=None,
        given_name="Ada",
        updated_at=1700000000,
        picture="https://img/x.png",
        email_verified="true",
    )
    identity = clerk(rsa_signer).verify(token)
    assert identity.given_name == "Ada" and identity.picture_url == "https://img/x.png"
    assert identity.updated_at == "2023-11-14T22:13:20Z"
    assert identity.email_verified is True


def test_v1_org_claims(rsa_signer: Signer) -> None:
    token = rsa_signer.token(
        org_id="org_9", org_slug="old", org_role="org:member", org_permissions=["org:billing:read"]
    )
    org = clerk(rsa_signer).verify(token).org
    assert org == auth.Organization(
        id="org_9", slug="old", role="org:member", permissions=("org:billing:read",)
    )


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"exp": int(time.time()) - 60}, auth.TokenExpired),
        ({"nbf": int(time.time()) + 60}, auth.TokenNotYetValid),
        ({"iat": int(time.time()) + 60}, auth.TokenNotYetValid),
        ({"aud": "other"}, auth.NoProviderMatches),
        ({"iss": "https://evil.example"}, auth.NoProviderMatches),
        ({"sub": None}, auth.MissingClaim),
        ({"exp": None}, auth.MissingClaim),
        ({"h_kid": "unknown"}, auth.UnknownKey),
    ],
)
def test_rejections(rsa_signer: Signer, overrides: dict, error: type) -> None:  # type: ignore[type-arg]
    with pytest.raises(error):
        clerk(rsa_signer).verify(rsa_signer.token(**overrides))


def test_leeway_is_configurable(rsa_signer: Signer) -> None:
    token = rsa_signer.token(exp=int(time.time()) - 3)
    clerk(rsa_signer).verify(token)  # within the default 5 s
    with pytest.raises(auth.TokenExpired):
        clerk(rsa_signer, leeway=0.0).verify(token)


def test_bad_signature_and_foreign_key(rsa_signer: Signer) -> None:
    other = Signer("RS256", rsa_signer.kid)
    with pytest.raises(auth.InvalidSignature):
        clerk(rsa_signer).verify(other.token())
    head, payload, sig = rsa_signer.token().split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["sub"] = "user_admin"
    forged = base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    with pytest.raises(auth.InvalidSignature):
        clerk(rsa_signer).verify(f"{head}.{forged}.{sig}")


def test_alg_none_and_hs256_with_the_public_key_are_refused(rsa_signer: Signer) -> None:
    claims = jwt.decode(rsa_signer.token(), options={"verify_signature": False})
    none_token = jwt.encode(claims, None, algorithm="none", headers={"kid": rsa_signer.kid})
    with pytest.raises(auth.InvalidSignature, match="not allowed"):
        clerk(rsa_signer).verify(none_token)
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa_signer.kid}).encode()
    ).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    import hashlib
    import hmac

    mac = hmac.new(rsa_signer.public_pem, header + b"." + body, hashlib.sha256).digest()
    hs_token = b".".join([header, body, base64.urlsafe_b64encode(mac).rstrip(b"=")]).decode()
    with pytest.raises(auth.InvalidSignature, match="not allowed"):
        clerk(rsa_signer).verify(hs_token)


def test_authorized_parties(rsa_signer: Signer) -> None:
    config = clerk(rsa_signer, authorized_parties=["https://app.example.com"])
    config.verify(rsa_signer.token())
    with pytest.raises(auth.InvalidAuthorizedParty):
        config.verify(rsa_signer.token(azp="https://evil.example"))


def test_pem_public_key_without_network(rsa_signer: Signer) -> None:
    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, public_key=rsa_signer.public_pem)]
    )
    assert config.verify(rsa_signer.token()).subject == "user_123"


def test_issuer_normalization(rsa_signer: Signer) -> None:
    config = auth.AuthConfig(
        providers=[
            auth.ClerkProvider(
                issuer="verb-noun-00.clerk.accounts.dev/", jwks={"keys": [rsa_signer.jwk()]}
            )
        ]
    )
    config.verify(rsa_signer.token())
    config.verify(rsa_signer.token(iss=ISSUER + "/"))


def test_custom_jwt_es256_and_algorithm_pinning(ec_signer: Signer, rsa_signer: Signer) -> None:
    config = auth.AuthConfig(
        providers=[
            auth.CustomJwtProvider(
                issuer=ISSUER,
                jwks={"keys": [ec_signer.jwk(), rsa_signer.jwk()]},
                algorithm="ES256",
                application_id="convex",
            )
        ]
    )
    assert config.verify(ec_signer.token()).subject == "user_123"
    with pytest.raises(auth.InvalidSignature, match="not allowed"):
        config.verify(rsa_signer.token())  # RS256 is not this provider's algorithm
    with pytest.raises(ValueError, match="RS256"):
        auth.CustomJwtProvider(issuer=ISSUER, jwks={"keys": []}, algorithm="HS256")


def test_malformed_tokens(rsa_signer: Signer) -> None:
    for bad in ["", "abc", "a.b", "a.b.c", 42]:
        with pytest.raises(auth.AuthError):
            clerk(rsa_signer).verify(bad)  # type: ignore[arg-type]
    with pytest.raises(auth.MissingClaim, match="iss"):
        clerk(rsa_signer).verify(rsa_signer.token(iss=None))


def test_provider_selection_takes_the_first_match(rsa_signer: Signer, ec_signer: Signer) -> None:
    config = auth.AuthConfig(
        providers=[
            auth.CustomJwtProvider(issuer="https://other.example", jwks={"keys": []}),
            auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]}),
        ]
    )
    assert config.verify(rsa_signer.token()).issuer == ISSUER


def test_verified_tokens_are_cached_until_they_expire(rsa_signer: Signer) -> None:
    config = clerk(rsa_signer, leeway=0.0)
    # Five seconds of life: a loaded CI machine must not see it expire before the
    # first verify (a one-second token did, once).
    expires = int(time.time()) + 5
    token = rsa_signer.token(exp=expires)
    first = config.verify(token)
    assert config.verify(token) is first  # no second signature check
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    with pytest.raises(auth.TokenExpired):
        config.verify(token)


def test_provider_level_issuer_and_audience_errors(rsa_signer: Signer) -> None:
    provider = auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})
    with pytest.raises(auth.InvalidIssuer, match="Invalid issuer"):
        provider.verify(rsa_signer.token(iss="https://evil.example"))
    with pytest.raises(auth.InvalidAudience, match="Invalid audience"):
        provider.verify(rsa_signer.token(aud="other"))


def test_eddsa_tokens_verify_for_oidc_providers() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "sub": "u", "aud": "convex", "iat": now, "exp": now + 60},
        key,
        algorithm="EdDSA",
        headers={"kid": "ed"},
    )
    config = auth.AuthConfig(providers=[auth.ClerkProvider(issuer=ISSUER, public_key=pem)])
    assert config.verify(token).subject == "u"
