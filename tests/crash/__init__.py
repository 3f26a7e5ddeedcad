"""Crash tests: a child process writes, the parent SIGKILLs it and reopens the folder."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


#: The first line a worker prints, once Python and the engine are imported.
STARTED = "started"


def kill_worker_after(delay: float, *args: str, after: str = STARTED) -> str:
    """Run ``python -m tests.race.workers *args``, SIGKILL it ``delay`` seconds after it
    printed the line ``after`` (:data:`STARTED` unless told), and return what it printed
    after that (each line an acknowledgement); fails on a traceback.

    The delay counts from the worker's start line, not from its launch: starting Python
    and importing the engine takes a machine-dependent while (0.49-0.55 s for
    ``python -c "import tests.race.workers"`` on a slow 2-core machine), and a kill
    timed from the launch (0.45-0.7 s, as the file crash test had it) could land before
    the first write, leaving nothing tested. From the start line the kill lands in
    ``Engine.open`` (and its recovery from the last kill) or in the writes after it,
    as the delay says, on any machine.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.race.workers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    # Read the start line from the pipe itself (not a buffered file object, whose
    # buffer communicate() would skip): what follows it in the same read is kept.
    head = b""
    deadline = time.monotonic() + 120
    try:
        marker = b"\n" + after.encode() + b"\n"
        while marker not in b"\n" + head:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([child.stdout], [], [], left)
            chunk = os.read(child.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                break
            head += chunk
        _, found, rest = (b"\n" + head).partition(marker)
        if not found:
            child.kill()
            out, err = child.communicate(timeout=30)
            raise AssertionError(
                f"the worker did not print {after!r} within 120 s: "
                f"stdout {(head + out).decode()!r}, stderr:\n{err.decode()}"
            )
        time.sleep(delay)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode()
    return (rest + out).decode()
