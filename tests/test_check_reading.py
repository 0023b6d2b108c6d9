"""The faster reading of issue 11 reads the same facts as the reading before it (kept in
reading_before.py): on one database holding every kind of corruption the checker knows, with the
contract's unique constraints and without them, both readings give equal facts and the checker
equal reports; only the projection lag's percentiles differ, within the bound the report states.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest
import reading_before

from wallet_users.consistency import columns, ledger_columns, outbox_columns, run_check
from wallet_users.consistency import reading as reading_now
from wallet_users.consistency.checker import (
    check_consistency,
    find_violations,
    needs_detail,
    wallets_in_scope,
)
from wallet_users.consistency.facts import Facts
from wallet_users.consistency.schema import Schema
from wallet_users.record.history import KIND_CODES, AckHistory, RunHistory
from wallet_users.record.ids import wallet_id

BENCH = Path(__file__).resolve().parent.parent / "bench" / "check_scale.py"
WALLETS, VERSIONS = 48, 10  # room for a fault on each even wallet


def _bench():
    spec = importlib.util.spec_from_file_location("check_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_scale", module)
    spec.loader.exec_module(module)
    return module


check_scale = _bench()


def w(i: int) -> str:
    return wallet_id(check_scale.RUN_ID, i)


# (what the checker reports it as, statements on wallet i's rows); one wallet each
WITH_CONSTRAINTS = {
    "ledger-skip": [
        "DELETE FROM ledger_entries WHERE \"walletId\" = %(w)s AND metadata->>'eventVersion' = '5'"
    ],
    "ledger-duplicate": [
        """INSERT INTO ledger_entries (id, "walletId", "transactionType", amount, "balanceBefore",
               "balanceAfter", description, "referenceId", "relatedWalletId", metadata, "createdAt")
           SELECT gen_random_uuid(), "walletId", "transactionType", amount, "balanceAfter",
                  "balanceAfter" + amount, description, "referenceId" || '-again', "relatedWalletId",
                  metadata, "createdAt" FROM ledger_entries
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '3'"""
    ],
    "ledger-wrong-before": [
        """UPDATE ledger_entries SET "balanceBefore" = "balanceBefore" + 1
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '4'"""
    ],
    "arithmetic": [
        """UPDATE ledger_entries SET "balanceAfter" = "balanceAfter" + 7
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '6'"""
    ],
    "negative in the ledger": [
        """UPDATE ledger_entries SET "balanceBefore" = -3
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '2'"""
    ],
    "read-model-lost-update": [
        "UPDATE wallets_read_model SET balance = balance - 10 WHERE id = %(w)s"
    ],
    "read-model-unbuilt": ["DELETE FROM wallets_read_model WHERE id = %(w)s"],
    "missing wallet": ["DELETE FROM wallets WHERE id = %(w)s"],
    "negative balance": ["UPDATE wallets SET balance = -5 WHERE id = %(w)s"],
    "outbox-drop": ["DELETE FROM outbox WHERE aggregate_id = %(w)s AND event_version = 7"],
    "ledger-stall": [
        """DELETE FROM outbox_consumer_processing WHERE consumer_name = 'ledger-projector'
             AND outbox_event_id IN (SELECT id FROM outbox WHERE aggregate_id = %(w)s
                                       AND event_version >= 8)"""
    ],
    "read-model-stall": [
        """DELETE FROM outbox_consumer_processing WHERE consumer_name = 'read-model-projector'
             AND outbox_event_id IN (SELECT id FROM outbox WHERE aggregate_id = %(w)s
                                       AND event_version = 9)"""
    ],
    "third-consumer": [
        """INSERT INTO outbox_consumer_processing (outbox_event_id, consumer_name, processed_at)
           SELECT id, 'kafka-publisher', created_at FROM outbox WHERE aggregate_id = %(w)s"""
    ],
    "transfer not conserved": [
        """UPDATE ledger_entries SET amount = amount + 1, "balanceAfter" = "balanceAfter" + 1
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '8'"""
    ],
    "replay-twice (an extra version)": [
        """INSERT INTO outbox (aggregate_id, event_type, event_version, payload, metadata)
           VALUES (%(w)s, 'WalletCredited', 11, '{"amount": 5}', '{}')"""
    ],
    "ledger-initial-twice": [
        """INSERT INTO ledger_entries (id, "walletId", "transactionType", amount, "balanceBefore",
               "balanceAfter", description, "referenceId", metadata, "createdAt")
           SELECT gen_random_uuid(), "walletId", 'CREDIT', amount, 0, amount, 'Initial balance',
                  "referenceId" || '-created', jsonb_build_object('eventVersion', 0), "createdAt"
             FROM ledger_entries WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '1'"""
    ],
    "same eventId at another version": [
        """UPDATE ledger_entries SET metadata = jsonb_set(metadata, '{eventId}',
               (SELECT metadata->'eventId' FROM ledger_entries WHERE "walletId" = %(w)s
                   AND metadata->>'eventVersion' = '2'))
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '9'"""
    ],
}
# only possible where the database lacks the contract's unique constraints
WITHOUT_CONSTRAINTS = {
    "duplicate referenceId": [
        """UPDATE ledger_entries SET "referenceId" = (SELECT "referenceId" FROM ledger_entries
               WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '3')
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '4'"""
    ],
    "event processed twice": [
        """INSERT INTO outbox_consumer_processing (outbox_event_id, consumer_name, processed_at)
           SELECT id, 'ledger-projector', created_at FROM outbox
            WHERE aggregate_id = %(w)s AND event_version = 2"""
    ],
    "ledger order unknown": [
        """UPDATE ledger_entries SET metadata = metadata - 'eventVersion',
               "createdAt" = timestamp '2025-01-01'
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' IN ('5', '6')"""
    ],
    # as the real service keeps its ledger: no version, no eventId, in createdAt order
    "no versions": [
        """UPDATE ledger_entries SET metadata = metadata - 'eventVersion' - 'eventId'
            WHERE "walletId" = %(w)s"""
    ],
    # the last entry unversioned, at the createdAt of the one before it: tied
    "tied with a versioned entry": [
        """UPDATE ledger_entries SET metadata = metadata - 'eventVersion',
               "createdAt" = (SELECT "createdAt" FROM ledger_entries WHERE "walletId" = %(w)s
                                 AND metadata->>'eventVersion' = '9')
            WHERE "walletId" = %(w)s AND metadata->>'eventVersion' = '10'"""
    ],
}
# with the constraints, the checks they make needless: not read (the outbox's unprocessed events
# then counted, their first event read only for the wallets that have one)
PROVED = ["duplicate referenceIds", "events processed twice"]
DROP_CONSTRAINTS = [
    'ALTER TABLE ledger_entries DROP CONSTRAINT "ledger_entries_referenceId_key"',
    "ALTER TABLE outbox_consumer_processing"
    " DROP CONSTRAINT outbox_consumer_processing_outbox_event_id_consumer_name_key",
]


