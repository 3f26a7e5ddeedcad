"""The crons' sync: make the stored crons match the functions package's definitions at
``Engine.open``, as Convex's deploy of ``convex/crons.ts`` does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .cronruns import _MAX_LOGGED_RESULT, _log_record, _stored_size, _trim_logs
from .cronschedule import next_ts
from .crontables import _CRON_INDEXES, CRON_JOB_LOGS, CRON_JOBS, _user_fields, cron_problems
from .errors import ArgumentValidationError, FunctionNotFound, LimitExceeded
from .query import Query
from .scheduler import engine_writes, now_ms, resolve_target, system_table
from .values import MAX_DOCUMENT_SIZE

if TYPE_CHECKING:
    from .crons import Crons
    from .functions import Runtime
    from .transaction import Transaction

#: Where a damaged cron met at Engine.open is reported (the executor's logger).
_log_damage = logging.getLogger("engine.scheduler")


def defined_crons(package_crons: Crons | None, runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each cron of ``package_crons`` as its stored ``cronSpec``, by name; the targets
    are resolved and the arguments checked. Raises :class:`FunctionNotFound`,
    :class:`SchedulerError` (a target that is not a mutation or action),
    :class:`ArgumentValidationError`, :class:`LimitExceeded` (arguments that leave the
    cron or its logs no room in the 1 MiB document limit)."""
    specs: dict[str, dict[str, Any]] = {}
    if package_crons is None:
        return specs
    for cron in package_crons:
        prefix = f"Cron {cron.name!r}: "
        try:
            name, function = resolve_target(runtime, cron.function, prefix)
        except FunctionNotFound as error:
            if str(error).startswith(prefix):
                raise
            raise FunctionNotFound(f"{prefix}{error}", name=error.name) from None
        try:
            args = runtime.check_args(name, function, cron.args)
        except ArgumentValidationError as error:
            raise ArgumentValidationError(f"Cron {cron.name!r}: {error}", path=error.path) from None
        spec = {"udfPath": name, "udfArgs": [args], "cronSchedule": cron.schedule}
        _check_room(cron.name, spec)
        specs[cron.name] = spec
    return specs


#: The largest status a run's log takes: a result is logged whole up to
#: :data:`_MAX_LOGGED_RESULT` bytes, else as that many characters of text (up to 4 bytes
#: each); an error is cut to the room left (see :func:`_log`).
_ROOMIEST_STATUS = {"type": "success", "truncated": "\U0010ffff" * _MAX_LOGGED_RESULT}


def _check_room(name: str, spec: dict[str, Any]) -> None:
    """Refuse a cron whose stored document or run's log would not fit the 1 MiB document
    limit once it runs: the cron takes ``prevTs`` and ``inProgress``, and each log holds
    the arguments beside the run's status. Stored, such a cron could never record a run
    (the executor retried it at every pass), so it is refused when the engine opens, as
    a job is when scheduled. Cost: two passes over the arguments' size."""
    cron = {
        "name": name,
        "cronSpec": spec,
        "state": {"kind": "inProgress"},
        "prevTs": 0.0,
        "nextTs": 0.0,
    }
    log = _log_record(name, spec, 0.0, _ROOMIEST_STATUS, 0.0)
    for table, document in ((CRON_JOBS, cron), (CRON_JOB_LOGS, log)):
        size = _stored_size(document)
        if size > MAX_DOCUMENT_SIZE:
            raise LimitExceeded(
                f"Cron {name!r}: its arguments do not fit: a document of {table} would "
                f"measure {size} bytes once the cron runs (with room for its state and a "
                f"logged result), over the limit of {MAX_DOCUMENT_SIZE}. The cron's "
                f"arguments are stored in {CRON_JOBS} and in each run's log in "
                f"{CRON_JOB_LOGS}, so they are bounded by the 1 MiB document limit. Pass "
                "the ids of stored documents, or of a file in ctx.storage, instead.",
                limit="DocumentTooLarge",
                path="$",
            )


def sync_crons(runtime: Runtime, specs: dict[str, dict[str, Any]]) -> None:
    """Make ``_cron_jobs`` hold exactly ``specs`` (Convex's deploy of ``crons.ts``): add the
    new, update the changed (a changed schedule moves the next run), delete the rest
    and their logs. One transaction; writes nothing when they already match."""

    def body(txn: Transaction) -> None:
        stored: dict[str, dict[str, Any]] = {}
        damaged: list[tuple[dict[str, Any], list[str]]] = []
        if txn.table(CRON_JOBS) is not None:
            for doc in Query(txn, CRON_JOBS).collect():
                problems = cron_problems(doc)
                if not problems and doc["name"] in stored:
                    problems = [f"name {doc['name']!r} is not unique"]
                if problems:
                    damaged.append((doc, problems))
                else:
                    stored[doc["name"]] = doc
        if not specs and not stored and not damaged:
            return
        now = now_ms()
        with engine_writes(txn):
            system_table(txn, CRON_JOBS, _CRON_INDEXES)
            for doc, problems in damaged:
                # Not a cron the executor could run: a defined one is stored afresh below
                # (with its logs), any other deleted with its logs, as undefined crons are.
                txn.delete(doc["_id"])
                found = doc.get("name")
                known = found if isinstance(found, str) else None
                defined = known is not None and known in specs
                if known is not None and not defined and known not in stored:
                    _trim_logs(txn, known, 0)
                _log_damage.warning(
                    "%s %s%s is damaged (%s): deleted%s.",
                    CRON_JOBS,
                    doc["_id"],
                    "" if known is None else f" ({known!r})",
                    "; ".join(problems),
                    " and stored afresh from its definition"
                    if defined and known not in stored
                    else "",
                )
            for name, spec in specs.items():
                cron = stored.pop(name, None)
                if cron is None:
                    schedule = spec["cronSchedule"]
                    document = {
                        "name": name,
                        "cronSpec": spec,
                        "state": {"kind": "pending"},
                        "nextTs": next_ts(schedule, None, now),
                    }
                    txn.insert(CRON_JOBS, document, system=True)
                elif cron["cronSpec"] != spec:
                    changed = dict(cron, cronSpec=spec)
                    if cron["cronSpec"]["cronSchedule"] != spec["cronSchedule"]:
                        changed["nextTs"] = next_ts(spec["cronSchedule"], cron.get("prevTs"), now)
                    txn.replace(cron["_id"], _user_fields(changed))
            for cron in stored.values():
                txn.delete(cron["_id"])
                _trim_logs(txn, cron["name"], 0)

    runtime.db.run(body, writable=True, source="crons")
