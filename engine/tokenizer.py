"""The tokenizer of full-text search: Convex's, Tantivy's ``SimpleTokenizer`` chain.

Convex analyzes a search field and a search query the same way
(``convex_en`` in crates/search/src/constants.rs): Tantivy's
``SimpleTokenizer`` (a token is a maximal run of alphanumeric characters; every
other character separates tokens), then ``RemoveLongFilter::limit(32)`` (a token
of 32 UTF-8 bytes or more is dropped, measured before lowercasing), then
``LowerCaser`` (each character lowercased on its own).

Example::

    >>> tokenize("Hello, World! hello-again")
    ['hello', 'world', 'hello', 'again']

"Alphanumeric" is Python's ``str.isalnum`` per character; Rust's
``char::is_alphanumeric`` also counts the combining vowel signs of some scripts
(Unicode's ``Other_Alphabetic``, e.g. Devanagari's), which Python does not: text
in those scripts splits into more tokens here than in Convex. Cost: one regular
expression pass over the text, plus a length check and a lowercase per token.
"""

from __future__ import annotations

import re

__all__ = ["MAX_TERM_BYTES", "tokenize"]

#: Tantivy's ``RemoveLongFilter`` limit in Convex's analyzer (``MAX_TEXT_TERM_LENGTH``):
#: tokens of this many UTF-8 bytes or more are dropped.
MAX_TERM_BYTES = 32

#: A maximal run of characters for which ``str.isalnum`` holds (``\w`` less ``_``).
_WORD = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """The tokens of ``text`` in order, repeats included (see the module docstring)."""
    out: list[str] = []
    append = out.append
    for word in _WORD.findall(text):
        if word.isascii():
            if len(word) < MAX_TERM_BYTES:
                append(word.lower())
        elif len(word.encode()) < MAX_TERM_BYTES:
            # Character by character, as Tantivy's LowerCaser (Rust's char::to_lowercase):
            # str.lower() would apply the final-sigma rule, which Tantivy does not.
            append("".join([c.lower() for c in word]))
    return out
