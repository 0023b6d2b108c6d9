"""The consistency checker: a pure function of (the run record, the facts read from PostgreSQL)
to a ConsistencyReport. Nothing here talks to the system under test.

Per wallet the run touched: write side = read model = last ledger balanceAfter = sum of signed
ledger amounts = what the run's acknowledged operations imply (a range where some operations were
indeterminate); the ledger chain is unbroken; nothing is negative; every outbox event was
processed exactly once by each consumer. Per run: money is conserved, replays had one effect, no
referenceId or event is in the ledger twice.
"""

from __future__ import annotations

from decimal import Decimal

from ..money import money
from ..record import INDETERMINATE, KINDS, OK, RunRecord
from .causes import attribute_causes, first_divergences
from .facts import Facts, LedgerSummary, SnapshotCheck
from .report import INVALID, VALID, ConsistencyReport, Violation
from .schema import Schema

ZERO = Decimal(0)


def check_consistency(
    record: RunRecord,
    facts: Facts,
    schema: Schema | None = None,
    target: str = "",
    *,
    found: list[Violation] | None = None,
    wallets: list[str] | None = None,
) -> ConsistencyReport:
    """`found`: find_violations of the same record and facts, when the caller has them already
    (run_check does, from choosing the wallets to read in detail): not found twice; `wallets`:
    wallets_in_scope(record), likewise."""
    schema = schema or Schema()
    report = ConsistencyReport(status=VALID, run_id=record.run_id, target=target)
    wallets = wallets_in_scope(record) if wallets is None else wallets
    report.unverified_wallets = sorted(record.unverified & set(wallets))
    _note_skipped(report, facts)
    if found is None:
        found = find_violations(record, facts, schema, wallets)
    for violation in found:
        report.violations.setdefault(violation.kind, []).append(violation)
    report.causes = attribute_causes(record, facts, found)
    report.divergences = first_divergences(record, facts, found)
    report.counts = _counts(wallets, facts)
    report.lag_ms = {
        consumer: {
            "events": lag.events,
            "p50": lag.p50_ms,
            "p95": lag.p95_ms,
            "p99": lag.p99_ms,
            "max": lag.max_ms,
            # the percentiles' relative bound, where they come from a histogram
            **({"percentile_error": lag.relative_error} if lag.relative_error else {}),
        }
        for consumer, lag in (facts.lag or {}).items()
    }
    if found:
        report.status = INVALID
    return report


def needs_detail(record: RunRecord, facts: Facts) -> list[str]:
    """The wallets whose rows the causes and first divergences need: every wallet a violation
    names, in id order. Called by the SQL side between its two reads, so it reads no more than
    the broken wallets' rows."""
    return detail_wallets(record, facts, find_violations(record, facts, Schema()))


def detail_wallets(record: RunRecord, facts: Facts, found: list[Violation]) -> list[str]:
    """needs_detail's choice from violations already found."""
    named = {v.wallet_id for v in found if v.wallet_id}
    for _, _, _, wallet_ids in facts.transfer_imbalances or []:
        named.update(wallet_ids.split(" "))
    return sorted(named & set(record.wallets))


