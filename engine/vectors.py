"""Vector indexes: Convex's ``vectorIndex`` and ``ctx.vectorSearch``, exact.

A vector index keeps, for every document whose vector field is a list of exactly
``dimensions`` floats (Convex indexes nothing else: a missing field, another type,
another length or an integer element leave the document out), its vector as
32-bit floats, as Convex does. Entries live in the ``indexes`` sub-database under
the index's number, beside the other indexes, and change in the same LMDB write
transaction as the documents they come from (each committing transaction derives
them from its final documents, :func:`prepare`, and the commit leader stores them
with the documents, :func:`apply`), so they never disagree with them::

    index number (4 B) ‖ 0x00 ‖ internal id (16 B)
        → the vector (little-endian float32, 4 B each)
          ‖ a 16-byte hash of each filter field's value, in declared order
    index number (4 B) ‖ 0x01 + filter slot ‖ hash of the value (16 B) ‖ internal id
        → empty: the documents whose filter field ``slot`` holds that value

The hash is BLAKE2b (16 bytes) of the value's sort key (:mod:`engine.keys`), so
filter equality is Convex's (``1`` is not ``1.0``; a missing field is its own
value, ``q.eq(f, UNSET)``). A search (:func:`vector_search`) reads the main
entries, or for a filter the documents of each equality and then their main
entries, and ranks every candidate by cosine similarity with the query vector
(NumPy, float32): exact nearest neighbours where Convex's are approximate. Vector
search runs in actions only, as in Convex: it reads the latest commit, records
no read set, and takes no part in transactions.

Cost: a write to a document of a table with vector indexes decodes it once at
commit and rewrites its entries when they changed; a search reads
``4 × dimensions`` bytes per candidate and is linear in the candidates (all of
the index's documents without a filter). Example::

    >>> from engine.catalog import IndexDef
    >>> index = IndexDef("by_embedding", 7, ("embedding",), kind="vector", dimensions=2)
    >>> entries = index_entries(index, {"embedding": [0.5, 1.0]}, bytes(16))
    >>> len(entries), len(entries[index.prefix + b"\\x00" + bytes(16)])
    (1, 8)
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

from . import ids, keys
from .encoding import decode_document
from .errors import CorruptionError, IndexNotFound, VectorSearchError
from .indexing import field_value, split_path
from .values import UNSET, convert

if TYPE_CHECKING:
    from .catalog import IndexDef, TableDef
    from .database import Database

__all__ = [
    "DEFAULT_LIMIT",
    "FORMAT",
    "MAX_DIMENSIONS",
    "MAX_FILTER_TERMS",
    "MAX_RESULTS",
    "MIN_DIMENSIONS",
    "VectorFilterBuilder",
    "apply",
    "index_entries",
    "prepare",
    "vector_search",
]

#: The format version (``meta/format``) of a database whose catalog holds a vector
#: index, stored by the schema change that declares the first one: versions that do
#: not know vector indexes refuse it (they would leave its entries stale). It may
#: hold long keys too (format 4), and search indexes made by the older tokenizer (5);
#: a folder with search indexes of the current tokenizer is format 7, which includes 6.
FORMAT = b"6"
#: Convex's MIN_VECTOR_DIMENSIONS / MAX_VECTOR_DIMENSIONS (vector_index/dimensions.rs).
MIN_DIMENSIONS = 2
MAX_DIMENSIONS = 4096
#: Convex's MAX_VECTOR_RESULTS, DEFAULT_VECTOR_LIMIT and MAX_FILTER_LENGTH
#: (crates/vector/src/lib.rs).
MAX_RESULTS = 256
DEFAULT_LIMIT = 10
MAX_FILTER_TERMS = 64

_MAIN = b"\x00"
_HASH = 16
_LITTLE = sys.byteorder == "little"


# -- entries -------------------------------------------------------------------


def _hash(value: Any) -> bytes:
    return hashlib.blake2b(keys.encode(value), digest_size=_HASH).digest()


def _pack(vector: Any, dimensions: int) -> bytes | None:
    """``vector`` as little-endian float32 bytes, or None if Convex would not index it
    (not a list of exactly ``dimensions`` floats). Out-of-range values become ±inf,
    as Rust's ``as f32``."""
    if type(vector) is not list or len(vector) != dimensions:
        return None
    if set(map(type, vector)) != {float}:  # an Int64 (or anything else): not indexed
        return None
    packed = array("f", vector)
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def index_entries(
    index: IndexDef, document: Mapping[str, Any], internal_id: bytes
) -> dict[bytes, bytes]:
    """The entries ``document`` has in vector index ``index`` (none if its vector field
    is not indexable). Cost: one pass over the vector, one hash per filter field."""
    packed = _pack(field_value(document, split_path(index.fields[0])), index.dimensions)
    if packed is None:
        return {}
    prefix = index.prefix
    hashes = [_hash(field_value(document, split_path(f))) for f in index.fields[1:]]
    entries = {prefix + _MAIN + internal_id: packed + b"".join(hashes)}
    for slot, digest in enumerate(hashes):
        entries[prefix + bytes((slot + 1,)) + digest + internal_id] = b""
    return entries


