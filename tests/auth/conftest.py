"""Keys, token factories and a JWKS / discovery server on 127.0.0.1 for auth tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://verb-noun-00.clerk.accounts.dev"


class Signer:
    """A key pair that signs tokens and publishes its public JWK."""

    def __init__(self, kind: str, kid: str) -> None:
        self.kid = kid
        if kind == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
        self.alg = kind
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        )
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return dict(jwk)

    def token(self, **overrides: Any) -> str:
        """A signed token; a callable override is given the current time (a parameter
        list is built when tests are collected, which can be over a minute earlier)."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "user_123",
            "aud": "convex",
            "iat": now - 1,
            "nbf": now - 5,
            "exp": now + 60,
            "sid": "sess_1",
            "v": 2,
            "fva": [1, -1],
            "azp": "https://app.example.com",
            "jti": "abc",
        }
        headers: dict[str, Any] = {"kid": self.kid}
        for key, value in overrides.items():
            if callable(value):  # a time relative to now: `nbf=lambda now: now + 60`
                value = value(now)
            if key.startswith("h_") and value is None:
                headers.pop(key[2:], None)
            elif key.startswith("h_"):
                headers[key[2:]] = value
            elif value is None:
                claims.pop(key, None)
            else:
                claims[key] = value
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


@pytest.fixture(scope="session")
def rsa_signer() -> Signer:
    return Signer("RS256", "ins_rsa")


@pytest.fixture(scope="session")
def ec_signer() -> Signer:
    return Signer("ES256", "ec_1")


class JwksServer:
    """Discovery and JWKS endpoints with switchable keys, cache headers and outages.

    ``broken`` makes every reply broken in one way: ``"garbage"`` (not HTTP),
    ``"truncated"`` (a body shorter than its Content-Length), ``"list"`` (JSON
    that is not an object), ``"issuer-null"`` (discovery with ``issuer: null``) or
    ``"issuer-slash"`` (discovery naming the issuer with a trailing ``/``).
    ``delay`` seconds pass before each reply (a slow or hanging issuer).
    ``"trickle-headers"`` / ``"trickle-body"`` send a byte every 50 ms, forever, in
    the headers or the body (each read succeeds, so a per-read timeout never fires);
    ``"huge"`` streams an endless body without a Content-Length and
    ``"huge-length"`` announces 300 MB. ``sent`` counts the bytes of those bodies.
    """

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.cache_control = "max-age=300"
        #: More headers for the discovery and JWKS replies (an ``Age`` from a CDN).
        self.headers: dict[str, str] = {}
        self.down = False
        self.broken: str | None = None
        self.delay = 0.0
        self.hits: dict[str, int] = {}
        self.sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if server.delay:
                    time.sleep(server.delay)
                if server.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                if server.broken == "garbage":
                    self.wfile.write(b"garbage\r\n\r\n")
                    self.close_connection = True
                    return
                if server.broken in ("trickle-headers", "trickle-body", "huge", "huge-length"):
                    self.close_connection = True
                    self.endless(server.broken)
                    return
                if server.broken == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"keys": [')
                    self.close_connection = True
                    return
                body: Any
                if server.broken == "list":
                    body = []
                elif self.path == "/.well-known/openid-configuration":
                    issuer = {"issuer-null": None, "issuer-slash": server.url + "/"}.get(
                        server.broken or "", server.url
                    )
                    body = {"issuer": issuer, "jwks_uri": server.url + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": server.keys}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", server.cache_control)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def endless(self, mode: str) -> None:
                """Write until the client hangs up (or 5 s, so no thread lingers)."""
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                if mode == "trickle-body":
                    head += b"Content-Length: 100000\r\n\r\n"
                elif mode == "huge-length":
                    head += b"Content-Length: 300000000\r\n\r\n"
                elif mode == "huge":
                    head += b"\r\n"
                else:
                    head += b"X-Slow: "
                chunk = b" " * 65536 if mode.startswith("huge") else b"a"
                ends = time.monotonic() + 5.0
                try:
                    self.wfile.write(head)
                    while time.monotonic() < ends:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        server.sent += len(chunk)
                        if chunk == b"a":
                            time.sleep(0.05)
                except OSError:
                    pass  # the client gave up: what the tests want

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(
            target=lambda: self.httpd.serve_forever(poll_interval=0.05), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Callable[[], float]:
    return Clock()
