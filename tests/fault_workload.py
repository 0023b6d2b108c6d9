"""A workload that keeps going through faults: concurrent clients send credits, debits and
transfers, each with its own Idempotency-Key, re-sent until it gets a definite answer (201, or a
refusal for funds), so that the client knows exactly which operations took effect; in a thread
of its own while the test injects and heals a fault."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
from wallet_http import WalletHttp

INITIAL = Decimal(1000)
RETRY_SECONDS = 0.05
RESOLVE_SECONDS = 30.0  # how long one operation may stay without a definite answer


@dataclass
class FaultLoadRecord:
    """Per wallet: the balance and the number of events it must have if every acknowledged
    operation took effect exactly once; the answers seen, and what should not have happened."""

    balances: dict[str, Decimal]
    events: dict[str, int]
    acknowledged: int = 0
    indefinite: Counter = field(default_factory=Counter)  # answers that needed a re-send
    problems: list[str] = field(default_factory=list)


class FaultLoad:
    """Start with start(), stop with stop() (which waits for every operation to be resolved)."""

    def __init__(self, url: str, prefix: str, wallets: int = 6, clients: int = 4) -> None:
        self.url = url
        self.wallets = [f"{prefix}-{n}" for n in range(wallets)]
        self.clients = clients
        self.prefix = prefix
        api = WalletHttp(url)
        for wallet_id in self.wallets:
            reply = api.create_wallet(wallet_id, "owner-f", INITIAL)
            assert reply.status == 201, reply.text
        self.record = FaultLoadRecord(
            {w: INITIAL for w in self.wallets}, {w: 2 for w in self.wallets}
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> FaultLoad:
        self._thread.start()
        return self

    def stop(self, timeout: float = RESOLVE_SECONDS + 10) -> FaultLoadRecord:
        self._stopping.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the workload did not finish its operations"
        return self.record

    @property
    def acknowledged(self) -> int:
        return self.record.acknowledged

    @property
    def indefinite(self) -> int:
        return sum(self.record.indefinite.values())

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._client(n, session) for n in range(self.clients)))

    async def _client(self, number: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(f"{self.prefix}-{number}")
        sequence = 0
        while not self._stopping.is_set():
            sequence += 1
            kind = rng.choice(("credit", "debit", "transfer", "transfer"))
            source, target = rng.sample(self.wallets, 2)
            amount = Decimal(rng.randint(1, 30_000)) / 100
            body: dict = {"amount": float(amount)}
            if kind == "transfer":
                path = f"/wallets/{source}/transfer"
                body["toWalletId"] = target
                deltas = {source: -amount, target: amount}
            else:
                path = f"/wallets/{source}/{kind}"
                deltas = {source: amount if kind == "credit" else -amount}
            key = f"{self.prefix}-{number}-{sequence}"
            outcome = await self._resolve(session, path, body, key)
            if outcome == "applied":
                self.record.acknowledged += 1
                for wallet_id, delta in deltas.items():
                    self.record.balances[wallet_id] += delta
                    self.record.events[wallet_id] += 1
            elif outcome != "refused":
                self.record.problems.append(f"{kind} {key}: {outcome}")

    async def _resolve(
        self, session: aiohttp.ClientSession, path: str, body: dict, key: str
    ) -> str:
        """Send until the answer is definite: 'applied', 'refused', or what went wrong."""
        deadline = time.monotonic() + RESOLVE_SECONDS
        last = "never answered"
        while time.monotonic() < deadline:
            try:
                async with session.post(
                    self.url + path, json=body, headers={"Idempotency-Key": key}
                ) as response:
                    status, answer = response.status, await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                status, answer = 0, {"message": type(error).__name__}
            message = str((answer or {}).get("message", ""))
            if status == 201:
                return "applied"
            if status == 400 and "insufficient funds" in message:
                return "refused"
            # no answer, the database unavailable, or the key still held by a request that may
            # be alive: none says whether it took effect, so ask again (a 500 is a bug: unexpected)
            if status in (0, 503) or (status == 409 and "in flight" in message):
                self.record.indefinite[f"{status} {message[:40]}"] += 1
                last = f"{status} {message}"
                await asyncio.sleep(RETRY_SECONDS)
                continue
            return f"unexpected answer {status} {answer}"
        return f"no definite answer within {RESOLVE_SECONDS:g}s (last: {last})"
