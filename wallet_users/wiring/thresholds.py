"""The original scripts' success criteria as thresholds: wallet creation above 95 %, operations
above 90 % (refusals for insufficient funds counted apart, not as errors), and an optional p95
latency bound. A pure function of the run record and a few figures."""

from __future__ import annotations

from dataclasses import dataclass

from ..load.arrival import ArrivalCounts
from ..record import INDETERMINATE, OK, REJECTED, RunRecord
from .options import SuiteOptions


@dataclass(frozen=True)
class Threshold:
    name: str
    passed: bool
    line: str  # one line, said whatever the result


@dataclass(frozen=True)
class OperationCounts:
    ok: int
    refused_for_funds: int
    rejected: int  # other definite refusals: errors
    indeterminate: int

    @property
    def counted(self) -> int:
        return self.ok + self.rejected + self.indeterminate

    @property
    def success_percent(self) -> float:
        return 100.0 * self.ok / self.counted if self.counted else 100.0


def operation_counts(record: RunRecord) -> OperationCounts:
    refused = record.refused_for_funds()
    return OperationCounts(
        ok=record.operations[OK],
        refused_for_funds=refused,
        rejected=record.operations[REJECTED] - refused,
        indeterminate=record.operations[INDETERMINATE],
    )


def judge(
    record: RunRecord,
    options: SuiteOptions,
    p95_ms: float | None,
    arrival: ArrivalCounts | None = None,
) -> list[Threshold]:
    created = record.creation_counts()[OK]
    attempted = sum(record.creation_counts().values())
    create_pct = 100.0 * created / attempted if attempted else 0.0
    ops = operation_counts(record)
    results = [
        Threshold(
            "wallet creation",
            attempted > 0 and create_pct >= options.min_create_success,
            f"wallet creation {create_pct:.1f}% ({created}/{attempted})"
            f" {'>=' if create_pct >= options.min_create_success else '<'} {options.min_create_success:g}%",
        ),
        Threshold(
            "operation success",
            ops.success_percent >= options.min_operation_success,
            f"operation success {ops.success_percent:.1f}% ({ops.ok}/{ops.counted},"
            f" {ops.refused_for_funds} refused for funds apart)"
            f" {'>=' if ops.success_percent >= options.min_operation_success else '<'}"
            f" {options.min_operation_success:g}%",
        ),
    ]
    # client-side evidence, no database needed: must fail the run even when nothing is checked
    replays, mismatched = record.replay_counts()
    results.append(
        Threshold(
            "idempotent replays",
            mismatched == 0,
            f"idempotent replays {replays - mismatched}/{replays} answered as the first request",
        )
    )
    if options.max_p95_ms > 0:
        passed = p95_ms is not None and p95_ms <= options.max_p95_ms
        results.append(
            Threshold(
                "p95 latency",
                passed,
                f"p95 latency {p95_ms if p95_ms is not None else 'n/a'} ms"
                f" {'<=' if passed else '>'} {options.max_p95_ms:g} ms",
            )
        )
    if options.arrival_rate > 0 and options.max_dropped_percent is not None:
        counts = arrival or ArrivalCounts()
        passed = counts.dropped_percent <= options.max_dropped_percent
        results.append(
            Threshold(
                "dropped operations",
                passed,
                f"dropped operations {counts.dropped_percent:.1f}%"
                f" ({counts.dropped}/{counts.scheduled})"
                f" {'<=' if passed else '>'} {options.max_dropped_percent:g}%",
            )
        )
    return results