def _stored_entries(index: IndexDef, main_key: bytes, value: bytes) -> dict[bytes, bytes]:
    """Every entry implied by a stored main entry (itself and its filter entries)."""
    filters = len(index.fields) - 1
    if len(value) != 4 * index.dimensions + _HASH * filters:
        raise CorruptionError.damaged(
            f"vector index entry {main_key.hex()} holds {len(value)} bytes, not "
            f"{4 * index.dimensions + _HASH * filters} ({index.dimensions} float32 and "
            f"{filters} filter hashes)",
            "Run Engine.check() for the whole report; restore the folder from a backup "
            "(Engine.backup, or `mdb_copy`).",
        )
    internal_id = main_key[-16:]
    prefix = index.prefix
    entries = {main_key: value}
    start = 4 * index.dimensions
    for slot in range(filters):
        digest = value[start + _HASH * slot : start + _HASH * (slot + 1)]
        entries[prefix + bytes((slot + 1,)) + digest + internal_id] = b""
    return entries


#: What a commit does to one document's entries: ``(index, the entries it must have)``
#: for each vector index of its table (no entries: the document is gone or not indexed).
Prepared = list[tuple["IndexDef", dict[bytes, bytes]]]


def update(
    wtxn: Any, db: Any, index: IndexDef, document: Mapping[str, Any] | None, internal_id: bytes
) -> None:
    """Make ``document``'s entries in ``index`` current (None: the document is gone).
    Cost: :func:`index_entries`, then :func:`_store`."""
    new = {} if document is None else index_entries(index, document, internal_id)
    _store(wtxn, db, index, new, internal_id)


def _store(
    wtxn: Any, db: Any, index: IndexDef, new: dict[bytes, bytes], internal_id: bytes
) -> None:
    """Make the stored entries of one document in ``index`` exactly ``new``. Cost: one
    lookup of the stored main entry; writes only what changed."""
    main_key = index.prefix + _MAIN + internal_id
    stored = wtxn.get(main_key, None, db)
    old = {} if stored is None else _stored_entries(index, main_key, bytes(stored))
    for key in old.keys() - new.keys():
        wtxn.delete(key, b"", db)
    for key, value in new.items():
        if old.get(key) != value:
            wtxn.put(key, value, True, True, False, db)


def prepare(
    vector_tables: Mapping[bytes, tuple[IndexDef, ...]],
    documents: Iterable[tuple[bytes, bytes | None]],
) -> dict[bytes, Prepared] | None:
    """The entries every written document (``(doc key, stored bytes, or None once
    deleted)``) of a table with vector indexes must have: computed by the committing
    transaction's thread, before its request reaches the commit leader, so that the
    leader (under LMDB's write lock) only stores them. None when no such document was
    written. The indexes are those of the transaction's snapshot: a commit is refused
    when its tables' indexes changed since (``Committer._validate``), so they are the
    leader's too. Cost: nothing for other tables; else a decode and
    :func:`index_entries` per index."""
    prepared: dict[bytes, Prepared] | None = None
    for doc_key, raw in documents:
        indexes = vector_tables.get(doc_key[:4])
        if indexes is None:
            continue
        document = None if raw is None else decode_document(raw)
        internal_id = doc_key[4:]
        if prepared is None:
            prepared = {}
        prepared[doc_key] = [
            (index, {} if document is None else index_entries(index, document, internal_id))
            for index in indexes
        ]
    return prepared


