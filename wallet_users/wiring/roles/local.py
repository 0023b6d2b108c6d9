"""A run on one process (`locust` without --master/--worker): it seeds, loads, checks and judges
everything itself."""

from __future__ import annotations

import gevent

from ...load.run import set_suite_run
from ...record import INDETERMINATE, OK, REJECTED
from ...record.history import RunHistory
from ..distributed import ShardPlan
from .front import FrontRole
from .generator import LoadGenerator


class LocalRole(FrontRole):
    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.generator = LoadGenerator(environment, self.notes)

    def test_start(self) -> None:
        set_suite_run(self.environment, None)  # nothing of an earlier test is reused
        opts = self.options_for_test()
        if opts is not None:
            shard = ShardPlan(
                opts.run_id,
                resolve_indeterminate=opts.resolve_indeterminate,
                baseline_dsn=opts.pg_dsn or "",
            )
            self.generator.start(opts, shard, self._seeding_failed)
            if self.generator.seeded:
                self.load_began()

    def progress(self) -> tuple[int, int, int] | None:
        run = self.generator.run
        if run is None:
            return None
        ops = run.record.operations
        return ops[OK], ops[REJECTED], ops[INDETERMINATE]

    def _seeding_failed(self) -> None:
        if self.environment.web_ui is not None:
            gevent.spawn(self.runner.stop)  # the UI stays up for the next test
        else:
            self.environment.process_exit_code = 1
            gevent.spawn(self.runner.quit)

    def test_stop(self) -> None:
        super().test_stop()
        self.stop_sampling()
        run = self.generator.stop()
        if run is None:
            return
        result = run.seeding.get("wallets")
        seeding = (result.created, result.planned, result.seconds) if result else (0, 0, 0.0)
        self.finish(
            run.record,
            run.options,
            seeding,
            [self.generator.cpu.describe()],
            run.arrival,
            RunHistory.of(run.history),
        )
        run.history.discard()
