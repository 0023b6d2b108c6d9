"""Root causes and first divergences: which fault explains which violations, and where each
broken wallet's ledger or read model first departs from what the service acknowledged. A pure
function of the run record, the facts and the violations, as the checker is.

A cause is named only on direct evidence (a replay whose answer showed a new version, a
processed event without its ledger entry, an event below a projector's checkpoint that it never
processed...), and it explains a violation only where it accounts for it: amounts and counts must
add up where the facts give them, else the violation stays on its own. Jepsen's checkers name an
anomaly and show the smallest evidence that proves it; these do the same for money.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..record import RunRecord, WalletTally
from .facts import EntryRow, EventRow, Facts, WalletDetail
from .report import Cause, Violation
from .schema import CONSUMERS

ZERO = Decimal(0)
READ_MODEL, LEDGER = CONSUMERS
SIGNS = {"WalletCredited": Decimal(1), "WalletDebited": Decimal(-1)}
CREATED = "WalletCreated"
INITIAL = "initial balance"

# key -> what it means (the README's table is written from this)
CAUSES: dict[str, str] = {
    "replays_applied_twice": "a replayed Idempotency-Key was executed again instead of answered"
    " from storage (its answer showed a new version, or a refusal the first answer did not have)",
    "ledger_entries_missing": "ledger-projector counted events as processed without writing"
    " their ledger entries",
    "initial_balance_twice": "the ledger credits a wallet's initial balance twice (an entry for"
    " WalletCreated besides the 'Initial balance' WalletCredited)",
    "ledger_entries_duplicated": "ledger-projector wrote more than one entry for one event",
    "ledger_entries_unchained": "ledger entries whose balanceBefore is not the previous"
    " balanceAfter, or whose arithmetic does not hold",
    "events_skipped_by_projector": "events skipped by a projector: committed after a higher"
    " outbox id was processed (no processing row, below the consumer's checkpoint)",
    "projector_stalled": "a projector stopped or fell behind: events above its checkpoint not"
    " processed within --settle-timeout",
    "outbox_rows_missing": "commands committed their events and write-side update without the"
    " outbox rows, so no projector heard of them",
    "read_model_not_built": "read-model-projector processed a wallet's events but its read model"
    " has no row for it",
    "read_model_lost_updates": "read-model-projector processed every event of a wallet but its"
    " read-model balance is not the write side's",
    "balances_below_zero": "a balance below zero on the write side or in the ledger",
    "read_endpoint_stale": "GET /wallets/{id} did not show acknowledged writes that the read model"
    " holds",
    "ledger_endpoint_stale": "GET /ledger/wallet/{id} did not show acknowledged writes that the"
    " ledger holds",
}

LEDGER_CONTENT = (
    "ledger_entries_missing",
    "initial_balance_twice",
    "ledger_entries_duplicated",
    "outbox_rows_missing",
)


@dataclass
class Evidence:
    """What the facts show about one wallet, beyond its violations, for the causes."""

    wallet_id: str
    tally: WalletTally
    detail: WalletDetail | None
    versioned: bool = False  # the wallet's ledger entries carry event versions
    missing_entries: list[EventRow] = field(default_factory=list)  # processed, no entry
    creation_entries: list[EntryRow] = field(default_factory=list)  # entries for WalletCreated
    duplicate_entries: list[EntryRow] = field(default_factory=list)  # copies beyond the first
    behind: dict[str, list[EventRow]] = field(default_factory=dict)  # unprocessed, above cp
    skipped: dict[str, list[EventRow]] = field(default_factory=dict)  # unprocessed, below cp
    unprocessed_counts: dict[str, int] = field(default_factory=dict)  # from the aggregates
    outbox_missing: int = 0  # write-side versions with no outbox event
    missing_count_only: int = 0  # unversioned ledger: processed events beyond its entries

    @property
    def replayed_again(self) -> bool:
        return bool(self.tally.replays_applied_again or self.tally.replays_refused_again)

    def replay_effect(self) -> tuple[int, int, Decimal, Decimal]:
        """What replays executed again did to this wallet: versions (fewest, most) and money
        (lowest, highest); the replays left without an answer may or may not count."""
        t = self.tally
        return (
            t.replays_applied_again,
            t.replays_applied_again + t.replays_in_doubt,
            t.again_sum - t.replay_doubt_out,
            t.again_sum + t.replay_doubt_in,
        )

    def consumer_lost(self, consumer: str) -> set[str]:
        """The causes by which a consumer never applied some of this wallet's events."""
        causes = set()
        if self.behind.get(consumer):
            causes.add("projector_stalled")
        if self.skipped.get(consumer):
            causes.add("events_skipped_by_projector")
        if not causes and self.unprocessed_counts.get(consumer):
            causes.add("projector_stalled")  # no rows to tell a skip from a stall
        return causes

    def ledger_causes(self) -> set[str]:
        """What makes this wallet's ledger differ from its events, as found."""
        causes = self.consumer_lost(LEDGER)
        if self.missing_entries or self.missing_count_only:
            causes.add("ledger_entries_missing")
        if self.creation_entries:
            causes.add("initial_balance_twice")
        if self.duplicate_entries:
            causes.add("ledger_entries_duplicated")
        if self.outbox_missing:
            causes.add("outbox_rows_missing")
        return causes

    def read_model_causes(self) -> set[str]:
        causes = self.consumer_lost(READ_MODEL)
        if self.outbox_missing:
            causes.add("outbox_rows_missing")
        return causes

    def ledger_residual(self) -> tuple[Decimal, Decimal] | None:
        """The range of (ledger sum - write-side balance) the found causes account for; None
        when the amounts are not known (an unversioned ledger)."""
        if not self.versioned:
            return None
        lost = self.behind.get(LEDGER, []) + self.skipped.get(LEDGER, [])
        exact = (
            sum((e.signed for e in self.creation_entries), ZERO)
            + sum((e.signed for e in self.duplicate_entries), ZERO)
            - sum((_signed(e) for e in self.missing_entries), ZERO)
            - sum((_signed(e) for e in lost), ZERO)
        )
        if self.outbox_missing:
            return None  # the dropped events' amounts are nowhere in the database
        return exact, exact

    def entries_delta(self) -> tuple[int, int]:
        """How many more (or fewer) ledger entries than the acknowledged operations the found
        causes account for: replays applied again, extra entries, missing ones."""
        exact = (
            len(self.creation_entries)
            + len(self.duplicate_entries)
            - len(self.missing_entries)
            - self.missing_count_only
            - sum(1 for e in self.behind.get(LEDGER, []) if e.event_type in SIGNS)
            - sum(1 for e in self.skipped.get(LEDGER, []) if e.event_type in SIGNS)
        )
        if not self.detail and self.unprocessed_counts.get(LEDGER):
            exact -= self.unprocessed_counts[LEDGER]
        least, most, _, _ = self.replay_effect()
        return exact + least - self.outbox_missing, exact + most


