"""engine.httpserver: file downloads and uploads over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from engine import Engine, EngineError, HttpServer
from engine.blobs import CHUNK_SIZE
from tests import app
from tests.app import files
from tests.waiting import wait_until


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    with Engine.open(db_path, functions=app, durability="none") as handle:
        yield handle
        handle.check()


@pytest.fixture
def server(engine: Engine) -> Iterator[HttpServer]:
    with engine.serve_http("127.0.0.1", 0) as running:
        yield running


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def settle(server: HttpServer, connections: int, idle: int) -> None:
    """Wait until the server holds ``connections`` connections, ``idle`` of them waiting
    for a request (its handler threads mark them): what a fixed sleep assumed."""
    inner = server._server

    def counts() -> tuple[int, int]:
        return len(inner._connections), len(inner._idle)

    wait_until(lambda: counts() == (connections, idle), 10, counts)


def settle_busy(server: HttpServer, client: socket.socket) -> None:
    """Wait until ``client``'s connection is served and every other connection is idle
    (those closed to make room for it are gone, their slots free)."""
    inner = server._server

    def busy_peers() -> list[Any]:
        with inner._changed:
            busy = [c for c in inner._connections if c not in inner._idle]
        peers = []
        for connection in busy:
            try:
                peers.append(connection.getpeername())
            except OSError:  # shut down to make room, not yet gone
                peers.append(None)
        return peers

    wait_until(lambda: busy_peers() == [client.getsockname()], 10, busy_peers)


def upload(engine: Engine, data: bytes, content_type: str = "image/png", **headers: str) -> Any:
    url = engine.mutation(files.upload_url)
    status, _, body = request(url, "POST", data, {"Content-Type": content_type, **headers})
    return status, json.loads(body)


def test_upload_then_download(engine: Engine, server: HttpServer) -> None:
    data = bytes(range(256)) * (CHUNK_SIZE // 256 * 2 + 3)  # three chunks
    status, answer = upload(engine, data)
    assert status == 200, answer
    storage_id = answer["storageId"]
    document = engine.run(lambda ctx: ctx.db.system.get(storage_id))
    assert document["contentType"] == "image/png"
    assert document["size"] == float(len(data))
    url = engine.query(files.url, {"id": storage_id})
    assert url.startswith(server.url + "/api/storage/")
    status, headers, body = request(url)
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == "image/png"
    assert (
        headers["Digest"] == "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    )
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = request(url, "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(data)))


def test_deleted_files_and_unsigned_urls_answer_404(engine: Engine, server: HttpServer) -> None:
    _, answer = upload(engine, b"short")
    storage_id = answer["storageId"]
    url = engine.query(files.url, {"id": storage_id})
    assert request(server.url + f"/api/storage/{storage_id}")[0] == 404  # the id alone
    assert request(url[:-1] + ("0" if url[-1] != "0" else "1"))[0] == 404  # tampered
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    status, _, body = request(url)
    assert status == 404
    assert json.loads(body)["code"] == "FileNotFound"


def test_bad_and_expired_upload_tokens_are_refused(engine: Engine, server: HttpServer) -> None:
    from engine.files import upload_url

    url = engine.mutation(files.upload_url)
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    for bad in [
        tampered,
        server.url + "/api/storage/upload",
        server.url + "/api/storage/upload?token=x",
    ]:
        status, _, body = request(bad, "POST", b"data", {"Content-Type": "text/plain"})
        assert status == 401, body
        assert json.loads(body)["code"] == "InvalidUploadToken"
    expired = upload_url(engine._db, server.url, now=0.0)
    status, _, body = request(expired, "POST", b"data")
    assert status == 401
    assert "expired" in json.loads(body)["message"]
    assert engine.check()["files"]["files"] == 0


def test_digest_header_is_checked(engine: Engine, server: HttpServer) -> None:
    good = "sha-256=" + base64.b64encode(hashlib.sha256(b"abc").digest()).decode()
    bad = "sha-256=" + base64.b64encode(hashlib.sha256(b"xyz").digest()).decode()
    assert upload(engine, b"abc", Digest=good)[0] == 200
    status, answer = upload(engine, b"abc", Digest=bad)
    assert (status, answer["code"]) == (400, "Sha256Mismatch")
    assert engine.check()["files"]["files"] == 1


def test_cors_preflight(engine: Engine, server: HttpServer) -> None:
    status, headers, _ = request(server.url + "/api/storage/upload?token=x", "OPTIONS")
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Content-Length" not in headers  # RFC 9110 8.6: never in a 204


def test_urls_use_the_server_origin_unless_site_url_is_set(db_path: Path) -> None:
    with Engine.open(db_path, functions=app, durability="none") as engine:
        before = engine.mutation(files.upload_url)
        assert before.startswith("http://127.0.0.1:3210/api/storage/upload?token=")
        with engine.serve_http("127.0.0.1", 0) as server:
            assert engine.mutation(files.upload_url).startswith(server.url + "/")
        assert engine.mutation(files.upload_url).startswith("http://127.0.0.1:3210/")
    with (
        Engine.open(
            db_path, functions=app, durability="none", site_url="https://cdn.example/"
        ) as engine,
        engine.serve_http("127.0.0.1", 0),
    ):
        assert engine.mutation(files.upload_url).startswith("https://cdn.example/api/storage/")
    with pytest.raises(EngineError, match="site_url must be an http"):
        Engine.open(db_path, site_url="cdn.example")


def test_closing_the_engine_stops_its_server(db_path: Path) -> None:
    engine = Engine.open(db_path, functions=app, durability="none")
    server = engine.serve_http("127.0.0.1", 0)
    assert request(server.url + "/nothing")[0] == 404
    engine.close()
    with pytest.raises(OSError):
        request(server.url + "/nothing")


def test_one_connection_serves_several_requests(engine: Engine, server: HttpServer) -> None:
    # HTTP/1.1 keep-alive: an answer must leave the connection at the next request,
    # also after a refused POST whose body was never used.
    url = engine.mutation(files.upload_url)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        # The app has HTTP routes: an unrouted path is theirs (Convex's plain-text 404),
        # a path under /api/storage/ the storage endpoints' (JSON).
        connection.request("POST", "/api/nowhere", body=b"x" * 1000)
        response = connection.getresponse()
        assert (response.status, response.read()) == (404, b"No matching routes found")
        connection.request("POST", "/api/storage/nowhere", body=b"x" * 1000)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["code"]) == (
            405,
            "MethodNotAllowed",
        )
        connection.request("POST", f"{parts.path}?{parts.query}", body=b"kept")
        response = connection.getresponse()
        storage_id = json.loads(response.read())["storageId"]
        file_url = urlsplit(engine.query(files.url, {"id": storage_id}))
        connection.request("GET", file_url.path)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"kept")
    finally:
        connection.close()


def test_wsgi_app_uploads_and_downloads(db_path: Path) -> None:
    import io
    from wsgiref.util import setup_testing_defaults
    from wsgiref.validate import validator  # checks the app keeps the WSGI protocol

    def call(app: Any, method: str, url: str, body: bytes = b"", **headers: str) -> Any:
        parts = urlsplit(url)
        assert parts.path.startswith("/files")  # the mount point, as a dispatcher strips it
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "/files",
            "PATH_INFO": parts.path[len("/files") :],
            "QUERY_STRING": parts.query,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            **{"HTTP_" + k.upper(): v for k, v in headers.items()},
        }
        if "HTTP_CONTENT_TYPE" in environ:
            environ["CONTENT_TYPE"] = environ.pop("HTTP_CONTENT_TYPE")
        setup_testing_defaults(environ)
        answer: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            answer["status"], answer["headers"] = status, dict(headers)
            return lambda data: None

        result = app(environ, start_response)
        try:
            answer["body"] = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        return answer

    with Engine.open(
        db_path, functions=app, durability="none", site_url="https://example.com/files"
    ) as engine:
        wsgi = validator(engine.wsgi_app())
        url = engine.mutation(files.upload_url)
        assert url.startswith("https://example.com/files/api/storage/upload?token=")
        answer = call(wsgi, "POST", url, b"via wsgi", Content_Type="text/plain")
        assert answer["status"] == "200 OK", answer
        storage_id = json.loads(answer["body"])["storageId"]
        file_url = engine.query(files.url, {"id": storage_id})
        answer = call(wsgi, "GET", file_url)
        assert (answer["status"], answer["body"]) == ("200 OK", b"via wsgi")
        assert answer["headers"]["Content-Type"] == "text/plain"
        assert call(wsgi, "GET", "https://example.com/files/api/storage/x-y")["status"] == (
            "404 Not Found"
        )
        engine.check()


def _raw(server: HttpServer, data: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    connection.sendall(data)
    return connection


def _answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 5 s pass)."""
    received = b""
    try:
        while part := connection.recv(65536):
            received += part
    except TimeoutError:
        pass
    finally:
        connection.close()
    return received


