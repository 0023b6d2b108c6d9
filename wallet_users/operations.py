"""The wallet operations a user performs, over any Locust HTTP client (FastHttpSession or
requests' HttpSession): each call reserves in the pool, sends one request with a fresh
Idempotency-Key, classifies the answer as ok / rejected / indeterminate, and books it in the pool
and the run record. The user classes only choose which operation to call."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .options import AmountRange, idempotency_key
from .pool import Reservation, WalletPool
from .record import INDETERMINATE, OK, REJECTED, RunRecord


def outcome_of(status: int | None) -> str:
    """2xx applied; 4xx definitely not; anything else (5xx, timeout, no answer) unknown."""
    if status and 200 <= status < 300:
        return OK
    if status and 400 <= status < 500:
        return REJECTED
    return INDETERMINATE


def refused_for_funds(status: int | None, text: str) -> bool:
    return status == 400 and "insufficient funds" in text.lower()


def snapshots_of(body: Any) -> list[dict]:
    """The wallet snapshots in a mutation's answer: one wallet, or a transfer's two."""
    if not isinstance(body, dict):
        return []
    if "fromWallet" in body or "toWallet" in body:
        return [w for w in (body.get("fromWallet"), body.get("toWallet")) if isinstance(w, dict)]
    return [body] if "id" in body and "balance" in body else []


@dataclass
class Answer:
    status: int | None
    text: str
    body: Any


class WalletOperations:
    """One user's view of the wallet service: shared pool and record, its own client and rng."""

    def __init__(
        self,
        client: Any,
        pool: WalletPool,
        record: RunRecord,
        rng: random.Random,
        *,
        run_id: str,
        replay_ratio: float = 0.0,
        expect_refusals: bool = False,
    ) -> None:
        self.client = client
        self.pool = pool
        self.record = record
        self.rng = rng
        self.run_id = run_id
        self.replay_ratio = replay_ratio
        self.expect_refusals = expect_refusals

    def amount(self, bounds: AmountRange) -> Decimal:
        return Decimal(self.rng.randint(bounds.low, bounds.high))

    # --- the operations ------------------------------------------------------------------------

    def credit(self, amount: Decimal, wallet_id: str | None = None) -> Answer:
        wallet_id = wallet_id or self.pool.pick()
        self.record.operation_sent("credit", wallet_id, amount)
        answer = self._send(
            f"/wallets/{wallet_id}/credit", "/wallets/[id]/credit", {"amount": int(amount)}
        )
        self._book("credit", answer, wallet_id, amount, None, None)
        return answer

    def debit(self, amount: Decimal, wallet_id: str | None = None) -> Answer | None:
        reservation = self._reserve(amount, wallet_id)
        if reservation is None:
            return None  # no wallet can afford it right now: skip rather than provoke a refusal
        self.record.operation_sent("debit", reservation.wallet_id, amount)
        answer = self._send(
            f"/wallets/{reservation.wallet_id}/debit",
            "/wallets/[id]/debit",
            {"amount": int(amount)},
        )
        self._book("debit", answer, reservation.wallet_id, amount, reservation, None)
        return answer

    def transfer(self, amount: Decimal, from_id: str | None = None) -> Answer | None:
        reservation = self._reserve(amount, from_id)
        if reservation is None:
            return None
        to_id = self.pool.pick_other(reservation.wallet_id)
        if to_id is None:
            self.pool.rejected(reservation)
            return None
        self.record.operation_sent("transfer", reservation.wallet_id, amount, to_id)
        answer = self._send(
            f"/wallets/{reservation.wallet_id}/transfer",
            "/wallets/[id]/transfer",
            {"toWalletId": to_id, "amount": int(amount)},
        )
        self._book("transfer", answer, reservation.wallet_id, amount, reservation, to_id)
        return answer

    # --- mechanics -----------------------------------------------------------------------------

    def _reserve(self, amount: Decimal, wallet_id: str | None) -> Reservation | None:
        if self.expect_refusals:
            return self.pool.reserve_unchecked(wallet_id or self.pool.pick(), amount)
        return self.pool.reserve(amount, wallet_id)

    def _send(self, path: str, name: str, body: dict) -> Answer:
        key = idempotency_key(self.run_id)
        answer = self._post(path, name, body, key, replay=False)
        if (
            self.replay_ratio
            and outcome_of(answer.status) != INDETERMINATE
            and self.rng.random() < self.replay_ratio
        ):
            again = self._post(path, f"{name} (replay)", body, key, replay=True, expected=answer)
            wallet_id = path.split("/")[2]
            matched = again.status == answer.status and again.body == answer.body
            self.record.replay(wallet_id, matched)
            if outcome_of(again.status) == OK:
                for snapshot in snapshots_of(again.body):
                    self.pool.observe(snapshot)  # a replay applied twice did change the balance
        return answer

    def _post(
        self,
        path: str,
        name: str,
        body: dict,
        key: str,
        *,
        replay: bool,
        expected: Answer | None = None,
    ) -> Answer:
        with self.client.post(
            path, json=body, headers={"Idempotency-Key": key}, name=name, catch_response=True
        ) as response:
            status = response.status_code or None
            text = response.text or ""
            try:
                parsed = response.json() if text else None
            except ValueError:
                parsed = None
            answer = Answer(status, text, parsed)
            outcome = outcome_of(status)
            if replay:
                if expected is not None and (status != expected.status or parsed != expected.body):
                    response.failure(
                        f"replayed Idempotency-Key answered {status} {text[:120]!r},"
                        f" first answer was {expected.status}"
                    )
                else:
                    response.success()
            elif outcome == OK or refused_for_funds(status, text):
                response.success()  # a refusal for funds is a correct answer, counted apart
            elif outcome == REJECTED:
                response.failure(f"{status}: {text[:200]}")
            else:
                response.failure(f"indeterminate ({status or 'no answer'}): {text[:200]}")
            return answer

    def _book(
        self,
        kind: str,
        answer: Answer,
        wallet_id: str,
        amount: Decimal,
        reservation: Reservation | None,
        to_id: str | None,
    ) -> None:
        outcome = outcome_of(answer.status)
        if outcome == OK:
            self.pool.acknowledged(reservation, snapshots_of(answer.body))
        elif outcome == REJECTED:
            self.pool.rejected(reservation)
        elif reservation is not None:
            self.pool.indeterminate_debit(reservation)
            if to_id is not None:
                self.pool.indeterminate_credit(to_id, amount)
        else:
            self.pool.indeterminate_credit(wallet_id, amount)
        self.record.operation_answered(
            kind,
            outcome,
            wallet_id,
            amount,
            to_wallet_id=to_id,
            refused_for_funds=refused_for_funds(answer.status, answer.text),
        )
