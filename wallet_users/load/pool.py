"""The wallet pool: which wallets a load-generating process may use, and how much of each one's
money is safe to spend right now, so that two greenlets never spend the same money.

A wallet's balance is known as a range. Every debit reserves its amount before it is sent; an
acknowledged answer replaces the balance with the server's snapshot (newest version wins); a
definite refusal releases the reservation; an indeterminate outcome (timeout, 5xx) may or may not
have applied, for good, so its amount is kept off the spendable balance (a debit) or added to the
upper bound (a credit). Nothing here does I/O.

Money is kept in integer cents, one array row per wallet, and the rarely non-zero amounts (in
flight, uncertain) only for the wallets that have them: a million wallets cost about 100 bytes
each. `wallet()` reads a wallet's row as a PooledWallet.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from decimal import Decimal

from ..money import cents, money
from ..record import INDETERMINATE, OK

ZERO = Decimal(0)


def to_money(value: object) -> Decimal:
    """A balance or amount from JSON (number or numeric string, as TypeORM returns) as Decimal."""
    if isinstance(value, Decimal):
        return value
    if type(value) is int:  # the common case on the hot path: no detour through str
        return Decimal(value)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a money value: {value!r}")
    return Decimal(str(value))


class PooledWallet:
    """One wallet of the pool as it stands (a view: it reads the pool's row when asked)."""

    __slots__ = ("_pool", "_row", "wallet_id")

    def __init__(self, pool: WalletPool, row: int, wallet_id: str) -> None:
        self._pool, self._row, self.wallet_id = pool, row, wallet_id

    @property
    def balance(self) -> Decimal:  # from the newest snapshot seen
        return money(self._pool._balance[self._row])

    @property
    def version(self) -> int:
        return self._pool._version[self._row]

    @property
    def reserved(self) -> Decimal:  # debits in flight
        return money(self._pool._reserved.get(self._row, 0))

    @property
    def uncertain_debits(self) -> Decimal:  # indeterminate debits: maybe applied, maybe later
        return money(self._pool._uncertain_debits.get(self._row, 0))

    @property
    def uncertain_credits(self) -> Decimal:
        return money(self._pool._uncertain_credits.get(self._row, 0))

    @property
    def spendable(self) -> Decimal:
        return money(self._pool._spendable(self._row))

    # An indeterminate debit stays subtracted for good, even once a newer snapshot already shows
    # it applied, so balance - uncertain_debits can fall below zero; no balance can: clamp.
    @property
    def low(self) -> Decimal:
        pool, row = self._pool, self._row
        return money(max(0, pool._balance[row] - pool._uncertain_debits.get(row, 0)))

    @property
    def high(self) -> Decimal:
        pool, row = self._pool, self._row
        return money(pool._balance[row] + pool._uncertain_credits.get(row, 0))


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside on one wallet for one debit or outgoing transfer in flight."""

    wallet_id: str
    amount: Decimal


class WalletPool:
    """The wallets of one process, shared by all its users (greenlets never preempt each other
    between a pick and its reservation, so no lock is needed)."""

    def __init__(self, rng: random.Random | None = None, sample_tries: int = 8) -> None:
        self.rng = rng if rng is not None else random.Random()
        self.sample_tries = sample_tries
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._balance = array("q")  # cents, from the newest snapshot seen
        self._version = array("q")
        # cents, only for the wallets where they are not zero
        self._reserved: dict[int, int] = {}
        self._uncertain_debits: dict[int, int] = {}
        self._uncertain_credits: dict[int, int] = {}

    def add(self, wallet_id: str, balance: Decimal, version: int = -1) -> None:
        """A wallet joins the pool; a balance that is no money amount (NaN, finer than a cent:
        the service's fault, which the check reports) counts as nothing to spend."""
        amount = _readable_cents(balance)
        row = self._rows.get(wallet_id)
        if row is None:
            self._rows[wallet_id] = len(self._ids)
            self._ids.append(wallet_id)
            self._balance.append(0 if amount is None else amount)
            self._version.append(version)
            return
        self._balance[row] = 0 if amount is None else amount
        self._version[row] = version
        for amounts in (self._reserved, self._uncertain_debits, self._uncertain_credits):
            amounts.pop(row, None)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, wallet_id: str) -> bool:
        return wallet_id in self._rows

    def wallet(self, wallet_id: str) -> PooledWallet:
        return PooledWallet(self, self._rows[wallet_id], wallet_id)

    def ids(self) -> list[str]:
        return list(self._ids)

    def pick(self) -> str:
        """Any wallet, uniformly (for credits, which need no funds)."""
        return self.rng.choice(self._ids)

    def pick_other(self, wallet_id: str) -> str | None:
        """A wallet other than wallet_id (a transfer's destination), or None if there is none."""
        if len(self._ids) < 2:
            return None
        while True:
            other = self.rng.choice(self._ids)
            if other != wallet_id:
                return other

    def _spendable(self, row: int) -> int:
        spendable = (
            self._balance[row] - self._reserved.get(row, 0) - self._uncertain_debits.get(row, 0)
        )
        return spendable if spendable > 0 else 0

    def reserve(self, amount: Decimal, wallet_id: str | None = None) -> Reservation | None:
        """Set amount aside on a wallet whose spendable balance covers it: wallet_id if given,
        else one of a few sampled at random (cheap: no scan). None if none covers it."""
        amount = to_money(amount)
        reserved_on = self.reserve_cents(cents(amount), wallet_id)
        return None if reserved_on is None else Reservation(reserved_on, amount)

    def reserve_cents(self, wanted: int, wallet_id: str | None = None) -> str | None:
        """reserve() for an amount in cents (the operations' hot path): the wallet it was set
        aside on, or None."""
        if wanted <= 0:
            raise ValueError(f"amount must be positive, not {money(wanted)}")
        rows, reserved = self._rows, self._reserved
        if wallet_id is not None:
            row = rows[wallet_id]
            if self._spendable(row) < wanted:
                return None
            reserved[row] = reserved.get(row, 0) + wanted
            return wallet_id
        ids, choice = self._ids, self.rng.choice
        spendable = self._spendable
        for _ in range(self.sample_tries if ids else 0):
            candidate = choice(ids)  # drawn one at a time: the first usually covers the amount
            row = rows[candidate]
            if spendable(row) >= wanted:
                reserved[row] = reserved.get(row, 0) + wanted
                return candidate
        return None

    def reserve_unchecked(self, wallet_id: str, amount: Decimal) -> Reservation:
        """Set amount aside even if it is not covered: for users that mean to provoke refusals."""
        amount = to_money(amount)
        self.reserve_unchecked_cents(wallet_id, cents(amount))
        return Reservation(wallet_id, amount)

    def reserve_unchecked_cents(self, wallet_id: str, wanted: int) -> str:
        row = self._rows[wallet_id]
        self._reserved[row] = self._reserved.get(row, 0) + wanted
        return wallet_id

    def acknowledged(self, reservation: Reservation | None, snapshots: list[dict]) -> None:
        """The server applied the operation; snapshots are the wallets it returned."""
        if reservation is not None:
            self._release(reservation.wallet_id, cents(reservation.amount))
        for snapshot in snapshots:
            self.observe(snapshot)

    def rejected(self, reservation: Reservation | None) -> None:
        """The server definitely did not apply the operation."""
        if reservation is not None:
            self._release(reservation.wallet_id, cents(reservation.amount))

    def indeterminate_debit(self, reservation: Reservation) -> None:
        """A debit whose fate is unknown: its amount stays off the spendable balance for good."""
        self.answered_cents(INDETERMINATE, reservation.wallet_id, cents(reservation.amount))

    def indeterminate_credit(self, wallet_id: str, amount: Decimal) -> None:
        self.answered_cents(INDETERMINATE, None, cents(amount), wallet_id)

    def answered_cents(
        self,
        outcome: str,
        reserved_on: str | None,
        amount: int,
        credited: str | None = None,
        snapshots: list[dict] = (),  # type: ignore[assignment]
    ) -> None:
        """An operation's answer in one call (the operations' hot path), amount in cents:
        reserved_on the wallet a debit or transfer reserved it on (None for a credit), credited
        the wallet it would add to. Ok: the reservation is released and the snapshots taken;
        rejected: released; indeterminate: a debit stays off the spendable balance and a credit
        on the upper bound, for good."""
        if reserved_on is not None:
            row = self._release(reserved_on, amount)
            if outcome == INDETERMINATE:
                debits = self._uncertain_debits
                debits[row] = debits.get(row, 0) + amount
        if outcome == OK:
            for snapshot in snapshots:
                self.observe(snapshot)
        elif outcome == INDETERMINATE and credited is not None:
            row = self._rows[credited]
            credits = self._uncertain_credits
            credits[row] = credits.get(row, 0) + amount

    def observe(self, snapshot: dict) -> None:
        """Take a wallet snapshot from a response if it is newer than what we know."""
        row = self._rows.get(snapshot.get("id"))
        if row is None:
            return
        version = snapshot.get("version")
        if isinstance(version, int) and version <= self._version[row]:
            return  # an older answer overtaken by a newer one
        balance = _readable_cents(snapshot.get("balance"))
        if balance is None:
            return  # no money amount: keep what is known (the check reports the service's fault)
        self._balance[row] = balance
        if isinstance(version, int):
            self._version[row] = version

    def _release(self, wallet_id: str, amount: int) -> int:
        row = self._rows[wallet_id]
        left = self._reserved.get(row, 0) - amount
        if left < 0:  # a bookkeeping bug, never a server fault
            raise AssertionError(f"{wallet_id}: released more than was reserved")
        if left:
            self._reserved[row] = left
        else:
            del self._reserved[row]
        return row


def _readable_cents(value: object) -> int | None:
    try:
        return cents(value)
    except (ValueError, ArithmeticError):
        return None
