"""The subscription set: several queries followed together, seen at one commit timestamp."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .notifier import _Notifier, _Versioned

if TYPE_CHECKING:
    from .subscription import Subscription
    from .subscriptions import SubscriptionManager


class SubscriptionSet(_Notifier):
    """Several queries watched together, always seen at one commit timestamp.

    ``.value`` is a dict of the queries' newest results, all computed on the
    same snapshot; iteration (``for`` or ``async for``) yields such a dict first and
    after each change, until the set is closed.

    Example::

        with engine.subscribe_set({"me": ("users:me", {}),
                                   "inbox": ("messages:inbox", {})}) as live:
            for state in live:
                render(state["me"], state["inbox"])
    """

    def __init__(self, manager: SubscriptionManager, members: dict[str, Subscription]) -> None:
        super().__init__()
        self._manager = manager
        self._members = members
        #: The timestamp the members' kept values are at, once closed (see close).
        self._closed_ts: int | None = None
        for subscription in members.values():
            subscription._sets.append(self)
        manager._track(self)

    @property
    def value(self) -> dict[str, Any]:
        """Every member's newest result, from one snapshot (raises a member's error)."""
        self._raise_if_stopped()
        with self._manager._lock:  # one snapshot; the copies are made outside the lock
            published = {name: sub._published() for name, sub in self._members.items()}
        return {name: self._members[name]._mine(r) for name, r in published.items()}

    @property
    def ts(self) -> int:
        """The commit timestamp the values are consistent at (once closed, that of the
        values the members keep: it no longer moves with other subscriptions)."""
        closed_ts = self._closed_ts
        return self._manager.ts if closed_ts is None else closed_ts

    def close(self) -> None:
        """Close every member. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Under one lock, so that the results the members keep are of one snapshot.
        members = [s for s in self._members.values() if not s._closed]
        for subscription in members:
            subscription._closed = True
        self._closed_ts = self._manager._unsubscribe(*members)
        for subscription in members:
            subscription._wake()
        self._wake()

    def _end(self, error: BaseException) -> None:
        """A member's token expired: the set ends with its error (members share a token)."""
        if not self._closed:
            self._ended = error
            self.close()

    def _current(self) -> _Versioned:
        """The members' versions and a function giving their values (or raising a
        member's error), read together under the manager's lock."""
        with self._manager._lock:
            version = tuple(sub._watched.version for sub in self._members.values())
            try:
                published = {name: sub._published() for name, sub in self._members.items()}
            except Exception as error:
                failure = error

                def fail() -> Any:
                    raise failure

                return version, fail
        members = self._members
        return version, lambda: {name: members[name]._mine(r) for name, r in published.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._follow(self._current)
