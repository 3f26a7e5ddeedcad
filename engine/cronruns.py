"""A cron's runs: :class:`CronRun` (what the executor runs when a cron's ``nextTs`` comes),
the run's log in ``_cron_job_logs`` and the cron's next run, set as the run completes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cronschedule import after_skips, next_ts
from .crontables import (
    _LOG_INDEXES,
    BY_NAME_AND_TS,
    CRON_JOB_LOGS,
    _user_fields,
    all_crons,
    cron_problems,
)
from .query import Query
from .scheduler import (
    _LONGEST_ID,
    TRANSIENT_ACTION_ERROR,
    cut_error,
    engine_writes,
    now_ms,
    state_kind,
    system_table,
)
from .values import MAX_DOCUMENT_SIZE, nesting, value_size

if TYPE_CHECKING:
    from .executor import Executor
    from .functions import FunctionDef, Runtime
    from .transaction import Transaction

#: Logs kept per cron (Convex's ``MAX_LOGS_PER_CRON``).
MAX_LOGS_PER_CRON = 5
#: A run's result is logged whole up to this size (Convex's size measure), else as the
#: first characters of its text (Convex truncates results over 1,000 characters).
_MAX_LOGGED_RESULT = 1000
_MAX_LOGGED_NESTING = 14


def _trim_logs(txn: Transaction, name: str, keep: int) -> None:
    """Delete all but the ``keep`` newest logs of cron ``name`` (call in engine_writes)."""
    if txn.table(CRON_JOB_LOGS) is None:
        return
    logs = (
        Query(txn, CRON_JOB_LOGS)
        .with_index(BY_NAME_AND_TS, lambda q: q.eq("name", name))
        .order("desc")
    )
    for index, log in enumerate(logs):
        if index >= keep:
            txn.delete(log["_id"])


def _log_record(
    name: str, spec: dict[str, Any], ts: float, status: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The fields of a run's log in ``_cron_job_logs`` (the system fields come at insert)."""
    return {
        "name": name,
        "ts": ts,
        "udfPath": spec["udfPath"],
        "udfArgs": spec["udfArgs"],
        "status": status,
        "executionTime": seconds,
    }


def _stored_size(fields: dict[str, Any]) -> int:
    """The size of a system document with ``fields`` once stored, by Convex's rule (with
    the longest ``_id`` and a ``_creationTime``)."""
    return value_size({"_id": _LONGEST_ID, "_creationTime": 0.0, **fields})


def _log(
    txn: Transaction, cron: dict[str, Any], ts: float, status: dict[str, Any], seconds: float
) -> None:
    """Insert a run's log and keep the newest :data:`MAX_LOGS_PER_CRON` (in engine_writes)."""
    system_table(txn, CRON_JOB_LOGS, _LOG_INDEXES)
    log = _log_record(cron["name"], cron["cronSpec"], ts, status, seconds)
    if status.get("type") == "err":
        # The error is cut to the room the 1 MiB limit leaves beside the cron's arguments,
        # which the log holds too (as a job's error, see scheduler.fitting).
        room = MAX_DOCUMENT_SIZE - _stored_size(dict(log, status={**status, "error": ""}))
        log["status"] = {**status, "error": cut_error(status["error"], room)}
    txn.insert(CRON_JOB_LOGS, log, system=True)
    _trim_logs(txn, cron["name"], MAX_LOGS_PER_CRON)


def success_status(result: Any) -> dict[str, Any]:
    """A successful run's logged status: the result whole when small, else its text cut."""
    # The log nests the result two levels down (log, status): a result nested deeper than
    # a document may be (16 levels) is kept as text too, so the log can always be stored.
    if result is None or (
        value_size(result) <= _MAX_LOGGED_RESULT and nesting(result) <= _MAX_LOGGED_NESTING
    ):
        return {"type": "success", "result": result}
    from .formatting import format_value

    return {"type": "success", "truncated": format_value(result, _MAX_LOGGED_RESULT)}


