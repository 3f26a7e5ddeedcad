"""Schemas: ``define_schema({...})`` of ``define_table(...).index(...)`` tables.

Example::

    schema = define_schema({
        "messages": define_table({"channel": v.string(), "body": v.string()})
            .index("by_channel", ["channel"]),
    })

Rules are Convex's: table and index names are identifiers not starting with
``_``; ``by_id`` and ``by_creation_time`` are reserved; an index has 1 to 15
fields (16 counting the ``_creationTime`` appended to every index), no
duplicates, never ``_id`` or ``_creationTime`` (appended automatically), every
path component an identifier not starting with ``_``, and no two indexes of a
table share a field list; a table declares at most 64 indexes, full-text search
indexes (``.search_index(...)``: one search field, up to 16 filter fields, at
most 4 per table) included. Tables not in the schema are schemaless, as in Convex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import vectors
from .errors import SchemaValidationError
from .validators import Resolver, Validator, as_validator, validator_from_json

__all__ = [
    "SchemaDefinition",
    "TableDefinition",
    "define_schema",
    "define_table",
    "schema_from_json",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_RESERVED = ("by_id", "by_creation_time")
_MAX_INDEX_FIELDS = 16  # counting the appended _creationTime
#: Convex's MAX_INDEXES_PER_TABLE (crates/common/src/schemas/mod.rs; its docs say 32).
_MAX_INDEXES = 64
#: Convex's MAX_TEXT_INDEX_FILTER_FIELDS_SIZE (crates/common/src/bootstrap_model/index).
_MAX_FILTER_FIELDS = 16
#: Convex's limits page: "Search indexes per table: 4", and as many vector indexes.
_MAX_FIELD_INDEXES = 4
_SYSTEM_FIELDS = ("_id", "_creationTime")


class TableDefinition:
    """A table's document validator and indexes. Build it with :func:`define_table`."""

    def __init__(self, validator: Validator | None) -> None:
        self.validator = validator
        self.indexes: dict[str, tuple[str, ...]] = {}
        #: Search indexes: name → (search field, filter fields in declared order).
        self.search_indexes: dict[str, tuple[str, tuple[str, ...]]] = {}
        #: Vector indexes: name → (vector field, dimensions, filter fields in declared order).
        self.vector_indexes: dict[str, tuple[str, int, tuple[str, ...]]] = {}

    def __repr__(self) -> str:
        text = f"define_table({self.validator!r})"
        for name, fields in self.indexes.items():
            text += f".index({name!r}, {list(fields)!r})"
        for name, (search_field, filter_fields) in self.search_indexes.items():
            text += f".search_index({name!r}, search_field={search_field!r}"
            if filter_fields:
                text += f", filter_fields={list(filter_fields)!r}"
            text += ")"
        for name, (vector_field, dimensions, filter_fields) in self.vector_indexes.items():
            text += (
                f".vector_index({name!r}, vector_field={vector_field!r}, dimensions={dimensions!r}"
            )
            if filter_fields:
                text += f", filter_fields={list(filter_fields)!r}"
            text += ")"
        return text

    def _check_name(self, name: object) -> str:
        """``name`` if it may name a new index of this table (Convex's rules)."""
        if not isinstance(name, str) or not _IDENTIFIER.match(name) or name.startswith("_"):
            raise SchemaValidationError(
                f"Invalid index name {name!r}: index names must be identifiers of at most 64 "
                "characters ([A-Za-z_][A-Za-z0-9_]*) that do not start with '_'."
            )
        if name in _RESERVED:
            raise SchemaValidationError(
                f"IndexNameReserved: index name {name!r} is reserved (by_id and "
                "by_creation_time exist on every table)."
            )
        if name in self.indexes or name in self.search_indexes or name in self.vector_indexes:
            raise SchemaValidationError(
                f"Duplicate index name {name!r}: each index of a table needs its own name."
            )
        return name

    def index(self, name: str, fields: list[str] | tuple[str, ...]) -> TableDefinition:
        """Declare index ``name`` on ``fields`` (dotted paths for nested fields); chainable.

        Raises :class:`SchemaValidationError` for names or fields that break Convex's rules.
        """
        name = self._check_name(name)
        if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
            raise SchemaValidationError(
                f"Index {name!r}: fields must be a list of field names, got {fields!r}"
            )
        fields = tuple(fields)
        if not fields:
            raise SchemaValidationError(f"Index {name!r} must have at least one field.")
        if len(set(fields)) != len(fields):
            raise SchemaValidationError(f"Index {name!r} has duplicate fields: {list(fields)}.")
        if "_id" in fields:
            raise SchemaValidationError(
                f"IndexFieldsContainId: index {name!r} cannot contain `_id`: every index ends "
                "with the document id already."
            )
        if "_creationTime" in fields:
            raise SchemaValidationError(
                f"IndexFieldsContainCreationTime: index {name!r} cannot contain `_creationTime`: "
                "it is appended to every index automatically."
            )
        for field in fields:
            _check_field(name, field)
        if len(fields) + 1 > _MAX_INDEX_FIELDS:
            raise SchemaValidationError(
                f"IndexTooManyFields: index {name!r} has {len(fields)} fields; at most "
                f"{_MAX_INDEX_FIELDS - 1} are allowed (plus the appended _creationTime)."
            )
        for other, other_fields in self.indexes.items():
            if other_fields == fields:
                raise SchemaValidationError(
                    f"Indexes {other!r} and {name!r} have the same fields {list(fields)}: "
                    "remove one."
                )
        self.indexes[name] = fields
        return self

    def search_index(
        self,
        name: str,
        config: Mapping[str, Any] | str | None = None,
        *,
        search_field: str | None = None,
        filter_fields: list[str] | tuple[str, ...] = (),
    ) -> TableDefinition:
        """Declare full-text search index ``name``; chainable. See docs/concepts/search.md.

        ``search_index("search_body", search_field="body", filter_fields=["channel"])``,
        or Convex's form ``search_index("search_body", {"searchField": "body",
        "filterFields": ["channel"]})``. The search field's strings are tokenized
        (:mod:`engine.tokenizer`); the filter fields can be matched with ``q.eq`` in
        ``with_search_index``. A filter field listed twice counts once (Convex keeps
        them as a set); the first filter fields narrow a search that gives them
        values, so list the one searches always give first.

        Raises :class:`SchemaValidationError` for Convex's rules: one search field,
        at most 16 filter fields, field paths of identifiers not starting with
        ``_``, index names as for :meth:`index` (shared with the table's other
        indexes). At most 4 search indexes per table, counted against the 64
        indexes of a table, and no two with the same fields, are checked by
        :func:`define_schema`. Example::

            >>> from engine import v
            >>> t = define_table({"body": v.string(), "channel": v.string()})
            >>> t.search_index("search_body", search_field="body", filter_fields=["channel"])
            define_table(v.object({...})).search_index('search_body', search_field='body', filter_fields=['channel'])
        """
        name = self._check_name(name)
        if config is not None:
            if search_field is not None or filter_fields:
                raise SchemaValidationError(
                    f"Search index {name!r}: give its configuration once, as keywords "
                    "(search_field=..., filter_fields=[...]) or as Convex's dict "
                    '({"searchField": ..., "filterFields": [...]}), not both.'
                )
            if isinstance(config, str):
                search_field = config
            elif isinstance(config, Mapping):
                unknown = sorted(set(config) - {"searchField", "filterFields", "staged"})
                if unknown:
                    raise SchemaValidationError(
                        f"Search index {name!r}: unknown configuration keys {unknown}; "
                        'expected "searchField" and optionally "filterFields".'
                    )
                if config.get("staged"):
                    raise SchemaValidationError(
                        f"Search index {name!r}: staged indexes (Convex's staged: true, "
                        "backfilled in the background and not queryable until enabled) are "
                        "not supported: declare it without staged; Engine.open backfills it."
                    )
                search_field = config.get("searchField")
                filter_fields = config.get("filterFields", ())
            else:
                raise SchemaValidationError(
                    f"Search index {name!r}: expected its configuration as "
                    '{"searchField": ..., "filterFields": [...]}, got ' + repr(config)
                )
        if not isinstance(search_field, str):
            raise SchemaValidationError(
                f"Search index {name!r} needs exactly one search field (a field name, "
                f"dotted for a nested field), got {search_field!r}: "
                f'search_index({name!r}, search_field="body").'
            )
        _check_field(name, search_field)
        unique = _filter_fields("Search index", name, filter_fields)
        self.search_indexes[name] = (search_field, unique)
        return self

    def vector_index(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        vector_field: str | None = None,
        dimensions: int | None = None,
        filter_fields: list[str] | tuple[str, ...] = (),
    ) -> TableDefinition:
        """Declare vector index ``name``; chainable. See docs/concepts/vector-search.md.

        ``vector_index("by_embedding", vector_field="embedding", dimensions=1536,
        filter_fields=["cuisine"])``, or Convex's form ``vector_index("by_embedding",
        {"vectorField": "embedding", "dimensions": 1536, "filterFields": ["cuisine"]})``.
        Documents whose vector field is a list of exactly ``dimensions`` floats are
        indexed; actions search them with ``ctx.vector_search``.

        Raises :class:`SchemaValidationError` for Convex's rules: one vector field,
        dimensions from 2 to 4096, at most 16 filter fields, at most 4 vector indexes
        per table, no two on one vector field (the last two checked by
        :func:`define_schema`).

        Example::

            >>> from engine import v
            >>> t = define_table({"embedding": v.array(v.float64())})
            >>> t.vector_index("by_embedding", vector_field="embedding", dimensions=3)
            define_table(v.object({...})).vector_index('by_embedding', vector_field='embedding', dimensions=3)
        """
        name = self._check_name(name)
        if config is not None:
            if vector_field is not None or dimensions is not None or filter_fields:
                raise SchemaValidationError(
                    f"Vector index {name!r}: give the configuration as keywords "
                    "(vector_field=..., dimensions=..., filter_fields=[...]) or as Convex's "
                    'dict ({"vectorField": ..., "dimensions": ..., "filterFields": [...]}), '
                    "not both."
                )
            if not isinstance(config, Mapping):
                raise SchemaValidationError(
                    f'Vector index {name!r}: expected {{"vectorField": ..., "dimensions": ...}}, '
                    f"got {config!r}"
                )
            unknown = sorted(set(config) - {"vectorField", "dimensions", "filterFields", "staged"})
            if unknown:
                raise SchemaValidationError(
                    f"Vector index {name!r}: unknown configuration keys {unknown}; expected "
                    '"vectorField", "dimensions" and optionally "filterFields".'
                )
            if config.get("staged"):
                raise SchemaValidationError(
                    f"Vector index {name!r}: staged indexes (Convex's staged: true, "
                    "backfilled in the background and not queryable until enabled) are "
                    "not supported: declare it without staged; Engine.open backfills it."
                )
            vector_field = config.get("vectorField")
            dimensions = config.get("dimensions")
            filter_fields = config.get("filterFields", ())
        if not isinstance(vector_field, str):
            raise SchemaValidationError(
                f"Vector index {name!r} needs exactly one vector field (a field name, dotted "
                f"for a nested field), got {vector_field!r}: "
                f'vector_index({name!r}, vector_field="embedding", dimensions=1536).'
            )
        if type(dimensions) is not int or not (
            vectors.MIN_DIMENSIONS <= dimensions <= vectors.MAX_DIMENSIONS
        ):
            # Convex's VectorDimensions::try_from (vector_index/dimensions.rs).
            raise SchemaValidationError(
                f"InvalidVectorDimensionError: Dimensions {dimensions!r} must be between "
                f"{vectors.MIN_DIMENSIONS} and {vectors.MAX_DIMENSIONS}. (vector index {name!r}: "
                "the length of the vectors it holds, e.g. 1536 for OpenAI's "
                "text-embedding-3-small)"
            )
        _check_field(name, vector_field)
        unique = _filter_fields("Vector index", name, filter_fields)
        self.vector_indexes[name] = (vector_field, dimensions, unique)
        return self


