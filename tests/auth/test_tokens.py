"""Token verification: every acceptance and rejection, with RSA and EC keys."""

from __future__ import annotations

import base64
import json
import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

import auth
from tests.auth.conftest import ISSUER, Signer


def clerk(signer: Signer, **kwargs) -> auth.AuthConfig:  # type: ignore[no-untyped-def]
    return auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [signer.jwk()]}, **kwargs)]
    )


def custom_es256(signer: Signer, **kwargs) -> auth.AuthConfig:  # type: ignore[no-untyped-def]
    """A customJwt (ES256) config trusting ``signer``'s key."""
    return auth.AuthConfig(
        providers=[
            auth.CustomJwtProvider(
                issuer=ISSUER, jwks={"keys": [signer.jwk()]}, algorithm="ES256", **kwargs
            )
        ]
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
    assert identity.updated_at == "2023-11-14T22:13:20+00:00"
    assert identity.email_verified is True


@pytest.mark.parametrize(
    ("updated_at", "rendered"),
    [
        (1700000000, "2023-11-14T22:13:20+00:00"),
        (1700000000.5, "2023-11-14T22:13:20.500+00:00"),
        (1700000000123, "2023-11-14T22:13:20.123+00:00"),  # ms, as Clerk's templates give
        (1700000000.25, "2023-11-14T22:13:20.250+00:00"),
        (0, "1970-01-01T00:00:00+00:00"),
        ("2023-11-14T22:13:20Z", "2023-11-14T22:13:20+00:00"),  # RFC 3339 text, re-rendered
        ("2023-11-14T23:13:20.5+01:00", "2023-11-14T22:13:20.500+00:00"),
        ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00+01:00"),  # no UTC time: kept
        ("2023-11-14", "2023-11-14"),  # not RFC 3339: kept as the issuer wrote it
        ("last tuesday", "last tuesday"),
    ],
)
def test_updated_at_is_rendered_as_convex_renders_it(
    rsa_signer: Signer, updated_at: float | str, rendered: str
) -> None:
    """Convex sets updatedAt to chrono's ``to_rfc3339()`` of the claim (crates/keybroker
    broker.rs ``UserIdentity::from_token``; openidconnect reads a number or RFC 3339
    text): a ``+00:00`` offset, not ``Z``, and only the sub-second digits that are not
    zero, in groups of three. We gave ``...20Z``, and RFC 3339 text unchanged."""
    identity = clerk(rsa_signer).verify(rsa_signer.token(updated_at=updated_at))
    assert identity.updated_at == rendered


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
        ({"exp": lambda now: now - 60}, auth.TokenExpired),
        ({"nbf": lambda now: now + 60}, auth.TokenNotYetValid),
        ({"iat": lambda now: now + 60}, auth.TokenNotYetValid),
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
    # On the provider's clock, not the wall's: 3 s past exp however slow the machine.
    expires = int(time.time())
    token = rsa_signer.token(exp=expires)
    clock = lambda: expires + 3.0
    clerk(rsa_signer, clock=clock).verify(token)  # within the default 5 s
    with pytest.raises(auth.TokenExpired):
        clerk(rsa_signer, leeway=0.0, clock=clock).verify(token)
    with pytest.raises(auth.TokenExpired):
        clerk(rsa_signer, clock=lambda: expires + 5.5).verify(token)  # past the 5 s


@pytest.mark.parametrize(
    ("leeway", "error"),
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (-1.0, ValueError),
        ("5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_leeway_must_be_a_finite_number_of_at_least_0(
    rsa_signer: Signer, leeway: object, error: type[Exception]
) -> None:
    """Hunt (auth): a NaN leeway compared False with every exp, so a token expired an
    hour ago verified (the first time; from the cache it was then a TokenExpired), and
    leeway="5" (read from an env var) made every verify a TypeError, not an AuthError.
    The provider refuses them when built or assigned, as verify_webhook's tolerance."""
    expired = rsa_signer.token(exp=lambda now: now - 3600, iat=lambda now: now - 7200)
    with pytest.raises(error, match=r"(?s)leeway.*expected.*found.*Fix"):
        clerk(rsa_signer, leeway=leeway).verify(expired)
    provider = auth.CustomJwtProvider(issuer=ISSUER, public_key=rsa_signer.public_pem)
    with pytest.raises(error, match="leeway"):
        provider.leeway = leeway  # type: ignore[assignment]
    assert provider.leeway == 5.0  # unchanged
    provider.leeway = 0  # an int is a number of seconds too
    with pytest.raises(auth.TokenExpired):
        auth.AuthConfig(providers=[provider]).verify(expired)


@pytest.mark.parametrize(
    ("issuer", "error"),
    [
        (None, TypeError),
        (b"https://x.dev", TypeError),
        ("", ValueError),
        # read from a file or an env var with its newline: an issuer no token names
        ("https://x.clerk.accounts.dev\n", ValueError),
        (" https://x.clerk.accounts.dev", ValueError),
    ],
)
def test_issuer_must_be_a_url_given_as_a_str(
    rsa_signer: Signer, issuer: object, error: type[Exception]
) -> None:
    """Hunt (misuse): issuer=os.environ.get("CLERK_ISSUER") unset made ClerkProvider(...)
    an "AttributeError: 'NoneType' object has no attribute 'startswith'", and issuer=""
    was taken as "https:", an issuer no token names."""
    for make in (auth.ClerkProvider, auth.CustomJwtProvider):
        with pytest.raises(error, match=r"(?s)issuer.*expected.*found.*Fix"):
            make(issuer=issuer, public_key=rsa_signer.public_pem)  # type: ignore[arg-type]


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


def test_authorized_parties_refuses_a_str(rsa_signer: Signer) -> None:
    """Hunt (auth): one origin given as a str became the set of its characters, so every
    real token was an InvalidAuthorizedParty and a token with azp "h" passed. A str is
    refused, given to the constructor or assigned later; a list assigned is frozen."""
    origin = "https://app.example.com"
    with pytest.raises(TypeError, match=r"(?s)expected.*found the str.*Fix: authorized_parties="):
        clerk(rsa_signer, authorized_parties=origin)
    provider = auth.ClerkProvider(issuer=ISSUER, public_key=rsa_signer.public_pem)
    with pytest.raises(TypeError, match="not a str"):
        provider.authorized_parties = origin
    assert provider.authorized_parties is None  # unchanged
    provider.authorized_parties = [origin]
    assert provider.authorized_parties == frozenset({origin})
    config = auth.AuthConfig(providers=[provider])
    assert config.verify(rsa_signer.token(azp=origin)).subject == "user_123"
    with pytest.raises(auth.InvalidAuthorizedParty):
        config.verify(rsa_signer.token(azp="h"))


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
    with pytest.raises(auth.InvalidIssuer):  # routed by the normalized iss, then refused
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


def test_auth_config_refuses_what_is_not_a_list_of_providers(rsa_signer: Signer) -> None:
    # A list of issuer URLs was accepted and every verify() then raised "'str' object has
    # no attribute '_version'"; one provider not in a list, "object is not iterable".
    provider = auth.ClerkProvider(issuer=ISSUER, public_key=rsa_signer.public_pem)
    with pytest.raises(TypeError, match=r"write ClerkProvider\(issuer='https://a\.example'\)"):
        auth.AuthConfig(providers=["https://a.example"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"got one ClerkProvider: write providers=\[provider\]"):
        auth.AuthConfig(providers=provider)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="objects, got dict$"):
        auth.AuthConfig(providers=[{"issuer": ISSUER}])  # type: ignore[list-item]
    assert auth.AuthConfig(providers=(provider,)).verify(rsa_signer.token()).subject == "user_123"


def test_a_public_key_that_is_no_pem_public_key_is_named_and_not_quoted(
    rsa_signer: Signer,
) -> None:
    """Hunt (misuse): public_key="garbage" (or the private key, or a JWKS pasted there)
    raised cryptography's "Unable to load PEM file. See https://cryptography.io/... for
    more details. MalformedFraming", naming neither the parameter nor what it takes."""
    private_pem = rsa_signer.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    for given, hint in [
        ("garbage", "PEM"),
        (json.dumps({"keys": [rsa_signer.jwk()]}), "jwks="),
        (private_pem, "private key"),
    ]:
        with pytest.raises(ValueError, match=r"(?s)public_key.*expected.*found.*Fix") as caught:
            auth.ClerkProvider(issuer=ISSUER, public_key=given)
        assert hint in str(caught.value)
        assert "PRIVATE KEY-----\nMII" not in str(caught.value)  # never quoted
    with pytest.raises(TypeError, match=r"public_key.*found int"):
        auth.CustomJwtProvider(issuer=ISSUER, public_key=5)  # type: ignore[arg-type]


def test_a_public_key_given_as_a_bytearray_or_memoryview_still_verifies(
    rsa_signer: Signer,
) -> None:
    """Review: the check that public_key is a str or bytes (bd97dd3) refused a bytearray
    or memoryview of the PEM (a buffer read from a file or a secrets store), which
    cryptography loads and which verified tokens before it."""
    for given in (bytearray(rsa_signer.public_pem), memoryview(rsa_signer.public_pem)):
        provider = auth.ClerkProvider(issuer=ISSUER, public_key=given)
        config = auth.AuthConfig(providers=[provider])
        assert config.verify(rsa_signer.token()).subject == "user_123"


def test_a_token_with_its_bearer_scheme_is_told_to_drop_it(rsa_signer: Signer) -> None:
    # The Authorization header's value passed as auth= was "Could not parse JWT header:
    # ... do not decode as base64url", with a fix that showed the Bearer form.
    token = rsa_signer.token()
    for pasted in (f"Bearer {token}", f"bearer {token}"):
        with pytest.raises(auth.MalformedToken, match="without 'Bearer '") as caught:
            clerk(rsa_signer).verify(pasted)
        assert re.search(MESSAGE, str(caught.value))
        assert token.split(".")[1] not in str(caught.value)
    assert clerk(rsa_signer).verify(token).subject == "user_123"


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


def test_a_full_token_cache_forgets_its_oldest_entry_only(rsa_signer: Signer) -> None:
    """A full cache was cleared whole: every live token was verified again on its next
    use (with a JWKS fetch when the keys were stale), in a burst each time the cache
    filled, and a subscription's expiry check then verified its token from scratch on
    the subscription thread. Now only the oldest entry goes."""
    config = clerk(rsa_signer)
    config.cache_size = 3
    tokens = [rsa_signer.token(jti=str(i)) for i in range(5)]
    for token in tokens:
        config.verify(token)
    assert list(config._verified) == tokens[2:]
    assert config.verify(tokens[4]) is config.verify(tokens[4])


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


# -- review 9 ---------------------------------------------------------------

MESSAGE = r"(?s)[Ee]xpected.*found.*Fix:"  # every rejection says what, what instead, and the fix


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, claims: dict, signature: bytes = b"x") -> str:  # type: ignore[type-arg]
    """A token with any header and claims and a meaningless signature (a forgery)."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)]
    )


def _claims(**overrides: object) -> dict:  # type: ignore[type-arg]
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "user_123", "aud": "convex", "iat": now, "exp": now + 60}
    claims.update(overrides)
    return claims


def _ed25519() -> tuple[object, dict, bytes]:  # type: ignore[type-arg]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="ed_1", use="sig")
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, jwk, pem


@pytest.mark.parametrize(
    "overrides",
    [{"azp": None}, {"azp": ["https://app.example.com"]}, {"azp": 5}, {"azp": ""}],
    ids=["missing", "list", "int", "empty"],
)
def test_authorized_parties_require_a_listed_string_azp(
    rsa_signer: Signer,
    overrides: dict,  # type: ignore[type-arg]
) -> None:
    """Review 9 bug 1: with authorized_parties, a token without a listed string azp is
    refused (Clerk #8877, research §2.5 step 6); before, a missing azp passed and a list
    raised TypeError."""
    config = clerk(rsa_signer, authorized_parties=["https://app.example.com"])
    with pytest.raises(auth.InvalidAuthorizedParty, match=MESSAGE):
        config.verify(rsa_signer.token(**overrides))
    assert clerk(rsa_signer).verify(rsa_signer.token(**overrides)).subject == "user_123"


def test_clerk_audience_must_be_exactly_the_application_id(
    rsa_signer: Signer, ec_signer: Signer
) -> None:
    """Review 9 bug 2: Convex's OIDC verifier rejects any audience besides the
    application id (research §1.3, §7.4); a string or a one-element list both pass."""
    config = clerk(rsa_signer)
    assert config.verify(rsa_signer.token(aud="convex")).subject == "user_123"
    assert config.verify(rsa_signer.token(aud=["convex"])).subject == "user_123"
    for aud in (["convex", "other"], ["other", "convex"]):
        with pytest.raises(auth.InvalidAudience, match=MESSAGE):
            config.verify(rsa_signer.token(aud=aud))
    # customJwt only needs the audience to contain the application id (research §1.4 step 4)
    custom = custom_es256(ec_signer, application_id="convex")
    assert custom.verify(ec_signer.token(aud=["other", "convex"])).subject == "user_123"


def test_forged_tokens_raise_auth_errors(rsa_signer: Signer) -> None:
    """Review 9 bug 3: malformed or forged tokens raise AuthError subclasses that say what
    was expected, what was found and the fix; before, TypeError, InvalidTokenError and
    InvalidKeyError escaped (a host answered 500 instead of 401)."""
    _, ed_jwk, _ = _ed25519()
    config = clerk(rsa_signer)
    mixed = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk(), ed_jwk]})]
    )
    pem = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, public_key=rsa_signer.public_pem)]
    )
    kid = rsa_signer.kid
    cases = [
        (mixed, {"alg": "RS256", "kid": 123}, _claims()),
        (mixed, {"alg": "RS256", "kid": ["a"]}, _claims()),
        (mixed, {"alg": ["RS256"], "kid": kid}, _claims()),
        (mixed, {"alg": "RS256", "kid": kid}, _claims(aud=5)),
        (mixed, {"alg": "RS256", "kid": kid}, _claims(aud=["convex", 5])),
        (mixed, {"alg": "RS256", "kid": kid}, _claims(aud={"convex": 1})),
        (mixed, {"alg": "RS256", "kid": kid}, _claims(iss=5)),
        (mixed, {"alg": "EdDSA", "kid": kid}, _claims()),
        (mixed, {"alg": "RS256", "kid": "ed_1"}, _claims()),
        (pem, {"alg": "EdDSA"}, _claims()),
        (config, {"alg": "RS256", "kid": kid}, _claims(exp="soon")),
        (config, {"alg": "RS256", "kid": kid}, _claims(nbf=[1])),
        (config, {"alg": "RS256", "kid": kid}, _claims(iat=True)),
        (config, {"alg": "RS256", "kid": kid}, _claims(sub=5)),
    ]
    for provider_config, header, claims in cases:
        with pytest.raises(auth.AuthError, match=MESSAGE):
            provider_config.verify(raw_token(header, claims))
        for provider in provider_config.providers:
            with pytest.raises(auth.AuthError, match=MESSAGE):
                provider.verify(raw_token(header, claims))
    signed = [
        {"exp": "soon"},
        {"exp": True},
        {"exp": float("inf")},  # a token that never expires
        {"exp": float("nan")},
        {"nbf": [1]},
        {"iat": "now"},
        {"sub": 5},
        {"sub": None},
        {"exp": None},
        {"aud": "other"},
        {"iss": "https://evil.example"},
    ]
    for overrides in signed:
        token = rsa_signer.token(**overrides)
        with pytest.raises(auth.AuthError, match=MESSAGE):
            config.verify(token)
        with pytest.raises(auth.AuthError, match=MESSAGE):
            config.providers[0].verify(token)
    not_json = _b64(b"{nope") + "." + _b64(json.dumps(_claims()).encode()) + ".x"
    with pytest.raises(auth.MalformedToken, match=MESSAGE):
        config.verify(not_json)
    list_payload = raw_token({"alg": "RS256", "kid": kid}, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(auth.MalformedToken, match=MESSAGE):
        config.verify(list_payload)


def test_key_type_must_fit_the_algorithm(rsa_signer: Signer) -> None:
    """Review 9 bug 3: a key is chosen only if its type fits alg, so an RSA kid named by an
    EdDSA token is a clear InvalidSignature, and an EdDSA token still finds its key by kid."""
    ed_key, ed_jwk, _ = _ed25519()
    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk(), ed_jwk]})]
    )
    good = jwt.encode(_claims(), ed_key, algorithm="EdDSA", headers={"kid": "ed_1"})  # type: ignore[arg-type]
    assert config.verify(good).subject == "user_123"
    wrong = jwt.encode(_claims(), ed_key, algorithm="EdDSA", headers={"kid": rsa_signer.kid})  # type: ignore[arg-type]
    with pytest.raises(auth.InvalidSignature, match="RSA"):
        config.verify(wrong)
    no_kid = jwt.encode(_claims(), ed_key, algorithm="EdDSA")  # type: ignore[arg-type]
    assert config.verify(no_kid).subject == "user_123"  # one key fits EdDSA


def test_rsa_keys_under_2048_bits_are_refused(rsa_signer: Signer) -> None:
    """Convex verifies RS256 with RSA_PKCS1_2048_8192_SHA256 (openidconnect's and biscuit's
    crypto), which refuses a modulus under 2048 bits. A 1024-bit key verified here (with
    pyjwt's InsecureKeyLengthWarning, which under ``-W error`` escaped as a non-AuthError):
    it must be an InvalidSignature naming the key size, whichever way the key is given."""
    import warnings

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(weak.public_key()))
    jwk.update(kid="weak", use="sig")
    pem = weak.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyjwt warns when signing with it, too
        token = jwt.encode(_claims(), weak, algorithm="RS256", headers={"kid": "weak"})
    configs = [
        auth.AuthConfig(providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [jwk]})]),
        auth.AuthConfig(providers=[auth.ClerkProvider(issuer=ISSUER, public_key=pem)]),
        auth.AuthConfig(providers=[auth.CustomJwtProvider(issuer=ISSUER, jwks={"keys": [jwk]})]),
    ]
    for config in configs:
        with pytest.raises(auth.InvalidSignature, match=r"(?s)2048.*1024-bit.*Fix:"):
            config.verify(token)
    assert clerk(rsa_signer).verify(rsa_signer.token()).subject == "user_123"  # 2048 bits


def _data_uri_cases(jwks: dict) -> list[str]:  # type: ignore[type-arg]
    from urllib.parse import quote

    text = json.dumps(jwks)
    encoded = base64.b64encode(text.encode()).decode()
    return [
        "data:application/json;base64," + encoded,
        "data:application/json," + quote(text),
        "data:text/plain;charset=utf-8;base64," + encoded,  # Convex's docs example
        "data:application/json;base64," + encoded.rstrip("="),
    ]


def test_jwks_as_a_data_uri(ec_signer: Signer) -> None:
    """Review 9 bug 6: customJwt's ``jwks`` may be a ``data:`` URI (research §1.1, §1.4)."""
    for uri in _data_uri_cases({"keys": [ec_signer.jwk()]}):
        provider = auth.CustomJwtProvider(
            issuer=ISSUER, jwks=uri, algorithm="ES256", application_id="convex"
        )
        assert auth.AuthConfig(providers=[provider]).verify(ec_signer.token()).subject == (
            "user_123"
        ), uri
    for bad in ["data:application/json;base64,!!!", "data:application/json,%7Bnope", "data:"]:
        with pytest.raises(ValueError, match=MESSAGE):
            auth.CustomJwtProvider(issuer=ISSUER, jwks=bad, algorithm="ES256")


def test_custom_jwt_requires_a_kid(ec_signer: Signer) -> None:
    """Review 9 bug 7: Convex's customJwt refuses a token without kid (KidMissing,
    research §1.4 step 2), also with a static JWKS; a single PEM public_key needs none."""
    static = custom_es256(ec_signer)
    with pytest.raises(auth.MalformedToken, match=r"(?s)kid.*Fix:"):
        static.verify(ec_signer.token(h_kid=None))
    with pytest.raises(auth.MalformedToken, match=r"(?s)kid.*Fix:"):
        static.verify(ec_signer.token(h_kid=""))
    pem = auth.AuthConfig(
        providers=[
            auth.CustomJwtProvider(
                issuer=ISSUER, public_key=ec_signer.public_pem, algorithm="ES256"
            )
        ]
    )
    assert pem.verify(ec_signer.token(h_kid=None)).subject == "user_123"


def test_provider_clock_decides_exp_nbf_and_iat(rsa_signer: Signer, ec_signer: Signer) -> None:
    """Review 9 bug 9: ``clock=`` is the time exp, nbf and iat are checked against,
    with the same leeway (default 5 s)."""
    now = time.time()

    def at(offset: float, **kwargs) -> auth.AuthConfig:  # type: ignore[no-untyped-def]
        return clerk(rsa_signer, clock=lambda: now + offset, **kwargs)

    token = rsa_signer.token()  # iat now-1, nbf now-5, exp now+60
    with pytest.raises(auth.TokenExpired, match=MESSAGE):
        at(3600).verify(token)
    with pytest.raises(auth.TokenNotYetValid, match=MESSAGE):
        at(-3600).verify(token)
    expired = rsa_signer.token(iat=int(now) - 600, nbf=int(now) - 600, exp=int(now) - 300)
    assert at(-400).verify(expired).subject == "user_123"  # the provider's clock, not time.time
    exp = int(now) + 60
    assert at(exp - now + 4).verify(rsa_signer.token(exp=exp)).subject == "user_123"
    with pytest.raises(auth.TokenExpired):
        at(exp - now + 6).verify(rsa_signer.token(exp=exp))
    with pytest.raises(auth.TokenExpired):
        at(exp - now + 1, leeway=0.0).verify(rsa_signer.token(exp=exp))
    custom = custom_es256(ec_signer, clock=lambda: now + 3600)
    with pytest.raises(auth.TokenExpired):
        custom.verify(ec_signer.token())


@pytest.mark.parametrize(
    "claims",
    [
        {"o": {"id": "org_1", "per": "read", "fpm": "x"}, "fea": "o:docs"},
        {"org_id": "org_1", "org_permissions": 5},
        {"updated_at": 1e300},
    ],
)
def test_signed_but_malformed_identity_claims_are_auth_errors(
    rsa_signer: Signer, claims: dict[str, object]
) -> None:
    # A validly signed token with a malformed Clerk claim raised ValueError/TypeError
    # from building the identity (noticed by review); every failure is an AuthError.
    with pytest.raises(auth.MalformedToken, match=r"(?s)expected.*found.*Fix:"):
        clerk(rsa_signer).verify(rsa_signer.token(**claims))


def test_custom_jwt_flattens_nested_claims_with_dots(ec_signer: Signer, rsa_signer: Signer) -> None:
    # Convex's customJwt path (extract_custom_jwt_claims; research §1.7): nested objects
    # become dotted claims; the OIDC path keeps them nested.
    nested = {"properties": {"id": "123", "team": {"name": "core"}}, "tags": ["a"]}
    identity = custom_es256(ec_signer).verify(ec_signer.token(**nested))
    assert identity.claims["properties.id"] == "123"
    assert identity.claims["properties.team.name"] == "core"
    assert identity.claims["tags"] == ["a"]
    assert "properties" not in identity.claims
    oidc = clerk(rsa_signer).verify(rsa_signer.token(**nested))
    assert oidc.claims["properties"] == {"id": "123", "team": {"name": "core"}}


# -- the token cache ------------------------------------------------------------


def test_cached_identities_cannot_be_changed_by_a_caller(rsa_signer: Signer) -> None:
    """The cache handed every caller one identity whose claims dict (and nested lists
    and dicts) any caller could change, for every later call with the token."""
    import copy
    import pickle

    config = clerk(rsa_signer)
    token = rsa_signer.token(tags=["a"], meta={"k": "v"})
    first = config.verify(token)
    changes = [
        lambda: first.claims.__setitem__("sid", "sess_evil"),
        lambda: first.claims.update(admin=True),
        lambda: first.claims.pop("sid"),
        lambda: first.claims["tags"].append("admin"),
        lambda: first.claims["tags"].__setitem__(0, "b"),
        lambda: first.claims["meta"].__setitem__("k", "x"),
        lambda: first.claims["meta"].clear(),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    expected = {"sid": "sess_1", "v": 2, "tags": ["a"], "meta": {"k": "v"}}
    assert config.verify(token).claims == expected
    mine = copy.deepcopy(first.claims)  # a copy is the caller's to change
    mine["tags"].append("b")
    mine["meta"]["k"] = "x"
    assert dict(first.claims) | {"sid": "x"} == expected | {"sid": "x"}
    assert config.verify(token).claims == expected
    assert json.loads(json.dumps(first.claims)) == expected
    assert pickle.loads(pickle.dumps(first)) == first


def test_cached_tokens_are_checked_again_when_the_configuration_changes(
    rsa_signer: Signer,
) -> None:
    """The cache kept accepting a token after its provider or the provider list changed."""
    provider = auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})
    config = auth.AuthConfig(providers=[provider])
    token = rsa_signer.token()
    config.verify(token)
    provider.authorized_parties = frozenset({"https://other.example"})
    with pytest.raises(auth.InvalidAuthorizedParty):
        config.verify(token)
    provider.authorized_parties = None
    assert config.verify(token).subject == "user_123"
    provider.application_id = "another-app"
    with pytest.raises(auth.NoProviderMatches):
        config.verify(token)
    provider.application_id = "convex"
    config.verify(token)
    config.providers.clear()
    with pytest.raises(auth.NoProviderMatches):
        config.verify(token)
    config.providers.append(
        auth.ClerkProvider(issuer=ISSUER, public_key=Signer("RS256", "x").public_pem)
    )
    with pytest.raises(auth.InvalidSignature):
        config.verify(token)
    config.providers = [provider]
    assert config.verify(token).subject == "user_123"


# -- credentials are never echoed -------------------------------------------------

SECRET = "sk_live_s3cr3tK3yM4teri4l"


@pytest.mark.parametrize(
    "credential",
    [
        SECRET,
        f"Bearer {SECRET}",
        f"{SECRET}.{SECRET}",
        f"{SECRET}.{SECRET}.{SECRET}",
        f"{_b64(json.dumps({'alg': 'RS256'}).encode())}.{SECRET}.sig",
        f"{_b64(json.dumps(SECRET).encode())}.{_b64(b'{}')}.sig",  # a JSON string header
        f"{_b64(b'{}')}.{_b64(json.dumps([SECRET]).encode())}.sig",  # a JSON list payload
        f"{_b64(SECRET.encode())}.{_b64(b'{}')}.sig",  # base64 of text that is not JSON
    ],
    ids=["plain", "bearer", "two-parts", "three-parts", "payload", "header-str", "list", "b64"],
)
def test_a_credential_never_appears_in_an_error(rsa_signer: Signer, credential: str) -> None:
    """A non-JWT credential (an API key pasted as a token) was quoted in the
    MalformedToken message, which ends up in logs and HTTP answers."""
    config = clerk(rsa_signer)
    for verify in (config.verify, config.providers[0].verify):
        with pytest.raises(auth.MalformedToken) as caught:
            verify(credential)
        message = str(caught.value)
        assert "s3cr3t" not in message and "czNjcjN0" not in message, message
        assert re.search(MESSAGE, message), message


# -- ClerkProvider: Convex's OIDC verifier is strict ------------------------------


def signed(signer: Signer, header: dict, claims: dict) -> str:  # type: ignore[type-arg]
    """A token signed by ``signer`` with exactly ``header`` (pyjwt always adds typ)."""
    from jwt.algorithms import RSAAlgorithm

    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), signer.private)  # type: ignore[arg-type]
    return f"{signing_input}.{_b64(signature)}"


