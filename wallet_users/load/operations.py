"""The wallet operations a user performs, over any Locust HTTP client (FastHttpSession or
requests' HttpSession): each call reserves in the pool, sends one request with a fresh
Idempotency-Key, classifies the answer as ok / rejected / indeterminate, and books it in the pool
and the run record. The user classes only choose which operation to call."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from locust.clients import HttpSession

from ..money import cents
from ..record import INDETERMINATE, OK, REJECTED, RunRecord
from ..record.history import KIND_CODES, AckHistory
from ..record.ids import idempotency_keys
from ..wiring.options import AmountRange
from .pool import WalletPool


def outcome_of(status: int | None) -> str:
    """2xx applied; 4xx definitely not; anything else (5xx, timeout, no answer) unknown."""
    if status and 200 <= status < 300:
        return OK
    if status and 400 <= status < 500:
        return REJECTED
    return INDETERMINATE


_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # what json.loads scans with
_json_space = json.decoder.WHITESPACE.match


def parse_json(content: bytes) -> Any:
    """json.loads(content), without its encoding sniffing and whitespace matching for the usual
    answer: an object in UTF-8 that ends where its text does (JSONDecoder.decode's steps, the
    same errors; a UTF-16 or BOM-prefixed body still goes through json.loads)."""
    if content[:1] == b"{" and content[1:2] != b"\x00":
        text = content.decode()
        try:
            value, end = _scan_json(text, 0)
        except StopIteration as error:
            raise json.JSONDecodeError("Expecting value", text, error.value) from None
        if end != len(text):
            end = _json_space(text, end).end()
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
        return value
    return json.loads(content)


_json_text = json.encoder.encode_basestring_ascii  # how json.dumps writes a str


def operation_body(amount: int, to_id: str | None = None) -> bytes:
    """json.dumps of an operation's body, {"amount": 120} or {"toWalletId": "...", "amount":
    120}, as bytes, written directly: setting up json's encoder costs more than that."""
    if to_id:
        return b'{"toWalletId": %s, "amount": %d}' % (_json_text(to_id).encode(), amount)
    return b'{"amount": %d}' % amount


def refused_for_funds(status: int | None, text: str) -> bool:
    return status == 400 and "insufficient funds" in text.lower()


def snapshots_of(body: Any) -> list[dict]:
    """The wallet snapshots in a mutation's answer: one wallet, or a transfer's two."""
    if not isinstance(body, dict):
        return []
    if "fromWallet" in body or "toWallet" in body:
        return [w for w in (body.get("fromWallet"), body.get("toWallet")) if isinstance(w, dict)]
    return [body] if "id" in body and "balance" in body else []


SNAPSHOT_FIELDS = ("balance", "version")
REQUEST_NAMES = {kind: f"/wallets/[id]/{kind}" for kind in ("credit", "debit", "transfer")}


def answer_differences(first: Any, again: Any) -> str:
    """What differs between two answers to one Idempotency-Key, whatever their status: the
    status, each wallet snapshot's balance and version, else the body's other fields."""
    parts = []
    if first.status != again.status:
        parts.append(f"status {first.status} -> {again.status}")
    before, after = _snapshots_by_place(first.body), _snapshots_by_place(again.body)
    for place in sorted(before.keys() | after.keys()):
        for name in SNAPSHOT_FIELDS:
            old, new = before.get(place, {}).get(name), after.get(place, {}).get(name)
            if old != new:
                parts.append(f"{place}{name} {old} -> {new}")
    if len(parts) == int(first.status != again.status) and first.body != again.body:
        old = first.body if isinstance(first.body, dict) else {"body": first.body}
        new = again.body if isinstance(again.body, dict) else {"body": again.body}
        for name in sorted(old.keys() | new.keys(), key=str)[:20]:
            if old.get(name) != new.get(name):
                parts.append(f"{name} {str(old.get(name))[:60]!r} -> {str(new.get(name))[:60]!r}")
            if len(parts) >= 4:
                break
    return ", ".join(parts) or "the same"


