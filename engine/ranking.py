"""Relevance order of search results: BM25 over the documents a search matched.

For a search whose matching documents (those with at least one of its terms and
every ``eq`` filter value) number ``N``, with an average of ``avgdl`` tokens in
their search field, the score of document ``d`` is::

    score(d) = Σ over the terms t that d has:
               w(t) · idf(t) · tf(t, d) · (k1 + 1) / (tf(t, d) + k1 · (1 − b + b · len(d) / avgdl))

    idf(t)   = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

with ``k1 = 1.2`` and ``b = 0.75`` (Tantivy's BM25 constants), ``tf(t, d)`` the
times ``d``'s search field has token ``t``, ``len(d)`` its number of tokens,
``df(t)`` the matching documents that have ``t``, and ``w(t)`` 1 for a term of
the query and 1/2 for a token that the query's last term is only a prefix of
(Convex's prefix boost). Results come by score, highest first; equal scores
newest first (``_creationTime`` descending, as Convex), then by id.

Where this differs from Convex: Convex's statistics (``N``, ``avgdl``, ``df``)
cover every document of the index, and it adds proximity and exact-match
signals ("relevance order is subject to change"). Here they cover only the
documents the search matched, which are exactly what the search read: so a
result's rank depends on nothing outside the search's read set, and a commit
that changes no matching document cannot change it (Convex's read set ignores
such commits too, while its ranks move with them). Every score is positive
(``idf > 0``), so what the formula guarantees is: among documents with equal
token counts and equal counts of each term they share, one having more of the
query's terms, or a rarer one (smaller ``df``), ranks higher.

Cost: one pass over the matched entries, then a sort of the matched documents.
"""

from __future__ import annotations

import math

__all__ = ["K1", "B", "Posting", "rank"]

#: BM25's term-frequency saturation and length normalization (Tantivy's values).
K1 = 1.2
B = 0.75


class Posting:
    """What a search read about one matching document: its ``_creationTime``, its
    number of tokens, and ``term → (times the field has it, weight)``."""

    __slots__ = ("creation_time", "length", "terms")

    def __init__(
        self, creation_time: float, length: int, terms: dict[str, tuple[int, float]]
    ) -> None:
        self.creation_time = creation_time
        self.length = length
        self.terms = terms


def rank(postings: dict[bytes, Posting]) -> list[tuple[float, float, bytes]]:
    """``(-score, -creation time, internal id)`` of every document of ``postings``
    (keyed by internal id), ascending: best first (see the module docstring).

    Example::

        >>> a = Posting(1.0, 2, {"hello": (1, 1.0), "world": (1, 1.0)})
        >>> b = Posting(2.0, 2, {"hello": (1, 1.0)})
        >>> [iid for _, _, iid in rank({b"a": a, b"b": b})]
        [b'a', b'b']
    """
    n = len(postings)
    if not n:
        return []
    frequency: dict[str, int] = {}
    total = 0
    for posting in postings.values():
        total += posting.length
        for term in posting.terms:
            frequency[term] = frequency.get(term, 0) + 1
    average = total / n
    idf = {t: math.log(1.0 + (n - df + 0.5) / (df + 0.5)) for t, df in frequency.items()}
    scale = K1 + 1.0
    base = K1 * (1.0 - B)
    per_token = K1 * B / average
    ranked = []
    for internal_id, posting in postings.items():
        norm = base + per_token * posting.length
        score = 0.0
        for term, (tf, weight) in posting.terms.items():
            score += weight * idf[term] * tf * scale / (tf + norm)
        ranked.append((-score, -posting.creation_time, internal_id))
    ranked.sort()
    return ranked
