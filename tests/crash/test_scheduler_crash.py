"""Crash test: SIGKILL a process while its executor runs a scheduled action.

An action runs at most once: the claimed job must not run again, and since
its executor is gone, the next executor that finds itself alone on the
folder marks it failed with Convex's "Transient error while executing action".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from engine import Engine
from tests import app
from tests.app import jobs

ROOT = Path(__file__).resolve().parents[2]


def test_killed_executor_leaves_its_action_failed_not_rerun(db_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.scheduled_action_child", str(db_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("running "), child.stderr.read() if child.stderr else line
    job_id = line.split()[1]
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)
    with Engine.open(db_path, functions=app, durability="none") as engine:
        job = engine.run(lambda ctx: ctx.db.system.get(job_id))
        assert job["state"] == {"kind": "failed", "error": "Transient error while executing action"}
        assert "completedTime" in job
        engine.finish_scheduled_functions(timeout=5)
        assert engine.query(jobs.notes) == []  # never ran again, never finished
        engine.check()