def apply(wtxn: Any, db: Any, prepared: Mapping[bytes, Prepared]) -> None:
    """Store what :func:`prepare` computed (a group's, in commit order: a later commit of a
    document replaces an earlier one's), in the commit's write txn. Cost: :func:`_store`
    per document and index."""
    for doc_key, indexes in prepared.items():
        for index, entries in indexes:
            _store(wtxn, db, index, entries, doc_key[4:])


# -- queries -------------------------------------------------------------------


class VectorFilterBuilder:
    """``q`` of a vector search's ``filter``: ``q.eq(field, value)`` and ``q.or_(...)``.

    Convex allows only these (``q.or`` is ``q.or_`` in Python; ``q.or`` works too
    through ``getattr``). A document matches when any equality holds.

    Example::

        filter=lambda q: q.or_(q.eq("cuisine", "French"), q.eq("cuisine", "Indonesian"))
    """

    __slots__ = ()

    def eq(self, field: str, value: Any) -> _Filter:
        """Documents whose filter field ``field`` equals ``value`` (``UNSET``: lacks it)."""
        if not isinstance(field, str):
            raise VectorSearchError(
                "`q.eq` must take a field path as its first argument and a value as its "
                f"second (got {field!r} first)",
                code="InvalidVectorSearchFilter",
            )
        return _Filter(((field, value if value is UNSET else convert(value)),))

    def or_(self, *filters: _Filter) -> _Filter:
        """Documents matching any of ``filters``."""
        terms: list[tuple[str, Any]] = []
        for item in filters:
            if not isinstance(item, _Filter):
                raise VectorSearchError(
                    "Filters should be a combination of `q.eq` and `q.or`. "
                    f"(q.or_ got {item!r:.60})",
                    code="InvalidVectorSearchFilter",
                )
            terms.extend(item.terms)
        return _Filter(tuple(terms))

    def __getattr__(self, name: str) -> Any:
        if name == "or":
            return self.or_
        raise _NotAFilter(
            f"Filters should be a combination of `q.eq` and `q.or`. (q.{name} is not one: "
            "a vector search filters by equality only; filter the documents further in the "
            "action after loading them)",
            code="InvalidVectorSearchFilter",
        )


class _NotAFilter(VectorSearchError, AttributeError):
    """``q.<name>`` for a name the filter builder lacks: Convex's error, and an
    ``AttributeError`` too, so that ``hasattr(q, name)`` is False (not an exception)."""


class _Filter:
    """An ``or`` of equalities: ``(field, value)`` pairs."""

    __slots__ = ("terms",)

    def __init__(self, terms: tuple[tuple[str, Any], ...]) -> None:
        self.terms = terms

    def __repr__(self) -> str:
        return f"VectorFilter({list(self.terms)!r})"


def _query_vector(vector: Any) -> list[float]:
    """The query vector as floats: a non-empty sequence of finite real numbers (NumPy's
    included), or :class:`VectorSearchError`."""
    if isinstance(vector, (str, bytes)) or not isinstance(vector, Iterable):
        raise VectorSearchError(
            f"`vector` must be a non-empty Array in vectorSearch (got {type(vector).__name__})",
            code="InvalidVectorSearch",
        )
    values = list(vector)
    if not values:
        raise VectorSearchError(
            "`vector` must be a non-empty Array in vectorSearch", code="InvalidVectorSearch"
        )
    floats: list[float] = values  # already plain floats (the common case): used as is
    if not all(type(value) is float for value in values):
        floats = []
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, Real):  # np.bool_ is no Real
                raise VectorSearchError(
                    f"`vector` must hold numbers; element {i} is {type(value).__name__} "
                    f"{value!r:.40}",
                    code="InvalidVectorSearch",
                )
            try:
                floats.append(float(value))
            except OverflowError:
                raise VectorSearchError(
                    f"`vector` must hold finite numbers; element {i} is out of the float "
                    f"range ({type(value).__name__} {value!s:.40})",
                    code="InvalidVectorSearch",
                ) from None
    if not math.isfinite(sum(floats)):  # NaN or ±inf somewhere, or a sum past float's range
        bad = next(((i, x) for i, x in enumerate(floats) if not math.isfinite(x)), None)
        if bad is not None:
            # Convex's JSON turns NaN and Infinity into null, which its f32 vector refuses.
            raise VectorSearchError(
                f"`vector` must hold finite numbers; element {bad[0]} is not finite ({bad[1]})",
                code="InvalidVectorSearch",
            )
    return floats


