"""The original scripts' success criteria as thresholds: wallet creation above 95 %, operations
above 90 % (refusals for insufficient funds counted apart, not as errors), and an optional p95
latency bound; besides, a run must have loaded the service (no acknowledged operation is a
failure), and reads of acknowledged writes must show them (read-your-writes). A pure function of
the run record and a few figures."""

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


@dataclass(frozen=True)
class LoadFigures:
    """What the load phase did, for the no-load threshold: whether it began (seeding done) and
    how long it ran; the seeding's figures to say why it did not."""

    began: bool = True
    seconds: float = 0.0
    seeded: int = 0
    planned: int = 0
    seed_seconds: float = 0.0
    adopting: bool = False  # --adopt-run: the wallets were being read, not created


def load_threshold(record: RunRecord, load: LoadFigures) -> Threshold:
    """A load test that sent no load must not pass: no acknowledged operation fails the run,
    with the reason."""
    ops = operation_counts(record)
    sent = ops.counted + ops.refused_for_funds
    if ops.ok > 0:
        return Threshold(
            "load", True, f"load: {ops.ok} operations acknowledged in {load.seconds:.0f}s of load"
        )
    if not load.began and load.adopting:
        why = (
            f"the run stopped while adopting ({load.seeded}/{load.planned} wallets read in"
            f" {load.seed_seconds:.1f}s)"
        )
    elif not load.began:
        why = (
            f"the run stopped while seeding ({load.seeded}/{load.planned} wallets created in"
            f" {load.seed_seconds:.1f}s)"
        )
    elif sent == 0:
        why = f"none was sent in {load.seconds:.1f}s of load"
    else:
        why = (
            f"{sent} sent: {ops.refused_for_funds} refused for funds, {ops.rejected} rejected,"
            f" {ops.indeterminate} indeterminate"
        )
    return Threshold("load", False, f"load: no operation was acknowledged: {why}")


def visibility_thresholds(record: RunRecord, options: SuiteOptions) -> list[Threshold]:
    """Read-your-writes: each endpoint polled after acknowledged writes must have shown every one
    within --visibility-timeout (a 404 or 5xx, or an old balance, until then is a failure)."""
    results = []
    for endpoint in ("read model", "ledger"):
        checked, unseen = record.read_counts(endpoint)
        if not checked:
            continue
        answers = sorted(
            {
                t.unseen_answer[endpoint]
                for t in record.wallets.values()
                if endpoint in t.unseen_answer
            }
        )
        line = (
            f"{endpoint} showed {checked}/{checked} writes within {options.visibility_timeout:g}s"
            if not unseen
            else f"{endpoint} never showed {unseen} of {checked} writes within"
            f" {options.visibility_timeout:g}s (last answers: {', '.join(answers[:3])}"
            f"{', ...' if len(answers) > 3 else ''})"
        )
        results.append(Threshold(endpoint, not unseen, line))
    return results


def staleness_threshold(
    options: SuiteOptions, staleness_p95: dict[str, float | None]
) -> list[Threshold]:
    """--max-staleness-ms: the read-your-writes staleness p95 of each endpoint within the bound;
    no staleness measured at all is a failure (the bound was asked for)."""
    if options.max_staleness_ms is None:
        return []
    measured = {k: v for k, v in staleness_p95.items() if v is not None}
    bound = options.max_staleness_ms
    if not measured:
        return [
            Threshold(
                "staleness p95",
                False,
                f"staleness p95 n/a: no read-your-writes staleness was measured (bound {bound:g} ms)",
            )
        ]
    passed = all(v <= bound for v in measured.values())
    figures = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(measured.items()))
    return [
        Threshold(
            "staleness p95",
            passed,
            f"staleness p95 {figures} {'<=' if passed else '>'} {bound:g} ms",
        )
    ]


def judge(
    record: RunRecord,
    options: SuiteOptions,
    p95_ms: float | None,
    arrival: ArrivalCounts | None = None,
    load: LoadFigures | None = None,
    staleness_p95: dict[str, float | None] | None = None,
) -> list[Threshold]:
    created = record.creation_counts()[OK]
    attempted = sum(record.creation_counts().values())
    create_pct = 100.0 * created / attempted if attempted else 0.0
    ops = operation_counts(record)
    creation = Threshold(
        "wallet creation",
        attempted > 0 and create_pct >= options.min_create_success,
        f"wallet creation {create_pct:.1f}% ({created}/{attempted})"
        f" {'>=' if create_pct >= options.min_create_success else '<'} {options.min_create_success:g}%",
    )
    adopted = sum(1 for t in record.wallets.values() if t.base_version >= 0)
    if adopted and not attempted:  # --adopt-run: nothing to create, the population exists
        creation = Threshold(
            "wallet creation", True, f"wallet creation: none, {adopted} wallets adopted"
        )
    results = [
        load_threshold(record, load or LoadFigures()),
        creation,
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
    results += visibility_thresholds(record, options)
    results += staleness_threshold(options, staleness_p95 or {})
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