def corrupt(dsn: str, faults: dict[str, list[str]], first: int) -> int:
    """Each fault on its own even wallet from `first` on (odd wallets are their transfer
    partners); the next free wallet."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for number, (fault, statements) in enumerate(faults.items()):
            assert first + 2 * number < WALLETS, f"no wallet left for {fault}"
            for statement in statements:
                changed = conn.execute(statement, {"w": w(first + 2 * number)}).rowcount
                assert changed > 0, f"{fault} changed no row"
        conn.execute("ANALYZE")
    return first + 2 * len(faults)


def history_in_segments(tmp_path: Path) -> RunHistory:
    """The generated history as two workers would send it (wallets split between them, one
    spilled to a file), plus acknowledged snapshots the ledger does not hold."""
    whole = check_scale.build_history(WALLETS, VERSIONS)
    table, index, versions, balances, kinds = whole.columns()
    workers = [AckHistory(tmp_path / "spill-0", spill_bytes=100), AckHistory()]
    for i, version, cents, kind in zip(index, versions, balances, kinds, strict=True):
        wallet = table[i]
        workers[int(wallet[-6:]) % 2].add(wallet, version, Decimal(cents) / 100, kind, 0)
    workers[0].add(w(0), 3, 999_999, KIND_CODES["credit"], 100)  # acknowledged, not in the ledger
    workers[1].add(w(1), 12, 5, KIND_CODES["credit"], 100)  # a version with no entry at all
    workers[1].add(w(3), 0, 0, KIND_CODES["create"], 0)  # a creation without initial balance
    return RunHistory.of(*workers)


def both_readings(dsn: str, record, history):
    ids = wallets_in_scope(record)
    schema = Schema()

    def detail(facts):  # the same wallets' rows read in detail by both
        return ids[::3]

    facts = {}
    for name, reading in (("before", reading_before), ("now", reading_now)):
        with psycopg.connect(dsn, autocommit=True) as conn:
            facts[name] = reading.read_facts(
                conn, schema, ids, history=history, needs_detail=detail
            )
    # the outbox pass on a second connection, in the first one's snapshot, reads the same
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        psycopg.connect(dsn, autocommit=True) as beside,
    ):
        two = reading_now.read_facts(
            conn, schema, ids, history=history, needs_detail=detail, beside=beside
        )
    assert_same_facts(facts["now"], two)
    return facts["before"], facts["now"]


def screened(dsn: str, record, history) -> dict:
    """The ledger pass's snapshot comparison: wallet -> its SnapshotCheck, or None where the
    snapshots are left to be compared one by one."""
    ids = wallets_in_scope(record)
    params = {"ids": reading_now.PackedArray.of_text(ids), "wallet_ids": ids}
    with psycopg.connect(dsn, autocommit=True) as conn:
        reading_now._register(conn)
        with conn.transaction():
            _, _, found = reading_now._ledger(
                conn, Schema(), params, reading_now._history_params(history, ids)
            )
    return found


def assert_same_facts(before, now) -> list[str]:
    """Every fact equal, lists in any order (the queries' ORDER BY ... LIMIT leaves ties
    unordered); the lag's count and max equal, its percentiles within the stated bound."""
    for name in vars(before):
        if name in ("lag", "proved_by_constraint", "snapshot", "snapshot_at", "read_by"):
            continue  # compared below, or when, in which snapshot and how the facts were read
        old, new = getattr(before, name), getattr(now, name)
        if isinstance(old, list):
            old, new = sorted(old), sorted(new)
        assert old == new, name
    assert before.lag.keys() == now.lag.keys()
    for consumer, exact in before.lag.items():
        estimate = now.lag[consumer]
        assert estimate.events == exact.events
        assert estimate.max_ms == pytest.approx(exact.max_ms, rel=1e-9)
        for field in ("p50_ms", "p95_ms", "p99_ms"):
            bound = estimate.relative_error * getattr(exact, field) + 1e-9
            assert abs(getattr(estimate, field) - getattr(exact, field)) <= bound, field
    return sorted(now.proved_by_constraint)