def _signed(event: EventRow) -> Decimal:
    return SIGNS.get(event.event_type, ZERO) * (event.amount or ZERO)


def gather_evidence(record: RunRecord, facts: Facts, wallet_id: str) -> Evidence:
    tally = record.wallets[wallet_id]
    detail = facts.details.get(wallet_id)
    evidence = Evidence(wallet_id, tally, detail)
    write = (facts.write_side or {}).get(wallet_id)
    outbox = (facts.outbox or {}).get(wallet_id)
    if outbox is not None:
        evidence.unprocessed_counts = dict(outbox.unprocessed)
    if write is not None and write.version is not None and facts.outbox is not None:
        have = outbox.distinct_versions if outbox else 0
        if not (outbox and outbox.max_version is not None and outbox.max_version > write.version):
            evidence.outbox_missing = max(0, write.version + 1 - have)
    if detail is None:  # beyond the detail cap, or facts without rows: the aggregates only
        for wallet, _event, copies in facts.duplicate_event_entries or []:
            if wallet == wallet_id:
                evidence.duplicate_entries += [EntryRow("", None, ZERO, ZERO, ZERO, None)] * (
                    copies - 1
                )
        return evidence
    checkpoints = facts.checkpoints or {}
    for consumer in CONSUMERS:
        checkpoint = checkpoints.get(consumer)
        for event in detail.events:
            if event.processed.get(consumer, 0):
                continue
            if checkpoint is not None and event.outbox_id < checkpoint:
                evidence.skipped.setdefault(consumer, []).append(event)
            else:
                evidence.behind.setdefault(consumer, []).append(event)
    ledger = (facts.ledger or {}).get(wallet_id)
    evidence.versioned = bool(detail.entries) and all(e.version is not None for e in detail.entries)
    evidence.versioned |= not detail.entries and not (ledger and ledger.unversioned)
    moves = {e.version: e for e in detail.events if e.event_type in SIGNS}
    created = {e.version for e in detail.events if e.event_type == CREATED}
    if evidence.versioned:
        by_version: dict[int, list[EntryRow]] = defaultdict(list)
        for entry in detail.entries:
            by_version[entry.version].append(entry)
        for version, event in moves.items():
            if event.processed.get(LEDGER, 0) and not by_version.get(version):
                evidence.missing_entries.append(event)
        for version, entries in by_version.items():
            if version in created and version not in moves:
                evidence.creation_entries += [e for e in entries if e.signed > 0]
            elif len(entries) > 1:
                evidence.duplicate_entries += entries[1:]
        # an extra credit of the initial balance is the creation's, whatever its version says
        if (
            evidence.creation_entries
            and sum(e.signed for e in evidence.creation_entries) != tally.initial_balance
        ):
            evidence.creation_entries = []
    else:
        processed = sum(1 for e in moves.values() if e.processed.get(LEDGER, 0))
        initial = [e for e in detail.entries if (e.description or "").strip().lower() == INITIAL]
        if len(initial) > 1 and all(e.signed == tally.initial_balance for e in initial):
            evidence.creation_entries = initial[1:]
        if facts.duplicate_event_entries:
            for wallet, _event, copies in facts.duplicate_event_entries:
                if wallet == wallet_id:
                    evidence.duplicate_entries += [detail.entries[0]] * (copies - 1)
        own = len(detail.entries) - len(evidence.creation_entries) - len(evidence.duplicate_entries)
        evidence.missing_count_only = max(0, processed - own)
    return evidence