def find_violations(
    record: RunRecord,
    facts: Facts,
    schema: Schema,
    wallets: list[str] | None = None,
    *,
    shortcut: bool = True,
) -> list[Violation]:
    """Every violation of the run, per wallet in id order, then the run-wide ones. `shortcut`:
    wallets plainly_consistent vouches for are not taken through each check (the same result,
    faster when nearly every wallet is consistent)."""
    found: list[Violation] = []
    wallets = wallets_in_scope(record) if wallets is None else wallets
    tallies = record.wallets
    expected = record.expectations_of(wallets) if shortcut else [None] * len(wallets)
    for wallet_id, expectations in zip(wallets, expected, strict=True):
        write = facts.write_side.get(wallet_id) if facts.write_side is not None else None
        if shortcut and plainly_consistent(record, facts, wallet_id, write, expectations):
            continue
        tally = tallies[wallet_id]
        if facts.write_side is not None and write is None:
            if tally.created == OK:
                # worst is the wallet that took the most money with it
                lost = max(abs(bound) for bound in tally.expected_balance())
                found.append(
                    _v("missing_wallet", wallet_id, "a row", "none", schema, "wallets", lost)
                )
            continue  # an indeterminate creation that did not happen: nothing to check
        balance = write.balance if write else None
        if balance is not None and balance < 0:
            found.append(
                _v("negative_balance", wallet_id, ">= 0", balance, schema, "wallets", abs(balance))
            )
        if balance is not None and facts.read_model is not None:
            found += check_read_model(wallet_id, balance, facts.read_model.get(wallet_id), schema)
        if facts.ledger is not None:
            ledger = facts.ledger.get(wallet_id)
            found += check_ledger_chain(wallet_id, ledger, schema)
            if balance is not None:
                found += check_ledger_balance(wallet_id, balance, ledger, schema)
        if facts.snapshots is not None and wallet_id in facts.snapshots:
            found += check_snapshots(wallet_id, facts.snapshots[wallet_id], schema)
        if facts.outbox is not None and write is not None:
            found += check_outbox(wallet_id, write.version, facts.outbox.get(wallet_id), schema)
        found += check_visibility(wallet_id, tally, schema)
        if wallet_id in record.unverified:
            continue
        if balance is not None:
            low, high = tally.expected_balance()
            if not low <= balance <= high:
                expected = low if low == high else f"{low}..{high}"
                off = min(abs(balance - low), abs(balance - high))
                found.append(
                    _v("expected_balance", wallet_id, expected, balance, schema, "wallets", off)
                )
        fewest, most = tally.expected_entries()
        if facts.outbox is not None and write is not None and write.version is not None:
            found += check_versions_acknowledged(
                wallet_id, write.version, facts.outbox.get(wallet_id), fewest, most, schema
            )
        if facts.ledger is not None:
            entries = facts.ledger[wallet_id].entries if wallet_id in facts.ledger else 0
            if not fewest <= entries <= most:
                expected = fewest if fewest == most else f"{fewest}..{most}"
                off = min(abs(entries - fewest), abs(entries - most))
                found.append(
                    _v(
                        "expected_entries",
                        wallet_id,
                        expected,
                        entries,
                        schema,
                        "ledger_entries",
                        off,
                    )
                )
        if tally.replay_mismatches:
            found.append(
                _v(
                    "idempotency",
                    wallet_id,
                    "replays answered as the first request",
                    f"{tally.replay_mismatches} of {tally.replays} answered differently",
                    schema,
                    "ledger_entries",
                    tally.replay_mismatches,
                    f"e.g. {tally.replay_difference}" if tally.replay_difference else "",
                )
            )

    found += check_duplicates(facts, schema)
    found += check_conservation(record, wallets, facts, schema)
    return found


def plainly_consistent(
    record: RunRecord, facts: Facts, wallet_id: str, write, expectations: tuple
) -> bool:
    """True only where each per-wallet check of find_violations would find nothing: every table
    read, every figure equal to the write side's balance and inside what the run expects. False
    is no verdict: the wallet then goes through the checks themselves. `expectations`: the
    wallet's entry in record.expectations_of."""
    if write is None or write.version is None or write.balance < 0:
        return False
    low, high, fewest, most, matched = expectations
    if not matched or wallet_id in record.unverified:
        return False
    balance = write.balance
    if facts.read_model is not None and facts.read_model.get(wallet_id) != balance:
        return False
    if facts.ledger is not None:
        ledger = facts.ledger.get(wallet_id)
        if (
            ledger is None
            or ledger.ambiguous_order
            or ledger.chain_breaks
            or ledger.arithmetic_breaks
            or ledger.first_before != 0
            or ledger.lowest is None
            or ledger.lowest < 0
            or ledger.last_after != balance
            or ledger.signed_sum != balance
            or not fewest <= ledger.entries <= most
        ):
            return False
    if facts.snapshots is not None:
        snapshots = facts.snapshots.get(wallet_id)
        if snapshots is not None and snapshots.mismatched:
            return False
    if facts.outbox is not None:
        outbox = facts.outbox.get(wallet_id)
        if (
            outbox is None
            or outbox.max_version is None
            or outbox.max_version > write.version
            or outbox.distinct_versions < write.version + 1
            or write.version > most
            or any(outbox.unprocessed.values())
            or any(outbox.processed_twice.values())
        ):
            return False
    return low <= balance <= high


def wallets_in_scope(record: RunRecord) -> list[str]:
    """The run's wallets whose creation may have happened (ok or indeterminate), in id order."""
    return sorted(w for w, t in record.wallets.items() if t.created in (OK, INDETERMINATE))


