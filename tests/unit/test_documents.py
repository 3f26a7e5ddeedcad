"""Documents through Engine.run: insert/get/patch/replace/delete and Convex's rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine import (
    UNSET,
    DocumentNotFound,
    Engine,
    InvalidId,
    InvalidTable,
    LimitExceeded,
    ReadOnlyError,
    ValidationError,
)


def log_entries(engine: Engine) -> int:
    return int(engine.check()["log_entries"])


def test_insert_assigns_id_and_creation_time(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("tasks", {"text": "hi", "n": 1}))
    assert isinstance(doc_id, str) and len(doc_id) == 32
    doc = engine.run(lambda ctx: ctx.db.get(doc_id))
    assert doc == {"_id": doc_id, "_creationTime": doc["_creationTime"], "text": "hi", "n": 1}
    assert isinstance(doc["_creationTime"], float) and 0 < doc["_creationTime"] < 2**53


def test_creation_times_strictly_increase_within_a_transaction(engine: Engine) -> None:
    ids = engine.run(lambda ctx: [ctx.db.insert("t", {"i": i}) for i in range(50)])
    times = engine.run(lambda ctx: [ctx.db.get(i)["_creationTime"] for i in ids])
    assert all(a < b for a, b in zip(times, times[1:]))
    later = engine.run(lambda ctx: ctx.db.get(ctx.db.insert("t", {}))["_creationTime"])
    assert later > times[-1]


def test_values_round_trip_exactly(engine: Engine) -> None:
    value = {
        "i": -(2**63),
        "f": -0.0,
        "nan": math.nan,
        "inf": math.inf,
        "b": b"\x00\xff",
        "nested": {"list": [1, 1.0, True, None, "s"]},
        "t": (1, 2),
    }
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", value))
    doc = engine.run(lambda ctx: ctx.db.get(doc_id))
    assert doc["i"] == -(2**63) and type(doc["i"]) is int
    assert math.copysign(1.0, doc["f"]) == -1.0
    assert math.isnan(doc["nan"]) and doc["inf"] == math.inf
    assert doc["b"] == b"\x00\xff"
    assert doc["nested"]["list"] == [1, 1.0, True, None, "s"]
    assert type(doc["nested"]["list"][1]) is float
    assert doc["t"] == [1, 2]


@pytest.mark.parametrize("field", ["_id", "_creationTime"])
def test_insert_rejects_system_fields(engine: Engine, field: str) -> None:
    with pytest.raises(ValidationError, match=f"system field `{field}`"):
        engine.run(lambda ctx: ctx.db.insert("t", {field: 1}))


def test_insert_rejects_underscore_fields_and_bad_values(engine: Engine) -> None:
    with pytest.raises(ValidationError, match="_secret"):
        engine.run(lambda ctx: ctx.db.insert("t", {"_secret": 1}))
    with pytest.raises(ValidationError, match=r"\$x"):
        engine.run(lambda ctx: ctx.db.insert("t", {"a": {"$x": 1}}))
    with pytest.raises(ValidationError):
        engine.run(lambda ctx: ctx.db.insert("t", {"a": {1, 2}}))
    with pytest.raises(ValidationError):
        engine.run(lambda ctx: ctx.db.insert("t", {"a": 2**63}))


def test_document_size_limit(engine: Engine) -> None:
    with pytest.raises(LimitExceeded) as caught:
        engine.run(lambda ctx: ctx.db.insert("t", {"a": "x" * (1 << 20)}))
    assert caught.value.limit == "DocumentTooLarge"


def test_document_limits_count_the_system_fields_as_convex(engine: Engine) -> None:
    """Convex checks the object with ``_id`` and ``_creationTime`` in it (ResolvedDocument):
    1022 user fields fit, 1023 do not; and a 32-character id and a creation time add
    38 + 23 bytes to the 1 MiB, so a 1-character field name leaves 2**20 - 67 bytes."""
    wide = {f"f{i}": 0.0 for i in range(1022)}
    engine.run(lambda ctx: ctx.db.insert("t", wide))
    with pytest.raises(LimitExceeded, match=r"too many fields \(1025 > maximum number 1024\)"):
        engine.run(lambda ctx: ctx.db.insert("t", {**wide, "one_more": 0.0}))
    fits = (1 << 20) - 67  # 2 + (4 + 34) + (14 + 9) + (2 + 2 + n) for {"a": "x" * n}
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": "x" * fits}))
    with pytest.raises(LimitExceeded, match="measures 1048577 bytes") as caught:
        engine.run(lambda ctx: ctx.db.insert("t", {"a": "x" * (fits + 1)}))
    assert caught.value.limit == "DocumentTooLarge"
    assert len(engine.run(lambda ctx: ctx.db.get(doc_id))["a"]) == fits


def test_patch_and_replace_check_the_rules_on_the_whole_new_document(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": "x" * (1 << 19), "n": 1.0}))
    deep: object = 1.0
    for _ in range(15):  # the document is level 1: a field nesting 15 deep makes 16
        deep = [deep]
    engine.run(lambda ctx: ctx.db.patch(doc_id, {"deep": deep}))
    with pytest.raises(LimitExceeded) as caught:  # each half fits, the two do not
        engine.run(lambda ctx: ctx.db.patch(doc_id, {"b": "y" * (1 << 19)}))
    assert caught.value.limit == "DocumentTooLarge"
    with pytest.raises(LimitExceeded, match=r"nested 17 levels deep > maximum nesting 16"):
        engine.run(lambda ctx: ctx.db.patch(doc_id, {"deep": [deep]}))
    with pytest.raises(LimitExceeded, match=r"\(1025 > maximum number 1024\)"):
        engine.run(lambda ctx: ctx.db.replace(doc_id, {f"f{i}": 0.0 for i in range(1023)}))
    with pytest.raises(ValidationError, match="Field '_x' starts with an underscore"):
        engine.run(lambda ctx: ctx.db.replace(doc_id, {"_x": 1.0}))
    document = engine.run(lambda ctx: ctx.db.get(doc_id))
    assert sorted(document) == ["_creationTime", "_id", "a", "deep", "n"]  # all refused
    engine.check()


def test_table_names(engine: Engine) -> None:
    with pytest.raises(ReadOnlyError, match="System tables"):
        engine.run(lambda ctx: ctx.db.insert("_storage", {}))
    with pytest.raises(InvalidTable, match="Invalid table name"):
        engine.run(lambda ctx: ctx.db.insert("bad-name", {}))


def test_patch_is_a_shallow_merge_and_unset_removes(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1, "b": {"x": 1, "y": 2}, "c": 3}))
    engine.run(lambda ctx: ctx.db.patch(doc_id, {"b": {"x": 9}, "c": UNSET, "d": 4}))
    doc = engine.run(lambda ctx: ctx.db.get(doc_id))
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == {
        "a": 1,
        "b": {"x": 9},
        "d": 4,
    }


def test_unchanged_patch_writes_nothing(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
    before = log_entries(engine)
    engine.run(lambda ctx: ctx.db.patch(doc_id, {"a": 1, "missing": UNSET}))
    assert log_entries(engine) == before
    engine.run(lambda ctx: ctx.db.patch(doc_id, {"a": 1.0}))  # 1.0 is not 1
    assert log_entries(engine) == before + 1


def test_insert_leaves_out_system_fields_set_to_unset(engine: Engine) -> None:
    # Convex drops undefined fields before anything looks at them ({_id: undefined} is
    # {}); convexlite refused such an insert as one setting a system field.
    from engine import UNSET

    new_id = engine.run(
        lambda ctx: ctx.db.insert("t", {"_id": UNSET, "_creationTime": UNSET, "a": 1})
    )
    document = engine.query(lambda ctx: ctx.db.get(new_id))
    assert document is not None and document["_id"] == new_id and document["a"] == 1
    assert set(document) == {"_id", "_creationTime", "a"}


def test_patch_and_replace_ignore_system_fields_set_to_unset(engine: Engine) -> None:
    # Convex's patch removes a field set to undefined and then puts back _id and
    # _creationTime (PendingDocument::new), and replace drops undefined fields: both
    # are no-ops for the system fields. convexlite compared UNSET with the stored value
    # and refused ("Provided document ID "UNSET" doesn't match '_id' field").
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
    created = engine.query(lambda ctx: ctx.db.get(doc_id))["_creationTime"]
    engine.run(lambda ctx: ctx.db.patch(doc_id, {"_id": UNSET, "_creationTime": UNSET, "a": 2}))
    assert engine.query(lambda ctx: ctx.db.get(doc_id)) == {
        "_id": doc_id,
        "_creationTime": created,
        "a": 2,
    }
    engine.run(lambda ctx: ctx.db.replace(doc_id, {"_id": UNSET, "_creationTime": UNSET, "b": 3}))
    assert engine.query(lambda ctx: ctx.db.get(doc_id)) == {
        "_id": doc_id,
        "_creationTime": created,
        "b": 3,
    }


def test_patch_may_repeat_system_fields_but_not_change_them(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
    doc = engine.run(lambda ctx: ctx.db.get(doc_id))
    engine.run(lambda ctx: ctx.db.patch(doc_id, {"_id": doc_id, "a": 2}))
    other = engine.run(lambda ctx: ctx.db.insert("t", {}))
    with pytest.raises(ValidationError, match="doesn't match '_id' field"):
        engine.run(lambda ctx: ctx.db.patch(doc_id, {"_id": other}))
    with pytest.raises(ValidationError, match="InvalidCreationTimeError"):
        engine.run(lambda ctx: ctx.db.replace(doc_id, {"_creationTime": 1.0}))
    engine.run(lambda ctx: ctx.db.replace(doc_id, {"_creationTime": doc["_creationTime"]}))


def test_replace_keeps_system_fields(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1, "b": 2}))
    created = engine.run(lambda ctx: ctx.db.get(doc_id))["_creationTime"]
    engine.run(lambda ctx: ctx.db.replace(doc_id, {"c": 3}))
    assert engine.run(lambda ctx: ctx.db.get(doc_id)) == {
        "_id": doc_id,
        "_creationTime": created,
        "c": 3,
    }


def test_missing_documents(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {}))
    engine.run(lambda ctx: ctx.db.delete(doc_id))
    assert engine.run(lambda ctx: ctx.db.get(doc_id)) is None
    for verb, call in [
        ("Update", lambda ctx: ctx.db.patch(doc_id, {"a": 1})),
        ("Replace", lambda ctx: ctx.db.replace(doc_id, {})),
        ("Delete", lambda ctx: ctx.db.delete(doc_id)),
    ]:
        with pytest.raises(DocumentNotFound, match=f"^{verb} on nonexistent document ID {doc_id}$"):
            engine.run(call)


def test_table_first_forms_check_the_table_as_convex(engine: Engine) -> None:
    """Convex's db.get(table, id), patch(table, id, v), replace(table, id, v) and
    delete(table, id) (preferred since 2025) work, and refuse an id of another table
    (check_table_name in crates/isolate/src/environment/helpers/mod.rs)."""
    a = engine.run(lambda ctx: ctx.db.insert("a", {"n": 1}))
    b = engine.run(lambda ctx: ctx.db.insert("b", {"n": 1}))
    assert engine.run(lambda ctx: ctx.db.get("a", a))["n"] == 1
    engine.run(lambda ctx: ctx.db.patch("a", a, {"n": 2}))
    assert engine.run(lambda ctx: ctx.db.get(a))["n"] == 2
    engine.run(lambda ctx: ctx.db.replace("a", a, {"n": 3}))
    assert engine.run(lambda ctx: ctx.db.get("a", a))["n"] == 3
    message = r'Invalid argument `id` for `db\.{}`: expected to be an Id<"a">, got Id<"b">'
    for method, call in [
        ("get", lambda ctx: ctx.db.get("a", b)),
        ("patch", lambda ctx: ctx.db.patch("a", b, {"n": 9})),
        ("replace", lambda ctx: ctx.db.replace("a", b, {"n": 9})),
        ("delete", lambda ctx: ctx.db.delete("a", b)),
    ]:
        with pytest.raises(InvalidTable, match=message.format(method)):
            engine.run(call)
    assert engine.run(lambda ctx: ctx.db.get("b", b))["n"] == 1  # nothing changed
    with pytest.raises(InvalidId):
        engine.run(lambda ctx: ctx.db.get("a", "junk"))
    engine.run(lambda ctx: ctx.db.delete("a", a))
    assert engine.run(lambda ctx: ctx.db.get("a", a)) is None


def test_malformed_ids(engine: Engine) -> None:
    for bad in ["", "abc", "x" * 32, 42]:
        with pytest.raises(InvalidId):
            engine.run(lambda ctx, b=bad: ctx.db.get(b))


def test_get_of_unknown_table_number_is_none(engine: Engine) -> None:
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {}))
    other_db_path = engine.path + "-other"
    with Engine.open(other_db_path, durability="none") as other:
        assert other.run(lambda ctx: ctx.db.get(doc_id)) is None


def test_failed_transaction_commits_nothing(engine: Engine) -> None:
    class Boom(Exception):
        pass

    def body(ctx):  # type: ignore[no-untyped-def]
        ctx.db.insert("t", {"a": 1})
        raise Boom

    with pytest.raises(Boom):
        engine.run(body)
    assert engine.run(lambda ctx: ctx.db.query("t").collect()) == []
    assert engine.check()["tables"] == {}


def test_a_refused_insert_the_mutation_catches_creates_no_table(engine: Engine) -> None:
    # Found by the storage hunt: the table was created before the value was checked,
    # so a mutation that caught the error committed an empty table (Convex checks the
    # value before the insert reaches the database).
    def body(ctx):  # type: ignore[no-untyped-def]
        with pytest.raises(ValidationError):
            ctx.db.insert("ghost", {"a": {1: 2}})
        with pytest.raises(ValidationError):
            ctx.db.insert("ghost", {"a": {1, 2}})
        kept = ctx.db.insert("kept", {"a": 1})
        with pytest.raises(ValidationError):
            ctx.db.insert("ghost", {"a": object()})
        return kept

    kept = engine.run(body)
    assert sorted(engine.check()["tables"]) == ["kept"]
    assert engine.run(lambda ctx: ctx.db.get(kept))["a"] == 1


def test_transaction_reads_its_own_writes(engine: Engine) -> None:
    def body(ctx):  # type: ignore[no-untyped-def]
        a = ctx.db.insert("t", {"n": 1})
        b = ctx.db.insert("t", {"n": 2})
        ctx.db.patch(a, {"n": 3})
        ctx.db.delete(b)
        return [d["n"] for d in ctx.db.query("t").collect()], ctx.db.get(b)

    assert engine.run(body) == ([3], None)


def test_check_detects_a_missing_index_entry(engine: Engine) -> None:
    from engine.errors import CorruptionError

    engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
    storage = engine._db.storage

    def drop_one(txn):  # type: ignore[no-untyped-def]
        cursor = txn.cursor(db=storage.indexes)
        assert cursor.first()
        cursor.delete()

    storage.write(drop_one)
    with pytest.raises(CorruptionError, match="missing index entry") as caught:
        engine.check()
    assert caught.value.problems
    # repair so the fixture's final check passes
    storage.write(lambda txn: txn.drop(storage.indexes, delete=False))
    storage.write(lambda txn: txn.drop(storage.documents, delete=False))


def _entries_for(engine: Engine) -> list[bytes]:
    """A new document's index keys (by_id's first, as the key plan gives them)."""
    from engine import ids

    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
    document = engine.run(lambda ctx: ctx.db.get(doc_id))
    db = engine._db
    table = db.catalog_cache[1].tables["t"]
    return db.key_plan(table).keys(document, ids.decode_id(doc_id)[1])


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        ("stray by_id entry", "by_id should not exist"),
        ("entry of a missing document", "points to a missing document"),
        ("entry that does not match", "does not match document"),
        ("entry of no index", "belongs to no known index"),
        ("missing entry", "missing index entry"),
    ],
)
def test_check_detects_each_kind_of_index_corruption(
    db_path: Path, corruption: str, message: str
) -> None:
    from engine.errors import CorruptionError

    with Engine.open(db_path, durability="none") as engine:
        keys = _entries_for(engine)
        by_id, by_creation_time = keys[0], keys[1]
        storage = engine._db.storage
        if corruption == "stray by_id entry":
            # Found by review: the stray key matched what by_id would hold, and by_id
            # entries were never counted, so check() passed.
            change = [(by_id, b"")]
        elif corruption == "entry of a missing document":
            change = [(by_creation_time[:-16] + bytes(16), b"")]
        elif corruption == "entry that does not match":
            # The byte before the id changed (to a value it cannot already hold: with
            # b"\x00" the key was unchanged one run in 256, and check() rightly passed).
            changed = bytes([by_creation_time[-17] ^ 0xFF])
            change = [(by_creation_time[:-17] + changed + by_creation_time[-16:], b"")]
        elif corruption == "entry of no index":
            change = [(b"\x7f\xff\xff\xff" + by_creation_time[4:], b"")]
        else:
            change = [(by_creation_time, None)]

        def corrupt(txn):  # type: ignore[no-untyped-def]
            for key, value in change:
                if value is None:
                    txn.delete(key, db=storage.indexes)
                else:
                    txn.put(key, value, db=storage.indexes)

        engine.check()
        storage.write(corrupt)
        with pytest.raises(CorruptionError, match=message):
            engine.check()


def test_insert_and_replace_leave_out_fields_set_to_unset(engine: Engine) -> None:
    # Convex drops undefined-valued fields on every write, not only in patch.
    doc = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1, "b": UNSET, "o": {"x": UNSET}}))
    stored = engine.run(lambda ctx: ctx.db.get(doc))
    assert {k: v for k, v in stored.items() if not k.startswith("_")} == {"a": 1, "o": {}}
    engine.run(lambda ctx: ctx.db.replace(doc, {"a": 2, "gone": UNSET}))
    stored = engine.run(lambda ctx: ctx.db.get(doc))
    assert {k: v for k, v in stored.items() if not k.startswith("_")} == {"a": 2}
    with pytest.raises(
        ValidationError, match=r"UNSET is not a valid Convex value \(at \$\.l\[0\]\)"
    ):
        engine.run(lambda ctx: ctx.db.insert("t", {"l": [UNSET]}))


def test_writes_through_a_context_kept_after_its_mutation_returned_are_refused(
    engine: Engine,
) -> None:
    # They were accepted and silently lost (found by review): the write set was
    # already committed or discarded.
    kept = engine.run(lambda ctx: ctx)
    with pytest.raises(ValidationError, match="This transaction has finished"):
        kept.db.insert("t", {"a": 1})
    assert engine.query(lambda ctx: ctx.db.query("t").collect()) == []


def test_keyword_forms_from_before_the_table_first_ones_still_work(engine: Engine) -> None:
    """Found by review: adding ``get(table, id)`` and friends renamed the parameters, so
    ``db.patch(id, fields=...)`` and ``db.get(document_id=...)`` raised TypeError."""
    doc_id = engine.run(lambda ctx: ctx.db.insert("t", {"a": 1}))
    engine.run(lambda ctx: ctx.db.patch(doc_id, fields={"b": 2}))
    engine.run(lambda ctx: ctx.db.patch(document_id=doc_id, fields={"c": 3}))
    got = engine.query(lambda ctx: ctx.db.get(document_id=doc_id))
    assert {k: got[k] for k in "abc"} == {"a": 1, "b": 2, "c": 3}
    engine.run(lambda ctx: ctx.db.replace(doc_id, document={"d": 4}))
    engine.run(lambda ctx: ctx.db.replace(document_id=doc_id, document={"e": 5}))
    assert engine.query(lambda ctx: ctx.db.get("t", doc_id))["e"] == 5
    with pytest.raises(TypeError, match=r"db\.patch\(\) takes \(id, fields\)"):
        engine.run(lambda ctx: ctx.db.patch(doc_id))
    with pytest.raises(TypeError, match="needs an id"):
        engine.run(lambda ctx: ctx.db.get())
    engine.run(lambda ctx: ctx.db.delete(document_id=doc_id))
    assert engine.query(lambda ctx: ctx.db.get(doc_id)) is None


def test_an_id_held_by_a_str_subclass_is_the_id_it_holds(engine: Engine) -> None:
    """Values take a str subclass as its string; db.get refused it ("an ID is a str, got
    S"), so ids kept in a StrEnum or a (str, Enum) could not be read or written."""
    import enum

    first = engine.run(lambda ctx: ctx.db.insert("t", {"n": 1}))
    second = engine.run(lambda ctx: ctx.db.insert("t", {"n": 2}))
    third = engine.run(lambda ctx: ctx.db.insert("t", {"n": 3}))

    class Known(enum.StrEnum):
        FIRST = first

    class Mixed(str, enum.Enum):  # noqa: UP042 (on purpose: str() is "Mixed.SECOND")
        SECOND = second

    class Plain(str):
        pass

    assert engine.run(lambda ctx: ctx.db.get(Known.FIRST))["n"] == 1
    assert engine.run(lambda ctx: ctx.db.get("t", Mixed.SECOND))["n"] == 2
    engine.run(lambda ctx: ctx.db.patch(Mixed.SECOND, {"n": 20}))
    engine.run(lambda ctx: ctx.db.delete(Plain(third)))
    assert [d["n"] for d in engine.run(lambda ctx: ctx.db.query("t").collect())] == [1, 20]
    normalized = engine.run(lambda ctx: ctx.db.normalize_id("t", Mixed.SECOND))
    assert normalized == second and type(normalized) is str


def test_the_table_first_forms_refuse_an_id_of_another_table_held_by_a_str_subclass(
    engine: Engine,
) -> None:
    """db.get/patch/replace/delete("b", id) refuse an id of table "a" (Convex's
    check_table_name); an id held by a str subclass skipped that check, so the call
    read, patched or deleted the document of "a"."""

    class Plain(str):
        pass

    held = Plain(engine.run(lambda ctx: ctx.db.insert("a", {"n": 1})))
    engine.run(lambda ctx: ctx.db.insert("b", {"n": 2}))
    expected = r'expected to be an Id<"b">, got Id<"a"> instead'
    with pytest.raises(InvalidTable, match=expected):
        engine.run(lambda ctx: ctx.db.get("b", held))
    with pytest.raises(InvalidTable, match=expected):
        engine.run(lambda ctx: ctx.db.patch("b", held, {"n": 10}))
    with pytest.raises(InvalidTable, match=expected):
        engine.run(lambda ctx: ctx.db.replace("b", held, {"n": 10}))
    with pytest.raises(InvalidTable, match=expected):
        engine.run(lambda ctx: ctx.db.delete("b", held))
    with pytest.raises(InvalidTable, match=expected):
        engine.query(lambda ctx: ctx.db.get("b", held))
    assert engine.query(lambda ctx: ctx.db.get("a", held)) == {
        "_id": held,
        "_creationTime": engine.query(lambda ctx: ctx.db.get(held))["_creationTime"],
        "n": 1,
    }
