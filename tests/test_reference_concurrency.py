"""Many clients at once: parallel transfers among a handful of wallets conserve money, never drive a
balance negative, never surface a deadlock or a 5xx, and once the projectors drain the database
satisfies every point of the contract's "what consistent means"."""

from __future__ import annotations

import asyncio

from concurrent_load import INITIAL, create_wallets, run_clients
from invariants import describe, find_violations, violated_kinds
from projection import wait_for_projectors

CLIENTS = 30
SECONDS = 3.0


def test_parallel_transfers_among_a_few_wallets_conserve_money_and_stay_consistent(
    reference_wallet, database_dsn
):
    service = reference_wallet()
    wallets = create_wallets(service.url, 5)
    record = asyncio.run(
        run_clients(
            service.url,
            wallets,
            SECONDS,
            CLIENTS,
            mix={"transfer": 1},
        )
    )

    assert record.problems == []
    assert record.answers["transfer ok"] > 100, record.answers
    assert sum(record.balances.values()) == INITIAL * len(wallets)
    wait_for_projectors(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == set(), describe(violations)


def test_a_mixed_load_with_replayed_keys_leaves_every_invariant_holding(
    reference_wallet, database_dsn
):
    service = reference_wallet()
    wallets = create_wallets(service.url, 6)
    record = asyncio.run(
        run_clients(
            service.url,
            wallets,
            SECONDS,  # half of it once gave too few of a kind beside the other test processes
            CLIENTS,
            mix={"credit": 5, "debit": 3, "transfer": 2},
        )
    )

    assert record.problems == []
    assert all(record.answers[f"{kind} ok"] > 10 for kind in ("credit", "debit", "transfer")), (
        record.answers
    )
    wait_for_projectors(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == set(), describe(violations)


def test_opposite_transfers_between_two_wallets_never_deadlock(reference_wallet, database_dsn):
    service = reference_wallet()
    wallets = create_wallets(service.url, 2)
    record = asyncio.run(run_clients(service.url, wallets, 1.0, 20, mix={"transfer": 1}))

    assert record.problems == []
    assert record.answers["transfer ok"] > 20, record.answers
    wait_for_projectors(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == set(), describe(violations)
