"""Distributed runs (Locust master/worker, or --processes): the master gives each worker a shard
of the run's wallets, each worker seeds and spends only its shard, and at the end sends its run
record to the master, which merges them and runs the one consistency check.

Messages (Locust custom messages):
- `wallet_suite:plan` master -> worker, before the spawn message: run id, shard index and count.
- `wallet_suite:finish` master -> worker, when the master begins to stop: stop users, report.
- `wallet_suite:seeded` worker -> master, when its shard is seeded: the master's --run-time
  starts when every worker's has (the time limit is the load's).
- `wallet_suite:history` worker -> master, at the worker's test_stop, before its record: its
  acknowledged snapshots in chunks of 1 MB (AckHistory.chunks), kept as one segment per worker.
- `wallet_suite:record_part` worker -> master, at the worker's test_stop, before its record: its
  run record's wallets in parts (RunRecord.message_parts), the worker yielding to its event loop
  between parts so that its heartbeats keep going however many wallets it has.
- `wallet_suite:record` worker -> master, last: the record's totals, the worker's figures and how
  many parts came before; the master merges the parts it got only when they are all there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gevent
from locust.runners import STATE_MISSING

from ..load.arrival import ArrivalCounts
from ..load.seeding import WalletPlan, plan_wallets
from ..record import INDETERMINATE, OK, REJECTED, RunRecord
from ..record.history import RunHistory
from ..record.run_record import PART_WALLETS
from .options import SuiteOptions

log = logging.getLogger(__name__)

PLAN = "wallet_suite:plan"
FINISH = "wallet_suite:finish"
RECORD = "wallet_suite:record"
SEEDED = "wallet_suite:seeded"
HISTORY = "wallet_suite:history"
RECORD_PART = "wallet_suite:record_part"
# wallets per record part; the environment variable exists for tests that want many parts
PART_WALLETS_VARIABLE = "WALLET_SUITE_RECORD_PART_WALLETS"


@dataclass(frozen=True)
class ShardPlan:
    """Which part of the run's wallets one load-generating process owns."""

    run_id: str
    index: int = 0
    count: int = 1
    shared_hot_wallets: bool = False
    # decided by the master per test (yes on the embedded target): the workers do as it says
    resolve_indeterminate: bool = False
    # --adopt-run: the database the shard's baseline is read from (the master's DSN); empty:
    # the service's API
    baseline_dsn: str = ""


def shard_wallets(options: SuiteOptions, shard: ShardPlan) -> list[WalletPlan]:
    """This shard's regular wallets: every count-th of the run's plan, so that shards are
    disjoint and the same seed gives the same wallets whatever the number of workers."""
    return plan_wallets(
        shard.run_id,
        options.wallets,
        options.initial_balance,
        options.seed,
        shard=(shard.index, shard.count),
    )


def shard_hot_wallets(options: SuiteOptions, shard: ShardPlan) -> list[WalletPlan]:
    """Hot wallets: one set per shard, or one set fought over by every worker when asked."""
    seed = None if options.seed is None else options.seed + 1
    if shard.shared_hot_wallets:
        return plan_wallets(shard.run_id, options.hot_wallets, options.initial_balance, seed, "h")
    plans = plan_wallets(
        shard.run_id, options.hot_wallets * shard.count, options.initial_balance, seed, "h"
    )
    return plans[shard.index * options.hot_wallets : (shard.index + 1) * options.hot_wallets]


