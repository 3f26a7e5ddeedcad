"""Executions: one run of a subscribed query shared by every identical subscription (same
function, arguments and identity), with its last published result or error.

Identical subscriptions share one execution, and so one result object: each reader gets
a copy of its own (:meth:`_Watched.copy_of`), decoded from the stored bytes.
"""

from __future__ import annotations

import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .encoding import decode, encode
from .subscription import _Entry, _live

if TYPE_CHECKING:
    from .functions import FunctionDef, Runtime
    from .subscription import Subscription

#: An execution's result before its first run.
_NOTHING: Any = object()


def _forget_frames(error: BaseException) -> None:
    """Clear the locals of the finished frames in ``error``'s tracebacks (and its
    causes'): a stored error kept the snapshot's LMDB txn alive through them, holding a
    reader slot per failing subscription (1,022 filled the table) and the environment
    (a fork child could not reopen the folder). File names and lines stay."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        if current.__traceback__ is not None:
            # A finished frame links to its caller's frame (f_back): the re-run's
            # callers, whose locals held the txn. Frames still running are skipped.
            frame = current.__traceback__.tb_frame.f_back
            while frame is not None:
                try:
                    frame.clear()
                except RuntimeError:
                    pass
                frame = frame.f_back
        current = current.__cause__ or current.__context__


class _Watched:
    """One shared execution: a query, its arguments and identity, and its last result."""

    __slots__ = (
        "args",
        "error",
        "error_tb",
        "function",
        "identity",
        "journal",
        "key",
        "name",
        "published",
        "result",
        "result_bytes",
        "runtime",
        "subscribers",
        "ts",
        "version",
    )

    def __init__(
        self,
        key: Any,
        runtime: Runtime,
        name: str,
        function: FunctionDef,
        args: dict[str, Any],
        identity: Any,
    ) -> None:
        self.key = key
        self.runtime = runtime
        self.name = name
        self.function = function
        self.args = args
        self.identity = identity
        self.journal: dict[str, Any] = {}
        self.result: Any = _NOTHING
        self.result_bytes: bytes | None = None
        #: (result, its bytes), replaced as one: what copy_of reads from other threads.
        self.published: tuple[Any, bytes] | None = None
        self.error: BaseException | None = None
        #: The stored error and the traceback it had when the query raised it.
        self.error_tb: tuple[BaseException, TracebackType | None] | None = None
        self.ts = 0
        #: Counts the outcomes published (a new result or error), for iterations.
        self.version = 0
        #: Who follows this execution, as the manager holds them (see :data:`_Entry`).
        self.subscribers: list[_Entry] = []

    def live_subscribers(self) -> list[Subscription]:
        """The subscriptions following this execution, those let go left out."""
        return [s for s in map(_live, self.subscribers) if s is not None]

    def detached(self) -> _Watched:
        """A copy of the published outcome that no worker updates (the lock is held):
        what a closed subscription keeps."""
        kept = _Watched(self.key, self.runtime, self.name, self.function, self.args, self.identity)
        kept.result, kept.result_bytes, kept.published = (
            self.result,
            self.result_bytes,
            self.published,
        )
        kept.error, kept.error_tb, kept.ts, kept.version = (
            self.error,
            self.error_tb,
            self.ts,
            self.version,
        )
        return kept

    def copy_of(self, result: Any) -> Any:
        """A copy of ``result`` (a value this execution published) that nothing else
        holds: decoded from the stored bytes while they are ``result``'s (any thread)."""
        if type(result) not in (dict, list):
            return result  # immutable
        published = self.published  # one read: the worker replaces the pair as one
        if published is not None and published[0] is result:
            return decode(published[1])
        return decode(encode(result))

    def outcome(self) -> tuple[Any, BaseException | None]:
        """The published result, or the error (with the query's traceback)."""
        error = self.failure()
        return (None, error) if error is not None else (self.result, None)

    def failure(self) -> BaseException | None:
        """The stored error, its traceback set back to the query's own: raising one
        exception object again adds the raiser's frames to its traceback, so every read
        of a failing subscription grew the stored chain (and kept the readers' frames
        and locals alive)."""
        error = self.error
        if error is None:
            return None
        pair = self.error_tb
        return error.with_traceback(pair[1] if pair is not None and pair[0] is error else None)