def check_read_model(
    wallet_id: str, balance: Decimal, read: Decimal | None, schema: Schema
) -> list[Violation]:
    if read is None:
        return [
            _v(
                "read_model_missing",
                wallet_id,
                balance,
                "no row",
                schema,
                "wallets_read_model",
                abs(balance),
            )
        ]
    if read != balance:
        return [
            _v(
                "read_model_mismatch",
                wallet_id,
                balance,
                read,
                schema,
                "wallets_read_model",
                abs(read - balance),
            )
        ]
    return []


def check_ledger_chain(
    wallet_id: str, ledger: LedgerSummary | None, schema: Schema
) -> list[Violation]:
    """balanceBefore follows the previous balanceAfter, the first starts at 0, the arithmetic
    holds, and no balance in the ledger is negative."""
    if ledger is None:
        return []
    found = []
    ordered = not ledger.ambiguous_order  # with ties the first entry and the chain are guesses
    if ordered and ledger.first_before is not None and ledger.first_before != 0:
        found.append(
            _v(
                "ledger_chain_broken",
                wallet_id,
                "first balanceBefore 0",
                ledger.first_before,
                schema,
                "ledger_entries",
                abs(ledger.first_before),
            )
        )
    if ordered and ledger.chain_breaks:
        entry, before, previous = ledger.first_break
        found.append(
            _v(
                "ledger_chain_broken",
                wallet_id,
                f"balanceBefore {previous}",
                f"balanceBefore {before}",
                schema,
                "ledger_entries",
                abs(before - previous),
                f"{ledger.chain_breaks} breaks, first at entry {entry}",
            )
        )
    if ledger.arithmetic_breaks:
        entry, before, signed, after = ledger.first_arithmetic
        found.append(
            _v(
                "ledger_arithmetic",
                wallet_id,
                f"balanceAfter {before + signed}",
                f"balanceAfter {after}",
                schema,
                "ledger_entries",
                abs(after - before - signed),
                f"{ledger.arithmetic_breaks} entries, first {entry}",
            )
        )
    if ledger.lowest is not None and ledger.lowest < 0:
        found.append(
            _v(
                "negative_balance",
                wallet_id,
                ">= 0",
                ledger.lowest,
                schema,
                "ledger_entries",
                abs(ledger.lowest),
                "in the ledger",
            )
        )
    return found


def check_ledger_balance(
    wallet_id: str, balance: Decimal, ledger: LedgerSummary | None, schema: Schema
) -> list[Violation]:
    last = ledger.last_after if ledger and ledger.last_after is not None else ZERO
    total = ledger.signed_sum if ledger else ZERO
    found = []
    if last != balance and not (ledger and ledger.ambiguous_order):  # the sum needs no order
        found.append(
            _v(
                "ledger_balance_mismatch",
                wallet_id,
                balance,
                last,
                schema,
                "ledger_entries",
                abs(last - balance),
                "last balanceAfter",
            )
        )
    if total != balance:
        found.append(
            _v(
                "ledger_sum_mismatch",
                wallet_id,
                balance,
                total,
                schema,
                "ledger_entries",
                abs(total - balance),
                "sum of signed amounts",
            )
        )
    return found


def check_outbox(wallet_id: str, version: int | None, outbox, schema: Schema) -> list[Violation]:
    """The outbox holds one event per write-side version 0..version: none missing, none beyond."""
    found = []
    if version is not None:
        have = outbox.distinct_versions if outbox else 0
        top = outbox.max_version if outbox is not None else None
        beyond = top is not None and top > version
        if not beyond and have < version + 1:
            found.append(
                _v(
                    "outbox_missing_versions",
                    wallet_id,
                    f"versions 0..{version}",
                    f"{have} versions",
                    schema,
                    "outbox",
                    version + 1 - have,
                    f"{version + 1 - have} write-side versions have no outbox event",
                )
            )
        if beyond:
            found.append(
                _v(
                    "outbox_extra_versions",
                    wallet_id,
                    f"versions 0..{version}",
                    f"versions up to {top}",
                    schema,
                    "outbox",
                    top - version,
                    "outbox events beyond the write side's version",
                )
            )
    if outbox is None:
        return found
    for consumer, missing in outbox.unprocessed.items():
        if missing:
            found.append(
                _v(
                    "unprocessed_event",
                    wallet_id,
                    f"{consumer} processed all",
                    f"{missing} unprocessed",
                    schema,
                    "outbox",
                    missing,
                    f"consumer {consumer}",
                )
            )
    for consumer, twice in outbox.processed_twice.items():
        if twice:
            found.append(
                _v(
                    "event_processed_twice",
                    wallet_id,
                    "once",
                    f"{twice} events more than once",
                    schema,
                    "outbox",
                    twice,
                    f"consumer {consumer}",
                )
            )
    return found


