"""Write sets: a transaction's buffered writes, readable in index order.

Writes never touch LMDB before commit. The write set keeps, per written
document, its newest encoded version (``None`` once deleted) and the index
keys of its snapshot version and of its newest version. Index scans merge
two overlay structures over the LMDB scan, so a mutation reads its own
writes in index order, in both directions:

- ``added``: a sorted list of index keys that exist only in the overlay;
- ``removed``: index keys in LMDB that the overlay deleted.

Nested sub-transactions (``ctx.run_mutation``) take a :meth:`WriteSet.savepoint`
and, if they raise, :meth:`WriteSet.rollback` to it. An undo log replaces the
"stack of layers" of DESIGN.md: reads then consult one overlay instead of one
per nesting level, and rollback costs only what the nested call wrote.
"""

from __future__ import annotations

from typing import Any

from sortedcontainers import SortedList

from .catalog import Catalog

__all__ = ["Savepoint", "WriteSet"]

_ABSENT: Any = object()


class Savepoint:
    """Where to roll a write set back to."""

    __slots__ = ("bytes_written", "catalog", "undo_length", "writes")

    def __init__(
        self, undo_length: int, catalog: Catalog | None, writes: int, bytes_written: int
    ) -> None:
        self.undo_length = undo_length
        self.catalog = catalog
        self.writes = writes
        self.bytes_written = bytes_written


