"""The Locust user classes: declarative task weights and tags; the work itself is done by
`WalletOperations`.

- `WalletUser`: credit / debit / transfer over the balance-aware pool (weights 50/30/20 by default).
- `HotWalletUser`: many users on a few wallets, to stress the service's locking; refusals expected.
- `ReadYourWritesUser`: writes to a wallet of its own, then reads until the read model and the
  ledger show the write, and reports that staleness as Locust entries of their own.
- `RequestsWalletUser`: WalletUser on `requests` (HttpUser), for users who need its features.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal

from locust import FastHttpUser, HttpUser, constant, tag, task
from locust.exception import StopUser

from ..record import OK
from ..record.ids import idempotency_key, wallet_id
from .arrival import Pacer
from .operations import Answer, WalletOperations, outcome_of
from .pool import WalletPool
from .run import SuiteRun
from .seeding import WalletPlan, create_wallet

TASK_KINDS = ("credit", "debit", "transfer")


class WalletBehaviour:
    """The credit/debit/transfer tasks, shared by the FastHttpUser and HttpUser flavours and the
    hot-wallet user; subclasses say which pool they spend and whether refusals are expected.

    Closed model by default (the next task as soon as the last answer came); with
    --arrival-rate each user paces its share of the rate instead (`arrival.Pacer`)."""

    abstract = True
    expect_refusals = False
    pacer: Pacer | None = None

    def wallet_pool(self, run: SuiteRun) -> WalletPool:
        return run.wallets

    def on_start(self) -> None:
        run = getattr(self.environment, "wallet_suite_run", None)
        if run is None or not run.ready:
            raise StopUser()  # this test has no run (bad options in the web UI's form)
        self.run = run
        pool = self.wallet_pool(run)
        self.ops = WalletOperations(
            self.client,
            pool,
            run.record,
            run.user_rng(),
            run_id=run.options.run_id,
            replay_ratio=run.options.replay_ratio,
            expect_refusals=self.expect_refusals,
            in_doubt=run.in_doubt if run.options.resolve_indeterminate else None,
        )
        if not len(pool):
            raise StopUser()
        if run.arrival_share is not None:
            self.pacer = Pacer(
                run.arrival_share,
                run.arrival,
                self.environment.events.request.fire,
                phase=self.ops.rng.random(),
            )

    def on_stop(self) -> None:
        if self.pacer is not None:
            self.pacer.stop()

    def wait_time(self) -> float:
        return 0.0 if self.pacer is None else self.pacer.wait_time()

    def perform(self, kind: str, work: Callable[[], Answer | None]) -> None:
        """Run one operation now (closed model) or at its scheduled start (open model)."""
        if self.pacer is None:
            work()
        else:
            self.pacer.arrive(f"/wallets/[id]/{kind}", work)

    @tag("credit")
    @task(50)
    def credit(self) -> None:
        self.perform("credit", self._credit)

    @tag("debit")
    @task(30)
    def debit(self) -> None:
        self.perform("debit", self._debit)

    @tag("transfer")
    @task(20)
    def transfer(self) -> None:
        self.perform("transfer", self._transfer)

    def _credit(self) -> Answer:
        return self.ops.credit(self.ops.amount(self.run.options.credit_amount))

    def _debit(self) -> Answer | None:
        return self.ops.debit(self.ops.amount(self.run.options.debit_amount))

    def _transfer(self) -> Answer | None:
        return self.ops.transfer(self.ops.amount(self.run.options.transfer_amount))


class WalletUser(WalletBehaviour, FastHttpUser):
    abstract = False
    weight = 8


class RequestsWalletUser(WalletBehaviour, HttpUser):
    """Not in locustfile.py's default mix; select it with `-f locustfile.py,wallet_users/load/requests_flavour.py RequestsWalletUser`."""

    abstract = False


