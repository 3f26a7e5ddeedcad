"""engine.files and engine.blobs: ctx.storage, the _storage table, blobs beside their rows."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    ArgumentValidationError,
    ConvexError,
    CorruptionError,
    Engine,
    EngineError,
    InvalidId,
    InvalidTable,
    ReadOnlyError,
    StorageIdNotFound,
    SystemTableError,
    ValidationError,
)
from engine.blobs import CHUNK_SIZE, chunk_key
from engine.errors import closed_error
from tests import app
from tests.app import files
from tests.readers import ReaderCount


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    with Engine.open(
        db_path, functions=app, durability="none", site_url="https://files.example"
    ) as handle:
        yield handle
        handle.check()


def store(engine: Engine, data: bytes, content_type: str | None = None, **kw: Any) -> str:
    async def body(ctx: Any) -> str:
        return str(await ctx.storage.store(data, content_type, **kw))

    return run_action(engine, body)


def run_action(engine: Engine, fn: Any) -> Any:
    """Run ``fn(ctx)`` as an action (there is no inline form for actions)."""
    import asyncio

    from engine.contexts import ActionCtx

    return asyncio.run(fn(ActionCtx(engine._runtime, None)))


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_store_then_read_back_with_convex_metadata(engine: Engine) -> None:
    result = engine.action(files.make_profile, {"text": "hello", "name": "ada"})
    storage_id = result["storageId"]
    assert result["bytes"] == b"hello"
    assert result["url"].startswith(f"https://files.example/api/storage/{storage_id}-")
    assert result["metadata"] == {
        "storageId": storage_id,
        "sha256": hashlib.sha256(b"hello").hexdigest(),
        "size": 5.0,
        "contentType": "text/plain",
    }
    row = engine.query(files.profile, {"id": result["profileId"]})
    assert row["url"] == result["url"]
    assert row["file"] == {
        "_id": storage_id,
        "_creationTime": row["file"]["_creationTime"],
        "sha256": b64sha(b"hello"),
        "size": 5.0,
        "contentType": "text/plain",
    }
    assert isinstance(row["file"]["size"], float)
    assert engine.query(files.files) == [row["file"]]


def test_content_type_is_absent_when_unknown(engine: Engine) -> None:
    storage_id = store(engine, b"\x00\x01")
    document = engine.run(lambda ctx: ctx.db.system.get(storage_id))
    assert "contentType" not in document
    meta = run_action(engine, lambda ctx: ctx.storage.get_metadata(storage_id))
    assert meta["contentType"] is None


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 7])
def test_files_of_any_size_are_chunked_and_read_back(engine: Engine, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    storage_id = store(engine, data, "application/octet-stream")
    assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) == data
    report = engine.check()
    assert report["files"] == {"files": 1, "bytes": size}
    expected_chunks = max(1, -(-size // CHUNK_SIZE))
    with engine._db.storage.read() as rtxn:
        keys = [bytes(k) for k, _ in rtxn.cursor(db=engine._db.storage.blobs)]
    assert len(keys) == expected_chunks


def test_v_id_storage_validates_storage_ids(engine: Engine) -> None:
    storage_id = store(engine, b"x")
    profile = engine.mutation(files.save_profile, {"name": "a", "avatar": storage_id})
    with pytest.raises(ArgumentValidationError, match="does not match the table name"):
        engine.mutation(files.save_profile, {"name": "b", "avatar": profile})


def test_get_url_is_none_for_a_missing_file_and_rejects_other_tables(engine: Engine) -> None:
    storage_id = store(engine, b"x")
    assert engine.query(files.url, {"id": storage_id}) is not None
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    assert engine.query(files.url, {"id": storage_id}) is None
    user_doc = engine.run(lambda ctx: ctx.db.insert("things", {}))
    with pytest.raises(InvalidId, match='ctx.storage takes IDs of table "_storage"'):
        engine.query(lambda ctx: ctx.storage.get_url(user_doc))
    with pytest.raises(InvalidId):
        engine.query(lambda ctx: ctx.storage.get_url("not an id"))


def test_get_url_before_any_file_exists(engine: Engine) -> None:
    from engine import ids

    made_up = ids.encode_id(1, bytes(16))
    assert engine.query(lambda ctx: ctx.storage.get_url(made_up)) is None
    assert engine.query(lambda ctx: ctx.db.system.query("_storage").collect()) == []


def test_url_is_stable_and_signed(engine: Engine) -> None:
    from engine.files import parse_file_url_path

    storage_id = store(engine, b"x")
    first = engine.query(files.url, {"id": storage_id})
    assert first == engine.query(files.url, {"id": storage_id})
    segment = first.rsplit("/", 1)[1]
    assert parse_file_url_path(engine._db, segment) == storage_id
    assert parse_file_url_path(engine._db, storage_id) is None
    assert parse_file_url_path(engine._db, storage_id + "-é") is None  # no TypeError
    assert (
        parse_file_url_path(engine._db, segment[:-1] + ("0" if segment[-1] != "0" else "1")) is None
    )


def test_delete_is_transactional(engine: Engine) -> None:
    storage_id = store(engine, b"keep me")
    with pytest.raises(ConvexError, match="changed my mind"):
        engine.mutation(files.delete_file, {"id": storage_id, "fail": True})
    assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) == b"keep me"
    assert engine.mutation(files.delete_nested, {"id": storage_id}) is True
    assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) == b"keep me"
    engine.check()
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) is None
    assert engine.check()["files"] == {"files": 0, "bytes": 0}
    with engine._db.storage.read() as rtxn:
        assert list(rtxn.cursor(db=engine._db.storage.blobs)) == []


def test_deleting_a_missing_file_raises_storage_id_not_found(engine: Engine) -> None:
    storage_id = store(engine, b"x")
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    with pytest.raises(StorageIdNotFound, match=f"storage id {storage_id} not found"):
        engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    with pytest.raises(StorageIdNotFound):
        run_action(engine, lambda ctx: ctx.storage.delete(storage_id))


def test_action_delete_then_get_and_url_are_none(engine: Engine) -> None:
    storage_id = store(engine, b"x")
    assert engine.action(files.drop, {"id": storage_id}) == [None, None]


def test_user_code_cannot_write_storage_rows(engine: Engine) -> None:
    storage_id = store(engine, b"x")
    with pytest.raises(ReadOnlyError):
        engine.run(lambda ctx: ctx.db.insert("_storage", {"sha256": "", "size": 0.0}))
    with pytest.raises(ReadOnlyError):
        engine.run(lambda ctx: ctx.db.patch(storage_id, {"size": 1.0}))
    with pytest.raises(ReadOnlyError):
        engine.run(lambda ctx: ctx.db.delete(storage_id))
    with pytest.raises(InvalidTable):
        engine.query(lambda ctx: ctx.db.query("_storage").collect())
    with pytest.raises(AttributeError):  # a query's ctx.storage is a reader: no delete
        engine.query(lambda ctx: ctx.storage.delete(storage_id))
    assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) == b"x"


def test_queries_get_a_reader_mutations_a_writer(engine: Engine) -> None:
    assert not engine.query(lambda ctx: hasattr(ctx.storage, "delete"))
    assert not engine.query(lambda ctx: hasattr(ctx.storage, "generate_upload_url"))
    url = engine.mutation(files.upload_url)
    assert url.startswith("https://files.example/api/storage/upload?token=")


def test_sha256_option_is_checked(engine: Engine) -> None:
    data = b"checked"
    hex_digest = hashlib.sha256(data).hexdigest()
    assert store(engine, data, sha256=hex_digest)
    assert store(engine, data, sha256=b64sha(data))
    with pytest.raises(ValidationError, match="Sha256 mismatch"):
        store(engine, data, sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ValidationError, match="SHA-256 digest in hex"):
        store(engine, data, sha256="nope")
    assert engine.check()["files"]["files"] == 2


def test_store_rejects_non_bytes_and_bad_content_types(engine: Engine) -> None:
    with pytest.raises(ValidationError, match="expects bytes"):
        store(engine, "text")  # type: ignore[arg-type]
    for bad in [
        "text/html\r\nSet-Cookie: a=b",  # would be sent back as a header
        "text/plain; name=résumé€.txt",  # not ASCII: no HTTP header can carry it
        "text/plain\x7f",
    ]:
        with pytest.raises(ValidationError, match="visible ASCII"):
            store(engine, b"x", bad)
        with pytest.raises(ValidationError, match="visible ASCII"):
            engine.store_file(b"x", bad)
    assert engine.store_file(b"x", "text/plain; charset=utf-8")  # spaces are fine
    assert engine.check()["files"]["files"] == 1


def test_subscription_on_url_follows_deletion(engine: Engine) -> None:
    storage_id = store(engine, b"x")
    with engine.subscribe(files.url, {"id": storage_id}) as sub:
        assert sub.value is not None
        engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
        assert sub.value is None


def test_check_finds_missing_orphan_and_altered_blobs(engine: Engine) -> None:
    a = store(engine, b"aaaa")
    b = store(engine, b"b" * (CHUNK_SIZE + 3))
    storage = engine._db.storage
    table = engine._db.latest_catalog().tables["_storage"]
    from engine import ids

    key_a = table.prefix + ids.decode_id(a)[1]
    key_b = table.prefix + ids.decode_id(b)[1]
    orphan = table.prefix + bytes(range(16))
    storage.write(lambda w: w.delete(chunk_key(key_a, 0), db=storage.blobs))
    storage.write(lambda w: w.put(chunk_key(key_b, 1), b"bbb!", db=storage.blobs))
    storage.write(lambda w: w.put(chunk_key(orphan, 0), b"lost", db=storage.blobs))
    with pytest.raises(CorruptionError) as raised:
        engine.check()
    text = "\n".join(raised.value.problems)
    assert f"_storage row {key_a.hex()} has no blob" in text
    assert f"file {b} has {CHUNK_SIZE + 4} bytes" in text
    assert f"blob {orphan.hex()} has no _storage row" in text
    # repair, so the fixture's final check passes
    storage.write(lambda w: w.put(chunk_key(key_a, 0), b"aaaa", db=storage.blobs))
    storage.write(lambda w: w.put(chunk_key(key_b, 1), b"bbb", db=storage.blobs))
    storage.write(lambda w: w.delete(chunk_key(orphan, 0), db=storage.blobs))
    engine.check()


def test_check_finds_a_gap_in_the_chunks(engine: Engine) -> None:
    from engine import ids

    b = store(engine, b"c" * (2 * CHUNK_SIZE + 1))
    storage = engine._db.storage
    table = engine._db.latest_catalog().tables["_storage"]
    key_b = table.prefix + ids.decode_id(b)[1]
    storage.write(lambda w: w.delete(chunk_key(key_b, 1), db=storage.blobs))
    with pytest.raises(CorruptionError, match="has chunk 2 where chunk 1 belongs"):
        engine.check()
    storage.write(lambda w: w.put(chunk_key(key_b, 1), b"c" * CHUNK_SIZE, db=storage.blobs))


def test_a_folder_without_the_blobs_sub_database_opens_and_stores(db_path: Path) -> None:
    with Engine.open(db_path, durability="none") as engine:
        engine.run(lambda ctx: ctx.db.insert("things", {"n": 1}))
        storage = engine._db.storage
        # As an older convexlite left it: no blobs sub-database at all.
        storage.write(lambda w: w.drop(storage.blobs, delete=True))
    with Engine.open(db_path, durability="none", functions=app) as engine:
        storage_id = store(engine, b"new")
        assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) == b"new"
        assert engine.check()["files"] == {"files": 1, "bytes": 3}


def test_default_origin_without_site_url(db_path: Path) -> None:
    with Engine.open(db_path, durability="none", functions=app) as engine:
        storage_id = store(engine, b"x")
        assert engine.query(files.url, {"id": storage_id}).startswith(
            f"http://127.0.0.1:3210/api/storage/{storage_id}-"
        )


def test_a_file_larger_than_the_map_grows_it(db_path: Path, monkeypatch: Any) -> None:
    from engine import storage as storage_module

    # The map starts at 1 MiB: the commit of a 3 MiB file finds it full, the write txn
    # is aborted, the map grows, and the same group is applied again.
    monkeypatch.setitem(storage_module.open_storage.__kwdefaults__, "map_size", 1 << 20)
    with Engine.open(db_path, durability="none", functions=app) as engine:
        before = engine._db.storage.map_size
        data = bytes(range(256)) * (3 * 4096)
        storage_id = store(engine, data)
        assert engine._db.storage.map_size > before
        assert run_action(engine, lambda ctx: ctx.storage.get(storage_id)) == data
        assert engine.check()["files"] == {"files": 1, "bytes": len(data)}


def test_concurrent_stores_and_deletes_from_threads(engine: Engine) -> None:
    import threading

    ids: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            storage_id = engine.store_file(f"{n}:{i}".encode() * 1000, "text/plain")
            with lock:
                ids.append(storage_id)
            if i % 3 == 0:
                engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
                with lock:
                    ids.remove(storage_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = engine.query(files.files)
    assert sorted(r["_id"] for r in rows) == sorted(ids)
    assert engine.check()["files"]["files"] == len(ids) == 6 * 6


async def test_host_store_and_get_file(engine: Engine) -> None:
    storage_id = await engine.astore_file(b"from the host", "text/plain")
    assert engine.get_file(storage_id) == b"from the host"
    assert await engine.aget_file(storage_id) == b"from the host"
    assert engine.query(files.url, {"id": storage_id}) is not None
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    assert engine.get_file(storage_id) is None
    with pytest.raises(ValidationError, match="Sha256 mismatch"):
        engine.store_file(b"x", sha256=hashlib.sha256(b"y").hexdigest())


def test_a_file_deleted_between_its_row_and_its_bytes_reads_as_missing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bytes are read in a second snapshot (zero-copy buffers); one taken after a
    # delete finds no chunks, and the file reads as gone rather than as b"".
    from engine import files as engine_files

    storage_id = engine.store_file(b"x" * (CHUNK_SIZE + 5))
    # What read_file's first snapshot finds: the row and its key (bytes read later).
    stale = engine_files._read(
        engine._db, lambda txn: (*engine_files._document(txn, storage_id), None)
    )
    engine.mutation(files.delete_file, {"id": storage_id, "fail": False})
    monkeypatch.setattr(engine_files, "_read", lambda db, fn: stale)
    assert engine_files.read_file(engine._db, storage_id) is None
    assert engine.get_file(storage_id) is None


def test_an_actions_storage_reads_on_a_closed_engine_raise_the_closed_error(
    db_path: Path,
) -> None:
    # Found by the actions hunt: ctx.storage.get / get_url / get_metadata in an action
    # read in a transaction that neither checked that the engine was closing nor was
    # counted as a running call, so after close() they raised StorageError ("LMDB error
    # at ...: Attempt to operate on closed/deleted/dropped object"), where the action's
    # other calls (run_query, store, delete) raise the engine's closed error.
    engine = Engine.open(db_path, functions=app, durability="none")
    small, large = engine.store_file(b"small"), engine.store_file(b"x" * (CHUNK_SIZE + 1))
    engine.close()
    calls: dict[str, Any] = {
        "get small": lambda ctx: ctx.storage.get(small),
        "get large": lambda ctx: ctx.storage.get(large),
        "get_url": lambda ctx: ctx.storage.get_url(small),
        "get_metadata": lambda ctx: ctx.storage.get_metadata(small),
        "generate_upload_url": lambda ctx: ctx.storage.generate_upload_url(),
        "run_query": lambda ctx: ctx.run_query(files.url, {"id": small}),
    }
    for name, call in calls.items():
        with pytest.raises(EngineError) as raised:
            run_action(engine, call)
        assert type(raised.value) is EngineError, (name, raised.value)
        assert str(raised.value) == str(closed_error()), name


def test_db_get_and_db_system_get_keep_to_their_tables(engine: Engine) -> None:
    # Convex's system_table_guard: whether or not the document exists.
    storage_id = engine.store_file(b"x")
    user_id = engine.run(lambda ctx: ctx.db.insert("things", {"n": 1}))
    assert engine.run(lambda ctx: ctx.db.system.get(storage_id))["size"] == 1.0
    assert engine.run(lambda ctx: ctx.db.get(user_id))["n"] == 1
    for _ in ("existing", "deleted"):
        with pytest.raises(SystemTableError, match="System tables can only be accessed with db"):
            engine.run(lambda ctx: ctx.db.get(storage_id))
        with pytest.raises(SystemTableError, match="User tables cannot be accessed with db.system"):
            engine.run(lambda ctx: ctx.db.system.get(user_id))
        if engine.get_file(storage_id) is not None:
            engine.run(lambda ctx: ctx.storage.delete(storage_id))
            engine.run(lambda ctx: ctx.db.delete(user_id))
    assert issubclass(SystemTableError, InvalidTable)


def test_query_and_normalize_id_keep_to_their_tables_with_convex_words(engine: Engine) -> None:
    """convex-js TableReader.query and normalizeId: a system table through db, or a
    user table through db.system, throws (normalizeId answered the id here)."""
    storage_id = engine.store_file(b"x")
    user_id = engine.run(lambda ctx: ctx.db.insert("things", {"n": 1}))
    with pytest.raises(
        InvalidTable, match=r"System tables can only be accessed from db\.system\.normalize_id\(\)"
    ):
        engine.run(lambda ctx: ctx.db.normalize_id("_storage", storage_id))
    with pytest.raises(
        InvalidTable, match=r"System tables can only be accessed from db\.system\.query\(\)"
    ):
        engine.run(lambda ctx: ctx.db.query("_storage"))
    with pytest.raises(
        InvalidTable, match=r"User tables can only be accessed from db\.normalize_id\(\)"
    ):
        engine.run(lambda ctx: ctx.db.system.normalize_id("things", user_id))
    with pytest.raises(InvalidTable, match=r"User tables can only be accessed from db\.query\(\)"):
        engine.run(lambda ctx: ctx.db.system.query("things"))
    assert engine.run(lambda ctx: ctx.db.system.normalize_id("_storage", storage_id)) == storage_id
    assert engine.run(lambda ctx: ctx.db.normalize_id("things", user_id)) == user_id


def test_a_table_name_that_is_no_str_is_called_invalid_not_a_system_or_user_table(
    engine: Engine,
) -> None:
    # ctx.db.query(None) said "System tables can only be accessed from db.system.query()",
    # and ctx.db.system.query(None) "User tables can only be accessed from db.query()".
    for call in [
        lambda ctx: ctx.db.query(None),
        lambda ctx: ctx.db.query(123),
        lambda ctx: ctx.db.system.query(None),
        lambda ctx: ctx.db.system.normalize_id(["_storage"], "x"),
    ]:
        with pytest.raises(InvalidTable, match="Invalid table name") as info:
            engine.run(call)
        assert "can only be accessed" not in str(info.value)


def test_check_requires_full_chunks_but_the_last(engine: Engine) -> None:
    from engine import ids

    data = bytes(range(256)) * (300 * 4)  # 300 KiB: chunks of 256 KiB and 44 KiB
    storage_id = store(engine, data)
    storage = engine._db.storage
    table = engine._db.latest_catalog().tables["_storage"]
    key = table.prefix + ids.decode_id(storage_id)[1]

    def split(sizes: list[int]) -> None:
        def write(w: Any) -> None:
            cursor = w.cursor(db=storage.blobs)
            while cursor.set_range(key) and cursor.key()[:20] == key:
                cursor.delete()
            start = 0
            for number, size in enumerate(sizes):
                w.put(chunk_key(key, number), data[start : start + size], db=storage.blobs)
                start += size

        storage.write(write)

    split([100 * 1024, 100 * 1024, 100 * 1024])  # same bytes, same sha256, short chunks
    with pytest.raises(CorruptionError, match="every chunk but the last has"):
        engine.check()
    split([CHUNK_SIZE, len(data) - CHUNK_SIZE, 0])  # a trailing empty chunk
    with pytest.raises(CorruptionError, match="has 3 chunks for 307200 bytes; 2 of"):
        engine.check()
    split([CHUNK_SIZE, len(data) - CHUNK_SIZE])
    assert engine.check()["files"] == {"files": 1, "bytes": len(data)}


def test_upload_tokens_are_parsed_strictly(engine: Engine) -> None:
    from engine.files import check_upload_token, upload_url

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token = upload_url(engine._db, "http://x").split("token=")[1]
    assert check_upload_token(engine._db, token) is None
    spare_bits = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]  # same bytes decoded
    standard = token.replace("-", "+").replace("_", "/")
    for bad in (
        [
            token[:5] + "!!*" + token[5:],  # urlsafe_b64decode drops characters it does not know
            token[:5] + "\n" + token[5:],
            spare_bits,
            token + "=",
            token + "A",
            " " + token[1:],
            token[:-1] + "é",
        ]
        + ([standard] if standard != token else [])
    ):
        assert check_upload_token(engine._db, bad) == "the upload token is malformed", bad


def test_store_file_returns_once_subscriptions_show_the_file(engine: Engine) -> None:
    # Found by subscribing to the _storage rows and storing a file from the host: the
    # subscription still showed no file when store_file returned, unlike after
    # Engine.mutation and Engine.run (read-your-writes for this process's writes).
    with engine.subscribe(files.files, {}) as sub:
        assert sub.value == []
        for n in range(1, 6):
            storage_id = engine.store_file(b"x" * n, "text/plain")
            assert [row["_id"] for row in sub.value][-1:] == [storage_id]
            assert len(sub.value) == n


async def test_astore_file_returns_once_subscriptions_show_the_file(engine: Engine) -> None:
    with engine.subscribe(files.files, {}) as sub:
        storage_id = await engine.astore_file(b"x", "text/plain")
        assert [row["_id"] for row in sub.value] == [storage_id]


def test_reading_a_large_file_holds_one_reader_slot_at_a_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over 64 KiB is read in two snapshots (the row, then the chunks through
    zero-copy buffers). The second ran inside a read-only ``db.run`` only to be counted
    as a running call, which opened a read transaction it never used: two reader slots
    held at once. Now each snapshot is the only one open while it is."""
    data = bytes(range(256)) * (CHUNK_SIZE // 128 + 3)
    storage_id = engine.store_file(data)
    readers = ReaderCount(engine, monkeypatch)
    assert engine.get_file(storage_id) == data
    assert readers.peak == 1 and readers.open == 0
