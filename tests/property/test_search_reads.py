"""Read sets of full-text searches are sound: a commit that changes what a search
returned conflicts with the transaction that searched.

Two transactions interleave, as in ``test_occ_reads``. A (a mutation, which merges its
own writes into the search, or a read-only query) writes a few documents of its own,
then runs one search (a few words of a small vocabulary whose words are prefixes of one
another, the last one cut short or not, ``eq`` filters on either filter field, a
``.filter`` after it) and consumes it with ``collect``/``take``/``first``/``paginate``,
a page from a cursor issued before or a page up to an end cursor. Then B commits one
write (an insert, a patch of the search field, a filter field or another field, a
delete) and A tries to commit.

The limits are Convex's, or small ones patched in (3 query terms, 3 distinct terms
matched, 3 results), so that the cuts they make happen among a handful of documents.

Checked against a plain-Python model (every document tokenized on its own, Convex's
matching rules, the engine's BM25 over the matched documents):

- A's result is the model's: documents, order, page ends and the limit's error;
- soundness: if A's search in the serial order B then A returns something else (other
  documents, another order, another page end, a changed document it read), A conflicts;
- no over-reach: a write whose versions hold none of the search's terms (nor a token the
  last one starts) to a document A did not read conflicts with nothing.

How often a write that changed nothing A saw still conflicts (the read set's width,
by design wider than exact) is reported as a Hypothesis event.
"""

from __future__ import annotations

import bisect
import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any
from unittest import mock

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from engine import UNSET, Engine, define_schema, define_table, keys
from engine import search as search_module
from engine.contexts import MutationCtx, QueryCtx
from engine.ids import decode_id
from engine.ranking import Posting, rank
from engine.tokenizer import tokenize
from engine.transaction import Transaction
from tests.property.interleaving import ends_in_conflict, run_terminal

SCHEMA = define_schema(
    {
        "d": define_table().search_index("s", search_field="body", filter_fields=["ch", "au"]),
        "out": define_table(),
    },
    schema_validation=False,
)
WORDS = ["a", "ab", "abc", "abd", "ac", "ad", "b", "ba", "bb", "c"]
texts = st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join)
bodies = st.one_of(texts, texts, texts, st.just(UNSET), st.just(7))
filter_values = st.sampled_from(["x", "y", 1, UNSET, "L" * 600])
rows = st.fixed_dictionaries(
    {"body": bodies, "ch": filter_values, "au": filter_values, "n": st.integers(0, 2)}
)
plans = st.fixed_dictionaries(
    {
        "words": st.lists(st.sampled_from([*WORDS, "q"]), min_size=1, max_size=5),
        "eqs": st.one_of(
            st.just({}),
            st.dictionaries(st.just("ch"), filter_values, min_size=1),  # narrows the reads
            st.dictionaries(st.sampled_from(["ch", "au"]), filter_values, max_size=2),
        ),
        "filter": st.booleans(),  # keeps documents with n != 0
        "terminal": st.sampled_from(["collect", "take", "first", "page", "cursor", "end"]),
        "n": st.integers(0, 4),
        "writable": st.booleans(),
        "small": st.booleans(),  # the small limits
    }
)
own_writes = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), rows),
        st.tuples(st.just("patch"), st.integers(0, 20), rows),
        st.tuples(st.just("delete"), st.integers(0, 20)),
    ),
    max_size=3,
)


