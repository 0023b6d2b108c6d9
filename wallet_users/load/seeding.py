"""Seeding: create the run's wallets concurrently before any task runs, each with an
Idempotency-Key (re-sent once if the first answer was indeterminate, so a creation's fate is
known), and put the created ones in the pool."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import gevent.pool
from faker import Faker

from ..record import INDETERMINATE, OK, REJECTED, RunRecord
from ..record.history import KIND_CODES, AckHistory
from ..record.ids import idempotency_key, wallet_id
from ..wiring.options import AmountRange
from .operations import outcome_of
from .pool import WalletPool, to_money

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalletPlan:
    wallet_id: str
    owner_id: str
    initial_balance: Decimal


@dataclass
class SeedResult:
    planned: int
    created: int
    seconds: float

    @property
    def success_percent(self) -> float:
        return 100.0 * self.created / self.planned if self.planned else 100.0


OWNER_NAMES = 1000  # Faker names drawn once per plan; wallets pick among them


def plan_wallets(
    run_id: str,
    count: int,
    balances: AmountRange,
    seed: int | None,
    kind: str = "w",
    start: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> list[WalletPlan]:
    """The wallets to create, or, with shard=(index, shards), every shards-th of them from index:
    reproducible for a given seed whatever the number of shards. Owner ids are Faker names with a
    random suffix: a few hundred Faker calls per plan, not one per wallet (Faker costs about 70 µs
    a name, which made planning a million wallets take over a minute)."""
    fake = Faker()
    fake.seed_instance(seed)
    names = [fake.user_name() for _ in range(min(count, OWNER_NAMES))]
    rng = random.Random(seed)
    draws = [(rng.randint(balances.low, balances.high), rng.randrange(10**6)) for _ in range(count)]
    index, shards = shard
    return [
        WalletPlan(
            wallet_id(run_id, start + i, kind),
            f"owner-{names[i % len(names)]}-{draws[i][1]:06d}",
            Decimal(draws[i][0]),
        )
        for i in range(index, count, shards)
    ]


def create_wallet(client: Any, plan: WalletPlan, key: str) -> tuple[str, Any]:
    """POST /wallets once; the outcome and the answer's JSON (or None)."""
    body = {
        "walletId": plan.wallet_id,
        "ownerId": plan.owner_id,
        "initialBalance": int(plan.initial_balance),
    }
    with client.post(
        "/wallets",
        json=body,
        headers={"Idempotency-Key": key},
        name="/wallets",
        catch_response=True,
    ) as response:
        outcome = outcome_of(response.status_code or None)
        if outcome == OK:
            response.success()
            try:
                return outcome, response.json()
            except ValueError:
                return outcome, None
        response.failure(f"create wallet: {response.status_code}: {(response.text or '')[:200]}")
        return outcome, None


def remember_creation(history: AckHistory | None, plan: WalletPlan, body: Any) -> None:
    """A creation's acknowledged snapshot, in the run's history."""
    if history is not None and isinstance(body, dict):
        history.add(
            plan.wallet_id,
            body.get("version"),
            body.get("balance"),
            KIND_CODES["create"],
            int(plan.initial_balance) * 100,
        )


def seed(
    client: Any,
    plans: list[WalletPlan],
    pool: WalletPool,
    record: RunRecord,
    *,
    run_id: str,
    concurrency: int = 50,
    label: str = "wallets",
    adopt_existing: bool = False,
    history: AckHistory | None = None,
) -> SeedResult:
    """Create plans concurrently; with adopt_existing (wallets shared between workers), a wallet
    another worker created first (409) still joins this pool."""
    started = time.monotonic()
    done = 0
    created = 0
    step = max(1, len(plans) // 5)

    def one(plan: WalletPlan) -> None:
        nonlocal done, created
        key = idempotency_key(run_id)
        outcome, body = create_wallet(client, plan, key)
        if outcome == INDETERMINATE:
            outcome, body = create_wallet(client, plan, key)  # same key: at most one effect
            if outcome == REJECTED:
                outcome = INDETERMINATE  # a 409: the first may still be in flight, or done
        record.wallet_created(plan.wallet_id, outcome, plan.initial_balance)
        if outcome == OK:
            balance = plan.initial_balance
            version = -1
            if isinstance(body, dict):
                balance = to_money(body.get("balance", balance))
                version = body.get("version", -1) if isinstance(body.get("version"), int) else -1
            pool.add(plan.wallet_id, balance, version)
            remember_creation(history, plan, body)
            created += 1
        elif outcome == REJECTED and adopt_existing:
            pool.add(plan.wallet_id, plan.initial_balance)  # its snapshots will correct the balance
        done += 1
        if done % step == 0 or done == len(plans):
            log.info("seeding %s: %d/%d (%d created)", label, done, len(plans), created)

    workers = gevent.pool.Pool(max(1, min(concurrency, len(plans))))
    for plan in plans:
        workers.spawn(one, plan)
    workers.join(raise_error=True)
    return SeedResult(len(plans), created, time.monotonic() - started)
