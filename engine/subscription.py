"""The subscription: the handle a caller holds on one followed query (``.value``,
iteration, async iteration, a callback, ``close()``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from .notifier import _Notifier, _Versioned

if TYPE_CHECKING:
    from .executions import _Watched
    from .subscriptions import SubscriptionManager
    from .subscriptionset import SubscriptionSet

#: How the manager holds a subscription: the object itself when it has a callback (it is
#: followed for the callback's sake, kept handle or not), else a weak reference (a handle
#: dropped without close() is let go: see SubscriptionManager._let_go).
_Entry: TypeAlias = "Subscription | weakref.ReferenceType[Subscription]"

_log = logging.getLogger("convexlite.subscriptions")


def _live(entry: _Entry) -> Subscription | None:
    """The subscription ``entry`` holds (None: its handle was dropped and collected)."""
    return entry if type(entry) is Subscription else entry()  # type: ignore[operator]


class Subscription(_Notifier):
    """A live query result: ``.value``, iteration, async iteration, ``close()``.

    Iteration yields the current value first, then each changed value; it
    ends when the subscription is closed. A slow consumer sees the newest
    value, not every intermediate one. If a re-run raises, iteration raises
    that error (and ``.value`` does too) until a later commit fixes the data;
    iterate again to keep following it: a new iteration does not raise again an
    error an iteration already raised, it waits for the next outcome.

    Example::

        with engine.subscribe("messages:list", {"channel": "general"}) as sub:
            for messages in sub:
                render(messages)
    """

    def __init__(
        self,
        manager: SubscriptionManager,
        watched: _Watched,
        callback: Callable[[Any], None] | None,
        on_error: Callable[[BaseException], None] | None,
    ) -> None:
        super().__init__()
        self._manager = manager
        self._watched = watched
        self._callback = callback
        self._on_error = on_error
        self._sets: list[SubscriptionSet] = []
        #: True once a value or error was delivered (a joiner's first value is sent once).
        self._delivered = False
        #: Seconds the subscription's token has left (raises once none): see Engine.subscribe.
        self._expiry: Callable[[], float] | None = None
        #: (a published result, this subscription's own copy of it): see _mine.
        self._copy: tuple[Any, Any] | None = None
        #: The head's commit timestamp when subscribe() was called: results of older
        #: snapshots are not for it (it may join while the worker re-runs on one).
        self._since = 0
        #: The manager's weak reference to this subscription, if it has no callback.
        self._ref: weakref.ReferenceType[Subscription] | None = None

    def _entry(self) -> _Entry:
        """How the manager holds this subscription (see :data:`_Entry`)."""
        ref = self._ref
        return self if ref is None else ref

    def _mine(self, result: Any) -> Any:
        """This subscription's own copy of the published ``result`` for ``.value`` and
        iterations, made once per result (callbacks get copies of their own).

        Identical subscriptions share one execution, and so one result object: handed
        out as is, a caller sorting ``value["page"]`` in place changed what every other
        subscriber (and a later ``.value``) saw. Cost: one decode of the stored result
        per result and subscription that reads it.
        """
        copy = self._copy
        if copy is not None and copy[0] is result:
            return copy[1]
        mine = self._watched.copy_of(result)
        self._copy = (result, mine)
        return mine

    def _published(self) -> Any:
        """The newest result as published (shared: not for handing out), or raise."""
        self._raise_if_stopped()
        watched = self._watched
        error = watched.failure()
        if error is not None:
            raise error
        return watched.result

    @property
    def value(self) -> Any:
        """The newest result (raises the newest error if the last run failed, and
        ``EngineError`` if the subscription worker failed: the value is stale)."""
        return self._mine(self._published())

    @property
    def ts(self) -> int:
        """The commit timestamp of the snapshot the newest result was computed at."""
        return self._watched.ts

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop following the query. Idempotent; ends running iterations."""
        if self._closed:
            return
        self._closed = True
        self._manager._unsubscribe(self)
        self._wake()

    def _fail(self, error: BaseException, what: str) -> None:
        self._manager._unsubscribe(self)
        super()._fail(error, what)

    def _end(self, error: BaseException) -> None:
        """The token expired (on the worker): unsubscribe, tell ``on_error``, wake iterations."""
        if self._closed:
            return
        self._ended = error
        self._closed = True
        self._manager._unsubscribe(self)
        on_error = self._on_error
        if on_error is not None:
            self._manager._callbacks_later(lambda: self._tell(on_error, error))
        self._wake()
        for member_of in self._sets:
            member_of._end(error)

    def _tell(self, function: Callable[[Any], None], value: Any) -> None:
        """Run one callback (on the callback thread), logging what it raises."""
        try:
            function(value)
        except Exception:
            # A failing callback must not stop the deliveries of every other subscription.
            _log.exception("subscription callback for %s raised", self._watched.name)

    def _deliver(self, outcome: tuple[Any, BaseException | None]) -> None:
        """Called by the worker once ``outcome`` (a result, or an error with the
        query's traceback) was published for this subscription: its callback or
        ``on_error`` hears of it on the callback thread, in order, with that very
        outcome (a later one may be published meanwhile: each is heard of once)."""
        if self._closed:
            return
        self._delivered = True
        result, error = outcome
        if error is None:
            callback = self._callback
            if callback is not None:
                watched = self._watched
                self._manager._callbacks_later(
                    lambda: self._callback_now(callback, result, watched.copy_of)
                )
            return
        on_error = self._on_error
        if on_error is not None:
            pair = self._watched.error_tb  # the query's traceback (a raise adds to it)
            tb = pair[1] if pair is not None and pair[0] is error else None
            self._manager._callbacks_later(
                lambda: self._callback_now(on_error, error.with_traceback(tb))
            )

    def _callback_now(
        self,
        function: Callable[[Any], None],
        value: Any,
        copy: Callable[[Any], Any] | None = None,
    ) -> None:
        """Run a callback (on the callback thread) unless the subscription closed
        meanwhile; ``copy``: give it its own copy of ``value``, made only now."""
        if not self._closed:  # closed by an earlier callback: it hears nothing more
            self._tell(function, value if copy is None else copy(value))

    def _current(self) -> _Versioned:
        """The version of the published outcome, and a function giving its value (or
        raising its error), read together under the manager's lock."""
        with self._manager._lock:
            watched = self._watched
            version, error, result = watched.version, watched.failure(), watched.result
        if error is not None:

            def fail() -> Any:
                raise error

            return version, fail
        return version, lambda: self._mine(result)

    def __iter__(self) -> Iterator[Any]:
        return self._follow(self._current)