def _filter_fields(kind: str, name: str, filter_fields: Any) -> tuple[str, ...]:
    """A search or vector index's filter fields, each once in declared order (Convex keeps
    a set), checked: a list of at most 16 field paths. ``kind`` names the index in errors."""
    if not isinstance(filter_fields, (list, tuple)) or not all(
        isinstance(f, str) for f in filter_fields
    ):
        raise SchemaValidationError(
            f"{kind} {name!r}: filter_fields must be a list of field names, got {filter_fields!r}"
        )
    unique = tuple(dict.fromkeys(filter_fields))
    if len(unique) > _MAX_FILTER_FIELDS:
        # Convex's too_many_filter_fields (index_validation_error.rs): this text for both
        # kinds of index.
        raise SchemaValidationError(
            f"IndexTooManyFilterFields: Search indexes may have up to "
            f"{_MAX_FILTER_FIELDS} filter fields. ({kind} {name!r} has {len(unique)}.)"
        )
    for field in unique:
        _check_field(name, field)
    return unique


def _check_field(index: str, field: str) -> None:
    """Raise unless ``field`` may be a field of index ``index`` (Convex's rules)."""
    parts = field.split(".")
    if any(not part or part.startswith("_") for part in parts):
        raise SchemaValidationError(
            f"IndexFieldNameReserved: field {field!r} of index {index!r} has a path "
            "component that is empty or starts with '_'."
        )
    bad = next((p for p in parts if not _IDENTIFIER.match(p)), None)
    if bad is not None:
        # Convex parses each component as an IdentifierFieldName (FieldPath::from_str).
        raise SchemaValidationError(
            f"Invalid field {field!r} of index {index!r}: the path component {bad!r} "
            "is not an identifier. Identifiers must start with a letter and can only "
            "contain letters, digits, and underscores (at most 64 characters)."
        )


