"""The checks of :class:`~engine.engine.Engine`'s arguments.

Each refuses, with an error that says what to pass, an argument that would otherwise
fail later and deeper (a cron target at its first run, a timeout deep in a loop), or
that would make a folder or open anything first: ``Engine.open`` runs them all before
it touches the disk. Cost: a few type checks each.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .backupfile import PARTIAL_NAME
from .crons import Crons
from .errors import EngineError, SchedulerError
from .functions import Registry
from .router import HttpRouter
from .scheduler import as_seconds

__all__ = [
    "advance_in_ms",
    "backup_problem",
    "backup_refused",
    "check_auth_config",
    "check_crons_arg",
    "check_env",
    "check_finish_args",
    "check_router_arg",
    "check_schema_arg",
    "check_serve_args",
    "check_site_url",
    "check_upload_size",
]


def backup_problem(path: str, folder: str) -> str | None:
    """Why :meth:`Engine.backup` may not write to ``path`` (the database in ``folder``),
    or None."""
    if not path:  # abspath("") is the working directory
        return "is empty (the working directory)"
    if "\0" in path:  # realpath would raise ValueError
        return "has a NUL byte, which no file system path may hold"
    target = os.path.abspath(path)
    if os.path.isfile(target):
        return "is a file"
    if os.path.realpath(target) == folder:
        return "is the database itself"
    # A killed backup's partial file alone (see engine.backupfile) is written over.
    if os.path.isdir(target) and set(os.listdir(target)) - {PARTIAL_NAME}:
        return "is not empty"
    return None


def backup_refused(path: str | os.PathLike[str], problem: str) -> EngineError:
    return EngineError(
        f"Engine.backup({os.fspath(path)!r}): the destination {problem}; back up to a new "
        "folder (or an empty one)."
    )


def check_auth_config(config: Any) -> None:
    """Refuse, before anything opens, an ``auth=`` that cannot verify tokens.

    Anything with a ``verify(token)`` method is a configuration (``auth.AuthConfig``, a
    provider); a list of providers or an issuer URL raised AttributeError on the first
    call with a token instead.
    """
    if config is not None and not callable(getattr(config, "verify", None)):
        hint = (
            ": wrap the providers in auth.AuthConfig(providers=[...])"
            if isinstance(config, (list, tuple))
            else ": write auth.AuthConfig(providers=[auth.ClerkProvider(issuer=...)])"
            if isinstance(config, str)
            else ""
        )
        raise EngineError(
            "Engine.open(auth=...) takes an identity-provider configuration "
            f"(auth.AuthConfig), got {type(config).__name__}{hint}"
        )


def check_schema_arg(schema: Any) -> None:
    """Refuse, before anything opens, a ``schema=`` that is no ``define_schema`` result."""
    from .schema import SchemaDefinition

    if schema is not None and not isinstance(schema, SchemaDefinition):
        hint = ": wrap the tables in define_schema({...})" if isinstance(schema, Mapping) else ""
        raise EngineError(
            "Engine.open(schema=...) takes a define_schema({...}) result or None, got "
            f"{type(schema).__name__}{hint}"
        )


def check_crons_arg(crons: object, registry: Registry) -> None:
    """Refuse an ``Engine.open(crons=...)`` that is not a :class:`Crons`, that has no
    functions to run them, or that would replace the package's."""
    if not isinstance(crons, Crons):
        raise EngineError(
            f"Engine.open(crons=...) takes the result of cron_jobs(), got "
            f"{type(crons).__name__}: {crons!r}."
        )
    if not registry.by_name:
        raise EngineError(
            "Engine.open(crons=...) was given without functions: crons run functions of "
            "the package passed as Engine.open(functions=...)."
        )
    if registry.crons is not None:
        raise EngineError(
            "Engine.open(crons=...) was given, but the functions package also has crons "
            "(its module `crons`): keep one set, in the package or passed as crons=."
        )


def check_router_arg(http: object, registry: Registry) -> None:
    """Refuse an ``Engine.open(http=...)`` that is not a router, or that would replace
    the one of the functions package."""
    if not isinstance(http, HttpRouter):
        raise EngineError(
            f"Engine.open(http=...) takes an HttpRouter, got {type(http).__name__}: "
            "http = HttpRouter(); http.route(path=..., method=..., handler=...)."
        )
    if registry.http is not None:
        raise EngineError(
            "Engine.open(http=...) was given, but the functions package also has HTTP routes "
            "(its module `http`): keep one router, in the package or passed as http=."
        )


