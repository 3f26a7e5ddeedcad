"""Full-text search queries: ``ctx.db.query(t).with_search_index(name, lambda q: ...)``.

A search filter is Convex's: one ``q.search(search_field, text)`` and up to 8
``q.eq(filter_field, value)``. The text is tokenized as the index's field is
(:mod:`engine.tokenizer`); its first 16 tokens are the query's terms (Convex keeps
16 and drops the rest silently); the last term also matches every indexed token
it is a prefix of ("typeahead"). A document matches if it has at least one of the
terms and every ``eq``; results come in relevance order (:mod:`engine.ranking`),
at most 1024 of them (Convex's ``MAX_CANDIDATE_REVISIONS``: reading past them
raises ``LimitExceeded``).

Reading (cost): one range read per distinct term of the search index's entries
(:mod:`engine.searchkeys`) and one of the entries of the tokens the last term
starts (at most 64 distinct terms in all, Convex's ``MAX_UNIQUE_QUERY_TERMS``),
each narrowed by the values ``eq`` gives the first filter fields; then one point
read per result consumed. The ranges go into the read set as any index range does,
so a commit that adds, removes or changes an entry of a matching document
conflicts with a mutation that searched, and re-runs a subscription that did; the
point reads catch changes to the other fields of the results read. Inside a
mutation the ranges merge its own uncommitted writes.

Example::

    (ctx.db.query("messages")
        .with_search_index("search_body",
                           lambda q: q.search("body", "hello hi").eq("channel", "#general"))
        .take(10))
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from . import keys
from .catalog import IndexDef, TableDef
from .encoding import DecodeError, document_decoder
from .errors import CorruptionError, IndexNotFound, InvalidIndexRange, LimitExceeded
from .filters import field_path_problem
from .indexing import field_value, split_path
from .ranking import Posting, rank
from .scans import _scan_index, _scan_lmdb, damaged_document
from .searchkeys import prefix_range, read_entry, term_range
from .tokenizer import tokenize
from .values import UNSET, convert, type_name

if TYPE_CHECKING:
    from .transaction import Transaction

__all__ = [
    "MAX_CANDIDATES",
    "MAX_FILTER_CONDITIONS",
    "MAX_QUERY_TERMS",
    "MAX_UNIQUE_TERMS",
    "SearchFilterBuilder",
    "SearchPlan",
    "SearchResults",
]

#: Convex's ``MAX_QUERY_TERMS``: tokens of the search text past these are dropped.
MAX_QUERY_TERMS = 16
#: Convex's ``MAX_FILTER_CONDITIONS``: ``eq`` filters per search.
MAX_FILTER_CONDITIONS = 8
#: Convex's ``MAX_CANDIDATE_REVISIONS``: results a search can read.
MAX_CANDIDATES = 1024
#: Convex's ``MAX_UNIQUE_QUERY_TERMS``: distinct terms matched, prefix matches included.
MAX_UNIQUE_TERMS = 64

_decode_document = document_decoder()
_RESTORE = (
    "Run Engine.check() to list the damage, and restore the folder from a backup (Engine.backup)."
)
_BUILDER_USED = (
    "SearchFilterBuilder has already been used! Chain your method calls like "
    "`lambda q: q.search(...).eq(...)`."
)


class SearchFilterBuilder:
    """The ``q`` of ``.with_search_index(name, lambda q: ...)``, as Convex's.

    ``q.search(field, text)`` once, then ``.eq(field, value)`` on filter fields
    (``engine.UNSET``: the field is missing). Each call returns a new builder and
    uses this one up, so the callback must return the end of one chain.
    """

    __slots__ = ("_consumed", "_filters")

    def __init__(self, filters: tuple[tuple[str, str, Any], ...] = ()) -> None:
        self._filters = filters
        self._consumed = False

    def _then(self, kind: str, field: object, value: Any) -> SearchFilterBuilder:
        if self._consumed:
            raise InvalidIndexRange(_BUILDER_USED, code="SearchFilterBuilderUsed")
        if not isinstance(field, str):
            raise InvalidIndexRange(
                f"q.{kind}() takes a field name (str) first, got {field!r}",
                code="InvalidSearchFilter",
            )
        path = field.strip(".")
        problem = field_path_problem(path) if path else f"Empty path {field}"
        if problem is not None:
            raise InvalidIndexRange(
                f"Invalid field path {field!r} in the search filter: {problem}",
                code="InvalidSearchFilter",
            )
        self._consumed = True
        return SearchFilterBuilder((*self._filters, (kind, path, value)))

    def search(self, field: str, text: str) -> SearchFilterBuilder:
        """Documents whose ``field`` (the index's search field) matches ``text``."""
        if not isinstance(text, str):
            raise InvalidIndexRange(
                f"q.search({field!r}, text) searches for a str, got {type_name(text)} {text!r:.60}",
                code="InvalidSearchFilter",
            )
        return self._then("search", field, text)

    def eq(self, field: str, value: Any) -> SearchFilterBuilder:
        """Only documents whose ``field`` (a filter field) equals ``value``."""
        return self._then("eq", field, value if value is UNSET else convert(value))

    def _export(self) -> tuple[tuple[str, str, Any], ...]:
        if self._consumed:
            raise InvalidIndexRange(_BUILDER_USED, code="SearchFilterBuilderUsed")
        self._consumed = True
        return self._filters


class SearchPlan:
    """A search filter compiled against one search index (see :meth:`compile`)."""

    __slots__ = ("equalities", "exact", "index", "leading", "prefix", "table", "terms")

    def __init__(
        self,
        table: TableDef,
        index: IndexDef,
        terms: list[str],
        equalities: list[tuple[int, bytes]],
    ) -> None:
        self.table = table
        self.index = index
        #: The query's tokens (at most 16, repeats included), as given.
        self.terms = terms
        #: Distinct terms, in query order: each matches exactly (the last one too).
        self.exact = list(dict.fromkeys(terms))
        #: The last term, which also matches the tokens it starts.
        self.prefix = terms[-1] if terms else None
        #: (filter field position, sort key of the value) of each ``eq``.
        self.equalities = equalities
        # The sort keys of the values given to the first filter fields, in order: the
        # entries of a term with them are one interval (searchkeys' layout).
        given = dict(equalities)
        leading = b""
        for position in range(len(index.filter_fields)):
            if position not in given:
                break
            leading += given[position]
        self.leading = leading

    @classmethod
    def build(
        cls,
        table_name: str,
        table: TableDef | None,
        name: str,
        index: IndexDef | None,
        search: Callable[[SearchFilterBuilder], Any],
    ) -> SearchPlan:
        """The plan of ``with_search_index(name, search)`` on ``table`` (None: it does
        not exist) whose index ``name`` is ``index`` (None: it has none).

        Raises :class:`IndexNotFound` (Convex's ``index_not_found_error``, and
        ``IndexNotASearchIndexError`` for a database index) and :class:`InvalidIndexRange`
        for a callback that does not build one chain, then as :meth:`compile`.
        """
        if not callable(search):
            raise InvalidIndexRange(
                f"with_search_index({name!r}, search) expects a function of q, such as "
                f"lambda q: q.search('body', text), got {search!r}",
                code="InvalidSearchFilter",
            )
        if table is None or index is None:
            raise IndexNotFound(
                f"Index {table_name}.{name} not found.", table=table_name, index=name
            )
        if not index.is_search:
            raise IndexNotFound(
                f"Index {table_name}.{name} is not a search index. "
                + (
                    "It is a vector index: search it from an action with "
                    "ctx.vector_search(table, index, vector=...)."
                    if index.is_vector
                    else "Read it with .with_index(name, range)."
                ),
                table=table_name,
                index=name,
            )
        chain = search(SearchFilterBuilder())
        if not isinstance(chain, SearchFilterBuilder):
            raise InvalidIndexRange(
                "The search filter callback must return the chain it builds, such as "
                f"q.search('{index.search_field}', text).eq(field, value); got {chain!r}.",
                code="InvalidSearchFilter",
            )
        return cls.compile(table, index, chain._export())

    @classmethod
    def compile(
        cls, table: TableDef, index: IndexDef, filters: tuple[tuple[str, str, Any], ...]
    ) -> SearchPlan:
        """Check ``filters`` against the index, with Convex's errors and their order
        (``TantivySearchIndexSchema::compile`` in crates/search/src/lib.rs).

        Raises :class:`InvalidIndexRange` with Convex's code: ``IncorrectSearchField``,
        ``DuplicateSearchFiltersError``, ``IncorrectFilterFieldError``,
        ``MissingSearchFilterError``, ``TooManyFilterConditionsInSearchQueryError``.
        """
        name = f"{table.name}.{index.name}"
        search_field = index.search_field
        text: str | None = None
        equalities: list[tuple[int, bytes]] = []
        positions = {field: i for i, field in enumerate(index.filter_fields)}
        for kind, field, value in filters:
            if kind == "search":
                if field != search_field:
                    raise InvalidIndexRange(
                        f'Search query against {name} contains a search filter against "{field}", '
                        f'which doesn\'t match the indexed `searchField` "{search_field}".',
                        code="IncorrectSearchField",
                    )
                if text is not None:
                    raise InvalidIndexRange(
                        f'Search query against {name} contains multiple search filters against "'
                        f'{field}". Only one is allowed.',
                        code="DuplicateSearchFiltersError",
                    )
                text = value
                continue
            if field not in positions:
                raise InvalidIndexRange(
                    f'Search query against {name} contains an equality filter on "{field}" but '
                    "that field isn't indexed for filtering in `filterFields`.",
                    code="IncorrectFilterFieldError",
                )
            equalities.append((positions[field], keys.encode(value)))
        if text is None:
            raise InvalidIndexRange(
                f"Search query against {name} does not contain any search filters. You must "
                f'include a search filter like `q.search("{search_field}", search_text)`.',
                code="MissingSearchFilterError",
            )
        terms = tokenize(text)[:MAX_QUERY_TERMS]
        if len(equalities) > MAX_FILTER_CONDITIONS:
            raise InvalidIndexRange(
                f"Search query against {name} has too many filter conditions. Max: "
                f"{MAX_FILTER_CONDITIONS} Actual: {len(equalities)}",
                code="TooManyFilterConditionsInSearchQueryError",
            )
        return cls(table, index, terms, equalities)

    def description(self) -> list[Any]:
        """What identifies the search for cursors: terms and filter values (sort keys)."""
        return [self.terms, sorted([position, value.hex()] for position, value in self.equalities)]

    def run(self, txn: Transaction) -> SearchResults:
        """Read the matching entries, rank them, keep the best :data:`MAX_CANDIDATES`.

        Records the ranges read in ``txn``'s read set. Cost: one step and one entry
        decode per entry of the terms' ranges (narrowed by the leading filter values),
        then a sort of the matching documents.
        """
        if not self.terms:  # no token: nothing matches, and nothing was read
            return SearchResults(self.table, [], [])
        index = self.index
        prefix = index.prefix
        count = len(index.filter_fields)
        equalities = self.equalities
        postings: dict[bytes, Posting] = {}
        last = self.prefix
        for term in self.exact:
            if term == last:
                continue  # read with the tokens it starts, below
            lo, hi = term_range(prefix, term, self.leading)
            for key in _keys(txn, index, lo, hi):
                _post(postings, key, count, equalities, term, 1.0)
            txn.reads.add_interval(lo, hi)
        assert last is not None  # there are terms
        matched = set(self.exact)  # and the tokens the last term starts, once read
        exact = set(self.exact)
        cut = _expand(txn, index, last, exact, self.leading, postings, count, equalities, matched)
        ranked = rank(postings)[:MAX_CANDIDATES]
        encode = keys.encode
        return SearchResults(
            self.table,
            [prefix + encode(score) + encode(time) + iid for score, time, iid in ranked],
            [iid for _, _, iid in ranked],
            (self, frozenset(matched), None if cut else last),
        )

    def matches(self, document: dict[str, Any], tokens: frozenset[str], prefix: str | None) -> bool:
        """Whether ``document`` (as a transaction wrote it since the search ran) still
        matches: its search field has one of the ``tokens`` the search matched, or one
        starting with ``prefix`` (the last term, when its prefix matches were not cut at
        :data:`MAX_UNIQUE_TERMS`), and every ``eq`` holds. Cost: one tokenization."""
        index = self.index
        text = field_value(document, split_path(index.search_field))
        if type(text) is not str:
            return False
        if not any(
            token in tokens or (prefix is not None and token.startswith(prefix))
            for token in tokenize(text)
        ):
            return False
        encode = keys.encode
        return all(
            encode(field_value(document, split_path(index.filter_fields[position]))) == value
            for position, value in self.equalities
        )


def _expand(
    txn: Transaction,
    index: IndexDef,
    start: str,
    exact: set[str],
    leading: bytes,
    postings: dict[bytes, Posting],
    count: int,
    equalities: list[tuple[int, bytes]],
    matched: set[str],
) -> bool:
    """Add the entries of ``start`` itself (weight 1) and of the tokens it is a proper
    prefix of (weight 1/2, as Convex boosts prefix matches): the first
    ``MAX_UNIQUE_TERMS - len(exact)`` of those in token order (UTF-8 byte order, as
    Convex's), skipping the other exact terms (read on their own). Adds those tokens to
    ``matched``; returns True if tokens were left out (a cut).

    Without values for the first filter fields (``leading``) this is one range read,
    recorded up to the first token left out. With them, it visits each token's
    entries with those values only, and records those ranges and the gaps between
    tokens (where a new token would go): a commit to another filter value's entries
    of a token already there does not touch it. Once tokens are left out, which ones
    depends on every token before the cut, in any filter value: the whole range up to
    the cut is recorded then.
    """
    lo, hi = prefix_range(index.prefix, start)
    room = MAX_UNIQUE_TERMS - len(exact)
    reads = txn.reads
    cut = False
    if not leading:
        token = ""
        weight = 0.0
        scan = _keys(txn, index, lo, hi)
        try:
            for key in scan:
                entry_token = _token(key)
                if entry_token != token:
                    token = entry_token
                    weight = _weight(token, start, exact, room)
                    if weight < 0:
                        hi = term_range(index.prefix, token)[0]  # read up to this token only
                        cut = True
                        break
                    if weight == 0.5:
                        room -= 1
                        matched.add(token)
                if weight:
                    _post(postings, key, count, equalities, token, weight)
        finally:
            scan.close()
        reads.add_interval(lo, hi)
        return cut
    position = lo
    ranges: list[tuple[bytes, bytes]] = []  # the tokens' narrowed ranges and the gaps
    while True:
        found = _first(txn, index, position, hi)
        if found is None:
            break
        token = _token(found)
        token_lo, token_hi = term_range(index.prefix, token)
        weight = _weight(token, start, exact, room)
        if weight < 0:  # cut: the tokens before it decide which come in
            reads.add_interval(lo, token_lo)
            return True
        ranges.append((position, token_lo))
        if weight == 0.5:
            room -= 1
            matched.add(token)
        if weight:
            first, last = term_range(index.prefix, token, leading)
            for entry in _keys(txn, index, first, last):
                _post(postings, entry, count, equalities, token, weight)
            ranges.append((first, last))
        position = token_hi
    ranges.append((position, hi))
    if len(ranges) > _MAX_NARROWED_RANGES:
        # Many tokens start with the term: one range over them all, so a search costs
        # one of the transaction's 4,096 ranges, not two per token (it also conflicts
        # with writes of the tokens' other filter values: more re-runs, none missed).
        reads.add_interval(lo, hi)
        return False
    for low, high in ranges:
        reads.add_interval(low, high)
    return False


#: Most ranges a filtered prefix read records one by one (see :func:`_expand`).
_MAX_NARROWED_RANGES = 9


def _weight(token: str, start: str, exact: set[str], room: int) -> float:
    """The weight of ``token``'s entries in a prefix read of ``start``: 1 for
    ``start`` itself, 0 for another exact term (read on its own), 1/2 for a prefix
    match while ``room`` is left, -1 for one past the room (the read stops there)."""
    if token == start:
        return 1.0
    if token in exact:
        return 0.0
    return 0.5 if room > 0 else -1.0


def _first(txn: Transaction, index: IndexDef, lo: bytes, hi: bytes) -> bytes | None:
    """The first key of ``index`` in ``[lo, hi)`` as ``txn`` sees it (None: none)."""
    scan = _keys(txn, index, lo, hi)
    try:
        return next(scan, None)
    finally:
        scan.close()


def _token(key: bytes) -> str:
    return key[5 : key.index(b"\x00", 5)].decode()


def _post(
    postings: dict[bytes, Posting],
    key: bytes,
    count: int,
    equalities: list[tuple[int, bytes]],
    term: str,
    weight: float,
) -> None:
    """Add entry ``key`` to ``postings`` if its filter values match every ``eq``."""
    try:
        read = read_entry(key, count, equalities)
    except (ValueError, IndexError) as error:
        raise CorruptionError.damaged(
            f"search index entry {key.hex()} does not decode: {error}", _RESTORE
        ) from None
    if read is None:
        return
    internal_id, creation_time, frequency, length = read
    posting = postings.get(internal_id)
    if posting is None:
        posting = postings[internal_id] = Posting(creation_time, length, {})
    posting.terms[term] = (frequency, weight)


def _keys(txn: Transaction, index: IndexDef, lo: bytes, hi: bytes) -> Generator[bytes, None, None]:
    """The keys of ``index`` in ``[lo, hi)`` as ``txn`` sees them, ascending: the
    snapshot's, less the ones its own writes removed, merged with the ones they added.
    Records nothing (the caller records what it consumed)."""
    storage = txn._storage
    rtxn = txn._txn()
    if index.number in storage.long_indexes(rtxn):
        base = _scan_index(rtxn, storage.indexes, lo, hi, False)
    else:
        base = _scan_lmdb(rtxn, storage.indexes, lo, hi, False)
    try:
        writes = txn.writes
        if not writes.documents:
            yield from base
            return
        removed = writes.removed
        stored = (key for key in base if key not in removed)
        added = writes.added.irange(lo, hi, inclusive=(True, False))
        yield from heapq.merge(stored, added)
    finally:
        if isinstance(base, Generator):
            base.close()


class SearchResults:
    """A search's ranked results (at most :data:`MAX_CANDIDATES`): for each, its
    position (the key a cursor holds: index number, -score, -creation time, id)
    and its internal id, best first."""

    __slots__ = ("ids", "match", "positions", "table")

    def __init__(
        self,
        table: TableDef,
        positions: list[bytes],
        ids: list[bytes],
        match: tuple[SearchPlan, frozenset[str], str | None] | None = None,
    ) -> None:
        self.table = table
        self.positions = positions
        self.ids = ids
        #: The search, the tokens it matched and its open prefix (see
        #: :meth:`SearchPlan.matches`): how to tell whether a result the transaction
        #: wrote still matches.
        self.match = match

    def __len__(self) -> int:
        return len(self.positions)

    def fetch(
        self, txn: Transaction, start: int = 0, stop: int | None = None
    ) -> Generator[tuple[bytes, dict[str, Any] | None], None, None]:
        """``(position, document)`` of results ``start`` to ``stop``, read as they are
        consumed (a point read each, counted against the read limits). A document
        the transaction deleted since the search is None, and so is one it changed so
        that the search no longer matches it (:meth:`SearchPlan.matches`); one it changed
        that still matches comes as it is now, in the place it was ranked.

        Raises :class:`LimitExceeded` (Convex's ``SearchQueryScannedTooManyDocumentsError``)
        when asked for one more after :data:`MAX_CANDIDATES` were read: the results
        may go on past them (Convex checks before looking).
        """
        table = self.table
        stop = len(self.positions) if stop is None else stop
        for i in range(start, stop + 1):
            if i - start == MAX_CANDIDATES:
                raise LimitExceeded(
                    f"Search query scanned too many documents (fetched {MAX_CANDIDATES}). "
                    "Consider using a smaller limit, paginating the query, or using a filter "
                    "field to limit the number of documents pulled from the search index.",
                    limit="SearchQueryScannedTooManyDocumentsError",
                )
            if i == stop:
                return
            internal_id = self.ids[i]
            doc_key = table.prefix + internal_id
            raw = txn._raw(table, doc_key, internal_id)
            document = None
            if raw is not None:
                try:
                    document = _decode_document(raw)
                except DecodeError as error:
                    raise damaged_document(doc_key, error) from None
                match = self.match
                if (
                    match is not None
                    and doc_key in txn.writes.documents
                    and not match[0].matches(document, match[1], match[2])
                ):
                    document = None  # changed by this transaction: no longer a result
            elif doc_key not in txn.writes.documents:  # not deleted by this transaction
                raise CorruptionError.damaged(
                    f"a search index entry of table {table.name!r} points to the missing "
                    f"document {doc_key.hex()}",
                    _RESTORE,
                )
            yield self.positions[i], document
