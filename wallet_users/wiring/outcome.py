"""How a finished run is judged and told: thresholds and consistency into one verdict, the exit
code, the console summary (verdict first, then the few figures that matter, then where the
details are, as pgbench does), and the rows of the web UI's Consistency tab."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust.stats import StatsEntry

from ..consistency import ConsistencyReport
from ..load.adoption import Adoption
from ..load.arrival import SCHEDULED, ArrivalCounts
from ..nemesis.events import FaultEvent, summary_lines
from ..record import RunRecord
from .options import SuiteOptions
from .thresholds import Threshold, operation_counts

MUTATION_PREFIX = "/wallets/[id]/"


@dataclass
class OpenModelFigures:
    """What an open-model run did against its schedule, and its latency both ways: from each
    operation's scheduled start (queueing included) and from its send (the closed-loop figure)."""

    target_rate: float
    achieved_rate: float
    scheduled: int
    dropped: int
    dropped_percent: float
    scheduled_ms: tuple[float | None, float | None]  # p95, p99 from the scheduled start
    sent_ms: tuple[float | None, float | None]  # p95, p99 from the send
    late_p99_ms: float | None = None  # how late the schedule itself started operations

    @classmethod
    def of(cls, options: SuiteOptions, counts: ArrivalCounts, stats: Any) -> OpenModelFigures:
        return cls(
            target_rate=options.arrival_rate,
            achieved_rate=counts.rate,
            scheduled=counts.scheduled,
            dropped=counts.dropped,
            dropped_percent=counts.dropped_percent,
            scheduled_ms=_percentiles(stats, SCHEDULED),
            sent_ms=_percentiles(stats, "POST"),
            late_p99_ms=counts.lateness_ms(0.99),
        )

    def line(self) -> str:
        def ms(pair: tuple[float | None, float | None]) -> str:
            return "/".join("n/a" if v is None else f"{v:.0f}" for v in pair)

        late = "n/a" if self.late_p99_ms is None else f"{self.late_p99_ms:.1f}"
        return (
            f"open model: {self.achieved_rate:.1f} of {self.target_rate:g} ops/s scheduled;"
            f" {self.dropped} of {self.scheduled} dropped ({self.dropped_percent:.1f}%);"
            f" latency p95/p99 from the scheduled start {ms(self.scheduled_ms)} ms,"
            f" from the send {ms(self.sent_ms)} ms;"
            f" schedule lateness p99 {late} ms"
        )


