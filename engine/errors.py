"""The exception tree of the engine.

Every error the engine raises on purpose is an :class:`EngineError`::

    EngineError
    ├── ValidationError (ValueError)          .path: where in the value
    │   ├── ArgumentValidationError           function arguments
    │   ├── ReturnsValidationError            function return values
    │   └── SchemaValidationError             documents against the schema
    ├── LimitExceeded                         .limit: Convex's limit code
    ├── DocumentNotFound (KeyError)           .id
    │   └── StorageIdNotFound                 a file that does not exist
    ├── InvalidId (ValueError)                .value
    ├── InvalidTable (ValueError)             .table
    │   └── SystemTableError                  a system table's id in ctx.db (or the reverse)
    ├── InvalidIndexRange (ValueError)        .code: Convex's error code
    ├── IndexNotFound (LookupError)           .table, .index
    ├── VectorSearchError (ValueError)        .code: a vector search Convex refuses
    ├── EvalError (ValueError)                filter arithmetic and logic
    ├── InvalidCursor (ValueError)            pagination cursors
    ├── PaginationError (ValueError)          .code: page options and limits
    ├── OptimisticConcurrencyControlFailure   .table
    ├── FunctionNotFound (LookupError)        .name
    ├── SchedulerError (ValueError)           ctx.scheduler arguments, scheduled-job runs
    ├── ReadOnlyError                         writes from a reader
    ├── StorageError                          LMDB failures, with a hint
    │   ├── FormatError                       unknown on-disk format
    │   └── CorruptionError                   stored data is damaged (check(), or a read)
    └── ConvexError                           .data: an application error value

Messages say what was expected, what was found, where, and the fix; where
Convex has a wording for the same failure, the message uses it.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = [
    "ArgumentValidationError",
    "ConvexError",
    "CorruptionError",
    "DocumentNotFound",
    "EngineError",
    "EvalError",
    "FormatError",
    "FunctionNotFound",
    "IndexNotFound",
    "InvalidCursor",
    "InvalidId",
    "InvalidIndexRange",
    "InvalidTable",
    "LimitExceeded",
    "OptimisticConcurrencyControlFailure",
    "PaginationError",
    "ReadOnlyError",
    "ReturnsValidationError",
    "SchedulerError",
    "SchemaValidationError",
    "StorageError",
    "StorageIdNotFound",
    "SystemTableError",
    "ValidationError",
    "VectorSearchError",
]


class EngineError(Exception):
    """Root of every error the engine raises on purpose.

    Errors pickle and copy with their attributes (``.path``, ``.table``, ...),
    so they cross process boundaries (``multiprocessing``, ``concurrent.futures``)
    intact, although several take keyword-only arguments Python's default
    ``Exception`` pickling would not pass back.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


def _restore(cls: type[EngineError], args: tuple[Any, ...], state: dict[str, Any]) -> EngineError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ValidationError(EngineError, ValueError):
    """A value does not fit the value model, a validator or a schema.

    ``path`` is where in the value the problem is, as a JSONPath-like string
    (``$.tags[2]``) for the value model and Convex's ``.tags[2]`` form for
    validators; ``""`` means the value itself.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ArgumentValidationError(ValidationError):
    """A function's arguments do not match its ``args`` validator."""


class ReturnsValidationError(ValidationError):
    """A function's return value does not match its ``returns`` validator."""


class SchemaValidationError(ValidationError):
    """A document does not match its table's schema, or a schema is invalid."""

    def __init__(self, message: str, *, path: str = "", table: str | None = None) -> None:
        super().__init__(message, path=path)
        self.table = table


class LimitExceeded(EngineError):
    """One of Convex's limits was exceeded.

    ``limit`` is Convex's code for it (``TooManyDocumentsRead``,
    ``DocumentTooLarge``, ``NestingTooDeep``, ...).
    """

    def __init__(self, message: str, *, limit: str, path: str = "") -> None:
        super().__init__(message)
        self.limit = limit
        self.path = path