class WriteSet:
    """Buffered writes of one transaction.

    Cost: ``O(k log n)`` per write for ``k`` indexes on the table and ``n``
    overlay keys.
    """

    __slots__ = (
        "_added_keys",
        "_added_sorted",
        "blobs",
        "bytes_written",
        "catalog",
        "current_keys",
        "documents",
        "generation",
        "old_keys",
        "removed",
        "tables",
        "undo",
        "writes",
    )

    def __init__(self) -> None:
        #: document key (table prefix ‖ internal id) → newest encoded version, or None.
        self.documents: dict[bytes, bytes | None] = {}
        #: document key → index keys of the snapshot version (``()`` if it did not exist).
        self.old_keys: dict[bytes, tuple[bytes, ...]] = {}
        #: document key → index keys of the newest version (``()`` once deleted).
        self.current_keys: dict[bytes, tuple[bytes, ...]] = {}
        #: document key → table name, for messages and schema checks at commit.
        self.tables: dict[bytes, str] = {}
        #: Index keys that exist only in the overlay; kept sorted (``added``) only
        #: once a scan asks: a mutation that writes without scanning after its
        #: writes pays a set insertion per key, not a sorted insertion.
        self._added_keys: set[bytes] = set()
        self._added_sorted: SortedList | None = None
        self.removed: set[bytes] = set()
        self.undo: list[tuple[bytes, Any, tuple[bytes, ...]]] = []
        #: The catalog with tables this transaction created, or None.
        self.catalog: Catalog | None = None
        #: Bytes of documents written (Convex's ``bytesWritten``), rolled back with the writes.
        self.bytes_written = 0
        #: Documents written (Convex's ``documentsWritten``).
        self.writes = 0
        #: Bumped whenever the overlay's index keys change (a write, a rollback): a
        #: scan that yielded to its caller re-seeks the overlay when it moved.
        self.generation = 0
        #: ``_storage`` document key → file bytes to store, or None to delete them
        #: (None until the first :meth:`set_blob`).
        self.blobs: dict[bytes, bytes | None] | None = None

    def __bool__(self) -> bool:
        return bool(self.documents) or self.catalog is not None

    @property
    def added(self) -> SortedList:
        """The overlay's own index keys, sorted (built on first use, then kept up to date).

        Cost: ``O(n log n)`` for ``n`` keys on the first call, then nothing.
        """
        added = self._added_sorted
        if added is None:
            added = self._added_sorted = SortedList(self._added_keys)
        return added

    def touched(self, doc_key: bytes) -> bool:
        return doc_key in self.current_keys

    def write(
        self,
        table: str,
        doc_key: bytes,
        snapshot_keys: tuple[bytes, ...] | None,
        raw: bytes | None,
        keys: tuple[bytes, ...],
    ) -> None:
        """Make ``raw`` (or a deletion) the newest version of ``doc_key``.

        ``snapshot_keys`` are the index keys of the version in the snapshot;
        the caller passes them on the first write of a document (``()`` for an
        insert) and may pass None afterwards.
        """
        if doc_key not in self.current_keys:
            if snapshot_keys is None:
                raise AssertionError("first write of a document needs its snapshot keys")
            self.old_keys[doc_key] = snapshot_keys
            self.current_keys[doc_key] = snapshot_keys
            self.tables[doc_key] = table
        self.undo.append(
            (doc_key, self.documents.get(doc_key, _ABSENT), self.current_keys[doc_key])
        )
        self._move_keys(doc_key, keys)
        self.documents[doc_key] = raw
        self.writes += 1

    def _move_keys(self, doc_key: bytes, keys: tuple[bytes, ...]) -> None:
        before = self.current_keys[doc_key]
        if before == keys:
            return
        self.generation += 1
        added = self._added_keys
        added_sorted = self._added_sorted
        previous: set[bytes] | tuple[()] = ()  # an insert had no keys: nothing to remove
        if before:
            after = set(keys)
            for key in before:
                if key not in after:
                    if key in added:
                        added.discard(key)
                        if added_sorted is not None:
                            added_sorted.remove(key)
                    else:
                        self.removed.add(key)
            previous = set(before)
        for key in keys:
            if key not in previous:
                if key in self.removed:
                    self.removed.discard(key)
                else:
                    added.add(key)
                    if added_sorted is not None:
                        added_sorted.add(key)
        self.current_keys[doc_key] = keys

    def set_blob(self, doc_key: bytes, data: bytes | None) -> None:
        """Store ``data`` (None: delete the bytes) with the ``_storage`` document ``doc_key``.

        Call it beside the write of that document. No undo entry is needed: at
        commit, :meth:`blob_changes` keeps a blob change only if the document's
        net change agrees with it, so a rolled-back insert or delete drops it.
        """
        if self.blobs is None:
            self.blobs = {}
        self.blobs[doc_key] = data

    def blob_changes(self) -> dict[bytes, bytes | None]:
        """The blob writes that commit applies: bytes of documents this transaction
        inserted (and kept), deletions of documents that existed and are deleted."""
        changes: dict[bytes, bytes | None] = {}
        for doc_key, data in (self.blobs or {}).items():
            if doc_key not in self.documents:
                continue  # rolled back
            raw = self.documents[doc_key]
            existed = bool(self.old_keys[doc_key])
            if data is None and raw is None and existed:
                changes[doc_key] = None
            elif data is not None and raw is not None and not existed:
                changes[doc_key] = data
        return changes

    def savepoint(self) -> Savepoint:
        return Savepoint(len(self.undo), self.catalog, self.writes, self.bytes_written)

    def rollback(self, savepoint: Savepoint) -> None:
        """Undo every write made after ``savepoint``."""
        while len(self.undo) > savepoint.undo_length:
            doc_key, previous, keys = self.undo.pop()
            self._move_keys(doc_key, keys)
            if previous is _ABSENT:
                del self.documents[doc_key]
            else:
                self.documents[doc_key] = previous
        self.catalog = savepoint.catalog
        self.writes = savepoint.writes
        self.bytes_written = savepoint.bytes_written

    def changes(
        self,
    ) -> tuple[list[tuple[bytes, bytes | None]], list[bytes], list[bytes], list[bytes]]:
        """What commit applies: document puts, index deletes, index puts, log keys.

        Index keys here include ``by_id`` keys (position 0 of each key tuple),
        which are not stored in ``indexes`` and are left out of puts/deletes.
        """
        documents: list[tuple[bytes, bytes | None]] = []
        deletes: list[bytes] = []
        puts: list[bytes] = []
        logged: list[bytes] = []
        old_keys, current_keys = self.old_keys, self.current_keys
        for doc_key, raw in self.documents.items():
            old = old_keys[doc_key]
            new = current_keys[doc_key]
            # A document's keys are distinct (one per index), so the common cases
            # need no sets: a write that kept every key (a patch of unindexed fields)
            # logs them, an insert puts and logs them, a delete removes and logs them.
            if old == new:
                if not new:
                    continue  # inserted, then deleted: nothing to apply
                documents.append((doc_key, raw))
                logged.extend(new)
            elif not old:
                documents.append((doc_key, raw))
                puts.extend(new[1:])
                logged.extend(new)
            elif not new:
                documents.append((doc_key, raw))
                deletes.extend(old[1:])
                logged.extend(old)
            else:
                documents.append((doc_key, raw))
                old_set = set(old)
                new_set = set(new)
                deletes.extend(k for k in old[1:] if k not in new_set)
                puts.extend(k for k in new[1:] if k not in old_set)
                logged.extend(old_set.union(new))
        return documents, deletes, puts, logged
