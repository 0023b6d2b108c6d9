"""The load side of bench/reference_throughput.py: closed-loop clients driving the wallet service's
credit/debit/transfer mix over keep-alive HTTP/1.1, run in a process of their own.

A closed-loop client sends its next request only when the previous one has been answered, so the
throughput measured is what the service sustains at that concurrency. The default transport is a
minimal HTTP/1.1 protocol on uvloop (a few microseconds of CPU per request), so that on a small
machine the client takes as little CPU from the service as possible; `--transport aiohttp` uses
aiohttp's client instead, for comparison.

Output: JSON lines on stdout. `{"event": "window-start"}` and `{"event": "window-end"}` mark the
measured window as it happens (the caller samples CPU times then); the last line is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# The 50/30/20 credit/debit/transfer mix and its amount ranges (integers, as the contract advises).
MIX = (("credit", 50, (10, 500)), ("debit", 30, (10, 200)), ("transfer", 20, (10, 300)))
REQUEST_TIMEOUT = 10.0
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that carries one request at a time. Only what aiohttp's
    server sends is understood: a status line, headers, and a Content-Length body."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end])
        match = _CONTENT_LENGTH.search(head)
        length = int(match.group(1)) if match else 0
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RawTransport:
    """Each caller owns one connection (`slot`), reopened after an error."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self._host_header = f"Host: {parts.netloc}\r\n".encode()
        self._connections: dict[int, HttpConnection] = {}

    async def post(
        self, slot: int, path: str, body: dict[str, Any], headers: bytes = b""
    ) -> tuple[int, bytes]:
        """headers: extra header lines, each ending in CRLF."""
        connection = self._connections.get(slot)
        if connection is None or connection.closed:
            loop = asyncio.get_running_loop()
            _, connection = await loop.create_connection(HttpConnection, self.host, self.port)
            self._connections[slot] = connection
        payload = json.dumps(body, separators=(",", ":")).encode()
        raw = (
            b"POST " + path.encode() + b" HTTP/1.1\r\n" + self._host_header + headers
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )  # fmt: skip
        try:
            return await asyncio.wait_for(connection.request(raw), REQUEST_TIMEOUT)
        except BaseException:
            connection.close()  # its state is unknown: never reuse it
            self._connections.pop(slot, None)
            raise

    async def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


class AiohttpTransport:
    def __init__(self, url: str, clients: int) -> None:
        import aiohttp

        self._url = url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=clients),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        )

    async def post(
        self, slot: int, path: str, body: dict[str, Any], headers: bytes = b""
    ) -> tuple[int, bytes]:
        extra = dict(line.split(": ", 1) for line in headers.decode().split("\r\n") if ": " in line)
        async with self._session.post(self._url + path, json=body, headers=extra) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        await self._session.close()


