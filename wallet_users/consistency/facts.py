"""What the consistency check reads from PostgreSQL, as plain data: per-wallet aggregates and
the few example rows the set-based queries return. The checker decides on these alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class WriteSide:
    balance: Decimal
    version: int | None


@dataclass
class LedgerSummary:
    entries: int
    signed_sum: Decimal
    last_after: Decimal | None
    first_before: Decimal | None
    lowest: Decimal | None
    chain_breaks: int = 0
    arithmetic_breaks: int = 0
    # the first chain break, for the report: entry id, its balanceBefore, the previous balanceAfter
    first_break: tuple[str, Decimal, Decimal] | None = None
    first_arithmetic: tuple[str, Decimal, Decimal, Decimal] | None = None
    # entries with no eventVersion sharing a createdAt: their order, so the chain, is unknown
    ambiguous_order: int = 0
    unversioned: int = 0  # entries with no metadata.eventVersion


@dataclass
class OutboxSummary:
    events: int
    min_version: int | None
    max_version: int | None
    distinct_versions: int
    # per consumer: events it never processed, events it processed more than once
    unprocessed: dict[str, int] = field(default_factory=dict)
    processed_twice: dict[str, int] = field(default_factory=dict)
    example_event: int | None = None


@dataclass
class SnapshotCheck:
    """One wallet's acknowledged snapshots against the ledger entry of each one's version."""

    checked: int
    mismatched: int
    # the first (lowest version) mismatch: version, acknowledged balance, the ledger's
    # balanceAfter at that version (None: no entry)
    first: tuple[int, Decimal, Decimal | None] | None = None


@dataclass(frozen=True)
class EventRow:
    """One outbox event of a wallet, and how many processing rows each consumer has for it."""

    outbox_id: int
    version: int | None
    event_type: str
    amount: Decimal | None  # payload.amount, for the balance-changing events
    processed: dict[str, int]  # consumer -> processing rows
    transfer_id: str | None = None  # metadata.transferId, for a transfer's legs


@dataclass(frozen=True)
class EntryRow:
    """One ledger entry of a wallet, in the ledger's order."""

    entry_id: str
    version: int | None  # metadata.eventVersion, where the projector keeps it
    signed: Decimal
    before: Decimal
    after: Decimal
    description: str | None
    transfer_id: str | None = None  # metadata.transferId


@dataclass
class WalletDetail:
    """Everything about one inconsistent wallet the causes and its first divergence are read
    from: its outbox events, its ledger entries and what the service acknowledged for it."""

    events: list[EventRow] = field(default_factory=list)
    entries: list[EntryRow] = field(default_factory=list)
    acknowledged: list = field(default_factory=list)  # record.history.Snapshot, version order


@dataclass
class Lag:
    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    # the percentiles' bound, relative to the exact value (0: exact); count and max are exact
    relative_error: float = 0.0


@dataclass
class Facts:
    """Everything read in one REPEATABLE READ snapshot. A None table means it was not read."""

    tables_missing: dict[str, str] = field(default_factory=dict)  # logical name -> reason
    write_side: dict[str, WriteSide] | None = None
    read_model: dict[str, Decimal] | None = None
    ledger: dict[str, LedgerSummary] | None = None
    outbox: dict[str, OutboxSummary] | None = None
    duplicate_references: list[tuple[str, int, str]] | None = None  # referenceId, copies, wallet
    duplicate_event_entries: list[tuple[str, str, int]] | None = None  # wallet, eventId, copies
    transfer_imbalances: list[tuple[str, Decimal, int, str]] | None = None  # id, net, legs, wallets
    lag: dict[str, Lag] | None = None
    checkpoints: dict[str, int | None] | None = None  # consumer -> last_processed_id
    # per wallet: acknowledged snapshots against the ledger (None: not checked, see why)
    snapshots: dict[str, SnapshotCheck] | None = None
    snapshots_skipped: str = ""  # why the snapshots were not checked, if they were not
    # read for the inconsistent wallets only, in the same snapshot (see checker.needs_detail)
    details: dict[str, WalletDetail] = field(default_factory=dict)
    details_left_out: int = 0  # inconsistent wallets beyond the detail cap
    # checks the database's own constraints prove, so not run: check -> the constraint
    proved_by_constraint: dict[str, str] = field(default_factory=dict)
    # the database's transaction snapshot the facts were read in (txid_current_snapshot), and
    # time.monotonic() just after it was taken: see run_check's drain
    snapshot: str | None = None
    snapshot_at: float = 0.0
    # how a group of facts was read, where there is more than one way: group -> how (the
    # ledger: "columns", or the columns with some wallets through the SQL pass, or the SQL pass)
    read_by: dict[str, str] = field(default_factory=dict)
