"""Index keys longer than LMDB's key size (511 bytes), stored in order.

Convex has no index key size limit (its persistence splits a long key into a prefix
kept in the primary key and a suffix beside it). LMDB keys hold at most
:data:`SPLIT` bytes, so a longer index key ``k`` lives in the *entry* of its first
:data:`SPLIT` bytes, ``k[:SPLIT]``, whose value lists every long key with that prefix,
sorted::

    entry key   k[:511]
    entry value msgpack [has_self, [k[511:] of each long key with that prefix, ascending]]

``has_self`` says whether the 511-byte key ``k[:511]`` is itself an index key (a plain
entry has an empty value: every entry of a shorter key, and of a 511-byte key with no
longer key after it). The order of entries is then the order of the keys they hold:
an entry's key sorts before every long key it lists (a proper prefix), and every other
entry's key sorts before or after all of them at once (it differs from them within the
first 511 bytes, or is shorter than 511 bytes and so is no prefix of them). A scan that
meets an entry with a value reads its keys in place (:func:`keys_in`).

Only entries whose key is exactly :data:`SPLIT` bytes long can carry a value. How many
each index holds is counted in ``meta`` (:data:`LONG_KEYS_KEY`, in the same write txn):
readers send the ranges of the indexes counted to the scan that expands entries and keep
their one-loop fast paths for every other index (one whose count is back at zero too).
A value that does not decode as such a list is a :class:`CorruptionError`. A database
holding one is format 4 (:func:`apply` marks it): versions that read format 2 would miss
the keys an entry lists, so they refuse it (formats 6 and 7, a folder with a vector or a
search index, keep holding them: :func:`mark_format` never lowers the format).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .encoding import DecodeError, encode, typed_decoder
from .errors import CorruptionError

__all__ = [
    "FORMAT",
    "LONG_KEYS_KEY",
    "SPLIT",
    "apply",
    "contains",
    "decode_entry",
    "forget_index",
    "keys_in",
    "long_index_counts",
    "mark_format",
]

#: LMDB's largest key (``mdb_env_get_maxkeysize``, 511 bytes in py-lmdb's build): keys of
#: this length or longer go through :func:`apply`, longer ones live in an entry's value.
SPLIT = 511
#: The format version of a database that holds an entry with a value.
FORMAT = b"4"
_FORMAT_KEY = b"format"
#: ``meta`` key of how many entries with a value each index has (msgpack map of index
#: number to count, zero counts left out): readers send the ranges of those indexes to
#: the scan that expands entries, and keep their one-loop fast paths for every other.
LONG_KEYS_KEY = b"long_keys"

T = TypeVar("T")

_decode_entry = typed_decoder(tuple[bool, list[bytes]])
_decode_counts = typed_decoder(dict[int, int])
_RESTORE = "Run Engine.check() to list the damage, and restore the folder from a backup."


def _decoded(decoder: Callable[[bytes], T], raw: bytes, what: str) -> T:
    """``decoder(raw)``; :class:`CorruptionError` naming ``what`` for bytes of another
    shape (a damaged page, a bad tool)."""
    try:
        return decoder(raw)
    except DecodeError as error:
        raise CorruptionError.damaged(f"{what} does not decode ({error})", _RESTORE) from None


def decode_entry(key: bytes, value: bytes) -> tuple[bool, list[bytes]]:
    """The ``(has_self, rests)`` of an entry with a value. Cost: one typed decode."""
    return _decoded(_decode_entry, value, f"the list of long keys of index entry {key.hex()}")


def mark_format(wtxn: Any, meta: Any, version: bytes) -> None:
    """Make ``meta/format`` at least ``version`` in write txn ``wtxn``: a folder holding
    long keys is format 4, one whose catalog holds a vector index 6
    (:data:`engine.vectors.FORMAT`), a search index 7 (:data:`engine.searchkeys.FORMAT`);
    each may hold long keys too, and no mark lowers another. Cost: one lookup, and one write when the format moves."""
    current = wtxn.get(_FORMAT_KEY, None, meta)
    if current is not None and bytes(current).isdigit() and int(current) >= int(version):
        return
    wtxn.put(_FORMAT_KEY, version, True, True, False, meta)


def long_index_counts(raw: bytes | None) -> dict[int, int]:
    """The decoded ``meta/long_keys`` (``{}`` when missing); :class:`CorruptionError` for
    bytes of another shape."""
    return {} if raw is None else _decoded(_decode_counts, raw, "meta/long_keys")


def forget_index(wtxn: Any, meta: Any, number: int) -> None:
    """Drop index ``number``'s count from ``meta/long_keys``, in the write txn that
    deletes its entries (a dropped index's numbers are never used again)."""
    raw = wtxn.get(LONG_KEYS_KEY, None, meta)
    counts = long_index_counts(raw)
    if counts.pop(number, None) is None:
        return
    if counts:
        wtxn.put(LONG_KEYS_KEY, encode(counts), True, True, False, meta)
    else:
        wtxn.delete(LONG_KEYS_KEY, b"", meta)


def keys_in(
    key: bytes, value: bytes, lo: bytes, hi: bytes, reverse: bool = False
) -> Iterator[bytes]:
    """The index keys entry ``key`` holds within ``[lo, hi)``, ascending (descending with
    ``reverse``), made as they are consumed. Cost: one decode for an entry with a value,
    a binary search per bound that falls inside it, a concatenation per key yielded."""
    if not value:
        if lo <= key < hi:
            yield key
        return
    has_self, rests = decode_entry(key, value)
    own = has_self and lo <= key < hi
    # The long keys are key + rest, all above key: bound them by the rests.
    if lo <= key:
        start = 0
    elif lo.startswith(key):
        start = bisect.bisect_left(rests, lo[SPLIT:])
    else:  # above every key that starts with ``key``
        start = len(rests)
    if hi <= key:
        end = 0
    elif hi.startswith(key):
        end = bisect.bisect_left(rests, hi[SPLIT:])
    else:
        end = len(rests)
    if reverse:
        for i in range(end - 1, start - 1, -1):
            yield key + rests[i]
        if own:
            yield key
    else:
        if own:
            yield key
        for i in range(start, end):
            yield key + rests[i]


def contains(rtxn: Any, db: Any, key: bytes) -> bool:
    """Whether index key ``key`` (any length) is stored. Cost: one lookup (and a decode
    and a binary search for a long key)."""
    if len(key) < SPLIT:
        return rtxn.get(key, None, db) is not None
    value = rtxn.get(key[:SPLIT], None, db)
    if value is None:
        return False
    if len(key) == SPLIT:
        return not value or decode_entry(key, value)[0]
    if not value:
        return False
    rests = decode_entry(key[:SPLIT], value)[1]
    rest = key[SPLIT:]
    at = bisect.bisect_left(rests, rest)
    return at < len(rests) and rests[at] == rest


def apply(wtxn: Any, db: Any, meta: Any, changes: dict[bytes, bytes | None]) -> None:
    """Put (``key -> b""``) or delete (``key -> None``) index keys of :data:`SPLIT` bytes
    or more, in write txn ``wtxn``: each updates the entry of its first :data:`SPLIT`
    bytes, and ``meta/long_keys`` counts the entries with a value per index (an index
    back at zero leaves the scan's path). Marks the database format 4 when an entry gets
    a value. Cost: per entry changed, one lookup and one write, a decode and re-encode of
    its list: linear in the long keys sharing its first bytes and in their size (5,000
    documents with one 600-character indexed value: ~1.2 ms an insert,
    ``bench/probes/long_keys.py``).
    """
    by_entry: dict[bytes, list[tuple[bytes, bool]]] = {}
    for key, value in changes.items():
        by_entry.setdefault(key[:SPLIT], []).append((key, value is not None))
    deltas: dict[int, int] = {}
    for entry, edits in by_entry.items():
        raw = wtxn.get(entry, None, db)
        has_self, rests = (raw is not None, []) if not raw else decode_entry(entry, raw)
        listed_before = bool(rests)
        for key, put in edits:
            if len(key) == SPLIT:
                has_self = put
                continue
            rest = key[SPLIT:]
            at = bisect.bisect_left(rests, rest)
            present = at < len(rests) and rests[at] == rest
            if put and not present:
                rests.insert(at, rest)
            elif not put and present:
                del rests[at]
        if rests:
            wtxn.put(entry, encode([has_self, rests]), True, True, False, db)
        elif has_self:
            wtxn.put(entry, b"", True, True, False, db)
        elif raw is not None:
            wtxn.delete(entry, b"", db)
        if bool(rests) != listed_before:
            number = int.from_bytes(entry[:4], "big")
            deltas[number] = deltas.get(number, 0) + (1 if rests else -1)
    if any(deltas.values()):
        counts = long_index_counts(wtxn.get(LONG_KEYS_KEY, None, meta))
        for number, delta in deltas.items():
            counts[number] = counts.get(number, 0) + delta
        counts = {number: n for number, n in sorted(counts.items()) if n > 0}
        if counts:
            wtxn.put(LONG_KEYS_KEY, encode(counts), True, True, False, meta)
            mark_format(wtxn, meta, FORMAT)
        else:
            wtxn.delete(LONG_KEYS_KEY, b"", meta)
