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


def _json_message(data: Any) -> str:
    import json

    try:
        return json.dumps(data, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(data)


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
