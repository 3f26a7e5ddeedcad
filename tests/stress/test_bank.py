"""Stress: many threads and processes moving money, readers auditing every snapshot.

A bounded slice runs in ``make test``; ``make test-slow`` runs the long versions.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import Engine

from .bank import (
    OPENING,
    SCHEMA,
    audit,
    check_books,
    open_accounts,
    process_transfers,
    random_transfers,
)


def _sizes(bounded: dict[str, int], longer: dict[str, int]) -> list[Any]:
    """A bounded size for ``make test``; the same with ``longer`` values for ``make test-slow``."""
    return [
        pytest.param(bounded, id="bounded"),
        pytest.param({**bounded, **longer}, id="long", marks=pytest.mark.slow),
    ]


def _threads_with_auditor(db_path: Path, *, threads: int, transfers: int, accounts: int) -> None:
    with Engine.open(db_path, schema=SCHEMA, durability="none") as engine:
        engine._db.retry.retries = 1000
        open_accounts(engine, accounts)
        moved: list[int] = []
        errors: list[BaseException] = []
        audits: list[tuple[int, int]] = []
        done = threading.Event()

        def work(seed: int) -> None:
            try:
                moved.append(random_transfers(engine, accounts, transfers, seed))
            except BaseException as error:  # reported below
                errors.append(error)

        def auditor() -> None:
            while not done.is_set():
                audits.append(engine.query(audit))

        workers = [threading.Thread(target=work, args=(seed,)) for seed in range(threads)]
        watcher = threading.Thread(target=auditor)
        watcher.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
        done.set()
        watcher.join(60)
        assert not errors, errors
        assert audits, "the auditor never ran"
        # Every snapshot any query saw was consistent: conservation and no overdraft.
        assert {total for total, _ in audits} == {OPENING * accounts}
        assert min(lowest for _, lowest in audits) >= 0
        check_books(engine, accounts, sum(moved))


@pytest.mark.parametrize(
    "size",
    _sizes({"threads": 6, "transfers": 40, "accounts": 8}, {"threads": 16, "transfers": 400}),
)
def test_threads_move_money_and_every_snapshot_balances(
    db_path: Path, size: dict[str, int]
) -> None:
    _threads_with_auditor(db_path, **size)


def _processes(db_path: Path, *, processes: int, transfers: int, accounts: int) -> None:
    with Engine.open(db_path, schema=SCHEMA, durability="normal") as engine:
        open_accounts(engine, accounts)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        moved = pool.starmap(
            process_transfers,
            [(str(db_path), accounts, transfers, 1000 + i) for i in range(processes)],
        )
    with Engine.open(db_path, schema=SCHEMA, durability="normal") as engine:
        check_books(engine, accounts, sum(moved))


@pytest.mark.parametrize(
    "size",
    _sizes({"processes": 2, "transfers": 40, "accounts": 6}, {"processes": 4, "transfers": 300}),
)
def test_processes_move_money_and_the_books_balance(db_path: Path, size: dict[str, int]) -> None:
    _processes(db_path, **size)