# --- which causes explain a violation ---------------------------------------------------------


def explain(violation: Violation, evidence: Evidence | None, run: RunEvidence) -> set[str]:
    """The causes that account for one violation (empty: it stays on its own)."""
    kind = violation.kind
    if kind == "conservation":
        return run.conservation_causes(violation)
    if evidence is None:
        return set()
    ev, tally = evidence, evidence.tally
    ledger_causes = ev.ledger_causes()
    if kind == "negative_balance":
        if violation.detail == "in the ledger" and not run.negative_write(ev.wallet_id):
            return ledger_causes - {"initial_balance_twice"} or {"balances_below_zero"}
        return {"balances_below_zero"}
    if kind == "idempotency":
        return {"replays_applied_twice"} if ev.replayed_again else set()
    if kind == "expected_balance":
        low, high = tally.expected_balance()
        _, _, least, most = ev.replay_effect()
        if run.replays_apply_again and low + least <= violation.found <= high + most:
            return {"replays_applied_twice"}
        return set()
    if kind == "outbox_extra_versions":
        if "beyond the write side" in violation.detail:
            return set()
        fewest, most = tally.expected_entries()
        top = int(str(violation.found).rsplit(" ", 1)[-1])
        least, utmost, _, _ = ev.replay_effect()
        if run.replays_apply_again and fewest + least <= top <= most + utmost:
            return {"replays_applied_twice"}
        return set()
    if kind == "expected_entries":
        low, high = ev.entries_delta()
        fewest, most = tally.expected_entries()
        if not fewest + low <= violation.found <= most + high:
            return set()
        causes = set(ledger_causes)
        if run.replays_apply_again and (tally.replays_applied_again or tally.replays_in_doubt):
            causes.add("replays_applied_twice")
        return causes
    if kind in ("ledger_sum_mismatch", "ledger_balance_mismatch"):
        if not ledger_causes:
            return set()
        residual = ev.ledger_residual()
        if residual is None or (
            violation.detail == "last balanceAfter" and run.chain_broken(ev.wallet_id)
        ):
            return ledger_causes  # amounts unknown, or a broken chain: by association
        actual = Decimal(str(violation.found)) - Decimal(str(violation.expected))
        return ledger_causes if residual[0] <= actual <= residual[1] else set()
    if kind == "ledger_snapshot_mismatch":
        return ledger_causes or (
            {"ledger_entries_unchained"} if run.chain_broken(ev.wallet_id) else set()
        )
    if kind == "ledger_chain_broken":
        if ev.duplicate_entries:
            return {"ledger_entries_duplicated"}
        if ev.missing_count_only or (ev.missing_entries and not ev.versioned):
            return {"ledger_entries_missing"}
        return {"ledger_entries_unchained"}
    if kind == "ledger_arithmetic":
        return {"ledger_entries_unchained"}
    if kind in ("duplicate_ledger_entry", "duplicate_reference_id"):
        return (
            {"ledger_entries_duplicated"}
            if ev.duplicate_entries or kind == "duplicate_ledger_entry"
            else set()
        )
    if kind == "transfer_not_conserved":
        transfer = violation.detail.removeprefix("transfer ").split(" between ", 1)[0]
        causes = set(run.transfer_legs.get(transfer, ()))
        if not causes:  # no rows to follow the transfer by: its legs' own wallets
            for wallet in violation.detail.rsplit(" between ", 1)[-1].split(" "):
                if wallet in run.evidence:
                    causes |= run.evidence[wallet].ledger_causes() - {"initial_balance_twice"}
        return causes
    if kind == "outbox_missing_versions":
        return {"outbox_rows_missing"}
    if kind == "unprocessed_event":
        consumer = violation.detail.removeprefix("consumer ")
        return ev.consumer_lost(consumer)
    if kind == "read_model_missing":
        return ev.read_model_causes() or {"read_model_not_built"}
    if kind == "read_model_mismatch":
        return ev.read_model_causes() or {"read_model_lost_updates"}
    if kind == "read_model_never_showed":
        causes = ev.read_model_causes() | run.read_model_state(ev.wallet_id)
        return causes or {"read_endpoint_stale"}
    if kind == "ledger_never_showed":
        return ledger_causes or {"ledger_endpoint_stale"}
    return set()


