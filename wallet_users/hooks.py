"""The suite's wiring into Locust's events: options, the embedded target, seeding before any task
runs, the thresholds and the exit code, and the closing report. Importing this module registers
the listeners (locustfile.py does)."""

from __future__ import annotations

import atexit
import json
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
from locust.stats import StatsEntry

from reference_wallet.postgres import redact_dsn

from . import options as suite_options
from .consistency import CheckError, ConsistencyReport, Schema, not_checked, run_check
from .options import UsageError
from .pool import WalletPool
from .run import SuiteRun, set_suite_run, suite_run
from .saturation import GeneratorLoad
from .seeding import plan_wallets, seed
from .target import EmbeddedTarget, probe
from .thresholds import Threshold, judge, operation_counts
from .users import TASK_KINDS, HotWalletUser, ReadYourWritesUser, WalletBehaviour

log = logging.getLogger("wallet_suite")

MUTATION_PREFIX = "/wallets/[id]/"


@dataclass
class Session:
    """What lives for the whole Locust process (across the web UI's repeated tests)."""

    target: EmbeddedTarget | None = None
    generator: GeneratorLoad = field(default_factory=GeneratorLoad)
    verdict: list[Threshold] = field(default_factory=list)
    consistency: ConsistencyReport | None = None
    check_failed: bool = False  # the check could not run at all: exit code 2
    summary: list[str] = field(default_factory=list)
    started: float = 0.0


SESSION = Session()