def complete_run(
    txn: Transaction, cron: dict[str, Any], status: dict[str, Any], seconds: float, now: float
) -> None:
    """Log a finished run of ``cron`` (whose ``nextTs`` is the run's time) and set the
    next one, skipping (and logging) those that came due meanwhile. In ``txn``."""
    prev = cron["nextTs"]
    schedule = cron["cronSpec"]["cronSchedule"]
    following, skipped = after_skips(schedule, prev, now)
    with engine_writes(txn):
        _log(txn, cron, prev, status, seconds)
        if skipped:
            _log(
                txn,
                cron,
                next_ts(schedule, prev, now),
                {"type": "canceled", "numCanceled": skipped},
                0.0,
            )
        changed = dict(cron, state={"kind": "pending"}, prevTs=prev, nextTs=following)
        txn.replace(cron["_id"], _user_fields(changed))


def mark_in_progress(txn: Transaction, cron: dict[str, Any]) -> None:
    """Claim an action cron's run (in ``txn``)."""
    with engine_writes(txn):
        txn.patch(cron["_id"], {"state": {"kind": "inProgress"}})


def target_function(runtime: Runtime, cron: dict[str, Any]) -> FunctionDef | None:
    """The function a stored cron runs, if this engine has it."""
    return runtime.registry.by_name.get(cron["cronSpec"]["udfPath"])


def fail_orphaned_crons(txn: Transaction) -> int:
    """Complete every cron left ``inProgress`` (its executor died while its action ran)
    with Convex's transient error, and set its next run. Run by an executor that starts
    alone on the folder."""
    stuck = [
        cron
        for cron in all_crons(txn)
        if state_kind(cron) == "inProgress" and not cron_problems(cron)  # damaged: left
    ]
    now = now_ms()
    for cron in stuck:
        complete_run(txn, cron, {"type": "err", "error": TRANSIENT_ACTION_ERROR}, 0.0, now)
    return len(stuck)


class CronRun:
    """One run of a cron, for the executor (its ``_Run`` protocol): due when its
    ``nextTs`` has come (``advance_ms`` later than now, for ``finish_*``)."""

    __slots__ = ("_advance_ms", "_cron", "_executor", "key", "label", "name", "own_job", "source")

    own_job: str | None

    def __init__(
        self, executor: Executor, cron: dict[str, Any], kind: str, advance_ms: float
    ) -> None:
        self._executor = executor
        self._cron = cron
        self._advance_ms = advance_ms
        self.key = cron["_id"]
        self.name = cron["cronSpec"]["udfPath"]
        self.label = f"cron {cron['name']!r}"
        self.source = f"Cron {kind} {self.name}"
        self.own_job = None

    def _now(self) -> float:
        return now_ms() + self._advance_ms

    def start(self, txn: Transaction, *, claim: bool) -> tuple[Any, float] | None:
        cron = txn.get(self.key)
        if (
            cron is None
            or cron_problems(cron)  # damaged since the pass read it: skipped
            or cron["state"]["kind"] != "pending"
            or cron["nextTs"] > self._now()
            or cron["cronSpec"]["udfPath"] != self.name  # redefined meanwhile
        ):
            return None
        self._cron = cron
        if claim:
            mark_in_progress(txn, cron)
        return cron["cronSpec"]["udfArgs"], cron["nextTs"]

    def succeed(self, txn: Transaction, result: Any, seconds: float) -> None:
        complete_run(txn, self._cron, success_status(result), seconds, self._now())

    def record(self, state: dict[str, Any], result: Any, seconds: float, *, running: bool) -> bool:
        if state["kind"] == "success":
            status = success_status(result)
        else:
            status = {"type": "err", "error": state["error"]}
        expected = self._cron["nextTs"]

        def body(txn: Transaction) -> bool:
            cron = txn.get(self.key)
            if cron is None or cron_problems(cron):
                return False  # deleted meanwhile (no longer defined), or damaged: skipped
            kind = cron["state"]["kind"]
            if running and kind != "inProgress":
                return False
            if not running and (kind != "pending" or cron["nextTs"] != expected):
                return False  # another executor ran it meanwhile
            complete_run(txn, cron, status, seconds, self._now())
            return True

        return self._executor.write_outcome(body, self.label)