def test_stalled_clients_are_disconnected_after_the_timeout(engine: Engine) -> None:
    url = urlsplit(engine.mutation(files.upload_url))
    with engine.serve_http("127.0.0.1", 0, timeout=0.3) as server:
        stalled = [
            _raw(server, b"GET /api/storage/x HTTP/1.1\r\nHost: x\r\n"),  # headers never end
            _raw(  # an upload that announces 1 MiB and sends 10 bytes
                server,
                f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {1 << 20}\r\n\r\n0123456789".encode(),
            ),
        ]
        started = time.monotonic()
        answers = [_answer(connection) for connection in stalled]
        assert time.monotonic() - started < 3
        assert answers[0] == b""
        assert b" 400 " in answers[1] and b"IncompleteBody" in answers[1]
        # A GET announcing a body it never sends is answered at once.
        connection = _raw(server, b"GET /api/storage/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
        connection.settimeout(2)
        assert b" 404 " in connection.recv(65536)
        connection.close()
    assert engine.check()["files"]["files"] == 0


def test_connections_beyond_the_cap_are_refused(engine: Engine) -> None:
    with engine.serve_http("127.0.0.1", 0, max_connections=2, timeout=5) as server:
        held = [_raw(server, b"GET /api/storage/x HTTP/1.1\r\n") for _ in range(2)]
        settle(server, connections=2, idle=0)  # both busy with their requests
        answer = _answer(_raw(server, b""))
        assert b" 503 " in answer and b"TooManyConnections" in answer
        assert "\r\nretry-after: 1\r\n" in _head(answer), answer  # RFC 9110 15.6.4
        for connection in held:
            connection.close()
        deadline = time.monotonic() + 3
        while request(server.url + "/nothing")[0] != 404:  # slots come back as they close
            assert time.monotonic() < deadline


def test_closing_ends_kept_alive_connections(db_path: Path) -> None:
    engine = Engine.open(db_path, functions=app, durability="none")
    storage_id = engine.store_file(b"private")
    path = urlsplit(engine.query(files.url, {"id": storage_id})).path
    for close in ("server", "engine"):
        server = engine.serve_http("127.0.0.1", 0)
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        kept.request("GET", path)
        assert kept.getresponse().read() == b"private"
        if close == "server":
            server.close()
        else:
            engine.close()
        with pytest.raises((http.client.HTTPException, OSError)):  # no more requests
            kept.request("GET", path)
            kept.getresponse()
        kept.close()


def test_a_closed_engine_answers_503_not_404(db_path: Path) -> None:
    from engine.httpserver import handle

    engine = Engine.open(db_path, functions=app, durability="none")
    storage_id = engine.store_file(b"kept")
    path = urlsplit(engine.query(files.url, {"id": storage_id})).path
    upload_path = urlsplit(engine.mutation(files.upload_url))
    runtime = engine._runtime
    assert handle(runtime, "GET", path, lambda name: None, bytes).status == 200
    engine.close()
    for method, target in [("GET", path), ("POST", f"{upload_path.path}?{upload_path.query}")]:
        response = handle(runtime, method, target, {"Content-Length": "1"}.get, lambda n: b"x")
        assert response.status == 503, (method, b"".join(response.body))
        assert json.loads(b"".join(response.body))["code"] == "EngineClosed"


def test_an_upload_with_a_non_ascii_content_type_is_refused(
    engine: Engine, server: HttpServer
) -> None:
    url = engine.mutation(files.upload_url)
    parts = urlsplit(url)
    connection = _raw(
        server,
        f"POST {parts.path}?{parts.query} HTTP/1.1\r\nContent-Type: text/plain; n=\xe9\r\n"
        "Content-Length: 2\r\n\r\nhi".encode("latin-1"),
    )
    answer = _answer(connection)
    assert b" 400 " in answer and b"visible ASCII" in answer
    assert engine.check()["files"]["files"] == 0


def test_bad_and_oversized_content_lengths_are_answered(engine: Engine) -> None:
    url = urlsplit(engine.mutation(files.upload_url))
    post = f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n".encode()
    with engine.serve_http("127.0.0.1", 0, max_upload_size=1000, timeout=2) as server:
        cases = [
            (b"GET /anything HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", b" 404 "),
            # An unparsable authority in an absolute-form target: urlsplit's ValueError
            # left the client without an answer (found by review).
            (b"GET http://[/api/storage/x HTTP/1.1\r\nHost: x\r\n\r\n", b" 400 "),
            (post + b"Content-Length: \xb9\r\n\r\nx", b"BadContentLength"),
            (post + b"Content-Length: 1_0\r\n\r\nx", b"BadContentLength"),
            (post + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\nx", b"PayloadTooLarge"),
            (post + f"Content-Length: {10**15}\r\n\r\nx".encode(), b"PayloadTooLarge"),
            (post + b"Connection: close\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001, b" 413 "),
        ]
        for data, expected in cases:
            answer = _answer(_raw(server, data))
            assert expected in answer, (data[-120:], answer)
        assert upload(engine, b"x" * 1000)[0] == 200  # at the cap: fine
    assert engine.check()["files"]["files"] == 1


def _head_only(server: HttpServer, head: bytes) -> tuple[socket.socket, bytes]:
    """Send a request head and read the server's first reply to it, the body unsent."""
    connection = _raw(server, head)
    reply = b""
    while b"\r\n\r\n" not in reply:
        part = connection.recv(65536)
        if not part:
            break
        reply += part
    return connection, reply


def test_expect_100_continue_is_answered_when_the_body_is_wanted(engine: Engine) -> None:
    # The interim 100 was sent as soon as the head was read, before the upload's token
    # and size were looked at: a client waiting for it then sent a body over the cap
    # only to be told 413 (RFC 9110 10.1.1: a server may answer with the final status
    # instead, and must then say whether it closes the connection). A request to no
    # route of the HTTP actions read its body before the route was looked up: a 100,
    # then the whole body sent for nothing, then the 404.
    url = urlsplit(engine.mutation(files.upload_url))
    post = f"POST {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    with engine.serve_http("127.0.0.1", 0, max_upload_size=1000, timeout=2) as server:
        for head, status in [
            (post.encode() + b"Content-Length: 1001\r\n\r\n", b" 413 "),
            (  # a bad upload token
                post.replace("token=", "token=x").encode() + b"Content-Length: 5\r\n\r\n",
                b" 401 ",
            ),
            (  # an HTTP action's body over the cap
                b"POST /echo/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 5000\r\n\r\n",
                b" 413 ",
            ),
            (  # no route for it
                b"POST /no/such/route HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 50\r\n\r\n",
                b" 404 ",
            ),
            (
                b"POST /no/such/route HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
                b" 404 ",
            ),
        ]:
            connection, reply = _head_only(server, head)
            with connection:
                assert reply.startswith(b"HTTP/1.1" + status), reply
                # The body was never asked for: the connection closes after the answer.
                assert "connection: close" in _head(reply), reply
        # A body that is wanted: 100 first, and only then the answer.
        connection, reply = _head_only(server, post.encode() + b"Content-Length: 5\r\n\r\n")
        with connection:
            assert reply == b"HTTP/1.1 100 Continue\r\n\r\n", reply
            connection.sendall(b"hello")
            answer = _answer(connection)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        # Without the expectation nothing changes: the body follows the head at once.
        answer = _answer(
            _raw(
                server,
                post.replace("Expect: 100-continue\r\n", "").encode()
                + b"Connection: close\r\nContent-Length: 3\r\n\r\nabc",
            )
        )
        assert answer.startswith(b"HTTP/1.1 200 ") and b" 100 " not in answer, answer
    assert engine.check()["files"]["files"] == 2


def test_aborted_requests_print_nothing_and_other_errors_are_logged(
    server: HttpServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    for error in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(), TimeoutError()):
        try:
            raise error
        except OSError:
            server._server.handle_error(None, ("127.0.0.1", 1))
    assert capfd.readouterr().err == ""
    assert not caplog.records
    try:
        raise ValueError("a bug")
    except ValueError:
        server._server.handle_error(None, ("127.0.0.1", 1))
    assert capfd.readouterr().err == ""
    (record,) = caplog.records
    assert record.name == "engine.httpserver" and record.exc_info is not None


def test_urls_follow_the_servers_still_running(engine: Engine) -> None:
    first = engine.serve_http("127.0.0.1", 0)
    second = engine.serve_http("127.0.0.1", 0)
    assert engine.mutation(files.upload_url).startswith(first.url + "/")
    first.close()
    assert engine.mutation(files.upload_url).startswith(second.url + "/")
    second.close()
    assert engine.mutation(files.upload_url).startswith("http://127.0.0.1:3210/")


@pytest.mark.parametrize(
    "site_url",
    [
        "http://",
        "https:///",
        "http://x.com/?q=1",
        "http://x.com/#f",
        "http://exa mple.com",
        "ftp://x.com",
        "http://x.com:99999",
        "http://x.com/\n",
        42,
        # Found by review: an unclosed IPv6 bracket raised a bare ValueError ("Invalid
        # IPv6 URL"); credentials were taken into every URL (browsers' fetch refuses a
        # URL with them), and a backslash, which a URL parser reads as "/", too.
        "http://[::1",
        "http://user:pw@x.com",
        "http://x.com\\files",
    ],
)
def test_bad_site_urls_are_refused(db_path: Path, site_url: Any) -> None:
    with pytest.raises(EngineError, match="site_url must be an http"):
        Engine.open(db_path, site_url=site_url)


def test_good_site_urls_are_kept(db_path: Path) -> None:
    for site_url in ["https://example.com/files/", "http://[::1]:8080", "http://x.com:80/a/b"]:
        with Engine.open(db_path, functions=app, durability="none", site_url=site_url) as e:
            assert e.mutation(files.upload_url).startswith(site_url.rstrip("/") + "/api/")


@pytest.mark.parametrize(
    "options",
    [
        {"port": -1},
        {"port": 70000},
        {"port": "80"},
        {"port": True},
        {"host": None},
        {"host": "127.0.0.1\x00"},  # was a bare TypeError from socket
        {"timeout": 0},
        # Found by review: accepted, then every connection failed in settimeout with
        # OverflowError (the client saw the connection close, with no answer).
        {"timeout": float("inf")},
        {"timeout": 1e10},
        {"max_connections": 0},
        {"max_upload_size": -1},
    ],
)
def test_bad_serve_http_arguments_are_refused(engine: Engine, options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"host": "127.0.0.1", "port": 0, **options}
    name = next(iter(options))
    with pytest.raises(EngineError, match=rf"serve_http\({name}="):
        engine.serve_http(**arguments)


@pytest.mark.parametrize("size", [-1, "10", None, 1.5, True])
def test_bad_wsgi_app_upload_sizes_are_refused(engine: Engine, size: Any) -> None:
    # wsgi_app(max_upload_size=...) was not checked, as serve_http's is: "10" or None
    # raised TypeError in every request, and -1 answered every body 413.
    with pytest.raises(EngineError, match=r"wsgi_app\(max_upload_size="):
        engine.wsgi_app(max_upload_size=size)


def test_a_port_in_use_is_an_oserror_naming_the_address_and_port_0(
    engine: Engine, server: HttpServer
) -> None:
    # It was the socket's bare "[Errno 98] Address already in use".
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{server.port}: .*port=0"):
        engine.serve_http("127.0.0.1", server.port)
    try:
        engine.serve_http("127.0.0.1", server.port)
    except OSError as error:
        assert error.errno == errno.EADDRINUSE  # kept for callers that test it
    upload_url = engine.mutation(lambda ctx: ctx.storage.generate_upload_url())
    assert upload_url.startswith(server.url + "/")  # the refused server left no trace
    with engine.serve_http("127.0.0.1", 0) as other:  # nothing half-registered
        assert other.port != server.port


def test_other_listen_errors_keep_their_type(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: every OSError of listening came back a plain OSError (a
    # socket.gaierror for a host that does not resolve).
    import engine.httpserver as httpserver

    def unresolved(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(httpserver, "ConnectionServer", unresolved)
    with pytest.raises(socket.gaierror):
        engine.serve_http("no-such-host.invalid", 0)


def test_idle_kept_alive_connections_make_room_for_new_clients(engine: Engine) -> None:
    # Found by holding max_connections kept-alive connections open after one request each
    # (a client's connection pool): every other client got 503 TooManyConnections for up
    # to `timeout` (120 s) while the server served nothing.
    with engine.serve_http("127.0.0.1", 0, max_connections=2, timeout=30) as server:
        pool = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in "ab"]
        try:
            for connection in pool:
                connection.request("GET", "/api/storage/x")
                assert connection.getresponse().read()  # kept alive, now idle
            settle(server, connections=2, idle=2)
            started = time.monotonic()
            assert request(server.url + "/api/storage/x")[0] == 404  # served, not 503
            assert time.monotonic() - started < 2
            # A connection busy with a request is never closed to make room.
            busy = _raw(server, b"GET /api/storage/x HTTP/1.1\r\nHost: x\r\n")  # unfinished
            settle_busy(server, busy)  # and the pool connection it displaced is gone
            assert request(server.url + "/api/storage/x")[0] == 404
            busy.sendall(b"Connection: close\r\n\r\n")
            assert b" 404 " in _answer(busy)
        finally:
            for connection in pool:
                connection.close()


def test_idle_kept_alive_connections_are_closed_after_the_keep_alive_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import httpserver

    monkeypatch.setattr(httpserver, "KEEP_ALIVE_TIMEOUT", 0.2)
    with engine.serve_http("127.0.0.1", 0, timeout=30) as server:
        connection = _raw(server, b"GET /api/storage/x HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = _answer(connection)  # the answer, then the server closes the idle connection
        assert b" 404 " in answer and time.monotonic() - started < 3
        # Pipelined requests already sent are all answered.
        connection = _raw(server, b"GET /api/storage/x HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        assert _answer(connection).count(b" 404 ") == 3


def test_downloads_cannot_run_script_on_the_origin_of_the_http_actions(
    engine: Engine, server: HttpServer
) -> None:
    # Found by uploading an HTML file: its URL served it as text/html on the origin of
    # the app's HTTP actions (Convex serves files on another origin), so a script in it
    # ran there and could call the HTTP actions with a visitor's cookies and read the
    # answers. Whoever has an upload URL chooses the Content-Type.
    page = b"<script>fetch('/notes', {credentials: 'include'})</script>"
    status, body = upload(engine, page, "text/html")
    assert status == 200
    url = engine.query(files.url, {"id": body["storageId"]})
    for method in ("GET", "HEAD"):
        status, headers, data = request(url, method)
        assert status == 200 and headers["Content-Type"] == "text/html"
        assert headers["Content-Security-Policy"] == "sandbox"  # an opaque origin, no script
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert data == b"" and request(url)[2] == page
    # A PDF is shown by the browser's viewer, which a sandbox would stop.
    _, body = upload(engine, b"%PDF-1.4", "Application/PDF")
    headers = request(engine.query(files.url, {"id": body["storageId"]}))[1]
    assert "Content-Security-Policy" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_range_requests_are_answered_as_convex_does(engine: Engine, server: HttpServer) -> None:
    # Convex answers one byte range with 206 (a <video> in Safari, or a resumed
    # download, needs it) and several with 416; the whole file said Accept-Ranges.
    data = bytes(i % 251 for i in range(2 * CHUNK_SIZE + 10))
    _, body = upload(engine, data, "video/mp4")
    url = engine.query(files.url, {"id": body["storageId"]})
    size = len(data)
    status, headers, whole = request(url)
    assert (status, whole, headers["Accept-Ranges"]) == (200, data, "bytes")
    cases = {
        "bytes=0-0": (0, 0),
        "bytes=5-9": (5, 9),
        f"bytes={CHUNK_SIZE - 2}-{CHUNK_SIZE + 1}": (CHUNK_SIZE - 2, CHUNK_SIZE + 1),
        f"bytes={CHUNK_SIZE}-": (CHUNK_SIZE, size - 1),
        "bytes=-7": (size - 7, size - 1),
        f"bytes=-{size + 100}": (0, size - 1),
        f"bytes=10-{size * 2}": (10, size - 1),
    }
    for value, (start, end) in cases.items():
        status, headers, part = request(url, headers={"Range": value})
        assert status == 206, value
        assert part == data[start : end + 1], value
        assert headers["Content-Range"] == f"bytes {start}-{end}/{size}", value
        assert headers["Content-Length"] == str(end - start + 1)
        assert headers["Content-Type"] == "video/mp4"
    status, headers, part = request(url, "HEAD", headers={"Range": "bytes=5-9"})
    assert (status, part, headers["Content-Length"]) == (206, b"", "5")
    for value in (f"bytes={size}-", "bytes=-0", "bytes=0-1,5-6"):
        status, headers, part = request(url, headers={"Range": value})
        assert (status, part) == (416, b""), value
    assert (
        request(url, headers={"Range": f"bytes={size}-"})[1]["Content-Range"] == f"bytes */{size}"
    )
    for value in ("items=0-1", "bytes=9-5", "bytes=a-b", "bytes="):  # not a byte range: all
        assert request(url, headers={"Range": value})[:3:2] == (200, data), value
    # If-Range with another validator: the file changed, so the whole of it.
    status, _, part = request(url, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert (status, part) == (200, data)
    status, _, part = request(url, headers={"Range": "bytes=0-1", "If-Range": headers_etag(url)})
    assert (status, part) == (206, data[:2])


def headers_etag(url: str) -> str:
    return request(url, "HEAD")[1]["ETag"]


def test_other_methods_on_the_storage_endpoints_get_405_with_allow(
    engine: Engine, server: HttpServer
) -> None:
    # The two endpoints exist, for other methods: 405 Method Not Allowed with Allow
    # (RFC 9110 15.5.6), as Convex's router (axum) answers; they got 404 "No route".
    storage_id = engine.store_file(b"kept")
    file_path = urlsplit(engine.query(files.url, {"id": storage_id})).path
    upload = urlsplit(engine.mutation(files.upload_url))
    for method in ("PUT", "DELETE", "PATCH", "POST"):
        status, headers, body = request(server.url + file_path, method, b"x")
        assert (status, headers["Allow"]) == (405, "GET, HEAD, OPTIONS"), method
        assert json.loads(body)["code"] == "MethodNotAllowed"
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, headers, _ = request(f"{server.url}{upload.path}?{upload.query}", method)
        assert (status, headers["Allow"]) == (405, "POST, OPTIONS"), method
    assert request(server.url + file_path)[2] == b"kept"  # the file is untouched
    assert len(engine.query(files.files)) == 1


def test_connections_that_sent_nothing_yet_are_idle(engine: Engine) -> None:
    # A browser opens connections ahead of need (preconnect) and may send nothing on
    # them: a client with a request must be able to take their slot, and close() must
    # not wait out its grace period for them.
    with engine.serve_http("127.0.0.1", 0, max_connections=1, timeout=30) as server:
        preconnected = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            settle(server, connections=1, idle=1)
            assert request(server.url + "/api/storage/x")[0] == 404  # not 503
        finally:
            preconnected.close()
    server = engine.serve_http("127.0.0.1", 0, timeout=30)
    preconnected = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        time.sleep(0.1)
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 2
        assert _answer(preconnected) == b""
    finally:
        preconnected.close()
        server.close()


def test_downloads_are_cacheable_as_convexs_and_revalidate(
    engine: Engine, server: HttpServer
) -> None:
    # Convex sends Cache-Control: private, max-age=2592000 (a storage URL's bytes never
    # change); convexlite sent neither that nor honoured If-None-Match for the ETag it
    # sent, so a browser fetched every image in full on every view.
    _, body = upload(engine, b"image bytes", "image/png")
    url = engine.query(files.url, {"id": body["storageId"]})
    status, headers, _ = request(url)
    assert headers["Cache-Control"] == "private, max-age=2592000"
    etag = headers["ETag"]
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, data = request(url, headers={"If-None-Match": value})
        assert (status, data, headers["ETag"]) == (304, b"", etag), value
        assert "Content-Length" not in headers
    status, _, data = request(url, headers={"If-None-Match": '"other"'})
    assert (status, data) == (200, b"image bytes")
    status, _, data = request(url, headers={"If-None-Match": etag, "Range": "bytes=0-1"})
    assert (status, data) == (304, b"")  # If-None-Match first (RFC 9110 13.2.2)


def test_cors_preflights_allow_the_headers_the_browser_asks_for(
    engine: Engine, server: HttpServer
) -> None:
    # A browser upload whose fetch adds a header (an Authorization from a fetch wrapper,
    # an upload library's X- header) failed its preflight: only Content-Type and Digest
    # were allowed. Convex's CORS layer mirrors Access-Control-Request-Headers.
    asked = "content-type, authorization, x-upload-id"
    for path in ("/api/storage/upload?token=x", "/api/storage/some-file"):
        status, headers, _ = request(
            server.url + path,
            "OPTIONS",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        )
        assert status == 204
        assert headers["Access-Control-Allow-Headers"] == asked
    # Without the request header, the endpoints' own headers; a value that is not a
    # list of header names is not echoed.
    status, headers, _ = request(server.url + "/api/storage/upload", "OPTIONS")
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, Digest"
    status, headers, _ = request(
        server.url + "/api/storage/upload",
        "OPTIONS",
        headers={"Access-Control-Request-Headers": "x-a; evil=1"},
    )
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, Digest"


def test_a_download_cut_short_by_a_delete_is_aborted_behind_wsgi_app(engine: Engine) -> None:
    # A file deleted while being sent ends the body early. serve_http then closes the
    # connection, but wsgi_app's body iterable just ended: the WSGI server took the short
    # body as complete (Content-Length promised more) and could keep the connection
    # alive out of step. A WSGI app signals an abort by raising from its iterable.
    import io
    from wsgiref.util import setup_testing_defaults

    data = b"z" * (CHUNK_SIZE * 2 + 7)
    storage_id = engine.store_file(data)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": urlsplit(engine.query(files.url, {"id": storage_id})).path,
        "wsgi.input": io.BytesIO(b""),
    }
    setup_testing_defaults(environ)
    body = iter(engine.wsgi_app()(environ, lambda status, headers, exc_info=None: None))
    assert next(body) == data[:CHUNK_SIZE]
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    with pytest.raises(EngineError, match="deleted while it was being sent"):
        b"".join(body)


def test_a_file_stored_with_an_empty_content_type_is_served_as_octet_stream(
    engine: Engine,
) -> None:
    # Engine.store_file(data, "") (and ctx.storage.store) keep contentType "", and the
    # download sent "Content-Type: " with no media type; a blank one is now served as
    # an unknown type is, application/octet-stream.
    for content_type in ("", "   "):
        storage_id = engine.store_file(b"x", content_type)
        response = engine.fetch(engine.query(files.url, {"id": storage_id}))
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"


def test_fetch_of_a_download_cut_short_raises_as_a_client_connection_would(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file deleted between its row and its bytes ends a download early: serve_http
    # closes the connection (a client sees fewer bytes than Content-Length), but
    # Engine.fetch returned a 200 whose body was shorter than its Content-Length.
    from engine import files as engine_files

    storage_id = engine.store_file(b"y" * (CHUNK_SIZE + 5))
    url = engine.query(files.url, {"id": storage_id})
    stale = engine_files.metadata_and_key(engine._db, storage_id)
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    monkeypatch.setattr(engine_files, "metadata_and_key", lambda db, storage_id: stale)
    with pytest.raises(EngineError, match="cut short"):
        engine.fetch(url)


def test_an_empty_file_deleted_during_its_download_keeps_the_connection(
    engine: Engine, server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a stress run (uploads, downloads and deletes on kept-alive connections):
    # an empty file deleted between its row and its bytes got its whole answer (200,
    # Content-Length: 0), but the download still read chunk 0, found none, and closed
    # the connection without "Connection: close": the client's next request on it
    # (an upload) failed with a broken pipe. Nothing is left to send: no chunk is read.
    from engine import files as engine_files

    storage_id = engine.store_file(b"")
    path = urlsplit(engine.query(files.url, {"id": storage_id})).path
    stale = engine_files.metadata_and_key(engine._db, storage_id)
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    monkeypatch.setattr(engine_files, "metadata_and_key", lambda db, storage_id: stale)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"")
        monkeypatch.undo()
        connection.request("GET", path)  # the same connection, still open
        assert connection.getresponse().status == 404
    finally:
        connection.close()
    assert engine.fetch(path).status == 404


def test_server_errors_reach_no_stderr_when_the_host_configured_no_logging(
    tmp_path: Path,
) -> None:
    # The docs promise that an error serving a request is logged to engine.httpserver,
    # never printed to stderr; but with no logging configured (no handler anywhere),
    # Python's last-resort handler printed the record and its traceback to stderr.
    import subprocess
    import sys

    script = (
        "from engine import Engine\n"
        f"with Engine.open({str(tmp_path / 'db')!r}, durability='none') as db, "
        "db.serve_http('127.0.0.1', 0) as server:\n"
        "    try:\n"
        "        raise ValueError('a bug')\n"
        "    except ValueError:\n"
        "        server._server.handle_error(None, ('127.0.0.1', 1))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_subscribed_file_urls_follow_the_server_origin(engine: Engine) -> None:
    # A file URL's origin is that of the running server (no site_url), but a
    # subscription re-ran only on commits: one made before serve_http kept handing out
    # http://127.0.0.1:3210/... (nothing listens there) while the server ran, and one
    # made while it ran kept its URLs after it closed.
    storage_id = engine.store_file(b"x")

    def settles(sub: Any, origin: str) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if sub.value.startswith(origin + "/api/storage/"):
                return True
            time.sleep(0.01)
        return False

    with engine.subscribe(files.url, {"id": storage_id}) as sub:
        assert sub.value.startswith("http://127.0.0.1:3210/api/storage/")
        with engine.serve_http("127.0.0.1", 0) as server:
            assert settles(sub, server.url), sub.value
            assert sub.value == engine.query(files.url, {"id": storage_id})
        assert settles(sub, "http://127.0.0.1:3210"), sub.value


def test_the_range_unit_is_matched_without_regard_to_case(
    engine: Engine, server: HttpServer
) -> None:
    # RFC 9110 14.1: "Range units are compared in a case-insensitive manner."
    data = bytes(range(100))
    _, body = upload(engine, data, "application/octet-stream")
    url = engine.query(files.url, {"id": body["storageId"]})
    for value in ("Bytes=5-9", "BYTES=5-9", "bytes=5-9"):
        status, headers, part = request(url, headers={"Range": value})
        assert (status, part, headers["Content-Range"]) == (206, data[5:10], "bytes 5-9/100")


def test_a_server_on_every_interface_hands_out_loopback_urls(engine: Engine) -> None:
    # http://0.0.0.0:port/... is no address to send a request to (browsers refuse it).
    with engine.serve_http("0.0.0.0", 0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        status, body = upload(engine, b"hello", "text/plain")
        assert status == 200
        url = engine.query(files.url, {"id": body["storageId"]})
        assert url.startswith(server.url + "/")
        assert request(url)[::2] == (200, b"hello")


def test_closed_servers_are_not_kept_by_the_engine(engine: Engine) -> None:
    import gc
    import weakref

    with engine.serve_http("127.0.0.1", 0) as first:
        pass
    gone = weakref.ref(first)
    del first
    with engine.serve_http("127.0.0.1", 0):
        gc.collect()
        assert gone() is None


def test_a_server_started_while_the_engine_closes_does_not_outlive_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import engine.engine as engine_module

    started = threading.Event()
    resume = threading.Event()
    made: list[HttpServer] = []

    class SlowServer(HttpServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)
            started.set()
            resume.wait(10)

    monkeypatch.setattr(engine_module, "HttpServer", SlowServer)
    handle = Engine.open(db_path, functions=app, durability="none")
    outcome: list[BaseException | HttpServer] = []

    def serve() -> None:
        try:
            outcome.append(handle.serve_http("127.0.0.1", 0))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    assert started.wait(10)
    handle.close()  # while serve_http is between binding and registering its server
    resume.set()
    thread.join(10)
    assert isinstance(outcome[0], EngineError), outcome
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", made[0].port), timeout=2).close()


def test_a_waiting_first_request_is_seen_on_any_file_descriptor() -> None:
    # select() refuses descriptors past 1023 (ValueError), which a host with many open
    # files reaches: the server's check must not depend on it.
    import resource

    from engine.httpconnections import bytes_waiting

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1500:
        pytest.skip(f"the descriptor limit ({hard}) stays below 1500")
    if soft != resource.RLIM_INFINITY and soft <= 1500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1501, hard))
    left, right = socket.socketpair()
    try:
        os.dup2(right.fileno(), 1500)
        high = socket.socket(fileno=1500)
        high.settimeout(7.0)
        try:
            assert not bytes_waiting(high)  # nothing sent yet, and no wait for it
            left.sendall(b"GET / HTTP/1.1\r\n")
            wait_until(lambda: bytes_waiting(high), 10)
            assert high.gettimeout() == 7.0  # the socket's timeout is put back
            assert high.recv(64) == b"GET / HTTP/1.1\r\n"  # peeked, not consumed
        finally:
            high.close()
    finally:
        left.close()
        right.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _two_oks(server: HttpServer, pipelined: bytes) -> bytes:
    """Send two pipelined requests; assert both were answered 200 and return the answer."""
    answer = _answer(_raw(server, pipelined))
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer
    return answer


def _head(answer: bytes) -> str:
    """The status line and headers of the first answer in ``answer``, lowercased."""
    return answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()


def test_every_answer_before_a_close_says_connection_close(engine: Engine) -> None:
    # The server decided to close after it had written the headers: a client that
    # reused the connection lost its next request.
    big = b"x" * (2 << 20)  # more than the 1 MiB the server reads and drops to keep going
    post = b"POST /echo/x HTTP/1.1\r\nHost: x\r\n"
    cases = [
        (post + b"Content-Length: %d\r\n\r\n" % len(big) + big, b" 413 "),
        (  # a coding other than chunked alone
            post + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b" 411 ",
        ),
        (post + b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 1024, b" 413 "),
        (
            b"GET /notes HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big,
            b" 200 ",
        ),
        (post + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", b" 400 "),
        (post + b"Content-Length: 1_0\r\n\r\nabc", b" 400 "),
        (b"GET /notes HTTP/1.1\r\nHost: a b\r\n\r\n", b" 400 "),
    ]
    with engine.serve_http("127.0.0.1", 0, max_upload_size=1000) as server:
        for data, status in cases:
            answer = _answer(_raw(server, data + b"GET /notes HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status in answer.partition(b"\r\n")[0], (data[:80], answer)
            assert answer.count(b"HTTP/1.1 ") == 1, (data[:80], answer)
            assert "\r\nconnection: close\r\n" in _head(answer) + "\r\n", (data[:80], answer)
        # A connection the server keeps says nothing of the kind.
        answer = _two_oks(
            server,
            b"GET /notes HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /notes HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        assert "connection" not in _head(answer)


def test_a_malformed_header_line_is_a_400_not_the_end_of_the_headers(
    server: HttpServer,
) -> None:
    # The standard library's parser stopped at such a line (recording a defect nothing
    # read): the Content-Length after it was dropped and the body, a request of its
    # own, was served as the next request on the connection.
    hidden = b"GET /notes HTTP/1.1\r\nHost: x\r\n\r\n"
    for bad in (
        b"Garbage-without-colon",
        b"Transfer-Encoding : chunked",  # a space before the colon (RFC 9112 5.1)
        b"X A: a",
        b"X\x00A: a",
        b"From x",  # taken for an mbox "From " line, silently
        b" folded",  # obs-fold (RFC 9112 5.2)
    ):
        answer = _answer(
            _raw(
                server,
                b"POST /echo/x HTTP/1.1\r\nHost: x\r\nX-First: 1\r\n"
                + bad
                + b"\r\nContent-Length: %d\r\n\r\n" % len(hidden)
                + hidden,
            )
        )
        assert answer.startswith(b"HTTP/1.1 400 "), (bad, answer)
        assert answer.count(b"HTTP/1.1 ") == 1, (bad, answer)  # the body was not served
        assert "connection: close" in _head(answer), (bad, answer)


def test_a_bare_cr_or_a_nul_in_a_header_is_a_400(server: HttpServer) -> None:
    # "X-A: a\rContent-Length: N" was read as two headers, where a proxy that replaces a
    # bare CR with a space (RFC 9112 2.2) sees one and no body: the next request it
    # forwards on the connection (another client's) became this request's body.
    victim = b"GET /notes HTTP/1.1\r\nHost: x\r\n\r\n"
    for line in (
        b"X-A: a\rContent-Length: %d" % len(victim),
        b"X-A: a\r",
        b"X-A: a\x00b",  # RFC 9110 5.5
    ):
        answer = _answer(
            _raw(server, b"GET /notes HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n" + victim)
        )
        assert answer.startswith(b"HTTP/1.1 400 "), (line, answer)
        assert answer.count(b"HTTP/1.1 ") == 1, (line, answer)
        assert "connection: close" in _head(answer), (line, answer)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /notes HTTP/2.0", b" 505 "),
        (b"GET /notes HTTP/0.9", b" 505 "),
        (b"GET /notes HTTP/1.1x", b" 400 "),
        (b"GET /notes HTTP/01.1", b" 400 "),
        (b"GET /notes HTTP/1.10000000000000000000000000000", b" 400 "),
        (b"GET /notes", b" 400 "),  # HTTP/0.9: an answer with no status line or headers
        (b"GET /api/storage/x", b" 400 "),
    ],
)
def test_a_bad_or_missing_http_version_gets_a_status_line(
    server: HttpServer, line: bytes, status: bytes
) -> None:
    answer = _answer(_raw(server, line + b"\r\nHost: x\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1" + status), answer
    assert "connection: close" in _head(answer), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] in (
        "BadRequest",
        "HttpVersionNotSupported",
    ), answer


def test_the_standard_librarys_refusals_are_json_too(server: HttpServer) -> None:
    # http.server answered these two itself, with an HTML page, unlike every other
    # answer of the server (JSON with a code).
    for data, status, code in [
        (b"BREW /notes HTTP/1.1\r\nHost: x\r\n\r\n", b" 501 ", "NotImplemented"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b" 414 ", "UriTooLong"),
    ]:
        answer = _answer(_raw(server, data))
        assert answer.startswith(b"HTTP/1.1" + status), answer
        head = _head(answer)
        assert "connection: close" in head and "content-type: application/json" in head, answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == code, answer


def test_empty_lines_before_a_request_line_are_skipped(server: HttpServer) -> None:
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request
    # line (some clients send CRLF after a POST body); the connection was closed
    # without an answer.
    _two_oks(
        server,
        b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n"
        b"GET /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    answer = _answer(
        _raw(server, b"\r\n\n\r\nGET /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    # Not without end: past a few, the client is answered 400 and the connection closed.
    answer = _answer(_raw(server, b"\r\n" * 1000 + b"GET /notes HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer


def test_a_utf8_path_is_split_from_its_request_line_on_ascii_whitespace_only(
    server: HttpServer,
) -> None:
    # http.server split the Latin-1 reading of the request line with str.split(), which
    # also splits at \x85 and \xa0: "/echo/\xc3\x85" ("/echo/Å") lost its last byte and
    # was served as "/echo/%C3".
    for raw, path in ((b"/echo/\xc3\x85", "/echo/%C3%85"), (b"/echo/\xc2\xa0", "/echo/%C2%A0")):
        answer = _answer(
            _raw(server, b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["path"] == path, answer


def test_an_absolute_form_target_is_checked_as_host_and_scheme_are(server: HttpServer) -> None:
    # "GET http://user:pw@evil/all HTTP/1.1" became request.url as sent, past the Host
    # rule (host[:port]) and the scheme rule (X-Forwarded-Proto, else http).
    def seen(target: bytes, extra: bytes = b"") -> tuple[str, Any]:
        answer = _answer(
            _raw(
                server,
                b"GET "
                + target
                + b" HTTP/1.1\r\nHost: other.example\r\n"
                + extra
                + b"Connection: close\r\n\r\n",
            )
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        status = head.partition(b"\r\n")[0].decode()
        return status, json.loads(body).get("url") if status.endswith(" 200 OK") else None

    for bad in (
        b"http://user:pw@evil/echo/x",
        b"http://good\\@evil/echo/x",
        b"ftp://x/echo/x",
        b"http:///echo/x",
        b"http://x:99999999999/echo/x",
        b"javascript://x/echo/x",
    ):
        status, _ = seen(bad)
        assert status.startswith("HTTP/1.1 400 "), (bad, status)
    # RFC 9112 3.2.2: the target's authority is the host; the scheme is as for any request.
    assert seen(b"http://app.example:8/echo/x?q=1") == (
        "HTTP/1.1 200 OK",
        "http://app.example:8/echo/x?q=1",
    )
    assert seen(b"HTTPS://app.example/echo/x", b"X-Forwarded-Proto: https\r\n") == (
        "HTTP/1.1 200 OK",
        "https://app.example/echo/x",
    )
    assert seen(b"https://app.example/echo/x") == ("HTTP/1.1 200 OK", "http://app.example/echo/x")


def test_a_header_section_larger_than_hypers_limit_is_a_431(server: HttpServer) -> None:
    # Found by review: only each line (64 KiB) and the count (100) were capped, so one
    # head could carry 6.5 MB, and parsing it peaked at about 50 MB of memory: a few
    # dozen clients (the default cap is 64 connections) could exhaust the host's memory.
    # The whole section is now capped as Convex's server (hyper) caps it.
    line = b"X-Filler: " + b"a" * 8000 + b"\r\n"
    many = 417_792 // len(line) + 1  # each line and their count within the old limits
    answer = _answer(_raw(server, b"GET /notes HTTP/1.1\r\nHost: x\r\n" + line * many + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"HeaderTooLarge" in answer and b"417792 bytes" in answer, answer[-300:]
    assert "connection: close" in _head(answer)
    # A large header section within the limit is still served.
    answer = _answer(
        _raw(
            server,
            b"GET /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + line * (many - 2)
            + b"\r\n",
        )
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_chunked_body_is_decoded_as_convex_decodes_it(engine: Engine) -> None:
    # Found by review: serve_http answered every chunked body 411, where Convex's server
    # (hyper) and wsgi_app behind a decoding WSGI server take it; clients that stream a
    # body (requests or httpx with a generator, curl -T -, fetch with a stream) send one.
    url = engine.mutation(files.upload_url)
    with engine.serve_http("127.0.0.1", 0, max_upload_size=1000) as server:
        path = url[len(server.url) :] if url.startswith(server.url) else urlsplit(url).path
        path += "?" + urlsplit(url).query
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:  # an upload, then an HTTP action, on one kept-alive connection
            connection.request("POST", path, body=iter([b"hel", b"", b"lo"]))
            response = connection.getresponse()
            assert response.status == 200, response.read()
            storage_id = json.loads(response.read())["storageId"]
            connection.request(
                "POST", "/echo/x", body=iter([b"a" * 300, b"b"]), headers={"X-Tag": "t"}
            )
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["body"] == "a" * 300 + "b"
        finally:
            connection.close()
        assert engine.get_file(storage_id) == b"hello"
        post = b"POST /echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        after = b"GET /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        # Extensions and trailers are read and ignored; the next request is served.
        answer = _answer(_raw(server, post + b"3;name=v\r\nabc\r\n0\r\nX-T: 1\r\n\r\n" + after))
        assert answer.count(b"HTTP/1.1 200 ") == 2, answer
        assert json.loads(answer.split(b"\r\n\r\n")[1].partition(b"HTTP/1.1")[0])["body"] == "abc"
        # A body that is not chunked coding, or too long, is refused and the connection
        # closes: where the next request would start is unknown.
        for chunks, status in [
            (b"3\r\nabcX\r\n0\r\n\r\n", b" 400 "),  # no CRLF after the data
            (b"3\nabc\r\n0\r\n\r\n", b" 400 "),  # a bare LF ends the size line
            (b"x\r\nabc\r\n0\r\n\r\n", b" 400 "),  # not a hex size
            (b"-3\r\nabc\r\n0\r\n\r\n", b" 400 "),
            (b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n", b" 400 "),
            (b"3e9\r\n" + b"a" * 1001 + b"\r\n0\r\n\r\n", b" 413 "),  # past the cap
            (b"3\r\nab", b" 400 "),  # ends early
        ]:
            answer = _answer(_raw(server, post + chunks + after))
            assert answer.startswith(b"HTTP/1.1" + status), (chunks, answer)
            assert answer.count(b"HTTP/1.1 ") == 1, (chunks, answer)
            assert "connection: close" in _head(answer), (chunks, answer)
        # HTTP/1.0 has no chunked coding (RFC 9112 6.1): still refused, and closed.
        answer = _answer(_raw(server, post.replace(b"1.1", b"1.0", 1) + b"0\r\n\r\n" + after))
        assert answer.startswith(b"HTTP/1.1 411 ") and answer.count(b"HTTP/1.1 ") == 1, answer


def test_wsgi_app_mounted_in_a_real_wsgi_server_serves_files_and_actions(
    db_path: Path,
) -> None:
    # wsgi_app under wsgiref.simple_server on 127.0.0.1, mounted at /files as a
    # dispatcher mounts it (SCRIPT_NAME "/files", PATH_INFO the rest): file URLs, ranges,
    # HEAD, a deleted file, an upload, and an HTTP action's url and path.
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    def mounted(inner: Any) -> Any:
        def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ["PATH_INFO"]
            if path != "/files" and not path.startswith("/files/"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"outside the mount"]
            environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/files", path[len("/files") :]
            return inner(environ, start_response)

        return dispatch

    wsgi = make_server("127.0.0.1", 0, mounted(None), handler_class=Quiet)
    site = f"http://127.0.0.1:{wsgi.server_port}/files"
    with Engine.open(db_path, functions=app, durability="none", site_url=site) as engine:
        wsgi.set_app(mounted(engine.wsgi_app()))
        thread = threading.Thread(target=wsgi.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            data = bytes(range(256)) * (CHUNK_SIZE // 256 + 1)  # two chunks
            status, answer = upload(engine, data, "image/png")
            assert status == 200, answer
            url = engine.query(files.url, {"id": answer["storageId"]})
            assert url.startswith(site + "/api/storage/")
            status, headers, body = request(url)
            assert (status, body, headers["Content-Type"]) == (200, data, "image/png")
            start = CHUNK_SIZE - 3
            status, headers, body = request(url, headers={"Range": f"bytes={start}-{start + 5}"})
            assert (status, body) == (206, data[start : start + 6])
            assert headers["Content-Range"] == f"bytes {start}-{start + 5}/{len(data)}"
            status, headers, body = request(url, headers={"Range": f"bytes={len(data)}-"})
            assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
            status, headers, body = request(url, "HEAD")
            assert (status, body, headers["Content-Length"]) == (200, b"", str(len(data)))
            status, _, body = request(url[:-1] + ("0" if url[-1] != "0" else "1"))
            assert status == 404, body  # a signature that does not match
            # Without a Content-Length (wsgiref passes no CONTENT_LENGTH), an upload is
            # refused and an HTTP action's body is empty.
            upload_url = engine.mutation(files.upload_url)
            connection = http.client.HTTPConnection("127.0.0.1", wsgi.server_port, timeout=10)
            try:
                connection.putrequest(
                    "POST", urlsplit(upload_url).path + "?" + urlsplit(upload_url).query
                )
                connection.endheaders()
                response = connection.getresponse()
                assert (response.status, json.loads(response.read())["code"]) == (
                    411,
                    "LengthRequired",
                )
            finally:
                connection.close()
            status, _, body = request(f"{site}/echo/caf%C3%A9?q=a+b", "POST", b"hi")
            seen = json.loads(body)
            assert status == 200, body
            assert (seen["path"], seen["url"], seen["query"], seen["body"]) == (
                "/echo/caf%C3%A9",
                f"{site}/echo/caf%C3%A9?q=a+b",
                {"q": "a b"},
                "hi",
            )
            engine.mutation(files.delete_file, {"id": answer["storageId"], "fail": False})
            assert request(url)[0] == 404
            assert request(f"http://127.0.0.1:{wsgi.server_port}/elsewhere")[2] == (
                b"outside the mount"
            )
        finally:
            wsgi.shutdown()
            thread.join()
            wsgi.server_close()
        engine.check()
