"""Functions: the ``query``/``mutation``/``action`` decorators, registration, and running them.

Decorate handlers to declare them::

    @mutation(args={"body": v.string()}, returns=v.id("messages"))
    def send(ctx, body):
        return ctx.db.insert("messages", {"body": body})

``Engine.open(path, functions=myapp.functions)`` imports every module of the
package and names each function ``"<module path>:<name>"`` (``"messages:send"``,
``"admin/users:remove"``). Every call site takes the function object or its
name. Internal functions (``internal_query`` ...) can be called only from
other functions, the scheduler and ``Engine.run``; from outside they are
reported missing exactly as an unknown name is.

:class:`Runtime` runs functions: arguments are validated before the handler
runs (:class:`ArgumentValidationError`), return values after
(:class:`ReturnsValidationError`); queries run in a read-only transaction,
mutations in a read-write one retried on conflict, actions as coroutines
whose ``ctx.run_*`` calls are each their own transaction.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import threading
import time
from collections.abc import Callable, Mapping
from types import FunctionType, ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from .contexts import ActionCtx, MutationCtx, QueryCtx
from .crons import Crons, package_crons
from .errors import (
    ArgumentValidationError,
    EngineError,
    FunctionNotFound,
    LimitExceeded,
    ReturnsValidationError,
    ValidationError,
    closed_error,
)
from .formatting import human_size
from .router import HttpRouter, router_of_module
from .scheduler import ActionCancel, ActionJobId
from .storage import LMDB_ERRORS
from .transaction import Transaction
from .validators import Validator, as_validator
from .values import UNSET, convert_sized, size_texts

if TYPE_CHECKING:
    from .database import Database
    from .readset import FrozenReadSet
    from .scheduler import Scheduler

__all__ = [
    "FunctionDef",
    "Registry",
    "Runtime",
    "action",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "query",
]

Kind = Literal["query", "mutation", "action"]
F = TypeVar("F", bound=Callable[..., Any])
_MAX_NESTING = 8
#: Convex's FUNCTION_MAX_ARGS_SIZE and FUNCTION_MAX_RESULT_SIZE (bytes, Convex's measure).
MAX_ARGS_SIZE = 16 << 20
MAX_RESULT_SIZE = 16 << 20


#: Result types that are never awaitable (skips ``inspect.isawaitable``, ~1 µs).
PLAIN_RESULTS = frozenset({type(None), dict, list, str, int, float, bool, bytes})
#: What an ``auth=`` can never be: raw credentials or plain data (a tuple, built once).
_NOT_IDENTITIES = (bytes, bytearray, memoryview, dict, list, tuple, int, float)


def refuse_awaitable(what: str, result: Any) -> None:
    """Raise if a query or mutation returned an awaitable (an ``async def`` handler).

    Its body never ran: nothing it would have written exists.
    """
    _refuse(
        result,
        f"{what} returned an awaitable (is it an async def?): queries and mutations "
        "are synchronous, so its body never ran; use an action for async work.",
    )


def refuse_awaited_result(name: str, result: Any) -> Any:
    """Raise if an action returned an awaitable (``return ctx.run_query(...)`` without
    ``await``): what it would have run never runs. Returns the result to use: what
    ``ctx.scheduler`` returns in an action may be awaited or not, and is done either
    way (a job id, or ``None`` for ``cancel``)."""
    if type(result) not in PLAIN_RESULTS:
        if isinstance(result, ActionJobId):
            return str(result)
        if isinstance(result, ActionCancel):
            return None
        _refuse(
            result,
            f"Action {name} returned an awaitable instead of a value: did you forget "
            "`await` (return await ctx.run_query(...))? It was never awaited, so what it "
            "would have run did not run.",
        )
    return result


def _refuse(result: Any, message: str) -> None:
    """EngineError(message) if ``result`` is awaitable, closed first (else Python warns
    that a coroutine was never awaited)."""
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise EngineError(message)


def fresh_args(args: dict[str, Any]) -> dict[str, Any]:
    """A copy of validated arguments for one run of a handler.

    Convex hands every run freshly deserialized arguments: a handler may change
    its lists and objects without the change reaching the caller, or the next
    run after a conflict. Cost: one dict for flat arguments, plus one container
    per nested list or object.
    """
    return {k: _copy(v) if type(v) in _CONTAINERS else v for k, v in args.items()}


_CONTAINERS = (dict, list)


def handler_args(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments to splat into one run of a handler (``handler(ctx, **...)``).

    :func:`fresh_args`, but flat arguments are passed as they are: the ``**``
    call binds them to the handler's parameters (or a new ``**kwargs`` dict),
    so the handler cannot change the caller's dict. Cost: a type check per
    argument; a copy only when one is a list or object.
    """
    for value in args.values():
        if type(value) in _CONTAINERS:
            return fresh_args(args)
    return args


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    return [_copy(v) if type(v) in _CONTAINERS else v for v in value]


