"""A distributed run's master (`--master`, or the parent of `--processes`): it shards the
wallets over the workers, asks them to finish when the test stops, merges their records and
runs the one consistency check. It sends no load and never seeds."""

from __future__ import annotations

from typing import Any

import gevent

from ...load.run import set_suite_run
from ..distributed import (
    FINISH,
    HISTORY,
    RECORD,
    RECORD_PART,
    SEEDED,
    Coordinator,
    WorkerReport,
)
from ..options import SuiteOptions
from .front import FrontRole

RECORD_WAIT_SECONDS = 30.0  # how long the master waits for the workers' records after a stop


class MasterRole(FrontRole):
    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.coordinator = Coordinator()
        self.options: SuiteOptions | None = None  # this test's options, sent to the workers
        self._seeding: gevent.Greenlet | None = None

    def init(self) -> None:
        self.runner.register_message(RECORD, self._on_record)
        self.runner.register_message(SEEDED, self._on_seeded)
        self.runner.register_message(HISTORY, self._on_history)
        self.runner.register_message(RECORD_PART, self._on_record_part)
        super().init()

    def _on_record(self, environment: Any, msg: Any, **_: Any) -> None:
        self.coordinator.received(msg.node_id, msg.data)

    def _on_record_part(self, environment: Any, msg: Any, **_: Any) -> None:
        self.coordinator.record_part(msg.node_id, msg.data)

    def _on_seeded(self, environment: Any, msg: Any, **_: Any) -> None:
        self.coordinator.shard_seeded(msg.node_id, msg.data)

    def _on_history(self, environment: Any, msg: Any, **_: Any) -> None:
        self.coordinator.history_chunk(msg.node_id, msg.data)

    def _await_seeding(self) -> None:
        """The load begins when every worker has seeded its shard (or is gone)."""
        while not self.coordinator.seeding_done(self.runner):
            gevent.sleep(0.1)
        self.load_began()

    def test_start(self) -> None:
        set_suite_run(self.environment, None)
        opts = self.options_for_test()
        if opts is None:
            return
        self.options = opts
        self.coordinator.assign(self.runner, opts, opts.run_id, opts.shared_hot_wallets)
        self._seeding = gevent.spawn(self._await_seeding)

    def test_stopping(self) -> None:
        super().test_stopping()
        # A headless master quits without telling the workers to stop until its own test_stop
        # is over: ask them now, so their records arrive while it waits for them.
        for client_id in self.coordinator.shards:
            self.runner.send_message(FINISH, None, client_id=client_id)

    def test_stop(self) -> None:
        super().test_stop()
        if self._seeding is not None:
            self._seeding.kill(block=False)
            self._seeding = None
        self.stop_sampling()
        coordinator = self.coordinator
        if not coordinator.shards or self.options is None:
            if self.tab.checking:
                self.tab.finished(None, "no worker had a shard of this test")
            return
        record, lost = coordinator.collect(self.runner, RECORD_WAIT_SECONDS, gevent.sleep)
        by_shard = sorted(coordinator.reports.items(), key=lambda i: coordinator.shards[i[0]].index)
        generator = [
            f"shard {coordinator.shards[cid].index + 1}: {_cpu_line(report)}"
            for cid, report in by_shard
        ]
        if lost:
            self.notes.append(
                f"the workers of shards {', '.join(str(i + 1) for i in lost)} sent no record:"
                f" {len(record.unverified)} wallets checked by database invariants only"
            )
        self.finish(
            record,
            self.options,
            coordinator.totals(),
            generator,
            coordinator.arrival(),
            coordinator.history,
        )


def _cpu_line(report: WorkerReport) -> str:
    line = f"peak {report.cpu_peak:.0f}%, above 90% for {report.cpu_busy_share:.0%} of the run"
    if report.cpu_busy_share > 0.5:
        line += ": this worker was the bottleneck"
    return line