def test_clerk_accepts_only_the_canonical_issuer(rsa_signer: Signer) -> None:
    """iss 'https://x/' or 'x' routed to the provider (Convex normalizes for routing) and
    verified, with another token_identifier than 'https://x' for the same user. Convex's
    OIDC verifier then requires iss to be the discovery document's issuer exactly
    (research §1.3: require_issuer_match); Clerk's issuer is the Frontend API URL."""
    config = clerk(rsa_signer)
    assert config.verify(rsa_signer.token()).token_identifier == f"{ISSUER}|user_123"
    for iss in (ISSUER + "/", ISSUER.removeprefix("https://"), ISSUER + "//"):
        with pytest.raises(auth.InvalidIssuer, match=MESSAGE):
            config.verify(rsa_signer.token(iss=iss))
    upper = ISSUER.replace("verb", "VERB")
    with pytest.raises(auth.AuthError):
        config.verify(rsa_signer.token(iss=upper))
    with pytest.raises(auth.InvalidIssuer, match=MESSAGE):
        config.providers[0].verify(rsa_signer.token(iss=upper))
    # The configured issuer may be written loosely; the token's must be canonical.
    loose = auth.AuthConfig(
        providers=[
            auth.ClerkProvider(
                issuer="verb-noun-00.clerk.accounts.dev/", jwks={"keys": [rsa_signer.jwk()]}
            )
        ]
    )
    assert loose.verify(rsa_signer.token()).issuer == ISSUER
    # customJwt keeps Convex's normalization (research §1.4 step 3).
    custom = auth.AuthConfig(
        providers=[auth.CustomJwtProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})]
    )
    assert custom.verify(rsa_signer.token(iss=ISSUER + "/")).issuer == ISSUER + "/"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"typ": "at+jwt"}, auth.MalformedToken),
        ({"typ": "application/at+jwt"}, auth.MalformedToken),
        ({"typ": "JWS"}, auth.MalformedToken),
        ({"typ": 5}, auth.MalformedToken),
        ({"typ": "JWT", "cty": "JWT"}, auth.MalformedToken),
        ({"typ": "JWT", "cty": "json"}, auth.MalformedToken),
        ({"typ": "JWT", "crit": ["exp"]}, auth.MalformedToken),
        ({"typ": "JWT", "crit": ["x-ours"], "x-ours": 1}, auth.MalformedToken),
    ],
)
def test_clerk_refuses_other_token_types_and_extensions(
    rsa_signer: Signer,
    header: dict,  # type: ignore[type-arg]
    error: type,
) -> None:
    """An access token (typ at+jwt), a nested JWT (cty) or a critical extension we do not
    implement (crit, RFC 7515 §4.1.11) verified as a session token."""
    token = signed(rsa_signer, {"alg": "RS256", "kid": rsa_signer.kid, **header}, _claims())
    with pytest.raises(error, match=MESSAGE):
        clerk(rsa_signer).verify(token)


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "JOSE", "application/jwt", "application/JOSE"])
def test_clerk_accepts_typ_absent_jwt_or_jose(rsa_signer: Signer, typ: str | None) -> None:
    header = {"alg": "RS256", "kid": rsa_signer.kid} | ({} if typ is None else {"typ": typ})
    assert clerk(rsa_signer).verify(signed(rsa_signer, header, _claims())).subject == "user_123"