def in_order(facts):
    """The facts with the run-wide lists sorted: the queries order them by copies and leave ties
    in no order (either reading, run twice, may give them differently), and the report lists
    violations in the facts' order."""
    for name in ("duplicate_references", "duplicate_event_entries", "transfer_imbalances"):
        setattr(facts, name, sorted(getattr(facts, name)))
    return facts


def same_report(record, before, now) -> None:
    """The checker's report from either reading's facts is the same, but for the lag and the
    checks the new reading proved by constraint; and the checker's shortcut past plainly
    consistent wallets finds what the checks one by one find."""
    for facts in (before, now):
        assert find_violations(record, facts, Schema()) == find_violations(
            record, facts, Schema(), shortcut=False
        )
    old = check_consistency(record, in_order(before)).to_dict()
    new = check_consistency(record, in_order(now)).to_dict()
    for report in (old, new):
        for key in ("projection_lag_ms", "proved_by_constraint", "read_by"):
            report.pop(key)
    assert new == old


def test_the_faster_reading_reads_the_same_facts_on_a_corrupted_database(
    database_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the ledger's columns in rows of 7 wallets, so that the 48 wallets come in several
    monkeypatch.setattr(ledger_columns, "CHUNK_WALLETS", 7)
    check_scale.generate(database_dsn, WALLETS, VERSIONS)
    record = check_scale.build_record(WALLETS, VERSIONS)
    history = history_in_segments(tmp_path)
    clean_before, clean_now = both_readings(database_dsn, record, history)
    assert assert_same_facts(clean_before, clean_now) == PROVED
    # the ledger's columns vouched for every wallet: none went through the SQL pass
    assert clean_now.read_by == {"ledger": "columns", "outbox": "columns"}
    # one entry per version: every wallet's snapshots compared in the ledger pass itself
    assert None not in screened(database_dsn, record, history).values()

    free = corrupt(database_dsn, WITH_CONSTRAINTS, 0)
    before, now = both_readings(database_dsn, record, history)
    assert assert_same_facts(before, now) == PROVED
    assert now.duplicate_event_entries and now.transfer_imbalances  # the folded checks found them
    # the columns handed the wallets with a broken ledger, and only those, to the SQL pass:
    # skip, duplicate, wrong before, arithmetic, negative, transfer, initial twice, same eventId
    assert now.read_by["ledger"] == "columns; 8 wallets through the SQL pass"
    assert any(s.example_event for s in now.outbox.values())  # read for the stalled wallets
    assert any(s.mismatched for s in now.snapshots.values())
    # the ledger pass compared the snapshots of wallets with one entry per version itself, their
    # mismatches too, and left the others (a duplicate, a gap) to the exact comparison
    screen = screened(database_dsn, record, history)
    assert any(check is None for check in screen.values())
    assert any(check is not None and check.mismatched for check in screen.values())
    same_report(record, before, now)
    # run_check end to end (its violations found once) against the reading before, both reading
    # the rows of the wallets the checker names
    by_run = run_check(database_dsn, record, settle_timeout=0.5, history=history)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        chosen = reading_before.read_facts(
            conn,
            Schema(),
            wallets_in_scope(record),
            history=history,
            needs_detail=lambda facts: needs_detail(record, facts),
        )
    assert by_run.violations.keys() == check_consistency(record, chosen).violations.keys()
    assert by_run.causes == check_consistency(record, chosen).causes
    kinds = set(by_run.violations)
    assert {"ledger_chain_broken", "ledger_arithmetic", "duplicate_ledger_entry"} <= kinds
    assert {"transfer_not_conserved", "ledger_snapshot_mismatch", "missing_wallet"} <= kinds
    assert {"unprocessed_event", "outbox_missing_versions", "outbox_extra_versions"} <= kinds
    assert {"read_model_mismatch", "read_model_missing", "negative_balance"} <= kinds
    assert "proved by constraint, not read: duplicate referenceIds" in "\n".join(
        by_run.console_lines()
    )

    # amounts of another scale: carried in ten-thousandths, the same facts
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        for column in ("amount", '"balanceBefore"', '"balanceAfter"'):
            conn.execute(f"ALTER TABLE ledger_entries ALTER COLUMN {column} TYPE numeric(24, 4)")
    before, now = both_readings(database_dsn, record, history)
    assert now.read_by["ledger"] == "columns; 8 wallets through the SQL pass"
    assert any(s.mismatched for s in now.snapshots.values())
    assert_same_facts(before, now)
    same_report(record, before, now)

    with psycopg.connect(database_dsn, autocommit=True) as conn:
        for statement in DROP_CONSTRAINTS:
            conn.execute(statement)
    corrupt(database_dsn, WITHOUT_CONSTRAINTS, free)
    before, now = both_readings(database_dsn, record, history)
    assert assert_same_facts(before, now) == []  # nothing proved: every check read
    assert now.duplicate_references and now.snapshots is None and now.snapshots_skipped
    # the unversioned wallet in createdAt order went through the columns; the two with ties
    # (and the 8 before) through the SQL pass
    assert now.read_by["ledger"] == "columns; 10 wallets through the SQL pass"
    assert now.read_by["outbox"].startswith("SQL pass: no unique index")
    assert sum(1 for s in now.ledger.values() if s.ambiguous_order) == 2
    assert any(sum(s.processed_twice.values()) for s in now.outbox.values())
    same_report(record, before, now)

    # tables too large for a row of columns (here: rows of at most 4 kB): the ledger in more
    # rows, the outbox through its SQL pass, the same facts
    monkeypatch.setattr(ledger_columns, "ROW_BYTES", 4096)
    monkeypatch.setattr(outbox_columns, "ROW_BYTES", 4096)
    before, now = both_readings(database_dsn, record, history)
    assert now.read_by["ledger"] == "columns; 10 wallets through the SQL pass"
    assert now.read_by["outbox"].startswith("SQL pass: ")
    assert_same_facts(before, now)
    monkeypatch.undo()

    # metadata as json, not jsonb (no ? operator): the ledger through the SQL pass
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_entries ALTER COLUMN metadata TYPE json")
    before, now = both_readings(database_dsn, record, history)
    assert now.read_by["ledger"].startswith("SQL pass")
    assert_same_facts(before, now)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_entries ALTER COLUMN metadata TYPE jsonb")

    # amounts the columns cannot carry as integers (numeric of no declared scale): the whole
    # ledger goes through the SQL pass, and reads the same
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_entries ALTER COLUMN amount TYPE numeric")
    before, now = both_readings(database_dsn, record, history)
    assert now.read_by["ledger"].startswith("SQL pass")
    assert_same_facts(before, now)
    same_report(record, before, now)


def test_packed_arrays_round_trip_through_postgresql(database_dsn: str) -> None:
    ids = ["a", "", "wallet with spaces", "ünï", 'q"uote', "x" * 300]
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        reading_now._register(conn)
        row = conn.execute(
            "SELECT %s::text[], %s::int4[], %s::int8[], %s::text[]",
            (
                reading_now.PackedArray.of_text(ids),
                reading_now.PackedArray.of_int4([0, -1, 2**31 - 1]),
                reading_now.PackedArray.of_int8([2**40, -(2**40)]),
                reading_now.PackedArray.of_text([]),
            ),
        ).fetchone()
    assert row == (ids, [0, -1, 2**31 - 1], [2**40, -(2**40)], [])


def test_a_transaction_ending_after_the_first_read_makes_the_check_read_again(
    database_dsn: str,
) -> None:
    """The first read is final only when the database's snapshot has not moved QUIET_SECONDS
    later: a transaction that ends during that wait (here: one that took a transaction id and
    committed while the check slept) sends the check back to polling and a second read."""
    check_scale.generate(database_dsn, WALLETS, VERSIONS)
    record = check_scale.build_record(WALLETS, VERSIONS)
    ended: list[int] = []

    def sleep_and_commit(seconds: float) -> None:
        if not ended:
            with psycopg.connect(database_dsn) as other:  # commits on leaving
                ended.append(other.execute("SELECT pg_current_xact_id()").fetchone()[0])
        time.sleep(seconds)

    report = run_check(database_dsn, record, settle_timeout=5, sleep=sleep_and_commit)
    assert ended
    assert report.settle["drained"] and report.settle["confirmed_by"] == "second read"
    assert report.valid, report.console_lines()


def outbox_both_ways(dsn: str, ids: list[str], schema: Schema | None = None):
    """The columnar outbox pass and the SQL one (_outbox_counted) in one snapshot, and why the
    columnar one would not run (None: it runs)."""
    schema = schema or Schema()
    params = {"ids": reading_now.PackedArray.of_text(ids), "wallet_ids": ids}
    with psycopg.connect(dsn, autocommit=True) as conn:
        reading_now._register(conn)
        with conn.transaction():
            reason = outbox_columns.ineligible(conn, schema)
            columns = outbox_columns.outbox_counted(conn, schema, params)
            in_sql = reading_now._outbox_counted(conn, schema, params)
    return reason, columns, in_sql


def test_the_outbox_is_read_as_columns_on_the_contract_schema_and_in_sql_where_types_differ(
    database_dsn: str, tmp_path: Path
) -> None:
    check_scale.generate(database_dsn, WALLETS, VERSIONS)
    corrupt(database_dsn, WITH_CONSTRAINTS, 0)
    record = check_scale.build_record(WALLETS, VERSIONS)
    ids = wallets_in_scope(record)
    reason, columns, in_sql = outbox_both_ways(database_dsn, ids)
    assert reason is None and columns is not None  # taken, not a silent fallback
    outbox, lag = columns
    assert outbox == in_sql[0]
    assert_same_facts(Facts(outbox=in_sql[0], lag=in_sql[1]), Facts(outbox=outbox, lag=lag))
    assert "kafka-publisher" in lag  # a third consumer's lag, under its name
    assert any(s.example_event for s in outbox.values())  # the stalled wallets' first event
    gaps = [s for s in outbox.values() if s.max_version - s.min_version + 1 != s.distinct_versions]
    assert gaps  # the dropped version

    # processed_at no longer of created_at's type: the lag is not plain microseconds, so SQL
    # reads it, and the facts are the reading before's
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE outbox_consumer_processing ALTER processed_at TYPE timestamp")
    reason, columns, _ = outbox_both_ways(database_dsn, ids)
    assert columns is None and "processed_at" in reason
    before, now = both_readings(database_dsn, record, history_in_segments(tmp_path))
    assert assert_same_facts(before, now) == PROVED


def test_the_columnar_outbox_reads_renamed_tables_and_columns(database_dsn: str) -> None:
    check_scale.generate(database_dsn, WALLETS, VERSIONS)
    corrupt(database_dsn, {k: WITH_CONSTRAINTS[k] for k in ("ledger-stall", "third-consumer")}, 0)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute('ALTER TABLE outbox RENAME TO "Events"')
        conn.execute('ALTER TABLE "Events" RENAME aggregate_id TO "walletId"')
        conn.execute("ALTER TABLE outbox_consumer_processing RENAME processed_at TO done_at")
    schema = Schema.with_overrides(
        "outbox=Events,outbox.aggregate_id=walletId,outbox_consumer_processing.processed_at=done_at"
    )
    ids = wallets_in_scope(check_scale.build_record(WALLETS, VERSIONS))
    reason, columns, in_sql = outbox_both_ways(database_dsn, ids, schema)
    assert reason is None and columns is not None
    assert columns[0] == in_sql[0] and any(s.example_event for s in columns[0].values())
    assert_same_facts(Facts(lag=in_sql[1]), Facts(lag=columns[1]))
    assert "kafka-publisher" in columns[1]


def test_the_columnar_join_finds_events_by_table_and_by_search_alike() -> None:
    rng = np.random.default_rng(11)
    dense, sparse = rng.permutation(np.arange(5, 505)), rng.choice(10**12, 500, replace=False)
    for ids, ways in ((dense, (True, False, None)), (sparse, (False, None))):
        wanted = np.concatenate([rng.choice(ids, 2000), rng.integers(-10, 10**12, 50)])
        index = {event_id: k for k, event_id in enumerate(ids.tolist())}
        expected = [index.get(event_id, -1) for event_id in wanted.tolist()]
        twice = np.concatenate([ids, ids[:1]])  # an outbox id held by two events
        for way in ways:  # a table indexed by id, a binary search, the function's own choice
            assert outbox_columns.event_index(ids, wanted, dense=way).tolist() == expected
            assert outbox_columns.event_index(twice, wanted, dense=way) is None
    run = np.array([30, 10, 20])
    assert columns.wallet_positions(run, np.array([20, 30, 30, 10])).tolist() == [3, 1, 1, 2]
    assert columns.wallet_positions(np.array([10, 20, 10]), np.array([20])) is None
    assert columns.wallet_positions(run, np.array([40])) is None


def test_an_infinite_timestamp_sends_the_outbox_back_to_sql() -> None:
    ids = np.array([1, 2, 3])
    events = outbox_columns.Events(ids, np.array([1, 1, 2]), np.array([0, 1, 0]), ids * 1000)
    for at in (ids * 2000, np.array([2000, -(2**63), 6000]), np.array([2000, 2**63 - 1, 6000])):
        rows = outbox_columns.Processing(ids, np.zeros(3, np.int64), at, [])
        found = outbox_columns.summarize(events, rows, ["a", "b"])
        finite = at.max() < 2**62 and at.min() > -(2**62)
        assert isinstance(found, str) != finite, at  # facts where finite, a reason where not
