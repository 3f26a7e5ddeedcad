"""Re-runs: one step of the subscription worker.

For a batch of new commits, a step opens one LMDB snapshot at the newest commit ``ts``,
asks the :class:`~engine.intervals.IntervalIndex` which executions hold a read interval
containing a key those commits wrote (all of them after a schema change moved an index,
or after :meth:`~engine.subscriptions.SubscriptionManager.rerun_all`), re-runs exactly
those (and the first runs of executions subscribed since) on that snapshot, and
publishes every changed outcome at that one ``ts``.
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING, Any

from .encoding import decode, encode
from .executions import _NOTHING, _forget_frames

if TYPE_CHECKING:
    from .catalog import Catalog
    from .database import Database
    from .executions import _Watched
    from .intervals import IntervalIndex
    from .subscription import Subscription
    from .subscriptionset import SubscriptionSet

_U64 = struct.Struct(">Q")


class Reruns:
    """The step of :class:`~engine.subscriptionworker.SubscriptionWorker` (which makes the
    state it reads and runs it), as methods of the one manager object: the step reads and
    writes that state under its lock, and a test may replace ``manager._step``."""

    _db: Database
    _lock: threading.Condition
    _watched: dict[Any, _Watched]
    _joined: list[Subscription]
    _index: IntervalIndex
    _wakeup: bool
    ts: int
    _catalog: Catalog | None
    _rerun: bool

    def _step(self, new: list[_Watched]) -> None:
        storage = self._db.storage
        with storage.read() as rtxn:
            latest, version = storage.head(rtxn)
            catalog = self._db.catalog_view(rtxn, version).catalog
            with self._lock:  # the interval index changes under subscribe/close
                if self._indexes_changed(catalog) or self._rerun:
                    self._rerun = False
                    affected = set(self._watched)
                else:
                    affected = self._affected(rtxn, latest)
                self._catalog = catalog
            todo = [w for w in new if w.result is _NOTHING and w.error is None]
            with self._lock:
                todo += [
                    self._watched[k]
                    for k in affected
                    if k in self._watched and self._watched[k] not in todo
                ]
            outcomes = [(w, self._run(w, rtxn)) for w in todo]
        # A stored error's traceback refers to this frame: keep no LMDB txn in it (an
        # ended py-lmdb txn still holds its reader slot and its environment), nor any
        # subscription (one whose handle was dropped would never be let go): they are
        # handled by _publish, whose frame no traceback keeps.
        del rtxn
        self._publish(outcomes, latest)

    def _publish(
        self, outcomes: list[tuple[_Watched, tuple[Any, Any, BaseException | None]]], latest: int
    ) -> None:
        """Publish the outcomes of one step's runs on the snapshot at ``latest``, wake
        the iterations and queue the callbacks."""
        changed: list[tuple[list[Subscription], tuple[Any, BaseException | None]]] = []
        with self._lock:
            # Publish every new result of this snapshot at once, so that readers holding
            # the lock (SubscriptionSet.value) never see two timestamps mixed.
            for watched, outcome in outcomes:
                if self._apply(watched, outcome, latest):
                    watched.version += 1
                    # Who hears of it is decided here, under the lock: a subscription
                    # joining after this point gets the value as a joiner, once; so
                    # does one that joined during this step, if its subscribe() came
                    # after this snapshot (this value is older than the call).
                    hear = []
                    for subscription in watched.live_subscribers():
                        if subscription._since <= latest:
                            hear.append(subscription)
                        elif subscription not in self._joined:  # the next step's value
                            self._joined.append(subscription)
                            self._wakeup = True
                    changed.append((hear, watched.outcome()))
            self.ts = max(self.ts, latest)
            self._lock.notify_all()
        # Iterations read the published values: wake them now, each set once (woken per
        # member, a quick iteration would read the new dict between two wakes and then
        # yield it again). Callbacks run on their own thread: one that waits for
        # something (an app lock held by a thread waiting for these results) holds up
        # neither the worker nor the next mutations' read-your-writes.
        sets: dict[SubscriptionSet, None] = {}
        for subscribers, _ in changed:
            for subscription in subscribers:
                subscription._wake()
                sets.update(dict.fromkeys(subscription._sets))
        for member_of in sets:
            member_of._wake()
        for subscribers, published in changed:
            for subscription in subscribers:
                subscription._deliver(published)

    def _indexes_changed(self, catalog: Catalog) -> bool:
        """True if a table the watched queries may have read changed its indexes.

        A schema change that drops or redefines an index moves its entries to a
        new index number: the read sets recorded under the old one would never be
        hit again, so every watched query re-runs (schema changes are rare). New
        tables need no such care: their creation logs their catalog keys, which
        queries that found them missing have read.
        """
        previous = self._catalog
        if previous is None or previous.version == catalog.version:
            return False
        return any(catalog.tables.get(name) != table for name, table in previous.tables.items())

    def _affected(self, rtxn: Any, latest: int) -> set[Any]:
        """Keys of the watched queries that commits in ``(self.ts, latest]`` touched."""
        storage = self._db.storage
        affected: set[Any] = set()
        if latest <= self.ts or not self._index:
            # Nothing new, or no read set to match: the executions followed have not
            # run yet, and run now on this snapshot (the first subscribe() after a quiet
            # period reads none of the log since).
            return affected
        floor = storage.meta_timestamp(rtxn, b"log_floor")
        if self.ts < floor:
            return set(self._watched)  # history pruned: re-run everything
        cursor = rtxn.cursor(storage.log)
        try:
            if cursor.set_range(_U64.pack(self.ts + 1)):
                for _, value in cursor.iternext():
                    affected |= self._index.stab(decode(value))
        finally:
            cursor.close()
        return affected

    def _run(self, watched: _Watched, rtxn: Any) -> tuple[Any, Any, BaseException | None]:
        """Re-run ``watched`` on snapshot ``rtxn``: (result, read set, error)."""
        return watched.runtime.run_on_snapshot(
            watched.name, watched.function, watched.args, watched.identity, rtxn, watched.journal
        )

    def _apply(
        self, watched: _Watched, outcome: tuple[Any, Any, BaseException | None], ts: int
    ) -> bool:
        """Store a re-run's outcome (the lock is held); True if subscribers must hear of it."""
        result, reads, error = outcome
        watched.ts = ts
        if self._watched.get(watched.key) is watched:
            self._index.add(watched.key, reads.pairs())
        if error is not None:
            _forget_frames(error)
            first = (
                watched.error is None
                or type(watched.error) is not type(error)
                or str(watched.error) != str(error)
            )
            watched.error = error
            watched.error_tb = (error, error.__traceback__)
            watched.result_bytes = None
            return first
        result_bytes = encode(result)
        was_error = watched.error is not None
        watched.error = None
        watched.error_tb = None
        if (
            not was_error
            and watched.result is not _NOTHING
            and result_bytes == watched.result_bytes
        ):
            return False
        watched.result = result
        watched.result_bytes = result_bytes
        watched.published = (result, result_bytes)
        return True
