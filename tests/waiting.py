"""Waiting for a condition instead of sleeping a fixed time (which a slow machine outlasts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, describe: Callable[[], Any] | None = None
) -> float:
    """Poll ``predicate`` every 2 ms until it is true; return the seconds it took.

    Raises AssertionError after ``timeout`` seconds, with ``describe()`` (the state
    that was waited on) in the message when given.
    """
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            detail = "" if describe is None else f": {describe()!r}"
            raise AssertionError(f"condition not met in time{detail}")
        time.sleep(0.002)
    return time.monotonic() - start