def _invalid_top_level_type(found: str) -> SchemaValidationError:
    # Convex's InvalidTopLevelTypeInSchemaError (crates/common/src/schemas/mod.rs).
    return SchemaValidationError(
        "InvalidTopLevelTypeInSchemaError: The document validator in a schema must be an "
        f"object, a union of objects, or `v.any()`. Found {found}. To learn more, see the "
        "schema documentation at https://docs.convex.dev/database/schemas."
    )


def define_table(fields: Mapping[str, Any] | Validator | None = None) -> TableDefinition:
    """A table whose documents match ``fields`` (a dict of validators, a ``v.object``,
    or a ``v.union`` of objects); ``None`` leaves documents unvalidated."""
    if fields is None:
        return TableDefinition(None)
    validator = as_validator(fields)
    if validator.kind not in ("object", "union", "any"):
        raise _invalid_top_level_type(repr(validator))
    members = validator.to_json()["value"] if validator.kind == "union" else []
    for member in members:
        if member["type"] != "object":  # Convex names the member that is no object
            raise _invalid_top_level_type(repr(validator_from_json(member)))
    if validator.kind == "object":
        members = [validator.to_json()]
    for member in members:
        for name in member["value"]:
            if name.startswith("_"):
                raise SchemaValidationError(
                    f"Field {name!r} starts with an underscore, which is only allowed for "
                    "system fields like '_id'."
                )
    return TableDefinition(validator)