def near(plan: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Rows that the plan's search is likely to care about: words of its query or words
    its last one starts, and its filter values (B's write is aimed at the search)."""
    last = plan["words"][-1]
    aimed = sorted({*plan["words"], *(w for w in WORDS if w.startswith(last))})
    text = st.lists(st.sampled_from(aimed), max_size=4).map(" ".join)
    values = sorted(set(plan["eqs"].values()), key=repr) or ["x"]
    value = st.one_of(st.sampled_from(values), filter_values)
    return st.fixed_dictionaries(
        {"body": st.one_of(text, text, bodies), "ch": value, "au": value, "n": st.integers(0, 2)}
    )


@st.composite
def other_write(draw: st.DrawFn, plan: dict[str, Any]) -> Any:
    """B's one write: an insert, a patch of some fields, or a delete."""
    kind = draw(st.sampled_from(["insert", "patch", "delete"]))
    if kind == "insert":
        return kind, draw(near(plan))
    if kind == "patch":
        return (
            kind,
            draw(st.integers(0, 20)),
            draw(near(plan)),
            draw(st.sets(st.sampled_from(list("bcan")))),
        )
    return kind, draw(st.integers(0, 20))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, ...]:
    plan = draw(plans)
    initial = draw(st.lists(st.one_of(rows, near(plan)), min_size=1, max_size=10))
    return initial, plan, draw(own_writes), draw(other_write(plan))


_FIELDS = {"b": "body", "c": "ch", "a": "au", "n": "n"}


def document(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not UNSET}


@contextlib.contextmanager
def limits(small: bool) -> Iterator[tuple[int, int, int]]:
    """(query terms, distinct terms, results): Convex's, or 3 each patched in."""
    if not small:
        yield (
            search_module.MAX_QUERY_TERMS,
            search_module.MAX_UNIQUE_TERMS,
            search_module.MAX_CANDIDATES,
        )
        return
    with (
        mock.patch.object(search_module, "MAX_QUERY_TERMS", 3),
        mock.patch.object(search_module, "MAX_UNIQUE_TERMS", 3),
        mock.patch.object(search_module, "MAX_CANDIDATES", 3),
    ):
        yield 3, 3, 3


Position = tuple[float, float, bytes]


class Model:
    """The search over a dict of documents, by Convex's rules, ranked by the engine's
    BM25 over the matched documents."""

    def __init__(self, plan: dict[str, Any], caps: tuple[int, int, int]) -> None:
        self.plan = plan
        self.terms = tokenize(" ".join(plan["words"]))[: caps[0]]
        self.unique, self.cap = caps[1], caps[2]

    def relevant(self, doc: dict[str, Any] | None) -> bool:
        """Whether a document version has an entry the search could read."""
        if not self.terms or doc is None or type(doc.get("body")) is not str:
            return False
        last = self.terms[-1]
        return any(t in self.terms or t.startswith(last) for t in tokenize(doc["body"]))

    def ranked(self, docs: dict[str, dict[str, Any]]) -> list[tuple[Position, str]]:
        terms = self.terms
        if not terms:
            return []
        exact = list(dict.fromkeys(terms))
        last = terms[-1]
        indexed = {
            t for d in docs.values() if type(d.get("body")) is str for t in tokenize(d["body"])
        }
        starting = sorted(
            (t for t in indexed if t.startswith(last) and t not in exact),
            key=lambda t: t.encode(),
        )[: self.unique - len(exact)]
        # The order the engine adds a document's terms in (the sums are then bit-equal).
        weights = [(t, 1.0) for t in exact if t != last] + [(last, 1.0)]
        weights += [(t, 0.5) for t in starting]
        postings: dict[bytes, Posting] = {}
        by_iid: dict[bytes, str] = {}
        for doc_id, doc in docs.items():
            if type(doc.get("body")) is not str:
                continue
            if any(
                keys.encode(doc.get(f, UNSET)) != keys.encode(v)
                for f, v in self.plan["eqs"].items()
            ):
                continue
            tokens = tokenize(doc["body"])
            counts = Counter(tokens)
            found = {t: (counts[t], w) for t, w in weights if counts[t]}
            if found:
                iid = decode_id(doc_id)[1]
                postings[iid] = Posting(doc["_creationTime"], len(tokens), found)
                by_iid[iid] = doc_id
        return [((s, t, i), by_iid[i]) for s, t, i in rank(postings)[: self.cap]]

    def outcome(
        self,
        docs: dict[str, dict[str, Any]],
        after: Position | None = None,
        end: Position | None = None,
    ) -> tuple[Any, set[str], Position | None]:
        """What A's caller sees (rows, page end; or the limit's error), the ids it
        fetched (point reads), and where a page stopped."""
        plan = self.plan
        terminal, n = plan["terminal"], plan["n"]
        paged = terminal in ("page", "cursor", "end")
        limit = {"collect": None, "take": n, "first": 1}.get(terminal, max(n, 1))
        if terminal == "end":
            limit = None
        ranked = self.ranked(docs)
        positions = [p for p, _ in ranked]
        start = 0 if after is None else bisect.bisect_right(positions, after)
        stop = len(ranked) if end is None else bisect.bisect_right(positions, end)
        rows: list[tuple[str, str]] = []
        fetched: set[str] = set()
        last: Position | None = None
        done = True
        if limit == 0 and not paged:
            return ([], None), fetched, None
        for i in range(start, max(start, stop) + 1):
            if i - start == self.cap:
                return ("error", "LimitExceeded"), fetched, None
            if i == stop:
                break
            position, doc_id = ranked[i]
            fetched.add(doc_id)
            last = position
            doc = docs[doc_id]
            if not plan["filter"] or doc.get("n") != 0:
                rows.append((doc_id, repr(sorted(doc.items()))))
            if limit is not None and len(rows) >= limit:
                done = False
                break
        if terminal == "end":
            return (rows, ("end", end)), fetched, end
        if not paged:
            return (rows, None), fetched, None
        return (rows, (done, None if done else last)), fetched, None if done else last


def run_search(db: Any, plan: dict[str, Any], cursor: str | None, end: str | None) -> Any:
    """The plan's terminal: ``(rows, page end)`` in the model's shape, or an error."""

    def build(q: Any) -> Any:
        chain = q.search("body", " ".join(plan["words"]))
        for field, value in plan["eqs"].items():
            chain = chain.eq(field, value)
        return chain

    q = db.query("d").with_search_index("s", build)
    if plan["filter"]:
        q = q.filter(lambda f: f.neq(f.field("n"), 0))
    opts: dict[str, Any] = {"numItems": max(plan["n"], 1), "cursor": cursor}
    if end is not None:
        opts["endCursor"] = end
    return run_terminal(q, plan["terminal"], plan["n"], opts)


def shaped(result: Any) -> Any:
    """The engine's result without cursors (compared through the model's page ends)."""
    if isinstance(result, tuple):
        return result
    page = result["page"] if isinstance(result, dict) else result
    return [(d["_id"], repr(sorted(d.items()))) for d in page]


def _row(body: str, ch: Any = "x") -> dict[str, Any]:
    return {"body": body, "ch": ch, "au": "x", "n": 1}


def _plan(words: list[str], small: bool = False, **more: Any) -> dict[str, Any]:
    plan = {"words": words, "eqs": {"ch": "x"}, "filter": False, "terminal": "collect"}
    return {**plan, "n": 0, "writable": True, "small": small, **more}


@settings(max_examples=300, deadline=None)
@given(case=cases())
# A new token between two that the last term starts, in the filter value searched.
@example(case=([_row("a"), _row("abd")], _plan(["a"]), [], ("insert", _row("abc"))))
# A term that is not the last one, read narrowed to the filter value.
@example(case=([_row("a")], _plan(["c", "a"]), [], ("insert", _row("c"))))
# Prefix matches past the room: a new token in another filter value pushes one out...
@example(
    case=(
        [_row("a"), _row("ab"), _row("abc")],
        _plan(["a"], small=True),
        [],
        ("insert", _row("aa", "y")),
    )
)
# ... and the delete of the last document of a token in another filter value lets one in.
@example(
    case=(
        [_row("a"), _row("ab"), _row("abc", "y"), _row("abd")],
        _plan(["a"], small=True),
        [],
        ("delete", 2),
    )
)
# A better match than the last of the results kept (at most 3 here).
@example(
    case=(
        [_row("a b"), _row("a c"), _row("a"), _row("b")],
        _plan(["a"], small=True, terminal="take", n=2),
        [],
        ("insert", _row("a a a")),
    )
)
def test_a_commit_that_changes_a_search_s_result_conflicts_with_it(case: tuple[Any, ...]) -> None:
    initial, plan, mine, theirs = case
    folder = tempfile.mkdtemp()
    txns: list[Transaction] = []
    try:
        with (
            Engine.open(folder, schema=SCHEMA, durability="none") as engine,
            limits(plan["small"]) as caps,
        ):
            try:
                interleave(engine, initial, plan, mine, theirs, caps, txns)
            finally:
                for txn in txns:
                    txn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def committed(engine: Engine) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in engine.run(lambda ctx: ctx.db.query("d").collect())}


