"""The connections of a ``serve_http`` server: :class:`ConnectionServer`.

``http.server``'s threading server, one thread per connection, with what an embedded
server needs on top: a cap on the connections served at once (one more is answered
``503`` and closed, unless a kept-alive connection is idle: that one is closed to make
room, as nginx reuses idle keep-alive connections), and :meth:`~ConnectionServer.
close_connections`, which ends the idle ones at once and the busy ones once they have
answered. :mod:`engine.httpserver` puts its request handler on it.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["BUSY", "CLOSING", "ConnectionServer", "bytes_waiting", "refusal", "shut"]

#: The server's logger (``engine.httpserver``, the name the docs give): errors serving a
#: request that are not the client going away.
_log = logging.getLogger("engine.httpserver")
# Without it, a host that configured no logging would see the records on stderr (Python's
# last-resort handler): the server logs for the host's handlers, never prints.
_log.addHandler(logging.NullHandler())
#: Seconds a new connection waits for the slot of an idle one closed to make room.
_EVICTION_WAIT = 1.0
#: Seconds :meth:`ConnectionServer.close_connections` waits for the threads of the
#: connections it cut short.
_SHUTDOWN_WAIT = 1.0


def refusal(code: str, message: str, *, retry_after: int | None = None) -> bytes:
    """A whole ``503`` answer that closes the connection, written straight to a socket
    (with ``Retry-After``, in seconds, if given: clients that retry wait that long)."""
    body = json.dumps({"code": code, "message": message}).encode()
    retry = b"" if retry_after is None else b"Retry-After: %d\r\n" % retry_after
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Access-Control-Allow-Origin: *\r\nConnection: close\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (retry, len(body), body)
    )


BUSY = refusal("TooManyConnections", "Too many connections, retry later", retry_after=1)
CLOSING = refusal("ServerClosing", "The server is closing")


def shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)  # its thread's next read or write fails
    except OSError:
        pass


def bytes_waiting(connection: socket.socket) -> bool:
    """Whether ``connection`` has received bytes not read yet, without waiting.

    A peek with the socket made non-blocking for the call (``select()`` would refuse a
    file descriptor past 1023, which a host with many open files reaches). Cost: one
    ``recv`` system call and two ``settimeout``.
    """
    timeout = connection.gettimeout()
    connection.settimeout(0.0)
    try:
        return bool(connection.recv(1, socket.MSG_PEEK))
    except OSError:  # nothing yet (BlockingIOError), or reset: not a request waiting
        return False
    finally:
        connection.settimeout(timeout)


class ConnectionServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a cap on the connections served at once, which
    tracks them so that :meth:`close_connections` can end the kept-alive ones.

    A connection waiting for a request to start arriving (its next on a kept-alive
    connection, or its first: browsers open connections ahead of need) is *idle*: when
    every slot is taken, a new connection closes the longest idle one and takes its slot
    (as nginx reuses idle keep-alive connections), so idle clients never lock others
    out, and closing the server ends idle connections at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        # The listen backlog (socketserver's default is 5: a burst of connections got
        # resets before the accept loop could answer them, even a 503).
        self.request_queue_size = max(128, max_connections)
        # An IPv6 literal ("::1", "::") needs an AF_INET6 socket (the class's is AF_INET).
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._connections: set[socket.socket] = set()
        self._idle: dict[socket.socket, None] = {}  # oldest first
        self._evicted: set[socket.socket] = set()
        self._changed = threading.Condition()
        self.closing = False

    def mark_idle(self, connection: socket.socket) -> bool:
        """``connection`` now waits for its next request; False if it should close."""
        with self._changed:
            if self.closing:
                return False
            self._idle[connection] = None
            return True

    def mark_busy(self, connection: socket.socket) -> bool:
        """``connection`` has a request to serve; False if it was closed to make room."""
        with self._changed:
            self._idle.pop(connection, None)
            if connection in self._evicted:
                self._evicted.discard(connection)
                return False
            return True

    def _evict_idle(self) -> bool:
        """Shut down the longest idle kept-alive connection; False if none is idle."""
        with self._changed:
            if not self._idle:
                return False
            connection = next(iter(self._idle))
            del self._idle[connection]
            self._evicted.add(connection)
            shut(connection)
            return True

    def _take_slot(self) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        while self._evict_idle():
            if self._slots.acquire(timeout=_EVICTION_WAIT):
                return True
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.closing or not self._take_slot():
            try:  # a fresh socket's send buffer takes this without blocking
                request.sendall(CLOSING if self.closing else BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._changed:
            self._connections.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._changed:
            self._connections.discard(request)
            self._idle.pop(request, None)
            self._evicted.discard(request)
            self._changed.notify_all()
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request failed: silent when the client went away (it aborted, or stalled past
        the timeout, or the server is closing), else logged to ``engine.httpserver``,
        never printed to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError) or (
            self.closing and isinstance(error, OSError)
        ):
            return
        _log.error("Error serving a request from %s", client_address, exc_info=True)

    def close_connections(self, wait: float) -> None:
        """End every open connection: the idle kept-alive ones at once, the others once
        they have answered the request in hand (``Connection: close``), or after
        ``wait`` seconds, whichever comes first; then wait a moment for their threads."""
        with self._changed:
            self.closing = True
            for connection in list(self._idle):
                shut(connection)
            self._changed.wait_for(lambda: not self._connections, timeout=wait)
            for connection in list(self._connections):  # still busy after the grace period
                shut(connection)
            self._changed.wait_for(lambda: not self._connections, timeout=_SHUTDOWN_WAIT)
