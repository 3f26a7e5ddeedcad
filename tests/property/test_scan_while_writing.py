"""A mutation that writes while it iterates a query sees, at each step, the next row of
its current view, as Convex's ``queryStreamNext`` does: the first index key after the
last one yielded among the snapshot's rows and the mutation's writes so far.

So a row written ahead of the scan is read, a row deleted ahead is not, a row moved
behind the scan is not read again and one moved ahead is read (again): nothing comes
twice that was not moved ahead, nothing is skipped. And the read set covers what the
scan consumed (``Scans.scan`` re-seeks its overlay of own writes after each write).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine
from tests.property.test_occ_reads import SCHEMA, document, in_range, ranges, rows
from tests.property.test_occ_reads import position as model_key

writes = st.one_of(
    st.tuples(st.just("insert"), rows),
    st.tuples(st.just("patch"), st.integers(0, 30), rows),
    st.tuples(st.just("delete"), st.integers(0, 30)),
    st.tuples(st.just("none")),
)


@settings(max_examples=300, deadline=None)
@given(
    initial=st.lists(rows, max_size=8),
    ops=ranges(),
    reverse=st.booleans(),
    steps=st.lists(st.lists(writes, max_size=2), max_size=12),
)
def test_a_scan_reads_the_next_row_of_the_current_view(
    initial: list[Any], ops: list[Any], reverse: bool, steps: list[list[Any]]
) -> None:
    folder = tempfile.mkdtemp()
    try:
        with Engine.open(folder, schema=SCHEMA, durability="none") as engine:
            engine.run(lambda ctx: [ctx.db.insert("d", document(row)) for row in initial])
            engine.run(lambda ctx: body(ctx, ops, reverse, steps))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def body(ctx: Any, ops: list[Any], reverse: bool, steps: list[list[Any]]) -> None:
    view = {d["_id"]: d for d in ctx.db.query("d").collect()}

    def index_range(r: Any) -> Any:
        for op, field, value in ops:
            r = getattr(r, op)(field, value)
        return r

    query = ctx.db.query("d").with_index("by_ab", index_range).order("desc" if reverse else "asc")
    last: tuple[Any, ...] | None = None
    for i, doc in enumerate(query):
        # The model's next row: the first of the current view past the last one read.
        ahead = [
            d
            for d in view.values()
            if in_range(d, ops)
            and (last is None or (model_key(d) < last if reverse else model_key(d) > last))
        ]
        assert ahead, f"read {doc['_id']}, past the end of the range"
        expected = (max if reverse else min)(ahead, key=model_key)
        assert doc["_id"] == expected["_id"]
        assert repr(sorted(doc.items())) == repr(sorted(expected.items()))
        last = model_key(doc)
        if i >= len(steps):
            break
        for write in steps[i]:
            ids = sorted(view)
            if write[0] == "insert":
                new_id = ctx.db.insert("d", document(write[1]))
                view[new_id] = ctx.db.get(new_id)
            elif write[0] == "patch" and ids:
                target = ids[write[1] % len(ids)]
                a, b, c = write[2]
                ctx.db.patch(target, {"a": a, "b": b, "c": c})
                view[target] = ctx.db.get(target)
            elif write[0] == "delete" and ids:
                target = ids[write[1] % len(ids)]
                ctx.db.delete(target)
                del view[target]
    else:
        # The scan ended: nothing was left past the last row read.
        assert not [
            d
            for d in view.values()
            if in_range(d, ops)
            and (last is None or (model_key(d) < last if reverse else model_key(d) > last))
        ]