def usage_error(message: str) -> None:
    """One clear line and exit code 2, before any load starts."""
    print(f"wallet suite: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


@events.init_command_line_parser.add_listener
def _register_options(parser: Any) -> None:
    suite_options.register(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return  # workers take their options and host from the master
    try:
        opts = suite_options.parse(environment.parsed_options)
        apply_weights(environment, opts.weights)
    except UsageError as error:
        usage_error(str(error))
    if environment.web_ui is not None:
        add_consistency_tab(environment)
    if environment.host:
        if not opts.pg_dsn:
            log.warning(
                "wallet suite: --host %s without --pg-dsn: the consistency check will be SKIPPED"
                " and the report will say 'not checked'",
                environment.host,
            )
        problem = probe(environment.host)
        if problem:
            usage_error(f"cannot reach --host {environment.host}: {problem}")
        return
    try:
        SESSION.target = EmbeddedTarget.start()
    except Exception as error:
        print(f"wallet suite: cannot start the embedded target: {error}", file=sys.stderr)
        sys.exit(1)
    atexit.register(SESSION.target.stop)
    environment.host = SESSION.target.url
    if not opts.pg_dsn:
        environment.parsed_options.pg_dsn = SESSION.target.dsn


def apply_weights(environment: Any, weights: dict[str, int]) -> None:
    """Rebuild the task lists from --credit/debit/transfer-weight, and drop user classes that
    --tags/--exclude-tags leave without tasks (Locust would fail to start them)."""
    tags = set(getattr(environment.parsed_options, "tags", None) or []) or None
    excluded = set(getattr(environment.parsed_options, "exclude_tags", None) or []) or None
    kept = []
    for user_class in environment.user_classes:
        if issubclass(user_class, WalletBehaviour) or user_class is HotWalletUser:
            user_class.tasks = [
                getattr(user_class, kind) for kind in TASK_KINDS for _ in range(weights[kind])
            ]
        if any(_selected(t, tags, excluded) for t in user_class.tasks):
            kept.append(user_class)
    if not kept:
        raise UsageError("no task is left after --tags/--exclude-tags and the weights")
    environment.user_classes[:] = kept


def _selected(task: Any, tags: set[str] | None, excluded: set[str] | None) -> bool:
    task_tags = getattr(task, "locust_tag_set", set())
    return (tags is None or bool(task_tags & tags)) and not (excluded and task_tags & excluded)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return
    try:
        opts = suite_options.parse(environment.parsed_options)
    except UsageError as error:  # the web UI's form can change options between tests
        log.error("wallet suite: %s", error)
        gevent.spawn(environment.runner.stop)
        return
    run = SuiteRun.start(opts)
    set_suite_run(environment, run)
    for user_class in environment.user_classes:
        if hasattr(user_class, "network_timeout"):
            user_class.network_timeout = opts.request_timeout
            user_class.connection_timeout = opts.request_timeout
    SESSION.started = time.time()
    SESSION.summary = []
    _seed(environment, run)
    SESSION.generator.start()


def _seed(environment: Any, run: SuiteRun) -> None:
    opts = run.options
    client = FastHttpSession(
        environment.host,
        environment.events.request,
        user=None,
        concurrency=50,
        network_timeout=opts.request_timeout,
        connection_timeout=opts.request_timeout,
    )
    log.info("run %s: seeding %d wallets at %s", opts.run_id, opts.wallets, environment.host)
    groups: list[tuple[str, WalletPool, list]] = [
        (
            "wallets",
            run.wallets,
            plan_wallets(opts.run_id, opts.wallets, opts.initial_balance, opts.seed),
        )
    ]
    if HotWalletUser in environment.user_classes:
        hot_seed = None if opts.seed is None else opts.seed + 1
        groups.append(
            (
                "hot wallets",
                run.hot_wallets,
                plan_wallets(opts.run_id, opts.hot_wallets, opts.initial_balance, hot_seed, "h"),
            )
        )
    for label, pool, plans in groups:
        run.seeding[label] = seed(client, plans, pool, run.record, run_id=opts.run_id, label=label)
    result = run.seeding["wallets"]
    log.info("seeded %d/%d wallets in %.1fs", result.created, result.planned, result.seconds)
    if result.success_percent < opts.min_create_success:
        message = (
            f"only {result.created} of {result.planned} wallets were created"
            f" ({result.success_percent:.1f}% < {opts.min_create_success:g}%): stopping the run"
        )
        log.error(message)
        SESSION.summary.append(f"stopped: {message}")
        environment.process_exit_code = 1
        gevent.spawn(environment.runner.quit)
    run.ready = True


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    SESSION.generator.stop()
    run = getattr(environment, "wallet_suite_run", None)
    if run is None:
        return
    p95 = mutation_p95(environment.runner.stats)
    SESSION.verdict = judge(run.record, run.options, p95)
    report_dir = Path(run.options.report_dir) / run.options.run_id
    record_path = report_dir / "run-record.json"
    run.record.save(record_path)  # saved first: nothing the user ran is lost if the check fails
    SESSION.consistency = check(run)
    consistency_path = Path(run.options.consistency_report or report_dir / "consistency.json")
    SESSION.consistency.save(consistency_path)
    SESSION.summary = [
        *summary_lines(environment, run, p95, record_path),
        "",
        *SESSION.consistency.console_lines(consistency_path),
        *SESSION.summary,
        "=" * 72,
    ]


def check(run: SuiteRun) -> ConsistencyReport:
    """The consistency check of this run; never raises: a check that cannot run says why."""
    opts = run.options
    SESSION.check_failed = False
    if not opts.pg_dsn:
        log.warning("wallet suite: consistency NOT CHECKED: no --pg-dsn for the external --host")
        return not_checked(run.record, "no --pg-dsn was given for the external --host")
    log.info(
        "consistency check: waiting up to %.0fs for the projectors, then checking",
        opts.settle_timeout,
    )
    try:
        return run_check(
            opts.pg_dsn,
            run.record,
            schema=Schema.with_overrides(opts.schema_overrides),
            settle_timeout=opts.settle_timeout,
            sleep=gevent.sleep,
        )
    except CheckError as error:
        SESSION.check_failed = True
        message = f"the consistency check could not run: {error}"
        print(f"wallet suite: {message}", file=sys.stderr, flush=True)
        return not_checked(run.record, message, redact_dsn(opts.pg_dsn))


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not SESSION.verdict:
        return
    failed = [t for t in SESSION.verdict if not t.passed]
    if environment.process_exit_code not in (None, 0):
        return
    if SESSION.check_failed:
        environment.process_exit_code = 2
    elif failed or (SESSION.consistency is not None and SESSION.consistency.valid is False):
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0


@events.quit.add_listener
def _on_quit(exit_code: int, **_: Any) -> None:
    if SESSION.summary:
        print("\n".join(SESSION.summary), flush=True)
    if SESSION.target is not None:
        SESSION.target.stop()


def mutation_p95(stats: Any) -> float | None:
    """p95 over the credit/debit/transfer requests only (not seeding, reads or replays)."""
    merged = StatsEntry(stats, "mutations", "POST")
    for entry in stats.entries.values():
        if entry.name.startswith(MUTATION_PREFIX) and not entry.name.endswith("(replay)"):
            merged.extend(entry)
    return merged.get_response_time_percentile(0.95) if merged.num_requests else None


def summary_lines(
    environment: Any, run: SuiteRun, p95: float | None, record_path: Path
) -> list[str]:
    ops = operation_counts(run.record)
    elapsed = max(time.time() - SESSION.started, 1e-9)
    replays, mismatched = run.record.replay_counts()
    seeding = run.seeding.get("wallets")
    target = "embedded reference_wallet" if SESSION.target else "external"
    lines = [
        "",
        "=" * 72,
        f"wallet suite verdict: {overall_verdict()}",
        f"run id {run.options.run_id}; target {environment.host} ({target})",
    ]
    if seeding:
        lines.append(
            f"wallets: {seeding.created}/{seeding.planned} created ({seeding.success_percent:.1f}%)"
            f" in {seeding.seconds:.1f}s"
        )
    lines += [
        f"operations: {ops.ok} ok, {ops.refused_for_funds} refused for funds, {ops.rejected} rejected,"
        f" {ops.indeterminate} indeterminate; replays {replays} ({mismatched} answered differently)",
        f"throughput: {(ops.ok + ops.refused_for_funds) / elapsed:.1f} ops/s over {elapsed:.0f}s;"
        f" mutation p95 {p95 if p95 is not None else 'n/a'} ms",
        f"load generator CPU: {SESSION.generator.describe()}",
    ]
    lines += [f"  {'ok  ' if t.passed else 'FAIL'} {t.line}" for t in SESSION.verdict]
    lines += [f"run record: {record_path}"]
    return lines


def overall_verdict() -> str:
    failed = [t.line for t in SESSION.verdict if not t.passed]
    consistency = SESSION.consistency
    if consistency is not None and consistency.valid is False:
        failed.append(consistency.headline())
    if failed:
        return "FAIL: " + "; ".join(failed)
    if consistency is None or consistency.valid is None:
        return "PASS (consistency not checked)"
    return "PASS"


def add_consistency_tab(environment: Any) -> None:
    """A 'Consistency' tab in the web UI, filled after each test stops, plus /consistency (JSON)."""
    from flask import jsonify, request

    web_ui = environment.web_ui
    web_ui.template_args["extended_tabs"] = [{"title": "Consistency", "key": "consistency"}]
    web_ui.template_args["extended_tables"] = [
        {
            "key": "consistency",
            "structure": [
                {"key": "item", "title": "Item"},
                {"key": "result", "title": "Result"},
                {"key": "detail", "title": "Detail"},
            ],
        }
    ]

    def rows() -> list[dict[str, str]]:
        report = SESSION.consistency
        if report is None:
            return [{"item": "verdict", "result": "no test has stopped yet", "detail": ""}]
        out = [{"item": "verdict", "result": overall_verdict(), "detail": report.headline()}]
        out += [
            {"item": t.name, "result": "ok" if t.passed else "FAIL", "detail": t.line}
            for t in SESSION.verdict
        ]
        for kind, group in report.groups().items():
            first = group["first"]
            out.append(
                {
                    "item": kind,
                    "result": str(group["count"]),
                    "detail": f"e.g. {first['wallet_id']}: expected {first['expected']}, found {first['found']}",
                }
            )
        for check_name, why in report.skipped.items():
            out.append({"item": check_name, "result": "skipped", "detail": why})
        for consumer, lag in report.lag_ms.items():
            out.append(
                {
                    "item": f"lag {consumer}",
                    "result": f"p99 {lag['p99']:.0f} ms",
                    "detail": f"p50 {lag['p50']:.0f} ms, p95 {lag['p95']:.0f} ms, max {lag['max']:.0f} ms",
                }
            )
        return out

    @web_ui.app.after_request
    def _extend_stats(response):
        if request.path == "/stats/requests" and response.is_json:
            payload = response.get_json()
            payload["extended_stats"] = [{"key": "consistency", "data": rows()}]
            response.set_data(json.dumps(payload))
        return response

    @web_ui.app.route("/consistency")
    def _consistency_json():
        report = SESSION.consistency
        return jsonify(report.to_dict() if report else {"status": "no test has stopped yet"})


__all__ = ["ReadYourWritesUser", "suite_run"]