def _txn_resolver(txn: Transaction) -> Callable[[int], str | None]:
    def resolve(number: int) -> str | None:
        table = txn.table_by_number(number)
        return None if table is None else table.name

    return resolve


class FunctionDef:
    """A registered-able function: handler, kind, visibility and validators.

    Calling the object directly is not how functions run (they need a
    context); use ``Engine.query/mutation/action`` or ``ctx.run_*``. The
    handler stays reachable as ``.handler`` for unit tests.
    """

    __slots__ = (
        "__dict__",
        "accepts",
        "args",
        "context",
        "handler",
        "internal",
        "kind",
        "name",
        "required",
        "returns",
    )

    def __init__(
        self,
        kind: Kind,
        handler: Callable[..., Any],
        *,
        internal: bool,
        args: Any = None,
        returns: Any = None,
    ) -> None:
        if inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler):
            raise EngineError(
                f"{kind.capitalize()} handler {handler.__qualname__} is a generator (it has "
                "`yield`): calling it would only make the generator, so its body would never "
                "run. Collect the items and return a list (return [...])."
            )
        if kind == "action" and not inspect.iscoroutinefunction(handler):
            raise EngineError(f"Action handler {handler.__qualname__} must be `async def`.")
        if kind != "action" and inspect.iscoroutinefunction(handler):
            raise EngineError(
                f"{kind.capitalize()} handler {handler.__qualname__} must be a plain `def`: "
                "queries and mutations are synchronous and deterministic; use an action for "
                "async work."
            )
        self.kind: Kind = kind
        self.handler = handler
        self.internal = internal
        self.args: Validator | None = None if args is None else as_validator(args)
        if self.args is not None and self.args.kind == "any" and not self.args.is_optional:
            self.args = None  # as Convex: args v.any() is ArgsValidator::Unvalidated
        self.returns: Validator | None = None if returns is None else as_validator(returns)
        #: The argument names the handler takes after ``ctx`` (None: any, it has **kwargs),
        #: those it needs (parameters without a default), and its context parameter's name.
        self.accepts: frozenset[str] | None
        self.required: frozenset[str]
        self.context: str | None
        self.accepts, self.required, self.context = _check_signature(kind, handler, self.args)
        self.name: str | None = None
        self.__doc__ = handler.__doc__
        self.__wrapped__ = handler

    def __repr__(self) -> str:
        visibility = "internal " if self.internal else ""
        return f"<{visibility}{self.kind} {self.name or self.default_name()}>"

    def default_name(self) -> str:
        """A name for a function that no functions package registered."""
        module = (self.handler.__module__ or "").replace(".", "/")
        return f"{module}:{self.handler.__qualname__}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise EngineError(
            f"{self!r} cannot be called directly: run it with engine.{self.kind}(...) or, from "
            f"another function, ctx.run_{self.kind}(...)."
        )