def differing_fields(first: Any, again: Any) -> list[str]:
    """The names of what differs between two answers (status, snapshot fields, else body keys)."""
    names = []
    for part in answer_differences(first, again).split(", "):
        name = part.split(" ", 1)[0]
        if name not in names and name != "the":
            names.append(name)
    return names or ["body"]


def _snapshots_by_place(body: Any) -> dict[str, dict]:
    """A mutation answer's snapshots by where they sit: '' for one wallet, 'fromWallet.' and
    'toWallet.' for a transfer's two."""
    if not isinstance(body, dict):
        return {}
    if "fromWallet" in body or "toWallet" in body:
        return {
            f"{place}.": body[place]
            for place in ("fromWallet", "toWallet")
            if isinstance(body.get(place), dict)
        }
    return {"": body} if "balance" in body or "version" in body else {}


def _replay_legs(
    kind: str, wallet_id: str, amount: Decimal, to_id: str | None
) -> list[tuple[str, Decimal]]:
    """What a replay executed again would move: (wallet, signed amount) per leg."""
    if kind == "credit":
        return [(wallet_id, amount)]
    if kind == "debit":
        return [(wallet_id, -amount)]
    return [(wallet_id, -amount), (to_id, amount)]


def applied_again(first: Any, again: Any) -> bool:
    """The replay was executed a second time and took effect, not answered from storage: a 2xx
    after a refusal, or a 2xx showing a newer version of a wallet than the first answer did."""
    if outcome_of(again.status) != OK:
        return False
    if outcome_of(first.status) == REJECTED:
        return True
    if outcome_of(first.status) != OK:
        return False
    versions = {s.get("id"): s.get("version") for s in snapshots_of(first.body)}
    for snapshot in snapshots_of(again.body):
        old, new = versions.get(snapshot.get("id")), snapshot.get("version")
        if type(old) is int and type(new) is int and new > old:
            return True
    return False


@dataclass(slots=True)
class InDoubt:
    """An operation sent but not definitely answered: what it takes to re-send it."""

    kind: str
    path: str
    name: str
    body: dict
    wallet_id: str
    amount: Decimal
    to_wallet_id: str | None