def check_versions_acknowledged(
    wallet_id: str, version: int, outbox, fewest: int, most: int, schema: Schema
) -> list[Violation]:
    """A stream holds versions 0..n for n balance-changing events (the initial balance one of
    them): more than the run's acknowledged operations imply is an event the run never asked
    for, e.g. a replay executed again."""
    top = max(version, outbox.max_version if outbox and outbox.max_version is not None else 0)
    if top <= most:
        return []
    expected = f"versions up to {most}" if fewest == most else f"versions up to {fewest}..{most}"
    return [
        _v(
            "outbox_extra_versions",
            wallet_id,
            expected,
            f"versions up to {top}",
            schema,
            "outbox",
            top - most,
            f"{top - most} more than the run's acknowledged operations imply",
        )
    ]


def check_snapshots(wallet_id: str, check: SnapshotCheck, schema: Schema) -> list[Violation]:
    """What the service acknowledged at a version is what the ledger entry of that version says."""
    if not check.mismatched or check.first is None:
        return []
    version, acknowledged, ledger = check.first
    return [
        _v(
            "ledger_snapshot_mismatch",
            wallet_id,
            f"balanceAfter {acknowledged} at version {version}",
            "no entry" if ledger is None else f"balanceAfter {ledger}",
            schema,
            "ledger_entries",
            check.mismatched,
            f"{check.mismatched} of {check.checked} acknowledged snapshots, first at version"
            f" {version}",
        )
    ]


def check_visibility(wallet_id: str, tally, schema: Schema) -> list[Violation]:
    """Read-your-writes, from the client's own polls: a write the service acknowledged that an
    endpoint never showed within --visibility-timeout."""
    found = []
    for endpoint, kind, table in (
        ("read model", "read_model_never_showed", "wallets_read_model"),
        ("ledger", "ledger_never_showed", "ledger_entries"),
    ):
        unseen = tally.reads_unseen.get(endpoint, 0)
        if unseen:
            found.append(
                _v(
                    kind,
                    wallet_id,
                    "every acknowledged write shown",
                    f"{unseen} of {tally.reads_checked.get(endpoint, 0)} never shown",
                    schema,
                    table,
                    unseen,
                    f"last answer: {tally.unseen_answer.get(endpoint, '')}",
                )
            )
    return found


def check_duplicates(facts: Facts, schema: Schema) -> list[Violation]:
    found = []
    for reference, copies, wallet_id in facts.duplicate_references or []:
        found.append(
            _v(
                "duplicate_reference_id",
                wallet_id,
                1,
                copies,
                schema,
                "ledger_entries",
                copies,
                f"referenceId {reference}",
            )
        )
    for wallet_id, event_id, copies in facts.duplicate_event_entries or []:
        found.append(
            _v(
                "duplicate_ledger_entry",
                wallet_id,
                1,
                copies,
                schema,
                "ledger_entries",
                copies,
                f"event {event_id}",
            )
        )
    for transfer_id, net, legs, wallet_ids in facts.transfer_imbalances or []:
        found.append(
            _v(
                "transfer_not_conserved",
                wallet_ids.split(" ")[0],
                "2 legs netting 0",
                f"{legs} legs netting {net}",
                schema,
                "ledger_entries",
                abs(net) + abs(legs - 2),
                f"transfer {transfer_id} between {wallet_ids}",
            )
        )
    return found


def check_conservation(
    record: RunRecord, wallets: list[str], facts: Facts, schema: Schema
) -> list[Violation]:
    """The run's total balance equals initial balances plus credits minus debits (transfers
    cancel out), within what indeterminate operations allow. Unverified wallets (a lost worker's
    shard) are left out: shards are closed under transfers, so the rest must still balance."""
    if facts.write_side is None:
        return []
    wallets = [w for w in wallets if w not in record.unverified]
    tallies, write_side = record.wallets, facts.write_side
    # an indeterminate creation that did not happen holds nothing
    counted = [w for w in wallets if w in write_side or tallies[w].created != INDETERMINATE]
    lows, highs = record.expected_cents_of(counted)
    low_cents, high_cents = sum(lows), sum(highs)
    low, high = money(low_cents), money(high_cents)
    total = sum((facts.write_side[w].balance for w in wallets if w in facts.write_side), ZERO)
    if low <= total <= high:
        return []
    expected = low if low == high else f"{low}..{high}"
    return [
        Violation(
            "conservation",
            None,
            expected,
            total,
            f"sum over {len(wallets)} wallets",
            f"SELECT sum(balance) FROM {_quoted(schema.physical('wallets'))} WHERE "
            + " OR ".join(f"id LIKE '{prefix}%'" for prefix in _run_prefixes(record))
            + ";",
            float(min(abs(total - low), abs(total - high))),
        )
    ]


