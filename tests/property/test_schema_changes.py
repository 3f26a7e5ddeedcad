"""Stateful property test: schema changes over existing data, against a plain model.

Steps: open the folder with a random schema (tables may appear or disappear,
indexes be added, redefined or dropped, validators tightened or loosened,
validation switched off), and random writes through a handle that follows the
stored schema. The model is a dict of documents per table plus the schema last
stored. After each step:

- ``Engine.check()`` passes and counts every table's documents as the model does;
- every table has exactly ``by_id``, ``by_creation_time`` and the indexes the
  stored schema declares for it (none for a table the schema does not name), and
  each declared index is queryable and returns the model's documents in order;
- with validation on, every document matches the stored schema;
- an open that refuses a schema change (a document that does not match) changes
  nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cmp_to_key
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine import UNSET, Engine, SchemaValidationError, define_schema, define_table, v
from engine.values import compare

TABLES = ["t1", "t2"]
FIELDS = ["a", "b"]
FIELD_VALIDATORS = {
    "any": v.optional(v.any()),
    "int": v.optional(v.int64()),
    "int_required": v.int64(),
    "int_or_str": v.optional(v.union(v.int64(), v.string())),
}
VALUES = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", None, 1.5]))

table_spec = st.tuples(
    st.fixed_dictionaries({f: st.sampled_from(sorted(FIELD_VALIDATORS)) for f in FIELDS}),
    st.dictionaries(
        st.sampled_from(["ix_a", "ix_b", "ix_ab"]),
        st.sampled_from([("a",), ("b",), ("a", "b"), ("b", "a")]),
        max_size=2,
    ),
)
schema_spec = st.tuples(
    st.dictionaries(st.sampled_from(TABLES), table_spec, max_size=2), st.booleans()
)


def build(spec: Any) -> Any:
    tables, validation = spec
    definitions = {}
    for name, (fields, indexes) in tables.items():
        table = define_table({f: FIELD_VALIDATORS[kind] for f, kind in fields.items()})
        used: set[tuple[str, ...]] = set()
        for index, index_fields in sorted(indexes.items()):
            if index_fields not in used:  # no two indexes of a table share a field list
                used.add(index_fields)
                table.index(index, list(index_fields))
        definitions[name] = table
    return define_schema(definitions, schema_validation=validation)


def index_order(fields: tuple[str, ...]) -> Any:
    """The sort key of an index on ``fields``: the fields, then ``_creationTime``, ``_id``."""

    def key(a: dict[str, Any], b: dict[str, Any]) -> int:
        for field in (*fields, "_creationTime", "_id"):
            c = compare(a.get(field, UNSET), b.get(field, UNSET))
            if c:
                return c
        return 0

    return cmp_to_key(key)


class SchemaChanges(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp()
        self.engine = Engine.open(self.path, durability="none")
        self.model: dict[str, dict[str, dict[str, Any]]] = {}
        self.schema: Any = None  # the schema last stored

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.path, ignore_errors=True)

    @rule(spec=schema_spec)
    def open_with_schema(self, spec: Any) -> None:
        schema = build(spec)
        try:
            Engine.open(self.path, schema=schema, durability="none").close()
        except SchemaValidationError:
            fits = not schema.schema_validation or all(
                schema.document_validator(t) is None
                or schema.document_validator(t).check(
                    {k: x for k, x in doc.items() if not k.startswith("_")}
                )
                is None
                for t, docs in self.model.items()
                if t in schema.tables
                for doc in docs.values()
            )
            assert not fits, "a schema every document fits was refused"
            return
        self.schema = schema
        for name in schema.tables:
            self.model.setdefault(name, {})

    @rule(table=st.sampled_from(TABLES), a=VALUES, b=VALUES, pick=st.integers(0, 5))
    def write(self, table: str, a: Any, b: Any, pick: int) -> None:
        document = {f: x for f, x in (("a", a), ("b", b)) if x is not None}
        docs = self.model.setdefault(table, {})
        ids = sorted(docs)
        target = ids[pick % len(ids)] if ids and pick < 4 else None

        def body(ctx: Any) -> Any:
            if target is None:
                return ctx.db.insert(table, document)
            if pick == 3:
                ctx.db.delete(target)
                return None
            ctx.db.replace(target, document)
            return target

        try:
            written = self.engine.run(body)
        except SchemaValidationError:
            validator = self.schema.document_validator(table) if self.schema else None
            assert self.schema is not None and self.schema.schema_validation
            assert validator is not None and validator.check(document) is not None
            return
        if target is not None and pick == 3:
            del docs[target]
        else:
            docs[written] = self.engine.run(lambda ctx: ctx.db.get(written))

    @invariant()
    def consistent(self) -> None:
        report = self.engine.check()
        for name, docs in self.model.items():
            info = report["tables"].get(name, {"documents": 0, "indexes": {}})
            assert info["documents"] == len(docs)
            declared: dict[str, tuple[str, ...]] = {}
            if self.schema is not None and name in self.schema.tables:
                declared = dict(self.schema.tables[name].indexes)
            if name in report["tables"]:
                assert set(info["indexes"]) == {"by_id", "by_creation_time", *declared}
            for index, fields in declared.items():
                rows = self.engine.run(
                    lambda ctx, n=name, i=index: ctx.db.query(n).with_index(i).collect()
                )
                assert [r["_id"] for r in rows] == [
                    d["_id"] for d in sorted(docs.values(), key=index_order(fields))
                ]
            if self.schema is not None and self.schema.schema_validation:
                validator = self.schema.document_validator(name)
                for doc in docs.values():
                    user = {k: x for k, x in doc.items() if not k.startswith("_")}
                    assert validator is None or validator.check(user) is None


TestSchemaChanges = SchemaChanges.TestCase
TestSchemaChanges.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
