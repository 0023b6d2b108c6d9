"""The consistency check's outbox and lag work read two ways on a database check_scale.py
generated (read only: nothing is written): the SQL pass (`reading._outbox_counted`: an aggregate
of the outbox, then the events joined to their processing rows and grouped) against the columnar
one (`outbox_columns.outbox_counted`: two scans sent as binary columns, the rest in numpy),
alternated, each in its own REPEATABLE READ READ ONLY transaction, parallel query off; then the
transfers' legs pass, which runs after them on the same connection. Prints wall seconds, the
backend's CPU seconds and this process's, and whether both read the same facts.

    .venv/bin/python bench/outbox_columns_speed.py --dsn "$(cat /tmp/exp/dsn)" [--wallets 100000]

A printed figure, not a pass/fail test; the exit code is 1 only when the two passes disagree or
the columnar one did not run (fell back to SQL).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from wallet_users.consistency import outbox_columns, reading  # noqa: E402
from wallet_users.consistency.schema import CONSUMERS, Schema  # noqa: E402


def _check_scale():
    spec = importlib.util.spec_from_file_location(
        "check_scale", Path(__file__).with_name("check_scale.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(conn, backend: psutil.Process, read):
    """read(conn) in a read-only snapshot: (result, wall s, backend CPU s, client CPU s)."""
    cpu0, client0, started = sum(backend.cpu_times()[:2]), time.process_time(), time.perf_counter()
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        reading._limit(conn, 600)
        result = read(conn)
    finally:
        conn.execute("ROLLBACK")
    wall = time.perf_counter() - started
    return result, wall, sum(backend.cpu_times()[:2]) - cpu0, time.process_time() - client0


def same_facts(a, b) -> bool:
    (outbox_a, lag_a), (outbox_b, lag_b) = a, b
    if outbox_a != outbox_b or lag_a.keys() != lag_b.keys():
        return False
    for consumer, exact in lag_b.items():
        estimate = lag_a[consumer]
        if (
            estimate.events != exact.events
            or abs(estimate.max_ms - exact.max_ms) > 1e-9 * exact.max_ms
        ):
            return False
        for field in ("p50_ms", "p95_ms", "p99_ms"):
            bound = reading.LAG_ERROR * getattr(exact, field) + 1e-9
            if abs(getattr(estimate, field) - getattr(exact, field)) > bound:
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a database check_scale.py generated")
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    check_scale = _check_scale()
    ids = [check_scale.wallet_id(check_scale.RUN_ID, i) for i in range(args.wallets)]
    params = {
        "ids": reading.PackedArray.of_text(ids),
        "consumers": list(CONSUMERS),
        "wallet_ids": ids,
    }
    schema = Schema()
    ways = {
        "SQL (_outbox_counted)": lambda c: reading._outbox_counted(c, schema, params),
        "columns (outbox_counted)": lambda c: outbox_columns.outbox_counted(c, schema, params),
    }
    failed = False
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        reading._register(conn)
        conn.execute("SET max_parallel_workers_per_gather = 0")
        backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        print(f"{args.wallets} wallets; load average {os.getloadavg()[0]:.2f} at the start")
        for repeat in range(args.repeats):
            found = {}
            for name, read in ways.items():
                found[name], wall, server, client = timed(conn, backend, read)
                print(
                    f"  {repeat + 1}. {name:26} wall {wall:5.2f} s  backend CPU {server:5.2f} s"
                    f"  client CPU {client:5.2f} s"
                )
            columns, in_sql = found["columns (outbox_counted)"], found["SQL (_outbox_counted)"]
            if columns is None or not same_facts(columns, in_sql):
                print("  the columnar pass " + ("fell back" if columns is None else "disagreed"))
                failed = True
        _, wall, server, client = timed(
            conn, backend, lambda c: reading._transfer_imbalances(c, schema, params)
        )
        print(f"  _transfer_imbalances        wall {wall:5.2f} s  backend CPU {server:5.2f} s")
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