def _check_signature(
    kind: Kind, handler: Callable[..., Any], args: Validator | None
) -> tuple[frozenset[str] | None, frozenset[str], str | None]:
    """The keyword arguments ``handler`` takes after its context (None: any), those it
    needs, and the name of its context parameter; raises for an ``args`` validator the
    handler cannot be called with.

    Handlers run as ``handler(ctx, **args)``: an ``args`` field the handler does not
    take, one named like its context parameter, an optional field whose parameter
    has no default, or a parameter without a default that ``args`` does not declare
    would fail on some call with a raw ``TypeError``. Refused when the function is
    defined instead.
    """
    where = f"{kind.capitalize()} handler {getattr(handler, '__qualname__', handler)!r}"
    if args is not None and (args.kind != "object" or args.is_optional):
        raise EngineError(
            f"{where}: args must be a dict of validators or a v.object(...), got {args!r}. "
            "The arguments to a Convex function are an object."
        )
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): trust it
        return None, frozenset(), None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes_context = bool(parameters) and parameters[0].kind in positional
    if not takes_context and not any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters
    ):
        raise EngineError(f"{where} must take the context as its first parameter: def f(ctx, ...).")
    rest = parameters[1:] if takes_context else parameters
    for p in rest:
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is inspect.Parameter.empty:
            raise EngineError(
                f"{where}: its parameter {p.name!r} is positional-only without a default, "
                "and arguments are passed by name (handler(ctx, **args)): remove the '/'."
            )
    required = frozenset(
        p.name
        for p in rest
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest):
        accepts = None
    else:
        accepts = frozenset(
            p.name
            for p in rest
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
    context = parameters[0].name if takes_context else None
    if args is None:
        return accepts, required, context
    by_name = {p.name: p for p in rest}
    fields = args._fields()
    undeclared = sorted(required - fields.keys())
    if undeclared:
        if undeclared == ["args"] and "args" not in fields and fields:
            # Convex's JavaScript shape, handler(ctx, args): here each argument is a
            # parameter of its own, which the generic advice below did not say.
            raise EngineError(
                f"{where} takes the parameter 'args', which its args do not declare: "
                "handlers receive the arguments as keyword parameters, handler(ctx, **args), "
                f"not as one object: write def {getattr(handler, '__name__', 'f')}(ctx, "
                f"{', '.join(fields)})."
            )
        raise EngineError(
            f"{where} takes the parameter {undeclared[0]!r}, which its args do not declare, "
            f"so every call would fail: declare it in args ({undeclared[0]!r}: v...), or give "
            "the parameter a default."
        )
    for field, validator in fields.items():
        if field == context:
            raise EngineError(
                f"{where}: the argument {field!r} has the name of the handler's context "
                f"parameter; rename that parameter (def f(c, {field}, ...))."
            )
        if accepts is not None and field not in accepts:
            raise EngineError(
                f"{where} does not take the argument {field!r} that its args declare: add "
                f"the parameter ({field}=...) or **kwargs, or remove it from args."
            )
        parameter = by_name.get(field)
        if (
            validator.is_optional
            and parameter is not None
            and parameter.default is inspect.Parameter.empty
        ):
            raise EngineError(
                f"{where}: the argument {field!r} is optional (v.optional) but its parameter "
                f"has no default, so a call without it would fail: give it one "
                f"({field}=None)."
            )
    return accepts, required, context


def _decorator(kind: Kind, internal: bool) -> Any:
    @overload
    def decorate(fn: F, /) -> FunctionDef: ...
    @overload
    def decorate(*, args: Any = None, returns: Any = None) -> Callable[[F], FunctionDef]: ...

    def decorate(fn: Any = None, /, *, args: Any = None, returns: Any = None) -> Any:
        if fn is not None:
            if not callable(fn):  # @query({...}): Convex's query({args, handler}) form
                name = decorate.__name__
                raise EngineError(
                    f"{name}() takes the handler function (bare @{name}) or keyword "
                    f"arguments (@{name}(args={{...}}, returns=...)), got "
                    f"{type(fn).__name__} {fn!r}: pass the validators as args=..."
                )
            return FunctionDef(kind, fn, internal=internal)

        def wrap(handler: Callable[..., Any]) -> FunctionDef:
            return FunctionDef(kind, handler, internal=internal, args=args, returns=returns)

        return wrap

    decorate.__name__ = ("internal_" if internal else "") + kind
    decorate.__doc__ = (
        f"Declare a{'n internal' if internal else ''} {kind}: "
        f"``@{decorate.__name__}(args={{...}}, returns=...)`` or bare ``@{decorate.__name__}``."
    )
    return decorate


class _Decorator(Protocol):
    """``@query`` or ``@query(args=..., returns=...)``."""

    @overload
    def __call__(self, fn: Callable[..., Any], /) -> FunctionDef: ...
    @overload
    def __call__(
        self, *, args: Any = None, returns: Any = None
    ) -> Callable[[Callable[..., Any]], FunctionDef]: ...


query: _Decorator = _decorator("query", False)
mutation: _Decorator = _decorator("mutation", False)
action: _Decorator = _decorator("action", False)
internal_query: _Decorator = _decorator("query", True)
internal_mutation: _Decorator = _decorator("mutation", True)
internal_action: _Decorator = _decorator("action", True)


class Registry:
    """The functions of a functions package, by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, FunctionDef] = {}
        self.names: dict[int, str] = {}
        #: The HTTP routes: the attribute ``http`` of the package's module ``http``
        #: (Convex's ``convex/http.ts``), or ``Engine.open(http=...)``.
        self.http: HttpRouter | None = None
        #: The cron jobs: the :class:`~engine.crons.Crons` of the package's module
        #: ``crons`` (Convex's ``convex/crons.ts``), or None.
        self.crons: Crons | None = None

    def add(self, name: str, function: FunctionDef, *, alias: bool = False) -> None:
        """Register ``function`` as ``name``; an ``alias`` keeps the name it already has."""
        if name in self.by_name and self.by_name[name] is not function:
            raise EngineError(f"Two functions are registered as {name!r}.")
        self.by_name[name] = function
        if not alias:
            self.names[id(function)] = name
        if function.name is None:
            function.name = name

    @classmethod
    def from_package(cls, package: ModuleType | None) -> Registry:
        """Import every module of ``package`` and register its functions."""
        registry = cls()
        if package is None:
            return registry
        if not isinstance(package, ModuleType):
            raise EngineError(
                "Engine.open(functions=...) takes the module or package that defines your "
                f"functions (functions=myapp.functions), got {type(package).__name__}: "
                "functions are named after their module ('messages:send'), so put them in "
                "a module and pass it."
            )
        modules: list[tuple[str, ModuleType]] = []
        if hasattr(package, "__path__"):
            modules.append(("", package))
            prefix = package.__name__ + "."
            for info in pkgutil.walk_packages(package.__path__, prefix):
                modules.append(
                    (info.name[len(prefix) :].replace(".", "/"), importlib.import_module(info.name))
                )
        else:
            modules.append((package.__name__.rsplit(".", 1)[-1], package))
        for module_path, module in modules:
            if module_path == "http":
                registry.http = router_of_module(module)
        registry.crons = package_crons(modules)
        # A function is named after the module that defines its handler; one made
        # elsewhere (a factory such as make_crud("users")) after each module of the
        # package that exports it, the first of them giving the object its name.
        exported: list[tuple[str, FunctionDef]] = []
        for module_path, module in modules:
            for attr, value in vars(module).items():
                if not isinstance(value, FunctionDef):
                    continue
                name = f"{module_path}:{attr}" if module_path else attr
                if getattr(value.handler, "__module__", None) == module.__name__:
                    registry.add(name, value)
                else:
                    exported.append((name, value))
        defined_here = {id(f) for f in registry.by_name.values()}
        for name, value in exported:
            if id(value) not in defined_here:
                registry.add(name, value, alias=id(value) in registry.names)
        return registry


def _not_found(name: str, *, internal: bool = False) -> FunctionNotFound:
    """Convex's error for a name no function has; ``internal``: the lookup accepted internal
    functions too (ctx.run_*, the scheduler), so the hint does not blame visibility."""
    if internal:
        return FunctionNotFound(
            f"Could not find function for '{name}'. (convexlite: check the name, and that "
            "its module is inside the package passed as Engine.open(functions=...))",
            name=name,
        )
    return FunctionNotFound(
        f"Could not find public function for '{name}'. Did you forget to run `npx convex dev` "
        "or `npx convex deploy`? (convexlite: check that the module is inside the package "
        "passed as Engine.open(functions=...) and that the function is not internal)",
        name=name,
    )


def _too_large(name: str, arguments: bool, size: int | None) -> LimitExceeded:
    """Convex's error for arguments or a return value over 16 MiB (as Convex, a function
    error: a mutation writes nothing, a caller of a nested call may catch it). ``size``
    None: more than :data:`engine.values.MAX_WALKED_SIZE` (the conversion stopped)."""
    limit = MAX_ARGS_SIZE if arguments else MAX_RESULT_SIZE
    what = f"Arguments for {name} are" if arguments else f"Function {name} return value is"
    shown, measured = size_texts(size)
    return LimitExceeded(
        f"{what} too large (actual: {shown}, limit: {human_size(limit)}): "
        f"{measured} bytes by Convex's measure, over {limit}. Pass large data as a file "
        "(ctx.storage) or split it over several calls.",
        limit="TooLargeFunctionArguments" if arguments else "TooLargeFunctionResult",
    )


class Runtime:
    """Runs functions against one database with one auth configuration."""

    def __init__(self, db: Database, registry: Registry, auth: Any, env: Mapping[str, str]) -> None:
        self.db = db
        self.registry = registry
        self.auth = auth
        self.env = env
        #: The origin of file URLs (``Engine.open(site_url=...)``), and that of the
        #: server ``Engine.serve_http`` runs; see :func:`engine.files.origin`.
        self.site_url: str | None = None
        self.served_url: str | None = None
        #: The origins of the running servers, oldest first: when the server of
        #: ``served_url`` closes, the next one's origin takes its place.
        self.serving: list[str] = []
        #: Guards ``served_url``, ``serving`` and the engine's list of servers: servers
        #: start and close on any thread (serve_http, server.close, Engine.close).
        self.serving_lock = threading.Lock()

    # -- resolution ------------------------------------------------------------

    def resolve(self, ref: Any, *, internal: bool) -> tuple[str, FunctionDef]:
        """The name and definition of ``ref`` (a name or a FunctionDef)."""
        if isinstance(ref, FunctionDef):
            name = self.registry.names.get(id(ref)) or ref.name or ref.default_name()
            function = ref
        elif isinstance(ref, str):
            name = ref if ":" in ref else f"{ref}:default"
            found = self.registry.by_name.get(name) or self.registry.by_name.get(ref)
            if found is None:
                raise _not_found(ref, internal=internal)
            function = found
        else:
            raise FunctionNotFound(
                f"Expected a function name or a decorated function, got "
                f"{type(ref).__name__}: {ref!r}",
                name=repr(ref),
            )
        if function.internal and not internal:
            # Worded exactly as for a missing name, as the caller wrote it: the error
            # must not tell that an internal function exists (nor its full name).
            raise _not_found(ref if isinstance(ref, str) else name)
        return name, function

    def identity(self, auth: Any) -> Any:
        """Turn a call's ``auth=`` (token, verified identity, or None) into an identity."""
        if auth is None:
            return None
        if isinstance(auth, str):
            if self.auth is None:
                raise EngineError(
                    "A token was passed as auth=, but the engine has no identity providers: "
                    "open it with Engine.open(..., auth=auth.AuthConfig(providers=[...])), or "
                    "pass an already verified identity."
                )
            return self.auth.verify(auth)
        if isinstance(auth, _NOT_IDENTITIES):
            # Raw credentials or plain data are never a verified identity: trusting them
            # would let an unverified token (bytes) or a client's dict act as a user.
            fix = (
                "decode a bytes token to str first"
                if isinstance(auth, (bytes, bytearray, memoryview))
                else "verify the caller first, then pass the token or an auth.UserIdentity"
            )
            raise EngineError(
                f"auth= takes a token (str), a verified identity (auth.UserIdentity) or "
                f"None, got {type(auth).__name__}: {fix}."
            )
        return auth

    def token_expiry(self, auth: Any) -> Callable[[], float] | None:
        """For a raw token: a function giving the seconds it keeps verifying, which
        raises the provider's error (``auth.TokenExpired``) once none are left.

        None for an already verified identity (trusted as is) or no identity, and
        when the providers cannot tell (their configuration has no
        ``seconds_left(token)``).
        """
        seconds_left = getattr(self.auth, "seconds_left", None)
        if not isinstance(auth, str) or seconds_left is None:
            return None
        return lambda: float(seconds_left(auth))

    # -- validation ----------------------------------------------------------

    @staticmethod
    def _tag(kind: Kind, name: str) -> str:
        return f"[{ {'query': 'Q', 'mutation': 'M', 'action': 'A'}[kind] }({name})]"

    def check_args(
        self,
        name: str,
        function: FunctionDef,
        args: Any,
        resolver: Callable[[int], str | None] | None = None,
    ) -> dict[str, Any]:
        """``args`` converted and checked by the function's ``args`` validator.

        ``resolver`` names tables for ``v.id`` (default: the newest snapshot's
        catalog; a nested call passes its transaction's, which knows the tables
        the transaction created).
        """
        if args is None or args is UNSET:  # convex-js's parseArgs: undefined is {}
            args = {}
        if not isinstance(args, dict):
            raise ArgumentValidationError(
                f"{self._tag(function.kind, name)} The arguments to a Convex function must be an "
                f"object. Received: {args!r}"
            )
        # ``convert`` returns already plain values as they are, so the result may alias
        # the caller's: every handler run takes its own copy (:func:`handler_args`), and
        # what the engine keeps (a subscription's arguments) is copied where kept.
        converted: dict[str, Any] = self._checked(
            name,
            function,
            args,
            function.args,
            ArgumentValidationError,
            "",
            resolver or self.table_name,
        )
        if function.args is None:  # unvalidated: what the handler can take, checked here
            self._check_unvalidated(name, function, converted)
        return converted

    def _check_unvalidated(
        self, name: str, function: FunctionDef, converted: dict[str, Any]
    ) -> None:
        """ArgumentValidationError for arguments the handler of a function without an
        ``args`` validator cannot take (checked after conversion, where a field set to
        UNSET is absent: the handler does not get it)."""
        accepts = function.accepts
        if accepts is None and function.context in converted:
            raise ArgumentValidationError(
                f"{self._tag(function.kind, name)} The argument {function.context!r} has the "
                "name of the handler's context parameter, so the handler cannot take it: "
                "rename that parameter (def f(c, **args))."
            )
        if accepts is not None and not accepts.issuperset(converted):
            unexpected = sorted(k for k in converted if k not in accepts)
            raise ArgumentValidationError(
                f"{self._tag(function.kind, name)} The function takes no argument "
                f"{', '.join(map(repr, unexpected))}: its handler takes "
                f"{sorted(accepts) or 'no arguments'}. Add the parameter (or **kwargs) to "
                "the handler, or declare args=... to validate them."
            )
        required = function.required
        if required and not required <= converted.keys():
            missing = sorted(k for k in required if k not in converted)
            raise ArgumentValidationError(
                f"{self._tag(function.kind, name)} The function's handler needs the argument "
                f"{', '.join(map(repr, missing))}, which the call did not pass. Pass it, give "
                "the parameter a default, or declare args=... to validate the arguments."
            )

    def check_result(
        self, name: str, function: FunctionDef, result: Any, txn: Transaction | None = None
    ) -> Any:
        """``result`` checked by the function's ``returns``; ``txn``: the transaction it
        ran in (``v.id`` then knows the tables it created).

        A result of :data:`UNSET` (Convex's ``undefined``) is ``None``, as convex-js
        returns ``result === undefined ? null : result``; inside a value UNSET keeps its
        meaning (a field left out, an error in an array)."""
        if result is UNSET:
            result = None
        if result is None and function.returns is None:  # most mutations: nothing to check
            return None
        return self._checked(
            name,
            function,
            result,
            function.returns,
            ReturnsValidationError,
            "the return value is not a Convex value: ",
            # The closure only where a validator may call it (~0.1 µs per call saved).
            self.table_name if txn is None or function.returns is None else _txn_resolver(txn),
        )

    def table_name(self, number: int) -> str | None:
        """The name of table ``number`` as of the newest snapshot (for ``v.id`` in args).

        Cost: a dict lookup; one catalog read when the number is unknown (the table
        may have been created since, in any process).
        """
        table = self.db.catalog_cache[1].table_by_number.get(number)
        if table is None:
            with self.db.storage.read() as rtxn:
                table = self.db.catalog_at(rtxn).table_by_number.get(number)
        return None if table is None else table.name

    def _checked(
        self,
        name: str,
        function: FunctionDef,
        value: Any,
        validator: Validator | None,
        error_type: type[ValidationError],
        not_a_value: str,
        resolver: Callable[[int], str | None],
    ) -> Any:
        """``value`` converted to a Convex value and checked by ``validator``.

        Raises ``error_type`` with Convex's prefix (``[M(messages:send)]
        ArgumentValidationError: ...``) naming the function, and :class:`LimitExceeded`
        (``TooLargeFunctionArguments``, ``TooLargeFunctionResult``) for a value over
        Convex's 16 MiB, before the validator runs (as Convex).
        """
        try:
            converted, size = convert_sized(value)
        except LimitExceeded as error:
            if error.limit != "ValueTooLarge":
                raise
            raise _too_large(name, error_type is ArgumentValidationError, None) from None
        except ValidationError as error:
            prefix = f"{self._tag(function.kind, name)} {error_type.__name__}: "
            raise error_type(f"{prefix}{not_a_value}{error}", path=error.path) from None
        if size > MAX_ARGS_SIZE:  # == MAX_RESULT_SIZE
            raise _too_large(name, error_type is ArgumentValidationError, size)
        if validator is not None:
            # check(), not validate(): the value is converted already (validate() would
            # convert it again, 1.5x the cost of a call returning 5,000 rows).
            failure = validator.check(converted, resolver)
            if failure is not None:
                prefix = f"{self._tag(function.kind, name)} {error_type.__name__}: "
                raise error_type(f"{prefix}{failure[1]}", path=failure[0]) from None
        return converted

    # -- running ---------------------------------------------------------------

    def _kind_error(self, name: str, function: FunctionDef, kind: Kind) -> EngineError:
        return EngineError(
            f"Trying to execute {name} as {kind.capitalize()}, but it is defined as "
            f"{function.kind.capitalize()}."
        )

    def _body(
        self, name: str, function: FunctionDef, args: dict[str, Any], identity: Any
    ) -> Callable[[Transaction], Any]:
        writable = function.kind == "mutation"
        ctx_type = MutationCtx if writable else QueryCtx

        def body(txn: Transaction) -> Any:
            ctx = ctx_type(self, txn, identity, time.time() * 1000.0, None, self.env)
            result = function.handler(ctx, **handler_args(args))
            if type(result) not in PLAIN_RESULTS:
                refuse_awaitable(name, result)
            return self.check_result(name, function, result, txn)

        return body

    def query(self, ref: Any, args: Any, auth: Any) -> Any:
        """Run a public query (or an inline one) to completion; returns its result.

        The same steps as :meth:`call` with ``kind="query"``, laid out flat:
        this is the path of every ``Engine.query``, so it avoids layers
        (:meth:`Database.open_query` and :meth:`Database.close_query` are inline:
        one read of the thread's call depth instead of two, ~0.07 µs each).
        """
        identity = None if auth is None else self.identity(auth)
        db = self.db
        if type(ref) is FunctionType or (callable(ref) and not isinstance(ref, FunctionDef)):
            if args:
                raise EngineError("An inline function takes no arguments: close over them instead.")
            name, function = "The inline query", None
        else:
            name, function = self.resolve(ref, internal=False)
            if function.kind != "query":
                raise self._kind_error(name, function, "query")
            args = self.check_args(name, function, args)
        calls = db._local.calls  # Database.open_query, inline
        if calls.depth:
            raise db.reentry_error("A query (Engine.query, Engine.aquery)")
        if db.closing:
            raise closed_error()
        txn = Transaction(db, False)  # positional: keywords cost a class call ~0.1 µs
        calls.depth = 1
        try:  # _body's steps, without making a closure per call
            ctx = QueryCtx(self, txn, identity, time.time() * 1000.0, None, self.env)
            if function is None:
                result = ref(ctx)
                if type(result) not in PLAIN_RESULTS:
                    refuse_awaitable(name, result)
                return result
            result = function.handler(ctx, **handler_args(args))
            if type(result) not in PLAIN_RESULTS:
                refuse_awaitable(name, result)
            return self.check_result(name, function, result, txn)
        except LMDB_ERRORS as error:  # a damaged page met by a read
            raise db.storage.mapped(error) from error
        finally:
            # Database.close_query, inline. No local names the LMDB txn: an error kept
            # with its traceback keeps this frame, which would keep the reader slot.
            calls.depth = 0
            if txn._rtxn is not None:
                try:
                    db.storage.end_read(txn._rtxn)
                finally:
                    txn._rtxn = None

    def call(
        self,
        ref: Any,
        args: Any,
        auth: Any,
        *,
        kind: Kind,
        internal: bool = False,
        identity_verified: bool = False,
    ) -> Any:
        """Run a query or mutation to completion (blocking); returns its result."""
        return self.call_with_ts(
            ref, args, auth, kind=kind, internal=internal, identity_verified=identity_verified
        )[0]

    def call_with_ts(
        self,
        ref: Any,
        args: Any,
        auth: Any,
        *,
        kind: Kind,
        internal: bool = False,
        identity_verified: bool = False,
    ) -> tuple[Any, int]:
        if kind != "action" and callable(ref) and not isinstance(ref, FunctionDef):
            return self._inline(ref, args, auth, kind=kind, identity_verified=identity_verified)
        name, function = self.resolve(ref, internal=internal)
        if function.kind != kind:
            raise self._kind_error(name, function, kind)
        if kind == "action":
            raise EngineError("call_with_ts runs queries and mutations only")
        identity = auth if identity_verified else self.identity(auth)
        args = self.check_args(name, function, args)
        body = self._body(name, function, args, identity)
        return self.db.run(body, writable=kind == "mutation", source=f"{kind.capitalize()} {name}")

    def _inline(
        self, fn: Callable[..., Any], args: Any, auth: Any, *, kind: Kind, identity_verified: bool
    ) -> tuple[Any, int]:
        """An inline function (``engine.query(lambda ctx: ...)``, like convex-test's
        ``t.query(ctx => ...)``): no registration, no validators, may call internal
        functions through ``ctx.run_*``."""
        if args:
            raise EngineError("An inline function takes no arguments: close over them instead.")
        identity = auth if identity_verified else self.identity(auth)
        writable = kind == "mutation"
        ctx_type = MutationCtx if writable else QueryCtx

        def body(txn: Transaction) -> Any:
            result = fn(ctx_type(self, txn, identity, time.time() * 1000.0, None, self.env))
            if type(result) not in PLAIN_RESULTS:
                refuse_awaitable(f"The inline {kind}", result)
            return result

        return self.db.run(body, writable=writable, source=f"inline {kind}")

    def run_on_snapshot(
        self,
        name: str,
        function: FunctionDef,
        args: dict[str, Any],
        identity: Any,
        rtxn: Any,
        journal: dict[str, Any],
    ) -> tuple[Any, FrozenReadSet, BaseException | None]:
        """Run a query on a shared LMDB snapshot; returns (result, reads, error).

        Used by subscriptions. The read set is returned even when the query
        raised, so a later commit that fixes the data re-runs it.
        """
        from .transaction import Transaction

        txn = Transaction(self.db, False, rtxn)
        txn.journal = journal
        # Engine calls from the query are refused here too, as in Engine.query: one that
        # wrote would run again on every re-run its own commit caused.
        self.db.enter_function()
        try:
            result = self._body(name, function, args, identity)(txn)
            return result, txn.reads.freeze(), None
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit too: this query's error, not the worker's
            return None, txn.reads.freeze(), self.db.storage.mapped(error)
        finally:
            self.db.leave_function()
            txn.close()

    async def acall(
        self,
        ref: Any,
        args: Any,
        auth: Any,
        *,
        kind: Kind,
        internal: bool = False,
        identity_verified: bool = True,
    ) -> Any:
        """Run any function from async code; transactions run on a worker thread."""
        if kind == "action" and not internal and callable(ref) and not isinstance(ref, FunctionDef):
            identity = auth if identity_verified else self.identity(auth)
            return await self._inline_action(ref, args, identity)
        name, function = self.resolve(ref, internal=internal)
        if function.kind != kind:
            raise self._kind_error(name, function, kind)
        identity = auth if identity_verified else self.identity(auth)
        if kind == "action":
            args = self.check_args(name, function, args)
            ctx = ActionCtx(self, identity, self.env)
            result = await function.handler(ctx, **handler_args(args))
            result = refuse_awaited_result(name, result)
            return self.check_result(name, function, result)
        return await asyncio.to_thread(
            self.call,
            function,
            args,
            identity,
            kind=kind,
            internal=True,
            identity_verified=True,
        )

    async def _inline_action(self, fn: Callable[..., Any], args: Any, identity: Any) -> Any:
        """An inline action (``engine.action(async_fn)``, like convex-test's
        ``t.action(async ctx => ...)``): ``fn(ctx)`` with an :class:`ActionCtx`; it may
        call internal functions through ``ctx.run_*``."""
        if args:
            raise EngineError("An inline function takes no arguments: close over them instead.")
        awaitable = fn(ActionCtx(self, identity, self.env))
        if not inspect.isawaitable(awaitable):
            raise EngineError(
                "An inline action must be an async function (async def body(ctx): ...), as "
                f"actions are; {fn!r} returned {type(awaitable).__name__}."
            )
        return refuse_awaited_result("(inline)", await awaitable)

    def nested(self, ctx: QueryCtx, ref: Any, args: Any, *, kind: Kind) -> Any:
        """``ctx.run_query`` / ``ctx.run_mutation`` inside a running transaction."""
        name, function = self.resolve(ref, internal=True)
        if function.kind != kind:
            raise self._kind_error(name, function, kind)
        txn = ctx._txn
        args = self.check_args(name, function, args, _txn_resolver(txn))
        if ctx._depth >= _MAX_NESTING:  # after the arguments, as Convex checks them
            raise LimitExceeded(
                "Cross component call depth limit exceeded. Do you have an infinite loop in "
                f"your app? (calling {name}: ctx.run_query / ctx.run_mutation nest at most "
                f"{_MAX_NESTING} levels below the top function)",
                limit="MaximumCallDepthExceeded",
            )
        savepoint = txn.writes.savepoint()
        child_type = MutationCtx if kind == "mutation" else QueryCtx
        child = child_type(
            self, txn, ctx.auth._identity, ctx.now, ctx.random.getrandbits(64), ctx.env
        )
        child._depth = ctx._depth + 1
        scheduler: Scheduler | None = None
        scheduled = (0, 0)
        if isinstance(child, MutationCtx) and isinstance(ctx, MutationCtx):
            scheduler = child._scheduler = ctx.scheduler  # one count per transaction
            scheduled = scheduler.usage()
        # The callee is a function run of its own, as in Convex: it may paginate once
        # whatever its caller did, and its page is not pinned by the caller's
        # subscription journal (Convex gives a nested query a fresh journal).
        paginated, journal = txn.paginated, txn.journal
        txn.paginated, txn.journal = False, None
        try:
            result = function.handler(child, **handler_args(args))
            if type(result) not in PLAIN_RESULTS:
                refuse_awaitable(name, result)
            return self.check_result(name, function, result, txn)
        except BaseException:
            if kind == "mutation":
                txn.writes.rollback(savepoint)
                if scheduler is not None:  # its jobs are gone: so is their share of the limit
                    scheduler.restore_usage(scheduled)
            raise
        finally:
            txn.paginated, txn.journal = paginated, journal
