"""The projectors as their own process (`python -m reference_wallet project`): they drain what the
service wrote while they were away, survive being stopped or killed mid-batch without losing or
repeating an event, and never double-process beside the service's own projectors."""

from __future__ import annotations

import asyncio

import psycopg
from concurrent_load import create_wallets, run_clients
from invariants import describe, find_violations, violated_kinds
from polling import wait_until
from projection import backlog, wait_for_projectors
from reference_workload import run_scripted_workload
from wallet_http import WalletHttp

NO_PROJECTORS = ["--no-projectors"]


def outbox_size(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


def processed(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM outbox_consumer_processing").fetchone()[0]


def assert_consistent(dsn: str, balances) -> None:
    violations = find_violations(dsn, balances)
    assert violated_kinds(violations) == set(), describe(violations)


def test_a_service_without_projectors_leaves_every_event_pending(reference_wallet, database_dsn):
    service = reference_wallet(extra_args=NO_PROJECTORS)
    record = run_scripted_workload(WalletHttp(service.url), "idle")
    assert record.unexpected == []

    assert backlog(database_dsn) == 2 * outbox_size(database_dsn) > 0
    assert processed(database_dsn) == 0


def test_a_separate_projector_process_drains_what_the_service_wrote(reference_wallet, database_dsn):
    service = reference_wallet(extra_args=NO_PROJECTORS)
    record = run_scripted_workload(WalletHttp(service.url), "later")

    reference_wallet(command="project")
    wait_for_projectors(database_dsn)
    assert_consistent(database_dsn, record.balances)


def test_a_stopped_then_restarted_projector_process_processes_everything_exactly_once(
    reference_wallet, database_dsn
):
    service = reference_wallet(extra_args=NO_PROJECTORS)
    api = WalletHttp(service.url)
    projector = reference_wallet(command="project")
    first = run_scripted_workload(api, "before")
    wait_for_projectors(database_dsn)
    assert projector.stop() == 0

    second = run_scripted_workload(api, "while-stopped")
    drained = 2 * outbox_size(database_dsn) - backlog(database_dsn)
    assert processed(database_dsn) == drained < 2 * outbox_size(database_dsn)

    reference_wallet(command="project")
    wait_for_projectors(database_dsn)
    assert_consistent(database_dsn, first.balances | second.balances)


def test_a_projector_killed_mid_batch_loses_and_repeats_nothing(reference_wallet, database_dsn):
    service = reference_wallet(extra_args=NO_PROJECTORS)
    wallets = create_wallets(service.url, 5)
    record = asyncio.run(run_clients(service.url, wallets, 1.5, 20, mix={"transfer": 1}))
    assert record.problems == []
    pending = backlog(database_dsn)

    projector = reference_wallet(command="project")
    wait_until(lambda: backlog(database_dsn) < pending, 20, "the projectors to start draining")
    projector.kill()
    reference_wallet(command="project")
    wait_for_projectors(database_dsn)
    assert_consistent(database_dsn, record.balances)


def test_a_projector_process_beside_the_services_own_never_double_processes(
    reference_wallet, database_dsn
):
    service = reference_wallet()
    reference_wallet(command="project")
    reference_wallet(command="project")
    wallets = create_wallets(service.url, 5)
    record = asyncio.run(run_clients(service.url, wallets, 1.5, 20, mix={"transfer": 1}))
    assert record.problems == []

    wait_for_projectors(database_dsn)
    assert_consistent(database_dsn, record.balances)


def test_the_project_command_can_run_one_consumer_alone(reference_wallet, database_dsn):
    service = reference_wallet(extra_args=NO_PROJECTORS)
    reference_wallet(command="project", extra_args=["--consumers", "read-model-projector"])
    record = run_scripted_workload(WalletHttp(service.url), "half")

    wait_for_projectors(database_dsn, ["read-model-projector"])
    assert backlog(database_dsn, ["ledger-projector"]) == outbox_size(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violations["read_model_vs_write_side"] == []
    assert violated_kinds(violations) == {"outbox_not_processed", "ledger_vs_write_side"}
