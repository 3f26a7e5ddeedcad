"""Full-text search indexes: schema, index maintenance, check(), backfill, queries.

Convex's semantics (crates/search/src/constants.rs, crates/search/src/lib.rs,
crates/database/src/query/search_query.rs, docs search/text-search.mdx): Tantivy's
SimpleTokenizer, lowercased, tokens of 32 bytes or more dropped; a document matches
any term, the last term also as a prefix; relevance order, ties newest first; at most
16 terms, 8 filters and 1024 results read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import (
    UNSET,
    CorruptionError,
    Engine,
    IndexNotFound,
    SchemaValidationError,
    define_schema,
    define_table,
    ids,
    v,
)
from engine.catalog import Catalog, IndexDef, encode_catalog
from engine.schema import schema_from_json
from engine.tokenizer import tokenize

SCHEMA = define_schema(
    {
        "messages": define_table().search_index(
            "search_body", search_field="body", filter_fields=["channel", "author"]
        ),
        "other": define_table(),
    }
)


@pytest.fixture
def db(db_path: Path) -> Iterator[Engine]:
    with Engine.open(db_path, schema=SCHEMA, durability="none") as handle:
        yield handle
        handle.check()


def insert(db: Engine, table: str = "messages", **fields: Any) -> str:
    return db.run(lambda ctx: ctx.db.insert(table, fields))


def searched(ctx: Any, text: str, **eq: Any) -> Any:
    def build(q: Any) -> Any:
        chain = q.search("body", text)
        for field, value in eq.items():
            chain = chain.eq(field, value)
        return chain

    return ctx.db.query("messages").with_search_index("search_body", build)


def bodies(db: Engine, text: str, **eq: Any) -> list[Any]:
    return [m["body"] for m in db.run(lambda ctx: searched(ctx, text, **eq).collect())]


def entries(db: Engine, index: str = "search_body") -> list[bytes]:
    """The stored entries of a search index of ``messages``, in key order."""
    storage = db._db.storage
    with storage.read() as rtxn:
        prefix = db._db.catalog_at(rtxn).tables["messages"].indexes[index].prefix
        cursor = rtxn.cursor(db=storage.indexes)
        found = []
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if bytes(key[:4]) != prefix:
                    break
                found.append(bytes(key))
        cursor.close()
    return found


def tokens_of(db: Engine) -> list[str]:
    return sorted(key[5 : key.index(0, 5)].decode() for key in entries(db))


# -- the tokenizer ------------------------------------------------------------------


def test_tokenizer_splits_on_non_alphanumerics_and_lowercases() -> None:
    assert tokenize("Hello, World! hello_again x2 42") == [
        "hello",
        "world",
        "hello",
        "again",
        "x2",
        "42",
    ]
    assert tokenize("Éclair ΣΟΦΙΑΣ naïve") == ["éclair", "σοφιασ", "naïve"]  # no final sigma
    assert tokenize("  ...  ") == []


def test_tokenizer_drops_tokens_of_32_bytes_or_more() -> None:
    # Tantivy's RemoveLongFilter keeps tokens shorter than the limit, in UTF-8 bytes.
    assert tokenize("a" * 31 + " b") == ["a" * 31, "b"]
    assert tokenize("a" * 32 + " b") == ["b"]
    assert tokenize("é" * 16 + " é" * 1) == ["é"]  # 32 bytes: dropped


# -- declaring search indexes ----------------------------------------------------------


def test_both_spellings_declare_the_same_index_and_to_json_has_convex_shape() -> None:
    keywords = define_table({"body": v.string(), "channel": v.string()}).search_index(
        "search_body", search_field="body", filter_fields=["channel"]
    )
    convex = define_table({"body": v.string(), "channel": v.string()}).search_index(
        "search_body", {"searchField": "body", "filterFields": ["channel"]}
    )
    assert (
        keywords.search_indexes == convex.search_indexes == {"search_body": ("body", ("channel",))}
    )
    schema = define_schema({"m": keywords})
    assert schema.to_json()["tables"]["m"]["searchIndexes"] == [
        {"indexDescriptor": "search_body", "searchField": "body", "filterFields": ["channel"]}
    ]
    assert schema_from_json(schema.to_json()).tables["m"].search_indexes == keywords.search_indexes
    assert "searchIndexes" not in define_schema({"m": define_table()}).to_json()["tables"]["m"]
    assert repr(keywords).endswith(
        ".search_index('search_body', search_field='body', filter_fields=['channel'])"
    )


def test_a_filter_field_listed_twice_counts_once() -> None:
    table = define_table().search_index("s", search_field="body", filter_fields=["a", "b", "a"])
    assert table.search_indexes["s"] == ("body", ("a", "b"))


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda t: t.search_index("_s", search_field="body"), "Invalid index name"),
        (lambda t: t.search_index("by_id", search_field="body"), "IndexNameReserved"),
        (lambda t: t.index("s", ["body"]).search_index("s", search_field="body"), "Duplicate"),
        (lambda t: t.search_index("s", search_field="body").index("s", ["x"]), "Duplicate"),
        (lambda t: t.search_index("s"), "exactly one search field"),
        (lambda t: t.search_index("s", {"filterFields": ["a"]}), "exactly one search field"),
        (lambda t: t.search_index("s", search_field=["a", "b"]), "exactly one search field"),
        (lambda t: t.search_index("s", search_field="_id"), "IndexFieldNameReserved"),
        (lambda t: t.search_index("s", search_field="a-b"), "not an identifier"),
        (
            lambda t: t.search_index("s", search_field="b", filter_fields=["_creationTime"]),
            "IndexFieldNameReserved",
        ),
        (
            lambda t: t.search_index(
                "s", search_field="b", filter_fields=[f"f{i}" for i in range(17)]
            ),
            "IndexTooManyFilterFields: Search indexes may have up to 16 filter fields",
        ),
        (lambda t: t.search_index("s", {"searchField": "b", "staged": True}), "staged"),
        (lambda t: t.search_index("s", {"searchField": "b", "vectorField": "x"}), "unknown"),
        (lambda t: t.search_index("s", {"searchField": "b"}, search_field="b"), "once"),
    ],
)
def test_search_index_declarations_follow_convex_rules(declare: Any, message: str) -> None:
    with pytest.raises(SchemaValidationError, match=message):
        declare(define_table())


def test_sixteen_filter_fields_are_allowed() -> None:
    fields = [f"f{i}" for i in range(16)]
    assert (
        len(
            define_table()
            .search_index("s", search_field="b", filter_fields=fields)
            .search_indexes["s"][1]
        )
        == 16
    )


def test_schema_limits_count_search_indexes() -> None:
    table = define_table()
    for i in range(5):
        table.search_index(f"s{i}", search_field=f"b{i}")
    with pytest.raises(SchemaValidationError, match='TooManySearchIndexes: Table "t" cannot'):
        define_schema({"t": table})
    table = define_table()
    for i in range(61):
        table.index(f"i{i}", [f"x{i}"])
    for i in range(4):
        table.search_index(f"s{i}", search_field=f"b{i}")
    with pytest.raises(SchemaValidationError, match="TooManyIndexes.*declares 65"):
        define_schema({"t": table})


def test_two_search_indexes_on_the_same_fields_are_refused() -> None:
    table = (
        define_table()
        .search_index("one", search_field="body", filter_fields=["a", "b"])
        .search_index("two", search_field="body", filter_fields=["b", "a"])
    )
    with pytest.raises(SchemaValidationError, match="SearchIndexFieldNotUnique"):
        define_schema({"t": table})
    # The same search field with other filter fields is another index (Convex compares both).
    define_schema(
        {
            "t": define_table()
            .search_index("one", search_field="body", filter_fields=["a"])
            .search_index("two", search_field="body")
        }
    )


def test_search_fields_must_exist_in_a_validated_schema() -> None:
    table = define_table({"body": v.string()}).search_index(
        "s", search_field="body", filter_fields=["channel"]
    )
    with pytest.raises(SchemaValidationError, match="references the field channel"):
        define_schema({"t": table})
    define_schema({"t": table}, schema_validation=False)


# -- index maintenance ---------------------------------------------------------------


def test_one_entry_per_distinct_token_written_with_the_document(db: Engine) -> None:
    doc = insert(db, body="Hello hello, WORLD", channel="c")
    assert tokens_of(db) == ["hello", "world"]
    db.run(lambda ctx: ctx.db.patch(doc, {"author": "ann"}))  # a filter field: rewritten
    assert len(entries(db)) == 2
    db.run(lambda ctx: ctx.db.patch(doc, {"body": "bye"}))
    assert tokens_of(db) == ["bye"]
    before = entries(db)
    db.run(lambda ctx: ctx.db.patch(doc, {"unindexed": 1}))
    assert entries(db) == before
    db.run(lambda ctx: ctx.db.delete(doc))
    assert entries(db) == []


@pytest.mark.parametrize("body", [UNSET, None, 5, ["hello"], {"x": "hello"}, "", "!!!"])
def test_a_document_without_a_tokenized_string_has_no_entries(db: Engine, body: Any) -> None:
    fields = {} if body is UNSET else {"body": body}
    insert(db, **fields)
    assert entries(db) == []
    assert db.check()["tables"]["messages"]["indexes"]["search_body"] == 0


def test_nested_search_and_filter_fields(db_path: Path) -> None:
    schema = define_schema(
        {
            "messages": define_table().search_index(
                "search_body", search_field="post.text", filter_fields=["meta.kind"]
            )
        }
    )
    with Engine.open(db_path, schema=schema, durability="none") as db:
        insert(db, post={"text": "nested words"}, meta={"kind": "a"})
        insert(db, post={"text": "nested too"}, meta={"kind": "b"})
        assert tokens_of(db) == ["nested", "nested", "too", "words"]
        assert sum(b"\x10b\x00" in key for key in entries(db)) == 2  # kind "b", 2 tokens
        db.check()


def _damage(db: Engine, change: Any) -> None:
    storage = db._db.storage
    with storage.env.begin(write=True) as wtxn:
        change(wtxn, storage)


def test_check_finds_a_missing_search_entry(db: Engine) -> None:
    insert(db, body="alpha beta", channel="c")
    missing = entries(db)[0]
    _damage(db, lambda wtxn, st: wtxn.delete(missing, db=st.indexes))
    with pytest.raises(CorruptionError) as caught:
        db.check()
    problems = "\n".join(caught.value.problems)
    assert f"is missing index entry {missing.hex()}" in problems
    assert "search index messages.search_body has 1 entries" in problems
    _damage(db, lambda wtxn, st: wtxn.put(missing, b"", db=st.indexes))


def test_check_finds_a_stale_search_entry(db: Engine) -> None:
    insert(db, body="alpha", channel="c")
    (entry,) = entries(db)
    stale = entry[:5] + b"gamma" + entry[10:]  # another token, same document
    _damage(db, lambda wtxn, st: wtxn.put(stale, b"", db=st.indexes))
    with pytest.raises(
        CorruptionError, match=f"index entry {stale.hex()} of messages.search_body does not match"
    ):
        db.check()
    _damage(db, lambda wtxn, st: wtxn.delete(stale, db=st.indexes))


def test_check_and_searches_find_an_entry_of_a_missing_document(db: Engine) -> None:
    doc = insert(db, body="alpha", channel="c")
    number, internal = ids.decode_id(doc)
    key = number.to_bytes(4, "big") + internal
    storage = db._db.storage
    with storage.read() as rtxn:
        raw = bytes(rtxn.get(key, db=storage.documents))
    _damage(db, lambda wtxn, st: wtxn.delete(key, db=st.documents))
    with pytest.raises(CorruptionError, match="points to a missing document"):
        db.check()
    _damage(db, lambda wtxn, st: wtxn.put(key, raw, db=st.documents))


def test_check_finds_a_search_index_in_a_folder_not_marked_format_5(db: Engine) -> None:
    _damage(db, lambda wtxn, st: wtxn.put(b"format", b"2", db=st.meta))
    with pytest.raises(
        CorruptionError,
        match=r"search indexes \(messages.search_body\), but "
        "meta/format is not 5",
    ):
        db.check()
    _damage(db, lambda wtxn, st: wtxn.put(b"format", b"5", db=st.meta))


def test_a_search_index_marks_the_folder_format_5_and_long_keys_keep_it(db: Engine) -> None:
    storage = db._db.storage
    with storage.read() as rtxn:
        assert rtxn.get(b"format", db=storage.meta) == b"5"
    insert(db, body="long filter", channel="x" * 600)  # a search entry past 511 bytes
    with storage.read() as rtxn:
        assert rtxn.get(b"format", db=storage.meta) == b"5"
    assert len(entries(db)) == 2


def test_a_folder_without_search_indexes_keeps_its_format(db_path: Path) -> None:
    with Engine.open(db_path, schema=define_schema({"t": define_table()}), durability="none") as db:
        storage = db._db.storage
        with storage.read() as rtxn:
            assert rtxn.get(b"format", db=storage.meta) == b"2"


def test_catalogs_stored_before_search_indexes_still_decode() -> None:
    class OldIndexDef(msgspec.Struct, frozen=True):
        name: str
        number: int
        fields: tuple[str, ...]
        state: str = "ready"

    old = msgspec.msgpack.encode(OldIndexDef("by_x", 3, ("x",)))
    decoded = msgspec.msgpack.decode(old, type=IndexDef)
    assert decoded == IndexDef("by_x", 3, ("x",)) and decoded.kind == "database"
    catalog = Catalog().with_table("t", indexes={"by_x": ("x",)})
    assert msgspec.msgpack.decode(encode_catalog(catalog), type=Catalog) == catalog


def test_adding_a_search_index_backfills_and_removing_it_drops_it(db_path: Path) -> None:
    plain = define_schema({"messages": define_table()})
    with Engine.open(db_path, schema=plain, durability="none") as db:
        for i in range(30):
            insert(db, body=f"word{i % 3} common", channel=f"c{i % 2}")
        insert(db, body=42)
    with Engine.open(db_path, schema=SCHEMA, durability="none") as db:
        assert len(entries(db)) == 30 * 2
        assert tokens_of(db).count("word1") == 10
        report = db.check()
        assert report["tables"]["messages"]["indexes"]["search_body"] == 60
        with db._db.storage.read() as rtxn:
            number = db._db.catalog_at(rtxn).tables["messages"].indexes["search_body"].number
    with Engine.open(db_path, schema=plain, durability="none") as db:
        report = db.check()
        assert "search_body" not in report["tables"]["messages"]["indexes"]
        storage = db._db.storage
        with storage.read() as rtxn:
            cursor = rtxn.cursor(db=storage.indexes)
            prefix = number.to_bytes(4, "big")
            assert not cursor.set_range(prefix) or bytes(cursor.key()[:4]) != prefix
            cursor.close()


def test_changing_a_search_index_rebuilds_it(db_path: Path) -> None:
    with Engine.open(db_path, schema=SCHEMA, durability="none") as db:
        insert(db, body="hello", channel="a", author="x")
    changed = define_schema(
        {"messages": define_table().search_index("search_body", search_field="title")}
    )
    with Engine.open(db_path, schema=changed, durability="none") as db:
        assert entries(db) == []  # no document has a title
        insert(db, title="hello again")
        assert tokens_of(db) == ["again", "hello"]
        db.check()


def test_with_index_refuses_a_search_index(db: Engine) -> None:
    with pytest.raises(IndexNotFound, match="is not a database index"):
        db.run(lambda ctx: ctx.db.query("messages").with_index("search_body").collect())