def test_clerk_requires_iat(rsa_signer: Signer) -> None:
    """Convex's OIDC claims need iat (IdTokenClaims.issue_time), whatever its value."""
    with pytest.raises(auth.MissingClaim, match=r"(?s)'iat'.*Fix:"):
        clerk(rsa_signer).verify(rsa_signer.token(iat=None))
    custom = auth.AuthConfig(
        providers=[auth.CustomJwtProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})]
    )
    assert custom.verify(rsa_signer.token(iat=None)).subject == "user_123"  # customJwt: optional


def test_clerk_algorithms_are_rs256_and_ed25519_only(rsa_signer: Signer) -> None:
    """Convex's OIDC verifier allows RS256 and EdDSA with Ed25519 (research §1.3); an
    Ed448 key passed as EdDSA."""
    from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey

    ed448 = Ed448PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed448.public_key()))
    jwk.update(kid="ed448", use="sig")
    config = auth.AuthConfig(providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [jwk]})])
    token = jwt.encode(_claims(), ed448, algorithm="EdDSA", headers={"kid": "ed448"})  # type: ignore[arg-type]
    with pytest.raises(auth.InvalidSignature, match=r"(?s)Ed25519.*Ed448.*Fix:"):
        config.verify(token)
    for alg in ("RS384", "RS512", "PS256", "ES256"):
        with pytest.raises(auth.InvalidSignature, match="not allowed"):
            clerk(rsa_signer).verify(raw_token({"alg": alg, "kid": rsa_signer.kid}, _claims()))