@dataclass
class WorkerReport:
    record: RunRecord
    created: int = 0
    planned: int = 0
    seed_seconds: float = 0.0
    cpu_busy_share: float = 0.0
    cpu_peak: float = 0.0
    arrival: ArrivalCounts = field(default_factory=ArrivalCounts)

    def to_message(self, parts: int) -> dict[str, Any]:
        """Everything but the record's wallets, which went ahead in `parts` parts."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["arrival"] = asdict(self.arrival)
        data["record"] = self.record.header()
        data["parts"] = parts
        return data

    def message_parts(self, size: int) -> Iterator[dict[str, Any]]:
        run_id = self.record.run_id
        for number, part in enumerate(self.record.message_parts(size)):
            yield {"run_id": run_id, "part": number, **part}

    @classmethod
    def from_message(cls, data: dict[str, Any], wallets: RunRecord | None = None) -> WorkerReport:
        """The report, its record's totals from data and its wallets from the parts received
        (assembled into one record with RunRecord.absorb)."""
        record = RunRecord.from_header(data["record"], wallets)
        arrival = ArrivalCounts(**data.get("arrival", {}))
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        return cls(**{**values, "record": record, "arrival": arrival})


def pause_for_heartbeats() -> None:
    """A turn of the worker's event loop, timers included (Locust's heartbeat is a timer). Not
    sleep(0): bench/memory_scale.py found a 1-ms timer that did not fire until all 25 parts of a
    500,000-wallet record were sent with sleep(0) between them."""
    gevent.sleep(0.001)


def part_wallets() -> int:
    value = os.environ.get(PART_WALLETS_VARIABLE, "")
    return int(value) if value.isdigit() and int(value) > 0 else PART_WALLETS


def send_report(
    send: Callable[[str, dict[str, Any]], None],
    report: WorkerReport,
    pause: Callable[[], None],
    size: int | None = None,
) -> int:
    """The worker's side: the record's parts, a pause (a yield to the event loop) after each,
    then the report itself. Returns the number of parts."""
    parts = 0
    for part in report.message_parts(size or part_wallets()):
        send(RECORD_PART, part)
        parts += 1
        pause()
    send(RECORD, report.to_message(parts))
    return parts


@dataclass
class Coordinator:
    """The master's side: hands out shards and gathers the workers' records."""

    options: SuiteOptions | None = None
    shards: dict[str, ShardPlan] = field(default_factory=dict)  # worker client id -> its shard
    reports: dict[str, WorkerReport] = field(default_factory=dict)
    seeded: set[str] = field(default_factory=set)  # workers whose shard is seeded
    history: RunHistory = field(default_factory=RunHistory)
    # worker client id -> the wallets of its record parts so far (RunRecord.of_part)
    incoming: dict[str, list[RunRecord]] = field(default_factory=dict)

    def assign(self, runner: Any, options: SuiteOptions, run_id: str, shared_hot: bool) -> None:
        workers = sorted(
            runner.clients.ready + runner.clients.running + runner.clients.spawning,
            key=lambda node: runner.get_worker_index(node.id),
        )
        self.options = options
        self.shards = {}
        self.reports = {}
        self.seeded = set()
        self.history = RunHistory()
        self.incoming = {}
        for index, node in enumerate(workers):
            shard = ShardPlan(
                run_id,
                index,
                len(workers),
                shared_hot,
                options.resolve_indeterminate,
                (options.pg_dsn or "") if options.adopt_run else "",
            )
            self.shards[node.id] = shard
            runner.send_message(PLAN, asdict(shard), client_id=node.id)
        log.info(
            "run %s: %d wallets sharded over %d workers", run_id, options.wallets, len(workers)
        )

    def _of_this_run(self, client_id: str, data: dict[str, Any]) -> bool:
        shard = self.shards.get(client_id)
        return shard is not None and data.get("run_id") == shard.run_id

    def shard_seeded(self, client_id: str, data: dict[str, Any]) -> None:
        if self._of_this_run(client_id, data):
            self.seeded.add(client_id)

    def seeding_done(self, runner: Any) -> bool:
        """Every worker of the run has seeded its shard, or is gone."""
        return all(cid in self.seeded or not _alive(runner, cid) for cid in self.shards)

    def history_chunk(self, client_id: str, data: dict[str, Any]) -> None:
        if self._of_this_run(client_id, data):
            self.history.receive(client_id, data)

    def record_part(self, client_id: str, data: dict[str, Any]) -> None:
        if self._of_this_run(client_id, data):
            self.incoming.setdefault(client_id, []).append(RunRecord.of_part(data))

    def received(self, client_id: str, data: dict[str, Any]) -> None:
        shard = self.shards.get(client_id)
        received_parts = self.incoming.pop(client_id, [])
        parts = len(received_parts)
        if shard is None or data.get("record", {}).get("run_id") != shard.run_id:
            log.warning("ignoring a record from worker %s: not part of this run", client_id)
            return
        if parts != data.get("parts", 0):
            log.warning(
                "worker %s (%s) sent %d of the %d parts of its record: its wallets are unverified",
                client_id,
                _shard_name(shard),
                parts,
                data.get("parts", 0),
            )
            return
        report = WorkerReport.from_message(data, RunRecord.joined(received_parts))
        self.reports[client_id] = report
        ops = report.record.operations
        log.info(
            "worker %s (%s) reported: %d/%d wallets created; operations %d ok, %d rejected,"
            " %d indeterminate (%d wallets in %d record parts)",
            client_id,
            _shard_name(shard),
            report.created,
            report.planned,
            ops[OK],
            ops[REJECTED],
            ops[INDETERMINATE],
            len(report.record.wallets),
            parts,
        )

    def collect(
        self, runner: Any, timeout: float, sleep: Callable[[float], None]
    ) -> tuple[RunRecord, list[int]]:
        """Wait until every worker of the run has reported or is gone; the merged record, and
        the shard indexes of the workers that never reported (their wallets are unverified)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [
                cid for cid in self.shards if cid not in self.reports and _alive(runner, cid)
            ]
            if not waiting:
                break
            sleep(0.2)
        run_id = next(iter(self.shards.values())).run_id if self.shards else ""
        merged = RunRecord(run_id)
        for report in self.reports.values():
            merged.merge(report.record)
        lost = sorted(shard.index for cid, shard in self.shards.items() if cid not in self.reports)
        for cid, shard in self.shards.items():
            if cid not in self.reports:
                log.warning(
                    "worker %s (%s) never sent its record: its wallets are unverified",
                    cid,
                    _shard_name(shard),
                )
                self._mark_unverified(merged, shard)
        return merged, lost

    def _mark_unverified(self, merged: RunRecord, shard: ShardPlan) -> None:
        """A lost worker's wallets may or may not exist, with unknown operations: the checker
        holds them to the database's own invariants only."""
        assert self.options is not None
        if self.options.adopt_run:
            return  # its adopted wallets are unknown here; shards do not transfer to each other
        lost = shard_wallets(self.options, shard) + shard_hot_wallets(self.options, shard)
        for plan in lost:
            known = plan.wallet_id in merged.wallets  # e.g. a shared hot wallet another worker made
            tally = merged.tally(plan.wallet_id)
            if not known:
                tally.created = INDETERMINATE
                tally.initial_balance = plan.initial_balance
            merged.unverified.add(plan.wallet_id)

    def arrival(self) -> ArrivalCounts:
        """The open model's tallies over the workers that reported."""
        merged = ArrivalCounts()
        for report in self.reports.values():
            merged.merge(report.arrival)
        return merged

    def totals(self) -> tuple[int, int, float]:
        created = sum(r.created for r in self.reports.values())
        planned = sum(r.planned for r in self.reports.values())
        seconds = max((r.seed_seconds for r in self.reports.values()), default=0.0)
        return created, planned, seconds


def _shard_name(shard: ShardPlan | None) -> str:
    """As the worker's own log names it when it seeds: counted from 1."""
    return f"shard {shard.index + 1} of {shard.count}" if shard else "no shard of this run"


def _alive(runner: Any, client_id: str) -> bool:
    node = runner.clients.get(client_id)
    return node is not None and node.state != STATE_MISSING