def _unreachable(json: Any, parts: list[str], depth: int = 0) -> int | None:
    """None when a document matching validator ``json`` can hold the field at ``parts``;
    else how many of ``parts`` lead to the ``v.record`` the rest would index into (-1:
    no record on the way, the field just does not exist).

    Convex's ``can_contain_field``: only objects, union members and ``v.any()``
    hold named fields (a record's keys are data, not fields).
    """
    if not parts:
        return None
    kind = json["type"]
    if kind == "any":
        return None
    if kind == "record":
        return depth
    if kind == "object":
        field = json["value"].get(parts[0])
        return -1 if field is None else _unreachable(field["fieldType"], parts[1:], depth + 1)
    if kind == "union":
        found = [_unreachable(member, parts, depth) for member in json["value"]]
        return None if None in found else max(found, default=-1)  # type: ignore[type-var]
    return -1


def _table_json(table: TableDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "validator": None if table.validator is None else table.validator.to_json(),
        "indexes": {k: list(f) for k, f in table.indexes.items()},
    }
    if table.search_indexes:
        out["searchIndexes"] = [
            {"indexDescriptor": name, "searchField": field, "filterFields": list(filters)}
            for name, (field, filters) in table.search_indexes.items()
        ]
    if table.vector_indexes:
        out["vectorIndexes"] = [
            {
                "indexDescriptor": name,
                "vectorField": field,
                "dimensions": dimensions,
                "filterFields": list(filters),
            }
            for name, (field, dimensions, filters) in table.vector_indexes.items()
        ]
    return out


