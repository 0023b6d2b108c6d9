"""Process entry points: `serve` runs the HTTP API (and, by default, both projectors) on one
event loop; `project` runs only the projectors, so a test can stop and restart them. With
`workers` > 1, `run_service` forks extra HTTP-only processes that share the port (SO_REUSEPORT),
since one Python event loop is the first thing to saturate."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace

import asyncpg
from aiohttp import web

from .commands import CONSUMERS, IdempotencyKeys, SlowCommits, WalletCommands
from .faults import Faults
from .http_api import build_app
from .outage import OUTAGE_ERRORS, quiet_pool_outages
from .postgres import redact_dsn
from .projectors import build_projectors, listen_for_outbox

log = logging.getLogger("reference_wallet")

WORKER_STOP_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


@dataclass
class ServeOptions:
    dsn: str
    host: str = "127.0.0.1"
    port: int = 3000
    faults: Faults | None = None
    projectors: list[str] | None = None  # None: both; []: none
    access_log: bool = False
    pool_size: int = 16  # per process
    workers: int = 1  # HTTP processes sharing the port; the projectors run in the first only
    slow_commits: SlowCommits | None = None  # None: every command commits at once
    parent_pid: int | None = None  # stop when this process is no longer the parent


async def open_pool(dsn: str, size: int) -> asyncpg.Pool:
    """A pool that outlives the database restarting: asyncpg replaces a connection the server
    closed when it is next acquired, so requests fail (503) only while the server is away."""
    quiet_pool_outages()
    return await asyncpg.create_pool(
        dsn,
        min_size=min(4, size),
        max_size=size,
        # JIT compilation costs more than these short statements ever gain from it. A backend
        # checks each second that its client is still there, so that the statements of a
        # killed service end (and free their locks) then, not when they next answer.
        server_settings={
            "jit": "off",
            "application_name": "reference_wallet",
            "client_connection_check_interval": "1000",
        },
        reset=_keep_session,
    )


async def close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    """Close gracefully, or drop the connections if the server does not answer (it may be frozen
    or gone): a stop must not hang on the database."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, *OUTAGE_ERRORS):
        pool.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's default reset query (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL): one round trip saved per request. Safe because nothing here
    leaves session state behind: locks are transaction-scoped, settings are given at connect
    time, LISTEN has its own connection; asyncpg still rolls back an open transaction."""


def _stop_on_signals(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)


async def _run_projectors(
    dsn: str, pool: asyncpg.Pool, faults: Faults, names: list[str], stopping: asyncio.Event
) -> tuple[list[str], list[asyncio.Task]]:
    """Start the named projectors and their listener: the consumers running, and the tasks."""
    projectors = build_projectors(pool, faults, names)
    tasks = [asyncio.create_task(p.run(stopping), name=p.name) for p in projectors]
    if projectors:
        tasks.append(asyncio.create_task(listen_for_outbox(dsn, projectors, stopping)))
    return [p.name for p in projectors], tasks


async def serve(
    options: ServeOptions,
    *,
    listener: socket.socket | None = None,
    workers: list[int] | None = None,
    worker_index: int = 0,
) -> int:
    """Serve until SIGINT/SIGTERM; the exit code. `listener`: a bound socket to serve on instead
    of binding host:port; `workers`: pids of forked HTTP workers this process stops with itself."""
    faults = options.faults or Faults()
    stopping = asyncio.Event()
    _stop_on_signals(stopping)
    parent_watch = _watch_parent(options.parent_pid, stopping)
    pool = await open_pool(options.dsn, options.pool_size)
    commands = WalletCommands(pool, faults, options.slow_commits)
    app = build_app(pool, commands, IdempotencyKeys(pool, faults), faults)
    runner = web.AppRunner(app, access_log=log if options.access_log else None)
    await runner.setup()
    if listener is None:
        site = web.TCPSite(runner, options.host, options.port, backlog=1024)
    else:
        site = web.SockSite(runner, listener, backlog=1024)
    await site.start()
    names = list(CONSUMERS) if options.projectors is None else options.projectors
    running, tasks = await _run_projectors(options.dsn, pool, faults, names, stopping)
    tasks.append(parent_watch)
    lost_worker: list[str] = []
    if workers:
        tasks.append(asyncio.create_task(_watch_workers(workers, stopping, lost_worker)))
    if worker_index == 0:
        port = runner.addresses[0][1]
        active = ", ".join(f"{k}={v}" for k, v in faults.rates.items() if v) or "none"
        processes = f"; workers: {options.workers}" if options.workers > 1 else ""
        slow = options.slow_commits
        if slow and slow.ms > 0:
            processes += f"; slow commits: {slow.ms:g} ms for {slow.share:g} of commands"
        print(
            f"reference_wallet: serving http://{options.host}:{port} on {redact_dsn(options.dsn)};"
            f" projectors: {', '.join(running) or 'none'};"
            f" faults: {active}{processes}",
            flush=True,
        )
    try:
        await stopping.wait()
    finally:
        _signal_workers(workers or [], signal.SIGTERM)  # they drain while this one does
        await runner.cleanup()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_pool(pool)
        if workers:
            await _reap_workers(workers)
    if lost_worker:
        print(f"reference_wallet: {lost_worker[0]}; stopped", file=sys.stderr, flush=True)
        return 1
    return 0


def run_service(options: ServeOptions) -> int:
    """Run the service in the foreground until SIGINT/SIGTERM; the exit code.

    With workers > 1 this process binds the port with SO_REUSEPORT, forks workers - 1 HTTP-only
    processes that bind it too (the kernel spreads connections over them), serves as well and
    runs the projectors. It stops its workers when it stops, fails as a whole when one dies, and
    its workers follow it if it is killed outright.
    """
    import uvloop

    if options.workers <= 1:
        return uvloop.run(serve(options))
    listener = _reuse_port_socket(options.host, options.port)
    options = replace(options, port=listener.getsockname()[1])
    parent = os.getpid()
    workers: list[int] = []
    try:
        for index in range(1, options.workers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns from here
                code = 1
                try:
                    listener.close()
                    code = _run_worker(options, index, parent)
                finally:
                    os._exit(code)
            workers.append(pid)
        return uvloop.run(serve(options, listener=listener, workers=workers))
    except BaseException:
        _signal_workers(workers, signal.SIGTERM)  # those not reaped yet: serve failed to start
        raise


def _run_worker(options: ServeOptions, index: int, parent: int) -> int:
    """A forked HTTP worker: no projectors, its own pool and fault draws; exits with its parent."""
    import uvloop

    code = 1
    try:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            return 0
        faults = options.faults or Faults()
        seed = None if faults.seed is None else faults.seed + index
        worker = replace(
            options, projectors=[], faults=Faults(dict(faults.rates), seed), parent_pid=None
        )
        listener = _reuse_port_socket(options.host, options.port)
        code = uvloop.run(serve(worker, listener=listener, worker_index=index))
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, not yet listening. The port is first bound
    without SO_REUSEPORT, so that a port already in use is an error, not a shared port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        address = probe.getsockname()
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _watch_workers(workers: list[int], stopping: asyncio.Event, lost: list[str]) -> None:
    """Stop the whole service if a worker exits on its own: half a service would skew a run."""
    while not stopping.is_set():
        for pid in workers:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    workers.remove(pid)
                    lost.append(
                        f"worker {pid} exited with status {os.waitstatus_to_exitcode(status)}"
                    )
                    stopping.set()
                    return
        await asyncio.sleep(0.5)


def _signal_workers(workers: list[int], sig: signal.Signals) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def _reap_workers(workers: list[int]) -> None:
    """Wait for the workers to exit after SIGTERM, SIGKILL those still there after a while; each
    is removed from `workers` once reaped, so that its pid is never signalled again."""
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    while workers:
        for pid in list(workers):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                workers.remove(pid)
        if workers and time.monotonic() > deadline:
            _signal_workers(workers, signal.SIGKILL)
            for pid in list(workers):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                workers.remove(pid)
        if workers:
            await asyncio.sleep(0.05)


async def project(
    dsn: str, faults: Faults, names: list[str], parent_pid: int | None = None
) -> None:
    stopping = asyncio.Event()
    _stop_on_signals(stopping)
    parent_watch = _watch_parent(parent_pid, stopping)
    pool = await open_pool(dsn, 4)
    running, tasks = await _run_projectors(dsn, pool, faults, names, stopping)
    tasks.append(parent_watch)
    print(f"reference_wallet: projecting {', '.join(running)} on {redact_dsn(dsn)}", flush=True)
    try:
        await stopping.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_pool(pool)


PARENT_CHECK_SECONDS = 1.0


def _watch_parent(parent_pid: int | None, stopping: asyncio.Event) -> asyncio.Task:
    """A task that stops this process once parent_pid is no longer its parent: a load generator
    killed outright leaves no service behind. (Not PR_SET_PDEATHSIG, which fires when the
    parent's starting thread ends, and a caller may start the service from a passing thread.)"""

    async def watch() -> None:
        if parent_pid is None:
            return
        while not stopping.is_set():
            if os.getppid() != parent_pid:
                print(f"reference_wallet: parent {parent_pid} is gone; stopping", flush=True)
                stopping.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), PARENT_CHECK_SECONDS)

    return asyncio.create_task(watch(), name="parent-watch")