@dataclass
class LoadRecord:
    """What the clients saw inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)  # "201", "400", "timeout", ...
    by_operation: Counter = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)

    def add(self, operation: str, outcome: str, seconds: float, detail: bytes | str) -> None:
        self.latencies.append(seconds)
        self.statuses[outcome] += 1
        self.by_operation[operation] += 1
        if not outcome.startswith("2") and outcome not in self.first_error:
            text = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
            self.first_error[outcome] = text[:300]


def next_operation(rng: random.Random, wallets: list[str]) -> tuple[str, str, dict[str, Any]]:
    """One draw from the mix: (operation, path, body)."""
    operation, _, (low, high) = rng.choices(MIX, weights=[m[1] for m in MIX])[0]
    amount = rng.randint(low, high)
    if operation == "transfer":
        source, target = rng.sample(wallets, 2)
        return operation, f"/wallets/{source}/transfer", {"toWalletId": target, "amount": amount}
    return operation, f"/wallets/{rng.choice(wallets)}/{operation}", {"amount": amount}


async def seed(transport, wallets: list[str], balance: int, concurrency: int) -> None:
    queue = list(wallets)

    async def creator(slot: int) -> None:
        while queue:
            wallet_id = queue.pop()
            body = {
                "walletId": wallet_id,
                "ownerId": f"owner-{wallet_id}",
                "initialBalance": balance,
            }
            status, text = await transport.post(slot, "/wallets", body)
            if status != 201:
                raise RuntimeError(f"creating {wallet_id}: HTTP {status} {text[:200]!r}")

    await asyncio.gather(*(creator(slot) for slot in range(concurrency)))


async def create_wallets(transport, prefix: str, count: int, concurrency: int) -> dict[str, Any]:
    """The --creates mode: POST /wallets `count` times, each with its own Idempotency-Key, from
    `concurrency` closed-loop clients; how fast the service creates wallets."""
    queue = list(range(count - 1, -1, -1))
    statuses: Counter = Counter()
    first_error: dict[str, str] = {}

    async def creator(slot: int) -> None:
        while queue:
            n = queue.pop()
            wallet_id = f"{prefix}{n:06d}"
            body = {"walletId": wallet_id, "ownerId": f"owner-{n}", "initialBalance": 1000}
            key = b"Idempotency-Key: " + wallet_id.encode() + b"-key\r\n"
            try:
                status, text = await transport.post(slot, "/wallets", body, key)
                outcome = str(status)
            except TimeoutError:
                outcome, text = "timeout", b"no answer within the request timeout"
            except OSError as error:
                outcome, text = "connection-error", repr(error).encode()
            statuses[outcome] += 1
            if outcome != "201" and outcome not in first_error:
                first_error[outcome] = text[:300].decode(errors="replace")

    cpu_before, started = time.process_time(), time.monotonic()
    await asyncio.gather(*(creator(slot) for slot in range(concurrency)))
    seconds = time.monotonic() - started
    return {
        "created": statuses["201"],
        "planned": count,
        "seconds": seconds,
        "wallets_per_s": statuses["201"] / seconds if seconds else 0.0,
        "client_cpu_s": time.process_time() - cpu_before,
        "statuses": dict(statuses),
        "first_error": first_error,
    }


async def drive(
    transport, wallets: list[str], clients: int, warmup: float, seconds: float, seed_value: int
) -> tuple[LoadRecord, float, float]:
    record = LoadRecord()
    now = time.monotonic()
    window_start, window_end = now + warmup, now + warmup + seconds
    last_completion = window_start

    async def client(slot: int) -> None:
        nonlocal last_completion
        rng = random.Random(seed_value * 1000 + slot)
        while True:
            started = time.monotonic()
            if started >= window_end:
                return
            operation, path, body = next_operation(rng, wallets)
            try:
                status, detail = await transport.post(slot, path, body)
                outcome = str(status)
            except TimeoutError:
                outcome, detail = "timeout", "no answer within the request timeout"
            except OSError as error:
                outcome, detail = "connection-error", repr(error)
                await asyncio.sleep(0.05)  # do not spin on a refused connection
            finished = time.monotonic()
            if started >= window_start:
                record.add(operation, outcome, finished - started, detail)
                last_completion = max(last_completion, finished)

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        emit({"event": "window-start", "wall": time.time()})

    marker = asyncio.create_task(mark_window())
    await asyncio.gather(*(client(slot) for slot in range(clients)))
    await marker
    emit({"event": "window-end", "wall": time.time()})
    return record, window_start, last_completion


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summarise(record: LoadRecord, duration: float) -> dict[str, Any]:
    latencies = sorted(record.latencies)
    ok = sum(n for status, n in record.statuses.items() if status.startswith("2"))
    return {
        "requests": len(latencies),
        "ok": ok,
        "duration_s": duration,
        "ops_per_s": len(latencies) / duration if duration else 0.0,
        "ok_per_s": ok / duration if duration else 0.0,
        "latency_ms": {
            name: (value * 1000 if value is not None else None)
            for name, value in (
                ("p50", percentile(latencies, 0.50)),
                ("p95", percentile(latencies, 0.95)),
                ("p99", percentile(latencies, 0.99)),
                ("max", latencies[-1] if latencies else None),
            )
        },
        "statuses": dict(record.statuses),
        "operations": dict(record.by_operation),
        "first_error": record.first_error,
    }


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    transport = (
        RawTransport(args.url)
        if args.transport == "raw"
        else AiohttpTransport(args.url, args.clients)
    )
    wallets = [f"{args.prefix}{n:04d}" for n in range(args.wallets)]
    if args.creates:
        try:
            return await create_wallets(transport, args.prefix, args.creates, args.clients)
        finally:
            await transport.close()
    try:
        await seed(transport, wallets, args.initial_balance, min(args.clients, 10))
        emit({"event": "seeded", "wallets": len(wallets)})
        cpu_before = time.process_time()
        record, started, finished = await drive(
            transport, wallets, args.clients, args.warmup, args.seconds, args.seed
        )
        summary = summarise(record, finished - started)
        summary["client_cpu_s"] = time.process_time() - cpu_before
        return summary
    finally:
        await transport.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--wallets", type=int, default=100)
    parser.add_argument("--initial-balance", type=int, default=5000)
    parser.add_argument("--prefix", default="bench-")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--transport", choices=("raw", "aiohttp"), default="raw")
    parser.add_argument(
        "--creates",
        type=int,
        default=0,
        help="only create this many wallets (POST /wallets with Idempotency-Key) from --clients"
        " clients and print how fast; no seeding, no mix",
    )
    args = parser.parse_args()

    import uvloop

    result = uvloop.run(run(args))
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
