"""The Consistency tab as a person reads it, from the start of a test to its verdict: what will
be checked and against which database while the load runs (with the projectors' live lag),
"checking..." while the projectors drain and the check runs, then the verdict, the thresholds,
each violation kind, skipped checks, unverified wallets, lag and where the reports are. The same
rows go into Locust's HTML report. No I/O here: the web UI and the report only read `rows()`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..load.adoption import Adoption
from ..nemesis.events import FaultEvent
from .options import SuiteOptions
from .outcome import RunOutcome, fault_rows
from .projection_lag import ConsumerSample

IDLE, RUNNING, CHECKING, DONE = "idle", "running", "checking", "done"

Row = dict[str, str]


def row(item: str, result: str, detail: str = "") -> Row:
    return {"item": item, "result": result, "detail": detail}


@dataclass
class StartedTest:
    """What a test that has just started will be judged on."""

    run_id: str
    host: str
    embedded: bool
    checked_against: str | None  # the redacted DSN, or None: not checked, for this reason:
    not_checked_reason: str
    options: SuiteOptions
    warnings: list[str] = field(default_factory=list)
    adoption: Adoption | None = None  # --adopt-run: the population it loads


@dataclass
class ConsistencyTab:
    """The tab's state; `lag` returns the projection lag sampler's latest reading, `progress`
    this process's operations so far (ok, rejected, indeterminate), or None where it has none
    (a master learns them from the workers' records at the end)."""

    lag: Callable[[], dict[str, ConsumerSample]] = dict
    progress: Callable[[], tuple[int, int, int] | None] = lambda: None
    faults: Callable[[], list[FaultEvent]] = list  # --nemesis: the faults so far
    phase: str = IDLE
    plan: StartedTest | None = None
    outcome: RunOutcome | None = None
    no_verdict: str = ""

    # --- what happens to it ------------------------------------------------------------------

    def started(self, plan: StartedTest) -> None:
        self.phase, self.plan, self.outcome = RUNNING, plan, None

    def stopping(self) -> None:
        if self.phase == RUNNING:
            self.phase = CHECKING

    def finished(self, outcome: RunOutcome | None, reason: str = "") -> None:
        """The verdict is in; or, with no outcome, the test ended without one (reason)."""
        self.phase, self.outcome, self.no_verdict = DONE, outcome, reason

    @property
    def checking(self) -> bool:
        """The load has stopped and the verdict is not in yet."""
        return self.phase == CHECKING

    # --- what it shows -------------------------------------------------------------------------

    def rows(self, served_at: str = "") -> list[Row]:
        """The tab's rows; served_at is the web UI's address, which serves the reports (none
        in a report file)."""
        if self.phase == DONE and self.outcome is not None:
            return self._verdict_rows(self.outcome, served_at)
        plan = self.plan
        if self.phase == DONE and self.no_verdict:
            return [row("verdict", "no verdict", self.no_verdict)]
        if plan is None or self.phase == DONE:
            return [
                row("verdict", "no test has stopped yet", "start a test: its verdict shows here")
            ]
        if self.phase == RUNNING:
            head = row(
                "verdict",
                "running",
                f"run {plan.run_id}: the verdict comes when the test stops",
            )
        else:
            head = row(
                "verdict",
                "checking...",
                "the load has stopped: waiting for the projectors to drain"
                f" (up to {plan.options.settle_timeout:g}s), then checking the database",
            )
        return [
            head,
            *self._plan_rows(plan),
            *self._progress_rows(),
            *self._lag_rows(),
            *fault_rows(self.faults()),
        ]

    def _progress_rows(self) -> list[Row]:
        counts = self.progress() if self.phase == RUNNING else None
        if counts is None:
            return []
        ok, rejected, indeterminate = counts
        return [
            row(
                "operations",
                f"{ok} ok",
                f"{rejected} rejected, {indeterminate} indeterminate so far",
            )
        ]

    def _plan_rows(self, plan: StartedTest) -> list[Row]:
        where = f"{plan.host} ({'embedded reference_wallet' if plan.embedded else 'external'})"
        rows = [row("target", plan.run_id, where)]
        if plan.checked_against:
            rows.append(row("consistency", "will be checked", f"in {plan.checked_against}"))
        else:
            rows.append(row("consistency", "NOT CHECKED", plan.not_checked_reason))
        rows += [row("warning", "", warning) for warning in plan.warnings]
        if plan.adoption is not None:
            rows.append(row("population", "adopted", plan.adoption.line()))
        opts = plan.options
        rows += [
            row("wallet creation", "to judge", f">= {opts.min_create_success:g}%"),
            row(
                "operation success",
                "to judge",
                f">= {opts.min_operation_success:g}% (refusals for funds apart)",
            ),
        ]
        if opts.max_p95_ms > 0:
            rows.append(row("p95 latency", "to judge", f"<= {opts.max_p95_ms:g} ms"))
        if opts.nemesis:
            rows.append(
                row(
                    "nemesis",
                    f"{len(opts.nemesis)} kinds of fault",
                    "; ".join(spec.describe() for spec in opts.nemesis)
                    + " (from the end of seeding; healed before the check)",
                )
            )
        return rows

    def _lag_rows(self) -> list[Row]:
        return [
            row(
                f"lag {s.consumer}",
                "idle" if s.lag_ms is None else f"{s.lag_ms:.0f} ms behind",
                f"{s.backlog} events not processed yet (live, from the target's outbox)",
            )
            for _, s in sorted(self.lag().items())
        ]

    def _verdict_rows(self, outcome: RunOutcome, served_at: str) -> list[Row]:
        rows = with_worst_examples(outcome.web_rows(), outcome)
        report = outcome.consistency
        if report is not None and report.unverified_wallets:
            rows.append(
                row(
                    "unverified wallets",
                    str(len(report.unverified_wallets)),
                    "checked by the database's own invariants only (their worker sent no record),"
                    f" e.g. {', '.join(report.unverified_wallets[:3])}",
                )
            )
        rows += [row("note", "", note) for note in outcome.notes]
        for item, route, path in (
            ("consistency report", "consistency", outcome.consistency_path),
            ("run record", "run-record", outcome.record_path),
        ):
            if path is not None:
                served = f"{served_at}/{route} (Download Data tab); " if served_at else ""
                rows.append(row(item, "JSON", f"{served}saved as {path}"))
        return rows


def with_worst_examples(rows: list[Row], outcome: RunOutcome) -> list[Row]:
    """After each violation kind's row (its count and first example), its worst example when it
    is another one."""
    report = outcome.consistency
    groups = report.groups() if report is not None else {}
    out: list[Row] = []
    for r in rows:
        out.append(r)
        group = groups.get(r["item"])
        if group and group["worst"] != group["first"]:
            worst = group["worst"]
            out.append(
                row(
                    f"{r['item']} (worst)",
                    "",
                    f"{worst['wallet_id']}: expected {worst['expected']}, found {worst['found']}"
                    + (f" ({worst['detail']})" if worst.get("detail") else ""),
                )
            )
    return out
