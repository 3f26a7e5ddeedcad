"""`make demo` keeps working: the example app runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.chat"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "tampered token refused: InvalidSignature" in result.stdout
    assert "page 3: 5 messages" in result.stdout
    assert "scheduled reminder ran: job state {'kind': 'success'}" in result.stdout
    assert "cron 'refresh topics' ran: #general topic '27 messages'" in result.stdout
    assert "full-text search for 'stand' in #general: ['[reminder] stand-up in 5']" in (
        result.stdout
    )
    assert (
        "vector search near 'reminder: stand-up' in #general: '[reminder] stand-up in 5' first"
        in result.stdout
    )
    assert "downloaded over HTTP from http://127.0.0.1:" in result.stdout
    assert "'agenda: ship it'" in result.stdout
    assert "HTTP action POST /channels/general/messages: 201, 'posted over HTTP' by Grace" in (
        result.stdout
    )
    assert "Engine.check(): ok" in result.stdout
    assert "Engine.backup(): a " in result.stdout and "checks ok" in result.stdout
