"""The contract's "what consistent means after a run", checked directly in the reference service's
PostgreSQL. Every check returns its violations as readable lines, grouped by kind, so that a test
can assert that exactly the kinds it expects are non-empty and every other one is empty."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

import psycopg

from reference_wallet.commands import CONSUMERS

Violations = dict[str, list[str]]

# The order in which a wallet's ledger entries form their chain: event version, then (for two
# entries of one event, which only a fault writes) the order they were written in.
LEDGER_ORDER = """(metadata ->> 'eventVersion')::integer, "createdAt", "referenceId\""""
LEDGER_ORDER_NEWEST_FIRST = (
    """(metadata ->> 'eventVersion')::integer DESC, "createdAt" DESC, "referenceId" DESC"""
)
CONSUMER_ARRAY = "ARRAY[" + ", ".join(f"'{name}'" for name in CONSUMERS) + "]::text[]"
SIGNED_AMOUNT = (
    """CASE WHEN "transactionType" IN ('CREDIT', 'TRANSFER_IN') THEN amount ELSE -amount END"""
)

# Run without parameters, so a `%s` below is SQL format()'s, not a placeholder.
CHECKS: dict[str, str] = {
    # The write side agrees with the events it was derived from (the reference's own event store).
    "write_side_vs_events": """
        WITH streams AS (
            SELECT stream_id AS id, count(*) AS n, max(version) AS version,
                   sum(CASE event_type WHEN 'WalletCredited' THEN (payload ->> 'amount')::numeric
                                       WHEN 'WalletDebited' THEN -(payload ->> 'amount')::numeric
                                       ELSE 0 END) AS balance
              FROM events GROUP BY stream_id)
        SELECT format('wallet %s: write side balance %s version %s, events sum %s version %s (%s events)',
                      coalesce(w.id, s.id), w.balance, w.version, s.balance, s.version, s.n)
          FROM wallets AS w FULL JOIN streams AS s ON s.id = w.id
         WHERE w.id IS NULL OR s.id IS NULL OR w.balance <> s.balance OR w.version <> s.version
            OR s.n <> s.version + 1""",
    # Every committed event was published to the outbox, and nothing else was.
    "event_without_outbox": """
        SELECT format('event %s v%s %s has no outbox row', e.stream_id, e.version, e.event_type)
          FROM events AS e
         WHERE NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.aggregate_id = e.stream_id
                              AND o.event_version = e.version AND o.event_type = e.event_type)
        UNION ALL
        SELECT format('outbox row %s (%s v%s) has no event', o.id, o.aggregate_id, o.event_version)
          FROM outbox AS o
         WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE o.aggregate_id = e.stream_id
                              AND o.event_version = e.version AND o.event_type = e.event_type)""",
    # Every outbox event processed exactly once by each of the two consumers, each checkpointed.
    "outbox_not_processed": f"""
        SELECT format('outbox row %s (%s v%s %s) processed %s times by %s',
                      o.id, o.aggregate_id, o.event_version, o.event_type, count(p.id), c.name)
          FROM outbox AS o CROSS JOIN unnest({CONSUMER_ARRAY}) AS c(name)
          LEFT JOIN outbox_consumer_processing AS p
                 ON p.outbox_event_id = o.id AND p.consumer_name = c.name
         GROUP BY o.id, c.name HAVING count(p.id) <> 1
        UNION ALL
        SELECT format('no checkpoint for %s', c.name)
          FROM unnest({CONSUMER_ARRAY}) AS c(name)
         WHERE EXISTS (SELECT 1 FROM outbox)
           AND NOT EXISTS (SELECT 1 FROM projector_checkpoints WHERE projector_name = c.name)""",
    "read_model_vs_write_side": """
        SELECT format('wallet %s: write side %s (owner %s), read model %s (owner %s)',
                      coalesce(w.id, r.id), w.balance, w.owner_id, r.balance, r.owner_id)
          FROM wallets AS w FULL JOIN wallets_read_model AS r ON r.id = w.id
         WHERE w.id IS NULL OR r.id IS NULL OR w.balance <> r.balance
            OR w.owner_id <> r.owner_id""",
    "ledger_vs_write_side": f"""
        SELECT format('wallet %s: write side %s, last ledger balanceAfter %s',
                      w.id, w.balance, last.after)
          FROM wallets AS w
          LEFT JOIN LATERAL (
                SELECT "balanceAfter" AS after FROM ledger_entries WHERE "walletId" = w.id
                 ORDER BY {LEDGER_ORDER_NEWEST_FIRST} LIMIT 1) AS last ON true
         WHERE w.balance <> coalesce(last.after, 0)
        UNION ALL
        SELECT format('ledger entries for unknown wallet %s', l."walletId")
          FROM (SELECT DISTINCT "walletId" FROM ledger_entries) AS l
         WHERE NOT EXISTS (SELECT 1 FROM wallets WHERE id = l."walletId")""",
    "ledger_sum_vs_last_entry": f"""
        SELECT format('wallet %s: signed ledger amounts sum to %s, last balanceAfter %s',
                      id, total, last_after)
          FROM (SELECT "walletId" AS id, sum(signed) AS total,
                       max("balanceAfter") FILTER (WHERE newest = 1) AS last_after
                  FROM (SELECT "walletId", "balanceAfter", {SIGNED_AMOUNT} AS signed,
                               row_number() OVER (PARTITION BY "walletId"
                                   ORDER BY {LEDGER_ORDER_NEWEST_FIRST}) AS newest
                          FROM ledger_entries) AS entries
                 GROUP BY "walletId") AS per_wallet
         WHERE total <> last_after""",
    # Each entry starts where the previous one ended (the first at 0) and moves by its amount.
    "ledger_chain": f"""
        SELECT format('wallet %s entry %s (v%s): balanceBefore %s after previous balanceAfter %s,'
                      ' %s %s, balanceAfter %s', id, ref, version, before, previous, kind, amount,
                      after)
          FROM (SELECT "walletId" AS id, "referenceId" AS ref, "transactionType" AS kind, amount,
                       (metadata ->> 'eventVersion')::integer AS version,
                       "balanceBefore" AS before, "balanceAfter" AS after,
                       {SIGNED_AMOUNT} AS signed,
                       lag("balanceAfter", 1, 0) OVER (PARTITION BY "walletId"
                                                       ORDER BY {LEDGER_ORDER}) AS previous
                  FROM ledger_entries) AS chain
         WHERE version IS NULL OR before <> previous OR after <> before + signed""",
    # The ledger projector marked a balance-changing event processed yet wrote no entry for it.
    "ledger_entry_missing": """
        SELECT format('outbox row %s (%s v%s %s) processed by ledger-projector, no ledger entry',
                      o.id, o.aggregate_id, o.event_version, o.event_type)
          FROM outbox AS o
          JOIN outbox_consumer_processing AS p
            ON p.outbox_event_id = o.id AND p.consumer_name = 'ledger-projector'
         WHERE o.event_type IN ('WalletCredited', 'WalletDebited')
           AND NOT EXISTS (SELECT 1 FROM ledger_entries AS l
                            WHERE l.metadata ->> 'eventId' = o.metadata ->> 'eventId')""",
    "ledger_entry_duplicated": """
        SELECT format('event %s has %s ledger entries: %s', metadata ->> 'eventId', count(*),
                      string_agg("referenceId", ', '))
          FROM ledger_entries GROUP BY metadata ->> 'eventId' HAVING count(*) > 1""",
    "duplicate_reference_id": """
        SELECT format('referenceId %s used %s times', "referenceId", count(*))
          FROM ledger_entries GROUP BY "referenceId" HAVING count(*) > 1""",
    # The write side never went below zero, now or at any earlier version. A projection that
    # dips below zero on its own has missed or doubled events, which the checks above report.
    "negative_balance": """
        SELECT format('wallet %s: write side balance %s', id, balance)
          FROM wallets WHERE balance < 0
        UNION ALL
        SELECT format('wallet %s: balance %s after event v%s', stream_id, running, version)
          FROM (SELECT stream_id, version,
                       sum(CASE event_type
                               WHEN 'WalletCredited' THEN (payload ->> 'amount')::numeric
                               WHEN 'WalletDebited' THEN -(payload ->> 'amount')::numeric
                               ELSE 0 END) OVER (PARTITION BY stream_id ORDER BY version) AS running
                  FROM events) AS history
         WHERE running < 0""",
    # A transfer is one debit and one credit of the same amount on two different wallets.
    "transfer_not_conserved": """
        SELECT format('transfer %s: %s', metadata ->> 'transferId',
                      string_agg(format('%s %s %s', stream_id, event_type, payload ->> 'amount'),
                                 ', '))
          FROM events WHERE metadata ? 'transferId'
         GROUP BY metadata ->> 'transferId'
        HAVING count(*) <> 2
            OR count(*) FILTER (WHERE event_type = 'WalletDebited') <> 1
            OR count(*) FILTER (WHERE event_type = 'WalletCredited') <> 1
            OR count(DISTINCT stream_id) <> 2
            OR min((payload ->> 'amount')::numeric) <> max((payload ->> 'amount')::numeric)""",
}

