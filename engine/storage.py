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

import gc
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import lmdb

try:
    import fcntl
except ImportError:  # Windows: no cross-process durability check
    fcntl = None  # type: ignore[assignment]

from .backupfile import PARTIAL_NAME, PartialCopy, drop_leftover_name, unfinished_backup
from .errors import CorruptionError, EngineError, FormatError, StorageError
from .folders import ModeLock, fsync_entries, missing_folders, sync_new_entries
from .gate import Gate
from .longkeys import LONG_KEYS_KEY, long_index_counts

_log = logging.getLogger(__name__)

__all__ = [
    "DURABILITY_MODES",
    "FORMAT_VERSION",
    "HEAD",
    "HEAD_KEY",
    "LMDB_ERRORS",
    "READABLE_FORMATS",
    "SUB_DATABASES",
    "Durability",
    "ReadTxn",
    "ReadersFull",
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
#: The formats this version reads: 4 is 2 with index keys longer than LMDB's key size
#: (``engine.longkeys``), marked when the first one is stored. (3 was an earlier layout
#: of those keys, never released, whose ``meta/long_keys`` was a list: refused.) 5 is 4
#: with full-text search indexes in the catalog (``engine.searchkeys``), marked by the
#: schema change that declares the first one: a version without them would take a
#: search index for a database index and write wrong entries into it. 6 is 5 with
#: vector indexes (``engine.vectors``), marked likewise: a version without them would
#: leave their entries stale. 7 is 6 with search entries made by the tokenizer of
#: Rust's alphanumerics (``engine.searchkeys.FORMAT``): a 5 or 6 folder holding search
#: indexes becomes 7 as its open rebuilds them; a version with the older tokenizer
#: refuses 7 (it would write entries of its own).
READABLE_FORMATS = ("2", "4", "5", "6", "7")
_FORMAT_KEY = b"format"
#: ``meta`` key of the head: the newest commit timestamp and the catalog
#: version, two big-endian u64s that every transaction reads in one lookup.
HEAD_KEY = b"head"
HEAD = struct.Struct(">QQ")
_U64 = struct.Struct(">Q")

_INITIAL_MAP_SIZE = 256 << 20
#: Seconds after which a close still waiting for other threads' transactions says so
#: (the engine's own wait for running calls, ``Database.close_timeout``, comes first).
SLOW_WAIT = 30.0
#: The names of the sub-databases: the only keys of the environment's main database.
SUB_DATABASES = (b"meta", b"documents", b"indexes", b"log", b"blobs")
_MAX_READERS = 1022
#: What a read inside a transaction may raise from LMDB (a damaged page, say): for
#: ``except`` clauses outside this module, which hand the error to
#: :meth:`Storage.mapped` (only this module imports ``lmdb``).
LMDB_ERRORS: tuple[type[BaseException], ...] = (lmdb.Error,)

#: Opaque handles: an LMDB txn. Only this module touches their methods'
#: LMDB-specific behaviour; callers use ``get``/``put``/``delete``/``cursor``.
ReadTxn = Any
WriteTxn = Any


class ReadersFull(StorageError):
    """LMDB's reader table is full (the readers of every process on the folder share
    its slots): a :class:`StorageError` that passes once some reader ends."""


def _map_error(error: lmdb.Error, path: str) -> StorageError:
    """Translate an LMDB error into a StorageError whose message says what to do."""
    hints: list[tuple[type[lmdb.Error], str]] = [
        (
            lmdb.ReadersFullError,
            "too many concurrent readers: close idle engines or "
            "subscriptions, or lower the number of threads reading at once",
        ),
        (lmdb.DiskError, "the disk reported an I/O error: check the device and free space"),
        (
            lmdb.BadTxnError,
            "an earlier LMDB error ended this transaction; if it recurs (at every open, "
            "say) the database file is damaged: run Engine.check(), or restore it from a "
            "backup (Engine.backup)",
        ),
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
    if isinstance(error, (lmdb.CorruptedError, lmdb.PageNotFoundError)):
        return CorruptionError(
            f"LMDB error at {path!r}: {error}; the database file is damaged: restore it "
            "from a backup (Engine.backup)",
            problems=[f"LMDB: {error}"],
        )
    for kind, hint in hints:
        if isinstance(error, kind):
            made = ReadersFull if kind is lmdb.ReadersFullError else StorageError
            return made(f"LMDB error at {path!r}: {error}; {hint}")
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
        self._gate = Gate()
        #: ``(LMDB txn id, head)`` of the snapshot last seen (:meth:`snapshot_head`).
        self.head_cache: tuple[int, tuple[int, int]] = (-1, (0, 0))
        self.long_cache: tuple[int, frozenset[int]] = (-1, frozenset())
        self._refs = 0
        #: True once the last reference is dropped (or the process forked away from it).
        self._released = False
        #: Set once the environment is closed (after the last reference was dropped).
        self._closed = threading.Event()
        #: Whether the calling thread is inside a transaction (set by the database):
        #: a fork from there does not wait for the transaction (see _before_fork).
        self.in_transaction: Callable[[], bool] = _never
        #: When a fork last waited in vain for this process's transactions.
        self._fork_waited_in_vain = -FORK_WAIT
        self.env: Any = None
        self._mode_lock: ModeLock | None = None
        _OPENED.add(self)  # before anything is opened: a fork now must see it
        made = missing_folders(path)
        fresh = not os.path.exists(os.path.join(path, "data.mdb"))
        if fresh and unfinished_backup(path):  # LMDB would make a new, empty database
            raise StorageError(
                f"The folder {path!r} holds an unfinished backup ({PARTIAL_NAME}, no "
                "data.mdb): a backup into it was killed midway or is still running, and "
                "opening it would make a new, empty database. Open the database the "
                "backup was taken from, or run the backup again into this folder (it "
                f"writes over {PARTIAL_NAME}), or delete the folder (or the file) to "
                "start an empty database here."
            )
        if not fresh and drop_leftover_name(path):
            _log.info(
                "dropped %s in %s: a killed backup's second name for data.mdb", PARTIAL_NAME, path
            )
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:  # a file at the path, a file as a parent, no permission
            raise StorageError(
                f"Cannot use {path!r} as a database folder ({error.strerror}): give the path "
                "of a folder, or of one to create, that this process may write to."
            ) from error
        mode_lock = self._mode_lock = ModeLock(path, durability)
        try:
            self.env, (self.meta, self.documents, self.indexes, self.log, self.blobs) = (
                self._open_env(path, map_size, durability)
            )
            self.clear_dead_readers()
        except lmdb.Error as error:
            mode_lock.close()
            raise _map_error(error, path) from error
        except BaseException:
            mode_lock.close()
            raise
        try:
            self._check_format()
            if durability != "none" and (fresh or made):
                sync_new_entries(path, made)
        except BaseException:
            self.env.close()
            mode_lock.close()
            raise

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
                _check_size(env, path)  # before any page is read through the map
                return env, _open_sub_databases(env, path)
            except lmdb.MapResizedError:
                if env is not None:
                    env.close()
                attempts += 1
                if attempts >= 100:  # a writer growing the map faster than we can open
                    raise
            except lmdb.Error as error:
                if env is not None:  # opened, then refused: leave nothing open
                    env.close()
                    raise
                if path not in _INHERITED or "already open" not in str(error):
                    raise
                # A fork child: the parent's environment is still referred to. A cycle
                # may hold it (collect once); a transaction open at the fork does.
                attempts += 1
                if attempts == 1:
                    gc.collect()
                    continue
                raise EngineError(
                    f"{path!r} cannot be opened in this process: it forked from process "
                    f"{_INHERITED[path]} while a transaction there had the folder open "
                    "(or was being opened or closed), and LMDB cannot open a folder twice "
                    "in one process. Fork when no query or mutation runs (a fork waits "
                    "up to storage.FORK_WAIT seconds for them), or before opening the "
                    "engine, or start workers with the 'spawn' or 'forkserver' start "
                    "method."
                ) from None
            except BaseException:
                if env is not None:
                    env.close()
                raise

    # -- lifecycle -------------------------------------------------------

    def _check_format(self) -> None:
        def check(txn: WriteTxn) -> None:
            raw = txn.get(_FORMAT_KEY, db=self.meta)
            if raw is None:
                txn.put(_FORMAT_KEY, str(FORMAT_VERSION).encode(), db=self.meta)
                return
            version = bytes(raw).decode("ascii", "replace")
            if version not in READABLE_FORMATS:
                raise _format_error(self.path, version)

        self.write(check)

    def head(self, txn: ReadTxn) -> tuple[int, int]:
        """``(latest commit timestamp, catalog version)`` as of ``txn`` (read or write).

        Raises :class:`CorruptionError` if the stored head does not decode.
        """
        raw = txn.get(HEAD_KEY, None, self.meta)
        if raw is None:
            return (0, 0)
        try:
            return HEAD.unpack(raw)
        except struct.error:
            raise _damaged_meta("head", raw) from None

    def meta_timestamp(self, txn: ReadTxn, key: bytes) -> int:
        """The big-endian u64 stored in ``meta`` under ``key`` (``log_floor``,
        ``schema_ts``) as of ``txn``, 0 if absent; :class:`CorruptionError` if it is
        not 8 bytes."""
        raw = txn.get(key, None, self.meta)
        if raw is None:
            return 0
        try:
            return int(_U64.unpack(raw)[0])
        except struct.error:
            raise _damaged_meta(key.decode(), raw) from None

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

    def long_indexes(self, txn: ReadTxn) -> frozenset[int]:
        """The numbers of the indexes holding keys past LMDB's key size as of read txn
        ``txn`` (``meta/long_keys``, see :mod:`engine.longkeys`): their ranges are read
        by the scan that expands them. Cost: as :meth:`snapshot_head`, one C call when
        the snapshot is the one seen last.
        """
        txnid = txn.id()
        cached = self.long_cache
        if cached[0] == txnid:
            return cached[1]
        found = frozenset(long_index_counts(txn.get(LONG_KEYS_KEY, None, self.meta)))
        self.long_cache = (txnid, found)
        return found

    def put_head(self, txn: WriteTxn, latest_ts: int, catalog_version: int) -> None:
        """Store the head inside write txn ``txn``."""
        txn.put(HEAD_KEY, HEAD.pack(latest_ts, catalog_version), True, True, False, self.meta)

    def make_durable(self) -> None:
        """Sync the last commit to disk now in ``normal`` mode, where LMDB leaves a
        commit's meta page unsynced until the next commit's sync (a power loss before
        it undoes the commit); nothing in ``full`` mode (already synced) nor ``none``
        (never synced).

        For a commit whose loss would be noticed without any later commit: the
        database's secret, which signs URLs and cursors handed out by queries alone.
        Cost: one ``fdatasync`` of ``data.mdb`` (``env.sync(True)``) in ``normal`` mode.
        Raises :class:`StorageError` if the disk refuses.

        Example::

            storage.write(store_the_secret)
            storage.make_durable()
        """
        if self.durability != "normal":
            return
        try:
            self.env.sync(True)
        except lmdb.Error as error:
            raise _map_error(error, self.path) from error

    @property
    def closed(self) -> bool:
        """True once the last reference is released (the environment is closed)."""
        return self._released

    def forked_away(self, parent: int) -> None:
        """This process is a ``fork()`` child of ``parent``, which opened this storage:
        LMDB forbids using an environment across a fork, so every use from now on
        raises :class:`EngineError` saying so.

        The inherited environment is never closed here: py-lmdb's ``close`` ends the
        transactions it knows of, its cached read txn included, and in the child
        that frees reader slots the parent still reads under. This storage lets go
        of it instead; once nothing refers to it, py-lmdb frees it without a call
        into LMDB (it checks the pid) and forgets its path, so this process can open
        the folder afresh. A transaction the parent had open at the fork keeps it
        alive (the frames of the parent's other threads are never freed here): then
        the folder cannot be opened again in this process.
        """
        self._released = True
        self._gate = Gate()  # the parent's threads' entries would block a resize for ever
        if self._mode_lock is not None:  # its fcntl locks are the parent's; closing it
            self._mode_lock.close()  # later would drop those of the child's own open
        forked = _ForkedEnv(self.path, parent)
        # A transaction of the parent that unwinds here (a fork from inside a query)
        # must not be aborted: py-lmdb's abort resets the reader slot, which is the
        # parent's. It is dropped instead (instance attribute: no cost on the hot path).
        setattr(self, "end_read", _drop_txn)  # noqa: B010
        self.env = forked
        self.meta = self.documents = self.indexes = self.log = self.blobs = forked
        _INHERITED[self.path] = parent

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
            self._released = True
            if _REGISTRY.get(self.path) is self:  # else a fork child's own open of the folder
                del _REGISTRY[self.path]
                _CLOSING[self.path] = self._closed
            return True

    def close_env(self) -> None:
        """Close the environment once this process's transactions end (see :meth:`release`).

        An :func:`open_storage` of the folder waits for this (LMDB refuses a second
        environment on one folder in a process).
        """

        def close() -> None:
            try:
                if self.durability == "none":  # nothing was synced: make the folder safe
                    self.env.sync(True)  # for the processes that sync and open it next
            except lmdb.Error as error:  # EIO, ENOSPC: say where, as every other LMDB error
                raise _map_error(error, self.path) from error
            finally:
                self.env.close()

        def slow(running: int) -> None:
            _log.warning(
                "Closing the database at %r waits for %d transaction%s of other threads, "
                "still open after %g s (a query or mutation blocked in its function, a "
                "backup): the map cannot be closed under them, so the close ends when "
                "they do. Close after the other threads' calls return.",
                self.path,
                running,
                "" if running == 1 else "s",
                SLOW_WAIT,
            )

        try:
            self._gate.exclusive(close, slow, SLOW_WAIT)
        finally:
            if self._mode_lock is not None:
                self._mode_lock.close()
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
        except lmdb.Error as error:  # a damaged page met by a read: say so, with a hint
            raise _map_error(error, self.path) from error
        finally:
            self.end_read(txn)

    def mapped(self, error: BaseException) -> BaseException:
        """The error to raise for ``error``, met in a transaction of this storage: an
        LMDB error becomes a :class:`StorageError` with a hint (a :class:`CorruptionError`
        for a damaged page), caused by it; anything else is returned unchanged."""
        if not isinstance(error, lmdb.Error):
            return error
        mapped = _map_error(error, self.path)
        mapped.__cause__ = error
        return mapped

    def begin_read(self, buffers: bool = False) -> ReadTxn:
        """Open a read txn; pair with :meth:`end_read` (use :meth:`read` if you can).

        Cost: about 0.3 µs (the gate's entry inline, then ``mdb_txn_begin``).
        """
        gate = self._gate
        gate.active.append(None)  # Gate.enter, inline: this runs for every transaction
        if not gate.resizing:
            try:
                return self.env.begin(None, None, False, True) if buffers else self.env.begin()
            except lmdb.Error:
                pass  # handled below, where the map size is adopted or the error mapped
            except BaseException:
                gate.leave()
                raise
        gate.leave()
        checked = False
        while True:
            self._gate.enter()
            try:
                return self.env.begin(None, None, False, buffers)
            except lmdb.MapResizedError:
                self._gate.leave()
                self._adopt_map_size()
            except lmdb.ReadersFullError as error:
                self._gate.leave()
                # Killed processes' slots fill the table: free them, once, and retry.
                if checked or not self._clear_dead_readers_for_read():
                    raise _map_error(error, self.path) from error
                checked = True
            except lmdb.Error as error:
                self._gate.leave()
                raise _map_error(error, self.path) from error

    def end_read(self, txn: ReadTxn) -> None:
        """Close a read txn opened by :meth:`begin_read`."""
        try:
            txn.abort()
        finally:
            gate = self._gate
            gate.active.pop()  # Gate.leave, inline
            if gate.resizing:
                gate.wake_resizer()

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in the single LMDB write txn and commit it; return its result.

        Blocks until this process and every other process holding the writer
        lock is done. If the map fills up, the txn is aborted, the map grows,
        and ``fn`` runs again on a fresh txn: ``fn`` must derive everything
        from the txn it is given. An exception from ``fn`` aborts the txn.
        Cost: the commit's syncs (two fdatasync calls in ``full`` mode).

        Aborts: py-lmdb's ``abort()`` of a write txn waits until no LMDB call of any
        thread of the process is in flight. Threads scanning back to back keep one in
        flight at every moment (so the abort holds new transactions back:
        :meth:`Gate.held_back`), and a backup's copy is one call as long as the
        backup. The abort of a write that found the map full drops the txn instead
        (with the error's traceback, whose frames of ``fn`` refer to it: that error is
        never seen), and py-lmdb aborts a write txn freed so without that wait, so
        LMDB's write lock is let go at once and other processes' writers go on.
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
                except lmdb.MapFullError as error:  # run again below, once the map grew
                    error.__traceback__ = None  # fn's frames, which refer to txn
                    kept = weakref.ref(txn)
                    del txn  # the last reference: py-lmdb aborts it, and does not wait
                    left = kept()
                    if left is not None:  # fn kept it (a cursor, say): abort it here
                        self._gate.held_back(left.abort)
                    raise
                except BaseException:
                    self._gate.held_back(txn.abort)
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
                raise self._write_error(error) from error
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

    def _clear_dead_readers_for_read(self) -> bool:
        """:meth:`clear_dead_readers` for a read that found the table full: True if
        it freed a slot."""
        try:
            return int(self.env.reader_check()) > 0
        except lmdb.Error:
            return False

    def _write_error(self, error: lmdb.Error) -> StorageError:
        """The StorageError for an LMDB error of a write (one the last close ended, too)."""
        if self.closed:
            return StorageError(
                f"The database at {self.path!r} was closed while this write waited: "
                "nothing was written. Close engines after the calls of other threads "
                "return."
            )
        return _map_error(error, self.path)

    def _grow_map(self) -> None:
        """Double the map for a write that found it full (between two of its attempts:
        the environment may have been closed meanwhile, which raises StorageError)."""
        try:
            current = self.map_size

            def grow() -> None:
                if self.map_size == current:  # another thread may have grown it already
                    self.clear_dead_readers()  # their pinned pages may make room too
                    self.env.set_mapsize(current * 2)

            self._gate.exclusive(grow)
        except lmdb.Error as error:
            raise self._write_error(error) from error

    def _adopt_map_size(self) -> None:
        """Another process grew the map: take its size (``set_mapsize(0)``)."""
        try:
            self._gate.exclusive(lambda: self.env.set_mapsize(0))
        except lmdb.Error as error:
            raise _map_error(error, self.path) from error

    def copy_to(self, path: str, made: Sequence[str] = ()) -> int:
        """Write a consistent, compacted copy of the environment to the folder ``path``
        (which must hold no ``data.mdb``: else ``FileExistsError``, and that file is
        left alone); returns the copy's size in bytes.

        The copy is of one snapshot, taken like a read txn (it holds a reader slot and
        a gate entry, so a resize waits for it; writers go on). It is written to
        ``data.mdb.partial`` (:mod:`engine.backupfile`: a second copy into ``path``
        meanwhile raises :class:`~engine.backupfile.BackupInProgress`), synced, named
        ``data.mdb``, and the names synced (the folder, its parent, and the parent of
        each folder the caller made for it, ``made``: see :func:`missing_folders`)
        before this returns: a process killed at any point leaves a whole ``data.mdb``
        or none. On failure the partial file is removed. Cost: one pass over the used
        pages, written sequentially, and the syncs.
        """
        try:
            return self._copy_to(path, made)
        except FileExistsError:
            raise
        except OSError as error:  # the partial file cannot be made, emptied or locked
            raise StorageError(
                f"The backup at {path!r} could not be written ({error.strerror}): nothing "
                "was kept; check the folder's permissions, the device and free space, and "
                "back up again."
            ) from error

    def _copy_to(self, path: str, made: Sequence[str]) -> int:
        """:meth:`copy_to` but for mapping an ``OSError`` of the partial file."""
        with PartialCopy(path) as partial:
            while True:
                self._gate.enter()
                entered = True
                try:
                    self.env.copyfd(partial.fd, compact=True)
                    break
                except lmdb.MapResizedError:
                    self._gate.leave()
                    entered = False
                    self._adopt_map_size()
                    partial.restart()
                except lmdb.Error as error:
                    raise _map_error(error, self.path) from error
                finally:
                    if entered:
                        self._gate.leave()
            # Synced outside the gate: a resize need not wait for the disk.
            try:
                size = partial.publish()
                fsync_entries(path, [os.path.abspath(path), *made])  # data.mdb's, the folders'
            except FileExistsError:
                raise
            except OSError as error:
                if partial.published:
                    _remove_quietly(partial.target)
                raise StorageError(
                    f"The backup at {path!r} could not be synced to disk ({error.strerror}): "
                    "nothing was kept; check the device and free space, and back up again."
                ) from error
        return size


def _open_sub_databases(env: Any, path: str) -> list[Any]:
    """The sub-databases (meta, documents, indexes, log, blobs) of a just-opened
    environment, created if missing, in one write txn that commits only if the folder
    is a convexlite database of this format (or empty).

    Checked before anything is created, so a refused open changes nothing: an LMDB
    database another program wrote (a key of its main database that is none of ours,
    or sub-databases holding data without a format version) and a folder of another
    format version raise :class:`FormatError`. The txn holds LMDB's writer lock: two
    processes opening an older folder at once cannot both create ``blobs``.
    """
    txn = env.begin(None, None, True)
    try:
        cursor = txn.cursor()
        try:
            for key in cursor.iternext(True, False):
                if bytes(key) not in SUB_DATABASES:
                    raise FormatError(
                        f"The folder {path!r} holds an LMDB database that convexlite did "
                        f"not write (its main database has the key {bytes(key)[:40]!r}, "
                        "which is not one of convexlite's sub-databases): nothing was "
                        "changed. Open an empty folder, or one written by convexlite."
                    )
        finally:
            cursor.close()
        dbs = [env.open_db(name, txn) for name in SUB_DATABASES]
        raw = txn.get(_FORMAT_KEY, None, dbs[0])
        if raw is not None:
            version = bytes(raw).decode("ascii", "replace")
            if version not in READABLE_FORMATS:
                raise _format_error(path, version)
        elif any(txn.stat(db)["entries"] for db in dbs):
            raise FormatError(
                f"The folder {path!r} holds an LMDB database with data in sub-databases "
                "named as convexlite's but no format version: convexlite did not write it, "
                "and nothing was changed. Open an empty folder, or one written by convexlite."
            )
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    return dbs


def _check_size(env: Any, path: str) -> None:
    """Refuse a ``data.mdb`` shorter than its newest meta page says (a copy or a download
    cut short, a full disk): LMDB maps the file, and a read of a page past its end would
    kill the process with ``SIGBUS``. Cost: one ``stat``.

    The meta first, the size second: another process may commit in between, and the
    pages of a commit are written before its meta page, so the file then holds every
    page the meta read names (read the other way round, a sound file could look short).
    """
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    if size < needed:
        raise CorruptionError.damaged(
            f"data.mdb is truncated: it holds {size} bytes, but its pages reach byte {needed}",
            "The missing pages cannot be read: restore the folder from a backup "
            "(Engine.backup, or `mdb_copy`).",
        )


def _damaged_meta(name: str, raw: Any) -> CorruptionError:
    problem = f"meta/{name} {bytes(raw)[:40].hex()} does not decode (wrong length)"
    return CorruptionError.damaged(
        problem, "Restore the folder from a backup (Engine.backup, or `mdb_copy`)."
    )


def _format_error(path: str, version: str) -> FormatError:
    return FormatError(
        f"The database at {path!r} has format version {version}, but this "
        f"convexlite reads formats {', '.join(READABLE_FORMATS[:-1])} and "
        f"{READABLE_FORMATS[-1]}: open it with the "
        "convexlite "
        "version that wrote it, or export and re-import the data."
    )


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


_REGISTRY: dict[str, Storage] = {}
#: Folders whose last reference is gone but whose environment is still closing.
_CLOSING: dict[str, threading.Event] = {}
_REGISTRY_LOCK = threading.Lock()
#: Every storage this process opened (to refuse their use in a fork child).
_OPENED: weakref.WeakSet[Storage] = weakref.WeakSet()
#: In a fork child: the folders its parent had open, with the parent's pid.
_INHERITED: dict[str, int] = {}
#: Storages whose transactions :func:`_before_fork` holds back until the fork is done.
_PAUSED: list[Storage] = []
#: How long a fork waits for this process's transactions to end (see _before_fork).
FORK_WAIT = 2.0


def _never() -> bool:
    return False


def _drop_txn(txn: Any) -> None:
    """``end_read`` of a storage a fork child inherited: no LMDB call, no gate."""


class _ForkedEnv:
    """What a fork child sees instead of an LMDB environment its parent opened: any use
    raises, and closing it does nothing (the parent's environment stays as it is)."""

    __slots__ = ("_message",)

    def __init__(self, path: str, parent: int) -> None:
        self._message = (
            f"The database at {path!r} was opened by process {parent}, before this process "
            "forked from it; an LMDB environment cannot be used across fork(): call "
            "Engine.open(path) in the child (or start workers with the 'spawn' or "
            "'forkserver' start method)."
        )

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise EngineError(self._message)


def _before_fork() -> None:
    """Before ``fork()``: hold new transactions back and wait (up to :data:`FORK_WAIT`
    seconds) for the running ones, so that the child inherits no open transaction and
    can open the folder afresh (see :meth:`Storage.forked_away`).

    No wait when the forking thread is itself inside a transaction of the folder (it
    cannot end), nor when a fork waited in vain less than FORK_WAIT ago (a
    ``multiprocessing.Pool`` forks once per worker: a long query costs one wait).
    """
    now = time.monotonic()
    for storage in list(_OPENED):
        if storage._closed.is_set() or storage.in_transaction():
            continue
        if now - storage._fork_waited_in_vain < FORK_WAIT:
            continue
        held, quiet = storage._gate.pause(FORK_WAIT)
        if held:
            _PAUSED.append(storage)
        if not quiet:
            storage._fork_waited_in_vain = time.monotonic()


def _after_fork_in_parent() -> None:
    paused = _PAUSED[:]
    _PAUSED.clear()
    for storage in paused:
        storage._gate.resume()


def _after_fork_in_child() -> None:
    """Forget, in a fork child, every environment the parent opened (see
    :meth:`Storage.forked_away`): the child's own opens get fresh ones."""
    global _REGISTRY_LOCK
    parent = os.getppid()
    _PAUSED.clear()
    for storage in list(_OPENED):
        if not storage._closed.is_set():
            storage.forked_away(parent)
    _OPENED.clear()
    _REGISTRY.clear()
    _CLOSING.clear()
    _REGISTRY_LOCK = threading.Lock()  # a parent thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def open_storage(
    path: str, *, durability: Durability = "full", map_size: int = _INITIAL_MAP_SIZE
) -> Storage:
    """Open (or share) the storage for folder ``path``.

    Raises :class:`StorageError` when LMDB cannot open the folder and
    :class:`EngineError` when this process already has the folder open with
    another durability mode (LMDB's sync flags are per environment).
    """
    if not path:  # realpath("") is the working directory: data.mdb would land there
        raise StorageError(
            "Cannot use '' as a database folder: the path is empty; give the path of a "
            "folder, or of one to create ('./data'; '.' for the working directory)."
        )
    if "\0" in path:  # realpath and LMDB would raise ValueError("embedded null byte")
        raise StorageError(
            f"Cannot use {path!r} as a database folder: it has a NUL byte (at position "
            f"{path.index(chr(0))}), which no file system path may hold; check where the "
            "path was built."
        )
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
