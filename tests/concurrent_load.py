"""Concurrent HTTP clients for the reference service: credits, debits and transfers in a weighted
mix among a few wallets for a bounded time, keeping a record of what was acknowledged, so that the
database can be checked against it afterwards."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
from wallet_http import WalletHttp

INITIAL = Decimal(1000)


@dataclass
class LoadRecord:
    """Acknowledged effects per wallet, answers by kind, and whatever should not have happened."""

    balances: dict[str, Decimal]
    answers: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def settle(self, what: str, status: int, body: dict, deltas: dict[str, Decimal]) -> None:
        if status == 201:
            self.answers[f"{what} ok"] += 1
            for wallet_id, delta in deltas.items():
                self.balances[wallet_id] += delta
        elif status == 400 and "insufficient funds" in body.get("message", ""):
            self.answers[f"{what} refused"] += 1
        else:
            self.problems.append(f"{what}: {status} {body}")


async def run_clients(
    base_url: str, wallets: list[str], seconds: float, clients: int, *, mix: dict[str, int]
) -> LoadRecord:
    record = LoadRecord({wallet_id: INITIAL for wallet_id in wallets})
    deadline = time.monotonic() + seconds
    kinds, weights = list(mix), list(mix.values())

    async def client(number: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(number)
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            kind = rng.choices(kinds, weights)[0]
            source, target = rng.sample(wallets, 2)
            amount = Decimal(rng.randint(1, 20_000)) / 100
            key = f"load-{number}-{sequence}" if rng.random() < 0.2 else None
            if kind == "transfer":
                path, body = f"/wallets/{source}/transfer", {"toWalletId": target}
                deltas = {source: -amount, target: amount}
            else:
                path, body = f"/wallets/{source}/{kind}", {}
                deltas = {source: amount if kind == "credit" else -amount}
            body["amount"] = float(amount)
            headers = {"Idempotency-Key": key} if key else {}
            try:
                status, answer, _ = await post(session, base_url + path, body, headers)
                record.settle(kind, status, answer, deltas)
                if key:
                    replay = await post(session, base_url + path, body, headers)
                    if replay != (status, answer, "true"):
                        record.problems.append(f"replay of {key}: {replay} after {answer}")
            except (aiohttp.ClientError, TimeoutError) as error:
                record.problems.append(f"{kind} {path}: no answer ({error!r})")

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    return record


async def post(
    session: aiohttp.ClientSession, url: str, body: dict, headers: dict[str, str]
) -> tuple[int, dict, str | None]:
    async with session.post(url, json=body, headers=headers) as response:
        answer = await response.json()
        return response.status, answer, response.headers.get("Idempotent-Replayed")


def create_wallets(url: str, count: int) -> list[str]:
    api = WalletHttp(url)
    wallets = [f"hot-{n}" for n in range(count)]
    for wallet_id in wallets:
        assert api.create_wallet(wallet_id, "owner-c", INITIAL).status == 201
    return wallets
