"""Functions and process entry points shared by race and crash tests.

Module-level so that ``multiprocessing`` (spawn) can import them in children.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from engine import Engine, MutationCtx
from tests.crash import STARTED


def increment(ctx: MutationCtx, key: str = "counter") -> int:
    row = ctx.db.query("counters").filter(lambda q: q.eq(q.field("key"), key)).first()
    if row is None:
        ctx.db.insert("counters", {"key": key, "n": 1})
        return 1
    ctx.db.patch(row["_id"], {"n": row["n"] + 1})
    return int(row["n"]) + 1


def go_off_call(ctx: MutationCtx, doctor: str) -> bool:
    """Write skew: go off call only if another doctor stays on call."""
    on_call = [d for d in ctx.db.query("doctors").collect() if d["on_call"]]
    me = next(d for d in ctx.db.query("doctors").collect() if d["name"] == doctor)
    if len(on_call) >= 2 and me["on_call"]:
        ctx.db.patch(me["_id"], {"on_call": False})
        return True
    return False


def book(ctx: MutationCtx, slot: str, who: str, capacity: int) -> bool:
    """Phantom: count the rows of a slot, insert only below capacity."""
    taken = ctx.db.query("bookings").filter(lambda q: q.eq(q.field("slot"), slot)).collect()
    if len(taken) >= capacity:
        return False
    ctx.db.insert("bookings", {"slot": slot, "who": who})
    return True


def process_increments(path: str, count: int, durability: Any = "full") -> int:
    """Child process: run ``count`` increments, return how many committed."""
    from engine import OptimisticConcurrencyControlFailure

    done = 0
    with Engine.open(path, durability=durability) as engine:
        engine._db.retry.retries = 50
        for _ in range(count):
            try:
                engine.run(increment)
                done += 1
            except OptimisticConcurrencyControlFailure:
                pass
    return done


def crash_writer(path: str, durability: str) -> None:
    """Child process for crash tests: insert batches, print each acknowledged batch.

    Each transaction inserts 3 documents sharing a batch number and bumps a
    counter row, so a partial transaction would show up as a batch with
    fewer than 3 rows or a counter that disagrees with the batches. ``pad`` is
    indexed, and every third batch's is long: its index keys pass LMDB's 511 bytes
    (engine.longkeys), so kills also land in writes of long-key entries. ``vec`` is in
    a vector index filtered by batch, so they land in writes of vector entries too
    (made by the commit leader from the documents: engine.vectors).
    """
    from engine import define_schema, define_table

    print(STARTED, flush=True)  # tests.crash.kill_worker_after times the kill from here
    schema = define_schema(
        {
            "rows": define_table()
            .index("by_pad", ["pad"])
            .vector_index("by_vec", vector_field="vec", dimensions=3, filter_fields=["batch"])
        }
    )
    with Engine.open(path, durability=durability, schema=schema) as engine:  # type: ignore[arg-type]
        counter = engine.run(lambda ctx: ctx.db.insert("state", {"batches": 0}))
        print(f"counter {counter}", flush=True)
        batch = 0
        while True:
            batch += 1

            def body(ctx: MutationCtx, b: int = batch) -> None:
                for i in range(3):
                    ctx.db.insert(
                        "rows",
                        {
                            "run": counter,
                            "batch": b,
                            "i": i,
                            "pad": "x" * (b % 200) + ("y" * 600 if b % 3 == 0 else ""),
                            "vec": [float(b), float(i), 1.0],
                        },
                    )
                state = ctx.db.get(counter)
                assert state is not None
                ctx.db.patch(counter, {"batches": state["batches"] + 1})

            engine.run(body)
            sys.stdout.write(f"ack {batch}\n")
            sys.stdout.flush()


def vector_writer(path: str, seed: int, count: int) -> int:
    """Child process: ``count`` mutations that insert, patch or delete documents of the
    vector-indexed table ``items`` (see tests/race/test_vector_race.py); returns how
    many committed."""
    import random

    from engine import OptimisticConcurrencyControlFailure

    rng = random.Random(seed)
    done = 0
    with Engine.open(path, durability="normal") as engine:
        engine._db.retry.retries = 50  # both read the same rows: conflicts are the point
        for _ in range(count):

            def body(ctx: MutationCtx) -> None:
                rows = ctx.db.query("items").take(20)
                choice = rng.random()
                vector = [rng.choice([0.0, 1.0, -1.0, 0.5]) for _ in range(4)]
                if choice < 0.5 or not rows:
                    ctx.db.insert("items", {"vec": vector, "group": rng.randrange(3)})
                elif choice < 0.8:
                    row = rng.choice(rows)
                    ctx.db.patch(row["_id"], {"vec": vector, "group": rng.randrange(3)})
                else:
                    ctx.db.delete(rng.choice(rows)["_id"])

            try:
                engine.run(body)
                done += 1
            except OptimisticConcurrencyControlFailure:
                pass
    return done


def file_writer(path: str, durability: str) -> None:
    """Child process for crash tests: store files (some of several chunks), delete some.

    Prints ``stored <id> <sha256 hex>`` after each store returns, ``deleting <id>``
    before a delete starts and ``deleted <id>`` after it commits, so the parent
    knows what was acknowledged (and which files a kill may have caught mid-delete).
    """
    import hashlib
    import random

    rng = random.Random(os.getpid())
    kept: list[str] = []
    print(STARTED, flush=True)  # tests.crash.kill_worker_after times the kill from here
    with Engine.open(path, durability=durability) as engine:  # type: ignore[arg-type]
        n = 0
        while True:
            n += 1
            size = rng.choice([0, 10, 5000, 300_000, 600_000])
            data = rng.randbytes(size)
            storage_id = engine.store_file(data, "application/octet-stream")
            print(f"stored {storage_id} {hashlib.sha256(data).hexdigest()}", flush=True)
            kept.append(storage_id)
            if n % 4 == 0:
                victim = kept.pop(rng.randrange(len(kept)))
                print(f"deleting {victim}", flush=True)
                engine.run(lambda ctx, v=victim: ctx.storage.delete(v))
                print(f"deleted {victim}", flush=True)


def store_files(path: str, count: int) -> None:
    """Child process: open the folder, store ``count`` files, print each id."""
    with Engine.open(path, durability="none") as engine:
        for i in range(count):
            data = f"{os.getpid()}:{i}".encode()
            print(f"stored {engine.store_file(data)} {data.decode()}", flush=True)


def hold_a_read(path: str) -> None:
    """Child process: start a query, say so, and stay inside it (until killed)."""
    import time

    with Engine.open(path, durability="none") as engine:

        def reading(ctx: Any) -> None:
            ctx.db.query("t").first()
            print("reading", flush=True)
            time.sleep(120)

        engine.query(reading)


def hold_reads(path: str, count: int) -> None:
    """Child process: ``count`` threads each inside a query (until killed)."""
    import threading

    with Engine.open(path, durability="none") as engine:
        inside = threading.Semaphore(0)

        def reading(ctx: Any) -> None:
            ctx.db.query("t").first()
            inside.release()
            threading.Event().wait()

        for _ in range(count):
            threading.Thread(target=engine.query, args=(reading,), daemon=True).start()
        for _ in range(count):
            inside.acquire()
        print("reading", flush=True)
        threading.Event().wait()


def hold_the_write_lock(path: str) -> None:
    """Child process: open a write txn (LMDB's writer lock), write in it, say so, and
    stay inside it (until killed)."""
    import time

    with Engine.open(path, durability="none") as engine:
        storage = engine._db.storage

        def writing(wtxn: Any) -> None:
            wtxn.put(b"never_committed", b"1", db=storage.meta)
            print("writing", flush=True)
            time.sleep(120)

        storage.write(writing)


def write_once(path: str) -> None:
    """Child process: open the folder's storage, commit one key, say so."""
    from engine import storage

    opened = storage.open_storage(path, durability="none")
    try:
        opened.write(lambda wtxn: wtxn.put(b"other_process", b"1", db=opened.meta))
    finally:
        opened.release()
    print("written", flush=True)


def grow_map(path: str, seconds: float) -> None:
    """Child process: insert 200 KB per commit for ``seconds``, from a 1 MiB map."""
    import time

    from engine import storage

    storage.open_storage.__kwdefaults__["map_size"] = 1 << 20
    with Engine.open(path, durability="none") as engine:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            engine.run(lambda ctx: [ctx.db.insert("big", {"pad": "x" * 4000}) for _ in range(50)])


def migrate(path: str) -> None:
    """Child process for the backfill crash test: open the folder with schema V2 of
    tests/unit/test_migration.py, whose new index the open backfills in batches of 500
    (not 5,000: sixty commits, so a kill lands inside them). Prints ``backfilling`` as
    the backfill starts and ``opened`` once the open returned."""
    from engine import migration
    from tests.unit.test_migration import V2

    backfill = migration._backfill

    def announced(db: Any, table: str, index: str) -> None:
        print("backfilling", flush=True)
        backfill(db, table, index)

    migration._BATCH = 500
    migration._backfill = announced
    Engine.open(path, schema=V2, durability="none").close()
    print("opened", flush=True)


def backup_loop(path: str, target: str) -> None:
    """Child process for the backup crash test: open ``path``, then over and over insert
    a ``gen`` row (``ack N`` once committed) and back up to ``target/N`` (``done N``
    once backup returned), removing backup N-1 then, so the disk holds two copies at
    most. The kill lands in a copy (most of the loop's time), its sync or its rename."""
    import shutil

    with Engine.open(path, durability="none") as engine:
        print("opened", flush=True)
        n = 0
        while True:
            n += 1
            engine.run(lambda ctx, n=n: ctx.db.insert("gens", {"n": n}))
            print(f"ack {n}", flush=True)
            engine.backup(os.path.join(target, str(n)))
            print(f"done {n}", flush=True)
            if n > 1:
                shutil.rmtree(os.path.join(target, str(n - 1)))


def thread_writer(path: str, durability: str, threads: int) -> None:
    """Child process for the group-commit crash test: ``threads`` threads each run
    mutations that insert 2 rows tagged with the thread's counter row and its batch
    number ``k`` and bump that counter, printing ``ack T K`` after each commit returns.
    Their commits meet in the commit queue, so kills land in group commits."""
    import threading
    import time

    with Engine.open(path, durability=durability) as engine:  # type: ignore[arg-type]
        ids = [engine.run(lambda ctx: ctx.db.insert("counters", {"n": 0})) for _ in range(threads)]
        print("opened", flush=True)  # the kill is timed from here, and the ids follow
        print("ids " + " ".join(ids), flush=True)
        lock = threading.Lock()

        def loop(t: int) -> None:
            k = 0
            while True:
                k += 1

                def body(ctx: MutationCtx, k: int = k) -> None:
                    for i in range(2):
                        ctx.db.insert("rows", {"c": ids[t], "k": k, "i": i, "pad": "p" * (k % 700)})
                    counter = ctx.db.get(ids[t])
                    assert counter is not None
                    ctx.db.patch(ids[t], {"n": counter["n"] + 1})

                engine.run(body)
                with lock:
                    sys.stdout.write(f"ack {t} {k}\n")
                    sys.stdout.flush()

        for t in range(threads):
            threading.Thread(target=loop, args=(t,), daemon=True).start()
        time.sleep(120)  # killed long before


def index_writer(path: str, seed: int, seconds: float) -> None:
    """Child process for the schema race test: for ``seconds``, mutations that patch
    (indexed fields set and UNSET), replace, delete and re-insert, and insert rows of
    table ``t``, each bumping this process's counter row; prints ``done N`` (N mutations
    committed) at the end. Run while another process changes ``t``'s indexes."""
    import random
    import time

    from engine import UNSET, OptimisticConcurrencyControlFailure

    rng = random.Random(seed)
    with Engine.open(path, durability="none", scheduler=False) as engine:
        end = time.monotonic() + seconds
        counter = None
        while counter is None:
            # Its first commit too may use up the retries while the schema keeps changing
            # (seen once in a full run): tried again, within the run's time and more.
            try:
                counter = engine.run(lambda ctx: ctx.db.insert("counters", {"n": 0}))
            except OptimisticConcurrencyControlFailure:
                if time.monotonic() > end + 30:
                    raise
        print(f"counter {counter}", flush=True)
        done = 0

        def body(ctx: MutationCtx) -> None:
            rows = ctx.db.query("t").take(50)
            for _ in range(3):
                roll = rng.random()
                row = rng.choice(rows) if rows else None
                if row is None or roll < 0.3:
                    ctx.db.insert("t", {"a": rng.randint(0, 9), "s": "new row", "b": rng.random()})
                elif ctx.db.get(row["_id"]) is None:
                    continue  # deleted by this mutation
                elif roll < 0.6:
                    b = UNSET if rng.random() < 0.5 else rng.random()
                    ctx.db.patch(row["_id"], {"a": rng.randint(0, 9), "b": b, "s": "patched"})
                elif roll < 0.8:
                    ctx.db.replace(row["_id"], {"b": "r" * rng.randint(0, 600)})
                else:
                    ctx.db.delete(row["_id"])
                    ctx.db.insert("t", {"a": row.get("a"), "s": "reborn"})
            current = ctx.db.get(counter)
            assert current is not None
            ctx.db.patch(counter, {"n": current["n"] + 1})

        while time.monotonic() < end:
            try:
                engine.run(body)
            except OptimisticConcurrencyControlFailure:
                continue
            done += 1
        print(f"done {done}", flush=True)


def job_writer(path: str, tag: str) -> None:
    """Child process for the scheduler crash test: over and over, schedule (through
    ``jobs.schedule_bumps``) a mutation job and an action job for each of 3 new keys,
    printing ``scheduled KEY...`` once committed, while the executor runs them."""
    import time

    from tests import app
    from tests.app import jobs

    with Engine.open(path, functions=app, durability="full") as engine:
        print("opened", flush=True)
        batch = 0
        while True:
            batch += 1
            keys = [f"{tag}-{batch}-{i}" for i in range(3)]
            engine.mutation(jobs.schedule_bumps, {"keys": keys})
            print("scheduled " + " ".join(keys), flush=True)
            time.sleep(0.01)  # let the executor keep up


if __name__ == "__main__":
    if sys.argv[1] == "hold_a_read":
        hold_a_read(sys.argv[2])
    elif sys.argv[1] == "hold_reads":
        hold_reads(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "store_files":
        store_files(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "file_writer":
        file_writer(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "migrate":
        migrate(sys.argv[2])
    elif sys.argv[1] == "hold_the_write_lock":
        hold_the_write_lock(sys.argv[2])
    elif sys.argv[1] == "write_once":
        write_once(sys.argv[2])
    elif sys.argv[1] == "thread_writer":
        thread_writer(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "index_writer":
        index_writer(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "job_writer":
        job_writer(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "backup_loop":
        backup_loop(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "grow_map":
        grow_map(sys.argv[2], float(sys.argv[3]))
    else:
        crash_writer(sys.argv[1], sys.argv[2])
    os._exit(0)