@dataclass
class RunEvidence:
    """What the causes need beyond one wallet: every wallet's evidence, the run's totals."""

    record: RunRecord
    facts: Facts
    evidence: dict[str, Evidence]
    by_kind: dict[str, set[str]]  # violation kind -> wallets it names
    # transfer id -> the causes by which one of its legs has no (or a second) ledger entry
    transfer_legs: dict[str, set[str]] = field(default_factory=dict)
    replays_apply_again: bool = False  # the client saw a replay executed a second time

    def __post_init__(self) -> None:
        self.replays_apply_again = any(
            t.replays_applied_again or t.replays_refused_again for t in self.record.wallets.values()
        )
        for e in self.evidence.values():
            for cause, rows in (
                ("ledger_entries_missing", e.missing_entries),
                ("projector_stalled", e.behind.get(LEDGER, [])),
                ("events_skipped_by_projector", e.skipped.get(LEDGER, [])),
                ("ledger_entries_duplicated", e.duplicate_entries),
            ):
                for row in rows:
                    if row.transfer_id:
                        self.transfer_legs.setdefault(row.transfer_id, set()).add(cause)

    def negative_write(self, wallet_id: str) -> bool:
        write = (self.facts.write_side or {}).get(wallet_id)
        return write is not None and write.balance < 0

    def chain_broken(self, wallet_id: str) -> bool:
        return wallet_id in self.by_kind.get("ledger_chain_broken", set())

    def read_model_state(self, wallet_id: str) -> set[str]:
        """The read-model table's own cause for a wallet, if its row is missing or off."""
        if wallet_id in self.by_kind.get("read_model_missing", set()):
            return {"read_model_not_built"}
        if wallet_id in self.by_kind.get("read_model_mismatch", set()):
            return {"read_model_lost_updates"}
        return set()

    def conservation_causes(self, violation: Violation) -> set[str]:
        """The run's total off by what replays applied again moved (credits and debits: a
        replayed transfer moves money between two of the run's wallets)."""
        if not self.replays_apply_again:
            return set()
        verified = [t for w, t in self.record.wallets.items() if w not in self.record.unverified]
        least = sum((t.again_sum - t.replay_doubt_out for t in verified), ZERO)
        most = sum((t.again_sum + t.replay_doubt_in for t in verified), ZERO)
        low, _, high = str(violation.expected).partition("..")
        low, high = Decimal(low), Decimal(high or low)
        return {"replays_applied_twice"} if low + least <= violation.found <= high + most else set()


