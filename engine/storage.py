"""The LMDB environment: the only module that imports ``lmdb``.

One environment per database folder, with five named sub-databases (see
``docs/concepts/storage-layout.md``):

- ``meta``: format version, catalog, schema, latest commit timestamp, secrets;
- ``documents``: ``table number (4 B) ‖ internal id (16 B)`` → msgpack document;
- ``indexes``: ``index number (4 B) ‖ sort keys ‖ internal id`` → empty;
- ``log``: ``commit ts (8 B big-endian)`` → the keys that commit wrote;
- ``blobs``: ``_storage`` document key (20 B) ‖ chunk number (4 B) → file bytes
  (:mod:`engine.blobs`). Created on open when missing, so a folder written
  before file storage existed opens unchanged (same format version).

Every ``lmdb.Error`` is mapped to a :class:`~engine.errors.StorageError` with a
hint. The memory map grows by itself: a write that finds the map full is
aborted, the map is doubled once every transaction of this process has left
it, and the write runs again, so no caller ever sees ``MapFullError``.

LMDB allows an environment to be opened only once per process, so
:func:`open_storage` shares one :class:`Storage` per real path, counted by
reference; several ``Engine`` objects on one folder share it.

Hot paths (here, in ``scans``, ``transaction`` and ``commit``) call py-lmdb
with positional arguments: it parses keyword arguments slowly, 80–190 ns per
call (measured: ``txn.get(k, db=d)`` 0.50 µs, ``txn.get(k, None, d)`` 0.32 µs;
``env.begin(write=False, buffers=False)`` 0.47 µs, ``env.begin()`` 0.23 µs).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import lmdb

from .errors import EngineError, FormatError, StorageError

__all__ = [
    "DURABILITY_MODES",
    "FORMAT_VERSION",
    "HEAD",
    "HEAD_KEY",
    "Durability",
    "ReadTxn",
    "Storage",
    "WriteTxn",
    "open_storage",
]

T = TypeVar("T")

Durability = Literal["full", "normal", "none"]
DURABILITY_MODES: tuple[str, ...] = ("full", "normal", "none")

#: The on-disk format this version writes and reads (2: ``head`` replaced
#: ``latest_ts`` and ``catalog_v``).
FORMAT_VERSION = 2
_FORMAT_KEY = b"format"
#: ``meta`` key of the head: the newest commit timestamp and the catalog
#: version, two big-endian u64s that every transaction reads in one lookup.
HEAD_KEY = b"head"
HEAD = struct.Struct(">QQ")

_INITIAL_MAP_SIZE = 256 << 20
_SUB_DATABASES = (b"meta", b"documents", b"indexes", b"log", b"blobs")
_MAX_READERS = 1022

#: Opaque handles: an LMDB txn. Only this module touches their methods'
#: LMDB-specific behaviour; callers use ``get``/``put``/``delete``/``cursor``.
ReadTxn = Any
WriteTxn = Any


class _Gate:
    """Lets any number of transactions use the map, or one thread remap it.

    ``mdb_env_set_mapsize`` unmaps and remaps the file, which would pull the
    memory out from under a transaction in another thread, so a resize waits
    until no transaction of this process is active, and holds new ones back.

    Entering and leaving take no lock (they run on every transaction): each
    active transaction holds one entry of ``active``, a list whose
    ``append``/``pop`` are atomic under the GIL. A transaction enters first and
    checks ``resizing`` second, and a resizer sets ``resizing`` first and
    counts entries second, so one of them always sees the other. Cost: about
    0.1 µs on entry and on exit; the condition is only touched while a resize
    is pending (rare: the map doubles each time).
    """

    __slots__ = ("_cond", "active", "resizing")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.active: list[None] = []
        self.resizing = False

    def enter(self) -> None:
        active = self.active
        while True:
            active.append(None)
            if not self.resizing:
                return
            self.leave()  # a resize is pending: step back and wait for it
            with self._cond:
                while self.resizing:
                    self._cond.wait()

    def leave(self) -> None:
        self.active.pop()
        if self.resizing:
            self.wake_resizer()

    def wake_resizer(self) -> None:
        """Tell a pending resize that a transaction left."""
        with self._cond:
            self._cond.notify_all()

    def exclusive(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` with no transaction active; the caller must not be in one."""
        with self._cond:
            while self.resizing:
                self._cond.wait()
            self.resizing = True
            try:
                while self.active:
                    # The timeout only bounds a missed wakeup; leave() notifies.
                    self._cond.wait(0.01)
                fn()
            finally:
                self.resizing = False
                self._cond.notify_all()


