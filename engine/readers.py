"""``ctx.db``: the database reader (queries) and writer (mutations).

Readers and writers are different types, as in Convex's TypeScript: a
query's ``ctx.db`` is a :class:`DatabaseReader` and has no ``insert``, so a
query cannot write by construction, not by a runtime check alone.
``db.system`` reads the system tables (``_storage``, ``_scheduled_functions``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from . import ids
from .errors import InvalidId, InvalidTable
from .query import Query
from .transaction import check_table_name

if TYPE_CHECKING:
    from .transaction import Transaction

__all__ = ["DatabaseReader", "DatabaseWriter", "SystemReader"]


#: "No second argument": the one-argument (id-only) form of get/patch/replace/delete.
_ID_ONLY: Any = object()


def _id_form(method: str, table_or_id: Any, document_id: Any) -> tuple[str | None, Any]:
    """(table or None, id) of ``method(id)``, ``method(table, id)`` or, as before the
    table-first form, ``method(document_id=id)``."""
    if table_or_id is _ID_ONLY:
        if document_id is _ID_ONLY:
            raise TypeError(f"db.{method}() needs an id: db.{method}(id) or db.{method}(table, id)")
        return None, document_id
    if document_id is _ID_ONLY:
        return None, table_or_id
    return table_or_id, document_id


def _write_form(
    method: str, payload: str, first: Any, second: Any, third: Any, document_id: Any
) -> tuple[str | None, Any, Any]:
    """(table or None, id, fields or document) of ``method(id, x)``,
    ``method(table, id, x)`` and the keyword forms from before the table-first one,
    ``method(id, {payload}=x)`` and ``method(document_id=id, {payload}=x)``."""
    if first is _ID_ONLY:  # method(document_id=id, payload=x)
        table, target, value = None, document_id, third
    elif document_id is not _ID_ONLY:
        raise TypeError(f"db.{method}() got the id twice (positional and document_id=)")
    elif second is _ID_ONLY:  # method(id, payload=x)
        table, target, value = None, first, third
    elif third is _ID_ONLY:  # method(id, x)
        table, target, value = None, first, second
    else:  # method(table, id, x)
        table, target, value = first, second, third
    if target is _ID_ONLY or value is _ID_ONLY:
        raise TypeError(
            f"db.{method}() takes (id, {payload}) or (table, id, {payload}); "
            f"got an id or the {payload} missing"
        )
    return table, target, value


def _check_id_table(txn: Transaction, method: str, table: object, document_id: object) -> None:
    """For the table-first forms (``db.get(table, id)``, Convex's preferred spelling
    since 2025): refuse an id of another existing table, as Convex's
    ``check_table_name`` (crates/isolate/src/environment/helpers/mod.rs) does.

    A malformed id, or an id of a table that does not exist, is left to the call
    itself (``InvalidId``; None or ``DocumentNotFound``), as in Convex.
    """
    if not isinstance(table, str):
        raise InvalidTable(
            f"Invalid argument `table` for `{method}`: a table name is a str, got {table!r}",
            table=None,
        )
    if not isinstance(document_id, str):  # a str subclass is the id it holds
        return
    try:
        number, _ = ids.decode_id(document_id)
    except InvalidId:
        return
    found = txn.table_by_number(number)
    if found is not None and found.name != table:
        raise InvalidTable(
            f"Invalid argument `id` for `{method}`: expected to be an "
            f'Id<"{table}">, got Id<"{found.name}"> instead.',
            table=table,
        )


class _Reads:
    __slots__ = ("_txn",)

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn

    def _normalize(self, table: str, document_id: object) -> str | None:
        if not isinstance(table, str):
            raise InvalidTable(f"normalize_id: a table name is a str, got {table!r}", table=None)
        check_table_name(table, system=True)
        if not isinstance(document_id, str):
            return None
        try:
            number, _ = ids.decode_id(document_id)
        except InvalidId:
            return None
        found = self._txn.table(table)
        if found is None or found.number != number:
            return None
        return document_id if type(document_id) is str else str.__str__(document_id)


class SystemReader(_Reads):
    """``db.system``: read-only access to ``_storage`` and ``_scheduled_functions``."""

    __slots__ = ()

    def _check(self, table: str, method: str) -> None:
        check_table_name(table, system=True)  # not a str: "Invalid table name", not "User"
        if not table.startswith("_"):
            raise InvalidTable(
                f"User tables can only be accessed from db.{method}(). (table {table!r})",
                table=table,
            )

    def get(
        self, table_or_id: str = _ID_ONLY, document_id: str = _ID_ONLY
    ) -> dict[str, Any] | None:
        """The system document with this id, or None: ``get(id)`` or ``get(table, id)``.

        Raises :class:`SystemTableError` for an id of a user table (existing or
        not), as Convex: read those with ``ctx.db.get``; :class:`InvalidTable` for
        an id of another table than ``table``.
        """
        table, document_id = _id_form("system.get", table_or_id, document_id)
        if table is not None:
            _check_id_table(self._txn, "db.system.get", table, document_id)
        return self._txn.get(document_id, True)

    def query(self, table: str) -> Query:
        """A query over a system table (``_storage``, ``_scheduled_functions``)."""
        self._check(table, "query")
        return Query(self._txn, table)

    def normalize_id(self, table: str, document_id: str) -> str | None:
        """``document_id`` if it is an id of system table ``table``, else None."""
        self._check(table, "normalize_id")
        return self._normalize(table, document_id)


class Absent:
    """A descriptor for a name a class lacks on purpose (a query's ``ctx.db.insert``):
    reading it raises the AttributeError of :meth:`missing`, which says where the
    name is available; :func:`visible_names` leaves it out of ``dir()``.

    Descriptors, not a ``__getattr__``: a class with one makes every attribute read of
    its instances slower (CPython does not specialize them), ~35 ns per ``ctx.db.get``.
    """

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:  # read on the class: Python's usual error
            raise AttributeError(
                f"type object {getattr(owner, '__name__', '?')!r} has no attribute {self.name!r}",
                name=self.name,
                obj=owner,
            )
        self.missing(obj)

    def missing(self, obj: object) -> NoReturn:
        """Raise the error for reading this name on ``obj``."""
        raise NotImplementedError


def visible_names(obj: object) -> list[str]:
    """``dir(obj)`` without the names its class lacks on purpose (:class:`Absent`)."""
    mro = type(obj).__mro__

    def absent(name: str) -> bool:
        for cls in mro:
            if name in vars(cls):
                return isinstance(vars(cls)[name], Absent)
        return False

    return [name for name in object.__dir__(obj) if not absent(name)]


class _WriteInQuery(Absent):
    """A writing method of ``ctx.db`` read in a query: says where writing is."""

    __slots__ = ()

    def missing(self, obj: object) -> NoReturn:
        raise AttributeError(
            f"ctx.db.{self.name} is not available in a query: a query's ctx.db only reads. "
            "Write from a mutation (from an action, through ctx.run_mutation).",
            name=self.name,
            obj=obj,
        )


class DatabaseReader(_Reads):
    """A query's ``ctx.db``: ``get``, ``query``, ``normalize_id``, ``system``.

    Example::

        @query(args={"id": v.id("tasks")})
        def get_task(ctx, id):
            return ctx.db.get(id)
    """

    __slots__ = ("_system",)

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn
        self._system: SystemReader | None = None

    if TYPE_CHECKING:  # as before: type checkers let any name through

        def __getattr__(self, name: str) -> Any: ...

    else:
        # A query's ctx.db.insert said no more than "'DatabaseReader' object has no
        # attribute 'insert'": these say where writing is (see Absent).
        insert = _WriteInQuery()
        patch = _WriteInQuery()
        replace = _WriteInQuery()
        delete = _WriteInQuery()

    def __dir__(self) -> list[str]:
        return visible_names(self)

    @property
    def system(self) -> SystemReader:
        """The reader of system tables (made on first use)."""
        system = self._system
        if system is None:
            system = self._system = SystemReader(self._txn)
        return system

    def get(
        self, table_or_id: str = _ID_ONLY, document_id: str = _ID_ONLY
    ) -> dict[str, Any] | None:
        """The document with this id, or None. Cost: one lookup; records a point read.

        ``get(id)`` or, as Convex prefers since 2025, ``get(table, id)``, which also
        checks that the id belongs to ``table``.

        Raises :class:`InvalidId` if ``document_id`` is not a well-formed id,
        :class:`SystemTableError` for an id of a system table (``_storage``,
        ``_scheduled_functions``; existing or not), as Convex: read those with
        ``ctx.db.system.get``; and :class:`InvalidTable` for an id of another table
        than ``table`` (``expected to be an Id<"a">, got Id<"b"> instead.``).
        """
        if document_id is _ID_ONLY and table_or_id is not _ID_ONLY:  # get(id): the hot path
            return self._txn.get(table_or_id, False)
        table, document_id = _id_form("get", table_or_id, document_id)
        if table is not None:
            _check_id_table(self._txn, "db.get", table, document_id)
        return self._txn.get(document_id, False)

    def query(self, table: str) -> Query:
        """Start a lazy query over ``table`` (see :class:`engine.query.Query`).

        A table that does not exist reads no rows; a name that is not an identifier
        raises :class:`InvalidTable`, as Convex.
        """
        check_table_name(table, system=True)  # not a str: "Invalid table name"
        if table.startswith("_"):
            raise InvalidTable(
                f"System tables can only be accessed from db.system.query(). (table {table!r})",
                table=table,
            )
        return Query(self._txn, table)

    def normalize_id(self, table: str, document_id: str) -> str | None:
        """``document_id`` if it is an id of ``table`` (existence is not checked), else None.

        Raises :class:`InvalidTable` for a table name that is not an identifier, or
        that of a system table (read those with ``db.system.normalize_id``), as Convex.
        """
        if isinstance(table, str) and table.startswith("_"):
            raise InvalidTable(
                "System tables can only be accessed from db.system.normalize_id(). "
                f"(table {table!r})",
                table=table,
            )
        return self._normalize(table, document_id)


class DatabaseWriter(DatabaseReader):
    """A mutation's ``ctx.db``: the reader plus ``insert``, ``patch``, ``replace``, ``delete``.

    Writes are buffered in the transaction and visible to its own reads at
    once; they reach the database when the mutation commits.
    """

    __slots__ = ()

    def insert(self, table: str, document: dict[str, Any]) -> str:
        """Insert ``document`` into ``table`` (created if needed); returns the new id.

        Cost: one id, one encoding, one key per index of the table. Raises
        :class:`ValidationError` / :class:`SchemaValidationError` for bad documents.
        """
        return self._txn.insert(table, document)

    def patch(
        self,
        table_or_id: str = _ID_ONLY,
        id_or_fields: Any = _ID_ONLY,
        fields: dict[str, Any] = _ID_ONLY,
        *,
        document_id: str = _ID_ONLY,
    ) -> None:
        """Shallow-merge ``fields``; a field set to ``engine.UNSET`` is removed.

        ``patch(id, fields)`` or ``patch(table, id, fields)`` (Convex's preferred form,
        which also checks that the id belongs to ``table``: else :class:`InvalidTable`).
        Raises :class:`DocumentNotFound` if the document does not exist.
        """
        self._write("patch", "fields", table_or_id, id_or_fields, fields, document_id)

    def replace(
        self,
        table_or_id: str = _ID_ONLY,
        id_or_document: Any = _ID_ONLY,
        document: dict[str, Any] = _ID_ONLY,
        *,
        document_id: str = _ID_ONLY,
    ) -> None:
        """Replace all user fields, keeping ``_id`` and ``_creationTime``.

        ``replace(id, document)`` or ``replace(table, id, document)`` (see :meth:`patch`).
        """
        self._write("replace", "document", table_or_id, id_or_document, document, document_id)

    def _write(
        self, method: str, payload: str, first: Any, second: Any, third: Any, document_id: Any
    ) -> None:
        """``patch`` or ``replace`` in any of their forms (see :func:`_write_form`)."""
        table, target, value = _write_form(method, payload, first, second, third, document_id)
        if table is not None:
            _check_id_table(self._txn, f"db.{method}", table, target)
        getattr(self._txn, method)(target, value)

    def delete(self, table_or_id: str = _ID_ONLY, document_id: str = _ID_ONLY) -> None:
        """Delete the document: ``delete(id)`` or ``delete(table, id)`` (see :meth:`patch`).

        Raises :class:`DocumentNotFound` if it does not exist.
        """
        table, document_id = _id_form("delete", table_or_id, document_id)
        if table is not None:
            _check_id_table(self._txn, "db.delete", table, document_id)
        self._txn.delete(document_id)
