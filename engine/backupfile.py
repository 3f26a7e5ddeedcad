"""The file a backup is written to: ``data.mdb.partial``, named ``data.mdb`` once whole.

A backup (:meth:`engine.Engine.backup`) writes its copy under
:data:`PARTIAL_NAME` and gives it the name ``data.mdb`` only once it is complete and
synced, so a backup killed midway (SIGKILL, power loss) never leaves a cut-short
``data.mdb`` that an open would take for a database. While a backup writes, it holds
an exclusive ``flock`` on its partial file: a second backup into the same folder
refuses (:class:`BackupInProgress`), and a partial file nobody holds is a killed
backup's leftover, written over by the next backup there. :func:`unfinished_backup`
lets an open refuse a folder that holds only such a leftover, and
:func:`drop_leftover_name` lets it drop a partial name left beside the copy it became.

The final name is given by ``os.link``, which fails if ``data.mdb`` exists, so a copy
another backup finished meanwhile is never replaced; where the file system has no
hard links, ``os.rename`` after a check (which a racing backup could slip between).
"""

from __future__ import annotations

import errno
import os
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows: no lock; two backups into one folder are not detected
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PARTIAL_NAME",
    "BackupInProgress",
    "PartialCopy",
    "drop_leftover_name",
    "unfinished_backup",
]

#: The name of a backup's copy until it is complete and synced.
PARTIAL_NAME = "data.mdb.partial"

#: ``os.link`` errors that mean "no hard links here" (FAT, some network file systems).
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.EMLINK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}
)


class BackupInProgress(FileExistsError):
    """Another backup (of this process or another) is writing into the folder."""


def unfinished_backup(folder: str) -> bool:
    """Whether ``folder`` holds a backup's partial file and no ``data.mdb``: a backup
    killed midway (or one still running). Cost: two ``stat`` calls."""
    return os.path.exists(os.path.join(folder, PARTIAL_NAME)) and not os.path.exists(
        os.path.join(folder, "data.mdb")
    )


def drop_leftover_name(folder: str) -> bool:
    """Remove ``folder``'s ``data.mdb.partial`` if it is a second name of its ``data.mdb``
    that no backup holds: what a backup killed between naming its copy and dropping the
    partial name leaves. Returns whether it did. Cost: two ``stat`` calls (plus an
    ``open`` and an ``flock`` when there is such a name).

    Anything else under the partial name (another file, or a name a running backup
    holds locked and is about to drop) is left alone.
    """
    partial = os.path.join(folder, PARTIAL_NAME)
    database = os.path.join(folder, "data.mdb")
    try:
        if not os.path.samestat(os.stat(partial), os.stat(database)):
            return False
        fd = os.open(partial, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # no partial file (the common case), or none we can read
        return False
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(database)):
            return False  # the names moved meanwhile
        os.remove(partial)
        return True
    except OSError:  # held by a backup (it drops the name itself), or moved meanwhile
        return False
    finally:
        os.close(fd)


class PartialCopy:
    """``data.mdb.partial`` in ``folder``, opened, emptied and locked for one backup.

    Use as a context manager: on entry the file is taken (raises
    :class:`BackupInProgress` if another backup holds it, ``FileExistsError`` if the
    folder has a ``data.mdb``); write the copy to :attr:`fd`, then :meth:`publish`.
    Leaving without a publish removes the partial file. Cost: an ``open``, an
    ``flock`` and a few ``stat`` calls.

    Example::

        with PartialCopy(folder) as partial:
            env.copyfd(partial.fd)
            size = partial.publish()
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, PARTIAL_NAME)
        self.target = os.path.join(folder, "data.mdb")
        self.fd = -1
        #: Whether :meth:`publish` gave the copy its name (a failure after that is the
        #: caller's to undo: the copy is then ``data.mdb``).
        self.published = False

    def __enter__(self) -> PartialCopy:
        self.fd = self._take()
        try:
            if os.path.exists(self.target):
                # A copy is already there (another backup finished since the caller's
                # check): leave it alone, and the partial file too if it is its other name.
                if os.fstat(self.fd).st_nlink == 1:
                    os.remove(self.path)  # locked by us: no other backup's file
                raise FileExistsError(errno.EEXIST, "a copy is already there", self.target)
        except BaseException:
            os.close(self.fd)
            raise
        try:
            self.restart()
        except BaseException:
            self.__exit__(None, None, None)  # ours alone (see _take): removed
            raise
        return self

    def _take(self) -> int:
        """Open and lock the partial file, made fresh if a stale one has other names."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise BackupInProgress(
                            errno.EEXIST, "another backup is writing here", self.path
                        ) from None
                mine = os.fstat(fd)
                try:
                    named = os.path.samestat(mine, os.stat(self.path))
                except FileNotFoundError:
                    named = False
                if named and mine.st_nlink > 1:
                    # A killed backup linked it as data.mdb, which was then moved away:
                    # emptying it would empty that file. Drop this name, make a new one.
                    os.remove(self.path)
                    named = False
            except BaseException:
                os.close(fd)
                raise
            if named:
                return fd
            os.close(fd)  # the name moved on (a backup published it meanwhile): again

    def restart(self) -> None:
        """Empty the file and write from its start (a copy begun again)."""
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def publish(self) -> int:
        """Sync the copy and name it ``data.mdb``; returns its size in bytes. The
        folder's entries are not synced here (the caller syncs them with its parents'.)

        Raises ``FileExistsError`` if a ``data.mdb`` appeared meanwhile (it is left
        alone), ``OSError`` if the disk refuses.
        """
        os.fsync(self.fd)
        size = os.fstat(self.fd).st_size
        try:
            os.link(self.path, self.target)
        except FileExistsError:
            raise
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
            if os.path.exists(self.target):
                raise FileExistsError(
                    errno.EEXIST, "a copy is already there", self.target
                ) from None
            os.rename(self.path, self.target)
            self.published = True
        else:
            self.published = True
            os.remove(self.path)
        return size

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if not self.published:
                try:
                    os.remove(self.path)  # locked by us: no other backup's file
                except OSError:
                    pass
        finally:
            os.close(self.fd)  # releases the lock
