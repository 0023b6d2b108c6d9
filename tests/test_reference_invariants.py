"""The consistency checks themselves: on a database the scripted workload left consistent, each
deliberate corruption made in SQL (inside a transaction that is rolled back) is reported under
its own kind, including the kinds no fault switch produces."""

from __future__ import annotations

import psycopg
import pytest
from invariants import FAULT_SYMPTOMS, KINDS, describe, find_violations, violated_kinds
from projection import wait_for_projectors
from reference_workload import run_scripted_workload
from wallet_http import WalletHttp

CORRUPTIONS: dict[str, tuple[str, set[str]]] = {
    "write-side version ahead of its events": (
        "UPDATE wallets SET version = version + 1 WHERE id = 'inv-0'",
        {"write_side_vs_events"},
    ),
    "outbox row lost after projection": (
        "DELETE FROM outbox WHERE id = (SELECT max(id) FROM outbox)",
        {"event_without_outbox"},
    ),
    "event never processed by one consumer": (
        "DELETE FROM outbox_consumer_processing WHERE id = (SELECT min(id)"
        " FROM outbox_consumer_processing WHERE consumer_name = 'read-model-projector')",
        {"outbox_not_processed"},
    ),
    "read model off by one": (
        "UPDATE wallets_read_model SET balance = balance + 1 WHERE id = 'inv-1'",
        {"read_model_vs_write_side"},
    ),
    "newest ledger entry deleted": (
        """DELETE FROM ledger_entries WHERE id = (SELECT id FROM ledger_entries
            WHERE "walletId" = 'inv-0' ORDER BY (metadata ->> 'eventVersion')::int DESC LIMIT 1)""",
        {"ledger_vs_write_side", "ledger_entry_missing"},
    ),
    "ledger amount rewritten mid-chain": (
        """UPDATE ledger_entries SET amount = amount + 1 WHERE id = (SELECT id FROM ledger_entries
            WHERE "walletId" = 'inv-0' ORDER BY (metadata ->> 'eventVersion')::int LIMIT 1)""",
        {"ledger_chain", "ledger_sum_vs_last_entry"},
    ),
    "ledger entry copied under the same referenceId": (
        """ALTER TABLE ledger_entries DROP CONSTRAINT "ledger_entries_referenceId_key";
           INSERT INTO ledger_entries ("walletId", "transactionType", amount, "balanceBefore",
                  "balanceAfter", description, "referenceId", "relatedWalletId", metadata,
                  "createdAt")
           SELECT "walletId", "transactionType", amount, "balanceBefore", "balanceAfter",
                  description, "referenceId", "relatedWalletId", metadata, "createdAt"
             FROM ledger_entries WHERE "walletId" = 'inv-2'
            ORDER BY (metadata ->> 'eventVersion')::int LIMIT 1""",
        {
            "duplicate_reference_id",
            "ledger_entry_duplicated",
            "ledger_chain",
            "ledger_sum_vs_last_entry",
        },
    ),
    "one leg of a transfer rewritten": (
        """UPDATE events SET payload = jsonb_set(payload, '{amount}',
                  to_jsonb((payload ->> 'amount')::numeric + 1))
            WHERE id = (SELECT id FROM events WHERE metadata ? 'transferId'
                         AND event_type = 'WalletCredited' ORDER BY created_at LIMIT 1)""",
        {"transfer_not_conserved", "write_side_vs_events"},
    ),
    "write side below zero": (
        "UPDATE wallets SET balance = -5 WHERE id = 'inv-3'",
        {
            "negative_balance",
            "write_side_vs_events",
            "read_model_vs_write_side",
            "ledger_vs_write_side",
            "differs_from_client_record",
        },
    ),
}


@pytest.fixture(scope="module")
def consistent_database(module_reference_wallet):
    """The module's database after the scripted workload, drained; and the client's record."""
    record = run_scripted_workload(WalletHttp(module_reference_wallet.url), "inv")
    assert record.unexpected == []
    wait_for_projectors(module_reference_wallet.dsn)
    return module_reference_wallet.dsn, record


def test_the_untouched_database_has_no_violation_of_any_kind(consistent_database):
    dsn, record = consistent_database
    violations = find_violations(dsn, record.balances)
    assert set(violations) == set(KINDS)
    assert violated_kinds(violations) == set(), describe(violations)


def test_every_kind_is_caught_by_a_fault_or_a_corruption():
    caught = set().union(*FAULT_SYMPTOMS.values(), *(kinds for _, kinds in CORRUPTIONS.values()))
    assert caught == set(KINDS)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corruption_is_reported_under_its_own_kinds(consistent_database, corruption):
    dsn, record = consistent_database
    statement, expected = CORRUPTIONS[corruption]
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
            violations = find_violations(conn, record.balances)
        finally:
            conn.rollback()
    assert violated_kinds(violations) == expected, describe(violations)