RECORD_KIND = "differs_from_client_record"
KINDS = (*CHECKS, RECORD_KIND)


# What each fault switch of reference_wallet/faults.py must show, and why when it shows more than
# one kind: a projection that misses or doubles an event also ends on another balance than the
# write side.
FAULT_SYMPTOMS: dict[str, set[str]] = {
    "ledger-skip": {"ledger_entry_missing", "ledger_vs_write_side"},
    "ledger-duplicate": {"ledger_entry_duplicated", "ledger_vs_write_side"},
    "ledger-wrong-before": {"ledger_chain"},
    "read-model-lost-update": {"read_model_vs_write_side"},
    "ledger-stall": {"outbox_not_processed", "ledger_vs_write_side"},
    "read-model-stall": {"outbox_not_processed", "read_model_vs_write_side"},
    # The projectors never hear of the dropped events, so both projections fall behind.
    "outbox-drop": {"event_without_outbox", "read_model_vs_write_side", "ledger_vs_write_side"},
    # The database agrees with itself; only the client's record shows the second effect.
    "replay-twice": {"differs_from_client_record"},
    "overdraft": {"negative_balance"},
    # The real service's behaviours (--compat wallex). A replay applied again agrees with itself
    # in the database, as replay-twice does.
    "keys-ignored": {"differs_from_client_record"},
    # The ledger chains the extra credit like any other: only its end balance is off.
    "ledger-initial-twice": {"ledger_vs_write_side"},
    "read-model-unbuilt": {"read_model_vs_write_side"},
    # Nothing in the database: the HTTP answers show these (test_reference_compat.py), and the
    # checks count only the two projectors' rows per event.
    "read-404": set(),
    "self-transfer-500": set(),
    "third-consumer": set(),
    # The scripted workload is serial, so no commit is ever late: the by-id reading then misses
    # nothing (test_reference_late_commits.py makes commits late).
    "checkpoint-by-id": set(),
}


