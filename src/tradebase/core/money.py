"""Exact numbers: every price, quantity, fee, cash amount and P&L is a `Decimal`.

This module owns the conversion into `Decimal` (no other module turns a float into one)
and the column type `ExactDecimal`:

* PostgreSQL and MariaDB/MySQL: ``NUMERIC(38, 18)``, exact in the engine.
* SQLite: canonical decimal text (``'0.1'``, ``'12345678901.12345678'``) under the
  collation ``tb_decimal``, which compares the values as decimals. A ``NUMERIC`` column on
  SQLite goes through a binary float and loses digits past the 15th; text alone would sort
  ``'10'`` before ``'9'``. With the collation, ``=``, ``<``, ``BETWEEN``, ``ORDER BY``,
  ``MIN`` and ``MAX`` are exact, and Tradebase's SQLite connections also get exact
  ``SUM`` and ``+ - * /`` (`register_sqlite_functions`, used by `ExactDecimal`'s SQL).

  A plain ``sqlite3`` shell can read and write these tables, but comparing or sorting a
  decimal column there needs the collation: compare ``col + 0`` instead (a float).

Values that would not fit (more than 20 integer digits or 18 decimals), NaN and infinities
are refused on the way in rather than rounded.
"""

from __future__ import annotations

import decimal
import sqlite3
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Float, Numeric, String, and_, bindparam, literal
from sqlalchemy import column as sql_column
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql import functions, operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator, TypeEngine

PRECISION = 38
SCALE = 18
_INTEGER_DIGITS = PRECISION - SCALE
_DIVISION = Context(prec=PRECISION + SCALE + 2)
_QUANTUM = Decimal(1).scaleb(-SCALE)
_ZERO = Decimal(0)
SQLITE_COLLATION = "tb_decimal"

# Python computes with 28 significant digits unless told otherwise, and a NUMERIC(38, 18)
# amount has up to 38: an 11-digit cost less an 18-place share, or a large cash balance
# moved by a fee, would be rounded. Every Tradebase computation runs with room for the
# product of two such numbers: the current context (which asyncio tasks inherit) and the
# default that new threads start from. Only precision grows; rounding stays half-even.
ARITHMETIC_PRECISION = 2 * PRECISION + 4
decimal.DefaultContext.prec = max(decimal.DefaultContext.prec, ARITHMETIC_PRECISION)
decimal.getcontext().prec = max(decimal.getcontext().prec, ARITHMETIC_PRECISION)


def to_decimal(value: Decimal | int | str | float) -> Decimal:
    """Convert to `Decimal` exactly; a float goes by its shortest repr, not its binary value."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise TypeError("a bool is not a number")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise TypeError(f"cannot make a Decimal of {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def canonical(value: Decimal) -> Decimal:
    """The same value with trailing zeros stripped and no exponent (100 stays 100).

    Exact: no arithmetic context is involved, so no digit is ever rounded away.
    """
    return _canonical(value)[0]


def _canonical(value: Decimal) -> tuple[Decimal, int, int]:
    # The canonical value, its number of digits and its exponent (one as_tuple() call:
    # this runs for every decimal bound to or read from a column).
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if value and (exponent == 0 or (exponent < 0 and digits[-1])):
        return value, len(digits), exponent  # already canonical: the common case
    numerals = list(digits)
    if exponent > 0:
        numerals += [0] * exponent
        exponent = 0
    while exponent < 0 and len(numerals) > 1 and numerals[-1] == 0:
        numerals.pop()
        exponent += 1
    if not any(numerals):
        return _ZERO, 1, 0
    return Decimal((sign, tuple(numerals), exponent)), len(numerals), exponent


def check_fits(value: Decimal) -> Decimal:
    """Return *value* canonical, or raise if it does not fit NUMERIC(38, 18) exactly."""
    value, digits, exponent = _canonical(value)
    if exponent < -SCALE:
        raise ValueError(f"{value} has more than {SCALE} decimal places")
    if digits + exponent > _INTEGER_DIGITS:
        raise ValueError(f"{value} has more than {_INTEGER_DIGITS} integer digits")
    return value


def quantize(value: Decimal) -> Decimal:
    """Round to the columns' 18 decimal places (half to even), canonical."""
    return canonical(value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_DIVISION))