def test_tokens_longer_than_max_token_length_are_refused_before_parsing(
    rsa_signer: Signer,
) -> None:
    """Any length was parsed (base64, JSON, a signature check) and cached as a key."""
    config = clerk(rsa_signer)
    assert config.max_token_length == 16 * 1024
    big = rsa_signer.token(pad="x" * 20_000)
    with pytest.raises(auth.MalformedToken, match=r"(?s)at most 16384.*found \d+.*Fix:"):
        config.verify(big)
    with pytest.raises(auth.MalformedToken, match="max_token_length"):
        config.seconds_left(big)
    config.max_token_length = 64 * 1024
    assert config.verify(big).subject == "user_123"
    small = auth.AuthConfig(providers=config.providers, max_token_length=100)
    with pytest.raises(auth.MalformedToken, match="at most 100"):
        small.verify(rsa_signer.token())
    bomb = "{" * (1 << 20) + ".."  # would parse (and recurse) without the cap
    with pytest.raises(auth.MalformedToken, match="at most 16384") as caught:
        clerk(rsa_signer).verify(bomb)
    assert "{{" not in str(caught.value)


@pytest.mark.parametrize(
    ("length", "error"),
    [(None, TypeError), ("16384", TypeError), (float("nan"), TypeError), (0, ValueError)],
)
def test_max_token_length_must_be_a_positive_int(
    rsa_signer: Signer, length: object, error: type[Exception]
) -> None:
    """Hunt (auth): max_token_length=None or "16384" (from an env var) made every verify
    a TypeError, not an AuthError; a NaN cap compared False with every length, so no
    token was ever too long; 0 refused every token as "too long". Refused when the
    config is built or the attribute assigned."""
    providers = [auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})]
    with pytest.raises(error, match=r"(?s)max_token_length.*expected.*found.*Fix"):
        auth.AuthConfig(providers=providers, max_token_length=length)  # type: ignore[arg-type]
    config = auth.AuthConfig(providers=providers)
    with pytest.raises(error, match="max_token_length"):
        config.max_token_length = length  # type: ignore[assignment]
    assert config.max_token_length == 16 * 1024  # unchanged
    assert config.verify(rsa_signer.token()).subject == "user_123"


