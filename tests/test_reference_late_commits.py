"""The late-commit race: outbox ids are taken at insert and become visible at commit, so under
concurrent load a lower id can commit after a higher one. Projectors that read by id above their
checkpoint (fault checkpoint-by-id) skip such an event for good; the reference's own work queue
processes it, late, exactly once. `--slow-commit-ms` makes late commits happen on demand."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import psycopg
import pytest
from concurrent_load import create_wallets, run_clients
from invariants import describe, find_violations, violated_kinds
from projection import wait_for_checkpoints, wait_for_projectors
from wallet_http import WalletHttp

from reference_wallet.commands import CONSUMERS
from reference_wallet.launcher import ReferenceWalletProcess
from reference_wallet.postgres import PROJECT_ROOT

# A third of the commands held 300 ms while 20 clients keep committing on 20 wallets: each held
# one sees dozens of higher ids commit first. Chosen so the race is found on every run.
SLOW_COMMITS = ["--slow-commit-ms", "300", "--slow-commit-share", "0.3"]
WALLETS = 20
CLIENTS = 20
SECONDS = 2.0
MIX = {"credit": 5, "debit": 3, "transfer": 2}
# Enough acknowledged operations that load happened: 120-180 is usual, fewer on a busy machine
# (slow commits bound the throughput), and about 50 late commits are skipped either way.
MIN_ANSWERS = 40


def run_load(url: str):
    wallets = create_wallets(url, WALLETS)
    record = asyncio.run(run_clients(url, wallets, SECONDS, CLIENTS, mix=MIX))
    assert record.problems == [], record.problems[:5]
    assert sum(record.answers.values()) > MIN_ANSWERS, record.answers
    return record


def skipped_below_checkpoint(dsn: str, consumer: str) -> set[int]:
    """Outbox events the consumer never processed although its checkpoint is past their id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT o.id FROM outbox AS o"
            " JOIN projector_checkpoints AS c ON c.projector_name = %s"
            " WHERE o.id < c.last_processed_id AND NOT EXISTS ("
            "   SELECT 1 FROM outbox_consumer_processing AS p"
            "    WHERE p.outbox_event_id = o.id AND p.consumer_name = %s)",
            (consumer, consumer),
        ).fetchall()
    return {row[0] for row in rows}


def ledger_entries_for(dsn: str, outbox_ids: set[int]) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM ledger_entries AS l JOIN outbox AS o"
            " ON l.metadata ->> 'eventId' = o.metadata ->> 'eventId' WHERE o.id = ANY(%s)",
            (list(outbox_ids),),
        ).fetchone()[0]


def processed_after_a_higher_id(dsn: str, consumer: str) -> int:
    """Events the consumer processed after it had already processed a higher id: late commits."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM (SELECT outbox_event_id, max(outbox_event_id) OVER ("
            "   ORDER BY processed_at, outbox_event_id"
            "   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS highest_before"
            "  FROM outbox_consumer_processing WHERE consumer_name = %s) AS t"
            " WHERE outbox_event_id < highest_before",
            (consumer,),
        ).fetchone()[0]


def test_projectors_reading_by_checkpoint_id_skip_late_commits_for_good(
    reference_wallet, database_dsn
):
    service = reference_wallet("checkpoint-by-id", SLOW_COMMITS)
    record = run_load(service.url)

    wait_for_checkpoints(database_dsn)
    skipped = {consumer: skipped_below_checkpoint(database_dsn, consumer) for consumer in CONSUMERS}
    assert all(skipped.values()), skipped
    assert ledger_entries_for(database_dsn, skipped["ledger-projector"]) == 0
    violations = find_violations(database_dsn, record.balances)
    assert len(violations["outbox_not_processed"]) == sum(map(len, skipped.values())), describe(
        violations, ["outbox_not_processed"]
    )
    assert "read_model_vs_write_side" in violated_kinds(violations), describe(violations)

    # Later commands wake the projectors again; what they skipped stays skipped.
    api = WalletHttp(service.url)
    for _ in range(3):
        assert api.credit("hot-0", 1).status == 201
    wait_for_checkpoints(database_dsn)
    for consumer in CONSUMERS:
        assert skipped_below_checkpoint(database_dsn, consumer) == skipped[consumer], consumer


def test_the_reference_projectors_process_late_commits_exactly_once(reference_wallet, database_dsn):
    service = reference_wallet(extra_args=SLOW_COMMITS)
    record = run_load(service.url)

    wait_for_projectors(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == set(), describe(violations)
    # The commits were late: each consumer processed some event after a higher id.
    for consumer in CONSUMERS:
        assert processed_after_a_higher_id(database_dsn, consumer) > 0, consumer


def test_slow_commits_hold_a_command_open_for_that_long(database_dsn, tmp_path):
    service = ReferenceWalletProcess(
        dsn=database_dsn,
        slow_commit_ms=400,
        extra_args=["--slow-commit-share", "1"],
        log_path=tmp_path / "service.log",
    ).start()
    try:
        api = WalletHttp(service.url)
        assert api.create_wallet("slow-1", "owner-1", 10).status == 201
        started = time.monotonic()
        assert api.credit("slow-1", 5).status == 201
        assert time.monotonic() - started >= 0.4
        assert "slow commits: 400 ms for 1 of commands" in service.log_path.read_text()
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--slow-commit-ms", "-1"], {}),
        (["--slow-commit-ms", "soon"], {}),
        (["--slow-commit-ms", "nan"], {}),
        (["--slow-commit-share", "1.5"], {}),
        ([], {"REFERENCE_WALLET_SLOW_COMMIT_MS": "-5"}),
    ],
    ids=["negative", "not a number", "nan", "share above 1", "negative in the environment"],
)
def test_a_bad_slow_commit_value_exits_2_with_one_line_and_no_traceback(args, env):
    result = subprocess.run(
        [sys.executable, "-m", "reference_wallet", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "slow-commit" in lines[0]