def _limit(limit: Any) -> int:
    """``limit`` as an int from 1 to :data:`MAX_RESULTS` (None: the default). Convex's
    limit is a JS number, so a whole float (an argument declared ``v.number()``) counts
    as the integer it holds, as in ``take``; a NumPy integer is an integer too."""
    if limit is None:
        return DEFAULT_LIMIT
    whole = type(limit) is float and limit.is_integer()
    if whole or (isinstance(limit, Integral) and not isinstance(limit, bool)):
        limit = int(limit)
    if type(limit) is not int or limit < 1:
        raise VectorSearchError(
            f"`limit` must be an integer from 1 to {MAX_RESULTS}, got {limit!r}",
            code="InvalidVectorSearch",
        )
    if limit > MAX_RESULTS:
        raise VectorSearchError(
            f"Vector queries can fetch at most {MAX_RESULTS} results, requested {limit}.",
            code="VectorLimitTooLargeError",
        )
    return limit


def _index(table: TableDef | None, table_name: str, index_name: str) -> IndexDef:
    index = None if table is None else table.indexes.get(index_name)
    if index is None:
        known = (
            [] if table is None else sorted(n for n, ix in table.indexes.items() if ix.is_vector)
        )
        raise IndexNotFound(
            f"Index {table_name}.{index_name} not found. Vector indexes of this table: "
            f"{', '.join(known) or 'none'}. Declare one in the schema with "
            "define_table(...).vector_index(name, vector_field=..., dimensions=...).",
            table=table_name,
            index=index_name,
        )
    if not index.is_vector:
        raise VectorSearchError(
            f"Index {table_name}.{index_name} is not a vector index",
            code="IndexNotAVectorIndexError",
        )
    if index.state != "ready":
        # Convex's index_backfilling_error.
        raise IndexNotFound(
            f"Index {table_name}.{index_name} is currently backfilling and not available "
            "to query yet. (Opening the engine finishes an interrupted backfill.)",
            table=table_name,
            index=index_name,
        )
    return index


def _conditions(
    index: IndexDef, table_name: str, filter: Callable[[VectorFilterBuilder], Any] | None
) -> dict[int, set[bytes]]:
    """Filter slot → the hashes of the values it may hold (empty: no filter)."""
    if filter is None:
        return {}
    if not callable(filter):
        raise VectorSearchError(
            "vector_search's filter expects a function of q, such as "
            "lambda q: q.eq(field, value) or lambda q: q.or_(q.eq(...), q.eq(...)); "
            f"got {filter!r:.60}",
            code="InvalidVectorSearchFilter",
        )
    built = filter(VectorFilterBuilder())
    if not isinstance(built, _Filter):
        raise VectorSearchError(
            "Filters should be a combination of `q.eq` and `q.or`. (the filter returned "
            f"{built!r:.60})",
            code="InvalidVectorSearchFilter",
        )
    slots = {field: slot for slot, field in enumerate(index.fields[1:])}
    conditions: dict[int, set[bytes]] = {}
    for field, value in built.terms:
        slot = slots.get(field)
        if slot is None:
            raise VectorSearchError(
                f"Vector query against {table_name}.{index.name} contains a filter on "
                f'"{field}" but that field isn\'t indexed for filtering in `filterFields`.',
                code="IncorrectVectorFilterField",
            )
        conditions.setdefault(slot, set()).add(_hash(value))
    # Convex merges each field's values into a set: a value given twice counts once.
    count = sum(len(digests) for digests in conditions.values())
    if count > MAX_FILTER_TERMS:
        raise VectorSearchError(
            f"Vector query against {table_name}.{index.name} has too many conditions. Max: "
            f"{MAX_FILTER_TERMS} Actual: {count}",
            code="TooManyElementsInVectorQueryError",
        )
    return conditions


