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

from locust import FastHttpUser, HttpUser, tag, task
from locust.exception import StopUser

from ..record import INDETERMINATE, OK
from ..record.ids import idempotency_key, wallet_id
from .arrival import Pacer
from .operations import Answer, WalletOperations
from .pool import WalletPool
from .run import SuiteRun
from .seeding import WalletPlan, create_wallet, remember_creation

TASK_KINDS = ("credit", "debit", "transfer")
MAX_BACKOFF_SECONDS = 1.0


def backoff(unanswered: int) -> float:
    """The pause after `unanswered` operations in a row left in doubt: a service that is down
    answers at once (connection refused, 5xx), and without a pause each user would send
    thousands of doomed operations a second, each one in doubt."""
    return min(MAX_BACKOFF_SECONDS, 0.02 * 2 ** min(unanswered, 6)) if unanswered else 0.0


def in_doubt_streak(unanswered: int, outcome: str) -> int:
    """The count of operations in a row left in doubt, after one more that ended `outcome`."""
    return unanswered + 1 if outcome == INDETERMINATE else 0


class WalletBehaviour:
    """The credit/debit/transfer tasks, shared by the FastHttpUser and HttpUser flavours and the
    hot-wallet user; subclasses say which pool they spend and whether refusals are expected.

    Closed model by default (the next task as soon as the last answer came); with
    --arrival-rate each user paces its share of the rate instead (`arrival.Pacer`)."""

    abstract = True
    expect_refusals = False
    pacer: Pacer | None = None
    unanswered = 0  # operations in a row left indeterminate (closed model: they back off)

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
            history=run.history,
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
        if self.pacer is not None:
            return self.pacer.wait_time()
        return backoff(self.unanswered) if self.unanswered else 0.0  # no call between answers

    def perform(self, kind: str, work: Callable[[], Answer | None]) -> None:
        """Run one operation now (closed model) or at its scheduled start (open model)."""
        if self.pacer is None:
            answer = work()
            if answer is not None:
                self.unanswered = in_doubt_streak(self.unanswered, answer.outcome)
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
    is reported as 'staleness' entries, so projection lag shows in Locust's charts. A write still
    not shown after --visibility-timeout (a 404, a 5xx, an old balance) is a failure, in Locust's
    statistics and in the run record, so a read endpoint that never works cannot look healthy."""

    weight = 1
    poll_interval = 0.01
    unanswered = 0  # writes in a row left in doubt: it backs off as the wallet users do

    def wait_time(self) -> float:
        return backoff(self.unanswered)

    def _answered(self, answer: Answer | None) -> bool:
        """Whether the write was acknowledged (then it is read back); counts the in-doubt."""
        if answer is None:
            return False
        outcome = answer.outcome
        self.unanswered = in_doubt_streak(self.unanswered, outcome)
        return outcome == OK

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
            history=run.history,
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
        remember_creation(run.history, plan, body)
        self.wallet_id = plan.wallet_id

    @tag("ryw", "credit")
    @task(1)
    def credit_then_read(self) -> None:
        answer = self.ops.credit(self.ops.amount(self.run.options.credit_amount), self.wallet_id)
        if self._answered(answer):
            self._await_visibility(answer.body)

    @tag("ryw", "debit")
    @task(1)
    def debit_then_read(self) -> None:
        answer = self.ops.debit(self.ops.amount(self.run.options.debit_amount), self.wallet_id)
        if self._answered(answer):
            self._await_visibility(answer.body)

    def _await_visibility(self, snapshot: dict) -> None:
        balance = snapshot.get("balance")
        timeout = self.run.options.visibility_timeout
        started = time.perf_counter()
        pending = {
            "read model": (f"/wallets/{self.wallet_id}", "/wallets/[id]"),
            "ledger": (f"/ledger/wallet/{self.wallet_id}?limit=1", "/ledger/wallet/[id]"),
        }
        last: dict[str, str] = {}
        faults = self.run.faults
        while pending:
            # a write cannot show while a fault is on: its time counts from the fault's end
            deadline = max(started, faults.quiet_since()) + timeout
            final = time.perf_counter() >= deadline  # this round's answers are the verdict
            for what, (path, name) in list(pending.items()):
                answer = self._shows(path, name, balance, what, final)
                if answer is None:
                    del pending[what]
                    self._report(what, started, None)
                else:
                    last[what] = answer
            if final:
                break
            if pending:
                # gevent-patched: yields to other users; slower while the service is down
                down = any(a == NO_ANSWER or a.startswith("5") for a in last.values())
                time.sleep(0.1 if down else self.poll_interval)
        for what in ("read model", "ledger"):
            answer = last.get(what, "")
            if what in pending:
                self._report(
                    what,
                    started,
                    RuntimeError(
                        f"{what} did not show the write within {timeout:g}s (last answer: {answer})"
                    ),
                )
            if answer != NO_ANSWER or what not in pending:  # no answer says nothing of the read
                self.run.record.read_checked(self.wallet_id, what, what not in pending, answer)

    def _shows(self, path: str, name: str, balance, what: str, final: bool) -> str | None:
        """One poll: None if it shows the balance, else what it answered ('404', '500', 'balance
        120', 'no answer'). A 404 is 'not visible yet' until the visibility timeout, then a
        failure; a 5xx or no answer always is one."""
        with self.client.get(path, name=name, catch_response=True) as response:
            status = response.status_code or 0
            try:
                body = response.json() if status == 200 else None
            except (ValueError, TypeError):
                body = None
            if what == "ledger":
                entries = body.get("transactions") if isinstance(body, dict) else None
                current = entries[0].get("balanceAfter") if entries else None
            else:
                current = body.get("balance") if isinstance(body, dict) else None
            shown = current is not None and Decimal(str(current)) == Decimal(str(balance))
            if status == 200:
                response.success()
                return None if shown else f"balance {current}"
            answer = str(status) if status else NO_ANSWER
            if status == 404 and not final:
                response.success()  # not visible yet
            else:
                response.failure(
                    f"{answer} after {self.run.options.visibility_timeout:g}s: {what} never"
                    " showed the write"
                    if status == 404
                    else answer
                )
            return answer

    def _report(self, what: str, started: float, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="STALE",
            name=f"{what} staleness",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


NO_ANSWER = "no answer"