# -- hidden claims, per provider ----------------------------------------------------


def test_hidden_claims_are_per_provider(rsa_signer: Signer, ec_signer: Signer) -> None:
    """One global set hid the same claims for every provider; Convex hides different ones
    on its OIDC and customJwt paths (research §1.7), and a host may want its own."""
    extra = {"nonce": "n", "amr": ["pwd"], "auth_time": 1, "team": "core"}
    clerk_identity = clerk(rsa_signer).verify(rsa_signer.token(**extra))
    assert set(clerk_identity.claims) == {"sid", "v", "team"}  # azp, nonce, amr, jti... hidden
    custom_identity = custom_es256(ec_signer).verify(ec_signer.token(**extra))
    assert custom_identity.claims["azp"] == "https://app.example.com"  # customJwt shows azp
    assert "jti" not in custom_identity.claims and "fva" not in custom_identity.claims
    assert auth.ClerkProvider.hidden_claims >= {"azp", "nonce", "jti", "fva", "iat", "exp"}
    assert "azp" not in auth.CustomJwtProvider.hidden_claims

    provider = auth.ClerkProvider(
        issuer=ISSUER,
        jwks={"keys": [rsa_signer.jwk()]},
        hidden_claims=(auth.ClerkProvider.hidden_claims - {"azp"}) | {"sid", "email"},
    )
    config = auth.AuthConfig(providers=[provider])
    token = rsa_signer.token(email="a@x.dev", **extra)
    identity = config.verify(token)
    assert identity.claims["azp"] == "https://app.example.com"
    assert "sid" not in identity.claims and identity.email is None
    assert identity.subject == "user_123" and "sub" not in identity.claims  # always fields
    provider.hidden_claims = auth.ClerkProvider.hidden_claims  # the cache notices
    assert "azp" not in config.verify(token).claims
    # The name that existed keeps working: from_claims hides the OIDC set by default.
    built = auth.UserIdentity.from_claims({"iss": "i", "sub": "u", "azp": "a", "x": 1})
    assert built.claims == {"x": 1}
    assert (
        auth.UserIdentity.from_claims({"iss": "i", "sub": "u", "x": 1}, hidden={"x"}).claims == {}
    )


