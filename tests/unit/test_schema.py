"""engine.schema: define_table/define_schema rules and document checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine, EngineError, SchemaValidationError, define_schema, define_table, ids, v


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("by_id", ["a"], "IndexNameReserved"),
        ("by_creation_time", ["a"], "IndexNameReserved"),
        ("_private", ["a"], "Invalid index name"),
        ("has space", ["a"], "Invalid index name"),
        ("x" * 65, ["a"], "Invalid index name"),
        ("ok", [], "at least one field"),
        ("ok", ["a", "a"], "duplicate fields"),
        ("ok", ["_id"], "IndexFieldsContainId"),
        ("ok", ["_creationTime"], "IndexFieldsContainCreationTime"),
        ("ok", ["a._b"], "IndexFieldNameReserved"),
        ("ok", [f"f{i}" for i in range(16)], "IndexTooManyFields"),
    ],
)
def test_index_rules(name: str, fields: list[str], message: str) -> None:
    with pytest.raises(SchemaValidationError, match=message):
        define_table({"a": v.string()}).index(name, fields)


def test_index_limits_and_duplicates() -> None:
    table = define_table({}).index("wide", [f"f{i}" for i in range(15)])
    assert len(table.indexes["wide"]) == 15
    table.index("by_a", ["a"])
    with pytest.raises(SchemaValidationError, match="Duplicate index name"):
        table.index("by_a", ["b"])
    with pytest.raises(SchemaValidationError, match="same fields"):
        table.index("by_a2", ["a"])
    assert define_table({}).index("nested", ["a.b"]).indexes["nested"] == ("a.b",)


def test_table_rules() -> None:
    with pytest.raises(SchemaValidationError, match="Invalid table name"):
        define_schema({"_system": define_table({})})
    with pytest.raises(SchemaValidationError, match="starts with an underscore"):
        define_table({"_x": v.string()})
    with pytest.raises(SchemaValidationError, match="must be an object"):
        define_table(v.string())
    with pytest.raises(SchemaValidationError, match="define_table"):
        define_schema({"t": {"a": v.string()}})  # type: ignore[dict-item]


def test_check_document_message_names_the_table() -> None:
    schema = define_schema({"t": define_table({"a": v.string()})})
    schema.check_document("t", {"_id": "x", "_creationTime": 1.0, "a": "ok"}, None)
    with pytest.raises(SchemaValidationError) as caught:
        schema.check_document("t", {"_id": "x", "_creationTime": 1.0, "a": 1}, None)
    assert str(caught.value).startswith(
        'Failed to insert or update a document in table "t" because it does not match the '
        "schema: Value does not match validator.\nPath: .a"
    )
    schema.check_document("unknown", {"anything": 1}, None)


def test_union_of_objects_as_table() -> None:
    schema = define_schema(
        {
            "shapes": define_table(
                v.union(
                    v.object({"kind": v.literal("circle"), "r": v.float64()}),
                    v.object({"kind": v.literal("square"), "side": v.float64()}),
                )
            )
        }
    )
    schema.check_document("shapes", {"kind": "circle", "r": 1.0}, None)
    with pytest.raises(SchemaValidationError):
        schema.check_document("shapes", {"kind": "circle", "side": 1.0}, None)


def test_to_json_is_stable() -> None:
    schema = define_schema({"t": define_table({"a": v.string()}).index("by_a", ["a"])})
    assert schema.to_json() == {
        "schemaValidation": True,
        "tables": {
            "t": {
                "validator": {
                    "type": "object",
                    "value": {"a": {"fieldType": {"type": "string"}, "optional": False}},
                },
                "indexes": {"by_a": ["a"]},
            }
        },
    }


def test_v_id_fields_need_an_id_of_that_existing_table(tmp_path: Path) -> None:
    # Found by review: the write-time check resolved ids through the snapshot's catalog
    # only, so an id of a table created in the same transaction, or of no table at all,
    # passed v.id("users").
    schema = define_schema(
        {"users": define_table({}), "posts": define_table({"author": v.id("users")})}
    )
    with Engine.open(tmp_path / "db", schema=schema, durability="none") as engine:
        user = engine.run(lambda ctx: ctx.db.insert("users", {}))
        engine.run(lambda ctx: ctx.db.insert("posts", {"author": user}))

        def author_from_a_new_table(ctx):  # type: ignore[no-untyped-def]
            other = ctx.db.insert("other", {})
            ctx.db.insert("posts", {"author": other})

        with pytest.raises(SchemaValidationError, match="from table `other`"):
            engine.run(author_from_a_new_table)
        unknown = ids.encode_id(55_555, bytes(16))
        with pytest.raises(SchemaValidationError, match=r'Validator: v\.id\("users"\)'):
            engine.run(lambda ctx: ctx.db.insert("posts", {"author": unknown}))
        assert len(engine.run(lambda ctx: ctx.db.query("posts").collect())) == 1


def test_index_reference_errors_quote_the_field_path_as_convex() -> None:
    # Convex's FieldPath displays quoted ("a.b"), so its SchemaDefinitionError texts
    # (crates/common/src/schemas/mod.rs) read `references the field "a.b" that ...`;
    # convexlite left the quotes out.
    with pytest.raises(SchemaValidationError) as caught:
        define_schema({"t": define_table({"a": v.string()}).index("by_ab", ["a.b"])})
    assert str(caught.value) == (
        'In table "t" the index "by_ab" is invalid because it references the field "a.b" '
        "that does not exist."
    )
    table = define_table({"e": v.string()}).vector_index("v", vector_field="e", dimensions=3)
    with pytest.raises(SchemaValidationError) as caught:
        define_schema({"t": table})
    assert str(caught.value) == (
        'In table "t" the vector index "v" is invalid because it references the field "e" '
        "that is neither an array of float64 or optional array of float64."
    )


def test_definitions_convex_refuses_are_refused() -> None:
    # Found by review: each of these was accepted.
    with pytest.raises(
        SchemaValidationError, match='index "by_b" is invalid because it references'
    ):
        define_schema({"t": define_table({"a": v.string()}).index("by_b", ["b"])})
    with pytest.raises(
        SchemaValidationError, match='references the field "a.b" that does not exist'
    ):
        define_schema({"t": define_table({"a": v.string()}).index("by_ab", ["a.b"])})
    with pytest.raises(SchemaValidationError, match="starts with an underscore"):
        define_table(v.union(v.object({"_secret": v.string()}), v.object({"a": v.string()})))
    with pytest.raises(SchemaValidationError, match="must be an object, a union of objects"):
        define_table(v.union(v.object({"a": v.string()}), v.string()))
    # Accepted: fields reachable through a union member, an optional object, any.
    define_schema(
        {
            "t": define_table(
                v.union(
                    v.object({"kind": v.literal("a"), "x": v.optional(v.object({"y": v.any()}))}),
                    v.object({"kind": v.literal("b"), "m": v.record(v.string(), v.int64())}),
                )
            )
            .index("by_y", ["x.y"])
            .index("by_m", ["m"])
            .index("by_kind", ["kind"]),
            "u": define_table({"a": v.any()}).index("by_deep", ["a.b.c"]),
        }
    )
    # Without schema validation Convex does not check index references either.
    define_schema(
        {"t": define_table({"a": v.string()}).index("by_b", ["b"])}, schema_validation=False
    )


@pytest.mark.parametrize("field", ["a b", "a-b", "1a", "m.a b", "m.1", "é", "m." + "x" * 65])
def test_index_field_path_components_are_identifiers(field: str) -> None:
    # Found by review: any path component not starting with "_" was accepted, so an
    # index on "m.a b" (through a v.any() or a record, or with schema validation off)
    # was defined. Convex parses each component as an IdentifierFieldName
    # (FieldPath::from_str) and refuses the schema.
    table = define_table({"m": v.any(), "a": v.string()})
    with pytest.raises(SchemaValidationError, match="not an identifier"):
        table.index("by_field", [field])
    with pytest.raises(SchemaValidationError, match="not an identifier"):
        define_table(None).index("by_field", [field])
    table.index("by_ok", ["m.a_b", "m.B2", "a"])  # identifiers are fine


def test_a_table_has_at_most_64_indexes() -> None:
    # Found by review: any number of indexes was accepted. Convex refuses a schema whose
    # table declares more than MAX_INDEXES_PER_TABLE = 64 (TooManyIndexes; its docs say
    # 32, its code 64).
    wide = define_table(None)
    for i in range(64):
        wide.index(f"by_f{i}", [f"f{i}"])
    define_schema({"t": wide})
    wide.index("by_one_more", ["g"])
    with pytest.raises(SchemaValidationError, match='Table "t" cannot have more than 64 indexes'):
        define_schema({"t": wide})


def test_open_refuses_a_schema_that_is_not_a_define_schema_result(tmp_path: Path) -> None:
    # A dict of tables (define_schema forgotten) raised "'dict' object has no attribute
    # 'to_json'" from inside the schema migration.
    tables = {"notes": define_table({"text": v.string()})}
    with pytest.raises(EngineError, match=r"got dict: wrap the tables in define_schema"):
        Engine.open(tmp_path / "db", schema=tables, durability="none")
    with pytest.raises(EngineError, match=r"takes a define_schema\(\{...\}\) result .* got str$"):
        Engine.open(tmp_path / "db", schema="notes", durability="none")
    assert not (tmp_path / "db").exists()  # refused before anything opened
    with Engine.open(tmp_path / "db", schema=define_schema(tables), durability="none") as db:
        assert db.check()["tables"]["notes"]["documents"] == 0


@pytest.mark.parametrize("fields", [None, 5, [1], b"ab", {"a": 1}])
def test_index_fields_that_are_no_list_of_names_are_refused(fields: object) -> None:
    # None and 5 raised "'NoneType' object is not iterable" (a raw TypeError) before
    # the check meant for them; bytes and a dict slipped past it as field lists.
    with pytest.raises(SchemaValidationError, match="fields must be a list of field names"):
        define_table({"a": v.string()}).index("by_a", fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("tables", [None, [("t", define_table())], "t"])
def test_define_schema_of_no_mapping_is_refused(tables: object) -> None:
    # Raised AttributeError ("'list' object has no attribute 'items'").
    with pytest.raises(SchemaValidationError, match=r"define_schema\(\) takes a dict"):
        define_schema(tables)  # type: ignore[arg-type]


def test_an_index_into_a_record_is_refused_as_convex_does() -> None:
    # Convex's Validator::can_contain_field answers false for a record (only objects,
    # unions and v.any() hold named fields), so it refuses an index on "m.k" where m is
    # a v.record; this was accepted. The record field itself can be indexed.
    table = define_table({"m": v.record(v.string(), v.int64())})
    with pytest.raises(SchemaValidationError, match='references the field "m.k" that does not'):
        define_schema({"t": table.index("by_mk", ["m.k"])})
    # An app upgraded from a version that took such an index is told why.
    with pytest.raises(SchemaValidationError, match=r"\(m is a v.record: its keys are data"):
        define_schema({"t": table})
    define_schema({"t": define_table({"m": v.record(v.string(), v.int64())}).index("by_m", ["m"])})
    define_schema({"t": table}, schema_validation=False)  # not checked without validation


def test_a_table_validator_of_another_type_is_refused_in_convex_words() -> None:
    # Convex's InvalidTopLevelTypeInSchemaError; for a union, it names the member that
    # is no object (the message was our own wording, naming the whole validator).
    with pytest.raises(SchemaValidationError) as caught:
        define_table(v.array(v.string()))
    assert str(caught.value).startswith(
        "InvalidTopLevelTypeInSchemaError: The document validator in a schema must be an "
        "object, a union of objects, or `v.any()`. Found v.array(v.string()). To learn more"
    )
    with pytest.raises(SchemaValidationError, match=r"Found v\.null\(\)\. To learn more"):
        define_table(v.union(v.object({"a": v.string()}), v.null()))


def test_a_table_changed_after_define_schema_leaves_the_schema_as_checked() -> None:
    # define_schema checked the table's indexes, then kept the caller's TableDefinition:
    # an .index() added afterwards (on a field no document can hold, or the 65th) went
    # into the schema unchecked.
    table = define_table({"a": v.string()}).index("by_a", ["a"])
    schema = define_schema({"t": table})
    table.index("by_b", ["b"])
    assert schema.tables["t"].indexes == {"by_a": ("a",)}
    assert schema.to_json()["tables"]["t"]["indexes"] == {"by_a": ["a"]}


def test_a_schema_stored_in_an_older_spelling_is_not_a_schema_change(tmp_path: Path) -> None:
    # Records' values took Convex's {fieldType, optional} form: a schema stored in the
    # earlier form is the same schema, and upgrading must not re-check every document
    # (nor move the catalog version) on the first open.
    from engine.encoding import decode, encode

    schema = define_schema({"t": define_table({"m": v.record(v.string(), v.int64())})})
    with Engine.open(tmp_path, schema=schema, durability="none") as db:
        db.run(lambda ctx: ctx.db.insert("t", {"m": {"a": 1}}))
        storage = db._db.storage
        with storage.env.begin(write=True) as wtxn:
            stored = decode(wtxn.get(b"schema", db=storage.meta))
            values = stored["tables"]["t"]["validator"]["value"]["m"]["fieldType"]["values"]
            stored["tables"]["t"]["validator"]["value"]["m"]["fieldType"]["values"] = values[
                "fieldType"
            ]
            wtxn.put(b"schema", encode(stored), db=storage.meta)
        before = _schema_state(db)
    with Engine.open(tmp_path, schema=schema, durability="none") as db:
        assert _schema_state(db) == before
        db.check()


def _schema_state(db: Engine) -> tuple[tuple[int, int], bytes | None]:
    """The head (commit ts, catalog version) and the time of the last schema change."""
    storage = db._db.storage
    with storage.env.begin() as rtxn:
        return storage.head(rtxn), rtxn.get(b"schema_ts", db=storage.meta)


def test_the_same_schema_declared_in_another_order_is_not_a_schema_change(
    tmp_path: Path,
) -> None:
    # Tables, fields and indexes declared in another order (a reformatted schema file)
    # counted as a new schema: every document was checked again at open, and the
    # catalog version moved (a conflict for in-flight mutations, a re-run for every
    # subscription).
    first = define_schema(
        {
            "a": define_table({"x": v.string(), "y": v.optional(v.int64())})
            .index("by_x", ["x"])
            .index("by_y", ["y"]),
            "b": define_table({"z": v.object({"p": v.string(), "q": v.float64()})}),
        }
    )
    reordered = define_schema(
        {
            "b": define_table({"z": v.object({"q": v.float64(), "p": v.string()})}),
            "a": define_table({"y": v.optional(v.int64()), "x": v.string()})
            .index("by_y", ["y"])
            .index("by_x", ["x"]),
        }
    )
    with Engine.open(tmp_path, schema=first, durability="none") as db:
        db.run(lambda ctx: ctx.db.insert("a", {"x": "s", "y": 1}))
        before = _schema_state(db)
    with Engine.open(tmp_path, schema=reordered, durability="none") as db:
        assert _schema_state(db) == before
        db.check()
    # An index's fields keep their order: that is another index.
    swapped = define_schema(
        {"a": define_table({"x": v.string(), "y": v.optional(v.int64())}).index("by_x", ["y", "x"])}
    )
    with Engine.open(tmp_path, schema=swapped, durability="none") as db:
        assert _schema_state(db)[0] != before[0]
        assert db._db.latest_catalog().catalog.tables["a"].indexes["by_x"].fields == ("y", "x")


@pytest.mark.parametrize("flag", ["no", "false", 0, None])
def test_schema_validation_must_be_a_bool(flag: object) -> None:
    # define_schema(..., schema_validation=os.environ.get("VALIDATE")) took "false" (or
    # "no") as true, and None or 0 as false, and stored the value in the schema's JSON.
    with pytest.raises(SchemaValidationError, match=r"schema_validation.*True or False"):
        define_schema({"t": define_table({})}, schema_validation=flag)  # type: ignore[arg-type]
