"""Vector entries under concurrent writers: threads and processes, with searches running."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import threading
from pathlib import Path
from typing import Any

from engine import Engine, OptimisticConcurrencyControlFailure, define_schema, define_table
from engine.contexts import ActionCtx
from tests.race.workers import vector_writer

SCHEMA = define_schema(
    {
        "items": define_table().vector_index(
            "by_vec", vector_field="vec", dimensions=4, filter_fields=["group"]
        )
    },
    schema_validation=False,
)


def _search(engine: Engine, query: list[float], **kw: Any) -> list[dict[str, Any]]:
    async def body(ctx: ActionCtx) -> Any:
        return await ctx.vector_search("items", "by_vec", vector=query, **kw)

    return asyncio.run(body(ActionCtx(engine._runtime, None)))


def _agrees_with_the_documents(engine: Engine) -> None:
    """check() passes, and a search ranks every indexable document as brute force does."""
    engine.check()
    documents = engine.run(lambda ctx: ctx.db.query("items").collect())
    query = [1.0, 0.5, -1.0, 0.25]
    for group in (None, 1):
        filter_ = None if group is None else (lambda q, g=group: q.eq("group", g))
        found = _search(engine, query, limit=256, filter=filter_)
        # Every document has 4 floats: all are indexed (a zero vector scores 0).
        wanted = [d for d in documents if group is None or d["group"] == group]
        assert len(found) == min(256, len(wanted))
        by_id = {d["_id"]: d for d in documents}
        for result in found:
            vec = by_id[result["_id"]]["vec"]
            norm = math.sqrt(sum(x * x for x in vec))
            expected = (
                0.0
                if norm == 0
                else sum(a * b for a, b in zip(vec, query, strict=True))
                / (norm * math.sqrt(sum(x * x for x in query)))
            )
            assert math.isclose(result["_score"], expected, abs_tol=1e-5)


def test_threads_writing_and_searching(db_path: Path) -> None:
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine._db.retry.retries = 50
        errors: list[BaseException] = []
        commits: list[None] = []

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(60):

                    def body(ctx: Any) -> None:
                        rows = ctx.db.query("items").take(10)
                        vector = [rng.choice([0.0, 1.0, -1.0]) for _ in range(4)]
                        if rows and rng.random() < 0.4:
                            ctx.db.patch(rng.choice(rows)["_id"], {"vec": vector})
                        elif rows and rng.random() < 0.2:
                            ctx.db.delete(rng.choice(rows)["_id"])
                        else:
                            ctx.db.insert("items", {"vec": vector, "group": rng.randrange(3)})

                    try:
                        engine.run(body)
                        commits.append(None)
                    except OptimisticConcurrencyControlFailure:
                        pass  # four writers on the same ten rows: a few may outlast the retries
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        def searcher() -> None:
            try:
                for _ in range(40):
                    for result in _search(engine, [1.0, 0.0, 0.0, 0.0], limit=20):
                        assert -1.0001 <= result["_score"] <= 1.0001
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        threads.append(threading.Thread(target=searcher))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(commits) > 120  # of 240
        _agrees_with_the_documents(engine)


def test_two_processes_writing_the_same_vector_table(db_path: Path) -> None:
    Engine.open(db_path, schema=SCHEMA, durability="normal").close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        done = pool.starmap(vector_writer, [(str(db_path), seed, 80) for seed in (1, 2)])
    assert sum(done) > 80  # most commit; a conflict that outlasts 50 retries may not
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        _agrees_with_the_documents(engine)
