"""Index keys: what a document contributes to each index of its table.

An index key is ``index number (4 B) ‖ sort key of each declared field ‖
sort key of _creationTime ‖ internal id (16 B)``; a missing field encodes as
"missing" (Convex's ``undefined``), which sorts before ``null``. ``by_id`` keys
are ``index number ‖ internal id``. Byte order is value order (see
:mod:`engine.keys`), so index scans, cursors and read-set intervals are all
plain byte intervals. A full-text search index has one key per distinct token
of the document's search field instead (:mod:`engine.searchkeys`).
"""

from __future__ import annotations

from typing import Any

from . import keys
from .catalog import BY_CREATION_TIME, BY_ID, IndexDef, TableDef
from .values import UNSET

__all__ = ["KeyPlan", "field_value", "split_path"]

_MISSING_KEY = keys.encode(UNSET)


def split_path(path: str) -> tuple[str, ...]:
    """``"a.b"`` → ``("a", "b")``: the steps of a dotted field path."""
    return tuple(path.split("."))


def field_value(document: Any, steps: tuple[str, ...]) -> Any:
    """The value at ``steps`` inside ``document``, or ``UNSET`` if any step is missing."""
    value = document
    for step in steps:
        if type(value) is not dict:
            return UNSET
        value = value.get(step, UNSET)
        if value is UNSET:
            return UNSET
    return value


class KeyPlan:
    """How to compute every index key of one table's documents, compiled once.

    Cost of :meth:`keys`: one sort-key encoding per indexed field per index, and
    for each search index a tokenization of its search field and one key per
    distinct token (:mod:`engine.searchkeys`).
    """

    __slots__ = ("by_id_prefix", "fields", "plans", "search_plans", "table")

    def __init__(self, table: TableDef) -> None:
        from .searchkeys import SearchKeyPlan  # searchkeys reads fields with this module

        self.table = table
        self.by_id_prefix = table.indexes[BY_ID].prefix
        #: Database indexes (every one but ``by_id``), in catalog order.
        self.plans: list[tuple[bytes, list[tuple[str, ...]]]] = []
        #: Search indexes, in catalog order: their entries follow the others' keys.
        self.search_plans: list[tuple[IndexDef, SearchKeyPlan]] = []
        for name, index in table.indexes.items():
            if name == BY_ID:
                continue
            if index.is_search:
                plan = SearchKeyPlan(index.prefix, index.search_field, index.filter_fields)
                self.search_plans.append((index, plan))
                continue
            if index.is_vector:  # entries made at commit, from the documents (engine.vectors)
                continue
            steps = [] if name == BY_CREATION_TIME else [split_path(f) for f in index.fields]
            self.plans.append((index.prefix, steps))
        #: The top-level fields that some index key depends on (besides the system
        #: fields): a write that changes none of them keeps every index key.
        self.fields = frozenset(path[0] for _, steps in self.plans for path in steps) | {
            path[0]
            for _, plan in self.search_plans
            for path in (plan.search_steps, *plan.filter_steps)
        }

    def keys(self, document: dict[str, Any], internal_id: bytes) -> tuple[bytes, ...]:
        """Every index key of ``document`` (by_id first), as stored in ``indexes``.

        The database indexes' keys follow in catalog order, one each, then the
        entries of every search index (any number each).
        """
        encode = keys.encode
        tail = encode(document["_creationTime"]) + internal_id
        out = [self.by_id_prefix + internal_id]
        for prefix, steps in self.plans:
            if not steps:
                out.append(prefix + tail)
                continue
            parts = [prefix]
            for path in steps:
                if len(path) == 1:
                    value = document.get(path[0], UNSET)
                else:
                    value = field_value(document, path)
                parts.append(_MISSING_KEY if value is UNSET else encode(value))
            parts.append(tail)
            out.append(b"".join(parts))
        for _, search in self.search_plans:
            out.extend(search.keys(document, internal_id))
        return tuple(out)

    def index_keys(
        self, index: IndexDef, document: dict[str, Any], internal_id: bytes
    ) -> list[bytes]:
        """The keys ``document`` has in ``index`` alone (a backfill, ``check()``).

        One for ``by_id`` and every database index, one per distinct token for a
        search index (none without a string search field).
        """
        if index.name == BY_ID:
            return [self.by_id_prefix + internal_id]
        if index.is_vector:
            raise ValueError(
                f"vector index {index.name!r} has entries with values: "
                "engine.vectors.index_entries makes them"
            )
        if index.is_search:
            for search_index, search in self.search_plans:
                if search_index.number == index.number:
                    return search.keys(document, internal_id)
            raise KeyError(f"index {index.name!r} is not an index of {self.table.name!r}")
        encode = keys.encode
        parts = [index.prefix]
        if index.name != BY_CREATION_TIME:
            for field in index.fields:
                value = field_value(document, split_path(field))
                parts.append(_MISSING_KEY if value is UNSET else encode(value))
        parts.append(encode(document["_creationTime"]) + internal_id)
        return [b"".join(parts)]
