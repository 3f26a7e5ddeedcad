"""engine.deadlines: items come back due soonest first; removed items never do."""

from __future__ import annotations

from engine.deadlines import Deadlines


def test_due_items_soonest_first_and_only_once() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.add("b", 2.0)
    deadlines.add("a", 1.0)
    deadlines.add("c", 3.0)
    assert deadlines.pop_due(0.5) == []
    assert deadlines.pop_due(2.0) == ["a", "b"]
    assert deadlines.pop_due(2.0) == []
    assert "c" in deadlines and "a" not in deadlines
    assert deadlines.pop_due(10.0) == ["c"]


def test_discarded_and_replaced_deadlines_are_not_due() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.add("gone", 1.0)
    deadlines.add("moved", 1.0)
    deadlines.discard("gone")
    deadlines.discard("never added")
    deadlines.add("moved", 5.0)  # replaces its deadline
    assert deadlines.pop_due(2.0) == []
    assert deadlines.pop_due(5.0) == ["moved"]
    assert len(deadlines) == 0


def test_removed_items_are_not_kept_until_their_deadlines() -> None:
    deadlines: Deadlines[int] = Deadlines()
    for i in range(1000):
        deadlines.add(i, 3600.0 + i)
    for i in range(1000):
        deadlines.discard(i)
    assert len(deadlines) <= 2 * Deadlines.rebuild_after
    deadlines.add(-1, 1.0)
    assert deadlines.pop_due(10_000.0) == [-1]
