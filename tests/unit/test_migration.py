"""Schema changes on Engine.open: backfill, drop, validation of existing data, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import (
    Engine,
    IndexNotFound,
    SchemaValidationError,
    define_schema,
    define_table,
    v,
)

ROOT = Path(__file__).resolve().parents[2]

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


def test_sigkill_during_backfill_then_reopen_completes(db_path: Path) -> None:
    populate(db_path, 30_000)
    script = (
        "import sys\n"
        "from engine import Engine\n"
        "from tests.unit.test_migration import V2\n"
        "Engine.open(sys.argv[1], schema=V2, durability='none')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(db_path)], cwd=ROOT)
    time.sleep(0.8)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with Engine.open(db_path, schema=V2, durability="none") as engine:
        report = engine.check()
        assert report["tables"]["people"]["indexes"]["by_age"] == 30_000
