"""A short, deterministic, serial workload over every mutating call of the contract, keeping the
client's own record of what was acknowledged: the baseline the fault and restart tests run."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

from wallet_http import Reply, WalletHttp


@dataclass
class ClientRecord:
    """What the client was told: the balance each wallet must have if every acknowledged
    operation took effect exactly once, and every (first answer, replayed answer) pair."""

    balances: dict[str, Decimal] = field(default_factory=dict)
    replays: list[tuple[Reply, Reply]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    acknowledged: int = 0
    refused: int = 0

    def settle(self, what: str, reply: Reply, deltas: dict[str, Decimal]) -> None:
        if reply.status == 201:
            self.acknowledged += 1
            for wallet_id, delta in deltas.items():
                self.balances[wallet_id] += delta
        elif reply.status == 400 and "insufficient funds" in str(reply.body):
            self.refused += 1
        else:
            self.unexpected.append(f"{what}: {reply.status} {reply.text}")


def run_scripted_workload(api: WalletHttp, prefix: str, operations: int = 40) -> ClientRecord:
    """Create four wallets, then run credits, debits and transfers among them (every third one
    with an Idempotency-Key, replayed at once), then try to overdraw one wallet."""
    record = ClientRecord()
    rng = random.Random(prefix)
    wallets = [f"{prefix}-{n}" for n in range(4)]
    initial_balances = [Decimal(1000), Decimal("250.50"), None, Decimal(0)]
    for n, (wallet_id, initial) in enumerate(zip(wallets, initial_balances, strict=True)):
        key = f"{prefix}-create-{n}" if n % 2 == 0 else None
        reply = api.create_wallet(wallet_id, f"owner-{n % 2}", initial, key=key)
        if reply.status != 201:
            record.unexpected.append(f"create {wallet_id}: {reply.status} {reply.text}")
        record.balances[wallet_id] = initial or Decimal(0)
        if key:
            replay = api.create_wallet(wallet_id, f"owner-{n % 2}", initial, key=key)
            record.replays.append((reply, replay))

    for n in range(operations):
        kind = rng.choice(("credit", "credit", "debit", "transfer", "transfer"))
        source = rng.choice(wallets)
        target = rng.choice([w for w in wallets if w != source])
        amount = Decimal(rng.randint(1, 15_000)) / 100
        key = f"{prefix}-op-{n}" if n % 3 == 0 else None

        def send(kind=kind, source=source, target=target, amount=amount, key=key, n=n) -> Reply:
            if kind == "credit":
                return api.credit(source, amount, key=key)
            if kind == "debit":
                return api.debit(source, amount, f"debit {n}", key=key)
            return api.transfer(source, target, amount, key=key)

        deltas = {
            "credit": {source: amount},
            "debit": {source: -amount},
            "transfer": {source: -amount, target: amount},
        }[kind]
        reply = send()
        record.settle(f"{kind} {amount} {source}->{target}", reply, deltas)
        if key:
            record.replays.append((reply, send()))

    poor = wallets[3]
    overdraw = record.balances[poor] + 500
    record.settle(f"debit {overdraw} {poor}", api.debit(poor, overdraw), {poor: -overdraw})
    return record
