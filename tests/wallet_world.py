"""A wallet service's rows as plain data, for the checker's tests: a run played against a correct
service (events in the outbox with their processing rows, what the service acknowledged), the
projectors' tables derived from them as the reference's projectors build them, and switches that
break the service the way each fault switch and each behaviour of the real Wallex does. `facts()`
reads the rows as the SQL side does, aggregates and rows alike, so the facts agree with each
other as a database's would."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field, replace
from decimal import Decimal

from wallet_users.consistency.facts import (
    EntryRow,
    EventRow,
    Facts,
    Lag,
    LedgerSummary,
    OutboxSummary,
    SnapshotCheck,
    WalletDetail,
    WriteSide,
)
from wallet_users.consistency.schema import CONSUMERS
from wallet_users.record import OK, RunRecord
from wallet_users.record.history import Snapshot

READ_MODEL, LEDGER = CONSUMERS
PUBLISHER = "kafka-publisher"
SIGNS = {"WalletCredited": Decimal(1), "WalletDebited": Decimal(-1)}
ZERO = Decimal(0)


@dataclass
class Event:
    wallet: str
    version: int
    event_type: str
    amount: Decimal | None
    outbox_id: int | None  # None: committed without its outbox row
    processed: dict[str, int] = field(default_factory=dict)
    transfer: str | None = None


@dataclass
class World:
    run_id: str = "run1"
    record: RunRecord = field(default_factory=lambda: RunRecord("run1"))
    events: dict[str, list[Event]] = field(default_factory=dict)
    acknowledged: dict[str, list[Snapshot]] = field(default_factory=dict)
    consumers: tuple[str, ...] = CONSUMERS
    # projector faults, by (wallet, version)
    ledger_skip: set[tuple[str, int]] = field(default_factory=set)
    ledger_duplicate: set[tuple[str, int]] = field(default_factory=set)
    ledger_wrong_before: set[tuple[str, int]] = field(default_factory=set)
    ledger_initial_twice: bool = False
    read_model_lost: set[tuple[str, int]] = field(default_factory=set)
    read_model_unbuilt: set[str] = field(default_factory=set)
    ledger_versions: bool = True  # the ledger keeps metadata.eventVersion (the real one does not)
    drop_outbox: bool = False  # the next command commits without its outbox rows
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _transfers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def wid(self, name: str) -> str:
        return f"lt-{self.run_id}-{name}"

    # --- the run ---------------------------------------------------------------------------

    def balance(self, wallet: str) -> Decimal:
        return sum(
            (SIGNS.get(e.event_type, ZERO) * (e.amount or ZERO) for e in self.events[wallet]), ZERO
        )

    def _append(self, wallet: str, event_type: str, amount, transfer=None) -> Event:
        version = len(self.events.setdefault(wallet, []))
        event = Event(
            wallet,
            version,
            event_type,
            Decimal(amount) if amount is not None else None,
            None if self.drop_outbox else next(self._ids),
            {c: 0 if self.drop_outbox else 1 for c in self.consumers},
            transfer,
        )
        self.events[wallet].append(event)
        return event

    def _ack(self, wallet: str, kind: str, amount) -> None:
        version = len(self.events[wallet]) - 1
        self.acknowledged.setdefault(wallet, []).append(
            Snapshot(version, self.balance(wallet), kind, Decimal(amount))
        )

    def create(self, name: str, initial: int = 100) -> str:
        wallet = self.wid(name)
        self.record.wallet_created(wallet, OK, Decimal(initial))
        self._append(wallet, "WalletCreated", None)
        if initial:
            self._append(wallet, "WalletCredited", initial)
        self._ack(wallet, "create", initial)
        self.drop_outbox = False
        return wallet

    def credit(self, wallet: str, amount: int, *, replay: str = "") -> World:
        return self._operation("credit", wallet, amount, None, replay)

    def debit(self, wallet: str, amount: int, *, replay: str = "") -> World:
        return self._operation("debit", wallet, amount, None, replay)

    def transfer(self, source: str, to: str, amount: int, *, replay: str = "") -> World:
        return self._operation("transfer", source, amount, to, replay)

    def _operation(self, kind, wallet, amount, to, replay: str) -> World:
        """One acknowledged operation; replay 'stored' (answered from storage), 'again' (executed
        a second time, as with keys ignored), 'cut short' (executed again, its answer never came)
        or 'refused' (executed again, refused for funds)."""
        self.record.operation(kind, OK, wallet, Decimal(amount), to_wallet_id=to)
        times = 2 if replay in ("again", "cut short") else 1
        for number in range(times):
            self._apply(kind, wallet, amount, to, "replay" if number else None)
        if replay == "stored":
            self.record.replay(wallet, True)
        elif replay == "again":
            legs = {"credit": [(wallet, amount)], "debit": [(wallet, -amount)]}.get(
                kind, [(wallet, -amount), (to, amount)]
            )
            version = len(self.events[wallet]) - 1
            self.record.replay(
                wallet,
                False,
                [(w, Decimal(a)) for w, a in legs],
                f"version {version - 1} -> {version}",
            )
        elif replay == "cut short":  # the replay was executed again, the stop cut its answer
            legs = {"credit": [(wallet, amount)], "debit": [(wallet, -amount)]}.get(
                kind, [(wallet, -amount), (to, amount)]
            )
            self.record.replay_sent([(w, Decimal(a)) for w, a in legs])
        elif replay == "refused":
            self.record.replay(wallet, False, difference="status 201 -> 400", refused_again=True)
        self.drop_outbox = False
        return self

    def _apply(self, kind, wallet, amount, to, ack_kind) -> None:
        if kind == "transfer":
            transfer = f"transfer-{next(self._transfers)}"
            self._append(wallet, "WalletDebited", amount, transfer)
            self._append(to, "WalletCredited", amount, transfer)
            self._ack(wallet, ack_kind or "transfer_out", amount)
            self._ack(to, ack_kind or "transfer_in", amount)
        else:
            self._append(wallet, "WalletCredited" if kind == "credit" else "WalletDebited", amount)
            self._ack(wallet, ack_kind or kind, amount)

    def read_your_writes(self, wallet: str, endpoint: str, writes: int, unseen: int, answer: str):
        for number in range(writes):
            self.record.read_checked(wallet, endpoint, number >= unseen, answer)
        return self

    # --- breaking the projection -------------------------------------------------------------

    def outbox_events(self) -> list[Event]:
        return sorted(
            (e for events in self.events.values() for e in events if e.outbox_id is not None),
            key=lambda e: e.outbox_id,
        )

    def stall(self, consumer: str, after: int) -> World:
        """The consumer processed the outbox up to id `after`, then stopped."""
        for event in self.outbox_events():
            if event.outbox_id > after:
                event.processed[consumer] = 0
        return self

    def skip(self, consumer: str, outbox_ids: set[int]) -> World:
        """The consumer never saw these events: committed after it had processed higher ids."""
        for event in self.outbox_events():
            if event.outbox_id in outbox_ids:
                event.processed[consumer] = 0
        return self

    def third_consumer(self) -> World:
        for event in self.outbox_events():
            event.processed[PUBLISHER] = 1
        return self

    # --- the tables, as the reference's projectors build them ------------------------------

    def ledger(self) -> dict[str, list[EntryRow]]:
        ledger = {}
        for wallet, events in self.events.items():
            head, rows = ZERO, []
            for event in events:
                if not event.processed.get(LEDGER):
                    continue
                key = (wallet, event.version)
                if event.event_type == "WalletCreated":
                    initial = self.record.wallets[wallet].initial_balance
                    if not (self.ledger_initial_twice and initial):
                        continue
                    signed = initial
                elif event.event_type in SIGNS:
                    if key in self.ledger_skip:
                        continue
                    signed = SIGNS[event.event_type] * event.amount
                else:
                    continue
                for copy in range(2 if key in self.ledger_duplicate else 1):
                    before, head = head, head + signed
                    written = before + 1 if key in self.ledger_wrong_before else before
                    rows.append(
                        EntryRow(
                            f"{wallet}:{event.version}:{copy}",
                            event.version,
                            signed,
                            written,
                            head,
                            "Initial balance" if event.version <= 1 and signed > 0 else None,
                        )
                    )
            transfers = {e.version: e.transfer for e in events}
            ledger[wallet] = [
                replace(
                    row,
                    transfer_id=transfers.get(row.version),
                    version=row.version if self.ledger_versions else None,
                )
                for row in rows
            ]
        return ledger

    def read_model(self) -> dict[str, Decimal]:
        rows: dict[str, Decimal] = {}
        for wallet, events in self.events.items():
            for event in events:
                if not event.processed.get(READ_MODEL):
                    continue
                if event.event_type == "WalletCreated" and wallet not in self.read_model_unbuilt:
                    rows[wallet] = ZERO
                elif (
                    event.event_type in SIGNS
                    and wallet in rows
                    and (wallet, event.version) not in self.read_model_lost
                ):
                    rows[wallet] += SIGNS[event.event_type] * event.amount
        return rows

    def checkpoints(self) -> dict[str, int | None]:
        """Each projector's last processed id: the highest it processed."""
        return {
            consumer: max(
                (e.outbox_id for e in self.outbox_events() if e.processed.get(consumer)),
                default=None,
            )
            for consumer in CONSUMERS
        }

    def facts(self) -> Facts:
        ledger = self.ledger()
        entries_by_transfer: dict[str, list[tuple[str, Decimal]]] = defaultdict(list)
        transfer_of = {
            (e.wallet, e.version): e.transfer
            for events in self.events.values()
            for e in events
            if e.transfer
        }
        facts = Facts(
            write_side={
                w: WriteSide(self.balance(w), len(ev) - 1) for w, ev in self.events.items()
            },
            read_model=self.read_model(),
            ledger={},
            outbox={},
            duplicate_references=[],
            duplicate_event_entries=[],
            transfer_imbalances=[],
            lag={consumer: Lag(3, 10.0, 20.0, 30.0, 40.0) for consumer in CONSUMERS},
            checkpoints=self.checkpoints(),
            snapshots={},
        )
        for wallet, rows in ledger.items():
            facts.details[wallet] = WalletDetail(
                events=[
                    EventRow(
                        e.outbox_id,
                        e.version,
                        e.event_type,
                        e.amount,
                        dict(e.processed),
                        e.transfer,
                    )
                    for e in self.events[wallet]
                    if e.outbox_id is not None
                ],
                entries=list(rows),
                acknowledged=list(self.acknowledged.get(wallet, [])),
            )
            if rows:
                facts.ledger[wallet] = _summary(rows)
            copies = defaultdict(int)
            for row in rows:
                copies[row.version] += 1
                if (wallet, row.version) in transfer_of:
                    entries_by_transfer[transfer_of[(wallet, row.version)]].append(
                        (wallet, row.signed)
                    )
            facts.duplicate_event_entries += [
                (wallet, f"{wallet}:{v}", n) for v, n in copies.items() if n > 1
            ]
            by_version = defaultdict(list)
            for row in rows:
                by_version[row.version].append(row.after)
            checked, bad, first = 0, 0, None
            for snapshot in self.acknowledged.get(wallet, []):
                if snapshot.kind == "create" and snapshot.version == 0:
                    continue
                checked += 1
                afters = by_version.get(snapshot.version, [])
                if not afters or any(a != snapshot.balance for a in afters):
                    bad += 1
                    if first is None or snapshot.version < first[0]:
                        first = (
                            snapshot.version,
                            snapshot.balance,
                            min(afters) if afters else None,
                        )
            if checked:
                facts.snapshots[wallet] = SnapshotCheck(checked, bad, first)
            events = [e for e in self.events[wallet] if e.outbox_id is not None]
            if events:
                versions = {e.version for e in events}
                facts.outbox[wallet] = OutboxSummary(
                    events=len(events),
                    min_version=min(versions),
                    max_version=max(versions),
                    distinct_versions=len(versions),
                    unprocessed={
                        c: sum(1 for e in events if not e.processed.get(c)) for c in CONSUMERS
                    },
                    processed_twice={
                        c: sum(1 for e in events if e.processed.get(c, 0) > 1) for c in CONSUMERS
                    },
                )
        if not self.ledger_versions:
            facts.snapshots = None
            facts.snapshots_skipped = "ledger entries carry no metadata.eventVersion"
            facts.duplicate_event_entries = []
            for summary in facts.ledger.values():
                summary.unversioned = summary.entries
        for transfer, legs in entries_by_transfer.items():
            net = sum((signed for _, signed in legs), ZERO)
            if net or len(legs) != 2:
                wallets = " ".join(sorted(w for w, _ in legs))
                facts.transfer_imbalances.append((transfer, net, len(legs), wallets))
        return facts


def _summary(rows: list[EntryRow]) -> LedgerSummary:
    chain = [
        (r, rows[i - 1].after) for i, r in enumerate(rows) if i and r.before != rows[i - 1].after
    ]
    arithmetic = [r for r in rows if r.after != r.before + r.signed]
    return LedgerSummary(
        entries=len(rows),
        signed_sum=sum((r.signed for r in rows), ZERO),
        last_after=rows[-1].after,
        first_before=rows[0].before,
        lowest=min(min(r.before, r.after) for r in rows),
        chain_breaks=len(chain),
        arithmetic_breaks=len(arithmetic),
        first_break=(chain[0][0].entry_id, chain[0][0].before, chain[0][1]) if chain else None,
        first_arithmetic=(
            arithmetic[0].entry_id,
            arithmetic[0].before,
            arithmetic[0].signed,
            arithmetic[0].after,
        )
        if arithmetic
        else None,
    )
