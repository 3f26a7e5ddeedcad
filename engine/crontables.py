"""The crons' system tables: their names and indexes, what a stored cron must look like,
and the checker ``Engine.check()`` runs over them.

Stored data (system tables, readable with ``ctx.db.system.query(...)``; the shapes
follow Convex's, times in milliseconds)::

    _cron_jobs:     {"name": "clear presence",
                     "cronSpec": {"udfPath": "presence:clear", "udfArgs": [{}],
                                  "cronSchedule": {"type": "interval", "seconds": 300}},
                     "state": {"kind": "pending"},        # | {"kind": "inProgress"}
                     "prevTs": 1767225300000.0,           # the last run's time, once run
                     "nextTs": 1767225600000.0}           # the next run's time
    _cron_job_logs: {"name", "ts", "udfPath", "udfArgs", "executionTime" (seconds),
                     "status": {"type": "success", "result": ...}
                             | {"type": "err", "error": "Uncaught ..."}
                             | {"type": "canceled", "numCanceled": n}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cronschedule import _schedule_problem
from .query import Query
from .scheduler import BY_STATE, SCHEDULED_FUNCTIONS, all_documents, state_kind

if TYPE_CHECKING:
    from .database import Database
    from .transaction import Transaction

#: The system table of the crons, and its indexes (Convex's).
CRON_JOBS = "_cron_jobs"
BY_NEXT_TS = "by_next_ts"
BY_NAME = "by_name"
_CRON_INDEXES: dict[str, tuple[str, ...]] = {BY_NEXT_TS: ("nextTs",), BY_NAME: ("name",)}
#: The system table of the runs' logs, and its index.
CRON_JOB_LOGS = "_cron_job_logs"
BY_NAME_AND_TS = "by_name_and_ts"
_LOG_INDEXES: dict[str, tuple[str, ...]] = {BY_NAME_AND_TS: ("name", "ts")}
#: The states a stored cron may be in.
_KINDS = ("pending", "inProgress")
_CRON_FIELDS = frozenset({"_id", "_creationTime", "name", "cronSpec", "state", "prevTs", "nextTs"})
_SCHEDULE_TYPES = frozenset({"interval", "hourly", "daily", "weekly", "monthly", "cron"})


def engine_indexes(table_name: str) -> tuple[str, ...]:
    """The indexes the engine makes its system table ``table_name`` with (the scheduler's
    and the crons' tables, made by their first write), or () for another table: a query
    may name them before the table exists, and reads an empty table (Convex's system
    tables always exist)."""
    if table_name == SCHEDULED_FUNCTIONS:
        return (BY_STATE,)
    if table_name == CRON_JOBS:
        return tuple(_CRON_INDEXES)
    if table_name == CRON_JOB_LOGS:
        return tuple(_LOG_INDEXES)
    return ()


def _user_fields(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if not k.startswith("_")}


def all_crons(txn: Transaction) -> list[dict[str, Any]]:
    """Every cron, soonest next run first."""
    if txn.table(CRON_JOBS) is None:
        return []
    return Query(txn, CRON_JOBS).with_index(BY_NEXT_TS).collect()


def _spec_problems(spec: object) -> list[str]:
    """What keeps a stored ``cronSpec`` from Convex's shape (``{udfPath: str, udfArgs:
    [object], cronSchedule: {type, ...}}``), one line per field; empty if it has it."""
    if not isinstance(spec, dict):
        return [f"cronSpec {spec!r:.80} does not have Convex's shape (an object)"]
    found: list[str] = []
    if not isinstance(spec.get("udfPath"), str):
        found.append(f"cronSpec.udfPath {spec.get('udfPath')!r:.80} is not a string")
    args = spec.get("udfArgs")
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict)):
        found.append(f"cronSpec.udfArgs {args!r:.80} is not [argsObject]")
    schedule = spec.get("cronSchedule")
    kind = schedule.get("type") if isinstance(schedule, dict) else None
    if not isinstance(schedule, dict):
        found.append(f"cronSpec.cronSchedule {schedule!r:.80} is not an object")
    elif not isinstance(kind, str) or kind not in _SCHEDULE_TYPES:
        found.append(
            f"cronSpec.cronSchedule type {kind!r:.80} is not one of "
            f"{', '.join(sorted(_SCHEDULE_TYPES))}"
        )
    elif (problem := _schedule_problem(schedule)) is not None:
        found.append(f"cronSpec.cronSchedule: {problem}")
    return found


def _sound_state(cron: dict[str, Any]) -> bool:
    state = cron.get("state")
    return isinstance(state, dict) and set(state) == {"kind"} and state_kind(cron) in _KINDS


def cron_problems(cron: dict[str, Any]) -> list[str]:
    """What keeps a stored cron from being run, one line per field: its state is not
    ``{"kind": "pending" | "inProgress"}``, its name not a string, its ``cronSpec`` not
    Convex's shape (with a schedule the next run's time can be computed from), ``nextTs``
    (``prevTs`` if present) not a float. Empty for a sound cron. The executor and the
    crons' sync at ``Engine.open`` skip a cron with problems; ``Engine.check()`` names
    them. Cost: a few type checks."""
    found: list[str] = []
    if not _sound_state(cron):
        found.append(f"state {cron.get('state')!r:.80} is neither pending nor inProgress")
    name = cron.get("name")
    if not isinstance(name, str):
        found.append(f"name {name!r:.80} is not a string")
    found.extend(_spec_problems(cron.get("cronSpec")))
    if not isinstance(cron.get("nextTs"), float):
        found.append(f"nextTs is not a float: {cron.get('nextTs', '(missing)')!r:.80}")
    if "prevTs" in cron and not isinstance(cron["prevTs"], float):
        found.append(f"prevTs is not a float: {cron['prevTs']!r:.80}")
    return found


def check_crons(db: Database, rtxn: Any) -> tuple[dict[str, int], list[str]]:
    """Check every stored cron's shape in the LMDB txn ``rtxn`` (the snapshot the rest of
    ``Engine.check()`` reads); returns (crons by state, problems). Cost: one pass over
    ``_cron_jobs``."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    names: set[str] = set()
    for cron in all_documents(db, rtxn, CRON_JOBS):
        name = cron.get("name")
        # Named by id and, when it has one, by name: the name is what the app declared.
        where = f"{CRON_JOBS} {cron['_id']}" + (f" ({name!r})" if isinstance(name, str) else "")
        found = cron_problems(cron)
        if _sound_state(cron):
            kind = cron["state"]["kind"]
            counts[kind] = counts.get(kind, 0) + 1
        if set(cron) - _CRON_FIELDS:
            found.append(f"unexpected fields {sorted(set(cron) - _CRON_FIELDS)}")
        if isinstance(name, str):
            if name in names:
                found.append(f"name {name!r} is not unique")
            names.add(name)
        problems.extend(f"{where}: {p}" for p in found)
    return counts, problems
