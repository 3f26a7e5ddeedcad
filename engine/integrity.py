"""``Engine.check()``: verify every invariant of the stored data.

Invariants, checked on one consistent snapshot:

1. every document key is ``table number ‖ internal id`` of a known table, the
   document's ``_id`` decodes to exactly that table and internal id, and the
   document keeps the rules every write checks (a Convex value, nesting at most 16,
   at most 1 MiB, no top-level ``_`` field but the system ones), matches the stored
   schema (if it validates), and has a ``_creationTime`` that is a finite,
   non-negative float;
2. every document has exactly the index entries its fields produce, in every
   index of its table (``by_creation_time`` included; in a full-text search
   index, one per distinct token of its search field; in a vector index, its
   vector and filter entries with exactly the values the document gives);
3. every index entry belongs to a known index, has an empty value, and points
   to a live document that produces exactly that key (no orphans, no stale keys);
4. index keys decode as sort keys (key order is byte order, which LMDB keeps);
5. per index, the entry count equals the table's document count (for a search
   index, the number of entries its documents produce), and a folder whose
   catalog has a search index is format 7 (one with a vector index 6 or 7); when a
   search or vector index's count is wrong, a second pass over that index names
   each entry no document gives (and its document);
6. the log is ordered, no entry is newer than the head, and the log floor
   (the newest pruned timestamp) is below every entry and not above the head;
7. every ``_storage`` row has its file's bytes in ``blobs``, with the recorded
   size and sha256, and every blob belongs to a ``_storage`` row
   (:func:`engine.blobs.check`);
8. the catalog (read afresh, not from the cache) has the version the head names;
   each table is stored under its own name, with a number of its kind (user
   tables from 10001, system tables below) used by no other table and below the
   next free number; each has ``by_id`` and ``by_creation_time``; every index is
   of a known kind (a search index with a search field); index numbers
   are unique across tables, at least 1 (0 is the catalog's own) and below the
   next free number. A broken one would let two tables or two indexes share keys.
   Against the stored schema: every table it declares is in the catalog with
   exactly the indexes it declares (kind, fields, dimensions), and no user table
   has an undeclared index (except one still backfilling);
9. the environment's main database names only the sub-databases; ``meta`` holds
   this format version, a head that decodes, the newest log entry at the head's
   timestamp, a stored schema that decodes, changed no later than the head, and
   a secret (the key of cursors and file URLs) of 32 bytes;
10. what the caller adds (``more``): ``Engine.check()`` adds the shape of every
    scheduled job and cron (:func:`engine.scheduler.check_jobs`,
    :func:`engine.crontables.check_crons`), read in the same snapshot.

Invariants 8 and 9 are checked by :mod:`engine.metadata`. The
:class:`CorruptionError` lists up to 50 problems, counts them all, and says
how to repair.

Cost: one pass over ``documents`` (each decoded and validated) and one over
``indexes``; memory proportional to the number of index entries of one table at
a time is not needed: expected keys are checked by point lookups (only the
second pass over a damaged search or vector index keeps its documents' keys).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from . import blobs, ids, keys, longkeys, searchkeys, values, vectors
from .encoding import decode, decode_document
from .errors import CorruptionError, LimitExceeded, ValidationError
from .metadata import check_catalog, check_declared, check_meta, problem_of

if TYPE_CHECKING:
    from .catalog import IndexDef, TableDef
    from .database import Database

__all__ = ["check"]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MAX_PROBLEMS = 50


#: Further checks :func:`check` runs in its snapshot: called with the LMDB txn, returns
#: (what to add to the report, problems found).
MoreChecks = Callable[[Any], tuple[dict[str, Any], list[str]]]


def check(db: Database, more: MoreChecks | None = None) -> dict[str, Any]:
    """Verify the stored data; return a report or raise :class:`CorruptionError`.

    The report: ``{"tables": {name: {"documents": n, "indexes": {index: n}}},
    "log_entries": n, "latest_ts": ts, "files": {"files": n, "bytes": n}}``, and what
    ``more`` adds. Every pass, ``more`` included, reads one LMDB snapshot: a report
    made while others write counts one state of the database, and problems are never
    a mix of two.
    """
    storage = db.storage
    problems: list[str] = []
    reported = 0  # every problem, also those past the ones listed

    def problem(text: str) -> None:
        nonlocal reported
        reported += 1
        if len(problems) < _MAX_PROBLEMS:
            problems.append(text)

    with storage.read() as rtxn:
        if not check_meta(rtxn, storage, problem):
            # The head does not decode: no catalog version, so nothing else can be read.
            raise _corruption(storage.path, problems, reported)
        catalog = db.catalog_at(rtxn)
        raw_long = rtxn.get(longkeys.LONG_KEYS_KEY, None, storage.meta)
        long_counts: dict[int, int] | None = {}
        try:
            long_counts = longkeys.long_index_counts(raw_long)
        except CorruptionError as error:
            problem(problem_of(error))
            long_counts = None  # reported: no comparison with the entries below
        stored_format = rtxn.get(b"format", None, storage.meta)
        if raw_long is not None and stored_format not in (
            longkeys.FORMAT,
            b"5",  # search indexes of the older tokenizer, or none left
            vectors.FORMAT,
            searchkeys.FORMAT,
        ):
            problem("meta/long_keys is set, but meta/format is not 4, 5, 6 or 7")
        searched = [
            f"{t.name}.{ix.name}"
            for t in catalog.tables.values()
            for ix in t.indexes.values()
            if ix.is_search
        ]
        if searched and stored_format != searchkeys.FORMAT:
            # A version without search indexes would open the folder and write
            # database-index keys into them; one with the older tokenizer, its entries.
            problem(f"the catalog has search indexes ({searched[0]}), but meta/format is not 7")
        vectored = [
            f"{t.name}.{ix.name}"
            for t in catalog.tables.values()
            for ix in t.indexes.values()
            if ix.is_vector
        ]
        if vectored and stored_format not in (vectors.FORMAT, searchkeys.FORMAT):
            # A version without vector indexes would open the folder and leave them stale.
            problem(
                f"the catalog has vector indexes ({vectored[0]}), but meta/format is not 6 or 7"
            )
        report: dict[str, Any] = {"tables": {}}
        by_number = catalog.table_by_number
        schema = catalog.schema  # the stored schema: enforced on every write since stored

        def table_name(number: int) -> str | None:
            found = by_number.get(number)
            return None if found is None else found.name

        counts: dict[int, int] = {}
        #: Entries the documents give each search or vector index (any number per
        #: document).
        search_entries: dict[int, int] = {}
        # 1 and 2: documents and the index entries they must have.
        cursor = rtxn.cursor(db=storage.documents)
        for raw_key, raw_value in cursor.iternext(keys=True, values=True):
            key = bytes(raw_key)
            if len(key) != 20:
                problem(f"document key {key.hex()} is not 20 bytes")
                continue
            number = _U32.unpack(key[:4])[0]
            table = by_number.get(number)
            if table is None:
                problem(f"document {key.hex()} belongs to unknown table number {number}")
                continue
            counts[number] = counts.get(number, 0) + 1
            try:
                document = decode_document(raw_value)
                id_number, internal_id = ids.decode_id(document["_id"])
            except Exception as error:
                problem(f"document {key.hex()} in {table.name!r} does not decode: {error}")
                continue
            if id_number != number or internal_id != key[4:]:
                problem(
                    f"document {document['_id']} is stored under key {key.hex()} of "
                    f"another table or id"
                )
            creation_time = document.get("_creationTime")
            if not isinstance(creation_time, float):
                problem(f"document {document['_id']} has no float _creationTime")
                continue
            if not (math.isfinite(creation_time) and creation_time >= 0.0):
                # No commit gives such a time; by_creation_time and every index's ties
                # are ordered by it, and apps read it as a date.
                problem(
                    f"document {document['_id']} in {table.name!r} has _creationTime "
                    f"{creation_time!r}: a creation time is a finite, non-negative float "
                    "(milliseconds since the Unix epoch)"
                )
            try:
                # A document's rules, not only a value's: every write runs convert_document
                # (nesting 16, 1 MiB, no other top-level "_" field), so a stored document
                # that breaks one is damage; LimitExceeded is no ValidationError.
                values.convert_document(document)
                if schema is not None and schema.schema_validation:
                    schema.check_document(table.name, document, table_name)
            except (ValidationError, LimitExceeded) as error:
                problem(f"document {document['_id']} in {table.name!r} is invalid: {error}")
            try:
                plan = db.key_plan(table)
                expected_keys = [
                    (ix, plan.index_keys(ix, document, internal_id))
                    for name, ix in table.indexes.items()
                    if name != "by_id" and not ix.is_vector
                ]
                expected_vectors = [
                    (ix, vectors.index_entries(ix, document, internal_id))
                    for ix in table.indexes.values()
                    if ix.is_vector
                ]
            except Exception as error:  # a value outside the model in an indexed field
                problem(f"document {document['_id']} in {table.name!r} has no index keys: {error}")
                continue
            # One key per index, or for a search index one per distinct token of its
            # search field (maybe none). An index still backfilling may lack entries:
            # only ready ones must have them.
            for index, index_keys in expected_keys:
                if index.is_search:
                    search_entries[index.number] = search_entries.get(index.number, 0) + len(
                        index_keys
                    )
                for index_key in index_keys:
                    try:
                        found = longkeys.contains(rtxn, storage.indexes, index_key)
                    except CorruptionError as error:  # a damaged list of long keys
                        problem(problem_of(error))
                        continue
                    if index.state == "ready" and not found:
                        problem(
                            f"document {document['_id']} in {table.name!r} is missing index "
                            f"entry {index_key.hex()}"
                        )
            # A vector index's entries carry values (the vector, the filter hashes):
            # each must be there with exactly the value the document gives.
            for index, given in expected_vectors:
                search_entries[index.number] = search_entries.get(index.number, 0) + len(given)
                for entry_key, entry_value in given.items():
                    stored_value = rtxn.get(entry_key, None, storage.indexes)
                    if index.state == "ready" and (
                        stored_value is None or bytes(stored_value) != entry_value
                    ):
                        problem(
                            f"document {document['_id']} in {table.name!r} has "
                            f"{'no' if stored_value is None else 'a different'} vector index "
                            f"entry {entry_key.hex()} in {table.name}.{index.name}"
                        )
        cursor.close()
        # 3, 4 and 5: every index entry.
        index_counts: dict[int, int] = {}
        cursor = rtxn.cursor(db=storage.indexes)
        listed: dict[int, int] = {}  # entries with a value, by index number
        vector_numbers = {
            ix.number for t in catalog.tables.values() for ix in t.indexes.values() if ix.is_vector
        }
        stored_keys: Iterator[bytes] = _entry_keys(
            _without_vector_entries(
                cursor.iternext(keys=True, values=True), vector_numbers, index_counts
            ),
            problem,
            listed,
        )
        for key in stored_keys:
            owner = catalog.index_owner.get(_U32.unpack(key[:4])[0]) if len(key) >= 4 else None
            if owner is None:
                problem(f"index entry {key.hex()} belongs to no known index")
                continue
            table, index = owner
            if index.name == "by_id":
                # by_id is the documents sub-database itself: it never stores entries.
                problem(f"index entry {key.hex()} of {table.name}.by_id should not exist")
                continue
            index_counts[index.number] = index_counts.get(index.number, 0) + 1
            internal_id = key[-16:]
            raw = rtxn.get(table.prefix + internal_id, db=storage.documents)
            if raw is None:
                problem(_missing_document(key, table, index))
                continue
            if index.is_search and index.state == "ready":
                # Not recomputed per entry (a document's tokens each have one: that was
                # quadratic in them). The documents pass found every key its documents
                # produce, keys are distinct, and the counts are compared below: equal
                # counts mean these entries are exactly those keys.
                _check_sort_keys(key, problem)
                continue
            try:
                document = decode_document(raw)
                expected = db.key_plan(table).index_keys(index, document, internal_id)
            except Exception:  # reported by the documents pass; the entry cannot match
                problem(
                    f"index entry {key.hex()} of {table.name}.{index.name} points to a "
                    "document that does not decode to index keys"
                )
                continue
            if key not in expected:
                problem(
                    f"index entry {key.hex()} of {table.name}.{index.name} does not match "
                    f"document {document.get('_id')}"
                )
            _check_sort_keys(key, problem)
        cursor.close()
        for table in catalog.tables.values():
            documents = counts.get(table.number, 0)
            index_counts_out: dict[str, int] = {}
            entry: dict[str, Any] = {"documents": documents, "indexes": index_counts_out}
            for index in table.indexes.values():
                if index.name == "by_id":
                    index_counts_out[index.name] = documents
                    continue
                n = index_counts.get(index.number, 0)
                index_counts_out[index.name] = n
                if index.is_search or index.is_vector:
                    # Every entry the documents give is there (the documents pass), and
                    # keys are distinct: equal counts mean no entry is left over.
                    wanted = search_entries.get(index.number, 0)
                    if n != wanted and index.state == "ready":
                        problem(
                            f"{index.kind} index {table.name}.{index.name} has {n} entries; "
                            f"its {documents} documents give {wanted} ("
                            + (
                                "one per distinct token)"
                                if index.is_search
                                else "a vector and its filter values each)"
                            )
                        )
                        _name_stray_entries(db, rtxn, table, index, problem)
                elif n != documents and index.state == "ready":
                    problem(
                        f"index {table.name}.{index.name} has {n} entries for {documents} documents"
                    )
            report["tables"][table.name] = entry
        if long_counts is not None and listed != long_counts:  # readers use the counts
            problem(
                f"meta/long_keys counts {long_counts} entries of long keys by index, the "
                f"index holds {listed}"
            )
        # 6: the log, and its floor (the newest pruned timestamp).
        latest = storage.head(rtxn)[0]
        raw_floor = rtxn.get(b"log_floor", db=storage.meta)
        floor = 0
        if raw_floor is not None and len(raw_floor) != 8:
            problem(f"log_floor {bytes(raw_floor).hex()} is not 8 bytes")
        elif raw_floor is not None:
            floor = _U64.unpack(raw_floor)[0]
            if floor > latest:
                # Every snapshot would be older than the floor: every mutation that
                # reads would conflict, forever.
                problem(f"log_floor {floor} is newer than latest_ts {latest}")
        entries = 0
        previous = -1
        newest = 0
        cursor = rtxn.cursor(db=storage.log)
        for raw_key, raw_value in cursor.iternext(keys=True, values=True):
            entries += 1
            if len(raw_key) != 8:
                problem(f"log key {bytes(raw_key).hex()} is not an 8-byte timestamp")
                continue
            ts = _U64.unpack(raw_key)[0]
            if ts <= previous or ts > latest:
                problem(f"log entry {ts} is out of order or newer than latest_ts {latest}")
            if ts <= floor:
                problem(f"log entry {ts} is not newer than log_floor {floor} (it was pruned)")
            previous = newest = ts
            try:
                logged = decode(raw_value)
            except Exception as error:
                problem(f"log entry {ts} does not decode: {error}")
                continue
            if not isinstance(logged, list) or not all(type(k) is bytes for k in logged):
                # Validation and subscriptions look its keys up in read sets: anything
                # else fails every commit whose snapshot is older than it.
                problem(f"log entry {ts} is not a list of keys: {logged!r:.80}")
        cursor.close()
        if latest and newest != latest:
            # Every commit logs its keys under the timestamp it puts in the head, and
            # pruning keeps the newest entry: without it, a transaction that read what
            # that commit wrote would commit on a stale read.
            problem(f"the log has no entry for latest_ts {latest} (the newest is {newest})")
        report["log_entries"] = entries
        report["latest_ts"] = latest
        # 8: the catalog itself, and against the stored schema.
        check_catalog(rtxn, storage, catalog.catalog, problem)
        check_declared(catalog.catalog, schema, problem)
        # 7: files.
        storage_table = catalog.tables.get("_storage")
        report["files"] = blobs.check(
            rtxn,
            storage.blobs,
            storage.documents,
            None if storage_table is None else storage_table.prefix,
            problem,
        )
        if more is not None:
            added, more_problems = more(rtxn)
            report.update(added)
            for text in more_problems:
                problem(text)
    if problems:
        raise _corruption(storage.path, problems, reported)
    return report


def _entry_keys(
    entries: Iterable[tuple[bytes, bytes]], problem: Any, listed: dict[int, int]
) -> Iterator[bytes]:
    """The index keys the ``indexes`` entries hold, in order: an entry's own key, and the
    long keys an entry of :data:`engine.longkeys.SPLIT` bytes lists (checked: a sorted
    list of rests); counts those entries by index into ``listed`` (``meta/long_keys``
    must agree: readers expand only the entries of the indexes it counts)."""
    for raw_key, raw_value in entries:
        key = bytes(raw_key)
        if not raw_value:
            yield key
            continue
        if len(key) != longkeys.SPLIT:
            problem(f"index entry {key.hex()} has a value (only entries of long keys do)")
            yield key
            continue
        number = int.from_bytes(key[:4], "big")
        listed[number] = listed.get(number, 0) + 1
        try:
            has_self, rests = longkeys.decode_entry(key, raw_value)
        except CorruptionError as error:
            problem(problem_of(error))
            yield key
            continue
        if not rests or not all(rests) or any(a >= b for a, b in pairwise(rests)):
            problem(
                f"index entry {key.hex()} has a value that is no sorted list of the long keys "
                "it starts"
            )
            yield key
            continue
        if has_self:
            yield key
        for rest in rests:
            yield key + rest


def _without_vector_entries(
    entries: Iterable[tuple[bytes, bytes]], numbers: set[int], counts: dict[int, int]
) -> Iterator[tuple[bytes, bytes]]:
    """``entries`` less those of the vector indexes ``numbers``, which are counted into
    ``counts`` by index number: their values are vectors, not lists of long keys, and the
    documents pass compared each with the entry its document gives."""
    for raw_key, raw_value in entries:
        if numbers and len(raw_key) >= 4 and int.from_bytes(raw_key[:4], "big") in numbers:
            number = int.from_bytes(raw_key[:4], "big")
            counts[number] = counts.get(number, 0) + 1
            continue
        yield raw_key, raw_value


def _corruption(path: str, problems: list[str], found: int) -> CorruptionError:
    """The error of a check that found ``found`` problems, the first of them ``problems``."""
    listed = f" (the first {len(problems)} listed)" if found > len(problems) else ""
    return CorruptionError(
        f"Engine.check() found {found} broken invariant(s) in {path!r}{listed}:\n"
        + "\n".join(f"- {p}" for p in problems)
        + "\nThe stored data is damaged (a bug, a tool writing to the LMDB file, a failing "
        "disk). Restore the folder from a backup made with Engine.backup (run "
        "Engine.check() on the copy first); Engine.check() lists every problem it finds, "
        "so run it again after a repair to see what is left.",
        problems=problems,
    )


def _check_sort_keys(key: bytes, problem: Callable[[str], None]) -> None:
    """Report an index entry whose middle does not decode as sort keys."""
    try:
        keys.decode_many(key[4:-16])
    except Exception as error:
        problem(f"index entry {key.hex()} does not decode as sort keys: {error}")


def _name_stray_entries(
    db: Database, rtxn: Any, table: TableDef, index: IndexDef, problem: Callable[[str], None]
) -> None:
    """Name the entries of a damaged search or vector index that no document produces
    (a second pass over that index, run only when its count is wrong: each document's
    entries are computed once and kept, so memory is that of the index's entries)."""
    storage = db.storage
    try:
        plan = db.key_plan(table)
    except Exception:  # a damaged catalog (reported by its own check): nothing to compare
        return
    prefix = index.prefix
    expected: dict[bytes, dict[bytes, bytes]] = {}
    cursor = rtxn.cursor(db=storage.indexes)
    try:
        if not cursor.set_range(prefix):
            return
        entries = _prefixed(cursor.iternext(keys=True, values=True), prefix)
        pairs: Iterator[tuple[bytes, bytes]] = (
            ((bytes(k), bytes(v)) for k, v in entries)
            if index.is_vector  # values: the vector and its filter hashes
            else ((k, b"") for k in _entry_keys(entries, lambda _: None, {}))
        )
        for key, value in pairs:
            internal_id = key[-16:]
            found = expected.get(internal_id)
            if found is None:
                raw = rtxn.get(table.prefix + internal_id, db=storage.documents)
                if raw is None:
                    if index.is_vector:  # the entries pass reported the search index's
                        problem(_missing_document(key, table, index))
                    continue
                try:
                    document = decode_document(raw)
                    found = (
                        vectors.index_entries(index, document, internal_id)
                        if index.is_vector
                        else dict.fromkeys(plan.index_keys(index, document, internal_id), b"")
                    )
                except Exception:  # reported by the documents pass
                    found = {}
                expected[internal_id] = found
            if found.get(key) != value:
                problem(
                    f"index entry {key.hex()} of {table.name}.{index.name} does not match "
                    f"document {_document_id(table, key)}"
                )
    finally:
        cursor.close()


def _prefixed(
    entries: Iterable[tuple[bytes, bytes]], prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """``entries`` up to the first whose key does not start with ``prefix``."""
    for key, value in entries:
        if key[: len(prefix)] != prefix:
            return
        yield key, value


def _document_id(table: TableDef, key: bytes) -> str:
    """The id of the document index entry ``key`` of ``table`` points to (its last 16
    bytes), or the bytes in hex if they are too few."""
    try:
        return ids.encode_id(table.number, key[-16:])
    except ValueError:  # an entry shorter than an id
        return f"(internal id {key[-16:].hex()})"


def _missing_document(key: bytes, table: TableDef, index: IndexDef) -> str:
    return (
        f"index entry {key.hex()} of {table.name}.{index.name} points to a missing "
        f"document {_document_id(table, key)}"
    )
