"""Starting and stopping the service: it serves on a fresh embedded PostgreSQL within seconds, and a
restart, on the same database or the same embedded data directory, keeps every wallet and entry."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from invariants import describe, find_violations, violated_kinds
from projection import wait_for_projectors
from reference_workload import run_scripted_workload
from wallet_http import WalletHttp

from reference_wallet.launcher import ReferenceWalletProcess
from reference_wallet.postgres import DSN_ENV

STARTUP_TARGET_SECONDS = 5.0


def everything_visible(api: WalletHttp, wallets) -> dict:
    """What the API shows of these wallets: read models, ledgers and summaries."""
    return {
        wallet_id: (
            api.wallet(wallet_id).body,
            api.ledger(wallet_id, "limit=1000").body,
            api.summary(wallet_id).body,
        )
        for wallet_id in wallets
    }


def test_a_restart_on_the_same_database_keeps_all_data_and_carries_on(
    reference_wallet, database_dsn
):
    first = reference_wallet()
    record = run_scripted_workload(WalletHttp(first.url), "kept")
    wait_for_projectors(database_dsn)
    before = everything_visible(WalletHttp(first.url), record.balances)
    assert first.stop() == 0

    api = WalletHttp(reference_wallet().url)
    assert everything_visible(api, record.balances) == before
    wallet_id = "kept-0"
    version = before[wallet_id][2]["lastTransaction"]["metadata"]["eventVersion"]
    reply = api.credit(wallet_id, 1)
    assert reply.status == 201, reply.text
    assert reply.body["version"] == version + 1
    record.balances[wallet_id] += 1

    wait_for_projectors(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == set(), describe(violations)


@pytest.fixture
def embedded_data_dir(monkeypatch) -> Path:
    """A short, empty path for the service's own embedded server (socket paths are short)."""
    monkeypatch.delenv(DSN_ENV, raising=False)
    path = Path(tempfile.mkdtemp(prefix="pgsvc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_on_a_fresh_embedded_postgres_it_serves_within_seconds_and_keeps_data_across_restarts(
    embedded_data_dir, tmp_path
):
    def start() -> tuple[ReferenceWalletProcess, float]:
        # An empty --pg-dsn falls through to the embedded server in --data-dir.
        process = ReferenceWalletProcess(
            dsn="",
            extra_args=["--data-dir", str(embedded_data_dir / "pgdata")],
            log_path=tmp_path / "embedded.log",
        )
        began = time.monotonic()
        process.start(timeout=60)
        return process, time.monotonic() - began

    service, startup = start()
    try:
        if startup > STARTUP_TARGET_SECONDS:
            warnings.warn(
                f"serving took {startup:.1f}s on a fresh embedded PostgreSQL"
                f" (target {STARTUP_TARGET_SECONDS:g}s)",
                stacklevel=1,
            )
        api = WalletHttp(service.url)
        assert api.create_wallet("embedded-1", "owner-e", 42).status == 201
        assert api.credit("embedded-1", 8).status == 201
    finally:
        assert service.stop() == 0

    service, _ = start()
    try:
        reply = WalletHttp(service.url).credit("embedded-1", 1)
        assert reply.status == 201, reply.text
        assert (reply.body["balance"], reply.body["version"]) == (51, 3)
    finally:
        assert service.stop() == 0