def _map_error(error: lmdb.Error, path: str) -> StorageError:
    """Translate an LMDB error into a StorageError whose message says what to do."""
    hints: list[tuple[type[lmdb.Error], str]] = [
        (
            lmdb.ReadersFullError,
            "too many concurrent readers: close idle engines or "
            "subscriptions, or lower the number of threads reading at once",
        ),
        (lmdb.DiskError, "the disk reported an I/O error: check the device and free space"),
        (lmdb.CorruptedError, "the database file is damaged: restore from a copy"),
        (
            lmdb.PanicError,
            "LMDB hit a fatal error and must be reopened: close and reopen the engine",
        ),
        (lmdb.VersionMismatchError, "the file was written by an incompatible LMDB version"),
        (lmdb.InvalidError, "the folder does not hold an LMDB database: check the path"),
        (lmdb.LockError, "could not take LMDB's lock file: check permissions on the folder"),
        (lmdb.DbsFullError, "too many named sub-databases: this is a bug in convexlite"),
        (lmdb.MapFullError, "the memory map is full and could not grow: free disk space"),
    ]
    for kind, hint in hints:
        if isinstance(error, kind):
            return StorageError(f"LMDB error at {path!r}: {error}; {hint}")
    if isinstance(error, lmdb.Error) and "No space" in str(error):
        return StorageError(f"LMDB error at {path!r}: {error}; free disk space")
    return StorageError(f"LMDB error at {path!r}: {error}")