class HotWalletUser(WalletBehaviour, FastHttpUser):
    """Many users, few wallets: every debit is sent even when the wallet may not cover it."""

    abstract = False
    weight = 1
    expect_refusals = True

    def wallet_pool(self, run: SuiteRun) -> WalletPool:
        return run.hot_wallets


class ReadYourWritesUser(FastHttpUser):
    """After each write, polls until the read model and the ledger reflect it; the time that took
    is reported as 'staleness' entries, so projection lag shows in Locust's charts."""

    weight = 1
    wait_time = constant(0)
    poll_interval = 0.01

    def on_start(self) -> None:
        run = getattr(self.environment, "wallet_suite_run", None)
        if run is None or not run.ready:
            raise StopUser()  # no run in this test, or a worker with no shard in it
        self.run = run
        self.pool = type(run.wallets)(run.user_rng())
        self.ops = WalletOperations(
            self.client,
            self.pool,
            run.record,
            run.user_rng(),
            run_id=run.options.run_id,
            in_doubt=run.in_doubt if run.options.resolve_indeterminate else None,
        )
        plan = WalletPlan(
            wallet_id(run.options.run_id, 0, f"r{uuid.uuid4().hex[:8]}-"),
            f"owner-ryw-{uuid.uuid4().hex[:8]}",
            Decimal(run.options.initial_balance.high),
        )
        outcome, body = create_wallet(self.client, plan, idempotency_key(run.options.run_id))
        run.record.wallet_created(plan.wallet_id, outcome, plan.initial_balance)
        if outcome != OK or not isinstance(body, dict):
            raise StopUser()
        self.pool.add(plan.wallet_id, plan.initial_balance, body.get("version", -1))
        self.wallet_id = plan.wallet_id

    @tag("ryw", "credit")
    @task(1)
    def credit_then_read(self) -> None:
        answer = self.ops.credit(self.ops.amount(self.run.options.credit_amount), self.wallet_id)
        if outcome_of(answer.status) == OK:
            self._await_visibility(answer.body)

    @tag("ryw", "debit")
    @task(1)
    def debit_then_read(self) -> None:
        answer = self.ops.debit(self.ops.amount(self.run.options.debit_amount), self.wallet_id)
        if answer is not None and outcome_of(answer.status) == OK:
            self._await_visibility(answer.body)

    def _await_visibility(self, snapshot: dict) -> None:
        balance = snapshot.get("balance")
        started = time.perf_counter()
        deadline = started + max(1.0, self.run.options.settle_timeout)
        seen = {"read model": False, "ledger": False}
        while not all(seen.values()) and time.perf_counter() < deadline:
            if not seen["read model"]:
                seen["read model"] = self._shows(
                    f"/wallets/{self.wallet_id}", "/wallets/[id]", balance, started, "read model"
                )
            if not seen["ledger"]:
                seen["ledger"] = self._shows(
                    f"/ledger/wallet/{self.wallet_id}?limit=1",
                    "/ledger/wallet/[id]",
                    balance,
                    started,
                    "ledger",
                )
            if not all(seen.values()):
                time.sleep(self.poll_interval)  # gevent-patched: yields to other users
        for what, ok in seen.items():
            if not ok:
                self._report(what, started, RuntimeError(f"{what} did not show the write in time"))

    def _shows(self, path: str, name: str, balance, started: float, what: str) -> bool:
        with self.client.get(path, name=name, catch_response=True) as response:
            try:
                body = response.json()
            except (ValueError, TypeError):
                body = None
            response.success() if response.status_code in (200, 404) else response.failure(
                str(response.status_code)
            )
        if what == "ledger":
            entries = body.get("transactions") if isinstance(body, dict) else None
            current = entries[0].get("balanceAfter") if entries else None
        else:
            current = body.get("balance") if isinstance(body, dict) else None
        if current is not None and Decimal(str(current)) == Decimal(str(balance)):
            self._report(what, started, None)
            return True
        return False

    def _report(self, what: str, started: float, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="STALE",
            name=f"{what} staleness",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