def vector_search(
    db: Database,
    table_name: str,
    index_name: str,
    vector: Any,
    *,
    limit: Any = None,
    filter: Callable[[VectorFilterBuilder], Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``limit`` documents of ``table_name`` nearest to ``vector`` in vector index
    ``index_name``, as ``[{"_id": id, "_score": cosine similarity}]``, highest score
    first (ties: the larger id first, as Convex orders them).

    Reads the latest commit. Raises :class:`VectorSearchError` with Convex's codes and
    texts, :class:`IndexNotFound` for an unknown or backfilling index. Cost: see the
    module docstring.
    """
    import numpy as np  # a vector search's dependency alone: imported on first use

    query = _query_vector(vector)
    storage = db.storage
    # This search's scratch buffer, until it ends: a search started meanwhile on this
    # thread (a signal handler, a finalizer) gets its own instead of overwriting ours.
    buffer, _scratch.vectors = _scratch.vectors, bytearray()
    try:
        with storage.read() as rtxn:
            catalog = db.catalog_at(rtxn)
            table = catalog.tables.get(table_name)
            index = _index(table, table_name, index_name)
            assert table is not None
            # In Convex's order (QdrantSchema::compile): the vector's size, the limit, the
            # filter, then the vector against the index.
            if len(query) > MAX_DIMENSIONS:
                raise VectorSearchError(
                    f"Expected a vector with dimensions {MAX_DIMENSIONS}, received {len(query)}.",
                    code="VectorDimensionsMismatch",
                )
            count = _limit(limit)
            conditions = _conditions(index, table_name, filter)
            if len(query) != index.dimensions:
                raise VectorSearchError(
                    f"Expected a vector with dimensions {index.dimensions}, received {len(query)}.",
                    code="VectorDimensionsMismatch",
                )
            found_keys, buffer = _candidates(rtxn, storage.indexes, index, conditions, buffer)
        # Not held past its snapshot: a child forked during the NumPy work below must be
        # able to let go of this process's LMDB environment.
        del rtxn
        if not found_keys:
            return []
        scores = _scores(np, buffer, len(found_keys), index, query)
    finally:
        if len(buffer) <= _KEEP and len(buffer) >= len(_scratch.vectors):
            _scratch.vectors = buffer
    ranked = _top(np, scores, lambda i: found_keys[i][5:], count)
    number = table.number
    return [
        {"_id": ids.encode_id(number, found_keys[i][5:]), "_score": float(scores[i])}
        for i in ranked
    ]


def _scores(np: Any, entries: bytearray, n: int, index: IndexDef, query: list[float]) -> Any:
    """The cosine similarity of each of the ``n`` entries side by side in ``entries``
    (vector, then filter hashes) with ``query``, as Qdrant computes it for Convex: each
    vector scaled to length 1 unless its squared length is below float32's epsilon (then
    left as it is), then a dot product; dividing the dot products by the lengths gives
    the same scores without a scaled copy of the matrix. ``einsum``, not ``@``: a fork
    while OpenBLAS's threads ran a product hung it for ever, and a matrix-vector product
    gains nothing from them. Cost: two passes over the vectors in C."""
    row: list[Any] = [("vector", "<f4", (index.dimensions,))]
    if len(index.fields) > 1:
        row.append(("hashes", "V", _HASH * (len(index.fields) - 1)))
    matrix = np.frombuffer(entries, dtype=np.dtype(row), count=n)["vector"]
    epsilon = np.finfo(np.float32).eps
    with np.errstate(all="ignore"):
        target = np.asarray(query, dtype=np.float32)
        squared = np.einsum("i,i->", target, target)
        if squared >= epsilon:
            target = target / np.sqrt(squared)
        dots = np.einsum("ij,j->i", matrix, target)
        lengths = np.einsum("ij,ij->i", matrix, matrix)
        scaled = lengths >= epsilon
        return np.where(scaled, dots / np.sqrt(np.where(scaled, lengths, 1)), dots)


def _top(np: Any, scores: Any, id_of: Callable[[int], bytes], count: int) -> list[int]:
    """The positions of the ``count`` best scores, best first: higher score, then the
    larger id (Convex's order); NaN after every number. Cost: one partition of the
    scores, then a sort of the ``count`` (plus ties at the cut) left."""
    keys = np.where(np.isnan(scores), -np.inf, scores)
    candidates: Any = range(len(scores))
    if len(scores) > count:
        cut = keys[np.argpartition(-keys, count - 1)[:count]].min()
        candidates = np.flatnonzero(keys >= cut).tolist()  # ties at the cut, all of them
    return sorted(candidates, key=lambda i: (_score_key(float(scores[i])), id_of(i)), reverse=True)[
        :count
    ]


def _score_key(score: float) -> float:
    """NaN (a vector holding NaN) ranks after every number."""
    return -math.inf if math.isnan(score) else score


class _Scratch(threading.local):
    """Per-thread buffers a search copies its candidates into, kept between searches.

    A fresh 10-40 MB buffer per search costs more than the search: a worker thread's
    malloc arena hands freed memory back to the system, so every search faulted its
    pages in again (5,400 page faults, 2x the time of the same search on the main
    thread). Kept buffers stay mapped; one past :data:`_KEEP` bytes is not kept.
    """

    def __init__(self) -> None:
        self.vectors = bytearray()


_scratch = _Scratch()
_KEEP = 64 << 20
#: The threads searches run on (see :func:`executor`), with the process that made them.
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """The threads that run searches for ``ctx.vector_search``: two, kept for the life of
    the process (made again in a forked child), so their scratch buffers stay warm.
    ``asyncio.to_thread`` in a new event loop (each ``engine.action``) would start a new
    thread each time, with empty buffers: twice the time of a large search."""
    global _pool
    pool = _pool
    if pool is None or pool[0] != os.getpid():
        with _pool_lock:
            if _pool is None or _pool[0] != os.getpid():
                _pool = (
                    os.getpid(),
                    ThreadPoolExecutor(max_workers=2, thread_name_prefix="convexlite-vectors"),
                )
            pool = _pool
    return pool[1]


def _forget_pool() -> None:  # in a forked child: the parent's threads are not there
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)
#: Entries a search gathers before copying them into its scratch buffer at once: few
#: enough that the chunk's memory is reused (not returned to the system) between chunks.
_CHUNK = 64


def _candidates(
    rtxn: Any, db: Any, index: IndexDef, conditions: dict[int, set[bytes]], entries: bytearray
) -> tuple[list[bytes], bytearray]:
    """``(keys, entries)``: the main entry keys of the documents matching ``conditions``,
    in id order, and their values (``len(keys) × size`` bytes: vector, then filter
    hashes) copied side by side into ``entries``, 64 at a time, or into a larger buffer
    made when it fills (returned in its place). Raises :class:`CorruptionError` for an entry of the wrong
    size. Cost: about 1.2 µs per entry, two copies of each value (LMDB's, the chunk's)."""
    prefix = index.prefix
    size = 4 * index.dimensions + _HASH * (len(index.fields) - 1)
    found_keys: list[bytes] = []
    chunk: list[bytes] = []
    filled = 0

    def flush() -> None:
        nonlocal entries, filled
        end = filled + size * len(chunk)
        if end > len(entries):
            # Doubling, but not past what may be kept unless this search needs more.
            grown = bytearray(min(max(2 * len(entries), end, size * 1024), max(end, _KEEP)))
            memoryview(grown)[:filled] = memoryview(entries)[:filled]
            entries = grown
        entries[filled:end] = b"".join(chunk)
        filled = end
        chunk.clear()

    def take(key: bytes, value: bytes | None) -> None:
        if value is None or len(value) != size:
            raise CorruptionError.damaged(
                f"vector index entry {key.hex()} holds "
                f"{'nothing' if value is None else f'{len(value)} bytes'}, not {size} "
                f"({index.dimensions} float32 and {len(index.fields) - 1} filter hashes)",
                "Run Engine.check() for the whole report; restore the folder from a backup "
                "(Engine.backup, or `mdb_copy`).",
            )
        found_keys.append(key)
        chunk.append(value)
        if len(chunk) == _CHUNK:
            flush()

    cursor = rtxn.cursor(db)
    try:
        if not conditions:
            main, end = prefix + _MAIN, prefix + b"\x01"
            if cursor.set_range(main):
                for key, value in cursor.iternext(keys=True, values=True):
                    if key >= end:
                        break
                    if len(value) != size or len(chunk) == _CHUNK - 1:
                        take(key, value)  # checks and flushes
                        continue
                    found_keys.append(key)
                    chunk.append(value)
        else:
            wanted: set[bytes] = set()
            for slot, digests in conditions.items():
                for digest in digests:
                    start = prefix + bytes((slot + 1,)) + digest
                    if cursor.set_range(start):
                        for key in cursor.iternext(keys=True, values=False):
                            if key[:-16] != start:
                                break
                            wanted.add(key[-16:])
            for internal_id in sorted(wanted):
                main_key = prefix + _MAIN + internal_id
                take(main_key, rtxn.get(main_key, None, db))
    finally:
        cursor.close()
    if chunk:
        flush()
    return found_keys, entries
