"""Transaction limits: what one query or mutation may read, write and schedule.

Convex bounds each function execution (its transaction, nested calls included) in
seven dimensions, and names them in ``ctx.meta.getTransactionMetrics()`` and in the
``transactionLimits`` option of a nested ``ctx.runQuery`` / ``ctx.runMutation``
(convex-backend ``crates/database/src/execution_size.rs``). Each is counted and
checked where its counter lives, against a module constant:

- ``bytesRead``: bytes of user documents read (their stored, msgpack size), 16 MiB
  (:data:`engine.scans.MAX_BYTES_READ`; ``LimitExceeded.limit`` ``TooManyBytesRead``);
- ``bytesWritten``: bytes of documents written (stored size), 16 MiB
  (:data:`engine.transaction.MAX_BYTES_WRITTEN`; ``TooManyBytesWritten``);
- ``databaseQueries``: ranges read (a ``get`` or a query's range each), adjacent ones
  merged, 4,096 (:data:`engine.readset.MAX_READ_RANGES`; ``TooManyReads``);
- ``documentsRead``: user documents read, filtered-out ones too, 32,000
  (:data:`engine.scans.MAX_DOCUMENTS_READ`; ``TooManyDocumentsRead``);
- ``documentsWritten``: document writes, 16,000
  (:data:`engine.transaction.MAX_DOCUMENTS_WRITTEN`; ``TooManyWrites``);
- ``functionsScheduled``: jobs scheduled, 1,000
  (:data:`engine.scheduler.MAX_SCHEDULED_PER_MUTATION`; ``TooManyFunctionsScheduled``);
- ``scheduledFunctionArgsBytes``: their arguments by Convex's size formula, 16 MiB
  (:data:`engine.scheduler.MAX_SCHEDULED_ARGS_BYTES`;
  ``ScheduledFunctionsArgumentsTooLarge``).

Reads of system tables (``_storage``, ``_scheduled_functions``) count as ranges only,
as in Convex. Bytes are convexlite's stored size of a document, near but not equal to
Convex's size formula.

A transaction's ``limits`` is None while these hold: the checks then read the
constants, so a run without ``transaction_limits`` pays one ``is None`` test per
check. :func:`lowered` turns a ``transaction_limits`` dict into a :class:`Limits` for
the duration of one nested call, as Convex's ``TransactionLimits::from_budget``:
each value is how much *more* the call may use, on top of what the transaction used
so far, and never more than the limit already in force. :func:`metrics` reports
each dimension's ``used`` and ``remaining``, as Convex's ``getTransactionMetrics``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypedDict, cast

import msgspec

from . import readset, scans, scheduler
from . import transaction as _transaction
from .errors import ValidationError
from .values import UNSET

if TYPE_CHECKING:
    from .transaction import Transaction

__all__ = [
    "Limits",
    "TransactionLimits",
    "TransactionMetric",
    "TransactionMetrics",
    "limited",
    "lowered",
    "metrics",
]


class TransactionMetric(TypedDict):
    """One dimension of :class:`TransactionMetrics`: ``{"used": int, "remaining": int}``.

    ``remaining`` is the limit minus ``used``; below 0 after a function caught the
    ``LimitExceeded`` of a read past it (the read was counted), as in Convex.
    """

    used: int
    remaining: int


class TransactionMetrics(TypedDict):
    """What ``ctx.meta.get_transaction_metrics()`` returns: Convex's seven keys, each a
    :class:`TransactionMetric`."""

    bytesRead: TransactionMetric
    bytesWritten: TransactionMetric
    databaseQueries: TransactionMetric
    documentsRead: TransactionMetric
    documentsWritten: TransactionMetric
    functionsScheduled: TransactionMetric
    scheduledFunctionArgsBytes: TransactionMetric


class TransactionLimits(TypedDict, total=False):
    """The ``transaction_limits=`` of a nested ``ctx.run_query`` / ``ctx.run_mutation``.

    Any of Convex's seven keys (those of :class:`TransactionMetrics`), each how much
    *more* the nested call may use, a whole number >= 0. A key left out keeps the
    caller's limit; a value past it is clamped to it: limits only go down.
    """

    bytesRead: int
    bytesWritten: int
    databaseQueries: int
    documentsRead: int
    documentsWritten: int
    functionsScheduled: int
    scheduledFunctionArgsBytes: int


class Limits(msgspec.Struct, frozen=True):
    """The seven limits in force, absolute (used so far plus what is left).

    A transaction holds one only while a nested call with ``transaction_limits`` runs;
    otherwise its ``limits`` is None (Convex's, the module constants).
    """

    bytes_read: int
    bytes_written: int
    database_queries: int
    documents_read: int
    documents_written: int
    functions_scheduled: int
    scheduled_function_args_bytes: int


#: Convex's keys, in the order of Limits' fields (both sorted alike).
_KEYS = (
    "bytesRead",
    "bytesWritten",
    "databaseQueries",
    "documentsRead",
    "documentsWritten",
    "functionsScheduled",
    "scheduledFunctionArgsBytes",
)
#: A snake_case key (a Python habit) → the camelCase key Convex names it by.
_SNAKE = dict(zip(Limits.__struct_fields__, _KEYS, strict=True))


def _in_force(txn: Transaction) -> Limits:
    """The limits ``txn`` runs under now: a nested call's, or Convex's (the constants)."""
    if txn.limits is not None:
        return txn.limits
    return Limits(
        bytes_read=scans.MAX_BYTES_READ,
        bytes_written=_transaction.MAX_BYTES_WRITTEN,
        database_queries=readset.MAX_READ_RANGES,
        documents_read=scans.MAX_DOCUMENTS_READ,
        documents_written=_transaction.MAX_DOCUMENTS_WRITTEN,
        functions_scheduled=scheduler.MAX_SCHEDULED_PER_MUTATION,
        scheduled_function_args_bytes=scheduler.MAX_SCHEDULED_ARGS_BYTES,
    )


def _used(txn: Transaction) -> tuple[int, ...]:
    """What ``txn`` used so far in each dimension, in the order of :class:`Limits`.

    Cost: :meth:`ReadSet.ranges` (``databaseQueries`` counts merged ranges).
    """
    jobs = getattr(txn, "scheduler", None)  # unset until the mutation's first scheduler
    jobs_count, jobs_bytes = (0, 0) if jobs is None else jobs.usage()
    return (
        txn.bytes_read,
        txn.writes.bytes_written,
        txn.reads.ranges(),
        txn.documents_read,
        txn.writes.writes,
        jobs_count,
        jobs_bytes,
    )


def metrics(txn: Transaction) -> TransactionMetrics:
    """``{key: {"used": n, "remaining": limit - n}}`` for Convex's seven keys.

    Cost: :meth:`ReadSet.ranges` (a bisection per read since the last call, a look
    at each scan stopped early), then a dict per key: a few µs.
    """
    ceilings = msgspec.structs.astuple(_in_force(txn))
    return cast(
        TransactionMetrics,
        {
            key: {"used": spent, "remaining": ceiling - spent}
            for key, spent, ceiling in zip(_KEYS, _used(txn), ceilings, strict=True)
        },
    )


def lowered(txn: Transaction, budget: object) -> Limits:
    """The limits of a nested call given ``transaction_limits=budget``.

    Each given key allows ``used + value`` in its dimension, clamped to the limit in
    force (a larger value is no error: it keeps that limit); a key left out, or set to
    ``UNSET`` (Convex's ``undefined``), keeps it.
    Raises :class:`ValidationError` (``.path`` the key) for a budget that is not a
    dict, an unknown key, or a value that is not a whole number >= 0.
    """
    if not isinstance(budget, Mapping):
        raise ValidationError(
            f"transaction_limits must be a dict of Convex's keys ({', '.join(_KEYS)}) to "
            f"whole numbers, got {type(budget).__name__}: {budget!r}.",
            path="",
        )
    for key in budget:
        if key not in _KEYS:
            hint = (
                f"Convex's name for it is {_SNAKE[key]!r}"
                if key in _SNAKE
                else f"the keys are {', '.join(_KEYS)}"
            )
            raise ValidationError(
                f"transaction_limits has no key {key!r}: {hint}.",
                path=f".{key}" if isinstance(key, str) else "",
            )
    ceilings = msgspec.structs.astuple(_in_force(txn))
    values = []
    for key, spent, ceiling in zip(_KEYS, _used(txn), ceilings, strict=True):
        value = budget.get(key, UNSET)
        values.append(ceiling if value is UNSET else min(spent + _amount(key, value), ceiling))
    return Limits(*values)


def _amount(key: str, value: object) -> int:
    """``value`` as a whole number >= 0; a whole ``float`` counts, as Convex's JSON number."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value < 0:
        raise ValidationError(
            f"transaction_limits[{key!r}] must be a whole number >= 0 (how much more the "
            f"nested call may use), got {type(value).__name__}: {value!r}. Leave the key "
            "out to keep the caller's limit.",
            path=f".{key}",
        )
    return value


@contextmanager
def limited(txn: Transaction, budget: object) -> Iterator[Limits]:
    """Run the ``with`` body (a nested call) under :func:`lowered` limits; the caller's
    are back when it ends, however it ends (as Convex's subtransaction token).

    Cost: :meth:`ReadSet.ranges` three times (the ranges used; the room under the
    new limit, and under the caller's when the body ends). Raises as :func:`lowered`.

    Example::

        with limited(txn, {"documentsRead": 100}):
            runtime.nested(ctx, ref, args, kind="query")
    """
    limits = lowered(txn, budget)
    caller = txn.limits
    _apply(txn, limits)
    try:
        yield limits
    finally:
        _apply(txn, caller)


def _apply(txn: Transaction, limits: Limits | None) -> None:
    txn.limits = limits
    txn.reads.set_limit(readset.MAX_READ_RANGES if limits is None else limits.database_queries)
