"""UNSET: a missing field, Convex's ``undefined``.

It is never stored: in ``patch`` it removes a field, in an index it stands
for a document that lacks the field, and in Convex's order it sorts before
every value (``UNSET < None``). Falsy, a singleton that survives copying and
pickling. Re-exported by :mod:`engine` and :mod:`engine.values`.

Example::

    >>> import copy
    >>> UNSET is copy.deepcopy(UNSET), bool(UNSET)
    (True, False)
"""

from __future__ import annotations

from typing import Final

__all__ = ["UNSET"]


class _Unset:
    """The type of :data:`UNSET`; there is exactly one instance."""

    __slots__ = ()
    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"  # pickle by reference to this module's global: stays the singleton

    def __copy__(self) -> _Unset:
        return self

    def __deepcopy__(self, memo: object) -> _Unset:
        return self


#: A missing field (Convex's ``undefined``): removes a field in ``patch``; the smallest value.
UNSET: Final = _Unset()
