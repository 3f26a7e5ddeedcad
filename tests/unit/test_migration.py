"""Schema changes on Engine.open: backfill, drop, validation of existing data, crashes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Engine,
    EngineError,
    FunctionNotFound,
    IndexNotFound,
    SchemaValidationError,
    cron_jobs,
    define_schema,
    define_table,
    migration,
    v,
)
from engine.catalog import encode_catalog
from tests import app
from tests.crash import kill_worker_after

V1 = define_schema({"people": define_table({"name": v.string(), "age": v.int64()})})
V2 = define_schema(
    {"people": define_table({"name": v.string(), "age": v.int64()}).index("by_age", ["age"])}
)
TIGHT = define_schema(
    {"people": define_table({"name": v.string(), "age": v.int64(), "email": v.string()})}
)


def populate(path: Path, n: int = 300) -> None:
    with Engine.open(path, schema=V1, durability="none") as engine:
        for start in range(0, n, 5000):  # Convex allows 16,000 writes per transaction
            engine.run(
                lambda ctx, s=start: [
                    ctx.db.insert("people", {"name": f"p{i}", "age": i % 50})
                    for i in range(s, min(n, s + 5000))
                ]
            )


def test_new_index_is_backfilled_and_queryable(db_path: Path) -> None:
    populate(db_path)
    with Engine.open(db_path, schema=V2, durability="none") as engine:
        rows = engine.run(
            lambda ctx: (
                ctx.db.query("people").with_index("by_age", lambda q: q.eq("age", 7)).collect()
            )
        )
        assert len(rows) == 6 and {r["age"] for r in rows} == {7}
        report = engine.check()
        assert report["tables"]["people"]["indexes"]["by_age"] == 300


def test_removed_index_is_dropped(db_path: Path) -> None:
    populate(db_path)
    Engine.open(db_path, schema=V2, durability="none").close()
    with Engine.open(db_path, schema=V1, durability="none") as engine:
        with pytest.raises(IndexNotFound):
            engine.run(lambda ctx: ctx.db.query("people").with_index("by_age").collect())
        report = engine.check()
        assert "by_age" not in report["tables"]["people"]["indexes"]


def test_tightened_validator_refuses_to_open_and_changes_nothing(db_path: Path) -> None:
    populate(db_path, 10)
    with pytest.raises(SchemaValidationError) as caught:
        Engine.open(db_path, schema=TIGHT, durability="none")
    message = str(caught.value)
    assert 'in table "people" does not match the schema' in message
    assert "email" in message
    with Engine.open(db_path, durability="none") as engine:
        assert len(engine.run(lambda ctx: ctx.db.query("people").collect())) == 10
        engine.check()


def test_writes_are_validated_against_the_schema(db_path: Path) -> None:
    with Engine.open(db_path, schema=V1, durability="none") as engine:
        with pytest.raises(
            SchemaValidationError,
            match='Failed to insert or update a document in table "people" '
            "because it does not match the schema",
        ):
            engine.run(lambda ctx: ctx.db.insert("people", {"name": "x", "age": "old"}))
        doc = engine.run(lambda ctx: ctx.db.insert("people", {"name": "x", "age": 1}))
        with pytest.raises(SchemaValidationError):
            engine.run(lambda ctx: ctx.db.patch(doc, {"extra": 1}))
        engine.run(lambda ctx: ctx.db.insert("free", {"anything": [1, "two"]}))


def test_schema_validation_off_skips_checks(db_path: Path) -> None:
    loose = define_schema({"people": define_table({"name": v.string()})}, schema_validation=False)
    with Engine.open(db_path, schema=loose, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("people", {"name": 1}))


def test_sigkill_during_backfill_then_reopen_completes(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(db_path, 30_000)
    # Killed 50 ms into the backfill (sixty commits of 500 entries: the open took 0.33 s
    # here), timed from the child's "backfilling" line: a kill timed from its launch
    # landed before or after the backfill by how long the machine took to start the child
    # (0.35-0.77 s measured here).
    out = kill_worker_after(0.05, "migrate", str(db_path), after="backfilling")
    assert "opened" not in out, "the kill came after the backfill: nothing was tested"
    with monkeypatch.context() as patch:  # look at the index as the kill left it
        patch.setattr(migration, "finish_backfills", lambda db: None)
        with Engine.open(db_path, durability="none") as engine:
            index = engine._db.latest_catalog().tables["people"].indexes["by_age"]
            assert index.state == "backfilling"
            assert engine.check()["tables"]["people"]["indexes"]["by_age"] < 30_000
    with Engine.open(db_path, schema=V2, durability="none") as engine:
        report = engine.check()
        assert report["tables"]["people"]["indexes"]["by_age"] == 30_000


def _interrupt_a_backfill(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave people.by_age ``backfilling`` with its first 100 entries written, as a
    crash in the middle of a backfill does (batches of 100; the second one fails)."""
    populate(db_path, 300)
    decoded: list[int] = []  # documents decoded by the backfill (not by the schema check)
    decode, backfill = migration.decode_document, migration._backfill

    def failing_decode(raw):  # type: ignore[no-untyped-def]
        if decoded:
            decoded.append(1)
            if len(decoded) > 151:
                raise RuntimeError("crash")
        return decode(raw)

    def counted_backfill(db, table, index):  # type: ignore[no-untyped-def]
        decoded.append(0)
        backfill(db, table, index)

    with monkeypatch.context() as patch:
        patch.setattr(migration, "_BATCH", 100)
        patch.setattr(migration, "decode_document", failing_decode)
        patch.setattr(migration, "_backfill", counted_backfill)
        with pytest.raises(RuntimeError, match="crash"):
            Engine.open(db_path, schema=V2, durability="none")