class DocumentNotFound(EngineError, KeyError):
    """A write named a document that does not exist (Convex: ``NonexistentDocument``)."""

    def __init__(self, message: str, *, id: str) -> None:
        super().__init__(message)
        self.id = id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StorageIdNotFound(DocumentNotFound):
    """``ctx.storage.delete`` named a file that does not exist (Convex: ``StorageIdNotFound``).

    The message is Convex's: ``storage id <id> not found``.
    """


class InvalidId(EngineError, ValueError):
    """A string is not a well-formed document id (or not one of the expected table)."""

    def __init__(self, message: str, *, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class InvalidTable(EngineError, ValueError):
    """A table name is not allowed here (system table, bad identifier, wrong table)."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class SystemTableError(InvalidTable):
    """``ctx.db.get`` was given an id of a system table, or ``ctx.db.system.get`` one of
    a user table (Convex's ``system_table_guard``), whether or not the document exists."""


class InvalidIndexRange(EngineError, ValueError):
    """An index range expression breaks Convex's range grammar.

    ``code`` is Convex's error code: ``InvalidIndexRange``,
    ``BoundsOnMultipleFields``, ``AlreadyDefinedBound`` or ``FieldNotInIndex``.
    """

    def __init__(self, message: str, *, code: str = "InvalidIndexRange") -> None:
        super().__init__(message)
        self.code = code


class VectorSearchError(EngineError, ValueError):
    """A vector search Convex refuses (``ctx.vector_search``): ``.code`` is Convex's error
    code (``VectorDimensionsMismatch``, ``VectorLimitTooLargeError``,
    ``IncorrectVectorFilterField``, ``TooManyElementsInVectorQueryError``,
    ``InvalidVectorSearchFilter``, ``IndexNotAVectorIndexError``, or
    ``InvalidVectorSearch`` for arguments of the wrong type)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class IndexNotFound(EngineError, LookupError):
    """A query named an index its table does not have."""

    def __init__(self, message: str, *, table: str, index: str) -> None:
        super().__init__(message)
        self.table = table
        self.index = index

    def __str__(self) -> str:
        return str(self.args[0])


class EvalError(EngineError, ValueError):
    """A filter expression failed to evaluate (Convex: ``EvalError``)."""


class InvalidCursor(EngineError, ValueError):
    """A pagination cursor is malformed, tampered with, or from another query."""


class PaginationError(EngineError, ValueError):
    """Pagination options or usage break Convex's rules.

    ``code`` is Convex's: ``NoDocumentsForPagination``, ``PageSizeTooLarge``,
    ``InvalidPaginationLimit`` or ``MultiplePaginatedDatabaseQueries``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class OptimisticConcurrencyControlFailure(EngineError):
    """A mutation kept conflicting with concurrent commits after every retry."""

    def __init__(self, message: str, *, table: str | None = None, retries: int = 0) -> None:
        super().__init__(message)
        self.table = table
        self.retries = retries


class FunctionNotFound(EngineError, LookupError):
    """No public function of that name is registered (internal ones count as missing)."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class SchedulerError(EngineError, ValueError):
    """``ctx.scheduler`` was given a bad time or target, or scheduled jobs did not finish.

    Example: ``ctx.scheduler.run_after(-1, ...)`` raises ``SchedulerError("`delay` must
    be non-negative ...")``.
    """


class ReadOnlyError(EngineError):
    """A write was attempted through a reader (a query's ``ctx.db``, a system table)."""


class StorageError(EngineError):
    """The storage layer (LMDB) failed; the message carries a hint for the fix."""


class FormatError(StorageError):
    """The database on disk has a format this version cannot read."""


class CorruptionError(StorageError):
    """Stored data breaks an invariant: found by ``Engine.check()``, or met by an open
    or a read (an index entry without its document, a ``meta`` record that does not
    decode).

    ``problems`` lists every broken invariant found, one line each.
    """

    def __init__(self, message: str, *, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems

    @classmethod
    def damaged(cls, problem: str, fix: str) -> CorruptionError:
        """The error of an open or a read that met one damaged record: ``problem`` says
        what, ``fix`` what to do (a sentence)."""
        return cls(f"The database is damaged: {problem}. {fix}", problems=[problem])


class ConvexError(EngineError):
    """An application error carrying a Convex value to the caller.

    ``data`` is any Convex value, taken in its stored form (a tuple becomes a
    list); the message is ``data`` if it is a string, else its JSON.

    Example::

        raise ConvexError({"code": "UNAUTHENTICATED"})

    Raises :class:`ValidationError` (naming the path) when ``data`` is not a Convex
    value: Convex serializes the data to send it to the caller, and fails there.
    """

    def __init__(self, data: Any) -> None:
        if type(data) is not str:
            from .values import convert  # values imports this module

            try:
                data = convert(data)
            except ValidationError as error:
                raise ValidationError(
                    f"ConvexError data must be a Convex value: {error}", path=error.path
                ) from None
        self.data = data
        super().__init__(data if isinstance(data, str) else _json_message(data))


#: convex-js cuts a ConvexError's message past this many characters.
_MAX_MESSAGE_LENGTH = 16384
_TRUNCATED = "[...truncated]"


def _json_message(data: Any) -> str:
    """``data`` as convex-js's ConvexError writes it (``stringifyValueForError``):
    ``JSON.stringify`` of the value as JavaScript holds it, so an Int64 (a bigint) is
    ``"<n>n"``, bytes (an ArrayBuffer) ``{}``, NaN and the infinities ``null``, a float
    as JavaScript prints a number (``2``, ``1e-7``, ``0.00001``); no spaces, keys in
    their order; cut past 16,384 characters. Cost: one pass over ``data`` (a converted
    Convex value, so at most 64 levels deep)."""
    text = _javascript_json(data)
    if len(text) > _MAX_MESSAGE_LENGTH:
        text = text[: _MAX_MESSAGE_LENGTH - len(_TRUNCATED)] + _TRUNCATED
    return text


def _javascript_json(value: Any) -> str:
    import json

    kind = type(value)
    if kind is str:
        return json.dumps(value, ensure_ascii=False)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is int:
        return f'"{value}n"'
    if kind is float:
        return _javascript_number(value)
    if kind is bytes:
        return "{}"
    if kind is list:
        return "[" + ",".join(_javascript_json(item) for item in value) + "]"
    return (
        "{"
        + ",".join(
            json.dumps(key, ensure_ascii=False) + ":" + _javascript_json(item)
            for key, item in value.items()
        )
        + "}"
    )


def _javascript_number(x: float) -> str:
    """``x`` as ECMAScript's Number::toString writes it (JSON: NaN and ±inf are null).

    The shortest digits that read back as ``x`` (Python's ``repr`` finds the same
    ones), laid out by the specification's rules: plain up to 21 integer digits and
    down to 6 leading zeros, else an exponent without padding.
    """
    if x != x or x in (float("inf"), float("-inf")):
        return "null"
    if x == 0:
        return "0"  # -0 too
    import decimal

    sign = "-" if x < 0 else ""
    exact = decimal.Decimal(repr(abs(x))).normalize()
    digits = "".join(map(str, exact.as_tuple().digits))
    k = len(digits)
    n = int(exact.as_tuple().exponent) + k  # the value is 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if n - 1 > 0 else '-'}{abs(n - 1)}"


def closed_error() -> EngineError:
    """What any call to a closed engine raises (one wording for every entry point)."""
    return EngineError("This engine is closed: open it again with Engine.open(path).")


def unavailable_attribute(
    obj: object, name: str, shown: str, kind: str, hint: str | None
) -> NoReturn:
    """Raise the ``AttributeError`` for ``obj.<name>`` (shown as ``shown``, e.g.
    ``ctx.db``) in a function of ``kind``: saying where it is available when ``hint``
    tells it, else Python's usual message."""
    if hint is not None:
        article = "an" if kind == "action" else "a"
        raise AttributeError(
            f"{shown} is not available in {article} {kind}: {hint}.", name=name, obj=obj
        )
    raise AttributeError(
        f"{type(obj).__name__!r} object has no attribute {name!r}", name=name, obj=obj
    )
