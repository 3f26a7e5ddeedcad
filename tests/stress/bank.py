"""A bank: transfers between accounts, each recorded in a ledger.

Module-level so that ``multiprocessing`` (spawn) children can import it. The
invariants a serializable engine keeps, whatever the interleaving:

- money is conserved: the balances always sum to the opening total, in every
  snapshot a query sees;
- no balance is ever negative (each transfer checks the balance it read);
- each account's balance is its opening balance plus the ledger's net flow into it
  (a lost update or a half-applied transfer breaks this).
"""

from __future__ import annotations

import random
from typing import Any

from engine import Engine, MutationCtx, QueryCtx, define_schema, define_table, v

OPENING = 100

SCHEMA = define_schema(
    {
        "accounts": define_table({"owner": v.string(), "balance": v.int64()}).index(
            "by_owner", ["owner"]
        ),
        "ledger": define_table(
            {"source": v.string(), "target": v.string(), "amount": v.int64()}
        ).index("by_source", ["source"]),
    }
)


def owners(n: int) -> list[str]:
    return [f"acct{i:03d}" for i in range(n)]


def open_accounts(engine: Engine, n: int) -> None:
    engine.run(
        lambda ctx: [ctx.db.insert("accounts", {"owner": o, "balance": OPENING}) for o in owners(n)]
    )


def _account(ctx: QueryCtx, owner: str) -> dict[str, Any]:
    found = ctx.db.query("accounts").with_index("by_owner", lambda q: q.eq("owner", owner)).unique()
    assert found is not None, owner
    return found


def transfer(ctx: MutationCtx, source: str, target: str, amount: int) -> bool:
    """Move ``amount`` if ``source`` has it; record it in the ledger."""
    src, dst = _account(ctx, source), _account(ctx, target)
    if src["balance"] < amount:
        return False
    ctx.db.patch(src["_id"], {"balance": src["balance"] - amount})
    ctx.db.patch(dst["_id"], {"balance": dst["balance"] + amount})
    ctx.db.insert("ledger", {"source": source, "target": target, "amount": amount})
    return True


def audit(ctx: QueryCtx) -> tuple[int, int]:
    """(sum of balances, lowest balance) in one snapshot."""
    balances = [a["balance"] for a in ctx.db.query("accounts").collect()]
    return sum(balances), min(balances)


def random_transfers(engine: Engine, accounts: int, count: int, seed: int) -> int:
    """Run ``count`` random transfers; returns how many moved money."""
    rng = random.Random(seed)
    names = owners(accounts)
    moved = 0
    for _ in range(count):
        source, target = rng.sample(names, 2)
        amount = rng.randint(1, 60)
        if engine.run(lambda ctx, s=source, t=target, a=amount: transfer(ctx, s, t, a)):
            moved += 1
    return moved


def process_transfers(path: str, accounts: int, count: int, seed: int) -> int:
    """A child process's share of the transfers (durability ``normal``)."""
    with Engine.open(path, schema=SCHEMA, durability="normal") as engine:
        engine._db.retry.retries = 1000  # contention is the point: every transfer must land
        return random_transfers(engine, accounts, count, seed)


def check_books(engine: Engine, accounts: int, moved: int) -> None:
    """Every invariant of the module docstring, plus Engine.check()."""
    rows = engine.run(lambda ctx: ctx.db.query("accounts").collect())
    ledger = engine.run(lambda ctx: ctx.db.query("ledger").collect())
    assert len(rows) == accounts
    assert len(ledger) == moved
    expected = dict.fromkeys(owners(accounts), OPENING)
    for entry in ledger:
        expected[entry["source"]] -= entry["amount"]
        expected[entry["target"]] += entry["amount"]
    assert {r["owner"]: r["balance"] for r in rows} == expected
    assert sum(expected.values()) == OPENING * accounts
    assert min(expected.values()) >= 0
    engine.check()
