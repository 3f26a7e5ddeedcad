"""The identity of an HTTP action: the request's ``Authorization: Bearer <token>``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import auth
from engine import Engine
from tests import app
from tests.auth.conftest import ISSUER, Signer


@pytest.fixture
def engine(db_path: Path, rsa_signer: Signer) -> Iterator[Engine]:
    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})]
    )
    with Engine.open(db_path, functions=app, durability="none", auth=config) as handle:
        yield handle


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_a_bearer_token_is_the_identity_over_a_real_server(
    engine: Engine, rsa_signer: Signer
) -> None:
    with engine.serve_http("127.0.0.1", 0) as server:
        bearer = {"Authorization": f"Bearer {rsa_signer.token()}"}
        status, body = get(server.url + "/whoami", bearer)
        assert status == 200, body
        # The handler and the query it runs both see the caller.
        assert json.loads(body) == {"subject": "user_123", "viaQuery": "user_123"}
        lower = {"authorization": f"bearer {rsa_signer.token(sub='user_9')}"}
        assert json.loads(get(server.url + "/whoami", lower)[1])["subject"] == "user_9"
        status, body = get(server.url + "/whoami", {})
        assert json.loads(body) == {"subject": None, "viaQuery": None}


def test_fetch_takes_a_token_an_identity_or_a_header(engine: Engine, rsa_signer: Signer) -> None:
    token = rsa_signer.token()
    assert engine.fetch("/whoami", auth=token).status == 200
    assert json.loads(engine.fetch("/whoami", auth=token).body)["subject"] == "user_123"
    identity = auth.UserIdentity.from_claims({"iss": "https://i", "sub": "trusted"})
    assert json.loads(engine.fetch("/whoami", auth=identity).body)["subject"] == "trusted"
    headers = {"Authorization": f"Bearer {token}"}
    assert json.loads(engine.fetch("/whoami", headers=headers).body)["subject"] == "user_123"


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-jwt", "Bearer {expired}", "Basic dXNlcjpwYXNz", "Bearer "],
)
def test_a_bad_header_makes_get_user_identity_raise_as_in_convex(
    engine: Engine, rsa_signer: Signer, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    header = header.format(expired=rsa_signer.token(exp=1))
    # The request is not refused: a handler that never asks for the identity answers.
    assert engine.fetch("/notes", headers={"Authorization": header}).status == 200
    # Asking raises (convex-backend#120): a redacted 500, the reason in the server's log.
    response = engine.fetch("/whoami", headers={"Authorization": header})
    assert response.status == 500
    assert json.loads(response.body)["code"].endswith("] Server Error")
    (record,) = [r for r in caplog.records if r.name == "engine.httpactions"]
    assert record.exc_info is not None
    expected = auth.AuthError if header.startswith("Bearer ") and header != "Bearer " else None
    if expected is not None:
        assert isinstance(record.exc_info[1], expected)
    else:
        assert "not `Bearer <token>`" in str(record.exc_info[1])


def test_the_raise_reaches_the_functions_the_action_runs(db_path: Path, rsa_signer: Signer) -> None:
    from engine import HttpRequest, HttpResponse, HttpRouter, http_action
    from tests.app import notes

    @http_action
    async def via_query(ctx: object, request: HttpRequest) -> HttpResponse:
        try:
            subject = await ctx.run_query(notes.who)  # type: ignore[attr-defined]
        except auth.AuthError as error:
            return HttpResponse(f"query raised {type(error).__name__}", status=401)
        return HttpResponse(f"query saw {subject}")

    router = HttpRouter()
    router.route(path="/who", method="GET", handler=via_query)
    config = auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]})]
    )
    with Engine.open(db_path, functions=notes, durability="none", auth=config, http=router) as e:
        assert e.fetch("/who", auth=rsa_signer.token()).text() == "query saw user_123"
        assert e.fetch("/who").text() == "query saw None"
        answer = e.fetch("/who", auth=rsa_signer.token(exp=1))
        assert (answer.status, answer.text()) == (401, "query raised TokenExpired")