def test_a_hidden_nested_claim_of_a_custom_jwt_is_hidden_whole(ec_signer: Signer) -> None:
    """Hunt (auth): hidden_claims were matched against the flattened names only, so
    hiding a nested claim of a custom JWT (Supabase's user_metadata, which changes as the
    user acts) left every "user_metadata.x" in the identity: it still changed with each
    refreshed token (re-running subscriptions) and showed what the host hid. A hidden
    name is the claim as minted, with all it nests; a dotted name hides one leaf."""
    provider = auth.CustomJwtProvider(
        issuer=ISSUER,
        jwks={"keys": [ec_signer.jwk()]},
        algorithm="ES256",
        hidden_claims=auth.CustomJwtProvider.hidden_claims | {"user_metadata", "app.secret"},
    )
    token = ec_signer.token(
        user_metadata={"last_seen": 123, "prefs": {"theme": "dark"}},
        app={"secret": "s", "plan": "pro"},
    )
    identity = auth.AuthConfig(providers=[provider]).verify(token)
    assert not any(name.startswith("user_metadata") for name in identity.claims)
    assert identity.claims["app.plan"] == "pro" and "app.secret" not in identity.claims
    # Hidden as minted, so not flattened: it cannot collide with the dotted claim.
    provider.hidden_claims = provider.hidden_claims | {"sid"}
    identity = auth.AuthConfig(providers=[provider]).verify(
        ec_signer.token(sid={"a": 1}, **{"sid.a": 2})
    )
    assert identity.claims["sid.a"] == 2 and "sid" not in identity.claims
    assert identity.subject == "user_123" and identity.issuer == ISSUER  # still fields


