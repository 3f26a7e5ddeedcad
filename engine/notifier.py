"""The notifier: what wakes the iterations of subscriptions and sets (``for`` and
``async for``) when the worker publishes, and what they raise once following stopped.

:class:`~engine.subscription.Subscription` and
:class:`~engine.subscriptionset.SubscriptionSet` are notifiers: each says what its
published outcome is (``_current``), this class turns that into iterations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .errors import EngineError


def _worker_failed(
    error: BaseException, what: str = "The subscription worker failed"
) -> EngineError:
    failure = EngineError(
        f"{what} ({type(error).__name__}: {error}); this "
        "subscription no longer follows its query. Subscribe again."
    )
    failure.__cause__ = error
    return failure


#: (the version of a published outcome, a function giving its value or raising its error)
_Versioned = tuple[Any, Callable[[], Any]]


class _Notifier:
    """Wakes blocked iterators (threads) when new values are published."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Counts the wake-ups: each iteration waits for one it has not seen (a shared
        #: flag, cleared by the first iteration to wake, left the others asleep).
        self._wakes = 0
        self._closed = False
        #: Why the subscriptions stopped, if their worker failed or a callback raised
        #: what is not an Exception (iteration raises it), and which of the two it was.
        self._failure: BaseException | None = None
        self._failed = "The subscription worker failed"
        #: Why this subscription ended (its token expired): ``.value`` and iteration raise it.
        self._ended: BaseException | None = None
        #: The version of the last failed outcome an iteration raised: a new iteration
        #: waits for the next outcome rather than raise it again (see _follow).
        self._raised: Any = None
        #: The event loops of ``async for`` iterations, and the event each waits on.
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def _raise_if_stopped(self) -> None:
        """Raise why following stopped: the worker failed, or the token expired."""
        if self._failure is not None:
            raise _worker_failed(self._failure, self._failed)
        if self._ended is not None:
            raise self._ended.with_traceback(None)

    def _wake(self) -> None:
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()
        for loop, event in list(self._async_waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed
                pass

    def _current(self) -> _Versioned:
        """The version of what was published, and a function giving the value (or
        raising the error), read together."""
        raise NotImplementedError

    def _follow(self, current: Callable[[], _Versioned]) -> Iterator[Any]:
        """The value now, then again after each wake-up that brought a new one, until
        closed. ``current()`` gives the version of what was published and a function
        giving the value (or raising the error), read together: a wake-up for a value
        already yielded (read early, when the commit that woke us had already been
        followed by another) yields nothing.

        A closed notifier yields nothing; one whose worker failed raises.
        """
        with self._cond:
            woken = self._wakes
        self._raise_if_stopped()  # the worker failed, or the token expired, before this began
        if self._closed:
            return
        seen, value = current()
        if seen != self._raised:
            yield self._iterated(seen, value)
        while True:
            with self._cond:
                while self._wakes == woken and not self._closed:
                    self._cond.wait()
                woken = self._wakes
            self._raise_if_stopped()
            if self._closed:
                return
            version, value = current()
            if version != seen:
                seen = version
                yield self._iterated(version, value)

    def _iterated(self, version: Any, value: Callable[[], Any]) -> Any:
        """``value()``; if it raises (the query failed), note ``version`` as raised.

        An iteration that begins on a failed outcome another iteration already raised
        skips it and waits for the next one: so the retry loop the docs suggest
        (``while True: try: for v in sub: ... except ...``) blocks until a commit
        changes the outcome, instead of raising the same error again at full speed.
        ``.value`` still raises it every time.
        """
        try:
            return value()
        except BaseException:
            self._raised = version
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[Any]:
        """:meth:`_follow` for ``async for``: it waits on an :class:`asyncio.Event` of the
        iterating loop, which :meth:`_wake` sets from the worker's thread."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        self._async_waiters.append(waiter)
        try:
            self._raise_if_stopped()
            if self._closed:
                return
            seen, value = self._current()
            if seen != self._raised:  # else an error an iteration raised: see _iterated
                yield self._iterated(seen, value)
            while not self._closed:
                await event.wait()
                event.clear()
                self._raise_if_stopped()
                if self._closed:
                    return
                version, value = self._current()
                if version != seen:  # else woken for a value already yielded
                    seen = version
                    yield self._iterated(version, value)
            self._raise_if_stopped()  # ended while the value was being consumed
        finally:
            self._async_waiters.remove(waiter)

    def _fail(self, error: BaseException, what: str) -> None:
        """End iterations with ``error`` (``what``: the worker died, or a callback raised
        what is not an Exception)."""
        self._failure = error
        self._failed = what
        self._closed = True
        self._wake()

    def _end(self, error: BaseException) -> None:
        """Stop following because ``error`` (the token expired); ``.value`` raises it."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
