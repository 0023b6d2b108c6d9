"""The suite's wiring into Locust's events: options, the embedded target, sharding and seeding
before any task runs, gathering the run record, the thresholds, the consistency check, the exit
code and the closing report. Importing this module registers the listeners (locustfile.py does).

Roles: a local runner does everything; in a distributed run the master shards, merges and
checks, and the workers seed their shard, generate load and report their record. Workers never
connect to the target's database.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import MasterRunner, WorkerRunner

from reference_wallet.postgres import redact_dsn

from . import options as suite_options
from .consistency import CheckError, ConsistencyReport, Schema, not_checked, run_check
from .distributed import (
    FINISH,
    PLAN,
    RECORD,
    Coordinator,
    ShardPlan,
    WorkerReport,
    shard_hot_wallets,
    shard_wallets,
)
from .operations import resolve_in_doubt
from .options import SuiteOptions, UsageError
from .outcome import RunOutcome, add_consistency_tab, mutation_p95
from .record import RunRecord
from .run import SuiteRun, set_suite_run, suite_run
from .saturation import GeneratorLoad
from .seeding import seed
from .target import EmbeddedTarget, probe
from .thresholds import judge
from .users import TASK_KINDS, HotWalletUser, ReadYourWritesUser, WalletBehaviour

log = logging.getLogger("wallet_suite")

RECORD_WAIT_SECONDS = 30.0  # how long the master waits for the workers' records after a stop


@dataclass
class Session:
    """What lives for the whole Locust process (across the web UI's repeated tests)."""

    target: EmbeddedTarget | None = None
    generator: GeneratorLoad = field(default_factory=GeneratorLoad)
    coordinator: Coordinator = field(default_factory=Coordinator)
    shard: ShardPlan | None = None  # a worker's shard, from the master's plan message
    shards_done: set[str] = field(default_factory=set)  # run ids this worker has seeded
    options: SuiteOptions | None = None  # the master's options for the current test
    pg_dsn: str = ""  # the DSN as given, password included; never shown
    started: float = 0.0
    notes: list[str] = field(default_factory=list)
    outcome: RunOutcome | None = None


SESSION = Session()


def usage_error(message: str) -> None:
    """One clear line and exit code 2, before any load starts."""
    print(f"wallet suite: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# --- start-up ------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _register_options(parser: Any) -> None:
    suite_options.register(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(PLAN, _on_plan)
        runner.register_message(FINISH, _on_finish)
        # the master's options arrive with its spawn message; until then, the defaults
        try:
            worker_opts = suite_options.parse(environment.parsed_options)
        except UsageError as error:
            usage_error(str(error))
        apply_weights(environment, worker_opts.weights, drop_empty=False)
        return  # workers take their options and host from the master
    if isinstance(runner, MasterRunner):
        runner.register_message(RECORD, _on_record)
    if environment.parsed_options is None:
        return
    try:
        opts = suite_options.parse(environment.parsed_options)
        apply_weights(environment, opts.weights)
    except UsageError as error:
        usage_error(str(error))
    if environment.web_ui is not None:
        add_consistency_tab(environment, lambda: SESSION.outcome)
    if environment.host:
        problem = probe(environment.host)
        if problem:
            usage_error(f"cannot reach --host {environment.host}: {problem}")
        if not opts.pg_dsn:
            log.warning(
                "wallet suite: --host %s without --pg-dsn: the consistency check will be SKIPPED"
                " and the report will say 'not checked'",
                environment.host,
            )
        _hide_dsn_password(environment)
        return
    if opts.pg_dsn:
        usage_error(
            "--pg-dsn without --host: the load would go to the embedded target but the check"
            " would read another database; name the --host that uses this database"
        )
    try:
        SESSION.target = EmbeddedTarget.start()
    except Exception as error:
        print(f"wallet suite: cannot start the embedded target: {error}", file=sys.stderr)
        sys.exit(1)
    atexit.register(SESSION.target.stop)
    environment.host = SESSION.target.url
    environment.parsed_options.pg_dsn = SESSION.target.dsn
    if str(getattr(environment.parsed_options, "resolve_indeterminate", "auto")).lower() == "auto":
        environment.parsed_options.resolve_indeterminate = "yes"  # the reference honours keys


def _hide_dsn_password(environment: Any) -> None:
    """Locust writes option values into the web UI's page source, secret ones included: keep the
    real DSN here and show the UI (and anything else reading parsed options) a redacted one."""
    dsn = getattr(environment.parsed_options, "pg_dsn", "")
    if dsn and redact_dsn(dsn) != dsn:
        SESSION.pg_dsn = dsn
        environment.parsed_options.pg_dsn = redact_dsn(dsn)


def _real_dsn(opts: SuiteOptions) -> SuiteOptions:
    """Undo _hide_dsn_password: a DSN still in its redacted form means the one given at start."""
    if SESSION.pg_dsn and opts.pg_dsn == redact_dsn(SESSION.pg_dsn):
        return dataclasses.replace(opts, pg_dsn=SESSION.pg_dsn)
    return opts


def _away_from_embedded(environment: Any, opts: SuiteOptions) -> SuiteOptions:
    """The web UI's form can point a test elsewhere than the embedded target: then its database
    is not the target's (the check says 'not checked' unless a DSN was typed) and re-sending
    in-doubt operations is off (the real Wallex ignores keys on credit/debit/transfer)."""
    target = SESSION.target
    if target is None or (environment.host or "").rstrip("/") == target.url:
        return opts
    log.warning(
        "wallet suite: the host is not the embedded target: in-doubt operations are not re-sent"
    )
    environment.parsed_options.resolve_indeterminate = "no"  # for workers too
    dsn = None if opts.pg_dsn == target.dsn else opts.pg_dsn
    return dataclasses.replace(opts, pg_dsn=dsn, resolve_indeterminate=False)


def apply_weights(environment: Any, weights: dict[str, int], *, drop_empty: bool = True) -> None:
    """Build the weighted users' task lists from --credit/debit/transfer-weight and the tags
    (Locust filters tags once, before test_start; the weights may change per test in the web UI),
    and drop user classes left without tasks (Locust would fail to start them)."""
    tags = set(getattr(environment.parsed_options, "tags", None) or []) or None
    excluded = set(getattr(environment.parsed_options, "exclude_tags", None) or []) or None
    kept = []
    for user_class in environment.user_classes:
        if issubclass(user_class, WalletBehaviour):
            user_class.tasks = [
                task
                for kind in TASK_KINDS
                if _selected(task := getattr(user_class, kind), tags, excluded)
                for _ in range(weights[kind])
            ]
        if any(_selected(t, tags, excluded) for t in user_class.tasks):
            kept.append(user_class)
    if not drop_empty:
        return
    if not kept:
        raise UsageError("no task is left after --tags/--exclude-tags and the weights")
    environment.user_classes[:] = kept


def _selected(task: Any, tags: set[str] | None, excluded: set[str] | None) -> bool:
    task_tags = getattr(task, "locust_tag_set", set())
    return (tags is None or bool(task_tags & tags)) and not (excluded and task_tags & excluded)


# --- test start: shard, seed -------------------------------------------------------------------------


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    runner = environment.runner
    set_suite_run(environment, None)  # nothing of an earlier test in this process is reused
    try:
        opts = _real_dsn(suite_options.parse(environment.parsed_options))
    except UsageError as error:  # the web UI's form can change options between tests
        log.error("wallet suite: %s", error)
        gevent.spawn(runner.stop)
        return
    opts = _away_from_embedded(environment, opts)
    SESSION.started = time.time()
    SESSION.notes = []
    if isinstance(runner, MasterRunner):
        SESSION.options = opts
        SESSION.coordinator.assign(runner, opts, opts.run_id, opts.shared_hot_wallets)
        return
    shard = ShardPlan(opts.run_id)
    if isinstance(runner, WorkerRunner):
        if SESSION.shard is None or SESSION.shard.run_id in SESSION.shards_done:
            # joined after the test started (out of scope), or the master runs another locustfile
            log.error(
                "wallet suite: no shard for this worker in this test: it seeds and sends nothing"
            )
            set_suite_run(environment, SuiteRun.start(opts))  # empty pools: its users stop at once
            return
        shard = SESSION.shard
        SESSION.shards_done.add(shard.run_id)
    opts = dataclasses.replace(opts, run_id=shard.run_id)
    apply_weights(environment, opts.weights, drop_empty=False)
    run = SuiteRun.start(opts)
    run.shard = shard
    set_suite_run(environment, run)
    for user_class in environment.user_classes:
        if hasattr(user_class, "network_timeout"):
            user_class.network_timeout = opts.request_timeout
            user_class.connection_timeout = opts.request_timeout
    _seed(environment, run)
    # What exists now (seeded pools, Locust's own state) lives for the whole run: keep the
    # collector from walking it again and again (cuts p99.9 by half in bench/locust_throughput.py).
    gc.freeze()
    SESSION.generator.start()


def _seed(environment: Any, run: SuiteRun) -> None:
    opts, shard = run.options, run.shard
    client = FastHttpSession(
        environment.host,
        environment.events.request,
        user=None,
        concurrency=50,
        network_timeout=opts.request_timeout,
        connection_timeout=opts.request_timeout,
    )
    plans = shard_wallets(opts, shard)
    log.info(
        "run %s: seeding %d wallets (shard %d of %d) at %s",
        opts.run_id,
        len(plans),
        shard.index + 1,
        shard.count,
        environment.host,
    )
    run.seeding["wallets"] = seed(client, plans, run.wallets, run.record, run_id=opts.run_id)
    if HotWalletUser in environment.user_classes:
        run.seeding["hot wallets"] = seed(
            client,
            shard_hot_wallets(opts, shard),
            run.hot_wallets,
            run.record,
            run_id=opts.run_id,
            label="hot wallets",
            adopt_existing=shard.shared_hot_wallets,
        )
    result = run.seeding["wallets"]
    log.info("seeded %d/%d wallets in %.1fs", result.created, result.planned, result.seconds)
    if result.success_percent < opts.min_create_success:
        message = (
            f"only {result.created} of {result.planned} wallets were created"
            f" ({result.success_percent:.1f}% < {opts.min_create_success:g}%)"
        )
        log.error("wallet suite: %s: stopping the run", message)
        SESSION.notes.append(f"stopped: {message}")
        if environment.web_ui is not None:
            gevent.spawn(environment.runner.stop)  # the UI stays up for the next test
        elif not isinstance(environment.runner, WorkerRunner):
            environment.process_exit_code = 1
            gevent.spawn(environment.runner.quit)
    run.ready = True


# --- distributed messages ----------------------------------------------------------------------


def _on_plan(environment: Any, msg: Any, **_: Any) -> None:
    SESSION.shard = ShardPlan(**msg.data)


def _on_finish(environment: Any, msg: Any, **_: Any) -> None:
    gevent.spawn(environment.runner.stop)  # test_stop then sends this worker's record


def _on_record(environment: Any, msg: Any, **_: Any) -> None:
    SESSION.coordinator.received(msg.node_id, msg.data)


@events.test_stopping.add_listener
def _on_test_stopping(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        # A headless master quits without telling the workers to stop until its own test_stop
        # is over: ask them now, so their records arrive while it waits for them.
        for client_id in SESSION.coordinator.shards:
            runner.send_message(FINISH, None, client_id=client_id)


# --- test stop: gather, judge, check, report ----------------------------------------------------------


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    runner = environment.runner
    SESSION.generator.stop()
    gc.unfreeze()  # what test_start froze may be garbage by the next test in the web UI
    run = getattr(environment, "wallet_suite_run", None)
    if run is not None and not isinstance(runner, MasterRunner):
        _resolve(environment, run)
    if isinstance(runner, WorkerRunner):
        if run is not None:
            runner.send_message(RECORD, _worker_report(run).to_message())
        return
    if isinstance(runner, MasterRunner):
        if not SESSION.coordinator.shards or SESSION.options is None:
            return
        record, lost = SESSION.coordinator.collect(runner, RECORD_WAIT_SECONDS, gevent.sleep)
        options = SESSION.options
        seeding = SESSION.coordinator.totals()
        generator = [
            f"shard {SESSION.coordinator.shards[cid].index + 1}: {_cpu_line(r)}"
            for cid, r in sorted(
                SESSION.coordinator.reports.items(),
                key=lambda i: SESSION.coordinator.shards[i[0]].index,
            )
        ]
        if lost:
            SESSION.notes.append(
                f"the workers of shards {', '.join(str(i + 1) for i in lost)} sent no record:"
                f" {len(record.unverified)} wallets checked by database invariants only"
            )
    else:
        if run is None:
            return
        record, options = run.record, run.options
        result = run.seeding.get("wallets")
        seeding = (result.created, result.planned, result.seconds) if result else (0, 0, 0.0)
        generator = [SESSION.generator.describe()]
    SESSION.outcome = finish(environment, record, options, seeding, generator)


def _resolve(environment: Any, run: SuiteRun) -> None:
    """Learn the fate of in-doubt operations by re-sending them with their own keys."""
    if not run.in_doubt:
        return
    if not run.options.resolve_indeterminate:
        log.info("%d operations stay indeterminate (--resolve-indeterminate no)", len(run.in_doubt))
        return
    client = FastHttpSession(
        environment.host,
        environment.events.request,
        user=None,
        network_timeout=run.options.request_timeout,
        connection_timeout=run.options.request_timeout,
    )
    # bounded: a worker's master waits RECORD_WAIT_SECONDS for the record that follows
    resolved, left = resolve_in_doubt(
        client, run.in_doubt, run.record, pause=gevent.sleep, deadline_s=RECORD_WAIT_SECONDS / 2
    )
    log.info(
        "re-sent in-doubt operations with their keys: %d resolved, %d still in doubt",
        resolved,
        left,
    )


def _worker_report(run: SuiteRun) -> WorkerReport:
    result = run.seeding.get("wallets")
    samples = SESSION.generator.samples
    return WorkerReport(
        record=run.record,
        created=result.created if result else 0,
        planned=result.planned if result else 0,
        seed_seconds=result.seconds if result else 0.0,
        cpu_busy_share=SESSION.generator.busy_share,
        cpu_peak=max(samples, default=0.0),
    )


def _cpu_line(report: WorkerReport) -> str:
    line = f"peak {report.cpu_peak:.0f}%, above 90% for {report.cpu_busy_share:.0%} of the run"
    if report.cpu_busy_share > 0.5:
        line += ": this worker was the bottleneck"
    return line


def finish(
    environment: Any,
    record: RunRecord,
    options: SuiteOptions,
    seeding: tuple[int, int, float],
    generator: list[str],
) -> RunOutcome:
    """Judge the thresholds, save the record, run the check, save its report: in that order,
    so nothing the user ran is lost if the check fails."""
    outcome = RunOutcome(
        record=record,
        options=options,
        host=environment.host or "",
        embedded=SESSION.target is not None,
        seconds=max(time.time() - SESSION.started, 1e-9),
        seeding=seeding,
        generator=generator,
        notes=list(SESSION.notes),
    )
    outcome.p95_ms = mutation_p95(environment.runner.stats)
    outcome.thresholds = judge(record, options, outcome.p95_ms)
    report_dir = Path(options.report_dir) / options.run_id
    outcome.record_path = report_dir / "run-record.json"
    saved = _save("the run record", outcome.record_path, record.save)
    outcome.consistency, outcome.check_failed = check(record, options)
    outcome.consistency_path = Path(options.consistency_report or report_dir / "consistency.json")
    saved &= _save("the consistency report", outcome.consistency_path, outcome.consistency.save)
    outcome.check_failed |= not saved
    return outcome


def _save(what: str, path: Path, save: Any) -> bool:
    """Write a report; a path that cannot be written is one line (and exit code 2), never a
    traceback that would swallow the verdict."""
    try:
        save(path)
        return True
    except OSError as error:
        print(
            f"wallet suite: cannot write {what} to {path}: {error.strerror or error}",
            file=sys.stderr,
        )
        return False


def check(record: RunRecord, opts: SuiteOptions) -> tuple[ConsistencyReport, bool]:
    """The consistency check of this run, and whether it could not run at all. Never raises."""
    if not opts.pg_dsn:
        log.warning("wallet suite: consistency NOT CHECKED: no --pg-dsn for the external --host")
        return not_checked(record, "no --pg-dsn was given for the external --host"), False
    log.info("consistency check: waiting up to %.0fs for the projectors", opts.settle_timeout)
    try:
        report = run_check(
            opts.pg_dsn,
            record,
            schema=Schema.with_overrides(opts.schema_overrides),
            settle_timeout=opts.settle_timeout,
            sleep=gevent.sleep,
        )
        return report, False
    except CheckError as error:
        message = f"the consistency check could not run: {error}"
        print(f"wallet suite: {message}", file=sys.stderr, flush=True)
        return not_checked(record, message, redact_dsn(opts.pg_dsn)), True


# --- the end -------------------------------------------------------------------------------------


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or SESSION.outcome is None:
        return
    if environment.process_exit_code in (None, 0):
        environment.process_exit_code = SESSION.outcome.exit_code


@events.quit.add_listener
def _on_quit(exit_code: int, **_: Any) -> None:
    if SESSION.outcome is not None:
        print("\n".join(SESSION.outcome.summary_lines()), flush=True)
    elif SESSION.notes:
        print("\n".join(SESSION.notes), flush=True)
    if SESSION.target is not None:
        SESSION.target.stop()


__all__ = ["ReadYourWritesUser", "suite_run"]