def _stalls_take_their_late_commits(evidence: dict[str, Evidence]) -> None:
    """A consumer that stopped (events above its checkpoint never processed) also left behind
    the events committed late below its checkpoint, which a live one would have taken in its
    next batch: those are its stall's. Only a consumer that is caught up above its checkpoint
    and still misses events below it has skipped them for good."""
    stopped = {c for e in evidence.values() for c, rows in e.behind.items() if rows}
    for e in evidence.values():
        for consumer in stopped & set(e.skipped):
            e.behind.setdefault(consumer, []).extend(e.skipped.pop(consumer))


def attribute_causes(record: RunRecord, facts: Facts, violations: list[Violation]) -> list[Cause]:
    """Each violation's causes (set on it), and the causes, ordered by how much they explain."""
    if not violations:
        return []  # nothing to explain: not even the run-wide evidence, a pass over every wallet
    by_kind: dict[str, set[str]] = defaultdict(set)
    for violation in violations:
        if violation.wallet_id:
            by_kind[violation.kind].add(violation.wallet_id)
    named = {v.wallet_id for v in violations if v.wallet_id and v.wallet_id in record.wallets}
    for violation in violations:
        if violation.kind == "transfer_not_conserved":
            named.update(
                w
                for w in violation.detail.rsplit(" between ", 1)[-1].split(" ")
                if w in record.wallets
            )
    evidence = {w: gather_evidence(record, facts, w) for w in sorted(named)}
    _stalls_take_their_late_commits(evidence)
    run = RunEvidence(record, facts, evidence, by_kind)
    explained: dict[str, list[Violation]] = defaultdict(list)
    for violation in violations:
        causes = explain(violation, evidence.get(violation.wallet_id or ""), run)
        violation.causes = sorted(causes)
        for cause in causes:
            explained[cause].append(violation)
    causes = [_cause(key, items, run) for key, items in explained.items()]
    causes.sort(key=lambda c: (-sum(c.explains.values()), -len(c.wallets), c.key))
    return causes


def _cause(key: str, violations: list[Violation], run: RunEvidence) -> Cause:
    # a transfer's imbalance is named after the leg that is there, not the one the cause took
    own = {v.wallet_id for v in violations if v.wallet_id and v.kind != "transfer_not_conserved"}
    wallets = sorted(own or {v.wallet_id for v in violations if v.wallet_id})
    explains: dict[str, int] = defaultdict(int)
    for violation in violations:
        explains[violation.kind] += 1
    cause = Cause(
        key=key,
        title=key.replace("_", " "),
        meaning=CAUSES.get(key, ""),
        wallets=wallets,
        explains=dict(sorted(explains.items(), key=lambda item: (-item[1], item[0]))),
        divergence_of=DIVERGENCE_OF.get(key, ()),
    )
    _describe(cause, violations, run)
    cause.example_wallet = next((w for w in wallets if cause.evidence.startswith(f"{w}:")), "")
    return cause


# which first divergence shows a cause: the ledger's, the read model's, or none (replays applied
# twice agree with the ledger: the service acknowledged both applications)
DIVERGENCE_OF: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "ledger_entries_missing",
            "initial_balance_twice",
            "ledger_entries_duplicated",
            "ledger_entries_unchained",
            "ledger_endpoint_stale",
        ),
        ("ledger",),
    ),
    **dict.fromkeys(
        ("read_model_not_built", "read_model_lost_updates", "read_endpoint_stale"),
        ("read_model",),
    ),
    **dict.fromkeys(
        ("projector_stalled", "events_skipped_by_projector", "outbox_rows_missing"),
        ("ledger", "read_model"),
    ),
}


