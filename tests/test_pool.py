"""The wallet pool's bookkeeping, against a model of a server that applies the client's operations
in any order: whatever the interleaving of reservations and ok / rejected / indeterminate answers,
no debit sent on a checked reservation can be refused for funds, no bound goes negative, and once
every answer is in, nothing stays reserved and the pool agrees with the server."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from wallet_users.load.pool import Reservation, WalletPool, to_money

# --- plain unit tests ------------------------------------------------------------------------


def pool_of(*balances: int | str, versions: int = 1) -> WalletPool:
    pool = WalletPool(random.Random(7))
    for index, balance in enumerate(balances):
        pool.add(f"w{index}", to_money(balance), versions)
    return pool


def test_debit_never_reserves_more_than_the_known_balance() -> None:
    pool = pool_of(100)
    first = pool.reserve(Decimal(60))
    assert first == Reservation("w0", Decimal(60))
    assert pool.reserve(Decimal(60)) is None
    assert pool.reserve(Decimal(40)) == Reservation("w0", Decimal(40))
    assert pool.reserve(Decimal(1)) is None
    assert pool.wallet("w0").spendable == 0


def test_a_named_wallet_is_reserved_only_if_it_covers_the_amount() -> None:
    pool = pool_of(10, 1000)
    assert pool.reserve(Decimal(50), "w0") is None
    assert pool.wallet("w0").reserved == 0
    assert pool.reserve(Decimal(50), "w1") == Reservation("w1", Decimal(50))


def test_a_rejected_debit_gives_its_money_back() -> None:
    pool = pool_of(100)
    reservation = pool.reserve(Decimal(100))
    pool.rejected(reservation)
    assert pool.wallet("w0").spendable == 100
    assert pool.reserve(Decimal(100)) is not None


def test_an_indeterminate_debit_stays_off_the_spendable_balance_even_after_newer_snapshots() -> (
    None
):
    pool = pool_of(100)
    reservation = pool.reserve(Decimal(70))
    pool.indeterminate_debit(reservation)
    wallet = pool.wallet("w0")
    assert (wallet.reserved, wallet.low, wallet.spendable) == (0, 30, 30)
    # a newer snapshot cannot tell whether the lost debit will still land: keep it off
    pool.observe({"id": "w0", "balance": 100, "version": 5})
    assert wallet.spendable == 30
    assert pool.reserve(Decimal(31)) is None


def test_the_lower_bound_stays_at_zero_when_a_newer_snapshot_already_shows_a_lost_debit() -> None:
    pool = pool_of(3, 0, versions=0)
    lost = pool.reserve(Decimal(2), "w0")
    pool.indeterminate_debit(lost)  # the server did apply it: 1 left, version 1
    transfer = pool.reserve(Decimal(1), "w0")
    pool.acknowledged(transfer, [{"id": "w0", "balance": 0, "version": 2}])
    wallet = pool.wallet("w0")
    assert (wallet.low, wallet.spendable, wallet.reserved) == (0, 0, 0)


def test_an_indeterminate_credit_raises_only_the_upper_bound() -> None:
    pool = pool_of(100)
    pool.indeterminate_credit("w0", Decimal(40))
    wallet = pool.wallet("w0")
    assert (wallet.low, wallet.high, wallet.spendable) == (100, 140, 100)


def test_a_snapshot_older_than_the_known_version_is_ignored() -> None:
    pool = pool_of(100, versions=3)
    pool.observe({"id": "w0", "balance": 500, "version": 2})
    pool.observe({"id": "w0", "balance": 500, "version": 3})
    assert pool.wallet("w0").balance == 100
    pool.observe({"id": "w0", "balance": 80, "version": 4})
    assert (pool.wallet("w0").balance, pool.wallet("w0").version) == (80, 4)


def test_acknowledged_answers_arriving_out_of_order_keep_the_newest_balance() -> None:
    pool = pool_of(100, versions=1)
    first = pool.reserve(Decimal(10))
    second = pool.reserve(Decimal(20))
    # the server applied first (v2, 90) then second (v3, 70); the answers arrive the other way
    pool.acknowledged(second, [{"id": "w0", "balance": 70, "version": 3}])
    pool.acknowledged(first, [{"id": "w0", "balance": 90, "version": 2}])
    wallet = pool.wallet("w0")
    assert (wallet.balance, wallet.reserved, wallet.spendable) == (70, 0, 70)


def test_numeric_strings_are_accepted_as_balances_as_typeorm_returns_them() -> None:
    pool = pool_of("250.0000")
    assert pool.wallet("w0").balance == Decimal(250)
    pool.observe({"id": "w0", "balance": "199.5000", "version": 2})
    assert pool.wallet("w0").balance == Decimal("199.5")
    assert pool.reserve("199.5") is not None
    assert to_money("12.34") == Decimal("12.34")
    assert to_money(7) == Decimal(7)


@pytest.mark.parametrize("value", [None, True, "abc"])
def test_a_value_that_is_no_amount_of_money_is_refused(value: object) -> None:
    with pytest.raises((ValueError, ArithmeticError)):
        to_money(value)


@pytest.mark.parametrize("amount", [0, -5])
def test_only_positive_amounts_can_be_reserved(amount: int) -> None:
    with pytest.raises(ValueError):
        pool_of(100).reserve(Decimal(amount))


def test_snapshots_of_wallets_outside_the_pool_are_ignored() -> None:
    pool = pool_of(100)
    pool.observe({"id": "elsewhere", "balance": 5, "version": 9})
    assert "elsewhere" not in pool
    assert len(pool) == 1


def test_releasing_a_reservation_twice_is_a_bookkeeping_error() -> None:
    pool = pool_of(100)
    reservation = pool.reserve(Decimal(10))
    pool.rejected(reservation)
    with pytest.raises(AssertionError):
        pool.rejected(reservation)


def test_a_transfer_needs_a_second_wallet() -> None:
    assert pool_of(100).pick_other("w0") is None
    pool = pool_of(100, 100)
    assert {pool.pick_other("w0") for _ in range(20)} == {"w1"}


def test_an_empty_pool_reserves_nothing() -> None:
    assert WalletPool(random.Random(1)).reserve(Decimal(1)) is None


# --- the pool against a model server ---------------------------------------------------------


@dataclass
class ModelWallet:
    balance: Decimal
    version: int


@dataclass
class InFlight:
    """One request the client has sent and not yet had answered."""

    kind: str  # credit, debit, transfer
    wallet_id: str
    amount: Decimal
    reservation: Reservation | None
    to_id: str | None = None
    applied: bool = False
    snapshots: list[dict] = field(default_factory=list)  # what the server answered when it applied


class ModelServer:
    """Applies operations atomically, one at a time, in whatever order the test chooses; refuses a
    debit the balance does not cover. Answers balances sometimes as numeric strings (TypeORM)."""

    def __init__(self, balances: dict[str, Decimal], versions: dict[str, int]) -> None:
        self.wallets = {w: ModelWallet(b, versions[w]) for w, b in balances.items()}
        self.refused_for_funds = 0

    def snapshot(self, wallet_id: str, as_string: bool) -> dict:
        wallet = self.wallets[wallet_id]
        balance: object = f"{wallet.balance:.4f}" if as_string else int(wallet.balance)
        return {"id": wallet_id, "balance": balance, "version": wallet.version}

    def apply(self, op: InFlight, as_string: bool) -> bool:
        """Apply op; False (no effect) if the paying wallet cannot cover it."""
        if op.kind == "credit":
            self._change(op.wallet_id, op.amount)
            op.snapshots = [self.snapshot(op.wallet_id, as_string)]
            return True
        if self.wallets[op.wallet_id].balance < op.amount:
            self.refused_for_funds += 1
            return False
        self._change(op.wallet_id, -op.amount)
        if op.kind == "debit":
            op.snapshots = [self.snapshot(op.wallet_id, as_string)]
        else:
            self._change(op.to_id, op.amount)
            op.snapshots = [
                self.snapshot(op.wallet_id, as_string),
                self.snapshot(op.to_id, as_string),
            ]
        return True

    def _change(self, wallet_id: str, delta: Decimal) -> None:
        wallet = self.wallets[wallet_id]
        wallet.balance += delta
        wallet.version += 1


amounts = st.integers(min_value=1, max_value=300).map(Decimal)


class PoolAgainstModelServer(RuleBasedStateMachine):
    """Checked reservations only, as WalletUser uses the pool."""

    @initialize(
        balances=st.lists(st.integers(0, 500), min_size=1, max_size=4),
        version=st.sampled_from([0, 1]),
        rng_seed=st.integers(0, 2**32),
    )
    def seed_wallets(self, balances: list[int], version: int, rng_seed: int) -> None:
        self.pool = WalletPool(random.Random(rng_seed))
        ids = [f"w{i}" for i in range(len(balances))]
        for wallet_id, balance in zip(ids, balances, strict=True):
            self.pool.add(wallet_id, Decimal(balance), version)
        self.server = ModelServer(
            {w: Decimal(b) for w, b in zip(ids, balances, strict=True)}, dict.fromkeys(ids, version)
        )
        self.ids = ids
        self.in_flight: list[InFlight] = []
        self.lost: list[InFlight] = []  # indeterminate and not yet applied: may land any time
        self.uncertain: set[str] = set()  # wallets an indeterminate operation touched

    # --- the client sends ---

    @rule(amount=amounts, index=st.integers(0, 3))
    def send_credit(self, amount: Decimal, index: int) -> None:
        self.in_flight.append(InFlight("credit", self.ids[index % len(self.ids)], amount, None))

    @rule(amount=amounts, named=st.booleans(), index=st.integers(0, 3))
    def send_debit(self, amount: Decimal, named: bool, index: int) -> None:
        wallet_id = self.ids[index % len(self.ids)] if named else None
        reservation = self.pool.reserve(amount, wallet_id)
        if reservation is not None:
            self.in_flight.append(InFlight("debit", reservation.wallet_id, amount, reservation))

    @rule(amount=amounts)
    def send_transfer(self, amount: Decimal) -> None:
        reservation = self.pool.reserve(amount)
        if reservation is None:
            return
        to_id = self.pool.pick_other(reservation.wallet_id)
        if to_id is None:
            self.pool.rejected(reservation)
            return
        self.in_flight.append(
            InFlight("transfer", reservation.wallet_id, amount, reservation, to_id)
        )

    # --- the server applies, in any order ---

    def _apply(self, op: InFlight, as_string: bool) -> bool:
        applied = self.server.apply(op, as_string)
        assert applied, f"a {op.kind} of {op.amount} on a checked reservation was refused for funds"
        op.applied = True
        return applied

    @precondition(lambda self: any(not op.applied for op in self.in_flight))
    @rule(index=st.integers(0, 100), as_string=st.booleans())
    def server_applies_a_request(self, index: int, as_string: bool) -> None:
        pending = [op for op in self.in_flight if not op.applied]
        self._apply(pending[index % len(pending)], as_string)

    @precondition(lambda self: self.lost)
    @rule(index=st.integers(0, 100), lands=st.booleans(), as_string=st.booleans())
    def a_lost_request_lands_late_or_never(self, index: int, lands: bool, as_string: bool) -> None:
        op = self.lost.pop(index % len(self.lost))
        if lands:
            self._apply(op, as_string)

    # --- the client hears back ---

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(0, 100), as_string=st.booleans())
    def answer_ok(self, index: int, as_string: bool) -> None:
        op = self.in_flight.pop(index % len(self.in_flight))
        if not op.applied:
            self._apply(op, as_string)
        self.pool.acknowledged(op.reservation, op.snapshots)

    @precondition(lambda self: any(not op.applied for op in self.in_flight))
    @rule(index=st.integers(0, 100))
    def answer_rejected(self, index: int) -> None:
        pending = [op for op in self.in_flight if not op.applied]
        op = pending[index % len(pending)]
        self.in_flight.remove(op)
        self.pool.rejected(op.reservation)

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(0, 100))
    def answer_indeterminate(self, index: int) -> None:
        op = self.in_flight.pop(index % len(self.in_flight))
        if op.reservation is not None:
            self.pool.indeterminate_debit(op.reservation)
            if op.to_id is not None:
                self.pool.indeterminate_credit(op.to_id, op.amount)
            self.uncertain.update({op.wallet_id, op.to_id} - {None})
        else:
            self.pool.indeterminate_credit(op.wallet_id, op.amount)
            self.uncertain.add(op.wallet_id)
        if not op.applied:
            self.lost.append(op)

    # --- what must always hold ---

    @invariant()
    def no_bound_is_negative(self) -> None:
        for wallet_id in self.ids:
            wallet = self.pool.wallet(wallet_id)
            assert wallet.low >= 0, wallet
            assert wallet.spendable >= 0, wallet
            assert wallet.reserved >= 0, wallet

    @invariant()
    def the_reservations_are_exactly_the_debits_in_flight(self) -> None:
        for wallet_id in self.ids:
            in_flight = sum(
                (
                    op.amount
                    for op in self.in_flight
                    if op.reservation and op.wallet_id == wallet_id
                ),
                Decimal(0),
            )
            assert self.pool.wallet(wallet_id).reserved == in_flight

    @invariant()
    def never_over_reserves(self) -> None:
        """Whatever order the server applies what may still land, every wallet covers it."""
        for wallet_id in self.ids:
            may_land = sum(
                (
                    op.amount
                    for op in [*self.in_flight, *self.lost]
                    if not op.applied and op.kind != "credit" and op.wallet_id == wallet_id
                ),
                Decimal(0),
            )
            assert self.server.wallets[wallet_id].balance - may_land >= 0

    @invariant()
    def once_every_answer_is_in_the_pool_agrees_with_the_server(self) -> None:
        if self.in_flight:
            return
        for wallet_id in self.ids:
            wallet = self.pool.wallet(wallet_id)
            held = self.server.wallets[wallet_id].balance
            assert wallet.reserved == 0
            assert wallet.low <= held <= wallet.high, (wallet, held)
            if wallet_id not in self.uncertain:
                assert wallet.balance == held, (wallet, held)

    def teardown(self) -> None:
        if not hasattr(self, "pool"):
            return
        # every request still in flight is answered: the run ends balanced
        while self.in_flight:
            self.answer_ok(0, as_string=False)
        self.once_every_answer_is_in_the_pool_agrees_with_the_server()
        assert self.server.refused_for_funds == 0


PoolAgainstModelServer.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_interleaving_of_answers_keeps_the_pool_safe_and_balanced = PoolAgainstModelServer.TestCase


class HotPoolAgainstModelServer(RuleBasedStateMachine):
    """Unchecked reservations, as HotWalletUser uses the pool: the server may refuse for funds,
    yet the bookkeeping still ends balanced and in agreement with the server."""

    @initialize(
        balances=st.lists(st.integers(0, 300), min_size=1, max_size=3),
        rng_seed=st.integers(0, 2**32),
    )
    def seed_wallets(self, balances: list[int], rng_seed: int) -> None:
        self.pool = WalletPool(random.Random(rng_seed))
        self.ids = [f"h{i}" for i in range(len(balances))]
        for wallet_id, balance in zip(self.ids, balances, strict=True):
            self.pool.add(wallet_id, Decimal(balance), 1)
        self.server = ModelServer(
            {w: Decimal(b) for w, b in zip(self.ids, balances, strict=True)},
            dict.fromkeys(self.ids, 1),
        )
        self.in_flight: list[InFlight] = []

    @rule(amount=amounts, index=st.integers(0, 2), debit=st.booleans())
    def send(self, amount: Decimal, index: int, debit: bool) -> None:
        wallet_id = self.ids[index % len(self.ids)]
        if debit:
            reservation = self.pool.reserve_unchecked(wallet_id, amount)
            self.in_flight.append(InFlight("debit", wallet_id, amount, reservation))
        else:
            self.in_flight.append(InFlight("credit", wallet_id, amount, None))

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(0, 100), as_string=st.booleans())
    def answer(self, index: int, as_string: bool) -> None:
        op = self.in_flight.pop(index % len(self.in_flight))
        if self.server.apply(op, as_string):
            self.pool.acknowledged(op.reservation, op.snapshots)
        else:
            self.pool.rejected(op.reservation)  # 400 insufficient funds

    @invariant()
    def the_reservations_are_exactly_the_debits_in_flight(self) -> None:
        for wallet_id in self.ids:
            in_flight = sum(
                (
                    op.amount
                    for op in self.in_flight
                    if op.reservation and op.wallet_id == wallet_id
                ),
                Decimal(0),
            )
            assert self.pool.wallet(wallet_id).reserved == in_flight

    @invariant()
    def the_server_never_goes_negative(self) -> None:
        assert all(w.balance >= 0 for w in self.server.wallets.values())

    @invariant()
    def once_every_answer_is_in_the_pool_holds_the_servers_balance(self) -> None:
        if self.in_flight:
            return
        for wallet_id in self.ids:
            wallet = self.pool.wallet(wallet_id)
            assert wallet.reserved == 0
            assert wallet.balance == self.server.wallets[wallet_id].balance


HotPoolAgainstModelServer.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_unchecked_hot_wallet_debits_still_end_balanced = HotPoolAgainstModelServer.TestCase
