"""The ConsistencyReport: a verdict, the root causes first (each with the violations and wallets it
explains and its smallest evidence), then the violations grouped by kind, each group with its
count and its first, worst and last example (after Jepsen's bank checker); written as JSON and
summed up in a few console lines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

VALID, INVALID, NOT_CHECKED = "valid", "invalid", "not checked"
MAX_KEPT_PER_KIND = 10_000

# kind -> what it means, for the report and the README
KINDS: dict[str, str] = {
    "missing_wallet": "the run created the wallet, but the write side has no row for it",
    "negative_balance": "a write-side or ledger balance below zero",
    "read_model_missing": "the read model has no row for a wallet of the write side",
    "read_model_mismatch": "read-model balance differs from the write-side balance",
    "ledger_balance_mismatch": "the last ledger balanceAfter differs from the write-side balance",
    "ledger_sum_mismatch": "the sum of signed ledger amounts differs from the write-side balance",
    "ledger_chain_broken": "an entry's balanceBefore is not the previous entry's balanceAfter (or the first is not 0)",
    "ledger_arithmetic": "an entry's balanceAfter is not balanceBefore plus or minus its amount",
    "duplicate_reference_id": "two ledger entries share a referenceId",
    "duplicate_ledger_entry": "one event has more than one ledger entry",
    "transfer_not_conserved": "a transfer's ledger legs do not net to zero in one debit and one credit",
    "outbox_missing_versions": "write-side versions without an outbox event",
    "outbox_extra_versions": "stream versions beyond what the run's acknowledged operations imply (or beyond the write side)",
    "ledger_snapshot_mismatch": "the ledger entry of an acknowledged event version has another balanceAfter than the one acknowledged, or there is none",
    "unprocessed_event": "an outbox event a consumer never processed",
    "event_processed_twice": "an outbox event a consumer processed more than once",
    "expected_balance": "the write-side balance differs from what the run's acknowledged operations imply",
    "expected_entries": "the ledger entry count differs from the run's acknowledged balance-changing operations",
    "idempotency": "a replayed Idempotency-Key had more than one effect",
    "read_model_never_showed": "GET /wallets/{id} did not show an acknowledged write within --visibility-timeout",
    "ledger_never_showed": "GET /ledger/wallet/{id} did not show an acknowledged write within --visibility-timeout",
    "conservation": "the run's total differs from initial balances plus credits minus debits",
}


@dataclass
class Violation:
    kind: str
    wallet_id: str | None
    expected: Any
    found: Any
    detail: str = ""
    query: str = ""  # SQL a user can paste to look at it
    magnitude: float = 0.0  # how far off, to pick the worst example
    causes: list[str] = field(default_factory=list)  # the root causes that explain it


@dataclass
class Cause:
    """One root cause: what it is, the wallets and violations it explains, and the smallest
    evidence that proves it."""

    key: str
    title: str  # as a person reads it, e.g. "replays applied twice"
    meaning: str = ""
    wallets: list[str] = field(default_factory=list)
    explains: dict[str, int] = field(default_factory=dict)  # violation kind -> count
    evidence: str = ""  # one wallet's facts that prove it
    detail: str = ""
    example_wallet: str = ""  # the wallet the evidence is about
    divergence_of: tuple[str, ...] = ()  # which first divergences show it: ledger, read_model

    @property
    def explained(self) -> int:
        return sum(self.explains.values())

    def line(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.explains.items())
        wallets = f"{len(self.wallets)} wallet{'s' if len(self.wallets) != 1 else ''}"
        return f"{self.title}: {wallets}; explains {kinds}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "meaning": self.meaning,
            "line": self.line(),
            "wallet_count": len(self.wallets),
            "wallets": self.wallets[:MAX_KEPT_PER_KIND],
            "explains": self.explains,
            "evidence": self.evidence,
            "detail": self.detail,
            "example_wallet": self.example_wallet,
        }


@dataclass
class ConsistencyReport:
    status: str  # valid / invalid / not checked
    run_id: str
    reason: str = ""  # why not checked
    target: str = ""  # the redacted DSN
    counts: dict[str, int] = field(default_factory=dict)
    violations: dict[str, list[Violation]] = field(default_factory=dict)
    causes: list[Cause] = field(default_factory=list)  # most explaining first
    # wallet -> where its ledger / read model first departs from what was acknowledged
    divergences: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why
    # checks not run because the database's own constraint proves them: check -> constraint
    proved_by_constraint: dict[str, str] = field(default_factory=dict)
    read_by: dict[str, str] = field(default_factory=dict)  # Facts.read_by: how each was read
    lag_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    settle: dict[str, Any] = field(default_factory=dict)
    unverified_wallets: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # --adopt-run: the population checked (adopted_from, first_run, wallets, source); empty
    # when the run created its wallets
    adoption: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)  # --nemesis: set by the front role

    @property
    def valid(self) -> bool | None:
        return None if self.status == NOT_CHECKED else self.status == VALID

    def violation_count(self) -> int:
        return sum(len(v) for v in self.violations.values())

    def unexplained(self) -> dict[str, int]:
        """Per kind, the violations no cause explains."""
        counts: dict[str, int] = {}
        for kind, items in sorted(self.violations.items()):
            alone = sum(1 for v in items if not v.causes)
            if alone:
                counts[kind] = alone
        return counts

    def groups(self) -> dict[str, dict[str, Any]]:
        """Per kind: count, first, worst, last."""
        out = {}
        for kind, items in sorted(self.violations.items()):
            if not items:
                continue
            worst = max(items, key=lambda v: v.magnitude)
            out[kind] = {
                "meaning": KINDS.get(kind, ""),
                "count": len(items),
                "first": _plain(asdict(items[0])),
                "worst": _plain(asdict(worst)),
                "last": _plain(asdict(items[-1])),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {
                "valid": self.valid,
                "status": self.status,
                "reason": self.reason,
                "run_id": self.run_id,
                "target": self.target,
                "seconds": round(self.seconds, 3),
                "causes": [cause.to_dict() for cause in self.causes],
                "unexplained": self.unexplained(),
                "counts": self.counts,
                "summary": self.groups(),
                "divergences": dict(list(self.divergences.items())[:MAX_KEPT_PER_KIND]),
                "skipped_checks": self.skipped,
                "proved_by_constraint": self.proved_by_constraint,
                "read_by": self.read_by,
                "projection_lag_ms": self.lag_ms,
                "settle": self.settle,
                "unverified_wallets": self.unverified_wallets,
                "adoption": self.adoption,
                "faults": self.faults,
                "violations": {
                    kind: [asdict(v) for v in items[:MAX_KEPT_PER_KIND]]
                    for kind, items in sorted(self.violations.items())
                    if items
                },
            }
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))

    def headline(self) -> str:
        if self.status == NOT_CHECKED:
            return f"consistency NOT CHECKED: {self.reason}"
        if self.status == VALID:
            skipped = f" ({len(self.skipped)} checks skipped)" if self.skipped else ""
            return (
                f"consistency VALID: {self.counts.get('wallets', 0)} wallets, no violation{skipped}"
            )
        kinds = ", ".join(
            f"{kind} {len(items)}" for kind, items in sorted(self.violations.items()) if items
        )
        return f"consistency INVALID: {self.violation_count()} violations ({kinds})"

    def divergence_of(self, cause: Cause) -> tuple[str, dict[str, Any]] | None:
        """The first divergence that shows a cause: its evidence's wallet's, else the first of
        its wallets that has one, only the parts (ledger, read model) the cause is about."""
        candidates = (
            [cause.example_wallet, *cause.wallets] if cause.example_wallet else cause.wallets
        )
        for wallet in candidates:
            parts = {
                part: found
                for part, found in self.divergences.get(wallet, {}).items()
                if part in cause.divergence_of
            }
            if parts:
                return wallet, parts
        return None

    def cause_lines(self, examples: bool = True) -> list[str]:
        """The causes, most explaining first, each with its evidence and one wallet's first
        divergence; then what no cause explains."""
        lines = []
        for cause in self.causes:
            lines.append(f"  cause: {cause.line()}")
            if examples and cause.evidence:
                lines.append(f"    e.g. {cause.evidence}")
            divergence = self.divergence_of(cause) if examples else None
            if divergence is not None:
                lines.append(f"    first divergence: {describe_divergence(*divergence)}")
        alone = self.unexplained()
        if self.causes and alone:
            kinds = ", ".join(f"{kind} {count}" for kind, count in alone.items())
            lines.append(f"  not explained by a cause: {kinds}")
        return lines

    def console_lines(self, report_path: Path | None = None, causes: bool = True) -> list[str]:
        """The headline, the causes (unless the verdict block already led with them), the
        figures, then the per-kind detail."""
        lines = [self.headline(), *(self.cause_lines() if causes else [])]
        if self.status != NOT_CHECKED:
            counts = self.counts
            lines.append(
                f"  checked {counts.get('wallets', 0)} wallets, {counts.get('ledger_entries', 0)} ledger entries,"
                f" {counts.get('outbox_events', 0)} outbox events"
                + (
                    f", {counts['acknowledged_snapshots']} acknowledged snapshots"
                    if counts.get("acknowledged_snapshots")
                    else ""
                )
                + f" in {self.seconds:.1f}s"
                + (f"; settled in {self.settle.get('waited_s', 0):.1f}s" if self.settle else "")
            )
        for consumer, lag in sorted(self.lag_ms.items()):
            lines.append(
                f"  projection lag {consumer}: p50 {lag['p50']:.0f} ms, p95 {lag['p95']:.0f} ms,"
                f" p99 {lag['p99']:.0f} ms, max {lag['max']:.0f} ms"
                + (
                    f" (percentiles within {lag['percentile_error']:.1%})"
                    if lag.get("percentile_error")
                    else ""
                )
            )
        for kind, group in self.groups().items():
            first = group["first"]
            lines.append(
                f"  {kind} x{group['count']}: e.g. {first['wallet_id'] or ''} expected {first['expected']}"
                f" found {first['found']} {first['detail']}".rstrip()
            )
        for check, why in sorted(self.skipped.items()):
            lines.append(f"  skipped {check}: {why}")
        if self.adoption:
            first = self.adoption.get("first_run", "")
            lines.append(
                f"  population adopted from run {self.adoption.get('adopted_from')}"
                + (
                    f" (created by run {first})"
                    if first != self.adoption.get("adopted_from")
                    else ""
                )
                + ": checked against what its wallets held when this run began"
            )
        for check, constraint in sorted(self.proved_by_constraint.items()):
            lines.append(f"  proved by constraint, not read: {check} ({constraint})")
        if self.unverified_wallets:
            lines.append(
                f"  {len(self.unverified_wallets)} wallets unverified against the client record"
                " (checked by the database's own invariants only)"
            )
        if report_path is not None:
            lines.append(f"  details: {report_path}")
        return lines


def describe_divergence(wallet: str, divergence: dict[str, Any]) -> str:
    """One line: where a wallet's ledger and read model first depart from what was acknowledged."""
    parts = []
    ledger = divergence.get("ledger")
    if ledger:
        text = f"ledger at version {ledger['version']}: {ledger['what']}"
        if ledger.get("acknowledged") is not None:
            text += (
                f" (acknowledged {ledger['acknowledged']}, ledger {ledger.get('ledger') or 'none'})"
            )
        parts.append(text)
    read = divergence.get("read_model")
    if read:
        parts.append(f"read model at version {read['version']}: {read['what']}")
    return f"{wallet}: " + "; ".join(parts)


def _plain(value: Any) -> Any:
    """JSON-ready: Decimals as strings that keep their digits, tuples as lists."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 3)
    return value