def test_a_half_built_index_passes_check_and_any_next_open_finishes_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by crash testing: check() reported the entries a backfilling index does not
    # have yet as missing, and only an open with schema= finished the backfill.
    _interrupt_a_backfill(db_path, monkeypatch)
    monkeypatch.setattr(migration, "finish_backfills", lambda db: None)
    with Engine.open(db_path, durability="none") as engine:
        index = engine._db.latest_catalog().tables["people"].indexes["by_age"]
        assert index.state == "backfilling"
        assert engine.check()["tables"]["people"]["indexes"]["by_age"] == 100  # a valid state
        with pytest.raises(
            IndexNotFound,
            match=r"Index people\.by_age is currently backfilling and not available to query yet",
        ):
            engine.query(lambda ctx: ctx.db.query("people").with_index("by_age").first())
    monkeypatch.undo()
    with Engine.open(db_path, durability="none") as engine:  # no schema=
        assert engine._db.latest_catalog().tables["people"].indexes["by_age"].state == "ready"
        rows = engine.query(
            lambda ctx: (
                ctx.db.query("people").with_index("by_age", lambda q: q.eq("age", 7)).collect()
            )
        )
        assert len(rows) == 6
        assert engine.check()["tables"]["people"]["indexes"]["by_age"] == 300


def test_a_backfill_stops_when_its_index_is_finished_or_redefined(db_path: Path) -> None:
    populate(db_path, 50)
    with Engine.open(db_path, schema=V2, durability="none") as engine:
        db = engine._db
        version = db.latest_catalog().catalog.version
        migration._backfill(db, "people", "by_age")  # already ready: nothing to do
        migration._backfill(db, "people", "nope")  # no such index
        migration._backfill(db, "nope", "by_age")  # no such table
        assert db.latest_catalog().catalog.version == version
        engine.check()


TWO_TABLES = define_schema(
    {
        "audit": define_table({"body": v.string()}),
        "messages": define_table({"body": v.string()}),
    },
    schema_validation=False,
)


def _race_table_creation_with_a_schema_change(db_path: Path) -> tuple[int, dict[str, list]]:
    """A mutation reads that ``messages`` is missing; a schema open creates ``audit``
    and ``messages`` before it commits its insert into ``messages`` (creating it)."""
    attempts: list[int] = []
    read_done, migrated = threading.Event(), threading.Event()

    def insert_message(ctx):  # type: ignore[no-untyped-def]
        attempts.append(1)
        ctx.db.query("messages").collect()
        if len(attempts) == 1:
            read_done.set()
            migrated.wait(10)
        return ctx.db.insert("messages", {"body": "raced"})

    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("other", {"x": 1}))
        worker = threading.Thread(target=lambda: engine.run(insert_message))
        worker.start()
        assert read_done.wait(10)
        with Engine.open(db_path, schema=TWO_TABLES, durability="none") as migrated_engine:
            migrated.set()
            worker.join(20)
            tables = {
                name: migrated_engine.run(lambda ctx, n=name: ctx.db.query(n).collect())
                for name in ("audit", "messages")
            }
            migrated_engine.check()
    return len(attempts), tables


def test_a_schema_change_conflicts_with_a_mutation_creating_a_table(db_path: Path) -> None:
    # Found by review: the schema change took table numbers without logging it, the
    # mutation committed the number it had taken for "messages", and its document
    # landed in "audit".
    attempts, tables = _race_table_creation_with_a_schema_change(db_path)
    assert attempts == 2  # the first run conflicted and re-ran on the new catalog
    assert [d["body"] for d in tables["messages"]] == ["raced"]
    assert tables["audit"] == []