def pro_rata(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """*total* x part / whole, rounded; the whole of it when part is the whole, so that
    shares taken one by one until nothing is left add up to *total* exactly."""
    if part == whole:
        return total
    return quantize(_DIVISION.divide(total * part, whole))


def divide(numerator: Decimal, denominator: Decimal) -> Decimal:
    """*numerator* / *denominator*, rounded to the columns' 18 decimal places."""
    return quantize(_DIVISION.divide(numerator, denominator))


def to_text(value: Decimal) -> str:
    """Canonical plain-notation text of a Decimal (how SQLite stores it)."""
    return format(check_fits(value), "f")


# --- SQLite: collation, arithmetic and SUM on decimal text -------------------------------


def _parse(text: Any) -> Decimal:
    return text if isinstance(text, Decimal) else Decimal(str(text))


def _collate(left: str, right: str) -> int:
    try:
        a, b = Decimal(left), Decimal(right)
    except InvalidOperation:  # not a number: fall back to text order, never fail a query
        return (left > right) - (left < right)
    return (a > b) - (a < b)


def _arith(operation: Any) -> Any:
    def apply(left: Any, right: Any) -> str | None:
        if left is None or right is None:
            return None
        return to_text(operation(_parse(left), _parse(right)))

    return apply


def _divide(left: Decimal, right: Decimal) -> Decimal:
    return _DIVISION.divide(left, right).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


class _DecimalSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = (self.total or _ZERO) + _parse(value)

    def finalize(self) -> str | None:
        return None if self.total is None else to_text(self.total)


_SQLITE_FUNCTIONS = {
    "tb_decimal_add": _arith(lambda a, b: a + b),
    "tb_decimal_sub": _arith(lambda a, b: a - b),
    "tb_decimal_mul": _arith(lambda a, b: a * b),
    "tb_decimal_div": _arith(_divide),
}


def register_sqlite_functions(connection: sqlite3.Connection) -> None:
    """Teach a SQLite connection to compare, add up and compute with decimal text."""
    connection.create_collation(SQLITE_COLLATION, _collate)
    for name, fn in _SQLITE_FUNCTIONS.items():
        connection.create_function(name, 2, fn, deterministic=True)
    connection.create_aggregate("tb_decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]


_ARITHMETIC: dict[Any, tuple[str, str]] = {
    operators.add: ("+", "tb_decimal_add"),
    operators.sub: ("-", "tb_decimal_sub"),
    operators.mul: ("*", "tb_decimal_mul"),
    operators.truediv: ("/", "tb_decimal_div"),
}


class _DecimalArithmetic(ColumnElement[Decimal]):
    """``a + b`` on engines with NUMERIC, ``tb_decimal_add(a, b)`` on SQLite."""

    inherit_cache = True
    # Part of the statement cache key: a + b and a * b must not share compiled SQL.
    _traverse_internals = [
        ("operator", InternalTraversal.dp_operator),
        ("left", InternalTraversal.dp_clauseelement),
        ("right", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, operator: Any, left: ColumnElement[Any], right: ColumnElement[Any]) -> None:
        self.operator = operator
        self.left = left
        self.right = right
        self.type = ExactDecimal()


@compiles(_DecimalArithmetic)
def _arith_default(element: _DecimalArithmetic, compiler: SQLCompiler, **kw: Any) -> str:
    symbol = _ARITHMETIC[element.operator][0]
    return (
        f"({compiler.process(element.left, **kw)} {symbol} {compiler.process(element.right, **kw)})"
    )


@compiles(_DecimalArithmetic, "sqlite")
def _arith_sqlite(element: _DecimalArithmetic, compiler: SQLCompiler, **kw: Any) -> str:
    name = _ARITHMETIC[element.operator][1]
    return (
        f"{name}({compiler.process(element.left, **kw)}, {compiler.process(element.right, **kw)})"
    )


@compiles(functions.sum, "sqlite")
def _sum_sqlite(element: functions.sum[Any], compiler: SQLCompiler, **kw: Any) -> str:
    clauses = list(element.clauses)
    if len(clauses) == 1 and isinstance(clauses[0].type, ExactDecimal):
        return f"tb_decimal_sum({compiler.process(clauses[0], **kw)})"
    return compiler.visit_function(element, **kw)


def _operand(value: Any) -> ColumnElement[Any]:
    if isinstance(value, ColumnElement):
        return value
    return literal(value, ExactDecimal())


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal column that round-trips exactly on PostgreSQL, MariaDB/MySQL and SQLite."""

    impl = Numeric(PRECISION, SCALE, asdecimal=True)
    cache_ok = True

    class Comparator(TypeDecorator.Comparator[Decimal]):
        def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            if op in _ARITHMETIC:
                return _DecimalArithmetic(op, self.expr, _operand(other[0]))
            return super().operate(op, *other, **kwargs)

        def reverse_operate(self, op: Any, other: Any, **kwargs: Any) -> ColumnElement[Any]:
            if op in _ARITHMETIC:
                return _DecimalArithmetic(op, _operand(other), self.expr)
            return super().reverse_operate(op, other, **kwargs)

    comparator_factory = Comparator

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(60, collation=SQLITE_COLLATION))
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError(f"float {value!r} refused for an exact decimal column: pass a Decimal")
        number = check_fits(to_decimal(value))
        if dialect.name == "sqlite":
            return format(number, "f")
        return number

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        fallback = self.process_bind_param

        def process(value: Any) -> str | None:
            # Every decimal bound on SQLite passes here: a Decimal goes straight to its
            # canonical text, anything else through process_bind_param.
            if type(value) is Decimal and value.is_finite():
                return format(check_fits(value), "f")
            return fallback(value, dialect)  # type: ignore[no-any-return]

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):  # SQLite's own float arithmetic, e.g. a raw `col + 0`
            return canonical(Decimal(repr(value)))
        return canonical(_parse(value))

    def coerce_compared_value(self, op: Any, value: Any) -> TypeEngine[Any]:
        return self


# --- Decimal columns in indexes ----------------------------------------------------------


class num_key(ColumnElement[Any]):  # noqa: N801 - reads like SQL
    """A decimal column as an index key: the column itself on PostgreSQL and MariaDB
    (NUMERIC), ``(col + 0)`` on SQLite.

    On SQLite an index on the text column would sort by its ``tb_decimal`` collation, and
    then every connection that writes the table would need that collation, the plain
    ``sqlite3`` shell included (it fails with "no such collation sequence"). ``col + 0``
    is a number that SQLite compares in C; it is a float, so queries reach the index with
    a widened float range and then compare exactly (`at_least`, `at_most`).
    """

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any] | QueryableAttribute[Any] | str) -> None:
        # A name in a migration (``tb.num_key("price")``), a mapped column in a model.
        if isinstance(column, str):
            self.column: ColumnElement[Any] = sql_column(column)
        elif isinstance(column, QueryableAttribute):
            self.column = column.__clause_element__()
        else:
            self.column = column
        self.type = Float()


@compiles(num_key)
def _num_key_default(element: num_key, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(num_key, "sqlite")
def _num_key_sqlite(element: num_key, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.column, **kw)} + 0)"


_Decimal = ColumnElement[Any] | QueryableAttribute[Any]

# SQLite's text-to-float conversion is off by a few units in the last place at most; a
# margin a million times wider keeps every exact match inside the float range.
_KEY_MARGIN = 1e-9


def at_least(column: _Decimal, name: str, *, sqlite: bool) -> ColumnElement[bool]:
    """``column >= :name``, exact on every engine, in the form an index on
    ``num_key(column)`` serves; bind the parameters with `key_params`."""
    exact = column >= bindparam(name, type_=ExactDecimal())
    if not sqlite:
        return exact
    return and_(num_key(column) >= bindparam(f"{name}_floor", type_=Float()), exact)


def at_most(column: _Decimal, name: str, *, sqlite: bool) -> ColumnElement[bool]:
    """``column <= :name``, like `at_least`."""
    exact = column <= bindparam(name, type_=ExactDecimal())
    if not sqlite:
        return exact
    return and_(num_key(column) <= bindparam(f"{name}_ceiling", type_=Float()), exact)


def key_params(name: str, value: Decimal) -> dict[str, Any]:
    """The parameters of `at_least`/`at_most` named *name*: the exact value, and a float
    floor and ceiling around it for SQLite's index key."""
    approx = float(value)
    margin = abs(approx) * _KEY_MARGIN + 1e-300
    return {name: value, f"{name}_floor": approx - margin, f"{name}_ceiling": approx + margin}
