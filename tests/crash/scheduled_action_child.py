"""Child process for the scheduler crash test: start a long scheduled action, say so, wait."""

from __future__ import annotations

import sys
import time

from engine import Engine
from tests import app
from tests.app import jobs

if __name__ == "__main__":
    with Engine.open(sys.argv[1], functions=app, durability="full") as engine:
        job_id = engine.run(
            lambda ctx: ctx.scheduler.run_after(0, jobs.slow_action, {"seconds": 60.0})
        )
        while engine.run(lambda ctx: ctx.db.system.get(job_id))["state"]["kind"] != "inProgress":
            time.sleep(0.005)
        print(f"running {job_id}", flush=True)
        time.sleep(120)  # killed long before
