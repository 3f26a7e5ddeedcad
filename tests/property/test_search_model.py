"""Stateful property test: full-text searches agree with a brute-force reference.

Random inserts, patches and deletes of documents whose search field holds a few
words of a tiny vocabulary (words that are prefixes of one another, mixed case,
punctuation) or no string at all, with filter fields of mixed types, missing
included. After each step random searches (any words, the last one often cut
short, with ``eq`` filters) run on the engine and on the model, which tokenizes
every document character by character (Tantivy's SimpleTokenizer: runs of
alphanumerics, lowercased one character at a time, tokens of 32 bytes or more
dropped) and matches by Convex's rules: any term, the last one also as a prefix
of the indexed tokens (at most 64 distinct terms in all). The SETS of documents
are compared: committed, inside a mutation with uncommitted writes of its own, and
as the pages of a paginated search (which must add up to ``collect()``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from engine import UNSET, define_schema, define_table, keys, tokenizer
from tests.property.machines import EngineMachine

SCHEMA = define_schema(
    {
        "docs": define_table().search_index(
            "search", search_field="body", filter_fields=["channel", "author"]
        )
    },
    schema_validation=False,
)

#: Beside ASCII and Latin-1: Devanagari with a vowel sign (Other_Alphabetic: a letter to
#: Rust, not to str.isalnum), Arabic with harakat, a Brahmi vowel sign and a letter of
#: Unicode 15 (past U+FFFF: the tokenizer's other class).
MARKED = ["हि", "ह", "كِتَ", "\U00011003\U00011038", "\U00031350"]
WORDS = st.sampled_from(
    [
        "a",
        "ab",
        "abc",
        "AB",
        "b",
        "ba",
        "bab",
        "c",
        "Ça",
        "ça",
        "x1",
        "1x",
        "z" * 31,
        "z" * 32,
        *MARKED,
    ]
)
SEPARATORS = st.sampled_from([" ", "  ", ", ", "-", "_", ".", "\n", "!?", "\u094d"])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), max_size=5).map(
    lambda parts: "".join(word + separator for word, separator in parts)
)
BODIES = st.one_of(TEXTS, TEXTS, st.just(UNSET), st.sampled_from([None, 5, ["a"], {"a": "b"}]))
FILTER_VALUES = st.sampled_from(["x", "y", None, 1, 1.0, UNSET])
QUERY_WORDS = st.sampled_from(
    [
        "a",
        "ab",
        "abc",
        "b",
        "ba",
        "c",
        "ç",
        "ça",
        "x",
        "x1",
        "1",
        "q",
        "z",
        "z" * 31,
        "z" * 32,
        *MARKED,
    ]
)
QUERY_TEXTS = st.lists(QUERY_WORDS, max_size=4).map(" ".join)
EQUALITIES = st.dictionaries(st.sampled_from(["channel", "author"]), FILTER_VALUES, max_size=2)


def _spans(spans: str) -> frozenset[str]:
    out: set[str] = set()
    for span in spans.split():
        first, _, last = span.partition("-")
        out.update(chr(c) for c in range(int(first, 16), int(last or first, 16) + 1))
    return frozenset(out)


#: Rust's char::is_alphanumeric beyond str.isalnum (the tokenizer's data, read one
#: character at a time here).
_RUST_ONLY = _spans(tokenizer._RUST_ONLY)


def alphanumeric(character: str) -> bool:
    """Rust's ``char::is_alphanumeric``, which Tantivy's SimpleTokenizer splits by."""
    return character.isalnum() or character in _RUST_ONLY


def brute_tokens(text: Any) -> set[str]:
    """The distinct tokens of a search field, one character at a time."""
    if type(text) is not str:
        return set()
    found: set[str] = set()
    word = ""
    for character in text + " ":
        if alphanumeric(character):
            word += character
            continue
        if word and len(word.encode()) < 32:
            found.add("".join(c.lower() for c in word))
        word = ""
    return found


def brute_query_terms(text: str) -> list[str]:
    terms: list[str] = []
    word = ""
    for character in text + " ":
        if alphanumeric(character):
            word += character
        else:
            if word and len(word.encode()) < 32:
                terms.append("".join(c.lower() for c in word))
            word = ""
    return terms[:16]


def model_search(documents: list[dict[str, Any]], text: str, eqs: dict[str, Any]) -> set[str]:
    terms = brute_query_terms(text)
    if not terms:
        return set()
    exact = set(terms)
    indexed = set().union(*(brute_tokens(d.get("body", UNSET)) for d in documents))
    last = terms[-1]
    starting = sorted(
        (t for t in indexed if t.startswith(last) and t not in exact), key=lambda t: t.encode()
    )
    matched = exact | set(starting[: 64 - len(exact)])
    return {
        d["_id"]
        for d in documents
        if brute_tokens(d.get("body", UNSET)) & matched
        and all(keys.encode(d.get(f, UNSET)) == keys.encode(value) for f, value in eqs.items())
    }


def engine_search(ctx: Any, text: str, eqs: dict[str, Any]) -> Any:
    def build(q: Any) -> Any:
        chain = q.search("body", text)
        for field, value in eqs.items():
            chain = chain.eq(field, value)
        return chain

    return ctx.db.query("docs").with_search_index("search", build)


def fields_of(body: Any, channel: Any, author: Any) -> dict[str, Any]:
    pairs = (("body", body), ("channel", channel), ("author", author))
    return {name: value for name, value in pairs if value is not UNSET}


class SearchModel(EngineMachine):
    documents = EngineMachine.documents

    schema = SCHEMA

    @rule(target=documents, body=BODIES, channel=FILTER_VALUES, author=FILTER_VALUES)
    def insert(self, body: Any, channel: Any, author: Any) -> str:
        fields = fields_of(body, channel, author)
        doc_id = self.engine.run(lambda ctx: ctx.db.insert("docs", dict(fields)))
        self.model[doc_id] = self.engine.run(lambda ctx: ctx.db.get(doc_id))
        return doc_id

    @rule(doc_id=documents, field=st.sampled_from(["body", "channel"]), value=BODIES)
    def patch(self, doc_id: str, field: str, value: Any) -> None:
        if doc_id not in self.model:
            return
        self.engine.run(lambda ctx: ctx.db.patch(doc_id, {field: value}))
        self.model[doc_id] = self.engine.run(lambda ctx: ctx.db.get(doc_id))

    @rule(text=QUERY_TEXTS, eqs=EQUALITIES, size=st.integers(1, 4))
    def search(self, text: str, eqs: dict[str, Any], size: int) -> None:
        expected = model_search(list(self.model.values()), text, eqs)

        everything = self.engine.run(
            lambda ctx: [d["_id"] for d in engine_search(ctx, text, eqs).collect()]
        )
        assert set(everything) == expected
        assert len(everything) == len(set(everything))
        paged: list[str] = []
        cursor = None
        while True:  # one paginated query per function run: a run per page
            page = self.engine.run(
                lambda ctx: engine_search(ctx, text, eqs).paginate(
                    {"numItems": size, "cursor": cursor}
                )
            )
            paged += [d["_id"] for d in page["page"]]
            if page["isDone"]:
                break
            cursor = page["continueCursor"]
        assert paged == everything

    @rule(
        text=QUERY_TEXTS,
        eqs=EQUALITIES,
        body=BODIES,
        channel=FILTER_VALUES,
        doc_id=documents,
        patched=BODIES,
    )
    def search_own_writes(
        self, text: str, eqs: dict[str, Any], body: Any, channel: Any, doc_id: str, patched: Any
    ) -> None:
        """A mutation's search sees its insert, patch and delete, then rolls back."""

        class Rollback(Exception):
            pass

        model = dict(self.model)
        found: list[set[str]] = []

        def run(ctx: Any) -> None:
            new_id = ctx.db.insert("docs", fields_of(body, channel, UNSET))
            model[new_id] = ctx.db.get(new_id)
            if doc_id in model:
                ctx.db.patch(doc_id, {"body": patched})
                model[doc_id] = ctx.db.get(doc_id)
                if len(model) % 2:
                    ctx.db.delete(doc_id)
                    del model[doc_id]
            found.append({d["_id"] for d in engine_search(ctx, text, eqs).collect()})
            raise Rollback

        try:
            self.engine.run(run)
        except Rollback:
            pass
        assert found[0] == model_search(list(model.values()), text, eqs)


TestSearchModel = SearchModel.TestCase
TestSearchModel.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
