"""engine.pagination: pages, cursors, end cursors, limits and errors."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Engine,
    EvalError,
    InvalidCursor,
    PaginationError,
    ValidationError,
    define_schema,
    define_table,
    v,
)

SCHEMA = define_schema(
    {
        "items": define_table({"group": v.string(), "n": v.int64()}).index("by_group", ["group"]),
    }
)


@pytest.fixture
def items(db_path: Path):  # type: ignore[no-untyped-def]
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(
            lambda ctx: [
                ctx.db.insert("items", {"group": "a" if n % 2 else "b", "n": n}) for n in range(25)
            ]
        )
        yield engine


def page(
    engine: Engine, opts: dict[str, Any], order: str = "asc", group: str | None = None
) -> dict[str, Any]:
    def body(ctx):  # type: ignore[no-untyped-def]
        q = ctx.db.query("items")
        if group is not None:
            q = q.with_index("by_group", lambda r: r.eq("group", group))
        return q.order(order).paginate(opts)

    return engine.run(body)


def walk(engine: Engine, size: int, order: str = "asc") -> list[int]:
    out: list[int] = []
    cursor = None
    for _ in range(1_000):  # far more pages than the fixture has rows
        result = page(engine, {"numItems": size, "cursor": cursor}, order)
        out += [d["n"] for d in result["page"]]
        if result["isDone"]:
            return out
        cursor = result["continueCursor"]
    raise AssertionError("the walk never ended: a cursor repeats rows or moves back")


@pytest.mark.parametrize("size", [1, 7, 25, 100])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walking_all_pages_is_collect(items: Engine, size: int, order: str) -> None:
    expected = list(range(25)) if order == "asc" else list(range(24, -1, -1))
    assert walk(items, size, order) == expected


def test_result_shape(items: Engine) -> None:
    result = page(items, {"numItems": 10, "cursor": None})
    assert set(result) == {"page", "isDone", "continueCursor", "splitCursor", "pageStatus"}
    assert len(result["page"]) == 10 and result["isDone"] is False
    assert isinstance(result["continueCursor"], str)
    last = page(items, {"numItems": 100, "cursor": None})
    assert last["isDone"] is True
    after_end = page(items, {"numItems": 5, "cursor": last["continueCursor"]})
    assert after_end["page"] == [] and after_end["isDone"]


def test_end_cursor_fixes_the_page_boundary(items: Engine) -> None:
    first = page(items, {"numItems": 5, "cursor": None})
    end = first["continueCursor"]
    items.run(lambda ctx: ctx.db.delete(first["page"][1]["_id"]))
    again = page(items, {"numItems": 5, "cursor": None, "endCursor": end})
    assert [d["n"] for d in again["page"]] == [0, 2, 3, 4]
    assert again["continueCursor"] == end
    second = page(items, {"numItems": 5, "cursor": end})
    assert [d["n"] for d in second["page"]] == [5, 6, 7, 8, 9]


def test_filters_and_index_ranges(items: Engine) -> None:
    result = page(items, {"numItems": 3, "cursor": None}, group="a")
    assert [d["n"] for d in result["page"]] == [1, 3, 5]


def test_maximum_rows_read_splits(items: Engine) -> None:
    def body(ctx):  # type: ignore[no-untyped-def]
        return (
            ctx.db.query("items")
            .filter(lambda q: q.eq(q.field("group"), "a"))
            .paginate({"numItems": 10, "cursor": None, "maximumRowsRead": 4})
        )

    result = items.run(body)
    assert result["pageStatus"] == "SplitRequired"
    assert [d["n"] for d in result["page"]] == [1, 3]
    assert not result["isDone"]


def test_maximum_bytes_read_counts_a_mutations_own_writes(db_path: Path) -> None:
    # Found by review: in a mutation, rows the mutation itself wrote were streamed from
    # its write set without being counted as bytes read, so maximumBytesRead let a page
    # of them through whole (maximumRowsRead did count them). Convex's IndexRange counts
    # every document it returns, pending writes included (returned_bytes).
    def body(ctx):  # type: ignore[no-untyped-def]
        for n in range(6):
            ctx.db.insert("items", {"group": "a", "n": n})
        result = ctx.db.query("items").paginate(
            {"numItems": 5, "cursor": None, "maximumBytesRead": 1}
        )
        return [d["n"] for d in result["page"]], result["pageStatus"], result["isDone"]

    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        assert engine.run(body) == ([0], "SplitRequired", False)
        # The same page once they are committed: alike.
        committed = engine.query(
            lambda ctx: ctx.db.query("items").paginate(
                {"numItems": 5, "cursor": None, "maximumBytesRead": 1}
            )
        )
        assert [d["n"] for d in committed["page"]] == [0]
        assert committed["pageStatus"] == "SplitRequired"


def test_split_cursor_splits_the_page(items: Engine) -> None:
    result = page(items, {"numItems": 10, "cursor": None})
    split = result["splitCursor"]
    left = page(items, {"numItems": 10, "cursor": None, "endCursor": split})
    right = page(items, {"numItems": 10, "cursor": split, "endCursor": result["continueCursor"]})
    assert [d["n"] for d in left["page"] + right["page"]] == list(range(10))
    # Where Convex puts it (IndexRange::split_cursor_position): after the scanned row
    # at index len // 2, so 10 rows split 6 + 4.
    assert (len(left["page"]), len(right["page"])) == (6, 4)


@pytest.mark.parametrize(
    ("num_items", "first_half"), [(2, None), (3, [0, 1]), (4, [0, 1, 2]), (5, [0, 1, 2])]
)
def test_split_cursor_position_is_convexs(
    items: Engine, num_items: int, first_half: list[int] | None
) -> None:
    result = page(items, {"numItems": num_items, "cursor": None})
    if first_half is None:
        assert result["splitCursor"] is None  # two rows scanned or fewer
        return
    left = page(items, {"numItems": 100, "cursor": None, "endCursor": result["splitCursor"]})
    assert [d["n"] for d in left["page"]] == first_half


def test_split_cursor_counts_filtered_out_rows(items: Engine) -> None:
    # Three rows scanned, one kept: Convex still splits, after the second row scanned.
    def run(ctx):  # type: ignore[no-untyped-def]
        return (
            ctx.db.query("items")
            .filter(lambda q: q.eq(q.mod(q.field("n"), 2), 1))
            .paginate({"numItems": 5, "cursor": None, "maximumRowsRead": 3})
        )

    result = items.run(run)
    assert [d["n"] for d in result["page"]] == [1]
    assert result["pageStatus"] == "SplitRequired"
    assert result["splitCursor"] is not None


def test_options_are_as_lenient_as_convexs(items: Engine) -> None:
    # convex-js QueryImpl.paginate: a missing cursor is the first page; other keys
    # (the client's "id" and anything else) are ignored.
    first = page(items, {"numItems": 2})
    assert [d["n"] for d in first["page"]] == [0, 1]
    assert page(items, {"numItems": 2, "cursor": None, "foo": 1})["page"] == first["page"]
    for bad, shown in ((-1, "-1"), ("3", '"3"'), (None, "null"), (True, "true")):
        with pytest.raises(ValidationError) as caught:
            page(items, {"numItems": bad, "cursor": None})
        assert str(caught.value) == (
            f"`options.numItems` must be a positive number. Received `{shown}`."
        )
    with pytest.raises(ValidationError, match="Received `undefined`"):
        page(items, {"cursor": None})


def test_an_unset_option_is_a_missing_one(items: Engine) -> None:
    # Found by hunt: UNSET (convexlite's `undefined`) was read as missing for numItems
    # ("Received `undefined`") but as a value for the others: a cursor or endCursor of
    # UNSET raised InvalidCursor ("malformed"), a limit of UNSET a ValidationError.
    from engine import UNSET

    first = page(items, {"numItems": 2, "cursor": None})
    for extra in ({"cursor": UNSET}, {"endCursor": UNSET}, {"maximumRowsRead": UNSET}):
        opts = {"numItems": 2, "cursor": None, "maximumBytesRead": UNSET, **extra}
        assert page(items, opts) == first


@pytest.mark.parametrize(
    ("opts", "code", "wording"),
    [
        ({"numItems": 0, "cursor": None}, "NoDocumentsForPagination", "at least 1 document"),
        (
            {"numItems": 32001, "cursor": None},
            "PageSizeTooLarge",
            "Requested too many items: 32001",
        ),
        (
            {"numItems": 5, "cursor": None, "maximumRowsRead": 0},
            "InvalidPaginationLimit",
            "maximumRowsRead and maximumBytesRead must be greater than 0",
        ),
        (
            {"numItems": 5, "cursor": None, "maximumBytesRead": 0},
            "InvalidPaginationLimit",
            "maximumRowsRead and maximumBytesRead must be greater than 0",
        ),
    ],
)
def test_option_errors(items: Engine, opts: dict[str, Any], code: str, wording: str) -> None:
    # Convex's wording (async_syscall.rs), after the code.
    with pytest.raises(PaginationError, match=wording) as caught:
        page(items, opts)
    assert caught.value.code == code


def test_one_paginate_per_function(items: Engine) -> None:
    def body(ctx):  # type: ignore[no-untyped-def]
        ctx.db.query("items").paginate({"numItems": 1, "cursor": None})
        ctx.db.query("items").paginate({"numItems": 1, "cursor": None})

    with pytest.raises(PaginationError, match="MultiplePaginatedDatabaseQueries"):
        items.run(body)


def test_a_paginate_that_raised_does_not_count_as_the_functions_one(items: Engine) -> None:
    # Found by review: paginate() marked the function as having paginated before it
    # decoded the cursor, so the common recovery "catch InvalidCursor, start again from
    # the first page" raised MultiplePaginatedDatabaseQueries. Convex (query_page in
    # async_syscall.rs) checks and records the function's one paginated query only once
    # a page was read, so a failed paginate() leaves the function free to paginate.
    stale = page(items, {"numItems": 3, "cursor": None}, order="desc")["continueCursor"]

    def body(ctx):  # type: ignore[no-untyped-def]
        try:
            ctx.db.query("items").paginate({"numItems": 3, "cursor": stale})
        except InvalidCursor:
            pass
        with pytest.raises(EvalError):  # a filter that raises while the page is read
            ctx.db.query("items").filter(lambda q: q.add(q.field("n"), 0.5)).paginate(
                {"numItems": 3, "cursor": None}
            )
        result = ctx.db.query("items").paginate({"numItems": 3, "cursor": None})
        return [d["n"] for d in result["page"]]

    assert items.run(body) == [0, 1, 2]

    def twice(ctx):  # type: ignore[no-untyped-def]
        ctx.db.query("items").paginate({"numItems": 1, "cursor": None})
        # The second one's own error first, as Convex (the check follows the page).
        with pytest.raises(InvalidCursor):
            ctx.db.query("items").paginate({"numItems": 1, "cursor": stale})
        ctx.db.query("items").paginate({"numItems": 1, "cursor": None})

    with pytest.raises(PaginationError, match="MultiplePaginatedDatabaseQueries"):
        items.run(twice)


def test_cursor_from_another_query_is_refused(items: Engine) -> None:
    cursor = page(items, {"numItems": 3, "cursor": None})["continueCursor"]
    with pytest.raises(InvalidCursor, match="from a different query"):
        page(items, {"numItems": 3, "cursor": cursor}, order="desc")
    with pytest.raises(InvalidCursor, match="from a different query"):
        page(items, {"numItems": 3, "cursor": cursor}, group="a")


def test_tampered_and_foreign_cursors_are_refused(items: Engine, tmp_path: Path) -> None:
    cursor = page(items, {"numItems": 3, "cursor": None})["continueCursor"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-20] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in [tampered, cursor[:-3], "", "!!!", "a" * 40, cursor + "A"]:
        with pytest.raises(InvalidCursor):
            page(items, {"numItems": 3, "cursor": bad})
    with Engine.open(tmp_path / "other", schema=SCHEMA, durability="none") as other:
        other.run(lambda ctx: ctx.db.insert("items", {"group": "a", "n": 1}))
        with pytest.raises(InvalidCursor):
            page(other, {"numItems": 3, "cursor": cursor})


def test_a_cursor_is_refused_unless_spelled_exactly_as_issued(items: Engine) -> None:
    # Found by hunt: base64 decoding skipped characters outside its alphabet and ignored
    # the spare bits of the last character, so edited strings ("<cursor>!", a newline
    # inside it, its last character changed) were taken as the cursor they came from.
    cursor = page(items, {"numItems": 3, "cursor": None})["continueCursor"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = [c for c in alphabet if c != cursor[-1]]
    last = [cursor[:-1] + c for c in spare]
    for bad in [cursor + "!", "!" + cursor, cursor[:10] + "\n" + cursor[10:], *last]:
        try:
            page(items, {"numItems": 3, "cursor": bad})
        except InvalidCursor:
            continue
        raise AssertionError(f"{bad!r} was taken for {cursor!r}")
    assert [d["n"] for d in page(items, {"numItems": 3, "cursor": cursor})["page"]] == [3, 4, 5]


def test_deep_pages_cost_one_seek(items: Engine) -> None:
    cursor = None
    for _ in range(4):
        result = page(items, {"numItems": 5, "cursor": cursor})
        cursor = result["continueCursor"]

    # a page reads only its own rows, however deep it is
    def body(ctx):  # type: ignore[no-untyped-def]
        result = ctx.db.query("items").paginate({"numItems": 3, "cursor": cursor})
        return [d["n"] for d in result["page"]], ctx.db._txn.documents_read

    numbers, read = items.run(body)
    assert numbers == [20, 21, 22] and read == 3


def test_cursors_of_a_redefined_index_are_refused(db_path: Path) -> None:
    # Found by review: after the index was dropped and declared again (same fields, a
    # new index number), an old cursor clamped to one end of the new range: ascending
    # it restarted at page 1, descending it ended the walk with rows unread.
    without = define_schema({"items": define_table({"group": v.string(), "n": v.int64()})})

    def first_pages(engine: Engine) -> dict[str, dict[str, Any]]:
        return {
            order: page(engine, {"numItems": 3, "cursor": None}, order, group="a")
            for order in ("asc", "desc")
        }

    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("items", {"group": "a", "n": n}) for n in range(9)])
        before = first_pages(engine)
    Engine.open(db_path, schema=without, durability="none").close()
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        for order, result in before.items():
            with pytest.raises(InvalidCursor, match="earlier definition of index items.by_group"):
                page(engine, {"numItems": 3, "cursor": result["continueCursor"]}, order, "a")
        assert [d["n"] for d in first_pages(engine)["asc"]["page"]] == [0, 1, 2]


def test_a_cursor_of_an_earlier_format_says_so(
    items: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fingerprints changed (exact values): an older cursor names no query any more,
    # and the error tells the client to start over rather than "a different query".
    from engine import InvalidCursor, pagination

    monkeypatch.setattr(pagination, "_VERSION", 1)
    old = page(items, {"numItems": 2, "cursor": None})["continueCursor"]
    monkeypatch.setattr(pagination, "_VERSION", 2)
    with pytest.raises(InvalidCursor, match="issued by an earlier convexlite"):
        page(items, {"numItems": 2, "cursor": old})


def test_a_cursor_issued_before_its_table_existed_stays_valid(db_path: Path) -> None:
    # Found by the pagination hunt: a query with an index range on a table not created
    # yet was fingerprinted without its range (the range compiles once the table
    # exists), so once the table appeared its end cursor was "from a different query";
    # a subscription to such a paginated query failed with InvalidCursor on its first
    # re-run after the insert that created the table.
    def body(end_cursor: str | None):  # type: ignore[no-untyped-def]
        def run(ctx):  # type: ignore[no-untyped-def]
            q = ctx.db.query("later").with_index(
                "by_creation_time", lambda r: r.gt("_creationTime", 0.0)
            )
            return q.paginate({"numItems": 5, "cursor": None, "endCursor": end_cursor})

        return run

    with Engine.open(db_path, durability="none") as engine:
        first = engine.run(body(None))
        assert first["page"] == [] and first["isDone"] is True
        engine.run(lambda ctx: ctx.db.insert("later", {"n": 1}))
        again = engine.run(body(first["continueCursor"]))
        assert [d["n"] for d in again["page"]] == [1] and again["isDone"] is True


@pytest.mark.parametrize(
    ("num_items", "shown"),
    [(32001.0, "32001"), (1e300, "1e300"), (2.0**60, "1.152921504606847e18"), (10**300, "<int of")],
)
def test_page_size_too_large_shows_the_number_sanely(
    items: Engine, num_items: float, shown: str
) -> None:
    # Found by the pagination hunt: numItems 1e300 (a whole float) was turned into an
    # int and printed with its 301 digits.
    with pytest.raises(PaginationError, match="PageSizeTooLarge") as caught:
        page(items, {"numItems": num_items, "cursor": None})
    message = str(caught.value)
    assert f"Requested too many items: {shown}" in message and len(message) < 120, message


def test_a_cursor_after_a_long_index_key_is_accepted(db_path: Path) -> None:
    # Found by the pagination hunt: a cursor holds its row's whole index key, and
    # decode_cursor refused any cursor over 16,384 characters as malformed, so a page
    # ending on a string of 20,000 characters gave a continueCursor the next page
    # refused (Convex's cursors hold whole keys too, of any length).
    schema = define_schema({"t": define_table({"a": v.string()}).index("by_a", ["a"])})
    with Engine.open(db_path, schema=schema, durability="none") as engine:
        engine.run(lambda ctx: [ctx.db.insert("t", {"a": "x" * 20_000 + str(i)}) for i in range(3)])
        seen: list[str] = []
        cursor = None
        for order in ("asc", "desc"):
            seen, cursor = [], None
            while True:
                result = engine.run(
                    lambda ctx: (
                        ctx.db.query("t")
                        .with_index("by_a")
                        .order(order)
                        .paginate({"numItems": 1, "cursor": cursor})
                    )
                )
                seen += [d["a"][-1] for d in result["page"]]
                if result["isDone"]:
                    break
                cursor = result["continueCursor"]
                assert len(cursor) > 16_384
            assert seen == (["0", "1", "2"] if order == "asc" else ["2", "1", "0"])