def check_env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of ``env``; EngineError unless it maps strings to strings."""
    if env is None:
        return MappingProxyType({})
    if not isinstance(env, Mapping):
        raise EngineError(
            f"Engine.open(env=...) expects a mapping of names to strings (as os.environ), "
            f"got {type(env).__name__}."
        )
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise EngineError(
                f"Engine.open(env=...): environment variables are strings, as in Convex; "
                f"found {name!r}: {type(value).__name__} {value!r:.60}. Pass str(value), "
                "and parse it where a function reads it."
            )
    return MappingProxyType(dict(env))


def check_site_url(site_url: object) -> str:
    """``site_url`` without its trailing slash, if it is an http(s) origin with an
    optional path (a mount point), else :class:`EngineError` saying what is wrong."""
    problem = None
    if not isinstance(site_url, str):
        problem = f"it is a {type(site_url).__name__}"
    else:
        try:
            parts = urlsplit(site_url)
        except ValueError as error:  # "http://[::1": an unclosed IPv6 bracket
            parts = None
            problem = f"its host does not parse ({error})"
        if parts is None:
            pass
        elif parts.scheme not in ("http", "https") or not site_url.startswith(parts.scheme + "://"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it has no host name"
        elif "@" in parts.netloc:
            problem = "it has credentials (user:password@), which browsers refuse in URLs"
        elif "\\" in site_url:
            problem = "it has a backslash, which a URL parser reads as '/'"
        elif parts.query or parts.fragment or "?" in site_url or "#" in site_url:
            problem = "it must not have a query (?...) or fragment (#...)"
        elif any(c.isspace() or not c.isprintable() for c in site_url):
            problem = "it contains spaces or control characters"
        else:
            try:
                parts.port  # noqa: B018  (raises ValueError for a port out of range)
            except ValueError:
                problem = "its port is not a number from 0 to 65535"
    if problem is not None:
        raise EngineError(
            f"site_url must be an http:// or https:// origin such as "
            f"'https://files.example.com' (optionally with a path, e.g. "
            f"'https://example.com/files'), got {site_url!r}: {problem}"
        )
    assert isinstance(site_url, str)
    return site_url.rstrip("/")


def check_serve_args(
    host: object, port: object, timeout: object, max_connections: object, max_upload_size: object
) -> None:
    """Refuse ``serve_http`` arguments that would fail deep in ``socket`` with an
    unhelpful OverflowError or TypeError."""

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(host, str) or "\x00" in host:
        raise EngineError(f"serve_http(host=...) must be a str such as '127.0.0.1', got {host!r}")
    if not whole(port) or not 0 <= port <= 65535:  # type: ignore[operator]
        raise EngineError(
            f"serve_http(port=...) must be an int from 0 to 65535 (0 picks a free port), "
            f"got {port!r}"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= threading.TIMEOUT_MAX  # a socket timeout takes no more
    ):
        raise EngineError(
            f"serve_http(timeout=...) must be seconds > 0 and finite (at most "
            f"{threading.TIMEOUT_MAX:.0f}), got {timeout!r}"
        )
    if not whole(max_connections) or max_connections < 1:  # type: ignore[operator]
        raise EngineError(
            f"serve_http(max_connections=...) must be an int >= 1, got {max_connections!r}"
        )
    check_upload_size("serve_http", max_upload_size)


def check_upload_size(method: str, max_upload_size: object) -> None:
    """Refuse a ``max_upload_size`` that is not a whole number of bytes >= 0."""
    if (
        isinstance(max_upload_size, bool)
        or not isinstance(max_upload_size, int)
        or max_upload_size < 0
    ):
        raise EngineError(
            f"{method}(max_upload_size=...) must be a number of bytes >= 0, got {max_upload_size!r}"
        )


def check_finish_args(call: str, timeout: object, max_iterations: object) -> None:
    """Refuse a ``finish_*`` timeout or ``max_iterations`` that would fail deep in the
    loop with a TypeError, or never end it (a NaN timeout is never passed)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise SchedulerError(
            f"{call}(timeout=...) must be a number of seconds >= 0, got {timeout!r}"
        )
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 1
    ):
        raise SchedulerError(
            f"{call}(max_iterations=...) must be an int >= 1, got {max_iterations!r}"
        )


def advance_in_ms(advance: object) -> float:
    """``finish_scheduled_functions(advance=...)`` in milliseconds: a finite,
    non-negative number of seconds, or a ``timedelta``; else :class:`SchedulerError`."""
    if isinstance(advance, timedelta):
        seconds = advance.total_seconds()
    elif (number := as_seconds(advance)) is not None:
        seconds = number
    else:
        raise SchedulerError(
            f"`advance` must be a number of seconds or a timedelta, got "
            f"{type(advance).__name__}: {advance!r}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise SchedulerError(
            f"`advance` must be a finite, non-negative number of seconds, got {advance!r}."
        )
    return seconds * 1000.0