def find_violations(
    database: str | psycopg.Connection, expected_balances: Mapping[str, Decimal] | None = None
) -> Violations:
    """Every kind of inconsistency mapped to its violations (an empty list when it holds).

    database is a DSN, or an open connection (whose transaction may hold uncommitted changes).
    expected_balances is the client's own record of acknowledged operations, wallet by wallet;
    without it the record check is skipped. Call it once the projectors have drained.
    """
    if isinstance(database, str):
        with psycopg.connect(database, autocommit=True) as conn:
            return find_violations(conn, expected_balances)
    violations = {
        kind: [row[0] for row in database.execute(query)] for kind, query in CHECKS.items()
    }
    violations[RECORD_KIND] = (
        _record_mismatches(database, expected_balances) if expected_balances is not None else []
    )
    return violations


def _record_mismatches(conn: psycopg.Connection, expected: Mapping[str, Decimal]) -> list[str]:
    actual = dict(conn.execute("SELECT id, balance FROM wallets").fetchall())
    problems = [
        f"wallet {wallet_id}: client record {balance}, write side {actual.get(wallet_id)}"
        for wallet_id, balance in sorted(expected.items())
        if actual.get(wallet_id) != balance
    ]
    problems += [
        f"wallet {wallet_id}: in the database ({balance}) but not in the client record"
        for wallet_id, balance in sorted(actual.items())
        if wallet_id not in expected
    ]
    return problems


def violated_kinds(violations: Violations) -> set[str]:
    return {kind for kind, found in violations.items() if found}


def describe(violations: Violations, kinds: Iterable[str] | None = None, limit: int = 5) -> str:
    """The violations of the given kinds (default: all non-empty), a few examples each."""
    lines = []
    for kind in kinds if kinds is not None else sorted(violated_kinds(violations)):
        found = violations[kind]
        lines.append(f"{kind}: {len(found)}")
        lines += [f"    {line}" for line in found[:limit]]
    return "\n".join(lines) or "no violations"
