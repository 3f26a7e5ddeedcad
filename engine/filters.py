"""Filter expressions: ``q.eq(q.field("a"), 1)`` and friends, evaluated per document.

The builder ``q`` passed to ``.filter(lambda q: ...)`` makes an expression
tree; :func:`evaluate` runs it against one document with Convex's semantics
(:func:`compile_filters` turns a query's filters into one function that does the
same, faster, for scans):

- comparisons use the total order of :func:`engine.values.compare` (a missing
  field is ``UNSET``, smaller than ``None``; ``1 < 0.5`` since every Int64
  sorts before every Float64);
- ``add sub mul div mod neg`` need both operands Int64 or both Float64;
  Int64 overflow (``INT64_MIN / -1`` and ``INT64_MIN % -1`` included, as
  Rust's ``checked_div``/``checked_rem``) and Int64 division or modulo by
  zero are errors; floats follow IEEE 754 (``1.0 / 0.0`` is ``inf``, a NaN
  operand is the result, an invalid operation such as ``inf - inf`` the positive
  default NaN whatever the host, so results never depend on the CPU);
- ``and_ or_ not_`` need booleans and short-circuit.

Every failure raises :class:`~engine.errors.EvalError` with Convex's wording.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from . import keys
from .errors import EvalError
from .formatting import printable
from .indexing import field_value, split_path
from .values import UNSET, compare, convert, format_value, type_name, values_equal

__all__ = [
    "MAX_EXPRESSION_DEPTH",
    "MAX_QUERY_OPERATORS",
    "Expression",
    "FilterBuilder",
    "compile_expression",
    "compile_filters",
    "evaluate",
    "field_path_problem",
]

#: Convex's cap on the operators of one query (each ``.filter`` is one).
MAX_QUERY_OPERATORS = 256
#: How deeply filter expressions may nest (evaluation recurses once per level).
MAX_EXPRESSION_DEPTH = 128

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class Expression:
    """A node of a filter expression tree. Build them with :class:`FilterBuilder`."""

    __slots__ = ("args", "depth", "op")

    depth: int

    def __init__(self, op: str, args: tuple[Any, ...]) -> None:
        self.op = op
        self.args = args
        depth = 1
        for arg in args:
            if type(arg) is Expression:
                inner: int = arg.depth
                if inner >= depth:
                    depth = inner + 1
        if depth > MAX_EXPRESSION_DEPTH:
            raise EvalError(
                f"Filter expression nested more than {MAX_EXPRESSION_DEPTH} levels deep: "
                "combine conditions with one q.and_(a, b, c, ...) instead of nesting them."
            )
        self.depth = depth

    def __repr__(self) -> str:
        if self.op == "field":
            return f"q.field({self.args[0]!r})"
        if self.op == "literal":
            return repr(self.args[0])
        return f"q.{self.op}({', '.join(map(repr, self.args))})"

    def __bool__(self) -> bool:
        raise EvalError(
            "A filter expression has no truth value in Python: combine expressions with "
            "q.and_(...), q.or_(...) and q.not_(...) instead of `and`, `or`, `not`."
        )

    # Python's operators would build plain values (``==`` a bool that then filters as a
    # literal) or fail with TypeError: each says which builder method to use instead.
    def _operator(self, symbol: str, method: str) -> NoReturn:
        raise EvalError(
            f"Filter expressions do not support Python's `{symbol}`: write "
            f"q.{method}(left, right) (for example q.{method}(q.field('n'), 1))."
        )

    def __eq__(self, other: object) -> bool:
        self._operator("==", "eq")

    def __ne__(self, other: object) -> bool:
        self._operator("!=", "neq")

    def __lt__(self, other: object) -> bool:
        self._operator("<", "lt")

    def __le__(self, other: object) -> bool:
        self._operator("<=", "lte")

    def __gt__(self, other: object) -> bool:
        self._operator(">", "gt")

    def __ge__(self, other: object) -> bool:
        self._operator(">=", "gte")

    def __add__(self, other: object) -> Any:
        self._operator("+", "add")

    __radd__ = __add__

    def __sub__(self, other: object) -> Any:
        self._operator("-", "sub")

    __rsub__ = __sub__

    def __mul__(self, other: object) -> Any:
        self._operator("*", "mul")

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Any:
        self._operator("/", "div")

    __rtruediv__ = __truediv__

    def __mod__(self, other: object) -> Any:
        self._operator("%", "mod")

    __rmod__ = __mod__

    def __neg__(self) -> Any:
        raise EvalError("Filter expressions do not support Python's unary `-`: write q.neg(x).")

    def _logical(self, symbol: str, method: str) -> NoReturn:
        raise EvalError(
            f"Filter expressions do not support Python's `{symbol}`: write q.{method}(a, b, ...) "
            f"(for example q.{method}(q.eq(q.field('a'), 1), q.gt(q.field('b'), 2)))."
        )

    def __and__(self, other: object) -> Any:
        self._logical("&", "and_")

    __rand__ = __and__

    def __or__(self, other: object) -> Any:
        self._logical("|", "or_")

    __ror__ = __or__

    def __invert__(self) -> Any:
        raise EvalError("Filter expressions do not support Python's `~`: write q.not_(x).")

    __hash__ = object.__hash__

    def fingerprint(self) -> Any:
        """A plain, comparable form of the expression (for cursor fingerprints).

        Literals by their exact sort key, never a shortened rendering: two filters
        that differ only past a long string's first characters are different queries.
        """
        if self.op == "literal":
            # Lowercased: the names cursors were fingerprinted with before type_name
            # took Convex's capitalized spelling, so issued cursors stay valid.
            return ["literal", type_name(self.args[0]).lower(), keys.encode(self.args[0]).hex()]
        return [self.op, *(a.fingerprint() if isinstance(a, Expression) else a for a in self.args)]


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_IDENTIFIER_LENGTH = 64
_MAX_FIELD_NAME_LENGTH = 1024


def field_path_problem(path: str) -> str | None:
    """Why Convex cannot parse ``path`` (already trimmed of dots) as a field path, or None.

    Convex parses the paths of ``q.field`` and of index ranges as a ``FieldPath``
    (crates/value/src/field_path.rs): steps split on ``.``, each a field name
    (non-control ASCII, not starting with ``$``, at most 1024 characters) and an
    identifier (``[A-Za-z_][A-Za-z0-9_]*``, at most 64 characters, not only
    underscores). The message is Convex's (``check_valid_field_name`` and
    ``check_valid_identifier`` in crates/convex/sync_types/src/identifier.rs).
    So ``"a-b"`` or ``"a b"`` name no field a query can read, even if documents
    have it (Convex's documents may; its queries may not). Cost: one regex match
    per step.
    """
    if path in _GOOD_PATHS:
        return None
    for step in path.split("."):
        if len(step) <= _MAX_IDENTIFIER_LENGTH and _IDENTIFIER.match(step) and step.strip("_"):
            continue
        shown = printable(step)  # a lone surrogate must stay encodable in the message
        if step[:1] == "$":
            return f"Field name {shown} starts with '$', which is reserved."
        bad = next((c for c in step if not (c.isascii() and c.isprintable())), None)
        if bad is not None:
            return (
                f"Field name {shown} has invalid character {bad!r}: Field names can only "
                "contain non-control ASCII characters"
            )
        if len(step) > _MAX_FIELD_NAME_LENGTH:
            return f"Field name is too long ({len(step)} > maximum {_MAX_FIELD_NAME_LENGTH})"
        if not step:
            return "Identifier cannot be empty"
        if not (step[0].isascii() and (step[0].isalpha() or step[0] == "_")):
            return (
                f"Invalid first character {step[0]!r} in {shown}: Identifiers must start with "
                "an alphabetic character or underscore"
            )
        bad = next((c for c in step if not (c.isascii() and (c.isalnum() or c == "_"))), None)
        if bad is not None:
            return (
                f"Identifier {shown} has invalid character {bad!r}: Identifiers can only "
                "contain alphanumeric characters or underscores"
            )
        if len(step) > _MAX_IDENTIFIER_LENGTH:
            return f"Identifier is too long ({len(step)} > maximum {_MAX_IDENTIFIER_LENGTH})"
        return f"Identifier {shown} cannot have exclusively underscores"
    if len(_GOOD_PATHS) < _MAX_GOOD_PATHS:
        _GOOD_PATHS.add(path)
    return None


#: Paths found good, so that a query built again checks its paths with one set lookup
#: each (the paths come from the app's code: few; bounded for paths made at run time).
_GOOD_PATHS: set[str] = set()
_MAX_GOOD_PATHS = 4096


def _wrap(value: Any) -> Expression:
    if isinstance(value, Expression):
        return value
    if value is UNSET:
        return Expression("literal", (UNSET,))
    converted = convert(value)
    if type(converted) in (list, dict):
        # Kept by value, as Convex serializes a filter when it is built: the caller
        # changing its list or dict afterwards must not change the query.
        converted = copy.deepcopy(converted)
    return Expression("literal", (converted,))


class FilterBuilder:
    """The ``q`` of ``.filter(lambda q: ...)``.

    Example::

        db.query("tasks").filter(lambda q: q.and_(
            q.eq(q.field("done"), False), q.gte(q.field("priority"), 2)))
    """

    __slots__ = ()

    def __getitem__(self, key: object) -> NoReturn:  # lambda doc: doc["n"] > 1
        raise EvalError(
            f"filter() passes the filter builder q, not the document: read a field with "
            f"q.field({key!r}) and compare it with q.eq, q.gt, ... (for example "
            f"q.gt(q.field({key!r}), 1))."
        )

    def field(self, path: str) -> Expression:
        """The value of field ``path`` (dotted for nested fields); missing → ``UNSET``.

        Raises :class:`EvalError` for a path Convex cannot parse (see
        :func:`field_path_problem`): each step must be an identifier.
        """
        if not isinstance(path, str):
            raise EvalError(f"q.field() expects a field path string, got {path!r}")
        trimmed = path.strip(".")  # as Convex's FieldPath parsing does
        if not trimmed:
            raise EvalError(f"Empty path: q.field({path!r}) names no field.")
        problem = field_path_problem(trimmed)
        if problem is not None:
            raise EvalError(f"Invalid field path {path!r}: {problem}")
        return Expression("field", (trimmed, split_path(trimmed)))

    def eq(self, left: Any, right: Any) -> Expression:
        return Expression("eq", (_wrap(left), _wrap(right)))

    def neq(self, left: Any, right: Any) -> Expression:
        return Expression("neq", (_wrap(left), _wrap(right)))

    def lt(self, left: Any, right: Any) -> Expression:
        return Expression("lt", (_wrap(left), _wrap(right)))

    def lte(self, left: Any, right: Any) -> Expression:
        return Expression("lte", (_wrap(left), _wrap(right)))

    def gt(self, left: Any, right: Any) -> Expression:
        return Expression("gt", (_wrap(left), _wrap(right)))

    def gte(self, left: Any, right: Any) -> Expression:
        return Expression("gte", (_wrap(left), _wrap(right)))

    def add(self, left: Any, right: Any) -> Expression:
        return Expression("add", (_wrap(left), _wrap(right)))

    def sub(self, left: Any, right: Any) -> Expression:
        return Expression("sub", (_wrap(left), _wrap(right)))

    def mul(self, left: Any, right: Any) -> Expression:
        return Expression("mul", (_wrap(left), _wrap(right)))

    def div(self, left: Any, right: Any) -> Expression:
        return Expression("div", (_wrap(left), _wrap(right)))

    def mod(self, left: Any, right: Any) -> Expression:
        return Expression("mod", (_wrap(left), _wrap(right)))

    def neg(self, value: Any) -> Expression:
        return Expression("neg", (_wrap(value),))

    def and_(self, *exprs: Any) -> Expression:
        return Expression("and_", tuple(_wrap(e) for e in exprs))

    def or_(self, *exprs: Any) -> Expression:
        return Expression("or_", tuple(_wrap(e) for e in exprs))

    def not_(self, value: Any) -> Expression:
        return Expression("not_", (_wrap(value),))


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise EvalError(
            f"Cannot use value {format_value(value)} (type {type_name(value)}) as a Boolean"
        )
    return value


#: The verbs of Convex's messages (``binary_arithmetic`` in crates/common/src/query.rs).
_VERBS: dict[str, str] = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "div": "divide",
    "mod": "mod",
}


def _int64(result: int, op: str, a: int, b: int) -> int:
    if not _INT64_MIN <= result <= _INT64_MAX:
        raise EvalError(f"Cannot {_VERBS[op]} {a} and {b}: the result is out of range for Int64")
    return result


def _arith(op: str, a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        if op == "add":
            return _int64(a + b, op, a, b)
        if op == "sub":
            return _int64(a - b, op, a, b)
        if op == "mul":
            return _int64(a * b, op, a, b)
        if b == 0:
            raise EvalError(f"Cannot {_VERBS[op]} {a} by zero")
        quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # truncates, like i64
        # Rust's checked_div and checked_rem both fail for INT64_MIN and -1 (the
        # quotient, 2**63, overflows), so the remainder, 0 in mathematics, is an error too.
        _int64(quotient, op, a, b)
        if op == "div":
            return quotient
        return a - b * quotient
    if ta is float and tb is float:
        if op == "add":
            result = a + b
        elif op == "sub":
            result = a - b
        elif op == "mul":
            result = a * b
        elif op == "div":
            if b == 0.0 and a == a:  # Python raises where IEEE gives inf or NaN
                if a == 0.0:
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            # A NaN over zero: a + b is that NaN, as the division is in IEEE.
            result = a / b if b != 0.0 else a + b
        elif a != a or b != b:
            return math.fmod(a, b)  # the NaN operand (Python raises for none of these)
        elif b == 0.0 or math.isinf(a):
            return math.nan
        else:
            return math.fmod(a, b)
        if result != result and a == a and b == b:
            # An invalid operation (inf - inf, 0 * inf, inf / inf): IEEE's default NaN,
            # which x86 makes with the sign bit set and aarch64 (Convex's hosts) without.
            return math.nan
        return result
    raise EvalError(
        f"Cannot {_VERBS[op]} {format_value(a)} (type {type_name(a)}) and "
        f"{format_value(b)} (type {type_name(b)})"
    )


def evaluate(expr: Expression, document: dict[str, Any]) -> Any:
    """The value of ``expr`` for ``document``. Raises :class:`EvalError`."""
    op = expr.op
    args = expr.args
    if op == "field":
        steps = args[1]
        return document.get(steps[0], UNSET) if len(steps) == 1 else field_value(document, steps)
    if op == "literal":
        return args[0]
    if op in _COMPARISONS:
        return _COMPARISONS[op](evaluate(args[0], document), evaluate(args[1], document))
    if op == "and_":
        return all(_boolean(evaluate(a, document)) for a in args)
    if op == "or_":
        return any(_boolean(evaluate(a, document)) for a in args)
    if op == "not_":
        return not _boolean(evaluate(args[0], document))
    if op == "neg":
        return _negate(evaluate(args[0], document))
    return _arith(op, evaluate(args[0], document), evaluate(args[1], document))


def _negate(value: Any) -> Any:
    if type(value) is int:
        if value == _INT64_MIN:
            raise EvalError(f"Cannot negate {value}: the result is out of range for Int64")
        return -value
    if type(value) is float:
        return -value
    raise EvalError(f"Cannot negate {format_value(value)} (type {type_name(value)})")


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": values_equal,
    "neq": lambda a, b: not values_equal(a, b),
    "lt": lambda a, b: compare(a, b) < 0,
    "lte": lambda a, b: compare(a, b) <= 0,
    "gt": lambda a, b: compare(a, b) > 0,
    "gte": lambda a, b: compare(a, b) >= 0,
}


def predicate(build: Callable[[FilterBuilder], Any]) -> Expression:
    """Build the expression of a ``.filter`` callback (a bare value is a literal).

    A callback returning ``None`` is refused here: it is a ``def`` that built its
    expression and forgot to return it (Convex's types refuse a predicate returning
    ``undefined``), and a null filter could never keep a document.
    """
    built = build(FilterBuilder())
    if built is None:
        raise EvalError(
            f"The filter function {getattr(build, '__qualname__', build)!r} returned None: "
            "return the expression it builds (def f(q): return q.eq(q.field('done'), "
            "False), or lambda q: q.eq(...))."
        )
    return _wrap(built)


def passes(expr: Expression, document: dict[str, Any]) -> bool:
    """True if the filter keeps ``document``; its result must be a boolean."""
    result = evaluate(expr, document)
    if type(result) is not bool:
        raise _not_boolean(result)
    return result


def _not_boolean(result: Any) -> EvalError:
    # Convex applies the same into_boolean to a filter's result as to and/or/not operands.
    return EvalError(
        f"Cannot use value {format_value(result)} (type {type_name(result)}) as a Boolean"
    )


#: Types whose Python ``==`` and ``<`` agree with Convex's equality and order when both
#: sides have the type (``bool`` is not ``int`` here: the type test comes first).
#: Strings compare by code point, which is the UTF-8 byte order Convex uses.
_NATIVE_ORDER = frozenset({int, str, bytes, bool})

_NATIVE_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
}


def compile_expression(expr: Expression) -> Callable[[dict[str, Any]], Any]:
    """``expr`` as a function of a document: :func:`evaluate` without re-reading the tree.

    Same values, same errors, same short-circuits; a comparison of a field with
    an Int64, string, bytes or boolean literal compares natively when the field
    has the literal's type. Cost: built once per query; per document, one
    Python call per node instead of a dispatch over every operator.

    Example::

        keep = compile_expression(predicate(lambda q: q.gt(q.field("n"), 2)))
        keep({"n": 3}), keep({"n": 1.5})   # (True, True): every Float64 > any Int64
    """
    op = expr.op
    args = expr.args
    if op == "field":
        steps = args[1]
        if len(steps) == 1:
            name = steps[0]
            return lambda document: document.get(name, UNSET)
        return lambda document: field_value(document, steps)
    if op == "literal":
        value = args[0]
        return lambda document: value
    if op in _COMPARISONS:
        generic = _COMPARISONS[op]
        left, right = args
        if left.op == "field" and len(left.args[1]) == 1 and right.op == "literal":
            literal = right.args[0]
            kind = type(literal)
            if kind in _NATIVE_ORDER:
                native = _NATIVE_COMPARISONS[op]
                name = left.args[1][0]

                def field_vs_literal(document: dict[str, Any]) -> bool:
                    value = document.get(name, UNSET)
                    if type(value) is kind:
                        return native(value, literal)
                    return generic(value, literal)

                return field_vs_literal
        left_fn, right_fn = compile_expression(left), compile_expression(right)
        return lambda document: generic(left_fn(document), right_fn(document))
    if op == "and_":
        parts = tuple(compile_expression(a) for a in args)

        def conjunction(document: dict[str, Any]) -> bool:
            for part in parts:  # noqa: SIM110 (a loop: no generator per document)
                if not _boolean(part(document)):
                    return False
            return True

        return conjunction
    if op == "or_":
        parts = tuple(compile_expression(a) for a in args)

        def disjunction(document: dict[str, Any]) -> bool:
            for part in parts:  # noqa: SIM110 (a loop: no generator per document)
                if _boolean(part(document)):
                    return True
            return False

        return disjunction
    if op == "not_":
        inner = compile_expression(args[0])
        return lambda document: not _boolean(inner(document))
    if op == "neg":
        operand = compile_expression(args[0])
        return lambda document: _negate(operand(document))
    left_fn, right_fn = compile_expression(args[0]), compile_expression(args[1])
    return lambda document: _arith(op, left_fn(document), right_fn(document))


def compile_filters(filters: list[Expression]) -> Callable[[dict[str, Any]], bool]:
    """One predicate for every ``.filter`` of a query, as :func:`passes` applies them.

    Filters run in order and stop at the first that rejects the document; each
    must evaluate to a boolean (else :class:`EvalError`, as :func:`passes`).
    """
    compiled = tuple(compile_expression(f) for f in filters)

    def keep(document: dict[str, Any]) -> bool:
        for fn in compiled:
            result = fn(document)
            if type(result) is not bool:
                raise _not_boolean(result)
            if not result:
                return False
        return True

    return keep