def _counts(wallets: list[str], facts: Facts) -> dict[str, int]:
    counts = {
        "wallets": len(wallets),
        "ledger_entries": sum(s.entries for s in (facts.ledger or {}).values()),
        "outbox_events": sum(s.events for s in (facts.outbox or {}).values()),
    }
    if facts.snapshots:
        counts["acknowledged_snapshots"] = sum(c.checked for c in facts.snapshots.values())
    return counts


def _note_skipped(report: ConsistencyReport, facts: Facts) -> None:
    if facts.snapshots is None and facts.snapshots_skipped and facts.ledger is not None:
        report.skipped["acknowledged snapshots"] = facts.snapshots_skipped
    if facts.details_left_out:
        report.skipped["causes"] = (
            f"{facts.details_left_out} inconsistent wallets beyond the first"
            " were not read row by row: their violations may stay unexplained"
        )
    ambiguous = sum(1 for s in (facts.ledger or {}).values() if s.ambiguous_order)
    if ambiguous:
        report.skipped["ledger order"] = (
            f"{ambiguous} wallets have ledger entries with no eventVersion and the same createdAt:"
            " their chain and last balanceAfter were not checked (the sum was)"
        )
    needs = {
        "write side (balances, expected balances, conservation)": ["wallets"],
        "read model": ["wallets_read_model"],
        "ledger (chain, sums, duplicates, transfers)": ["ledger_entries"],
        "outbox processing and projection lag": ["outbox", "outbox_consumer_processing"],
        "projector checkpoints (skipped events told from a stall)": ["projector_checkpoints"],
    }
    for check, tables in needs.items():
        missing = [facts.tables_missing[t] for t in tables if t in facts.tables_missing]
        if missing:
            report.skipped[check] = "; ".join(missing)
    report.proved_by_constraint = dict(facts.proved_by_constraint)
    report.read_by = dict(facts.read_by)


def _quoted(dotted: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in dotted.split("."))


def _run_prefix(record: RunRecord) -> str:
    from ..record.ids import ID_PREFIX

    return f"{ID_PREFIX}{record.run_id}-"


def _run_prefixes(record: RunRecord) -> list[str]:
    """The run's own prefix, and its adopted wallets' (--adopt-run: ids of the run that made
    them, 'lt-<first run>-' before 'w000042')."""
    adopted = {w[:-7] for w, t in record.wallets.items() if t.base_version >= 0}
    return [_run_prefix(record), *sorted(adopted - {_run_prefix(record)})]


def paste_query(schema: Schema, table: str, wallet_id: str) -> str:
    """A query a user can paste into psql to look at one wallet's rows in one table."""
    literal = "'" + wallet_id.replace("'", "''") + "'"
    t = _quoted(schema.physical(table))
    cols = schema.columns[table]
    q = lambda c: _quoted(cols[c])  # noqa: E731
    if table == "ledger_entries":
        return (
            f"SELECT * FROM {t} WHERE {q('walletId')} = {literal}"
            f" ORDER BY ({q('metadata')} ->> 'eventVersion')::integer, {q('createdAt')};"
        )
    if table == "outbox":
        return (
            f"SELECT o.*, p.{_quoted(schema.columns['outbox_consumer_processing']['consumer_name'])}"
            f" FROM {t} AS o LEFT JOIN {_quoted(schema.physical('outbox_consumer_processing'))} AS p"
            f" ON p.{_quoted(schema.columns['outbox_consumer_processing']['outbox_event_id'])} = o.{q('id')}"
            f" WHERE o.{q('aggregate_id')} = {literal} ORDER BY o.{q('event_version')};"
        )
    return f"SELECT * FROM {t} WHERE {q('id')} = {literal};"


def _v(
    kind: str,
    wallet_id: str,
    expected,
    found,
    schema: Schema,
    table: str,
    magnitude=0,
    detail: str = "",
) -> Violation:
    return Violation(
        kind,
        wallet_id,
        expected,
        found,
        detail,
        paste_query(schema, table, wallet_id),
        float(magnitude),
    )


__all__ = ["KINDS", "check_consistency"]