@dataclass(slots=True)
class Answer:
    status: int | None
    text: str
    body: Any
    outcome: str  # outcome_of(status)


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
        in_doubt: dict[str, InDoubt] | None = None,
        history: AckHistory | None = None,
    ) -> None:
        self.client = client
        self.pool = pool
        self.record = record
        self.rng = rng
        self.run_id = run_id
        self.next_key = idempotency_keys(run_id)
        # the headers the client's json= would add (FastHttpSession also asks for JSON back):
        # the body is sent already encoded (operation_body)
        self.json_headers = (
            {"Content-Type": "application/json"}
            if isinstance(client, HttpSession)
            else {"Content-Type": "application/json", "Accept": "application/json"}
        )
        self.replay_ratio = replay_ratio
        self.expect_refusals = expect_refusals
        # shared by the process's users: operations in flight or indeterminate, by key
        self.in_doubt = in_doubt  # None: nothing will be re-sent, so nothing is kept
        self.history = history  # the process's acknowledged snapshots (None: not kept)

    def amount(self, bounds: AmountRange) -> int:
        """A whole amount drawn from bounds: an int, so the hot path needs no Decimal (every
        method here takes an int or a Decimal). randint(low, high) is this randrange: the same
        draws, one call fewer."""
        return self.rng.randrange(bounds.low, bounds.high + 1)

    # --- the operations ------------------------------------------------------------------------

    def credit(self, amount: Decimal | int, wallet_id: str | None = None) -> Answer:
        wanted = cents(amount)
        wallet_id = wallet_id or self.pool.pick()
        return self._submit("credit", wallet_id, amount, wanted, None)

    def debit(self, amount: Decimal | int, wallet_id: str | None = None) -> Answer | None:
        wanted = cents(amount)
        reserved_on = self._reserve(wanted, wallet_id)
        if reserved_on is None:
            return None  # no wallet can afford it right now: skip rather than provoke a refusal
        return self._submit("debit", reserved_on, amount, wanted, reserved_on)

    def transfer(self, amount: Decimal | int, from_id: str | None = None) -> Answer | None:
        wanted = cents(amount)
        reserved_on = self._reserve(wanted, from_id)
        if reserved_on is None:
            return None
        to_id = self.pool.pick_other(reserved_on)
        if to_id is None:
            self.pool.answered_cents(REJECTED, reserved_on, wanted)
            return None
        return self._submit("transfer", reserved_on, amount, wanted, reserved_on, to_id)

    # --- mechanics -----------------------------------------------------------------------------

    def _reserve(self, wanted: int, wallet_id: str | None) -> str | None:
        """The wallet wanted cents are set aside on, or None."""
        if self.expect_refusals:
            return self.pool.reserve_unchecked_cents(wallet_id or self.pool.pick(), wanted)
        return self.pool.reserve_cents(wanted, wallet_id)

    def _submit(
        self,
        kind: str,
        wallet_id: str,
        amount: Decimal | int,
        wanted: int,
        reserved_on: str | None,
        to_id: str | None = None,
    ) -> Answer:
        """Book the operation as in doubt, send it with a fresh Idempotency-Key, book its answer.
        The amount is in cents (wanted) from here to the pool and the record: one conversion per
        operation, not one per booking."""
        units = int(amount)
        data = operation_body(units, to_id)
        path, name = f"/wallets/{wallet_id}/{kind}", REQUEST_NAMES[kind]
        key = self.next_key()
        record, in_doubt = self.record, self.in_doubt
        record.sent_cents(kind, wallet_id, wanted, to_id)
        if in_doubt is not None:
            body = {"toWalletId": to_id, "amount": units} if to_id else {"amount": units}
            in_doubt[key] = InDoubt(kind, path, name, body, wallet_id, amount, to_id)
        answer = self._post(path, name, data, key, replay=False)
        outcome = answer.outcome
        if self.replay_ratio and outcome != INDETERMINATE and self.rng.random() < self.replay_ratio:
            self._replay(path, name, data, key, kind, amount, to_id, answer)
        if in_doubt is not None and outcome != INDETERMINATE:
            del in_doubt[key]
        # the answer booked in the pool, the history and the record, one call each
        if outcome == OK:
            snapshots = snapshots_of(answer.body)
            self.pool.answered_cents(OK, reserved_on, wanted, None, snapshots)
            if self.history is not None:
                self._remember(kind, wallet_id, wanted, snapshots)
            record.answered_cents(kind, OK, wallet_id, wanted, to_id)
            return answer
        credited = wallet_id if reserved_on is None else to_id
        self.pool.answered_cents(outcome, reserved_on, wanted, credited)
        refused = outcome == REJECTED and refused_for_funds(answer.status, answer.text)
        record.answered_cents(kind, outcome, wallet_id, wanted, to_id, refused)
        return answer

    def _replay(
        self,
        path: str,
        name: str,
        data: bytes,
        key: str,
        kind: str,
        amount: Decimal | int,
        to_id: str | None,
        answer: Answer,
    ) -> None:
        """Send the operation again with its key, and book what the second answer says."""
        wallet_id = path.split("/")[2]
        legs = _replay_legs(kind, wallet_id, amount, to_id)
        self.record.replay_sent(legs)  # cut short by the stop, it stays in doubt
        again = self._post(path, f"{name} (replay)", data, key, replay=True, expected=answer)
        if again.outcome == INDETERMINATE:
            return  # no answer (the service is down): it says nothing about idempotency
        self.record.replay_answered(legs)
        self._book_replay(wallet_id, legs, amount, answer, again)

    def _book_replay(
        self,
        wallet_id: str,
        legs: list[tuple[str, Decimal]],
        amount: Decimal,
        first: Answer,
        again: Answer,
    ) -> None:
        matched = again.status == first.status and again.body == first.body
        if matched:
            self.record.replay(wallet_id, True)
            return
        if not applied_again(first, again):
            legs = []
        refused_again = outcome_of(first.status) == OK and refused_for_funds(
            again.status, again.text
        )
        self.record.replay(wallet_id, False, legs, answer_differences(first, again), refused_again)
        if outcome_of(again.status) == OK:
            snapshots = snapshots_of(again.body)
            for snapshot in snapshots:
                self.pool.observe(snapshot)  # a replay applied twice did change the balance
            if legs and self.history is not None:
                code = KIND_CODES["replay"]
                for snapshot in snapshots:
                    self.history.add(
                        snapshot.get("id"),
                        snapshot.get("version"),
                        snapshot.get("balance"),
                        code,
                        int(amount) * 100,
                    )

    def _post(
        self,
        path: str,
        name: str,
        data: bytes,
        key: str,
        *,
        replay: bool,
        expected: Answer | None = None,
    ) -> Answer:
        with self.client.post(
            path,
            data=data,
            headers={"Idempotency-Key": key, **self.json_headers},
            name=name,
            catch_response=True,
        ) as response:
            status = response.status_code or None
            content = response.content or b""
            try:
                parsed = parse_json(content) if content else None
            except ValueError:
                parsed = None
            outcome = outcome_of(status)
            # decoded only when a message needs it (Locust's .text decodes on every access)
            text = "" if outcome == OK else content.decode("utf-8", "replace")
            answer = Answer(status, text, parsed, outcome)
            if replay:
                if outcome == INDETERMINATE:
                    response.failure(f"replay got no answer ({status or 'none'}): {text[:120]}")
                elif expected is not None and (
                    status != expected.status or parsed != expected.body
                ):
                    # the fields' names, not their values: one error entry per kind of difference
                    response.failure(
                        "replayed Idempotency-Key answered differently:"
                        f" {', '.join(differing_fields(expected, answer))}"
                        f" (first {expected.status}, replay {status})"
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

    def _remember(self, kind: str, wallet_id: str, amount: int, snapshots: list[dict]) -> None:
        """The acknowledged snapshots, for the check's first divergence (a few tens of bytes);
        amount in cents."""
        add = self.history.add
        for snapshot in snapshots:
            snapshot_id = snapshot.get("id")
            if kind != "transfer":
                code = KIND_CODES[kind]
            else:
                code = KIND_CODES["transfer_out" if snapshot_id == wallet_id else "transfer_in"]
            add(snapshot_id, snapshot.get("version"), snapshot.get("balance"), code, amount)


def resolve_in_doubt(
    client: Any,
    in_doubt: dict[str, InDoubt],
    record: RunRecord,
    *,
    tries: int = 3,
    pause: Any = None,
    deadline_s: float = 15.0,
) -> tuple[int, int]:
    """Re-send each in-doubt operation with its own Idempotency-Key, to learn its fate from a
    target that honours keys on every POST (the reference does; the real Wallex does not on
    credit/debit/transfer, where this would apply a credit twice). A 2xx means it applied exactly
    once, a 4xx that it never did; a 409 while the first is still in flight, or no answer, stays
    in doubt. Returns (resolved, still in doubt)."""
    resolved = 0
    deadline = time.monotonic() + deadline_s
    for key, op in list(in_doubt.items()):
        if time.monotonic() > deadline:
            break  # the rest stay in doubt: checked as ranges
        for attempt in range(tries):
            with client.post(
                op.path,
                json=op.body,
                headers={"Idempotency-Key": key},
                name=f"{op.name} (resolve)",
                catch_response=True,
            ) as response:
                status = response.status_code or None
                response.success()
            outcome = outcome_of(status)
            if status == 409 or outcome == INDETERMINATE:
                if pause is not None and attempt + 1 < tries:
                    pause(0.2 * (attempt + 1))
                continue
            record.operation_answered(
                op.kind, outcome, op.wallet_id, op.amount, to_wallet_id=op.to_wallet_id
            )
            del in_doubt[key]
            resolved += 1
            break
    return resolved, len(in_doubt)