def test_commit_refuses_new_tables_from_an_old_catalog(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The committer's own guard, without the schema change's log entry to rely on.
    def store_unlogged(wtxn, db, catalog, previous, *, schema=False):  # type: ignore[no-untyped-def]
        wtxn.put(b"catalog", encode_catalog(catalog), db=db.storage.meta)
        latest, _ = db.storage.head(wtxn)
        db.storage.put_head(wtxn, latest, catalog.version)
        return latest

    monkeypatch.setattr(migration, "_store_catalog", store_unlogged)
    attempts, tables = _race_table_creation_with_a_schema_change(db_path)
    assert attempts == 2
    assert [d["body"] for d in tables["messages"]] == ["raced"]
    assert tables["audit"] == []


def test_a_table_removed_from_the_schema_loses_its_indexes(db_path: Path) -> None:
    # Found by review: the table's indexes stayed, maintained by every write and still
    # queryable, although the schema no longer declared them. Convex drops every index
    # the pushed schema does not declare (IndexModel::get_index_diff), also those of a
    # table the schema no longer names; the table and its documents stay, schemaless.
    populate(db_path, 20)
    Engine.open(db_path, schema=V2, durability="none").close()
    other = define_schema({"others": define_table({"n": v.int64()}).index("by_n", ["n"])})
    with Engine.open(db_path, schema=other, durability="none") as engine:
        with pytest.raises(IndexNotFound):
            engine.run(lambda ctx: ctx.db.query("people").with_index("by_age").collect())
        engine.run(lambda ctx: ctx.db.insert("people", {"name": 1}))  # schemaless now
        report = engine.check()
        assert report["tables"]["people"]["documents"] == 21
        assert set(report["tables"]["people"]["indexes"]) == {"by_id", "by_creation_time"}
        assert "by_n" in report["tables"]["others"]["indexes"]


def test_a_mutation_that_caught_index_backfilling_conflicts_with_the_backfill_ending(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by an OCC hunt: the error was decided by the catalog, which no read recorded,
    # so a mutation that acted on "backfilling" committed after the index was ready and a
    # later mutation had read the index (no serial order has both).
    _interrupt_a_backfill(db_path, monkeypatch)
    monkeypatch.setattr(migration, "finish_backfills", lambda db: None)
    seen: list[object] = []  # what each run of the mutation saw
    queried, go = threading.Event(), threading.Event()

    def guarded(ctx):  # type: ignore[no-untyped-def]
        try:
            found: object = len(ctx.db.query("people").with_index("by_age").collect())
        except IndexNotFound:
            found = "unavailable"
        seen.append(found)
        if len(seen) == 1:
            queried.set()
            assert go.wait(10)
        ctx.db.insert("log", {"saw": found})

    with Engine.open(db_path, durability="none") as engine:
        monkeypatch.undo()
        engine.run(lambda ctx: ctx.db.insert("log", {"saw": None}))  # no table to create
        runner = threading.Thread(target=engine.run, args=(guarded,))
        runner.start()
        try:
            assert queried.wait(10)
            migration.finish_backfills(engine._db)  # by_age is ready now
        finally:
            go.set()
            runner.join(10)
        assert seen == ["unavailable", 300]  # re-run on the catalog with the index ready
        assert engine.check()["tables"]["log"]["documents"] == 2


def _missing_cron() -> Any:
    crons = cron_jobs()
    crons.interval("bad", "cronjobs:missing", {}, seconds=10)
    return crons


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"site_url": "ftp://files"}, EngineError, "site_url must be an http"),
        ({"http": object()}, EngineError, "takes an HttpRouter"),
        ({"crons": cron_jobs()}, EngineError, "was given without functions"),
        ({"functions": app, "crons": _missing_cron()}, FunctionNotFound, "Cron 'bad': "),
    ],
)
def test_an_open_refused_for_its_other_arguments_leaves_the_schema_unchanged(
    db_path: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    # Found by a lifecycle hunt: the schema change committed before Engine.open checked
    # site_url, http, crons and the package's crons, so an open that raised had still
    # created the tables and indexes and stored the schema (a deploy is all or nothing).
    populate(db_path, 10)
    with pytest.raises(error, match=message):
        Engine.open(db_path, schema=V2, durability="none", **options)
    with Engine.open(db_path, durability="none") as engine:
        with pytest.raises(IndexNotFound):
            engine.run(lambda ctx: ctx.db.query("people").with_index("by_age").collect())
        assert set(engine.check()["tables"]["people"]["indexes"]) == {"by_id", "by_creation_time"}
        stored = engine._db.latest_catalog().schema
        assert stored is not None and stored.to_json() == V1.to_json()


def test_an_open_refused_for_a_bad_argument_makes_no_folder(tmp_path: Path) -> None:
    # site_url, http= and crons= are checked before the folder is made or opened.
    path = tmp_path / "new" / "db"
    for options in ({"site_url": "ftp://files"}, {"http": object()}, {"crons": cron_jobs()}):
        with pytest.raises(EngineError):
            Engine.open(path, schema=V2, durability="none", **options)
        assert not (tmp_path / "new").exists()
