"""What a load-generating process (a local runner or a worker) does around the users' tasks:
seed its shard before the tasks run, and after they stop, resolve what stayed in doubt."""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust.contrib.fasthttp import FastHttpSession

from ...consistency.schema import Schema
from ...load import adoption
from ...load.arrival import ArrivalShare
from ...load.operations import resolve_in_doubt
from ...load.run import SuiteRun, set_suite_run
from ...load.seeding import SeedResult, seed
from ...load.users import HotWalletUser, WalletBehaviour
from ..distributed import ShardPlan, shard_hot_wallets, shard_wallets
from ..options import SuiteOptions
from ..saturation import GeneratorLoad
from ..weights import apply_weights

log = logging.getLogger("wallet_suite")

RESOLVE_SECONDS = 15.0  # bounded: a worker's master waits for the record that follows
RESOLVE_CONCURRENCY = 10
# Under load, 50 users' requests in flight keep a few thousand young objects alive, so Python's
# default threshold (700) runs a collection every ~50 requests that finds next to nothing
# (162 objects in 295 collections of an 8-s run): refcounting frees the rest. Above that, a
# collection still runs if garbage does pile up.
LOAD_GC_THRESHOLD = 10_000


class LoadGenerator:
    """Seeds and loads one shard of a run's wallets; `run` is this process's SuiteRun."""

    def __init__(self, environment: Any, notes: list[str]) -> None:
        self.environment = environment
        self.notes = notes  # the role's notes for this test: seeding shortfalls go there
        self.cpu = GeneratorLoad()
        self.run: SuiteRun | None = None
        self.seeded = False  # this test's seeding created enough wallets to load
        self._gc_threshold: tuple[int, ...] | None = None  # Python's, while the load runs

    def start(
        self, opts: SuiteOptions, shard: ShardPlan, on_seeding_failed: Callable[[], None]
    ) -> SuiteRun:
        """Seed the shard, then hand the users a ready SuiteRun."""
        environment = self.environment
        opts = dataclasses.replace(
            opts, run_id=shard.run_id, resolve_indeterminate=shard.resolve_indeterminate
        )
        apply_weights(environment, opts.weights, drop_empty=False)
        run = SuiteRun.start(opts)
        run.shard = shard
        if opts.arrival_rate > 0:
            run.arrival_share = ArrivalShare.of(
                opts.arrival_rate, opts.max_in_flight, pacing_users(environment)
            )
        self.run = run
        set_suite_run(environment, run)
        for user_class in environment.user_classes:
            if hasattr(user_class, "network_timeout"):
                user_class.network_timeout = opts.request_timeout
                user_class.connection_timeout = opts.request_timeout
        self.seeded = self._seed(run)
        if not self.seeded:
            on_seeding_failed()
        run.ready = True
        # What exists now (seeded pools, Locust's own state) lives for the whole run: keep the
        # collector from walking it again and again (cuts p99.9 by half in bench/locust_throughput.py).
        gc.freeze()
        if self._gc_threshold is None:
            self._gc_threshold = gc.get_threshold()
            gc.set_threshold(LOAD_GC_THRESHOLD, *self._gc_threshold[1:])
        self.cpu.start()
        return run

    def idle(self, opts: SuiteOptions) -> None:
        """A test this process has no shard of: empty pools, so its users stop at once."""
        self.run = None
        set_suite_run(self.environment, SuiteRun.start(opts))

    def _seed(self, run: SuiteRun) -> bool:
        """Create the shard's wallets (or adopt an earlier run's); False if too few were
        created to go on."""
        environment = self.environment
        opts, shard = run.options, run.shard
        client = self._client(opts, concurrency=50)
        if opts.adopt_run:
            return self._adopt(run, client)
        plans = shard_wallets(opts, shard)
        log.info(
            "run %s: seeding %d wallets (shard %d of %d) at %s",
            opts.run_id,
            len(plans),
            shard.index + 1,
            shard.count,
            environment.host,
        )
        run.seeding["wallets"] = seed(
            client, plans, run.wallets, run.record, run_id=opts.run_id, history=run.history
        )
        if HotWalletUser in environment.user_classes:
            run.seeding["hot wallets"] = seed(
                client,
                shard_hot_wallets(opts, shard),
                run.hot_wallets,
                run.record,
                run_id=opts.run_id,
                label="hot wallets",
                adopt_existing=shard.shared_hot_wallets,
                history=run.history,
            )
        result = run.seeding["wallets"]
        log.info("seeded %d/%d wallets in %.1fs", result.created, result.planned, result.seconds)
        if result.success_percent >= opts.min_create_success:
            return True
        message = (
            f"only {result.created} of {result.planned} wallets were created"
            f" ({result.success_percent:.1f}% < {opts.min_create_success:g}%)"
        )
        log.error("wallet suite: %s: stopping the run", message)
        self.notes.append(f"stopped: {message}")
        return False

    def _adopt(self, run: SuiteRun, client: FastHttpSession) -> bool:
        """Load the shard of the adopted run's wallets as they are now; False if too few
        could be read."""
        opts, shard = run.options, run.shard
        try:
            result = adoption.load_shard(
                client=client,
                dsn=shard.baseline_dsn or None,
                schema=Schema.with_overrides(opts.schema_overrides),
                report_dir=Path(opts.report_dir),
                adopt_run=opts.adopt_run,
                shard=(shard.index, shard.count),
                pool=run.wallets,
                hot_pool=run.hot_wallets,
                record=run.record,
            )
        except adoption.AdoptionError as error:
            result = None
            message = str(error)
        run.seeding["wallets"] = result or SeedResult(0, 0, 0.0)
        if (
            result is not None
            and result.created
            and result.success_percent >= opts.min_create_success
        ):
            return True
        if result is not None:
            message = (
                f"only {result.created} of {result.planned} wallets of run {opts.adopt_run}"
                f" could be read ({result.success_percent:.1f}% < {opts.min_create_success:g}%)"
                if result.created
                else f"no wallet of run {opts.adopt_run} in this shard"
            )
        log.error("wallet suite: %s: stopping the run", message)
        self.notes.append(f"stopped: {message}")
        return False

    def stop(self) -> SuiteRun | None:
        """After the users stopped: stop watching the CPU, resolve in-doubt operations."""
        self.cpu.stop()
        gc.unfreeze()  # what start() froze may be garbage by the next test in the web UI
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        run = getattr(self.environment, "wallet_suite_run", None)
        if run is not None:
            self._resolve(run)
        return run

    def _resolve(self, run: SuiteRun) -> None:
        """Learn the fate of in-doubt operations by re-sending them with their own keys."""
        if not run.in_doubt:
            return
        if not run.options.resolve_indeterminate:
            log.info(
                "%d operations stay indeterminate (--resolve-indeterminate no)", len(run.in_doubt)
            )
            return
        again = sum(t.replays_applied_again for t in run.record.wallets.values())
        if again:
            # a re-send is a replay, and this service executes replays again: re-sending an
            # operation that did apply would apply it twice
            log.warning(
                "%d operations stay indeterminate: %d replays were applied a second time during"
                " the run, so re-sending with their keys could apply them twice",
                len(run.in_doubt),
                again,
            )
            return
        # Several at once: after faults hundreds may be in doubt, and one by one they would
        # outlast the deadline. Each greenlet re-sends its own share of the keys.
        client = self._client(run.options, concurrency=RESOLVE_CONCURRENCY)
        keys = list(run.in_doubt)
        shares = [
            {key: run.in_doubt[key] for key in keys[i::RESOLVE_CONCURRENCY]}
            for i in range(min(RESOLVE_CONCURRENCY, len(keys)))
        ]
        jobs = [
            gevent.spawn(
                resolve_in_doubt,
                client,
                share,
                run.record,
                pause=gevent.sleep,
                deadline_s=RESOLVE_SECONDS,
            )
            for share in shares
        ]
        gevent.joinall(jobs)
        run.in_doubt.clear()
        for share in shares:
            run.in_doubt.update(share)  # what is still in doubt
        resolved = sum(job.value[0] for job in jobs if job.successful())
        left = len(run.in_doubt)
        log.info(
            "re-sent in-doubt operations with their keys: %d resolved, %d still in doubt",
            resolved,
            left,
        )

    def _client(self, opts: SuiteOptions, **kwargs: Any) -> FastHttpSession:
        return FastHttpSession(
            self.environment.host,
            self.environment.events.request,
            user=None,
            network_timeout=opts.request_timeout,
            connection_timeout=opts.request_timeout,
            **kwargs,
        )


def pacing_users(environment: Any) -> float:
    """How many of the run's users (--users, the peak under a shape) pace the open model's rate:
    Locust spreads users over the classes by weight, and only the wallet users pace (the
    read-your-writes user stays closed-loop)."""
    classes = environment.user_classes
    total = sum(c.weight for c in classes) or 1
    pacing = sum(c.weight for c in classes if issubclass(c, WalletBehaviour))
    users = int(getattr(environment.parsed_options, "num_users", None) or 1)
    return users * pacing / total