def test_from_claims_refuses_hidden_claims_given_as_a_str() -> None:
    """Hunt (auth): UserIdentity.from_claims(claims, hidden="sid") took the str as the
    names to hide, so ``key in "sid"`` hid every claim whose name is a part of it: "id",
    "s", "i", "d", besides "sid". The providers' hidden_claims= refused a str already."""
    claims = {"iss": "https://i", "sub": "u", "id": "x", "sid": "s", "team": "t"}
    with pytest.raises(TypeError, match=r"(?s)hidden.*expected.*found the str.*Fix"):
        auth.UserIdentity.from_claims(claims, hidden="sid")
    kept = auth.UserIdentity.from_claims(claims, hidden={"sid"}).claims
    assert kept == {"id": "x", "team": "t"}


# -- CustomJwtProvider: organizations and flattening ---------------------------------


def test_custom_jwt_decodes_organizations_like_clerk(ec_signer: Signer) -> None:
    """Flattening turned Clerk's o claim into o.id, o.rol, ... before the organization
    was decoded, so a custom JWT never had an org, and a malformed one went unnoticed."""
    o = {"id": "org_1", "slg": "acme", "rol": "admin", "per": "read,manage", "fpm": "1"}
    identity = custom_es256(ec_signer).verify(ec_signer.token(o=o, fea="o:docs"))
    assert identity.org == auth.Organization(
        id="org_1", slug="acme", role="org:admin", permissions=("org:docs:read",)
    )
    assert identity.claims["o.id"] == "org_1"  # the claims stay flattened, as in Convex
    v1 = ec_signer.token(org_id="org_2", org_role="org:member", org_permissions=["org:a:b"])
    assert custom_es256(ec_signer).verify(v1).org == auth.Organization(
        id="org_2", role="org:member", permissions=("org:a:b",)
    )
    with pytest.raises(auth.MalformedToken, match=r"(?s)'o\.slg'.*Fix:"):
        custom_es256(ec_signer).verify(ec_signer.token(o={"id": "org_1", "slg": ["x"]}))


