"""Exact numbers: every price, quantity, fee, cash amount and P&L is a `Decimal`.

This module owns the conversion into `Decimal` (no other module turns a float into one)
and the column type `ExactDecimal`:

* PostgreSQL and MariaDB/MySQL: ``NUMERIC(38, 18)``, exact in the engine, so SQL ``SUM``
  is exact there too.
* SQLite: canonical decimal text (``'0.1'``, ``'12345678901.12345678'``). A ``NUMERIC``
  column on SQLite goes through a binary float and loses digits past the 15th.
  Ordering comparisons on SQLite cast to REAL (see `ExactDecimal.Comparator`), equality
  compares the canonical text, which is exact.

Values that would not fit (more than 20 integer digits or 18 decimals), NaN and infinities
are refused on the way in rather than rounded.
"""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

PRECISION = 38
SCALE = 18
_INTEGER_DIGITS = PRECISION - SCALE
_CONTEXT = Context(prec=PRECISION + SCALE)
_ZERO = Decimal(0)


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
    """Strip trailing zeros without switching to exponent notation (100 stays 100)."""
    if value == _ZERO:
        return _ZERO
    normalized = value.normalize(_CONTEXT)
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        return normalized.quantize(Decimal(1))
    return normalized


def check_fits(value: Decimal) -> Decimal:
    """Return *value* canonical, or raise if it does not fit NUMERIC(38, 18) exactly."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    value = canonical(value)
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if exponent < -SCALE:
        raise ValueError(f"{value} has more than {SCALE} decimal places")
    integer_digits = len(digits) + exponent
    if integer_digits > _INTEGER_DIGITS:
        raise ValueError(f"{value} has more than {_INTEGER_DIGITS} integer digits")
    return value


def to_text(value: Decimal) -> str:
    """Canonical plain-notation text of a Decimal (how SQLite stores it)."""
    return format(check_fits(value), "f")


class _RealCast(ColumnElement[Any]):
    """``CAST(x AS REAL)`` on SQLite, ``x`` elsewhere: ordering for text-stored decimals."""

    inherit_cache = True

    # A plain Numeric, so that comparing a cast does not come back to ExactDecimal.Comparator.
    type = Numeric(PRECISION, SCALE)

    def __init__(self, inner: ColumnElement[Any]) -> None:
        self.inner = inner


@compiles(_RealCast)
def _real_cast_default(element: _RealCast, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.inner, **kw)


@compiles(_RealCast, "sqlite")
def _real_cast_sqlite(element: _RealCast, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.inner, **kw)} AS REAL)"


_ORDERING = {operators.lt, operators.le, operators.gt, operators.ge}


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal column that round-trips exactly on PostgreSQL, MariaDB/MySQL and SQLite."""

    impl = Numeric(PRECISION, SCALE, asdecimal=True)
    cache_ok = True

    class Comparator(TypeDecorator.Comparator[Decimal]):
        def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            if op in _ORDERING:
                result: ColumnElement[Any] = op(
                    _RealCast(self.expr), *(_as_real(o, self.type) for o in other)
                )
                return result
            return super().operate(op, *other, **kwargs)

    comparator_factory = Comparator

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(60))
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

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):  # only SQL arithmetic on SQLite produces floats
            return canonical(Decimal(repr(value)))
        return canonical(value if isinstance(value, Decimal) else Decimal(str(value)))

    def coerce_compared_value(self, op: Any, value: Any) -> TypeEngine[Any]:
        return self


def _as_real(other: Any, type_: TypeEngine[Any]) -> Any:
    from sqlalchemy import literal

    if isinstance(other, ColumnElement):
        return _RealCast(other)
    return _RealCast(literal(other, type_))