class Storage:
    """One LMDB environment with the engine's sub-databases.

    Use :func:`open_storage`, not the constructor, so that one process opens a
    folder only once.

    Example::

        storage = open_storage("./data", durability="full")
        with storage.read() as txn:
            raw = txn.get(b"format", db=storage.meta)
        storage.release()
    """

    def __init__(self, path: str, durability: Durability, map_size: int) -> None:
        if durability not in DURABILITY_MODES:
            raise EngineError(
                f"durability must be one of {', '.join(map(repr, DURABILITY_MODES))}, "
                f"got {durability!r}"
            )
        self.path = path
        self.durability: Durability = durability
        self._gate = _Gate()
        #: ``(LMDB txn id, head)`` of the snapshot last seen (:meth:`snapshot_head`).
        self.head_cache: tuple[int, tuple[int, int]] = (-1, (0, 0))
        self._refs = 0
        #: Set once the environment is closed (after the last reference was dropped).
        self._closed = threading.Event()
        os.makedirs(path, exist_ok=True)
        try:
            self.env, (self.meta, self.documents, self.indexes, self.log, self.blobs) = (
                self._open_env(path, map_size, durability)
            )
            self.clear_dead_readers()
        except lmdb.Error as error:
            raise _map_error(error, path) from error
        self._check_format()

    @staticmethod
    def _open_env(path: str, map_size: int, durability: Durability) -> tuple[Any, list[Any]]:
        """``lmdb.open`` and the sub-databases (meta, documents, indexes, log, blobs),
        again while another process grows the map under them.

        LMDB sizes the map from the file at open, and py-lmdb's open (and each
        ``open_db``) runs a txn; a commit of another process that grows the file
        in between makes that txn fail with ``MDB_MAP_RESIZED``. Opening again
        reads the new size.
        """
        attempts = 0
        while True:
            env = None
            try:
                env = lmdb.open(
                    path,
                    map_size=map_size,
                    max_dbs=8,
                    max_readers=_MAX_READERS,
                    subdir=True,
                    lock=True,
                    # full: data then meta page synced on every commit (power-loss safe);
                    # normal: meta page not synced (a system crash may undo the last
                    # commit); none: nothing synced (process crashes lose nothing, power
                    # loss may).
                    sync=durability != "none",
                    metasync=durability == "full",
                    readahead=False,
                )
                # open_db creates a missing sub-database in a write txn of its own, under
                # LMDB's writer lock: two processes opening an older folder at once
                # cannot both create ``blobs``.
                return env, [env.open_db(n) for n in _SUB_DATABASES]
            except lmdb.MapResizedError:
                if env is not None:
                    env.close()
                attempts += 1
                if attempts >= 100:  # a writer growing the map faster than we can open
                    raise

    # -- lifecycle -------------------------------------------------------

    def _check_format(self) -> None:
        def check(txn: WriteTxn) -> None:
            raw = txn.get(_FORMAT_KEY, db=self.meta)
            if raw is None:
                txn.put(_FORMAT_KEY, str(FORMAT_VERSION).encode(), db=self.meta)
                return
            version = bytes(raw).decode("ascii", "replace")
            if version != str(FORMAT_VERSION):
                raise FormatError(
                    f"The database at {self.path!r} has format version {version}, but this "
                    f"convexlite reads format {FORMAT_VERSION}: open it with the convexlite "
                    "version that wrote it, or export and re-import the data."
                )

        self.write(check)

    def head(self, txn: ReadTxn) -> tuple[int, int]:
        """``(latest commit timestamp, catalog version)`` as of ``txn`` (read or write)."""
        raw = txn.get(HEAD_KEY, None, self.meta)
        return (0, 0) if raw is None else HEAD.unpack(raw)

    def snapshot_head(self, txn: ReadTxn) -> tuple[int, int]:
        """:meth:`head` of a *read* txn, remembered by LMDB's txn id.

        A read txn's id is the id of the write txn whose commit it sees; ids
        only grow, and every process's commits share them, so one id always
        names one head. Cost: one C call (``mdb_txn_id``) when the snapshot is
        the one seen last (typical: reads outnumber commits), else one lookup.
        Never pass a write txn: an aborted write's id is reused by the next one.
        """
        txnid = txn.id()
        cached = self.head_cache
        if cached[0] == txnid:
            return cached[1]
        head = self.head(txn)
        self.head_cache = (txnid, head)  # one tuple: readers in other threads see old or new
        return head

    def put_head(self, txn: WriteTxn, latest_ts: int, catalog_version: int) -> None:
        """Store the head inside write txn ``txn``."""
        txn.put(HEAD_KEY, HEAD.pack(latest_ts, catalog_version), True, True, False, self.meta)

    @property
    def closed(self) -> bool:
        """True once the last reference is released (the environment is closed)."""
        return self._refs <= 0

    def release(self) -> None:
        """Drop one reference; the environment closes when the last one goes.

        Closing waits for the transactions this process still runs (another
        thread's query, say) to finish, as a resize does, and holds new ones back:
        those then fail with :class:`StorageError` instead of reading a closed map.
        """
        if self.drop_ref():
            self.close_env()

    def drop_ref(self) -> bool:
        """Drop one reference; True if it was the last (call :meth:`close_env` then).

        Atomic with :func:`open_storage`: of two handles released at once, exactly one
        learns it was the last.
        """
        with _REGISTRY_LOCK:
            self._refs -= 1
            if self._refs > 0:
                return False
            _REGISTRY.pop(self.path, None)
            _CLOSING[self.path] = self._closed
            return True

    def close_env(self) -> None:
        """Close the environment once this process's transactions end (see :meth:`release`).

        An :func:`open_storage` of the folder waits for this (LMDB refuses a second
        environment on one folder in a process).
        """
        try:
            self._gate.exclusive(self.env.close)
        finally:
            with _REGISTRY_LOCK:
                if _CLOSING.get(self.path) is self._closed:
                    del _CLOSING[self.path]
            self._closed.set()

    # -- transactions ----------------------------------------------------

    @contextmanager
    def read(self, *, buffers: bool = False) -> Iterator[ReadTxn]:
        """A read-only LMDB txn on the latest snapshot.

        Keys and values come back as ``bytes`` (copies): for documents of a few
        hundred bytes, py-lmdb's zero-copy ``memoryview`` results cost more to
        make and use than the copy (measured: a 100-row range read 16% slower,
        a get 10% slower), and a ``bytes`` value stays valid after the txn.
        ``buffers=True`` hands out ``memoryview`` s into the map instead, valid
        only until the txn ends: for large values (file chunks), copied once.
        Cost: one reader-slot acquisition (no lock contention with writers).
        """
        txn = self.begin_read(buffers)
        try:
            yield txn
        finally:
            self.end_read(txn)

    def begin_read(self, buffers: bool = False) -> ReadTxn:
        """Open a read txn; pair with :meth:`end_read` (use :meth:`read` if you can).

        Cost: about 0.3 µs (the gate's entry inline, then ``mdb_txn_begin``).
        """
        gate = self._gate
        gate.active.append(None)  # _Gate.enter, inline: this runs for every transaction
        if not gate.resizing:
            try:
                return self.env.begin(None, None, False, True) if buffers else self.env.begin()
            except lmdb.Error:
                pass  # handled below, where the map size is adopted or the error mapped
            except BaseException:
                gate.leave()
                raise
        gate.leave()
        while True:
            self._gate.enter()
            try:
                return self.env.begin(None, None, False, buffers)
            except lmdb.MapResizedError:
                self._gate.leave()
                self._adopt_map_size()
            except lmdb.Error as error:
                self._gate.leave()
                raise _map_error(error, self.path) from error

    def end_read(self, txn: ReadTxn) -> None:
        """Close a read txn opened by :meth:`begin_read`."""
        try:
            txn.abort()
        finally:
            gate = self._gate
            gate.active.pop()  # _Gate.leave, inline
            if gate.resizing:
                gate.wake_resizer()

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in the single LMDB write txn and commit it; return its result.

        Blocks until this process and every other process holding the writer
        lock is done. If the map fills up, the txn is aborted, the map grows,
        and ``fn`` runs again on a fresh txn: ``fn`` must derive everything
        from the txn it is given. An exception from ``fn`` aborts the txn.
        Cost: the commit's syncs (two fdatasync calls in ``full`` mode).
        """
        while True:
            self._gate.enter()
            entered = True
            try:
                txn = self.env.begin(None, None, True)
                try:
                    result = fn(txn)
                    txn.commit()
                    return result
                except BaseException:
                    txn.abort()
                    raise
            except lmdb.MapFullError:
                self._gate.leave()
                entered = False
                self._grow_map()
            except lmdb.MapResizedError:
                self._gate.leave()
                entered = False
                self._adopt_map_size()
            except lmdb.Error as error:
                if self.closed:
                    raise StorageError(
                        f"The database at {self.path!r} was closed while this write waited: "
                        "nothing was written. Close engines after the calls of other threads "
                        "return."
                    ) from error
                raise _map_error(error, self.path) from error
            finally:
                if entered:
                    self._gate.leave()

    # -- the map ---------------------------------------------------------

    @property
    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def clear_dead_readers(self) -> None:
        """Free the reader slots of dead processes (every group commit calls it).

        A process killed inside a read leaves its slot, and its snapshot pins every
        page freed after it: the file would grow without bound while writers run.
        Cost: a pass over the reader table, ~0.05 µs when every reader is ours, plus
        one lock probe per other process with a reader.
        """
        self.env.reader_check()

    def _grow_map(self) -> None:
        current = self.map_size

        def grow() -> None:
            if self.map_size == current:  # another thread may have grown it already
                self.clear_dead_readers()  # their pinned pages may make room too
                self.env.set_mapsize(current * 2)

        try:
            self._gate.exclusive(grow)
        except lmdb.Error as error:
            raise _map_error(error, self.path) from error

    def _adopt_map_size(self) -> None:
        """Another process grew the map: take its size (``set_mapsize(0)``)."""
        try:
            self._gate.exclusive(lambda: self.env.set_mapsize(0))
        except lmdb.Error as error:
            raise _map_error(error, self.path) from error

    def copy_to(self, path: str) -> None:
        """Write a consistent, compacted copy of the environment to folder ``path``."""
        os.makedirs(path, exist_ok=True)
        try:
            self.env.copy(path, compact=True)
        except lmdb.Error as error:
            raise _map_error(error, self.path) from error


_REGISTRY: dict[str, Storage] = {}
#: Folders whose last reference is gone but whose environment is still closing.
_CLOSING: dict[str, threading.Event] = {}
_REGISTRY_LOCK = threading.Lock()


def open_storage(
    path: str, *, durability: Durability = "full", map_size: int = _INITIAL_MAP_SIZE
) -> Storage:
    """Open (or share) the storage for folder ``path``.

    Raises :class:`StorageError` when LMDB cannot open the folder and
    :class:`EngineError` when this process already has the folder open with
    another durability mode (LMDB's sync flags are per environment).
    """
    real = os.path.realpath(path)
    while True:  # the last handle of the folder may be closing: wait for it, then open
        with _REGISTRY_LOCK:
            closing = _CLOSING.get(real)
            if closing is None:
                return _register(path, real, durability, map_size)
        closing.wait()


def _register(path: str, real: str, durability: Durability, map_size: int) -> Storage:
    """:func:`open_storage`'s step under the registry lock."""
    storage = _REGISTRY.get(real)
    if storage is None:
        storage = Storage(real, durability, map_size)
        _REGISTRY[real] = storage
    elif storage.durability != durability:
        raise EngineError(
            f"{path!r} is already open in this process with durability="
            f"{storage.durability!r}; open it with the same mode, or close the other "
            f"engine first (asked for durability={durability!r})"
        )
    storage._refs += 1
    return storage
