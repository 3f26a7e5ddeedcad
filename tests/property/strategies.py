"""Hypothesis strategies for Convex values, shared by every property test.

- :func:`values` draws any stored value: every type, NaN (with payloads and
  both signs), -0.0, infinities, ints at each sort-key width boundary,
  strings with NUL, U+0001 and astral characters (never lone surrogates),
  bytes with 0x00/0x01/0xFF, nested lists and dicts with any valid field
  name, the empty one included.
- :func:`small_values` draws from tiny domains so that ties, equal values and
  shared prefixes are frequent (what order properties need).
- :func:`documents` draws top-level documents with user field names.
- :func:`field_names` draws valid nested field names (printable ASCII, not
  starting with ``$``, the empty string included).
- :func:`id_strings` draws strings around the ids of given tables: ids, ids
  cut short, lengthened or with a character changed (:func:`id_edits`), and
  arbitrary strings (what a range bound on ``_id`` may be).
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

from hypothesis import strategies as st

from engine import ids

__all__ = [
    "INT_BOUNDARIES",
    "documents",
    "field_names",
    "float64s",
    "id_edits",
    "id_strings",
    "int64s",
    "scalars",
    "small_values",
    "strings",
    "user_field_names",
    "values",
]

MIN_INT64 = -(2**63)
MAX_INT64 = 2**63 - 1

#: Ints on both sides of every sort-key width change, and the Int64 extremes.
INT_BOUNDARIES = sorted(
    {
        0,
        *(sign * n for sign in (1, -1) for n in (1, 2, 127, 128, 129, 255, 256)),
        *(sign * n for sign in (1, -1) for n in (32767, 32768, 32769, 65535, 65536)),
        *(sign * n for sign in (1, -1) for n in (2**31 - 1, 2**31, 2**31 + 1, 2**32)),
        MIN_INT64,
        MIN_INT64 + 1,
        MAX_INT64 - 1,
        MAX_INT64,
    }
)


def _float_from_bits(bits: int) -> float:
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


_SPECIAL_FLOATS = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
    _float_from_bits(0x7FF0_0000_0000_0001),  # NaN with a payload
    _float_from_bits(0xFFF8_0000_0000_0001),  # negative NaN with a payload
    5e-324,
    -5e-324,
    1.0,
    -1.0,
    2.0**53,
    1.7976931348623157e308,
]


def int64s() -> st.SearchStrategy[int]:
    """Any Int64, with the width boundaries of the sort-key layout drawn often."""
    return st.one_of(st.sampled_from(INT_BOUNDARIES), st.integers(MIN_INT64, MAX_INT64))


def float64s() -> st.SearchStrategy[float]:
    """Any double, NaN payloads and -0.0 included."""
    return st.one_of(
        st.sampled_from(_SPECIAL_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(0, 2**64 - 1).map(_float_from_bits),
    )


def strings() -> st.SearchStrategy[str]:
    """Valid Unicode strings (no surrogates), NUL and U+0001 drawn often."""
    return st.one_of(
        st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12),
        st.text(alphabet=st.sampled_from("\x00\x01\x02ab\xff\uffff\U00010000"), max_size=6),
    )


def _bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=12),
        st.lists(st.sampled_from([0, 1, 2, 0x7F, 0xFE, 0xFF]), max_size=6).map(bytes),
    )


def field_names() -> st.SearchStrategy[str]:
    """Valid nested field names: printable ASCII, not starting with ``$``, maybe empty."""
    return st.one_of(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10),
        st.text(alphabet=st.sampled_from("ab_ $"), max_size=3),
    ).filter(lambda name: not name.startswith("$"))


def user_field_names() -> st.SearchStrategy[str]:
    """Valid top-level field names of a user document (no ``_`` or ``$`` first)."""
    return field_names().filter(lambda name: name[:1] not in ("_", ""))


def scalars() -> st.SearchStrategy[Any]:
    """Every non-container value: None, bool, Int64, Float64, str, bytes."""
    return st.one_of(st.none(), st.booleans(), int64s(), float64s(), strings(), _bytes())


@functools.cache
def values(max_depth: int = 3) -> st.SearchStrategy[Any]:
    """Any stored Convex value nesting at most ``max_depth`` levels of lists/dicts."""
    if max_depth <= 0:
        return scalars()
    inner = values(max_depth - 1)
    return st.one_of(
        scalars(),
        st.lists(inner, max_size=4),
        st.dictionaries(field_names(), inner, max_size=4),
    )


_SMALL_SCALARS = st.sampled_from(
    [None, False, True, -129, -1, 0, 1, 128, -0.0, 0.0, 1.5, math.nan, "", "a", "a\x00", "ab", "\x01",
     b"", b"\x00", b"\xff"]
)  # fmt: skip


@functools.cache
def small_values(max_depth: int = 2) -> st.SearchStrategy[Any]:
    """Values from tiny domains, so equal values, ties and shared prefixes are common."""
    if max_depth <= 0:
        return _SMALL_SCALARS
    inner = small_values(max_depth - 1)
    return st.one_of(
        _SMALL_SCALARS,
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["", "a", "ab", "b"]), inner, max_size=3),
    )


def documents() -> st.SearchStrategy[dict[str, Any]]:
    """Top-level documents with user field names (no system fields)."""
    return st.dictionaries(user_field_names(), values(2), max_size=6)


#: Characters to splice into ids: the alphabet's ends and neighbours, the letters
#: it skips, and characters sorting before, between and after its ranges.
_ID_EDITS = "0189ahjkmnpz" + "ilou" + "\x00 /:@AZ_`{~\x7f" + "\xe9\uffff\U00010000"


@st.composite
def id_edits(draw: st.DrawFn, text: str) -> str:
    """``text`` (an id) as is, cut short, with one character replaced, or lengthened.

    Edits fall often in the last characters, which hold the checksum: a string there
    sorts between the id and the one before it (no other id shares all but its last
    characters), the only place where "first id at or after" is a live id it is not.
    """
    cut = draw(st.one_of(st.integers(0, len(text)), st.integers(max(0, len(text) - 4), len(text))))
    edit = draw(st.sampled_from(["id", "cut", "replace", "cut and add", "extend"]))
    if edit == "cut":
        return text[:cut]
    if edit == "replace":
        return text[:cut] + draw(st.sampled_from(_ID_EDITS)) + text[cut + 1 :]
    if edit == "cut and add":
        return text[:cut] + draw(st.text(_ID_EDITS, min_size=1, max_size=3))
    if edit == "extend":
        return text + draw(st.text(_ID_EDITS, min_size=1, max_size=3))
    return text


def id_strings(tables: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """Strings near the ids of ``tables`` (and any string): what ``_id`` bounds may be."""
    internal_ids = st.one_of(
        st.binary(min_size=16, max_size=16), st.sampled_from([bytes(16), b"\xff" * 16])
    )
    made = st.builds(ids.encode_id, tables, internal_ids)
    return st.one_of(made.flatmap(id_edits), strings())
