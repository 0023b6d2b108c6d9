"""Seeding at the service's speed (issue 11, item 1): how many wallets per second the suite's
seed() creates from one gevent process, beside how many the reference service itself creates for
a minimal closed-loop client at the same concurrency, in the same run; and what planning a
million wallets costs.

    .venv/bin/python bench/seeding_speed.py                  # about 2 minutes
    .venv/bin/python bench/seeding_speed.py --wallets 2000 --repeats 5 --json

One run starts reference_wallet on a throw-away embedded PostgreSQL (locust_throughput's
reference_service), then, --repeats times, alternately:

- **service**: `closed_loop_client.py --creates N --clients 50`: POST /wallets with an
  Idempotency-Key over 50 keep-alive connections, a minimal HTTP/1.1 client on uvloop (about a
  tenth of the CPU per request of Locust's client): what the service sustains;
- **seed()**: a subprocess that does what a Locust process of the suite does at test start:
  gevent monkey-patching, a FastHttpSession with concurrency 50, plan_wallets, then
  wallet_users.load.seeding.seed() into a WalletPool and a RunRecord; seed()'s own time.

Each over --wallets fresh wallets (default 5000). The ratio seed()/service is taken within a
repeat. Then plan_wallets(--plan-wallets, default 1,000,000) is timed once in a subprocess.

A printed figure, not a pass/fail test: the target is shown beside it. The exit code is
non-zero only when something broke (the service did not start, a creation failed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from locust_throughput import PROJECT_ROOT, reference_service

sys.path.insert(0, str(PROJECT_ROOT))

from reference_wallet.cli import OneLineArgumentParser

CLIENT_SCRIPT = Path(__file__).with_name("closed_loop_client.py")
TARGET_RATIO = 0.8
CONCURRENCY = 50  # what LoadGenerator._seed gives seed()


def seed_child(url: str, wallets: int, concurrency: int) -> dict[str, Any]:
    """seed() as a Locust process runs it: gevent-patched, over a FastHttpSession."""
    from gevent import monkey

    monkey.patch_all()
    from locust.contrib.fasthttp import FastHttpSession
    from locust.event import Events

    from wallet_users.load.pool import WalletPool
    from wallet_users.load.seeding import plan_wallets, seed
    from wallet_users.record import RunRecord
    from wallet_users.record.ids import generate_run_id
    from wallet_users.wiring.options import AmountRange

    run_id = generate_run_id()
    failures: list[str] = []

    def on_request(exception=None, **_: Any) -> None:
        if exception is not None and len(failures) < 3:
            failures.append(str(exception)[:300])

    events = Events()
    events.request.add_listener(on_request)
    client = FastHttpSession(
        url,
        events.request,
        user=None,
        network_timeout=10.0,
        connection_timeout=10.0,
        concurrency=concurrency,
    )
    plans = plan_wallets(run_id, wallets, AmountRange(100, 5000), 1)
    pool, record = WalletPool(), RunRecord(run_id)
    cpu_before = time.process_time()
    result = seed(client, plans, pool, record, run_id=run_id, concurrency=concurrency)
    return {
        "created": result.created,
        "planned": result.planned,
        "seconds": result.seconds,
        "wallets_per_s": result.created / result.seconds if result.seconds else 0.0,
        "client_cpu_s": time.process_time() - cpu_before,
        "first_errors": failures,
    }


def plan_child(count: int) -> dict[str, Any]:
    from wallet_users.load.seeding import plan_wallets
    from wallet_users.wiring.options import AmountRange

    started = time.perf_counter()
    plans = plan_wallets("20261124004750-0f5515", count, AmountRange(100, 5000), 1)
    seconds = time.perf_counter() - started
    return {"wallets": len(plans), "seconds": seconds, "us_per_wallet": seconds / count * 1e6}


def _run_json(command: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"exit code {done.returncode}: {tail}")
    return json.loads(lines[-1])


def measure_service(url: str, wallets: int, concurrency: int, index: int) -> dict[str, Any]:
    command = [
        sys.executable,
        str(CLIENT_SCRIPT),
        "--url",
        url,
        "--clients",
        str(concurrency),
        "--creates",
        str(wallets),
        "--prefix",
        f"bench-create-{os.getpid()}-{index}-",
    ]
    result = _run_json(command, timeout=600)
    result.pop("event", None)
    return result


def measure_seed(url: str, wallets: int, concurrency: int) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "seed-child",
        "--url",
        url,
        "--wallets",
        str(wallets),
        "--concurrency",
        str(concurrency),
    ]
    return _run_json(command, timeout=600)


def _spread(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (0.0, 0.0, 0.0)


def _trio(values: tuple[float, float, float], fmt: str = "{:,.0f}") -> str:
    median, low, high = values
    return f"{fmt.format(median)} (min {fmt.format(low)}, max {fmt.format(high)})"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"runs": [], "problems": [], "load_average": []}
    workdir = Path(tempfile.mkdtemp(prefix="seeding-speed-"))
    try:
        with reference_service(workdir) as url:
            for index in range(args.repeats):
                run: dict[str, Any] = {}
                for name in ("service", "seed") if index % 2 == 0 else ("seed", "service"):
                    report["load_average"].append(os.getloadavg()[0])
                    try:
                        if name == "service":
                            result = measure_service(url, args.wallets, args.concurrency, index)
                        else:
                            result = measure_seed(url, args.wallets, args.concurrency)
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
                        report["problems"].append(f"{name}, repeat {index + 1}: {error}")
                        continue
                    if result["created"] != result["planned"]:
                        report["problems"].append(
                            f"{name}, repeat {index + 1}: {result['created']} of"
                            f" {result['planned']} created: {result}"
                        )
                    run[name] = result
                report["runs"].append(run)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.plan_wallets:
        report["load_average"].append(os.getloadavg()[0])
        try:
            report["plan"] = _run_json(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "plan-child",
                    "--wallets",
                    str(args.plan_wallets),
                ],
                timeout=900,
            )
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            report["problems"].append(f"plan_wallets: {error}")
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    runs = [r for r in report["runs"] if "service" in r and "seed" in r]
    summary: dict[str, Any] = {}
    for name in ("service", "seed"):
        per_s = [r[name]["wallets_per_s"] for r in runs]
        cpu_ms = [1000 * r[name]["client_cpu_s"] / r[name]["created"] for r in runs]
        summary[name] = {
            "wallets_per_s": _spread(per_s),
            "client_cpu_ms_per_wallet": _spread(cpu_ms),
        }
    ratios = [r["seed"]["wallets_per_s"] / r["service"]["wallets_per_s"] for r in runs]
    summary["ratio"] = _spread(ratios)
    summary["met"] = bool(ratios) and summary["ratio"][0] >= TARGET_RATIO
    return summary


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    verdict = "BROKEN" if report["problems"] else "done"
    print(
        f"seeding speed: {verdict}  ({args.wallets:,} wallets per measurement, concurrency"
        f" {args.concurrency}, {args.repeats} repeats, reference service on embedded PostgreSQL,"
        f" {os.cpu_count()} cores)"
    )
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    summary = report["summary"]
    if report["runs"]:
        for name, label in (
            ("service", "service, minimal client"),
            ("seed", "suite seed(), gevent"),
        ):
            s = summary[name]
            print(
                f"  {label:<24} {_trio(s['wallets_per_s'])} wallets/s;  client CPU"
                f" {_trio(s['client_cpu_ms_per_wallet'], '{:.2f}')} ms per wallet"
            )
        mark = "met" if summary["met"] else "MISSED"
        print(
            f"  seed()/service            {_trio(summary['ratio'], '{:.2f}')}"
            f"   target >= {TARGET_RATIO}   {mark}"
        )
    plan = report.get("plan")
    if plan:
        print(
            f"  plan_wallets({plan['wallets']:,})    {plan['seconds']:.1f} s,"
            f" {plan['us_per_wallet']:.1f} µs per wallet"
        )
    loads = report["load_average"]
    if loads:
        print(
            f"  machine load average (1 min) at the runs' starts: {min(loads):.1f} to {max(loads):.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    seed_parser = sub.add_parser("seed-child", help="seed() in a gevent process (internal)")
    seed_parser.add_argument("--url", required=True)
    plan_parser = sub.add_parser("plan-child", help="time plan_wallets (internal)")
    for p in (parser, seed_parser, plan_parser):
        p.add_argument("--wallets", type=int, default=5000, help="per measurement (default 5000)")
    for p in (parser, seed_parser):
        p.add_argument(
            "--concurrency", type=int, default=CONCURRENCY, help=f"default {CONCURRENCY}"
        )
    parser.add_argument("--repeats", type=int, default=3, help="default 3")
    parser.add_argument(
        "--plan-wallets",
        type=int,
        default=1_000_000,
        help="wallets planned in the plan_wallets timing (default 1,000,000; 0 skips it)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.command == "seed-child":
        print(json.dumps(seed_child(args.url, args.wallets, args.concurrency)))
        return 0
    if args.command == "plan-child":
        print(json.dumps(plan_child(args.wallets)))
        return 0
    if args.wallets < 1 or args.repeats < 1 or args.concurrency < 1 or args.plan_wallets < 0:
        parser.error("--wallets, --repeats and --concurrency must be at least 1")
    report = measure(args)
    report["summary"] = summarise(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
