"""The query builder: ``ctx.db.query(table).with_index(...).order(...).filter(...)``.

A query is lazy: nothing is read until a terminal method (``collect``,
``take``, ``first``, ``unique``, ``paginate``) or iteration runs it, and it
streams rows from one index scan without loading the table. Without
``with_index`` a query scans ``by_creation_time``.

Index ranges follow Convex's grammar: equalities on a prefix of the index
fields, then at most one lower and one upper bound on the next field.
The range compiles to one half-open byte interval of index keys
(:class:`IndexRange`), which is also exactly what the read set records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from numbers import Integral
from typing import TYPE_CHECKING, Any

from . import ids, keys
from .catalog import BY_CREATION_TIME, BY_ID, NEXT_TABLE_KEY, SEARCH, VECTOR, IndexDef, TableDef
from .errors import (
    EvalError,
    IndexNotFound,
    InvalidId,
    InvalidIndexRange,
    ValidationError,
)
from .filters import (
    MAX_QUERY_OPERATORS,
    Expression,
    compile_filters,
    field_path_problem,
    predicate,
)
from .ordering import compare
from .search import SearchFilterBuilder, SearchPlan
from .values import UNSET, convert, format_value, type_name

if TYPE_CHECKING:
    from .transaction import Transaction

__all__ = ["IndexRange", "IndexRangeBuilder", "Query"]


class IndexRangeBuilder:
    """The ``q`` of ``.with_index(name, lambda q: ...)``: records eq/gt/gte/lt/lte."""

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[tuple[str, str, Any]] = []

    def _add(self, op: str, field: str, value: Any) -> IndexRangeBuilder:
        if not isinstance(field, str):
            raise InvalidIndexRange(f"Index range fields are names (str), got {field!r}")
        # Parsed as Convex parses a range's field path: trimmed of dots, each step
        # an identifier (an unparsable path fails before any grammar check).
        path = field.strip(".")
        problem = field_path_problem(path) if path else f"Empty path {field}"
        if problem is not None:
            raise InvalidIndexRange(f"Invalid field path {field!r} in the index range: {problem}")
        self._ops.append((op, path, value if value is UNSET else convert(value)))
        return self

    def eq(self, field: str, value: Any) -> IndexRangeBuilder:
        """Documents whose ``field`` equals ``value`` (``UNSET``: the field is missing)."""
        return self._add("eq", field, value)

    def gt(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._add("gt", field, value)

    def gte(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._add("gte", field, value)

    def lt(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._add("lt", field, value)

    def lte(self, field: str, value: Any) -> IndexRangeBuilder:
        return self._add("lte", field, value)


#: The fields of the indexes every table has, whatever it is (effective_fields).
_TABLE_FREE_FIELDS = {BY_ID: ["_id"], BY_CREATION_TIME: ["_creationTime", "_id"]}


def effective_fields(name: str, index: IndexDef) -> list[str]:
    """The fields an index orders by: declared, then ``_creationTime``, then ``_id``."""
    fields = _TABLE_FREE_FIELDS.get(name)
    if fields is not None:
        return list(fields)
    return [*index.fields, "_creationTime", "_id"]


def _id_position(value: Any, table: TableDef) -> tuple[bytes | None, bool]:
    """Where ``value`` falls among the ids of ``table``, as an ``_id`` range bound.

    An id is a string and ``_id`` compares as one: Convex's index key holds it as a
    String (``IndexKey`` in crates/common/src/index.rs) and ``IndexRange::compile``
    (crates/common/src/query.rs) accepts any value, so a bound need not be an id of
    the table. Our keys end with the internal id, which sorts as the id strings do
    within a table. Returns the internal id of the first id sorting at or after
    ``value`` (None: none does) and whether that id equals ``value``. Cost: a dict
    lookup for an id of the table; a few big-integer operations for any other string.
    """
    if type(value) is str:
        try:
            number, internal_id = ids.decode_id(value)
        except InvalidId:
            pass
        else:
            if number == table.number:
                return internal_id, True
        return ids.first_at_or_after(table.number, value), False
    # Other types compare by type alone: before every string, or after.
    return (bytes(16) if compare(value, "") < 0 else None), False


def _position(field: str, value: Any, table: TableDef, prefix: bytes, after: bool) -> bytes | None:
    """The index key where ``field``'s values stop being below ``value`` (``after``:
    stop being at most ``value``), after the equality ``prefix``; None: past them all."""
    if field != "_id":
        part = prefix + keys.encode(value)
        return keys.prefix_end(part) if after else part
    internal_id, exact = _id_position(value, table)
    if internal_id is None:
        return None
    part = prefix + internal_id
    return keys.prefix_end(part) if after and exact else part


def describe_ops(ops: list[tuple[str, str, Any]]) -> list[Any]:
    """A range's operations as ``[op, field, type, value]`` rows (cursor fingerprints).

    The same rows whether or not the table exists yet (a range given before its table
    was created compiles when the query runs), so a cursor issued then stays valid.
    """
    # The exact value (its sort key), never a shortened rendering: two ranges that
    # differ only past a long string's first characters are different queries.
    return [
        # Lowercased type names: what cursors were fingerprinted with before
        # type_name took Convex's capitalized spelling (issued cursors stay valid).
        [op, field, type_name(value).lower(), keys.encode(value).hex()]
        for op, field, value in ops
    ]


_CHAINED_TWICE = (
    "A query can only be chained once and can't be chained after iteration begins. "
    "Start again from ctx.db.query(table), or keep the query each step returns."
)
# The states of a query made by a builder step, as convex-js's QueryImpl has them: a
# step or a limiting terminal takes it (closed); collect() and iteration run it
# (executing, then consumed). Each misuse gets Convex's message.
_PREPARING, _CLOSED, _EXECUTING, _CONSUMED = range(4)
_NOT_STARTABLE = {
    _EXECUTING: "Iteration can only begin on a query once.",
    _CLOSED: "This query has been chained with another operator and can't be reused.",
    _CONSUMED: "This query is closed and can't emit any more values.",
}


class IndexRange:
    """A compiled index range: the byte interval ``[lo, hi)`` and its description."""

    __slots__ = ("_ops", "hi", "lo")

    def __init__(self, lo: bytes, hi: bytes, ops: list[tuple[str, str, Any]]) -> None:
        self.lo = lo
        self.hi = hi
        self._ops = ops

    @classmethod
    def whole(cls, index: IndexDef) -> IndexRange:
        """The range of every key of ``index`` (a query without a range).

        Shared: ranges are never changed once made, and one of a whole index depends
        only on the index's number. Cost: one dict lookup.
        """
        found = _WHOLE.get(index.number)
        if found is None:
            prefix = index.prefix
            found = cls(prefix, keys.prefix_end(prefix) or b"\xff" * 8, [])
            if len(_WHOLE) >= _SHAPES_MAX:
                _WHOLE.clear()
            _WHOLE[index.number] = found
        return found

    @property
    def description(self) -> list[Any]:
        """The range as ``[op, field, type, value]`` rows (for cursor fingerprints).

        Made on demand: rendering values costs microseconds that most queries,
        which never paginate, would pay for nothing.
        """
        return describe_ops(self._ops)

    @classmethod
    def compile(
        cls, table: TableDef, index_name: str, index: IndexDef, ops: list[tuple[str, str, Any]]
    ) -> IndexRange:
        """Check ``ops`` against Convex's range grammar and turn them into bytes.

        The grammar depends only on the index's fields and the ``(op, field)``
        sequence, so its verdict is remembered per shape: a query run again with
        other values only encodes them. Cost: one dict lookup and the encodings.
        """
        if not ops:
            return cls.whole(index)
        key = (index_name, index.fields, tuple([(op, field) for op, field, _ in ops]))
        shape = _SHAPES.get(key)
        if shape is None:
            shape = _check_shape(table.name, index_name, effective_fields(index_name, index), ops)
            if len(_SHAPES) >= _SHAPES_MAX:
                _SHAPES.clear()
            _SHAPES[key] = shape
        equalities, lower, upper = shape
        prefix = index.prefix
        for i in equalities:
            _, field, value = ops[i]
            if field != "_id":
                prefix += keys.encode(value)
                continue
            # _id is an index's last field: nothing is bounded after an equality on it.
            internal_id, exact = _id_position(value, table)
            if not exact or internal_id is None:  # no id of the table equals it: empty
                return cls(prefix, prefix, list(ops))
            prefix += internal_id
        lo, hi = prefix, keys.prefix_end(prefix) or b"\xff" * 8
        if lower >= 0:
            op, field, value = ops[lower]
            position = _position(field, value, table, prefix, op == "gt")
            lo = hi if position is None else position
        if upper >= 0:
            op, field, value = ops[upper]
            position = _position(field, value, table, prefix, op == "lte")
            hi = hi if position is None else position
        return cls(lo, hi, list(ops))


#: A range's shape, once checked: the positions in ``ops`` of the equalities (in
#: index order), of the lower bound and of the upper bound (-1: none).
_Shape = tuple[tuple[int, ...], int, int]
_SHAPES: dict[tuple[Any, ...], _Shape] = {}
_SHAPES_MAX = 4096
#: IndexRange.whole's ranges, by index number.
_WHOLE: dict[int, IndexRange] = {}


def _check_shape(
    table_name: str, index_name: str, fields: list[str], ops: list[tuple[str, str, Any]]
) -> _Shape:
    """Where each op goes in the range; raises :class:`InvalidIndexRange` as Convex does.

    In Convex's order (``IndexRange::split`` then ``compile`` in
    crates/common/src/query.rs): while reading the ops, a second eq on a field, or
    a second lower or upper bound, is ``AlreadyDefinedBound`` (before any other
    check), a bound on a second field ``BoundsOnMultipleFields``; then an eq and a
    bound on one field ``AlreadyDefinedBound``; then a field the index lacks
    ``FieldNotInIndex``; then fields out of index order ``InvalidIndexRange``.
    """
    position = {f: i for i, f in enumerate(fields)}
    equalities: dict[str, int] = {}
    lower: int = -1
    upper: int = -1
    bound_field: str | None = None
    for i, (op, field, value) in enumerate(ops):
        if op == "eq":
            if field in equalities:
                old = ops[equalities[field]][2]
                raise _already_defined("equality", field, "==", old)
            equalities[field] = i
            continue
        is_lower = op in ("gt", "gte")
        if (lower if is_lower else upper) >= 0:
            raise _already_defined("lower" if is_lower else "upper", field, _SYMBOLS[op], value)
        if bound_field is not None and bound_field != field:
            raise InvalidIndexRange(
                "Upper and lower bounds in `range` can only be applied to a single index "
                f"field. This query against index {table_name}.{index_name} attempted to set "
                f'a range bound on both "{bound_field}" and "{field}". Consider using '
                "`filter` instead. See https://docs.convex.dev/using/indexes for more info.",
                code="BoundsOnMultipleFields",
            )
        bound_field = field
        if is_lower:
            lower = i
        else:
            upper = i
    if bound_field is not None and bound_field in equalities:
        raise _already_defined("inequality", bound_field, "==", ops[equalities[bound_field]][2])
    shown = _shown_fields(fields)
    for field in [*sorted(equalities), *([bound_field] if bound_field is not None else [])]:
        if field not in position:
            raise InvalidIndexRange(
                f'The index range included a comparison with "{field}", but '
                f"{table_name}.{index_name} with fields {shown} doesn't index this field. "
                "For more information see https://docs.convex.dev/using/indexes.",
                code="FieldNotInIndex",
            )
    used = sorted(equalities, key=position.__getitem__)
    ordered = [*used, bound_field] if bound_field is not None else used
    for i, field in enumerate(ordered):
        if fields[i] != field:
            query_fields = "[" + ", ".join(f'"{f}"' for f in ordered) + "]"
            raise InvalidIndexRange(
                f"Tried to query index {table_name}.{index_name} but the query didn't use "
                f"the index fields in order.\nIndex fields: {shown}\nQuery fields: "
                f'{query_fields}\nFirst incorrect field: "{field}"\n'
                "For more information see https://docs.convex.dev/using/indexes.",
                code="InvalidIndexRange",
            )
    return tuple(equalities[f] for f in used), lower, upper


_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _already_defined(kind: str, field: str, symbol: str, value: Any) -> InvalidIndexRange:
    return InvalidIndexRange(
        f'Already defined {kind} bound in index range. Can\'t add "{field}" {symbol} '
        f"{format_value(value)}.",
        code="AlreadyDefinedBound",
    )


def _shown_fields(fields: list[str]) -> str:
    """An index's fields as Convex prints them: quoted, without the implicit ``_id``."""
    return "[" + ", ".join(f'"{f}"' for f in fields if f != "_id") + "]"