class SchemaDefinition:
    """The tables of a schema. Build it with :func:`define_schema`."""

    def __init__(self, tables: dict[str, TableDefinition], schema_validation: bool) -> None:
        self.tables = tables
        self.schema_validation = schema_validation

    def __repr__(self) -> str:
        return f"define_schema({self.tables!r}, schema_validation={self.schema_validation})"

    def to_json(self) -> dict[str, Any]:
        """The stored form: tables with validator JSON and index fields.

        A table with search indexes lists them as Convex's schema JSON does:
        ``"searchIndexes": [{"indexDescriptor", "searchField", "filterFields"}]``,
        and vector indexes as ``"vectorIndexes": [{"indexDescriptor", "vectorField",
        "dimensions", "filterFields"}]`` (each left out when there are none, so
        schemas stored before these kinds existed are unchanged).
        """
        return {
            "schemaValidation": self.schema_validation,
            "tables": {name: _table_json(t) for name, t in self.tables.items()},
        }

    def document_validator(self, table: str) -> Validator | None:
        definition = self.tables.get(table)
        return None if definition is None else definition.validator

    def check_document(
        self,
        table: str,
        document: dict[str, Any],
        resolver: Resolver | None,
        *,
        for_write: bool = False,
    ) -> None:
        """Check a stored document (system fields included) against ``table``'s validator.

        Raises :class:`SchemaValidationError`; its ``detail`` is the validator's
        message alone, its text the Convex-worded message for a write.
        """
        validator = self.document_validator(table)
        if validator is None:
            return
        user_fields = {k: x for k, x in document.items() if k not in _SYSTEM_FIELDS}
        failure = validator.check(user_fields, resolver)
        if failure is None:
            return
        path, detail = failure
        error = SchemaValidationError(
            f'Failed to insert or update a document in table "{table}" because it does not '
            f"match the schema: {detail}",
            path=path,
            table=table,
        )
        error.detail = detail  # type: ignore[attr-defined]
        raise error


def _check_field_indexes(table: str, kind: str, fields: dict[str, str]) -> None:
    """At most 4 search (``kind="search"``) or vector indexes, no two on the same search
    or vector field (``fields``: index name → that field), with Convex's texts."""
    title = kind.capitalize()
    if len(fields) > _MAX_FIELD_INDEXES:
        raise SchemaValidationError(
            f'TooMany{title}Indexes: Table "{table}" cannot have more than '
            f"{_MAX_FIELD_INDEXES} {kind} indexes (it declares {len(fields)}: "
            f"{', '.join(fields)}). Combine indexes on one {kind} field into one with all "
            "their filter fields.",
            table=table,
        )
    seen: dict[str, str] = {}
    for index, field in fields.items():
        other = seen.setdefault(field, index)
        if other != index:
            # Convex's search_field_not_unique / vector_field_not_unique
            # (index_validation_error.rs), raised by common/src/schemas/json.rs for any two
            # such indexes on one field, whatever their filter fields.
            raise SchemaValidationError(
                f'{title}IndexFieldNotUnique: In table "{table}" {kind} index "{index}" and '
                f'{kind} index "{other}" have the same `{kind}Field`. {title} index fields '
                "must be unique within a table. You should combine the indexes with the same "
                f"`{kind}Field` into one index containing all `filterField`s and then use "
                "different subsets of the `filterField`s at query time.",
                table=table,
            )


def _vector_eligible(json: Mapping[str, Any], parts: list[str]) -> bool:
    """Convex's ``overlaps_with_array_float64``: may the field at ``parts`` hold an array
    of float64 (a union may, ``v.any()`` may, an object lacking the field may)?"""
    kind = json["type"]
    if not parts:
        if kind == "array":
            return bool(json["value"]["type"] in ("number", "any"))
        if kind == "union":
            return any(_vector_eligible(member, []) for member in json["value"])
        return bool(kind == "any")
    if kind == "any":
        return True
    if kind == "union":
        return any(_vector_eligible(member, parts) for member in json["value"])
    if kind == "object":
        field = json["value"].get(parts[0])
        return True if field is None else _vector_eligible(field["fieldType"], parts[1:])
    return False


