"""The scheduler lock: tells whether an executor is alone on its folder, and then fails
the actions left ``inProgress`` by dead ones.

Every executor holds a shared ``flock`` on ``<folder>/scheduler.lock``. When an executor
starts and can take that lock exclusively, no other executor is alive on the folder, so
every job left ``inProgress`` belonged to a dead one: it is marked ``failed`` with
Convex's "Transient error while executing action" (in batches of :data:`_ORPHAN_BATCH`
per transaction), and so is every cron's run left under way. While another executor is
alive nothing can be told, and such jobs stay ``inProgress`` until a later start finds
itself alone.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from .errors import StorageError
from .folders import no_locks_error
from .query import Query
from .runs import _TRANSIENT
from .scheduler import BY_STATE, PAGE_BYTES, SCHEDULED_FUNCTIONS, fitting, now_ms, patch_job

if TYPE_CHECKING:
    from .database import Database
    from .transaction import Transaction

__all__ = ["take_lock"]

#: Orphaned actions failed per transaction on start (a transaction's reads and writes
#: are limited: thousands of orphans are failed in several transactions).
_ORPHAN_BATCH = 256


def take_lock(db: Database) -> int | None:
    """Open ``<folder>/scheduler.lock`` and hold a shared ``flock`` on it; returns the
    descriptor (closing it releases the lock), or None where there is no ``flock``. Taken
    exclusively first: if that succeeds no other executor is alive on the folder, and
    every orphaned action is failed (:func:`_fail_orphans`) before the lock is shared."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): orphans cannot be told, none is failed
        return None
    path = os.path.join(db.storage.path, "scheduler.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StorageError(
            f"Cannot open the scheduler's lock file {path!r}: {error}. The engine keeps it "
            "beside the database to tell live executors from dead ones: make the folder "
            "writable, or open the engine without functions."
        ) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):  # else: another holds it
            os.close(fd)
            raise no_locks_error(path, error) from error
        alone = False
    else:
        alone = True
    try:
        if alone:
            _fail_orphans(db)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # converts an exclusive lock; waits for one
        except OSError as error:
            raise no_locks_error(path, error) from error
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fail_orphans(db: Database) -> None:
    """Fail every job left ``inProgress``, :data:`_ORPHAN_BATCH` per transaction."""

    def fail(txn: Transaction) -> int:
        if txn.table(SCHEDULED_FUNCTIONS) is None:
            return 0
        stuck = (
            Query(txn, SCHEDULED_FUNCTIONS)
            .with_index(BY_STATE, lambda q: q.eq("state.kind", "inProgress"))
            .paginate({"numItems": _ORPHAN_BATCH, "cursor": None, "maximumBytesRead": PAGE_BYTES})
        )["page"]
        for job in stuck:
            patch_job(
                txn,
                job["_id"],
                {
                    "state": fitting(job, _TRANSIENT),  # a job from before its room was kept
                    "completedTime": now_ms(),
                },
            )
        return len(stuck)

    while db.run(fail, writable=True, source="scheduler recovery")[0]:
        pass  # each batch leaves inProgress: the next one starts at the front again
    from .cronruns import fail_orphaned_crons

    db.run(fail_orphaned_crons, writable=True, source="scheduler recovery")