def _describe(cause: Cause, violations: list[Violation], run: RunEvidence) -> None:
    """The cause's title as a person reads it, and its smallest evidence: one wallet's facts."""
    key, wallets, ev = cause.key, cause.wallets, run.evidence
    first = ev.get(wallets[0]) if wallets else None
    if key == "replays_applied_twice":
        tallies = run.record.wallets
        again = sum(t.replays_applied_again for t in tallies.values())
        refused = sum(t.replays_refused_again for t in tallies.values())
        cause.title = "replays applied twice"
        example = next(
            (
                (w, t)
                for w, t in sorted(tallies.items(), key=lambda i: -i[1].replays_applied_again)
                if t.replay_difference and (t.replays_applied_again or t.replays_refused_again)
            ),
            None,
        )
        if example:
            cause.evidence = f"{example[0]}: a replayed Idempotency-Key was answered {example[1].replay_difference}"
        cause.detail = f"{again} second applications seen by the client" + (
            f", {refused} replays refused for funds on their second execution" if refused else ""
        )
    elif key == "ledger_entries_missing":
        cause.title = "ledger entries missing for processed events"
        for e in (ev[w] for w in wallets if w in ev):
            if e.missing_entries:
                event = e.missing_entries[0]
                cause.evidence = (
                    f"{e.wallet_id}: {event.event_type} {_money(_signed(event))} (version"
                    f" {event.version}, outbox id {event.outbox_id}) processed by {LEDGER},"
                    " no ledger entry"
                )
                break
            if e.missing_count_only:
                cause.evidence = (
                    f"{e.wallet_id}: {e.missing_count_only} more processed balance-changing events"
                    " than ledger entries"
                )
                break
        total = sum(len(e.missing_entries) + e.missing_count_only for e in ev.values())
        cause.detail = f"{total} entries missing"
    elif key == "initial_balance_twice":
        cause.title = "initial balance twice in the ledger"
        if first and first.creation_entries:
            entry = first.creation_entries[0]
            cause.evidence = (
                f"{first.wallet_id}: initial balance {first.tally.initial_balance}, and an extra"
                f" ledger credit of {entry.signed}"
                + (
                    f" for version {entry.version} (WalletCreated)"
                    if entry.version is not None
                    else ""
                )
            )
    elif key == "ledger_entries_duplicated":
        cause.title = "ledger entries written twice for one event"
        if first and first.duplicate_entries and first.duplicate_entries[0].entry_id:
            entry = first.duplicate_entries[0]
            cause.evidence = (
                f"{first.wallet_id}: a second entry {entry.entry_id} for version {entry.version}"
            )
    elif key == "ledger_entries_unchained":
        cause.title = "ledger entries that do not chain"
        example = next(
            (v for v in violations if v.kind in ("ledger_chain_broken", "ledger_arithmetic")), None
        )
        if example:
            cause.evidence = f"{example.wallet_id}: expected {example.expected}, found {example.found} {example.detail}".rstrip()
    elif key in ("events_skipped_by_projector", "projector_stalled"):
        attribute = "skipped" if key == "events_skipped_by_projector" else "behind"
        counts: dict[str, int] = defaultdict(int)
        example = None
        for e in ev.values():
            for consumer, rows in getattr(e, attribute).items():
                counts[consumer] += len(rows)
                if example is None and rows:
                    example = (e.wallet_id, consumer, rows[0])
            if key == "projector_stalled" and not e.detail:
                for consumer, count in e.unprocessed_counts.items():
                    counts[consumer] += count
        by_consumer = ", ".join(f"{c} {n}" for c, n in sorted(counts.items()) if n)
        checkpoints = run.facts.checkpoints or {}
        if key == "events_skipped_by_projector":
            cause.title = (
                "events skipped by a projector: committed after a higher outbox id was processed"
            )
            if example:
                wallet, consumer, row = example
                cause.evidence = (
                    f"{wallet}: {row.event_type} version {row.version} (outbox id {row.outbox_id})"
                    f" has no {consumer} processing row; its checkpoint is at outbox id"
                    f" {checkpoints.get(consumer)}"
                )
        else:
            cause.title = "a projector stopped or fell behind"
            if example:
                wallet, consumer, row = example
                cause.evidence = (
                    f"{consumer}: outbox id {row.outbox_id} ({wallet} version {row.version}) not"
                    f" processed; its checkpoint is at outbox id {checkpoints.get(consumer)}"
                )
        cause.detail = f"unprocessed events: {by_consumer}"
    elif key == "outbox_rows_missing":
        cause.title = "events committed without their outbox rows"
        if first:
            cause.evidence = f"{first.wallet_id}: {first.outbox_missing} write-side versions have no outbox event"
    elif key == "read_model_not_built":
        have = len(run.facts.write_side or {})
        cause.title = f"read model not built for {len(wallets)} of {have} wallets"
        if first and first.detail:
            created = next((e for e in first.detail.events if e.event_type == CREATED), None)
            if created:
                cause.evidence = (
                    f"{first.wallet_id}: WalletCreated (outbox id {created.outbox_id}) processed by"
                    f" {READ_MODEL}, no row in wallets_read_model"
                )
    elif key == "read_model_lost_updates":
        cause.title = "read model lost updates"
        example = next((v for v in violations if v.kind == "read_model_mismatch"), None)
        if example:
            cause.evidence = (
                f"{example.wallet_id}: every event processed by {READ_MODEL}; write side"
                f" {example.expected}, read model {example.found}"
            )
    elif key == "balances_below_zero":
        cause.title = "negative balances"
        example = max(violations, key=lambda v: v.magnitude, default=None)
        if example:
            where = "in the ledger" if example.detail == "in the ledger" else "on the write side"
            cause.evidence = f"{example.wallet_id}: {example.found} {where}"
    elif key in ("read_endpoint_stale", "ledger_endpoint_stale"):
        endpoint = "read model" if key == "read_endpoint_stale" else "ledger"
        path = "GET /wallets/{id}" if endpoint == "read model" else "GET /ledger/wallet/{id}"
        checked = sum(run.record.wallets[w].reads_checked.get(endpoint, 0) for w in wallets)
        unseen = sum(run.record.wallets[w].reads_unseen.get(endpoint, 0) for w in wallets)
        answers = sorted(
            {run.record.wallets[w].unseen_answer.get(endpoint, "") for w in wallets} - {""}
        )
        cause.title = (
            f"{path} never showed {unseen} of {checked} acknowledged writes"
            f" (last answer {', '.join(answers)})"
        )
        if wallets:
            cause.evidence = (
                f"{wallets[0]}: the {endpoint} table holds the write, the endpoint did not show it"
            )


