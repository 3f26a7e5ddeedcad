"""``Engine``: the host's handle on a database folder.

Example::

    from engine import Engine

    with Engine.open("./data", schema=schema, functions=myapp.functions) as db:
        db.mutation("messages:send", {"channel": "general", "body": "hi"}, auth=token)
        page = db.query("messages:list", {"channel": "general",
                                          "paginationOpts": {"numItems": 20, "cursor": None}})
        db.run(lambda ctx: ctx.db.insert("users", {"name": "Ada"}))

Several ``Engine`` objects, threads and processes may use one folder at once;
mutations stay serializable across all of them.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from types import ModuleType
from typing import Any, TypeVar

from . import files, httpactions
from .backupfile import PARTIAL_NAME, BackupInProgress
from .contexts import MutationCtx, taken
from .crons import Crons
from .cronsync import defined_crons, sync_crons
from .crontables import check_crons
from .database import Database
from .engineargs import (
    advance_in_ms,
    backup_problem,
    backup_refused,
    check_auth_config,
    check_crons_arg,
    check_env,
    check_finish_args,
    check_router_arg,
    check_schema_arg,
    check_serve_args,
    check_site_url,
    check_upload_size,
)
from .errors import EngineError, StorageError, closed_error
from .executor import Executor
from .files import read_file, store_file_at
from .folders import missing_folders
from .functions import PLAIN_RESULTS, Registry, Runtime, refuse_awaitable
from .httpbodies import DEFAULT_MAX_UPLOAD_SIZE
from .httphandling import handle
from .httpmessages import (
    _TOKEN,
    Headers,
    HeadersInit,
    HttpRequest,
    HttpResponse,
    _utf8,
    escape_raw_path,
    normalize_path,
)
from .httpserver import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, HttpServer
from .integrity import check as check_integrity
from .router import HttpRouter
from .scheduler import check_jobs
from .storage import Durability, open_storage
from .subscriptions import Subscription, SubscriptionSet
from .wsgi import WsgiApp

__all__ = ["Engine"]

T = TypeVar("T")

_DATABASES: dict[str, Database] = {}
_DATABASES_LOCK = threading.Lock()
#: Every open handle of this process (to refuse their use in a fork child).
_HANDLES: weakref.WeakSet[Engine] = weakref.WeakSet()


class Engine:
    """An open database with its schema, functions and auth configuration.

    Use :meth:`open`; close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, db: Database, runtime: Runtime, executor: Executor | None = None) -> None:
        self._db = db
        self._runtime = runtime
        self._executor = executor
        self._closed = False
        #: Makes close()'s check and set of ``_closed`` one step (two threads closing this
        #: handle at once would both release the folder, closing it under other handles).
        self._close_lock = threading.Lock()
        #: The process that opened this handle, when this one is its fork child.
        self._forked_from: int | None = None
        self._servers: list[HttpServer] = []
        _HANDLES.add(self)

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        schema: Any = None,
        functions: ModuleType | None = None,
        auth: Any = None,
        durability: Durability = "full",
        env: Mapping[str, str] | None = None,
        site_url: str | None = None,
        scheduler: bool = True,
        http: HttpRouter | None = None,
        crons: Crons | None = None,
    ) -> Engine:
        """Open (creating if needed) the database in folder ``path``.

        ``schema``: a ``define_schema(...)`` result, or None for schemaless
        tables; on a changed schema new indexes are backfilled, dropped ones
        removed, and with schema validation on, existing documents checked
        first (a mismatch refuses to open and changes nothing).
        ``functions``: the package whose modules define the functions.
        ``auth``: an identity-provider configuration (``auth.AuthConfig``).
        ``durability``: ``"full"`` (every acknowledged mutation survives power
        loss), ``"normal"`` (a system crash may lose the last commits) or
        ``"none"`` (nothing synced: for tests and bulk loads).
        ``env``: variables functions read as ``ctx.env`` (read-only): names and values
        are strings, as Convex's environment variables (anything else is refused).
        ``site_url``: the origin of file URLs (``ctx.storage.get_url``,
        ``generate_upload_url``), e.g. ``"https://files.example.com"`` where the
        host serves them; default: the server of :meth:`serve_http` while one
        runs, else ``http://127.0.0.1:3210`` (a self-hosted Convex's origin).
        ``scheduler``: run scheduled functions on a background thread as they
        come due (the default); False runs them only when
        :meth:`finish_scheduled_functions` is called (deterministic tests).
        ``http``: the :class:`HttpRouter` of the HTTP actions, for an app that does not
        keep it in its functions package (there it is the attribute ``http`` of the
        module ``http``, as Convex's ``convex/http.ts``); giving both is refused.
        ``crons``: the :class:`Crons` (``cron_jobs()``) to run, for an app that does not
        keep them in its functions package (there they are the module ``crons``, as
        Convex's ``convex/crons.ts``); giving both is refused. With functions, the
        stored crons are made to match (new ones added, changed ones updated, the rest
        deleted): see :mod:`engine.crons`.

        Raises :class:`StorageError` when the folder cannot be opened or holds only an
        unfinished backup (``data.mdb.partial``: see :meth:`backup`),
        :class:`FormatError` for an unknown on-disk format or an LMDB folder
        convexlite did not write, :class:`CorruptionError` for a damaged ``meta``,
        :class:`SchemaValidationError` when existing data breaks the schema, and
        :class:`EngineError` for a bad ``env``, ``site_url``, ``http`` or
        ``durability``, or a durability mode that clashes with another open of the
        folder (another process's, or a handle of this one).
        """
        variables = check_env(env)  # before anything opens
        if not isinstance(scheduler, bool):  # "false" from an env var would be true
            raise EngineError(
                f"Engine.open(scheduler=...) takes True or False, got "
                f"{type(scheduler).__name__} {scheduler!r}: scheduler=False leaves scheduled "
                "functions to finish_scheduled_functions()."
            )
        check_schema_arg(schema)
        check_auth_config(auth)
        registry = Registry.from_package(functions)
        if http is not None:
            check_router_arg(http, registry)
            registry.http = http
        if crons is not None:
            check_crons_arg(crons, registry)
            registry.crons = crons
        origin = None if site_url is None else check_site_url(site_url)
        storage = open_storage(os.fspath(path), durability=durability)
        try:
            with _DATABASES_LOCK:
                db = _DATABASES.get(storage.path)
                if db is None:
                    db = Database(storage)
                    _DATABASES[storage.path] = db
            runtime = Runtime(db, registry, auth, variables)
            runtime.site_url = origin
            # The crons' targets and arguments are checked before the schema change
            # commits too: an open that raises applies none of it (a Convex deploy is all
            # or nothing).
            specs = defined_crons(registry.crons, runtime) if registry.by_name else None
            from .migration import retokenize

            retokenize(db)  # search entries of an older tokenizer: rebuilt below
            if schema is not None:
                from .migration import apply_schema

                apply_schema(db, schema)
            else:  # an index a crash left half built is finished by any next open
                from .migration import finish_backfills

                finish_backfills(db)
            db.cursor_secret()  # made now, never inside a running transaction
            executor = None
            if specs is not None:
                # The package's crons are the stored ones (as a Convex deploy makes them).
                sync_crons(runtime, specs)
                executor = Executor(runtime)
                executor.start(background=scheduler)
        except BaseException:
            _release(storage)
            raise
        return cls(db, runtime, executor)

    def close(self) -> None:
        """Close this handle; the folder closes when its last handle does. Idempotent.

        The scheduler's worker stops first (the job in hand finishes; running
        scheduled actions get ``engine.executor.Executor.shutdown_timeout`` seconds). The last
        close ends the subscriptions, then waits for the calls other threads
        are running to finish; calls made after it raise ``EngineError``. Interrupted
        (Ctrl-C) while it waits for scheduled actions, it still cancels them (recorded
        failed with the transient error), stops their event loop, closes the handle's HTTP
        servers and releases the folder, then re-raises.

        Raises :class:`EngineError` when called from inside a running query or
        mutation, or from a scheduled action of this engine (it would wait for itself).
        """
        if self._closed:  # also every handle a fork child inherited: the lock is unused
            return
        with self._close_lock:
            if self._closed:
                return
            if self._db.in_function():
                raise EngineError(
                    "Engine.close() was called from inside a running query or mutation, "
                    "which would wait for itself to finish: close the engine after the "
                    "call returns."
                )
            if self._executor is not None and self._executor.on_action_loop():
                raise EngineError(
                    "Engine.close() was called from inside a scheduled action of this "
                    "engine, and close() waits for running scheduled actions to end (this "
                    "one included), then cancels them: close the engine from the host "
                    "instead, e.g. once finish_scheduled_functions() returns."
                )
            self._closed = True
        try:
            if self._executor is not None:
                self._executor.stop()
        finally:  # also after a Ctrl-C while it waited for actions: a second close() is a no-op
            with self._runtime.serving_lock:
                servers, self._servers = self._servers, []
            for server in servers:
                server.close()
            _release(self._db.storage)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Runtime:
        if self._closed:
            raise self._closed_error()
        return self._runtime

    def _refuse_in_function(self, call: str) -> None:
        """Raise :class:`EngineError` if this thread runs a query or mutation (see
        :meth:`Database.refuse_reentry`)."""
        self._db.refuse_reentry(f"Engine.{call}()")

    def _closed_error(self) -> EngineError:
        if self._forked_from is None:
            return closed_error()
        return _forked_error(self._forked_from)

    @property
    def path(self) -> str:
        """The real path of the database folder."""
        return self._db.storage.path

    # -- calling functions -------------------------------------------------------

    def query(self, ref: Any, args: dict[str, Any] | None = None, *, auth: Any = None) -> Any:
        """Run a public query and return its result (blocking).

        ``ref`` is a decorated function or its name (``"messages:list"``);
        ``auth`` a raw token, a verified identity, or None.
        """
        if self._closed:  # _live(), inline: this is the path of every query call
            raise self._closed_error()
        return self._runtime.query(ref, args, auth)

    def mutation(self, ref: Any, args: dict[str, Any] | None = None, *, auth: Any = None) -> Any:
        """Run a public mutation; returns once it is committed (durably in ``full`` mode).

        Retries on conflict; raises :class:`OptimisticConcurrencyControlFailure`
        after Convex's budget of retries.
        """
        result, ts = self._live().call_with_ts(ref, args, auth, kind="mutation")
        self._db.wait_for_subscriptions(ts)
        return result

    def action(self, ref: Any, args: dict[str, Any] | None = None, *, auth: Any = None) -> Any:
        """Run a public action to completion (blocking; from async code use :meth:`aaction`).

        Returns (or raises) once this process's subscriptions reflect what the
        action's mutations committed, as :meth:`mutation` does. Raises
        :class:`EngineError` from a thread running an event loop, or from inside a
        running query or mutation.
        """
        runtime = self._live()
        self._refuse_in_function("action")
        _refuse_in_event_loop(
            "Engine.action() blocks, and this thread runs an event loop: "
            "use `await engine.aaction(...)` instead."
        )
        identity = runtime.identity(auth)
        try:
            return asyncio.run(runtime.acall(ref, args, identity, kind="action"))
        finally:  # what it committed shows in subscriptions, as after mutation()
            self._db.catch_up_subscriptions()

    def run(self, fn: Callable[[MutationCtx], T]) -> T:
        """Run ``fn(ctx)`` as an admin mutation (like convex-test's ``t.run``).

        ``ctx`` is a :class:`MutationCtx` with no identity; ``fn`` may call
        internal functions through ``ctx.run_query``/``ctx.run_mutation``. The
        transaction commits when ``fn`` returns and is retried on conflict.

        Example::

            new_id = engine.run(lambda ctx: ctx.db.insert("tasks", {"text": "hi"}))
        """
        runtime = self._live()

        def body(txn: Any) -> T:
            ctx = MutationCtx(
                runtime,
                txn,
                None,
                time.time() * 1000.0,
                None,
                runtime.env,
            )
            result = fn(ctx)
            if type(result) not in PLAIN_RESULTS:
                refuse_awaitable("The function given to Engine.run", result)
            return result

        result, ts = self._db.run(body, writable=True, source="Engine.run")
        self._db.wait_for_subscriptions(ts)
        return result

    def subscribe(
        self,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        auth: Any = None,
        callback: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Subscription:
        """Follow a public query: its value now, and again after each commit that matters.

        Returns a :class:`Subscription` (``.value``, ``for``, ``async for``,
        ``close()``, context manager). ``callback(value)`` runs on the
        subscriptions' callback thread with the first value and after each change;
        ``on_error(error)`` when a re-run raises. Cost per commit: proportional to the
        subscriptions whose read set the commit touched.

        With ``auth=token`` the subscription ends when the token expires, as a
        Convex session does: ``on_error`` gets the provider's error
        (``auth.TokenExpired``), and ``.value`` and iteration raise it from then
        on; subscribe again with a fresh token. An already verified identity
        never expires.

        It lives until closed, or until the engine closes; one with neither
        ``callback`` nor ``on_error`` also ends once nothing refers to it (its
        handle was dropped: nothing could see its values).
        """
        runtime = self._live()
        self._refuse_in_function("subscribe")
        identity = runtime.identity(auth)
        return self._db.subscriptions.subscribe(
            runtime,
            ref,
            args,
            identity,
            callback=callback,
            on_error=on_error,
            expiry=runtime.token_expiry(auth),
        )

    async def asubscribe(
        self,
        ref: Any,
        args: dict[str, Any] | None = None,
        *,
        auth: Any = None,
        callback: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Subscription:
        """:meth:`subscribe` for asyncio hosts: the first run (which :meth:`subscribe`
        waits for) runs on a worker thread, not on the event loop. Follow it with
        ``async for``. Cancelled meanwhile, it closes the subscription it made.

        Example::

            with await engine.asubscribe("messages:list", {"channel": "general"}) as sub:
                async for messages in sub:
                    render(messages)
        """
        self._refuse_in_function("asubscribe")  # here: the call runs on another thread
        made = functools.partial(
            self.subscribe, ref, args, auth=auth, callback=callback, on_error=on_error
        )
        return await _closed_if_cancelled(made)

    async def asubscribe_set(
        self, queries: dict[str, tuple[Any, dict[str, Any] | None]], *, auth: Any = None
    ) -> SubscriptionSet:
        """:meth:`subscribe_set` for asyncio hosts, as :meth:`asubscribe`."""
        self._refuse_in_function("asubscribe_set")
        return await _closed_if_cancelled(functools.partial(self.subscribe_set, queries, auth=auth))

    def aquery(
        self, ref: Any, args: dict[str, Any] | None = None, *, auth: Any = None
    ) -> Coroutine[Any, Any, Any]:
        """:meth:`query` for asyncio hosts (await it): runs on a worker thread.

        The arguments are taken when the call is made, as a Convex client serializes
        them then: changing the dict before the call is awaited, or while it runs, does
        not reach the query (the same for :meth:`amutation` and :meth:`aaction`).
        """
        return self._aquery(ref, taken(args), auth)

    async def _aquery(self, ref: Any, args: Any, auth: Any) -> Any:
        self._refuse_in_function("aquery")  # here: the call runs on another thread
        return await asyncio.to_thread(self.query, ref, args, auth=auth)

    def amutation(
        self, ref: Any, args: dict[str, Any] | None = None, *, auth: Any = None
    ) -> Coroutine[Any, Any, Any]:
        """:meth:`mutation` for asyncio hosts (await it): the commit never blocks the
        event loop. The arguments are taken when the call is made (see :meth:`aquery`)."""
        return self._amutation(ref, taken(args), auth)

    async def _amutation(self, ref: Any, args: Any, auth: Any) -> Any:
        self._refuse_in_function("amutation")  # here: the call runs on another thread
        return await asyncio.to_thread(self.mutation, ref, args, auth=auth)

    def aaction(
        self, ref: Any, args: dict[str, Any] | None = None, *, auth: Any = None
    ) -> Coroutine[Any, Any, Any]:
        """:meth:`action` for asyncio hosts (await it): runs on the caller's event loop.
        The arguments are taken when the call is made (see :meth:`aquery`)."""
        return self._aaction(ref, taken(args), auth)

    async def _aaction(self, ref: Any, args: Any, auth: Any) -> Any:
        runtime = self._live()
        self._refuse_in_function("aaction")
        identity = await asyncio.to_thread(runtime.identity, auth)
        try:
            return await runtime.acall(ref, args, identity, kind="action")
        finally:
            if self._db.subscriptions_active():
                await asyncio.to_thread(self._db.catch_up_subscriptions)

    async def arun(self, fn: Callable[[MutationCtx], T]) -> T:
        """:meth:`run` for asyncio hosts."""
        self._refuse_in_function("arun")  # here: the call runs on another thread
        return await asyncio.to_thread(self.run, fn)

    def subscribe_set(
        self, queries: dict[str, tuple[Any, dict[str, Any] | None]], *, auth: Any = None
    ) -> SubscriptionSet:
        """Follow several public queries together: ``{name: (ref, args)}``.

        The returned :class:`SubscriptionSet` always shows every query's result
        at one commit timestamp (Convex's consistent query set). Refused
        (:class:`EngineError`) inside a running query or mutation, as :meth:`subscribe`.
        """
        self._live()
        self._refuse_in_function("subscribe_set")  # also for an empty set
        if not isinstance(queries, Mapping):
            raise EngineError(
                f"subscribe_set takes a dict {{name: (ref, args)}}, got {type(queries).__name__}"
            )
        for name, entry in queries.items():
            # Unpacked as is, ("notes:list",) and "notes:list" raised bare "not enough /
            # too many values to unpack", and a two-letter string was (ref, args).
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise EngineError(
                    f"subscribe_set: the entry {name!r} must be a pair (ref, args), got "
                    f"{entry!r}; write ({entry!r}, {{}}) for a query without arguments"
                    if isinstance(entry, str)
                    else f"subscribe_set: the entry {name!r} must be a pair (ref, args), "
                    f"got {entry!r}"
                )
        members: dict[str, Subscription] = {}
        try:
            for name, (ref, args) in queries.items():
                members[name] = self.subscribe(ref, args, auth=auth)
        except BaseException:
            for member in members.values():  # the caller gets no handle to close them
                member.close()
            raise
        return SubscriptionSet(self._db.subscriptions, members)

    # -- files -------------------------------------------------------------------------

    def store_file(
        self,
        data: bytes | bytearray | memoryview,
        content_type: str | None = None,
        *,
        sha256: str | None = None,
    ) -> str:
        """Store ``data`` as a new file from the host; returns its storage id.

        What an action's ``await ctx.storage.store(...)`` does, for hosts that receive
        files themselves (a form post to their own web app, a CLI import, test
        fixtures, as convex-test's ``t.run`` offers ``storage.store``). ``sha256``
        (hex or base64), if given, must match. Returns once the subscriptions of this
        process show the file, as :meth:`mutation` does. Cost: a SHA-256 pass and one
        commit.

        Raises :class:`ValidationError` when ``data`` is not bytes, ``content_type`` is
        not visible ASCII and spaces, or ``sha256`` does not match; :class:`EngineError`
        from inside a running query or mutation.

        Example::

            storage_id = engine.store_file(open("logo.png", "rb").read(), "image/png")
            engine.mutation("profiles:set_logo", {"logo": storage_id})
        """
        runtime = self._live()
        # Read-your-writes, as Engine.mutation and Engine.run: subscriptions of this
        # process show the file when this returns.
        storage_id, ts = store_file_at(runtime.db, data, content_type, sha256)
        self._db.wait_for_subscriptions(ts)
        return storage_id

    def get_file(self, storage_id: str) -> bytes | None:
        """The bytes of a stored file, or None if it does not exist (one snapshot).

        Raises :class:`InvalidId` for an id that is malformed or of another table, and
        :class:`EngineError` when called from inside a running query or mutation.
        Cost: one lookup and a read of every chunk.
        """
        runtime = self._live()
        self._refuse_in_function("get_file")
        found = read_file(runtime.db, storage_id)
        return None if found is None else found[1]

    async def astore_file(
        self,
        data: bytes | bytearray | memoryview,
        content_type: str | None = None,
        *,
        sha256: str | None = None,
    ) -> str:
        """:meth:`store_file` for asyncio hosts: hashing and the commit run on a worker thread."""
        self._refuse_in_function("astore_file")  # here: the call runs on another thread
        return await asyncio.to_thread(self.store_file, data, content_type, sha256=sha256)

    async def aget_file(self, storage_id: str) -> bytes | None:
        """:meth:`get_file` for asyncio hosts."""
        self._refuse_in_function("aget_file")  # here: the call runs on another thread
        return await asyncio.to_thread(self.get_file, storage_id)

    # -- serving files -------------------------------------------------------------

    def serve_http(
        self,
        host: str = "127.0.0.1",
        port: int = 3210,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE,
    ) -> HttpServer:
        """Serve file URLs and HTTP actions on a background thread; returns the running server.

        Answers ``GET /api/storage/<id>-<signature>`` (downloads) and
        ``POST /api/storage/upload?token=...`` (uploads), as Convex does (see
        :mod:`engine.httpstorage`), and every other path with the HTTP actions of
        the engine's router, if it has one (see :mod:`engine.router`). Unless ``Engine.open(site_url=...)`` was
        given, file and upload URLs made while it runs use its origin. ``port=0``
        picks a free port (``server.url`` tells which). It stops on
        ``server.close()`` or when this engine closes.

        ``timeout``: seconds a socket read or write may wait (default 120, Convex's
        request timeout): a stalled client is disconnected. ``max_connections``:
        connections served at once, one thread each (default 64); more get a 503.
        ``max_upload_size``: bytes an upload or an HTTP action's request body may have
        (default 256 MiB, held in memory); a larger ``Content-Length`` gets a 413.

        Example::

            with engine.serve_http("127.0.0.1", 0) as server:
                url = engine.mutation("files:upload_url")   # starts with server.url

        Raises :class:`EngineError` for a bad argument (``port=-1``, ``port="80"``, ...)
        and ``OSError`` when the address cannot be bound.
        """
        runtime = self._live()
        check_serve_args(host, port, timeout, max_connections, max_upload_size)
        server = HttpServer(
            runtime,
            host,
            port,
            timeout=timeout,
            max_connections=max_connections,
            max_upload_size=max_upload_size,
        )
        with runtime.serving_lock:
            closed = self._closed  # close() sets it before it takes the servers to close
            first = False
            if not closed:
                # Closed servers are dropped: a host that starts and stops servers
                # would otherwise keep every one it ever ran.
                self._servers[:] = [s for s in self._servers if not s.closed]
                self._servers.append(server)
                runtime.serving.append(server.url)
                first = runtime.served_url is None
                if first:
                    runtime.served_url = server.url
        if closed:  # the engine closed while the server started: it must not outlive it
            server.close()
            raise self._closed_error()
        if first and runtime.site_url is None:  # file URLs now start with its origin
            runtime.db.subscriptions.rerun_all()
        return server

    def wsgi_app(self, *, max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE) -> WsgiApp:
        """The endpoints of :meth:`serve_http` (files and HTTP actions) as a WSGI
        application, to mount in the host's own web server (pass the mount point's URL
        as ``site_url``).

        Example::

            engine = Engine.open("./data", functions=app, site_url="https://example.com/files")
            application = engine.wsgi_app()     # serve it under /files

        ``max_upload_size`` as for :meth:`serve_http` (not a whole number of bytes >= 0:
        :class:`EngineError`). Cost: as :meth:`serve_http`, per request; the host's
        server owns the threads (and their timeouts).
        """
        runtime = self._live()
        check_upload_size("wsgi_app", max_upload_size)
        return WsgiApp(runtime, max_upload_size)

    # -- HTTP actions ----------------------------------------------------------------

    def fetch(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | bytearray | memoryview | str | None = None,
        auth: Any = None,
    ) -> HttpResponse:
        """Send an HTTP request to this engine without a socket (convex-test's ``t.fetch``).

        ``path`` is the path and query (``"/notes?tag=a"``), or a whole URL under this
        engine's own origin (the upload URLs it hands out); the request goes where
        :meth:`serve_http` would send it: an HTTP action's route, or the storage
        endpoints under ``/api/storage/``. ``auth``: a raw token (sent as
        ``Authorization: Bearer <token>``) or an already verified identity (trusted as
        is). Returns the response as a client receives it: ``Content-Length`` set, no
        body for ``HEAD``; a handler's error is a 500 here too (see
        :mod:`engine.httpactions`). Blocking; from async code use :meth:`afetch`.

        Example::

            response = engine.fetch("/notes", method="POST", body='{"text": "hi"}',
                                    headers={"Content-Type": "application/json"})
            assert response.status == 201, response.text()

        Returns once this process's subscriptions show what the request committed (the
        handler's ``ctx.run_mutation`` calls, an upload's file), as :meth:`action` does.
        Cost: as the handler's. Bodies are capped at Convex's 20 MiB both ways, as
        behind :meth:`serve_http` (a 413; a redacted 500); uploads to the storage
        endpoints are not capped (the body is already in memory).
        """
        self._live()
        self._refuse_in_function("fetch")
        _refuse_in_event_loop(
            "Engine.fetch() blocks, and this thread runs an event loop: "
            "use `await engine.afetch(...)` instead."
        )
        return asyncio.run(self.afetch(path, method=method, headers=headers, body=body, auth=auth))

    async def afetch(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | bytearray | memoryview | str | None = None,
        auth: Any = None,
    ) -> HttpResponse:
        """:meth:`fetch` for asyncio hosts: the HTTP action runs on the caller's event loop."""
        runtime = self._live()
        self._refuse_in_function("afetch")
        if isinstance(path, str) and path.startswith(("http://", "https://")):
            # A URL this engine handed out (ctx.storage.get_url, generate_upload_url):
            # sent to its path, as a client at that origin would.
            site = files.origin(runtime)
            if path != site and not path.startswith((site + "/", site + "?")):
                raise EngineError(
                    f"fetch() sends requests to this engine: the URL {path!r} is not under "
                    f"its origin {site!r} (site_url, or the running serve_http); pass the "
                    "path instead ('/notes')"
                )
            path = "/" + path[len(site) :].lstrip("/")
        if not isinstance(path, str) or not path.startswith("/"):
            raise EngineError(f"fetch(path) takes a path starting with '/', got {path!r}")
        if not isinstance(method, str) or not method or not _TOKEN.issuperset(method):
            raise EngineError(
                f"fetch(method=...) must be an HTTP method such as 'GET' or 'POST' (a "
                f"token: letters, digits, !#$%&'*+-.^_`|~), got {method!r}"
            )
        method = method.upper()
        given = Headers(headers)
        identity = httpactions.FROM_HEADER
        if isinstance(auth, str):
            if "authorization" not in given:
                given = Headers([*given.pairs(), ("Authorization", f"Bearer {auth}")])
        elif auth is not None:
            identity = runtime.identity(auth)  # refuses raw credentials and plain data
        if body is None:
            data = b""
        elif isinstance(body, str):
            data = _utf8(body)  # a lone surrogate as U+FFFD, as Fetch sends a str body
        else:
            try:  # bytes, bytearray, memoryview, array.array: any buffer
                data = bytes(memoryview(body))
            except TypeError:
                # bytes(...) raised an obscure TypeError for a dict, and turned an int n
                # into n zero bytes.
                hint = " (json.dumps(...) it first)" if isinstance(body, (dict, list)) else ""
                raise EngineError(
                    f"fetch(body=...) takes bytes (any buffer) or str, got "
                    f"{type(body).__name__}{hint}"
                ) from None
        if body is not None and "content-length" not in given:
            given = Headers([*given.pairs(), ("Content-Length", str(len(data)))])
        try:
            return await self._fetched(runtime, path, method, given, data, identity)
        finally:
            # Read-your-writes, as after action(): the handler's ctx.run_mutation calls
            # (or an upload's commit) are shown by this process's subscriptions.
            if self._db.subscriptions_active():
                await asyncio.to_thread(self._db.catch_up_subscriptions)

    async def _fetched(
        self,
        runtime: Runtime,
        path: str,
        method: str,
        given: Headers,
        data: bytes,
        identity: Any,
    ) -> HttpResponse:
        """:meth:`afetch` once its arguments are checked: route and answer the request."""
        router = runtime.registry.http
        # Escaped as a client sends it (convex-test's fetch goes through `new URL`) and as
        # serve_http escapes a raw request line: a test then reaches exactly the routes
        # a real client reaches.
        try:
            raw = path.partition("#")[0].encode()  # a fragment is never sent
        except UnicodeEncodeError as error:
            raise EngineError(
                f"fetch(path) {path!r} has a lone surrogate ({error.object[error.start]!r}), "
                "which no URL can carry: decode the path's bytes properly, or percent-encode "
                "them"
            ) from None
        path = escape_raw_path(raw)
        route_path = normalize_path(path.partition("?")[0])
        if router is None or route_path == "/api/storage" or route_path.startswith("/api/storage/"):
            return await asyncio.to_thread(_fetch_handled, runtime, method, path, given, data)
        request = HttpRequest(
            method,
            files.origin(runtime) + path,
            headers=given,
            body=b"" if method in ("GET", "HEAD", "OPTIONS") else data,
            path=route_path,  # the route, whatever mount point site_url names
        )
        response = await httpactions.respond(runtime, router, request, identity=identity)
        return httpactions.finish(response, head=method == "HEAD")

    # -- scheduled functions ---------------------------------------------------------

    def finish_scheduled_functions(
        self, *, timeout: float = 30.0, advance: float | timedelta = 0.0
    ) -> int:
        """Run every scheduled function that is due, now, on this thread; returns how many.

        Jobs those functions schedule run too if they are due (delay 0); the
        call returns when no job is due or running anywhere (as convex-test's
        ``t.finishInProgressScheduledFunctions()``). ``advance`` (seconds or a
        ``timedelta``) also runs the jobs due that much later, as if the clock had moved
        on (convex-test's ``vi.advanceTimersByTime`` then
        ``finishInProgressScheduledFunctions``): a mutation job sees ``ctx.now`` at its
        ``scheduledTime``. The window starts at the real clock on each call; it does
        not add up across calls. Works with or without the
        background worker (``Engine.open(..., scheduler=False)`` for tests). As
        :meth:`mutation`, it returns once this process's subscriptions reflect the
        jobs' commits (also those of jobs it waited for while other executors ran them).
        Cost: one index scan per pass plus the jobs' own transactions.

        Example::

            engine.mutation("messages:send_later", {"body": "hi", "delay": 0})
            engine.finish_scheduled_functions()

        Raises :class:`SchedulerError` when jobs still run after ``timeout``
        seconds (a number >= 0) or for an ``advance`` that is not a finite, non-negative
        number, :class:`EngineError` for an engine without functions, from a thread
        running an event loop, from inside a running query or mutation, or from a
        scheduled action of this engine (it would wait for itself).
        """
        self._refuse_in_function("finish_scheduled_functions")
        check_finish_args("finish_scheduled_functions", timeout, 1)
        advance_ms = advance_in_ms(advance)
        ran = self._scheduled_executor().finish(
            all_pending=False, timeout=timeout, max_iterations=1_000_000, advance_ms=advance_ms
        )
        # Also when it ran nothing itself: it may have waited for jobs other executors ran.
        self._db.catch_up_subscriptions()
        return ran

    def finish_all_scheduled_functions(
        self, *, max_iterations: int = 100, timeout: float = 30.0
    ) -> int:
        """Run every pending scheduled function, due or not, until none is left.

        Like convex-test's ``t.finishAllScheduledFunctions(vi.runAllTimers)``:
        future jobs run as if their time had come (their ``scheduledTime`` is
        kept, and a mutation job's ``ctx.now`` is that time). Raises :class:`SchedulerError`
        after ``max_iterations`` (an int >= 1) passes that each ran something (a job that
        reschedules itself forever), or when jobs still run after ``timeout`` seconds (a
        number >= 0); :class:`EngineError` as
        :meth:`finish_scheduled_functions` does.
        """
        self._refuse_in_function("finish_all_scheduled_functions")
        check_finish_args("finish_all_scheduled_functions", timeout, max_iterations)
        ran = self._scheduled_executor().finish(
            all_pending=True, timeout=timeout, max_iterations=max_iterations
        )
        self._db.catch_up_subscriptions()  # also for the jobs it waited for (see above)
        return ran

    def _scheduled_executor(self) -> Executor:
        self._live()
        _refuse_in_event_loop(
            "finish_scheduled_functions() blocks and runs scheduled actions with their own "
            "event loop, and this thread runs one: call it from a worker thread, e.g. "
            "`await asyncio.to_thread(engine.finish_scheduled_functions)`."
        )
        if self._executor is None:
            raise EngineError(
                "This engine has no functions, so it runs no scheduled functions: open it "
                "with Engine.open(path, functions=myapp.functions)."
            )
        if self._executor.on_action_loop():
            raise EngineError(
                "finish_(all_)scheduled_functions() was called from inside a scheduled "
                "action of this engine, and it waits until no job is in progress, this "
                "action's own included: it would wait out its timeout. Call it from the "
                "host instead."
            )
        return self._executor

    # -- maintenance ---------------------------------------------------------------

    def backup(self, path: str | os.PathLike[str]) -> int:
        """Write a consistent, compacted copy of the database to the folder ``path``;
        returns the size of the copy's ``data.mdb`` in bytes.

        The copy holds one snapshot (every commit before it, none after), documents,
        indexes, files and scheduled jobs included, opens with :meth:`open` like the
        original, and is synced to disk before this returns. Writers in this and other
        processes go on meanwhile. ``path`` must not exist, or be an empty folder; the
        original's folder, a file or a folder with anything in it raise
        :class:`EngineError` and nothing is written (so does a folder another backup is
        writing to); a folder that cannot be made (under a file, no permission) raises
        :class:`StorageError`. The copy is written as ``data.mdb.partial`` and named
        ``data.mdb`` only once whole and synced: a backup killed midway leaves no
        ``data.mdb`` (:meth:`open` refuses that folder), and a backup into that folder
        writes over its partial file.
        Refused (``EngineError``) inside a running function. Copying a live LMDB file
        with ``cp`` can give a damaged copy; this cannot.

        Example::

            engine.backup("backups/2026-12-03")
            with Engine.open("backups/2026-12-03") as copy:
                copy.check()

        Cost: one pass over the used pages, written sequentially (free pages are
        left out, so the copy is often smaller than the original). A long backup
        pins its snapshot as a long query does: pages freed meanwhile are reused
        only after it ends.
        """
        runtime = self._live()
        self._refuse_in_function("backup")
        problem = backup_problem(os.fspath(path), runtime.db.storage.path)
        if problem is not None:
            raise backup_refused(path, problem)
        target = os.path.abspath(os.fspath(path))
        created = not os.path.exists(target)
        made = missing_folders(target)
        try:
            os.makedirs(target, exist_ok=True)
        except OSError as error:  # a file as a parent, no permission
            raise StorageError(
                f"Engine.backup({os.fspath(path)!r}): cannot make the destination folder "
                f"({error.strerror}); back up to a new folder this process may create."
            ) from error
        try:
            with runtime.db.running():  # a close() from another thread waits for the copy
                return runtime.db.storage.copy_to(target, made)
        except BackupInProgress:  # another backup is writing there: its copy stays
            raise backup_refused(
                path,
                f"is being written by another backup (it holds {PARTIAL_NAME}); wait for "
                "it to finish, or back up elsewhere",
            ) from None
        except FileExistsError:  # another backup wrote there since the check: its copy stays
            raise backup_refused(path, "is not empty") from None
        except BaseException:
            if created:
                try:
                    os.rmdir(target)
                except OSError:
                    pass
            raise

    def check(self) -> dict[str, Any]:
        """Verify every stored invariant; returns a report, raises ``CorruptionError``.

        Also checks the shape of every scheduled job (``report["scheduled_functions"]``
        counts them by state; ``report["scheduled_functions_unknown"]`` counts the pending
        jobs of functions this engine does not know, by name: they wait for an executor
        with those functions), and of every cron (``report["crons"]`` counts them by
        state). Everything is read in one snapshot, so a check made while others write
        reports one state of the database. Cost: a full pass over documents and index
        entries, and one over the jobs and the crons (all in that snapshot).
        """
        runtime = self._live()
        self._refuse_in_function("check")
        kinds: dict[str, str] = {n: f.kind for n, f in runtime.registry.by_name.items()}

        def jobs_and_crons(rtxn: Any) -> tuple[dict[str, Any], list[str]]:
            counts, problems, unknown = check_jobs(self._db, rtxn, kinds)
            cron_counts, cron_problems = check_crons(self._db, rtxn)
            report = {
                "scheduled_functions": counts,
                "scheduled_functions_unknown": unknown,
                "crons": cron_counts,
            }
            return report, problems + cron_problems

        with self._db.running():  # a close() from another thread waits for the check
            # One snapshot for the data, the jobs and the crons: read in several, a
            # report made while mutations schedule jobs counted jobs the data pass did
            # not see.
            return check_integrity(self._db, jobs_and_crons)


def _fetch_handled(
    runtime: Runtime, method: str, target: str, headers: Headers, data: bytes
) -> HttpResponse:
    """A request of :meth:`Engine.fetch` to the storage endpoints (or to an engine
    without HTTP routes), answered by :func:`engine.httphandling.handle`."""
    stream = io.BytesIO(data)
    response = handle(runtime, method, target, headers.get, stream.read, 1 << 62)
    body = b"" if method == "HEAD" else b"".join(response.body)
    if not response.complete:  # where serve_http would close the connection mid-body
        raise EngineError(
            "The file was deleted while it was being sent (or the engine closed): the "
            f"download is cut short after {len(body)} bytes; fetch it again."
        )
    return HttpResponse(body, status=response.status, headers=response.headers)


def _forked_error(parent: int) -> EngineError:
    return EngineError(
        f"This engine was opened by process {parent}, before this process forked from "
        "it; an LMDB environment cannot be used across fork(): call Engine.open(path) in "
        "the child (or start workers with the 'spawn' or 'forkserver' start method)."
    )


def _after_fork_in_child() -> None:
    """In a fork child, every handle the parent opened is closed, without touching
    LMDB (its environment is the parent's): calls raise an error naming the fork, and
    ``Engine.open`` opens the folder afresh (see ``storage.Storage.forked_away``)."""
    global _DATABASES_LOCK
    parent = os.getppid()
    for engine in list(_HANDLES):
        if not engine._closed:
            engine._closed = True
            engine._forked_from = parent
            if engine._executor is not None:
                engine._executor.forked_away()  # its lock must not outlive the parent's
    for db in _DATABASES.values():
        if db._subscriptions is not None:
            db._subscriptions.forked_away(_forked_error(parent))
    _DATABASES.clear()
    _DATABASES_LOCK = threading.Lock()  # a parent thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _release(storage: Any) -> None:
    # The reference is dropped and the database unregistered under one lock: two handles
    # closing at once both read "not last" when the count was read apart from the drop,
    # and left a closed database registered (the folder could not be reopened).
    with _DATABASES_LOCK:
        last = storage.drop_ref()
        db = _DATABASES.pop(storage.path, None) if last else None
    if not last:
        return
    try:
        if db is not None:
            db.shutdown()  # subscriptions end and running calls finish before the storage closes
    finally:
        storage.close_env()  # an open() of the folder waits for this


_Followed = TypeVar("_Followed", Subscription, SubscriptionSet)


async def _closed_if_cancelled(make: Callable[[], _Followed]) -> _Followed:
    """``make()`` (a subscribe call, which waits for the first run) on a worker thread.
    If the awaiting task is cancelled meanwhile, or its coroutine closed (GeneratorExit:
    its event loop closed under it), the thread still finishes (a thread cannot be
    stopped) and what it made is closed: by the thread if it ends after that, else here.
    Either way the caller never gets it, and nothing is left open."""
    lock = threading.Lock()
    made: list[_Followed] = []
    gave_up = [False]

    def run() -> _Followed:
        followed = make()
        with lock:
            if not gave_up[0]:
                made.append(followed)
                return followed
        followed.close()
        return followed

    try:
        return await asyncio.to_thread(run)
    except BaseException:  # cancelled, closed (GeneratorExit), or the thread's error
        with lock:
            gave_up[0] = True
            leftover = made[0] if made else None
        if leftover is not None:
            leftover.close()
        raise


def _refuse_in_event_loop(message: str) -> None:
    """Raise ``EngineError(message)`` if this thread runs an event loop (a blocking call
    there would stall it, or need a loop of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise EngineError(message)
