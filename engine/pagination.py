"""Cursor pagination: ``query.paginate({"numItems": n, "cursor": c})``.

A cursor is an opaque, URL-safe string naming a key position in the query's
index range ("after this index key", or "the end") and a fingerprint of the
query (table, index and its fields, range, order, filters). It is
authenticated with an HMAC keyed by a per-database secret stored in
``meta``, so a tampered, truncated or foreign cursor, or one from another
query or another database, raises :class:`InvalidCursor` and never reads
outside the query's range.

A page costs one seek to the cursor's key plus the rows it reads: deep pages
cost what the first page costs.

With ``endCursor`` a page returns exactly the documents in
``(cursor, endCursor]`` whatever their number, so a client that re-runs its
pages keeps gapless, non-overlapping page boundaries while documents come
and go (pages grow and shrink; nothing is skipped or repeated).

The read set of a page is the interval it consumed, so writes past the page
boundary neither conflict with it nor invalidate it.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import os
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import InvalidCursor, PaginationError, ValidationError
from .search import MAX_CANDIDATES
from .values import UNSET, format_value

if TYPE_CHECKING:
    from .query import Query
    from .search import SearchPlan
    from .transaction import Transaction

__all__ = ["MAX_PAGE_SIZE", "decode_cursor", "encode_cursor", "paginate", "paginate_search"]

MAX_PAGE_SIZE = 32_000
_VERSION = 2  # 2: fingerprints by exact values (cursors of version 1 are refused as such)
_AFTER = 0
_END = 1
_MAC_BYTES = 16
_FINGERPRINT_BYTES = 16
#: No issued cursor is longer: it holds a whole index key, and an index's at most 15
#: fields of one document (at most 1 MiB, its bytes at worst doubled by the key's
#: escaping) take under 32 MiB, 43 MiB in base64. A bound on the work a junk cursor
#: costs, not a limit on keys (a 20,000-character string key makes a 27 KB cursor).
_MAX_CURSOR_CHARS = 64 << 20
_DIFFERENT_QUERY = (
    "Tried to run a query starting from a cursor, but it looks like this "
    "cursor is from a different query."
)
_INDEX_CHANGED = (
    "Tried to run a query starting from a cursor, but the cursor was issued for an earlier "
    "definition of index {index}: the schema dropped or redefined it since. Start again "
    "from the first page (cursor None)."
)
_MALFORMED = (
    "Tried to run a query starting from a cursor, but the cursor is malformed or was "
    "not issued by this database (it must be a string returned as continueCursor or "
    "splitCursor by this query)."
)


def _secret(txn: Transaction) -> bytes:
    return txn.db.cursor_secret()


def fingerprint(query: Query) -> bytes:
    """A digest of everything that decides which rows a query returns, in what order."""
    text = json.dumps(query.fingerprint(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).digest()[:_FINGERPRINT_BYTES]


def encode_cursor(secret: bytes, query_fingerprint: bytes, key: bytes | None) -> str:
    """An opaque cursor for "after ``key``" (None: the end of the range)."""
    body = bytes([_VERSION, _END if key is None else _AFTER]) + query_fingerprint + (key or b"")
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")


def decode_cursor(secret: bytes, query_fingerprint: bytes, cursor: object) -> bytes | None:
    """The key a cursor points after (None: the end). Raises :class:`InvalidCursor`."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise InvalidCursor(_MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise InvalidCursor(_MALFORMED) from None
    # Decoding skips characters outside the alphabet and a last character's spare bits:
    # only the exact string issued names a position (nothing else is taken for it).
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != cursor:
        raise InvalidCursor(_MALFORMED)
    if len(raw) < 2 + _FINGERPRINT_BYTES + _MAC_BYTES:
        raise InvalidCursor(_MALFORMED)
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    expected = hmac.new(secret, body, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise InvalidCursor(_MALFORMED)
    if body[0] != _VERSION:
        raise InvalidCursor(
            f"This cursor was issued by an earlier convexlite (cursor format {body[0]}, now "
            f"{_VERSION}): restart the pagination from the first page (cursor None)."
        )
    if body[2 : 2 + _FINGERPRINT_BYTES] != query_fingerprint:
        raise InvalidCursor(_DIFFERENT_QUERY)
    kind, key = body[1], body[2 + _FINGERPRINT_BYTES :]
    if kind == _END and not key:
        return None
    if kind != _AFTER or not key:
        raise InvalidCursor(_MALFORMED)
    return key


def _count(opts: dict[str, Any], name: str) -> int | None:
    value = opts.get(name)
    if value is None:
        return None
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise ValidationError(
            f"paginate() option {name!r} must be a whole number, got {value!r}", path=f".{name}"
        )
    return value


class _Bounds(NamedTuple):
    """A page's checked options (:func:`_check_options`; a subscription's re-run keeps
    its first run's end cursor, from the journal) and its keys: ``(secret, query
    fingerprint, start key, end key, end is the End)``."""

    options: tuple[int, Any, Any, int | None, int | None, bool]
    keys: tuple[bytes, Any, bytes | None, bytes | None, bool]

    @classmethod
    def of(cls, query: Query, opts: object) -> _Bounds:
        num_items, cursor, end_cursor, max_rows, max_bytes, has_end = _check_options(opts)
        journal = query._txn.journal
        if journal is not None and not has_end and journal.get("endCursor") is not None:
            # A subscription re-run: keep the page boundary of the first run.
            end_cursor, has_end = journal["endCursor"], True
        secret = _secret(query._txn)
        digest = fingerprint(query)
        start_key = None if cursor is None else decode_cursor(secret, digest, cursor)
        end_key = decode_cursor(secret, digest, end_cursor) if has_end else None
        end_is_end = not has_end or end_key is None
        options = (num_items, cursor, end_cursor, max_rows, max_bytes, has_end)
        return cls(options, (secret, digest, start_key, end_key, end_is_end))

    def continuation(self, exhausted: bool, last_key: bytes | None) -> tuple[str, bool]:
        """``(continueCursor, isDone)`` of a page that read up to ``last_key`` (its
        range ``exhausted`` or not); a page with an end cursor keeps it."""
        end_cursor, has_end = self.options[2], self.options[5]
        secret, digest, _, _, end_is_end = self.keys
        if has_end:
            return end_cursor, end_is_end
        if exhausted:
            return encode_cursor(secret, digest, None), True
        return encode_cursor(secret, digest, last_key), False


def _check_options(opts: object) -> tuple[int, Any, Any, int | None, int | None, bool]:
    # As Convex (convex-js QueryImpl.paginate, then queryPage in
    # crates/isolate/src/environment/udf/async_syscall.rs): a missing cursor is the
    # first page, other keys (the client's "id", ...) are ignored.
    if not isinstance(opts, dict):
        raise ValidationError(
            f"paginate() expects an options dict like "
            f"{{'numItems': 10, 'cursor': None}}, got {opts!r}"
        )
    if any(value is UNSET for value in opts.values()):  # UNSET is `undefined`: missing
        opts = {name: value for name, value in opts.items() if value is not UNSET}
    raw = opts.get("numItems", UNSET)
    if type(raw) not in (int, float) or raw < 0:
        raise ValidationError(
            f"`options.numItems` must be a positive number. Received `{format_value(raw)}`.",
            path=".numItems",
        )
    num_items = _count(opts, "numItems")
    assert num_items is not None
    if num_items == 0:
        raise PaginationError(
            "NoDocumentsForPagination: Must request at least 1 document while paginating",
            code="NoDocumentsForPagination",
        )
    if num_items > MAX_PAGE_SIZE:
        # The number as given: a whole float past 2**53 (1e300) as a float, not its
        # hundreds of digits; an int too long to print by its size.
        shown = num_items if num_items <= 2**53 else format_value(raw)
        raise PaginationError(
            f"PageSizeTooLarge: Requested too many items: {shown} (at most "
            f"{MAX_PAGE_SIZE} per page).",
            code="PageSizeTooLarge",
        )
    max_rows = _count(opts, "maximumRowsRead")
    max_bytes = _count(opts, "maximumBytesRead")
    for name, limit in (("maximumRowsRead", max_rows), ("maximumBytesRead", max_bytes)):
        if limit is not None and limit <= 0:
            raise PaginationError(
                f"InvalidPaginationLimit: maximumRowsRead and maximumBytesRead must be "
                f"greater than 0 ({name} was {limit}).",
                code="InvalidPaginationLimit",
            )
    has_end = opts.get("endCursor") is not None
    return num_items, opts.get("cursor"), opts.get("endCursor"), max_rows, max_bytes, has_end


def paginate(query: Query, opts: dict[str, Any]) -> dict[str, Any]:
    """Run one page of ``query``; see the module docstring. Cost: one seek + rows read."""
    bounds = _Bounds.of(query, opts)
    num_items, cursor, _, max_rows, max_bytes, has_end = bounds.options
    secret, digest, start_key, end_key, _ = bounds.keys
    txn = query._txn
    resolved = query._resolved()
    if (cursor is not None and start_key is None) or resolved is None:
        # A cursor at the end, or a table that does not exist (yet): an empty page, and
        # the walk is done. Its end is the End, as for an empty table, so a subscription
        # keeps the page growing once rows appear.
        at_end = encode_cursor(secret, digest, None)
        _record_page(txn, at_end)
        return _result([], at_end, True, None, None)
    table, index, rng = resolved
    for key in (start_key, end_key):
        if key is not None and not key.startswith(index.prefix):
            # Issued for an index that was dropped (and maybe declared again) since: its
            # keys carry the old index's number, and would clamp to one end of the range.
            raise InvalidCursor(_INDEX_CHANGED.format(index=f"{table.name}.{index.name}"))
    reverse = query._order == "desc"
    lo, hi = rng.lo, rng.hi
    if reverse:
        if start_key is not None:
            hi = min(hi, start_key)
        if end_key is not None:
            lo = max(lo, end_key)
    else:
        if start_key is not None:
            lo = max(lo, start_key + b"\x00")
        if end_key is not None:
            hi = min(hi, end_key + b"\x00")
    page: list[dict[str, Any]] = []
    #: The index key of every row scanned, rejected ones included.
    scanned_keys: list[bytes] = []
    rows_read = 0
    bytes_before = txn.bytes_read + txn.system_bytes_read
    last_key: bytes | None = None
    status: str | None = None
    exhausted = True
    rows = None
    if lo < hi:
        keep = query._keep()
        # Read-only transactions read the page in one loop (a third faster than the
        # generator); a mutation streams, merging its own writes.
        rows = txn.read_rows(
            table,
            index,
            lo,
            hi,
            reverse=reverse,
            limit=None if has_end else num_items,
            keep=keep,
            max_rows=None if has_end else max_rows,
            max_bytes=None if has_end else max_bytes,
            with_keys=True,
        )
    if rows is not None:
        page, scanned_keys, rows_read, last_key = (
            rows.documents,
            rows.keys,
            rows.rows,
            rows.last_key,
        )
        if rows.stopped is not None:
            exhausted = False
            if rows.stopped != "limit":
                status = "SplitRequired"
    elif lo < hi:
        # A mutation streams, its own writes merged in; the scan counts them as read, as
        # Convex's IndexRange counts every document it returns, pending writes included.
        scan = txn.scan(table, index, lo, hi, reverse=reverse)
        for key, document in scan:
            rows_read += 1
            last_key = key
            scanned_keys.append(key)
            if keep is None or keep(document):
                page.append(document)
            if not has_end and len(page) >= num_items:
                exhausted = False
                break
            if not has_end and (
                (max_rows is not None and rows_read >= max_rows)
                or (
                    max_bytes is not None
                    and txn.bytes_read + txn.system_bytes_read - bytes_before >= max_bytes
                )
            ):
                exhausted = False
                status = "SplitRequired"
                break
        scan.close()
        txn.reads.check_read()  # the page's range is final: it may pass the ranges limit
    bytes_read = txn.bytes_read + txn.system_bytes_read - bytes_before
    continue_cursor, is_done = bounds.continuation(exhausted, last_key)
    if status is None and (
        rows_read > 0.75 * min(max_rows or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        or bytes_read > 0.75 * min(max_bytes or (16 << 20), 16 << 20)
        or len(page) > 6144
    ):
        status = "SplitRecommended"
    # Convex's split cursor (IndexRange::split_cursor_position in
    # crates/database/src/query/index_range.rs): after the middle row scanned, at index
    # len // 2, once more than two rows were scanned (filtered-out rows count).
    split = None
    if len(scanned_keys) > 2:
        split = encode_cursor(secret, digest, scanned_keys[len(scanned_keys) // 2])
    _record_page(txn, continue_cursor)
    return _result(page, continue_cursor, is_done, split, status)


def paginate_search(query: Query, search: SearchPlan, opts: dict[str, Any]) -> dict[str, Any]:
    """One page of a full-text search query, in relevance order.

    As Convex's search pages (``SearchQuery`` in crates/database/src/query/
    search_query.rs): the search runs and ranks its (at most 1024) results, the
    page takes those after ``cursor`` (and up to ``endCursor``). A cursor names a
    position in relevance order (score, then ``_creationTime``, then id), bound to
    the query as any cursor, so re-running a page at the same snapshot gives the
    same page. ``maximumRowsRead``/``maximumBytesRead`` are not enforced and no
    ``splitCursor`` is given, as in Convex. Cost: the whole search, then a point
    read per result on the page.
    """
    bounds = _Bounds.of(query, opts)
    num_items, cursor, _, _, _, has_end = bounds.options
    secret, digest, start_key, end_key, _ = bounds.keys
    txn = query._txn
    if cursor is not None and start_key is None:
        at_end = encode_cursor(secret, digest, None)
        _record_page(txn, at_end)
        return _result([], at_end, True, None, None)
    index = search.index
    for key in (start_key, end_key):
        if key is not None and not key.startswith(index.prefix):
            raise InvalidCursor(_INDEX_CHANGED.format(index=f"{search.table.name}.{index.name}"))
    results = search.run(txn)
    positions = results.positions
    start = 0 if start_key is None else bisect.bisect_right(positions, start_key)
    stop = len(positions) if end_key is None else bisect.bisect_right(positions, end_key)
    keep = query._keep()
    page: list[dict[str, Any]] = []
    last_key: bytes | None = None
    rows = 0
    bytes_before = txn.bytes_read
    exhausted = True
    fetched = results.fetch(txn, start, max(start, stop))
    for key, document in fetched:
        rows += 1
        last_key = key
        if document is not None and (keep is None or keep(document)):
            page.append(document)
        if not has_end and len(page) >= num_items:
            exhausted = False
            break
    fetched.close()
    continue_cursor, is_done = bounds.continuation(exhausted, last_key)
    status = None
    if rows > 0.75 * MAX_CANDIDATES or txn.bytes_read - bytes_before > 0.75 * (16 << 20):
        status = "SplitRecommended"  # Convex's is_approaching_data_limit of a search
    _record_page(txn, continue_cursor)
    return _result(page, continue_cursor, is_done, None, status)


def _record_page(txn: Transaction, continue_cursor: str) -> None:
    """Count this page as the function's one paginated query, and journal its end.

    As Convex's ``query_page`` (``crates/isolate/src/environment/udf/async_syscall.rs``)
    does, only once the page was read: a ``paginate()`` that raised (a stale cursor,
    a filter error) is not the function's paginated query, so the function may catch
    its error and paginate again (e.g. from the first page).
    """
    if txn.paginated:
        raise PaginationError(
            "MultiplePaginatedDatabaseQueries: This query or mutation function ran multiple "
            "paginated queries. Convex only supports a single paginated query in each function.",
            code="MultiplePaginatedDatabaseQueries",
        )
    txn.paginated = True
    journal = txn.journal
    if journal is not None and journal.get("endCursor") is None:
        journal["endCursor"] = continue_cursor


def _result(
    page: list[dict[str, Any]],
    continue_cursor: str,
    is_done: bool,
    split: str | None,
    status: str | None,
) -> dict[str, Any]:
    return {
        "page": page,
        "isDone": is_done,
        "continueCursor": continue_cursor,
        "splitCursor": split,
        "pageStatus": status,
    }


def new_secret() -> bytes:
    """32 random bytes: the per-database key that authenticates cursors."""
    return os.urandom(32)