def define_schema(
    tables: Mapping[str, TableDefinition], *, schema_validation: bool = True
) -> SchemaDefinition:
    """A schema of ``tables``; with ``schema_validation`` every write is checked."""
    if not isinstance(schema_validation, bool):  # "false" from an env var would be true
        raise SchemaValidationError(
            f"define_schema(schema_validation=...) takes True or False, got "
            f"{type(schema_validation).__name__} {schema_validation!r}."
        )
    if not isinstance(tables, Mapping):
        raise SchemaValidationError(
            f"define_schema() takes a dict of table names to define_table(...) results, got "
            f"{tables!r}."
        )
    checked: dict[str, TableDefinition] = {}
    for name, definition in tables.items():
        if not isinstance(name, str) or not _IDENTIFIER.match(name) or name.startswith("_"):
            raise SchemaValidationError(
                f"Invalid table name {name!r}: table names must be identifiers that do not "
                "start with '_' (system tables are prefixed with '_').",
                table=str(name),
            )
        if not isinstance(definition, TableDefinition):
            raise SchemaValidationError(
                f"Table {name!r} must be defined with define_table(...), got {definition!r}",
                table=name,
            )
        declared = (
            len(definition.indexes)
            + len(definition.search_indexes)
            + len(definition.vector_indexes)
        )
        if declared > _MAX_INDEXES:
            raise SchemaValidationError(
                f'TooManyIndexes: Table "{name}" cannot have more than {_MAX_INDEXES} indexes '
                f"(it declares {declared}); by_id and by_creation_time do not count, search "
                "and vector indexes do.",
                table=name,
            )
        _check_field_indexes(
            name, "search", {n: f for n, (f, _) in definition.search_indexes.items()}
        )
        _check_field_indexes(
            name, "vector", {n: f for n, (f, _, _) in definition.vector_indexes.items()}
        )
        if schema_validation and definition.validator is not None:
            json = definition.validator.to_json()
            referenced = [
                *definition.indexes.items(),
                *((n, (f, *fs)) for n, (f, fs) in definition.search_indexes.items()),
                *((n, (f, *fs)) for n, (f, _, fs) in definition.vector_indexes.items()),
            ]
            for index, fields in referenced:
                for field in fields:
                    parts = field.split(".")
                    record = _unreachable(json, parts)
                    if record is not None:
                        hint = (
                            ""
                            if record < 0
                            else f" ({'.'.join(parts[:record])} is a v.record: its keys are "
                            "data, not fields, so Convex indexes no path into it; index "
                            f"{'.'.join(parts[:record])} itself, or make it a v.object)"
                        )
                        raise SchemaValidationError(
                            f'In table "{name}" the index "{index}" is invalid because it '
                            f'references the field "{field}" that does not exist.{hint}',
                            table=name,
                        )
            for index, (field, _, _) in definition.vector_indexes.items():
                if not _vector_eligible(json, field.split(".")):
                    # Convex's check in DatabaseSchema (common/src/schemas/mod.rs).
                    raise SchemaValidationError(
                        f'In table "{name}" the vector index "{index}" is invalid because it '
                        f'references the field "{field}" that is neither an array of float64 '
                        "or optional array of float64.",
                        table=name,
                    )
        # A copy: an .index() on the caller's table afterwards must not reach the
        # schema unchecked.
        copy = TableDefinition(definition.validator)
        copy.indexes = dict(definition.indexes)
        copy.search_indexes = dict(definition.search_indexes)
        copy.vector_indexes = dict(definition.vector_indexes)
        checked[name] = copy
    return SchemaDefinition(checked, schema_validation)


def schema_from_json(data: Mapping[str, Any]) -> SchemaDefinition:
    """Rebuild a schema from its stored form (:meth:`SchemaDefinition.to_json`).

    The stored schema was checked by :func:`define_schema` when it was defined,
    so its rules are not checked again. Cost: linear in the schema's size.

    Example::

        same = schema_from_json(schema.to_json())
    """
    tables: dict[str, TableDefinition] = {}
    for name, table in data["tables"].items():
        raw = table["validator"]
        definition = TableDefinition(None if raw is None else validator_from_json(raw))
        definition.indexes = {index: tuple(fields) for index, fields in table["indexes"].items()}
        definition.search_indexes = {
            entry["indexDescriptor"]: (entry["searchField"], tuple(entry["filterFields"]))
            for entry in table.get("searchIndexes", ())
        }
        definition.vector_indexes = {
            entry["indexDescriptor"]: (
                entry["vectorField"],
                int(entry["dimensions"]),
                tuple(entry["filterFields"]),
            )
            for entry in table.get("vectorIndexes", ())
        }
        tables[name] = definition
    return SchemaDefinition(tables, bool(data["schemaValidation"]))
