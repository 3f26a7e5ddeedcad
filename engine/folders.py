"""The database folder's own files: making new names durable, and the lock that keeps
processes that sync and processes that do not off one folder at once.

Used by :mod:`engine.storage` (and the scheduler's lock file, for
:func:`no_locks_error`); nothing here touches LMDB.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time

try:
    import fcntl
except ImportError:  # Windows: no cross-process durability check
    fcntl = None  # type: ignore[assignment]

from .errors import EngineError, StorageError

__all__ = [
    "ModeLock",
    "fsync_entries",
    "fsync_path",
    "missing_folders",
    "no_locks_error",
    "sync_new_entries",
]

_log = logging.getLogger("engine.storage")  # what these say is about the storage's folder


def fsync_path(path: str, *, folder: bool = False) -> None:
    """``fsync`` a file or a folder (a folder's sync makes the entries in it durable;
    skipped where a folder cannot be opened, on Windows or without read permission, or
    cannot be synced: ``EINVAL``)."""
    flags = os.O_RDONLY
    if folder:
        if not hasattr(os, "O_DIRECTORY"):
            return
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(path, flags)
    except PermissionError:
        if folder:  # a parent this process may write but not read: best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError as error:
        if not folder or error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def missing_folders(path: str) -> list[str]:
    """The folders ``os.makedirs(path)`` would make, ``path`` first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def fsync_entries(path: str, made: list[str]) -> None:
    """Make durable the names in folder ``path`` and those of the folders ``made`` (each
    in its parent); raises ``OSError``."""
    fsync_path(path, folder=True)
    for parent in dict.fromkeys(os.path.dirname(folder) for folder in made):
        fsync_path(parent, folder=True)


def sync_new_entries(path: str, made: list[str]) -> None:
    """Make a new database's names durable: LMDB syncs ``data.mdb`` at each commit, but
    not the folder naming it, nor the parents naming the folders this open made (a power
    loss could take them, with every acknowledged commit). Once per new folder or file;
    raises :class:`StorageError` if the disk refuses."""
    try:
        fsync_entries(path, made)
    except OSError as error:
        raise StorageError(
            f"Cannot sync the new database folder {path!r} ({error.strerror}): check the "
            "device, or open it with durability='none' where power loss does not matter."
        ) from error


class ModeLock:
    """Keeps processes with and without syncing off one folder at once.

    LMDB's sync flags are per process, and a process that never syncs
    (``durability="none"``) rewrites pages that the last synced commit of a ``full``
    process still needs: a power loss then loses that process's acknowledged writes
    and can leave the file unreadable. Each process holds a shared ``fcntl`` lock on
    one byte of ``durability.lock`` in the folder (byte 0 for ``full`` and ``normal``,
    byte 1 for ``none``) and checks that nobody holds the other byte; an open that
    finds the other kind raises :class:`EngineError`. Two opens racing may both be
    refused, never both admitted. Cost: an ``open`` and three ``fcntl`` calls per
    open of the folder. Without ``fcntl`` (Windows) nothing is checked.
    """

    __slots__ = ("_fd",)

    def __init__(self, path: str, durability: str) -> None:
        self._fd: int | None = None
        if fcntl is None:
            return
        mine, other = (1, 0) if durability == "none" else (0, 1)
        name = os.path.join(path, "durability.lock")
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError as error:
            # A folder shared with other users may let LMDB write its files and still
            # refuse a new one here: open anyway, unchecked, and say so.
            _log.warning(
                "Cannot open %r (%s): durability modes are not checked across processes "
                "for %r; create the file with write access for every user of the folder.",
                name,
                error.strerror,
                path,
            )
            return
        except OSError as error:
            raise StorageError(
                f"Cannot open {name!r} ({error.strerror}): the database folder must be "
                "writable by this process (LMDB's lock.mdb beside it too); check its "
                "permissions and owner."
            ) from error
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, mine)  # waits out another open's probe
            except OSError as error:
                raise no_locks_error(name, error) from error
            if not self._probe(fd, other, name):
                theirs = "none" if durability != "none" else "full or normal"
                raise EngineError(
                    f"{path!r} is open in another process with durability={theirs}, and "
                    f"this open asks for durability={durability!r}: a process that does "
                    "not sync can make the synced writes of another one unrecoverable "
                    "after a power loss. Open every process with durability='none' (tests, "
                    "bulk loads) or none with it."
                )
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _probe(fd: int, byte: int, name: str) -> bool:
        """True if no other process holds a lock on ``byte``: an exclusive lock on it
        is taken and dropped at once. Opens of the same mode probe the same byte, so a
        failure is retried for up to a second (theirs last microseconds; a holder of
        the other mode holds it for as long as its engine is open)."""
        assert fcntl is not None
        for _ in range(200):
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):  # held: try again
                    raise no_locks_error(name, error) from error
                time.sleep(0.001 + 0.004 * random.random())
                continue
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)
            return True
        return False

    def close(self) -> None:
        """Release the lock (closing the file drops this process's locks on it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def no_locks_error(name: str, error: OSError) -> StorageError:
    """The error of an open that cannot lock ``name`` (``durability.lock``,
    ``scheduler.lock``): ``ENOLCK`` and the like, on a file system without locks."""
    return StorageError(
        f"Cannot lock {name!r} ({error.strerror}): the file system does not support file "
        "locks (an NFS or FUSE mount?), which LMDB needs as well: put the database folder "
        "on a local disk."
    )