def _money(value: Decimal) -> str:
    return f"{'+' if value > 0 else ''}{value}"


# --- first divergences ---------------------------------------------------------------------------


def first_divergences(
    record: RunRecord, facts: Facts, violations: list[Violation]
) -> dict[str, dict[str, Any]]:
    """For each inconsistent wallet read row by row: the first event version where its ledger
    departs from what the service acknowledged (or from its events), and where its read model
    stopped following the acknowledged balances."""
    named = sorted({v.wallet_id for v in violations if v.wallet_id in facts.details})
    found = {}
    for wallet in named:
        detail = facts.details[wallet]
        divergence = {}
        ledger = _ledger_divergence(detail)
        if ledger is not None:
            divergence["ledger"] = ledger
        read = _read_model_divergence(wallet, detail, facts)
        if read is not None:
            divergence["read_model"] = read
        if divergence:
            found[wallet] = divergence
    return found


def _ledger_divergence(detail: WalletDetail) -> dict[str, Any] | None:
    if not detail.entries and not detail.events:
        return None
    if detail.entries and any(e.version is None for e in detail.entries):
        return None  # no event versions: nothing to line entries up with
    by_version: dict[int, list[EntryRow]] = defaultdict(list)
    for entry in detail.entries:
        by_version[entry.version].append(entry)
    candidates: list[tuple[int, dict[str, Any]]] = []
    for snapshot in detail.acknowledged:
        if snapshot.kind == "create" and snapshot.version == 0:
            continue
        entries = by_version.get(snapshot.version, [])
        if not entries:
            candidates.append(
                (
                    snapshot.version,
                    {
                        "acknowledged": str(snapshot.balance),
                        "ledger": None,
                        "what": "no ledger entry for an acknowledged version",
                    },
                )
            )
        elif any(e.after != snapshot.balance for e in entries):
            candidates.append(
                (
                    snapshot.version,
                    {
                        "acknowledged": str(snapshot.balance),
                        "ledger": str(entries[0].after),
                        "what": "balanceAfter differs from the acknowledged balance",
                    },
                )
            )
        if candidates:
            break
    moves = {e.version: e for e in detail.events if e.event_type in SIGNS}
    created = {e.version for e in detail.events if e.event_type == CREATED}
    for version, entries in sorted(by_version.items()):
        if version in created and version not in moves:
            candidates.append(
                (
                    version,
                    {"what": "a ledger entry for WalletCreated", "ledger": str(entries[0].after)},
                )
            )
            break
        if len(entries) > 1:
            candidates.append(
                (
                    version,
                    {
                        "what": f"{len(entries)} ledger entries for one event",
                        "ledger": str(entries[0].after),
                    },
                )
            )
            break
    for version, event in sorted(moves.items(), key=lambda item: (item[0] is None, item[0] or 0)):
        if version is not None and not by_version.get(version):
            what = (
                f"{event.event_type} processed by {LEDGER}, no ledger entry"
                if event.processed.get(LEDGER)
                else f"{event.event_type} not processed by {LEDGER}"
            )
            candidates.append((version, {"what": what, "ledger": None}))
            break
    if not candidates:
        return None
    version, what = min(candidates, key=lambda item: item[0])
    return {"version": version, **what}