def _queryable(table_name: str, table: TableDef, name: str) -> IndexDef | None:
    """Index ``name`` of ``table`` (None if it has none); raises :class:`IndexNotFound`
    while it is backfilling."""
    index = table.indexes.get(name)
    if index is not None and index.state != "ready":
        # Convex's index_backfilling_error (crates/indexing/src/index_registry.rs).
        raise IndexNotFound(
            f"Index {table_name}.{name} is currently backfilling and not available "
            "to query yet. (Opening the engine finishes an interrupted backfill.)",
            table=table_name,
            index=name,
        )
    return index


class Query:
    """A lazy query over one table. Build it with ``ctx.db.query(table)``.

    Example::

        (ctx.db.query("messages")
            .with_index("by_channel", lambda q: q.eq("channel", "general"))
            .order("desc")
            .take(10))
    """

    __slots__ = (
        "_filters",
        "_index",
        "_index_name",
        "_initializer",
        "_ops",
        "_order",
        "_range",
        "_search",
        "_state",
        "_table",
        "_table_name",
        "_txn",
    )

    def __init__(self, txn: Transaction, table_name: str) -> None:
        self._txn = txn
        self._table_name = table_name
        self._table: TableDef | None = txn.table(table_name)
        self._index_name: str | None = None
        self._index: IndexDef | None = None
        self._range: IndexRange | None = None
        self._order: str | None = None
        self._filters: list[Expression] = []
        #: A range given before its table existed, compiled when the query runs.
        self._ops: list[tuple[str, str, Any]] | None = None
        #: The compiled search filter of a ``with_search_index`` query (else None).
        self._search: SearchPlan | None = None
        #: ``ctx.db.query(t)`` itself, which may start any number of queries; a query
        #: made by a builder step is used once (its ``_state``, Convex's).
        self._initializer = True
        self._state = _PREPARING

    # -- building ----------------------------------------------------------
    #
    # As in Convex: ``ctx.db.query(t)`` can start several queries (each step returns a
    # new query); a query made by a step can be chained once, and is then used up: a
    # discarded ``q.filter(...)`` must not leave ``q`` running without the filter.

    def _usable(self) -> None:
        """Raise if this query was used: by a step, a terminal or iteration."""
        if self._state != _PREPARING:
            raise ValidationError(_CHAINED_TWICE)

    def _chain(self) -> None:
        """Take the query, as a builder step, ``take``, ``first``, ``unique`` and
        ``paginate`` do (Convex's ``takeQuery``); the initializer ``ctx.db.query(t)``
        starts a new query each time."""
        self._usable()
        if not self._initializer:
            self._state = _CLOSED

    def _start(self) -> None:
        """Start running, as ``collect()`` and iteration do (Convex's ``startQuery``):
        a query made by a step runs once; pair with :meth:`_finish`."""
        message = _NOT_STARTABLE.get(self._state)
        if message is not None:
            raise ValidationError(message)
        if not self._initializer:
            self._state = _EXECUTING

    def _finish(self) -> None:
        if not self._initializer:
            self._state = _CONSUMED

    def _copy(self) -> Query:
        self._chain()
        other = Query.__new__(Query)
        other._initializer = False
        other._state = _PREPARING
        other._txn = self._txn
        other._table_name = self._table_name
        other._table = self._table
        other._index_name = self._index_name
        other._index = self._index
        other._range = self._range
        other._order = self._order
        other._filters = list(self._filters)
        other._ops = self._ops
        other._search = self._search
        return other

    def _table_now(self) -> TableDef | None:
        """The table, looked up again while it is missing: the mutation may have
        created it since this query was made (Convex resolves it when the query runs)."""
        table = self._table
        if table is None:
            table = self._table = self._txn.table(self._table_name)
        return table

    def with_index(
        self, name: str, range: Callable[[IndexRangeBuilder], Any] | None = None
    ) -> Query:
        """Read through index ``name``, restricted to ``range`` (optional).

        Raises :class:`IndexNotFound` for an unknown index and
        :class:`InvalidIndexRange` for a range that breaks the grammar.
        """
        self._only_index("with_index")
        builder = IndexRangeBuilder()
        if range is not None:
            if not callable(range):
                raise InvalidIndexRange(
                    f"with_index({name!r}, range) expects a function of q, such as "
                    f"lambda q: q.eq('field', value), got {range!r}"
                )
            result = range(builder)
            if result is not None and result is not builder:
                raise InvalidIndexRange(
                    "The index range callback must return q (or nothing): "
                    "chain q.eq(...).gt(...) on the builder it receives."
                )
        try:
            table = self._table_now()
            query = self._copy()
            query._index_name = name
            if table is None:
                from .crontables import engine_indexes  # imported here: crontables uses Query

                if name not in (BY_ID, BY_CREATION_TIME, *engine_indexes(self._table_name)):
                    raise IndexNotFound(
                        f"Index {self._table_name}.{name} not found: table {self._table_name!r} "
                        "does not exist yet.",
                        table=self._table_name,
                        index=name,
                    )
                if builder._ops and name in _TABLE_FREE_FIELDS:
                    # Their fields do not depend on the table: the range is checked now, as
                    # it will be once the table exists (its values compile when it runs).
                    _check_shape(self._table_name, name, _TABLE_FREE_FIELDS[name], builder._ops)
                query._range = None
                query._ops = builder._ops
                return query
            index = _queryable(self._table_name, table, name)
            if index is None:
                known = ", ".join(
                    sorted(
                        n
                        for n, i in table.indexes.items()
                        if i.state == "ready" and i.kind not in (SEARCH, VECTOR)
                    )
                )
                raise IndexNotFound(
                    f"Index {self._table_name}.{name} not found. Indexes of this table: {known}. "
                    "Declare indexes in the schema with define_table(...).index(name, fields).",
                    table=self._table_name,
                    index=name,
                )
            if index.is_search or index.is_vector:
                # Convex's index_not_a_database_index_error (database_index_snapshot.rs).
                raise IndexNotFound(
                    f"Index {self._table_name}.{name} is not a database index. "
                    + (
                        "It is a search index: query it with .with_search_index(name, "
                        "lambda q: q.search(...))."
                        if index.is_search
                        else "It is a vector index: search it from an action with "
                        "ctx.vector_search(table, index, vector=...)."
                    ),
                    table=self._table_name,
                    index=name,
                )
            query._index = index
            query._range = IndexRange.compile(table, name, index, builder._ops)
            return query
        except (IndexNotFound, InvalidIndexRange):
            self._read_catalog()
            raise

    def _read_catalog(self) -> None:
        """Record that this query's outcome came from the catalog (its table's indexes):
        an index missing, still backfilling, of another kind, or without the range's
        fields. Every catalog change logs ``NEXT_TABLE_KEY``, so a mutation that caught
        the error conflicts with the schema change or finished backfill that would have
        let the query run, as it would with any other read it acted on."""
        self._txn.reads.add_point(NEXT_TABLE_KEY)

    def _only_index(self, method: str) -> None:
        """Raise unless ``method`` (``with_index``, ``with_search_index``) may come now."""
        if self._index_name is not None:
            raise ValidationError(
                "A query may use only one index: with_index or with_search_index was already "
                f"called with {self._index_name!r}."
            )
        if self._order is not None or self._filters:
            raise ValidationError(
                f"{method} must come first in a query: call it before .order() and .filter()."
            )

    def with_search_index(self, name: str, search: Callable[[SearchFilterBuilder], Any]) -> Query:
        """Read through full-text search index ``name``: ``search`` receives a
        :class:`engine.search.SearchFilterBuilder` ``q`` and returns
        ``q.search(search_field, text)`` chained with up to 8 ``.eq(filter_field, value)``.

        Results come in relevance order (``order()`` is refused), at most 1024 of them;
        ``filter`` applies after the search. See docs/concepts/search.md. Cost: one
        range read per distinct term (see :mod:`engine.search`), when the query runs.

        Raises :class:`IndexNotFound` for an unknown index or one that is not a search
        index, :class:`InvalidIndexRange` (with Convex's ``.code``) for a filter that
        does not fit the index. Example::

            ctx.db.query("messages").with_search_index(
                "search_body", lambda q: q.search("body", "hello").eq("channel", "general")
            ).take(10)
        """
        self._only_index("with_search_index")
        table = self._table_now()
        try:
            index = None if table is None else _queryable(self._table_name, table, name)
            plan = SearchPlan.build(self._table_name, table, name, index, search)
        except (IndexNotFound, InvalidIndexRange):
            self._read_catalog()
            raise
        query = self._copy()
        query._index_name = name
        query._index = plan.index
        query._search = plan
        return query

    def order(self, order: str) -> Query:
        """``"asc"`` (the default) or ``"desc"``, by the full index key."""
        if self._search is not None:
            self._usable()
            # convex-js QueryImpl.order.
            raise ValidationError(
                "Search queries must always be in relevance order. Can not set order manually."
            )
        if self._order is not None:
            raise ValidationError("Queries may only specify order at most once")
        if order not in ("asc", "desc"):
            raise ValidationError(f'order must be "asc" or "desc", got {order!r}')
        query = self._copy()
        query._order = order
        return query

    def filter(self, build: Callable[[Any], Any]) -> Query:
        """Keep only documents for which the expression built by ``build`` is true.

        Filters do not narrow the scan: filtered-out documents count toward
        the read limits. Prefer an index range where one fits. Raises
        :class:`EvalError` past Convex's 256 operators per query.
        """
        if not callable(build):
            raise EvalError(
                f"filter() expects a function of q, such as lambda q: q.eq(q.field('done'), "
                f"False), got {build!r}"
            )
        expression = predicate(build)
        if len(self._filters) >= MAX_QUERY_OPERATORS:  # each filter is one operator
            raise EvalError(f"Can't construct query with more than {MAX_QUERY_OPERATORS} operators")
        query = self._copy()
        query._filters.append(expression)
        return query

    # -- running -------------------------------------------------------------

    def _resolved(self) -> tuple[TableDef, IndexDef, IndexRange] | None:
        table = self._table_now()
        if table is None:
            return None
        if self._index is None or self._range is None:
            name = self._index_name or BY_CREATION_TIME
            index = table.indexes[name]
            self._index = index
            self._range = (
                IndexRange.compile(table, name, index, self._ops)
                if self._ops
                else IndexRange.whole(index)
            )
        return table, self._index, self._range

    def _rows(
        self, lo: bytes | None = None, hi: bytes | None = None
    ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``(index key, document)`` for rows passing the filters, optionally within ``[lo, hi)``."""
        resolved = self._resolved()
        if resolved is None:
            return
        table, index, rng = resolved
        start = rng.lo if lo is None or lo < rng.lo else lo
        end = rng.hi if hi is None or hi > rng.hi else hi
        if start >= end:
            return
        keep = self._keep()
        for key, document in self._txn.scan(
            table, index, start, end, reverse=self._order == "desc"
        ):
            if keep is None or keep(document):
                yield key, document

    def _keep(self) -> Callable[[dict[str, Any]], bool] | None:
        """The query's filters as one compiled predicate (None without filters)."""
        return compile_filters(self._filters) if self._filters else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Stream the documents, one LMDB step at a time."""
        self._start()
        try:
            if self._search is not None:
                yield from self._searched(None)
                return
            for _, document in self._rows():
                yield document
        finally:  # exhausted, or the loop left early (the generator closed)
            self._finish()

    def _searched(self, limit: int | None) -> Iterator[dict[str, Any]]:
        """The documents of a search query passing the filters, best first (up to
        ``limit``): the search runs when the first is asked for."""
        assert self._search is not None
        txn = self._txn
        keep = self._keep()
        found = 0
        if limit == 0:
            return
        for _, document in self._search.run(txn).fetch(txn):
            if document is not None and (keep is None or keep(document)):
                yield document
                found += 1
                if found == limit:
                    return

    def _batch(self, limit: int | None) -> list[dict[str, Any]]:
        """Up to ``limit`` matching documents, read in one loop when the snapshot allows
        (the caller took or started the query)."""
        if self._search is not None:
            return list(self._searched(limit))
        resolved = self._resolved()
        if resolved is None:
            return []
        table, index, rng = resolved
        rows = self._txn.read_rows(
            table,
            index,
            rng.lo,
            rng.hi,
            reverse=self._order == "desc",
            limit=limit,
            keep=self._keep(),
        )
        if rows is not None:
            return rows.documents
        out: list[dict[str, Any]] = []
        for _, document in self._rows():
            out.append(document)
            if limit is not None and len(out) >= limit:
                # The scan stops here, short of its end: its range is final, and may be
                # one more than the ranges limit allows (a scan ended checks it itself).
                self._txn.reads.check_read()
                break
        return out

    def collect(self) -> list[dict[str, Any]]:
        """Every matching document. Cost: a scan of the whole range."""
        self._start()
        try:
            return self._batch(None)
        finally:
            self._finish()

    def take(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` matching documents (``n`` a non-negative integer).

        A whole ``float`` counts as the integer it holds, as in Convex, whose ``n`` is a
        JavaScript number (``Number.isInteger``): a limit passed in as a ``v.number()``
        argument works. A NumPy integer is an integer too (as ``ctx.vector_search``'s
        ``limit``). Raises :class:`ValidationError` otherwise.
        """
        if type(n) is not int and (
            (type(n) is float and n.is_integer())
            or (isinstance(n, Integral) and not isinstance(n, bool))  # np.bool_ is none
        ):
            n = int(n)
        if type(n) is not int or n < 0:
            raise ValidationError(
                f"Arg 1 `n` to `take` must be a non-negative integer, got {format_value(n)}"
            )
        if len(self._filters) >= MAX_QUERY_OPERATORS:
            # take (and first, unique) adds Convex's limit operator to the filters: the
            # backend refuses a query of more than 256 (JsonQuery in common/src/json).
            raise EvalError(f"Query has too many operators: {len(self._filters) + 1}")
        self._chain()  # takes the query (Convex's limit(n)), for n == 0 too
        return [] if n == 0 else self._batch(n)

    def first(self) -> dict[str, Any] | None:
        """The first matching document, or None."""
        found = self.take(1)
        return found[0] if found else None

    def unique(self) -> dict[str, Any] | None:
        """The only matching document, or None; raises if there are several."""
        found = self.take(2)
        if len(found) > 1:
            raise ValidationError(
                f"unique() query returned more than one result from table {self._table_name}:\n"
                f" [{', '.join(d['_id'] for d in found)}, ...]"
            )
        return found[0] if found else None

    def paginate(self, opts: dict[str, Any]) -> dict[str, Any]:
        """One page of results and a cursor to continue: see :mod:`engine.pagination`."""
        from .pagination import paginate, paginate_search

        self._chain()
        if self._search is not None:
            return paginate_search(self, self._search, opts)
        return paginate(self, opts)

    def fingerprint(self) -> list[Any]:
        """What identifies this query for cursors: table, index, range, order, filters."""
        if self._search is not None:
            search = self._search
            return [
                self._table_name,
                search.index.name,
                ["search", *search.index.fields],
                search.description(),
                "relevance",
                [f.fingerprint() for f in self._filters],
            ]
        self._resolved()  # a table created since the query was built, and its range
        table = self._table
        index = self._index_name or BY_CREATION_TIME
        fields = list(table.indexes[index].fields) if table and index in table.indexes else []
        return [
            self._table_name,
            index,
            fields,
            self._range.description if self._range else describe_ops(self._ops or []),
            self._order or "asc",
            [f.fingerprint() for f in self._filters],
        ]