@dataclass
class RunOutcome:
    """Everything the end of a run decided, on the local runner or the master."""

    record: RunRecord
    options: SuiteOptions
    host: str
    embedded: bool
    seconds: float
    seeding: tuple[int, int, float]  # created, planned, seconds
    generator: list[str]  # one line per load-generating process
    thresholds: list[Threshold] = field(default_factory=list)
    consistency: ConsistencyReport | None = None
    check_failed: bool = False  # the check could not run at all
    p95_ms: float | None = None
    record_path: Path | None = None
    consistency_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    open_model: OpenModelFigures | None = None
    adoption: Adoption | None = None  # --adopt-run: the population it loaded
    faults: list[FaultEvent] = field(default_factory=list)  # --nemesis: what it did
    nemesis_seed: int | None = None
    faults_path: Path | None = None

    @property
    def verdict(self) -> str:
        failed = [t.line for t in self.thresholds if not t.passed]
        if self.consistency is not None and self.consistency.valid is False:
            failed.append(self.consistency.headline())
        if self.check_failed and self.consistency is not None:
            failed.append(self.consistency.reason)
        if failed:
            return "FAIL: " + "; ".join(failed)
        if self.consistency is None or self.consistency.valid is None:
            return "PASS (consistency not checked)"
        return "PASS"

    @property
    def exit_code(self) -> int:
        if self.check_failed:
            return 2
        if self.verdict.startswith("FAIL"):
            return 1
        return 0

    def summary_lines(self) -> list[str]:
        ops = operation_counts(self.record)
        replays, mismatched = self.record.replay_counts()
        rate = (ops.ok + ops.refused_for_funds) / max(self.seconds, 1e-9)
        lines = [
            "",
            "=" * 72,
            f"wallet suite verdict: {self.verdict}",
            *(self.consistency.cause_lines() if self.consistency else []),
            f"run id {self.options.run_id}; target {self.host}"
            f" ({'embedded reference_wallet' if self.embedded else 'external'})",
            self._wallets_line(),
            f"operations: {ops.ok} ok, {ops.refused_for_funds} refused for funds, {ops.rejected} rejected,"
            f" {ops.indeterminate} indeterminate; replays {replays} ({mismatched} answered differently)",
            f"throughput: {rate:.1f} ops/s over {self.seconds:.0f}s;"
            f" mutation p95 {self.p95_ms if self.p95_ms is not None else 'n/a'} ms",
            *([self.open_model.line()] if self.open_model else []),
            *[f"load generator CPU: {line}" for line in self.generator],
            *[f"  {'ok  ' if t.passed else 'FAIL'} {t.line}" for t in self.thresholds],
            *summary_lines(self.faults, self.nemesis_seed),
            *self.notes,
            f"run record: {self.record_path}",
            *([f"faults: {self.faults_path}"] if self.faults_path else []),
        ]
        if self.consistency is not None:
            lines += ["", *self.consistency.console_lines(self.consistency_path, causes=False)]
        return [*lines, "=" * 72]

    def _wallets_line(self) -> str:
        created, planned, seconds = self.seeding
        if self.adoption is None:
            percent = 100.0 * created / planned if planned else 0
            return f"wallets: {created}/{planned} created ({percent:.1f}%) in {seconds:.1f}s"
        first = self.adoption.first_run
        made = f", created by run {first}" if first != self.adoption.adopted_from else ""
        return (
            f"wallets: {created} adopted from run {self.adoption.adopted_from}{made}, none"
            f" created; their baseline read from the {self.adoption.source} in {seconds:.1f}s"
        )

    def web_rows(self) -> list[dict[str, str]]:
        rows = [
            {
                "item": "verdict",
                "result": self.verdict,
                "detail": self.consistency.headline() if self.consistency else "",
            }
        ]
        if self.adoption is not None:
            rows.append({"item": "population", "result": "adopted", "detail": self.adoption.line()})
        rows += [
            {"item": t.name, "result": "ok" if t.passed else "FAIL", "detail": t.line}
            for t in self.thresholds
        ]
        if self.open_model is not None:
            rows.append({"item": "open model", "result": "", "detail": self.open_model.line()})
        rows += fault_rows(self.faults)
        report = self.consistency
        if report is None:
            return rows
        rows[1:1] = [
            {
                "item": "cause",
                "result": f"{len(cause.wallets)} wallets",
                "detail": cause.line() + (f" (e.g. {cause.evidence})" if cause.evidence else ""),
            }
            for cause in report.causes
        ]
        alone = report.unexplained()
        if report.causes and alone:
            rows.insert(
                1 + len(report.causes),
                {
                    "item": "not explained by a cause",
                    "result": str(sum(alone.values())),
                    "detail": ", ".join(f"{kind} {count}" for kind, count in alone.items()),
                },
            )
        for kind, group in report.groups().items():
            first = group["first"]
            rows.append(
                {
                    "item": kind,
                    "result": str(group["count"]),
                    "detail": f"e.g. {first['wallet_id']}: expected {first['expected']}, found {first['found']}",
                }
            )
        rows += [
            {"item": check, "result": "skipped", "detail": why}
            for check, why in report.skipped.items()
        ]
        for consumer, lag in report.lag_ms.items():
            rows.append(
                {
                    "item": f"lag {consumer}",
                    "result": f"p99 {lag['p99']:.0f} ms",
                    "detail": f"p50 {lag['p50']:.0f} ms, p95 {lag['p95']:.0f} ms, max {lag['max']:.0f} ms",
                }
            )
        return rows


def fault_rows(events: list[FaultEvent]) -> list[dict[str, str]]:
    """A row per fault: when, and how long the service took to answer 2xx again and the
    projectors to catch up."""
    return [
        {
            "item": f"fault {e.fault}",
            "result": f"at {e.started_at:.1f}s" + ("" if e.healed else " FAILED"),
            "detail": e.figures(),
        }
        for e in events
    ]


def _mutations(stats: Any, method: str) -> StatsEntry:
    """The credit/debit/transfer entries of one request type merged (not seeding, reads,
    replays or re-sends)."""
    merged = StatsEntry(stats, "mutations", method)
    for entry in stats.entries.values():
        if (
            entry.method == method
            and entry.name.startswith(MUTATION_PREFIX)
            and not entry.name.endswith(("(replay)", "(resolve)"))
        ):
            merged.extend(entry)
    return merged


def mutation_p95(stats: Any) -> float | None:
    """p95 over the credit/debit/transfer requests as sent (Locust's own timing)."""
    merged = _mutations(stats, "POST")
    return merged.get_response_time_percentile(0.95) if merged.num_requests else None


def _percentiles(stats: Any, method: str) -> tuple[float | None, float | None]:
    merged = _mutations(stats, method)
    if not merged.num_requests:
        return None, None
    return merged.get_response_time_percentile(0.95), merged.get_response_time_percentile(0.99)
