"""A distributed run's worker (`--worker`): it takes its options, host and shard from the master,
seeds and loads only its shard, and at the end sends its run record to the master. It never
connects to the target's database and judges nothing."""

from __future__ import annotations

import logging
from typing import Any

import gevent

from ...load.run import SuiteRun, set_suite_run
from ...usage import exit_with_usage_error
from .. import options as suite_options
from ..distributed import (
    FINISH,
    HISTORY,
    PLAN,
    SEEDED,
    ShardPlan,
    WorkerReport,
    pause_for_heartbeats,
    send_report,
)
from ..options import UsageError
from ..weights import apply_weights
from .base import Role
from .generator import LoadGenerator

log = logging.getLogger("wallet_suite")


class WorkerRole(Role):
    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.notes: list[str] = []
        self.generator = LoadGenerator(environment, self.notes)
        self.shard: ShardPlan | None = None  # from the master's plan message
        self.shards_done: set[str] = set()  # run ids this worker has seeded

    def init(self) -> None:
        self.runner.register_message(PLAN, self._on_plan)
        self.runner.register_message(FINISH, self._on_finish)
        # the master's options arrive with its spawn message; until then, the defaults
        try:
            opts = suite_options.parse(self.environment.parsed_options)
        except UsageError as error:
            exit_with_usage_error(str(error))
        apply_weights(self.environment, opts.weights, drop_empty=False)

    def _on_plan(self, environment: Any, msg: Any, **_: Any) -> None:
        self.shard = ShardPlan(**msg.data)

    def _on_finish(self, environment: Any, msg: Any, **_: Any) -> None:
        gevent.spawn(self.runner.stop)  # test_stop then sends this worker's record

    def test_start(self) -> None:
        set_suite_run(self.environment, None)
        self.notes.clear()
        try:
            opts = suite_options.parse(self.environment.parsed_options)
        except UsageError as error:
            log.error("wallet suite: %s", error)
            gevent.spawn(self.runner.stop)
            return
        if self.shard is None or self.shard.run_id in self.shards_done:
            # joined after the test started (out of scope), or the master runs another locustfile
            log.error(
                "wallet suite: no shard for this worker in this test: it seeds and sends nothing"
            )
            self.generator.idle(opts)
            return
        self.shards_done.add(self.shard.run_id)
        self.generator.start(opts, self.shard, on_seeding_failed=lambda: None)
        self.runner.send_message(SEEDED, {"run_id": self.shard.run_id})

    def test_stop(self) -> None:
        run = self.generator.stop()
        if run is not None:
            for chunk in run.history.chunks():  # before the record: the master waits for that
                self.runner.send_message(HISTORY, {"run_id": run.options.run_id, **chunk})
                pause_for_heartbeats()
            run.history.discard()
            send_report(self._send, self._report(run), pause_for_heartbeats)

    def _send(self, message_type: str, data: dict[str, Any]) -> None:
        self.runner.send_message(message_type, data)

    def _report(self, run: SuiteRun) -> WorkerReport:
        result = run.seeding.get("wallets")
        cpu = self.generator.cpu
        return WorkerReport(
            record=run.record,
            created=result.created if result else 0,
            planned=result.planned if result else 0,
            seed_seconds=result.seconds if result else 0.0,
            cpu_busy_share=cpu.busy_share,
            cpu_peak=max(cpu.samples, default=0.0),
            arrival=run.arrival,
        )

    def quit(self, exit_code: int) -> None:
        if self.notes:
            print("\n".join(self.notes), flush=True)
