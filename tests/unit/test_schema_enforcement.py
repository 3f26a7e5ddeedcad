"""Every write is checked against the schema stored on disk, whoever changed it and when.

A Convex deployment has one schema. Here every handle and every process on a
folder follows the schema last stored by ``Engine.open(schema=...)``; a write
checked against a schema that has since been replaced re-runs against the new
one; a write that commits while a schema change checks the existing documents
is checked too.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Engine,
    SchemaValidationError,
    define_schema,
    define_table,
    migration,
    v,
)

ROOT = Path(__file__).resolve().parents[2]

LOOSE = define_schema({"users": define_table({"name": v.string()})})
TIGHT = define_schema({"users": define_table({"name": v.string(), "email": v.string()})})


def _users(engine: Engine) -> list[dict[str, Any]]:
    return engine.run(lambda ctx: ctx.db.query("users").collect())  # type: ignore[no-any-return]


def test_a_handle_opened_with_an_older_schema_enforces_the_new_one(db_path: Path) -> None:
    old = Engine.open(db_path, schema=LOOSE, durability="none")
    new = Engine.open(db_path, schema=TIGHT, durability="none")  # the table is empty: accepted
    with pytest.raises(SchemaValidationError, match="email"):
        old.run(lambda ctx: ctx.db.insert("users", {"name": "no email"}))
    old.run(lambda ctx: ctx.db.insert("users", {"name": "a", "email": "a@x"}))
    assert [u["name"] for u in _users(new)] == ["a"]
    old.close()
    new.close()


def test_a_handle_opened_without_a_schema_enforces_the_stored_one(db_path: Path) -> None:
    Engine.open(db_path, schema=TIGHT, durability="none").close()
    with Engine.open(db_path, durability="none") as engine:
        with pytest.raises(SchemaValidationError, match="email"):
            engine.run(lambda ctx: ctx.db.insert("users", {"name": "no email"}))
        engine.run(lambda ctx: ctx.db.insert("other", {"anything": 1}))  # not in the schema


def test_a_mutation_checked_against_a_replaced_schema_re_runs(db_path: Path) -> None:
    old = Engine.open(db_path, schema=LOOSE, durability="none")
    read, changed = threading.Event(), threading.Event()
    attempts = 0

    def insert(ctx: Any) -> str:
        nonlocal attempts
        attempts += 1
        ctx.db.query("users").collect()
        if attempts == 1:  # the schema changes between this snapshot and the commit
            read.set()
            changed.wait(10)
        return ctx.db.insert("users", {"name": "no email"})  # type: ignore[no-any-return]

    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            outcome.append(old.run(insert))
        except BaseException as error:  # handed to the main thread
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert read.wait(10)
    new = Engine.open(db_path, schema=TIGHT, durability="none")
    changed.set()
    thread.join(10)
    assert attempts == 2  # the first run's write was checked against LOOSE: it conflicted
    assert isinstance(outcome[0], SchemaValidationError), outcome
    assert _users(new) == []
    old.close()
    new.close()
    Engine.open(db_path, schema=TIGHT, durability="none").close()  # the data still matches


@pytest.mark.parametrize("log_pruned", [False, True], ids=["from-the-log", "log-pruned"])
def test_a_write_committed_during_the_schema_check_is_checked_too(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, log_pruned: bool
) -> None:
    old = Engine.open(db_path, schema=LOOSE, durability="none")
    original = migration._check_existing

    def check_then_a_write_commits(*args: Any) -> None:
        original(*args)  # passes: the table is empty in the check's snapshot
        monkeypatch.setattr(migration, "_check_existing", original)
        old.run(lambda ctx: ctx.db.insert("users", {"name": "no email"}))
        if log_pruned:  # the log no longer reaches back to the check's snapshot
            storage = old._db.storage
            storage.write(
                lambda wtxn: wtxn.put(
                    b"log_floor", struct.pack(">Q", storage.head(wtxn)[0]), db=storage.meta
                )
            )

    monkeypatch.setattr(migration, "_check_existing", check_then_a_write_commits)
    with pytest.raises(SchemaValidationError, match='in table "users" does not match the schema'):
        Engine.open(db_path, schema=TIGHT, durability="none")
    # Nothing changed: the stored schema is still LOOSE.
    old.run(lambda ctx: ctx.db.insert("users", {"name": "still fine"}))
    assert sorted(u["name"] for u in _users(old)) == ["no email", "still fine"]
    old.close()


def test_another_process_follows_a_schema_change(db_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sys
        from engine import Engine, SchemaValidationError, define_schema, define_table, v
        schema = define_schema({{"users": define_table({{"name": v.string()}})}})
        engine = Engine.open({str(db_path)!r}, schema=schema, durability="none")
        print("opened", flush=True)
        sys.stdin.readline()  # the parent has stored a stricter schema
        try:
            engine.run(lambda ctx: ctx.db.insert("users", {{"name": "no email"}}))
            print("inserted", flush=True)
        except SchemaValidationError:
            print("refused", flush=True)
        engine.close()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", child],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "opened"
        with Engine.open(db_path, schema=TIGHT, durability="none") as engine:
            process.stdin.write("go\n")
            process.stdin.flush()
            assert process.stdout.readline().strip() == "refused"
            assert process.wait(30) == 0
            assert _users(engine) == []


def test_a_stored_schema_older_rules_allowed_stays_readable(db_path: Path) -> None:
    # A schema stored before today's definition rules (a record keyed by float64 is
    # refused now) made every transaction of a folder opened without schema= raise.
    import lmdb

    from engine.encoding import decode, encode

    Engine.open(db_path, schema=LOOSE, durability="none").close()
    env = lmdb.open(str(db_path), max_dbs=8, subdir=True)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        stored = decode(txn.get(b"schema", db=meta))
        stored["tables"]["users"]["validator"]["value"]["tags"] = {
            "fieldType": {"type": "record", "keys": {"type": "number"}, "values": {"type": "any"}},
            "optional": True,
        }
        txn.put(b"schema", encode(stored), db=meta)
    env.close()
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("users", {"name": "a"}))
        assert [u["name"] for u in _users(engine)] == ["a"]
        with pytest.raises(SchemaValidationError, match="missing the required field `name`"):
            engine.run(lambda ctx: ctx.db.insert("users", {}))


def test_a_new_index_over_values_longer_than_an_lmdb_key_is_built(db_path: Path) -> None:
    # Such keys (over LMDB's 511 bytes) were refused up front: the new index could not be
    # added while one document had a long text. Convex has no such limit; the backfill
    # now stores them (engine.longkeys), also those another handle commits meanwhile.
    plain = define_schema({"notes": define_table({"text": v.string()})})
    indexed = define_schema(
        {"notes": define_table({"text": v.string()}).index("by_text", ["text"])}
    )
    texts = ["x" * 600 + "b", "short", "x" * 600 + "a"]
    old = Engine.open(db_path, schema=plain, durability="none")
    old.run(lambda ctx: [ctx.db.insert("notes", {"text": t}) for t in texts])
    with Engine.open(db_path, schema=indexed, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("notes", {"text": "y" * 600}))
        found = engine.query(
            lambda ctx: [d["text"] for d in ctx.db.query("notes").with_index("by_text").collect()]
        )
        assert found == sorted([*texts, "y" * 600])
        assert engine.check()["tables"]["notes"]["indexes"]["by_text"] == 4
    old.close()