def interleave(
    engine: Engine,
    initial: list[dict[str, Any]],
    plan: dict[str, Any],
    mine: list[Any],
    theirs: Any,
    caps: tuple[int, int, int],
    txns: list[Transaction],
) -> None:
    db = engine._db
    model = Model(plan, caps)
    ids = engine.run(
        lambda ctx: (
            [ctx.db.insert("out", {})] and [ctx.db.insert("d", document(row)) for row in initial]
        )
    )
    base = committed(engine)
    cursor = end = None
    after = end_position = None
    if plan["terminal"] in ("cursor", "end"):
        # A page run before any of the writes below: its end is A's start or end.
        first = {**plan, "terminal": "page"}
        page = engine.query(lambda ctx: run_search(ctx.db, first, None, None))
        _, _, stopped = Model(first, caps).outcome(base)
        if not isinstance(page, dict) or page["isDone"]:
            plan = first  # no page after it, nor an end before the End: a first page
            model = Model(plan, caps)
        elif plan["terminal"] == "cursor":
            cursor, after = page["continueCursor"], stopped
        else:
            end, end_position = page["continueCursor"], stopped

    # A: its own writes, then the search; kept open while B commits.
    writable = plan["writable"]
    txn = Transaction(db, writable)
    txns.append(txn)
    ctx = (MutationCtx if writable else QueryCtx)(None, txn, None, 0.0)
    view = dict(base)
    own: set[str] = set()
    touched: set[str] = set()
    for write in mine if writable else []:
        if write[0] == "insert":
            new_id = ctx.db.insert("d", document(write[1]))
            own.add(new_id)
            view[new_id] = ctx.db.get(new_id)
        elif ids:
            target = ids[write[1] % len(ids)]
            touched.add(target)
            if target not in view:
                continue  # A deleted it already
            if write[0] == "patch":
                ctx.db.replace(target, document(write[2]))
                view[target] = ctx.db.get(target)
            else:
                ctx.db.delete(target)
                del view[target]
    result = run_search(ctx.db, plan, cursor, end)
    seen, fetched, _ = model.outcome(view, after, end_position)
    got = shaped(result)
    assert got == (seen if isinstance(seen[0], str) else seen[0]), (got, seen)
    if isinstance(result, dict):
        stop = seen[1]
        assert result["isDone"] == (stop[1] is None if plan["terminal"] != "end" else False)
    reads = txn.reads.freeze()
    if writable:
        ctx.db.insert("out", {})  # a write of its own, so that it commits

    # B: one write, committed while A is open.
    target = None
    old = new = None
    if theirs[0] == "insert":
        new_id = engine.run(lambda c: c.db.insert("d", document(theirs[1])))
        new = engine.run(lambda c: c.db.get(new_id))
    elif ids:
        target = ids[theirs[1] % len(ids)]
        old = base.get(target)
        if old is None:
            return
        if theirs[0] == "patch":
            fields = {_FIELDS[f]: theirs[2][_FIELDS[f]] for f in theirs[3]}
            engine.run(lambda c: c.db.patch(target, fields))
            new = engine.run(lambda c: c.db.get(target))
        else:
            engine.run(lambda c: c.db.delete(target))
    else:
        return

    # A's search in the serial order B then A.
    view_after = committed(engine)
    for doc_id in own | touched:
        if doc_id in view:
            view_after[doc_id] = view[doc_id]
        else:
            view_after.pop(doc_id, None)
    rerun, _, _ = model.outcome(view_after, after, end_position)

    conflict = ends_in_conflict(db, txn, reads, writable)

    if rerun != seen:
        assert conflict, f"stale search committed: saw {seen}, now {rerun}"
    irrelevant = not model.relevant(old) and not model.relevant(new)
    if irrelevant and target not in fetched and target not in touched:
        assert not conflict, (old, new, seen)
    if conflict and rerun == seen:
        event("conflict, result unchanged" + (" (irrelevant write)" if irrelevant else ""))
    elif conflict:
        event("conflict, result changed")
    else:
        event("no conflict")