def _read_model_divergence(
    wallet: str, detail: WalletDetail, facts: Facts
) -> dict[str, Any] | None:
    """Where the read model stopped following the acknowledged balances: the last version whose
    balance it shows (a stall), or the one update of exactly its shortfall (a lost update)."""
    if facts.read_model is None or facts.write_side is None or wallet not in facts.write_side:
        return None
    write = facts.write_side[wallet]
    shown = facts.read_model.get(wallet)
    if shown is None:
        return {"version": 0, "what": "no read-model row since the creation"}
    if shown == write.balance:
        return None
    acknowledged = detail.acknowledged
    matching = [s for s in acknowledged if s.balance == shown]
    if matching:
        last = matching[-1]
        later = [s for s in acknowledged if s.version > last.version]
        return {
            "version": later[0].version if later else last.version,
            "read_model": str(shown),
            "what": f"shows the balance acknowledged at version {last.version}"
            + (
                f"; the acknowledged writes from version {later[0].version} on are missing"
                if later
                else ""
            ),
        }
    short = write.balance - shown
    moves = _acknowledged_moves(acknowledged)
    exactly = [version for version, signed in moves.items() if signed == short]
    if len(exactly) == 1:
        return {
            "version": exactly[0],
            "read_model": str(shown),
            "what": f"off by {_money(-short)}: the update of version {exactly[0]} is missing",
        }
    return {
        "version": acknowledged[0].version if acknowledged else None,
        "read_model": str(shown),
        "what": f"a balance no acknowledged answer showed (off by {_money(-short)})",
    }


_MOVE_SIGNS = {"create": 1, "credit": 1, "transfer_in": 1, "debit": -1, "transfer_out": -1}


def _acknowledged_moves(acknowledged: list) -> dict[int, Decimal]:
    """Each acknowledged version's change of balance: from its kind and amount, or (a replay's)
    from the balance acknowledged at the version before it."""
    by_version = {s.version: s for s in acknowledged}
    moves = {}
    for snapshot in acknowledged:
        sign = _MOVE_SIGNS.get(snapshot.kind)
        if sign is not None:
            moves[snapshot.version] = sign * snapshot.amount
        elif snapshot.version - 1 in by_version:
            moves[snapshot.version] = snapshot.balance - by_version[snapshot.version - 1].balance
    return moves
