"""The wallet pool: which wallets a load-generating process may use, and how much of each one's
money is safe to spend right now, so that two greenlets never spend the same money.

A wallet's balance is known as a range. Every debit reserves its amount before it is sent; an
acknowledged answer replaces the balance with the server's snapshot (newest version wins); a
definite refusal releases the reservation; an indeterminate outcome (timeout, 5xx) may or may not
have applied, for good, so its amount is kept off the spendable balance (a debit) or added to the
upper bound (a credit). Nothing here does I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

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


@dataclass
class PooledWallet:
    wallet_id: str
    balance: Decimal  # from the newest snapshot seen
    version: int = -1
    reserved: Decimal = ZERO  # debits in flight
    uncertain_debits: Decimal = ZERO  # indeterminate debits: maybe applied, maybe later
    uncertain_credits: Decimal = ZERO

    # An indeterminate debit stays subtracted for good, even once a newer snapshot already shows
    # it applied, so balance - uncertain_debits can fall below zero; no balance can: clamp.
    @property
    def spendable(self) -> Decimal:
        return max(ZERO, self.balance - self.reserved - self.uncertain_debits)

    @property
    def low(self) -> Decimal:
        return max(ZERO, self.balance - self.uncertain_debits)

    @property
    def high(self) -> Decimal:
        return self.balance + self.uncertain_credits


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside on one wallet for one debit or outgoing transfer in flight."""

    wallet_id: str
    amount: Decimal


@dataclass
class WalletPool:
    """The wallets of one process, shared by all its users (greenlets never preempt each other
    between a pick and its reservation, so no lock is needed)."""

    rng: random.Random = field(default_factory=random.Random)
    sample_tries: int = 8
    _wallets: dict[str, PooledWallet] = field(default_factory=dict)
    _ids: list[str] = field(default_factory=list)

    def add(self, wallet_id: str, balance: Decimal, version: int = -1) -> None:
        if wallet_id not in self._wallets:
            self._ids.append(wallet_id)
        self._wallets[wallet_id] = PooledWallet(wallet_id, to_money(balance), version)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, wallet_id: str) -> bool:
        return wallet_id in self._wallets

    def wallet(self, wallet_id: str) -> PooledWallet:
        return self._wallets[wallet_id]

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

    def reserve(self, amount: Decimal, wallet_id: str | None = None) -> Reservation | None:
        """Set amount aside on a wallet whose spendable balance covers it: wallet_id if given,
        else one of a few sampled at random (cheap: no scan). None if none covers it."""
        amount = to_money(amount)
        if amount <= 0:
            raise ValueError(f"amount must be positive, not {amount}")
        if wallet_id is not None:
            candidates: Iterable[str] = (wallet_id,)
        else:
            # drawn lazily: the first candidate usually covers the amount
            ids, choice = self._ids, self.rng.choice
            candidates = (choice(ids) for _ in range(self.sample_tries)) if ids else ()
        for candidate in candidates:
            wallet = self._wallets[candidate]
            if wallet.spendable >= amount:
                wallet.reserved += amount
                return Reservation(candidate, amount)
        return None

    def reserve_unchecked(self, wallet_id: str, amount: Decimal) -> Reservation:
        """Set amount aside even if it is not covered: for users that mean to provoke refusals."""
        amount = to_money(amount)
        self._wallets[wallet_id].reserved += amount
        return Reservation(wallet_id, amount)

    def acknowledged(self, reservation: Reservation | None, snapshots: list[dict]) -> None:
        """The server applied the operation; snapshots are the wallets it returned."""
        if reservation is not None:
            self._release(reservation)
        for snapshot in snapshots:
            self.observe(snapshot)

    def rejected(self, reservation: Reservation | None) -> None:
        """The server definitely did not apply the operation."""
        if reservation is not None:
            self._release(reservation)

    def indeterminate_debit(self, reservation: Reservation) -> None:
        """A debit whose fate is unknown: its amount stays off the spendable balance for good."""
        self._release(reservation)
        self._wallets[reservation.wallet_id].uncertain_debits += reservation.amount

    def indeterminate_credit(self, wallet_id: str, amount: Decimal) -> None:
        self._wallets[wallet_id].uncertain_credits += to_money(amount)

    def observe(self, snapshot: dict) -> None:
        """Take a wallet snapshot from a response if it is newer than what we know."""
        wallet = self._wallets.get(snapshot.get("id"))
        if wallet is None:
            return
        version = snapshot.get("version")
        if isinstance(version, int) and version <= wallet.version:
            return  # an older answer overtaken by a newer one
        wallet.balance = to_money(snapshot["balance"])
        if isinstance(version, int):
            wallet.version = version

    def _release(self, reservation: Reservation) -> None:
        wallet = self._wallets[reservation.wallet_id]
        wallet.reserved -= reservation.amount
        if wallet.reserved < 0:  # a bookkeeping bug, never a server fault
            raise AssertionError(f"{reservation.wallet_id}: released more than was reserved")
