"""Crash tests: a child process writes, the parent SIGKILLs it and reopens the folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kill_worker_after(delay: float, *args: str) -> str:
    """Run ``python -m tests.race.workers *args`` for ``delay`` seconds, SIGKILL it,
    and return what it printed (each line an acknowledgement); fails on a traceback."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.race.workers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert "Traceback" not in err, err
    return out