@pytest.mark.parametrize(
    "claims",
    [
        {"a.b": 1, "a": {"b": 2}},
        {"a": {"b": 2}, "a.b": 1},
        {"a": {"b.c": 1, "b": {"c": 2}}},
    ],
)
def test_custom_jwt_flattening_never_overwrites(ec_signer: Signer, claims: dict) -> None:  # type: ignore[type-arg]
    """{"a.b": 1, "a": {"b": 2}} flattened to one 'a.b', the last one silently winning."""
    with pytest.raises(auth.MalformedToken, match=r"(?s)'a\.b(\.c)?'.*expected.*found.*Fix:"):
        custom_es256(ec_signer).verify(ec_signer.token(**claims))


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception reachable through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


def _holds(value: object, secret: bytes) -> bool:
    """True if ``value`` (or a str/bytes/tuple/list/dict inside it) contains ``secret``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return secret in bytes(value)
    if isinstance(value, str):
        return secret.decode() in value or secret in value.encode("utf-8", "surrogateescape")
    if isinstance(value, tuple | list):
        return any(_holds(v, secret) for v in value)
    if isinstance(value, dict):
        return any(_holds(k, secret) or _holds(v, secret) for k, v in value.items())
    return False


@pytest.mark.parametrize(
    "part",
    [
        b"\xff" + SECRET.encode(),  # not UTF-8: UnicodeDecodeError.object held the bytes
        SECRET.encode(),  # UTF-8 but not JSON: JSONDecodeError.doc held the text
    ],
    ids=["not-utf8", "not-json"],
)
@pytest.mark.parametrize("where", ["header", "payload"])
def test_no_exception_in_a_malformed_token_chain_holds_the_token(
    rsa_signer: Signer, part: bytes, where: str
) -> None:
    """MalformedToken's ``__context__`` kept the UnicodeDecodeError (or JSONDecodeError)
    whose ``.object`` (``.doc``) was the whole decoded part: a credential reachable by
    any handler that walks the chain (``raise ... from None`` only hides it from
    tracebacks)."""
    config = clerk(rsa_signer)
    head, payload, sig = rsa_signer.token().split(".")
    if where == "header":
        head = _b64(part)
    else:
        payload = _b64(part)
    token = f"{head}.{payload}.{sig}"
    secret = SECRET.encode()
    for verify in (config.verify, config.providers[0].verify):
        with pytest.raises(auth.MalformedToken) as caught:
            verify(token)
        for error in _chain(caught.value):
            assert not _holds(str(error), secret), error
            assert not _holds(error.args, secret), repr(error)
            assert not _holds(vars(error), secret), repr(error)
            for name in ("object", "doc", "msg"):
                assert not _holds(getattr(error, name, None), secret), (name, repr(error))
