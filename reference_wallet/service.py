"""Process entry points: `serve` runs the HTTP API (and, by default, both projectors) on one
event loop; `project` runs only the projectors, so a test can stop and restart them."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from .commands import CONSUMERS, IdempotencyKeys, WalletCommands
from .faults import Faults
from .http_api import build_app
from .postgres import redact_dsn
from .projectors import build_projectors, listen_for_outbox

log = logging.getLogger("reference_wallet")


@dataclass
class ServeOptions:
    dsn: str
    host: str = "127.0.0.1"
    port: int = 3000
    faults: Faults | None = None
    projectors: list[str] | None = None  # None: both; []: none
    access_log: bool = False
    pool_size: int = 16


async def open_pool(dsn: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min(4, size),
        max_size=size,
        # JIT compilation costs more than these short statements ever gain from it.
        server_settings={"jit": "off", "application_name": "reference_wallet"},
    )


def _stop_on_signals(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)


async def _run_projectors(
    dsn: str, pool: asyncpg.Pool, faults: Faults, names: list[str], stopping: asyncio.Event
) -> list[asyncio.Task]:
    projectors = build_projectors(pool, faults, names)
    tasks = [asyncio.create_task(p.run(stopping), name=p.name) for p in projectors]
    if projectors:
        tasks.append(asyncio.create_task(listen_for_outbox(dsn, projectors, stopping)))
    return tasks


async def serve(options: ServeOptions) -> None:
    faults = options.faults or Faults()
    stopping = asyncio.Event()
    _stop_on_signals(stopping)
    pool = await open_pool(options.dsn, options.pool_size)
    app = build_app(pool, WalletCommands(pool, faults), IdempotencyKeys(pool, faults))
    runner = web.AppRunner(app, access_log=log if options.access_log else None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, backlog=1024)
    await site.start()
    names = list(CONSUMERS) if options.projectors is None else options.projectors
    tasks = await _run_projectors(options.dsn, pool, faults, names, stopping)
    port = runner.addresses[0][1]
    active = ", ".join(f"{k}={v}" for k, v in faults.rates.items() if v) or "none"
    print(
        f"reference_wallet: serving http://{options.host}:{port} on {redact_dsn(options.dsn)};"
        f" projectors: {', '.join(names) or 'none'}; faults: {active}",
        flush=True,
    )
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


async def project(dsn: str, faults: Faults, names: list[str]) -> None:
    stopping = asyncio.Event()
    _stop_on_signals(stopping)
    pool = await open_pool(dsn, 4)
    tasks = await _run_projectors(dsn, pool, faults, names, stopping)
    print(f"reference_wallet: projecting {', '.join(names)} on {redact_dsn(dsn)}", flush=True)
    try:
        await stopping.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
