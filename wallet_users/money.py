"""Money as integer cents, the form the pool and the run record keep it in: exact, and eight
bytes in an array where a Decimal object costs a hundred."""

from __future__ import annotations

from decimal import Decimal


def cents(value: object) -> int:
    """A money value (Decimal, int or numeric string) in integer cents; finer is refused."""
    if type(value) is int:  # the common case on the hot path: no Decimal arithmetic
        return value * 100
    if type(value) is Decimal and value.is_finite():
        whole = int(value)
        if whole == value:  # the suite's own amounts are whole: no multiplication either
            return whole * 100
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a money value: {value!r}")
    scaled = (value if isinstance(value, Decimal) else Decimal(str(value))) * 100
    if not scaled.is_finite():
        raise ValueError(f"not a money value: {value!r}")
    whole = int(scaled)
    if whole != scaled:
        raise ValueError(f"money finer than a cent: {value}")
    return whole


def money(amount: int) -> Decimal:
    """Cents as a Decimal, written as the service writes whole amounts: 120, 12.50."""
    return Decimal(amount // 100) if amount % 100 == 0 else Decimal(amount).scaleb(-2)


def money_text(amount: int) -> str:
    return str(money(amount))
