"""What the process that owns the verdict does (a local runner, or a distributed run's master):
choose the target at start-up; during each test sample the projectors' lag and keep the
Consistency tab current; after it judge the thresholds, run the consistency check, save the
reports and set the exit code."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import gevent

from ...consistency import CheckError, ConsistencyReport, Schema, not_checked, run_check
from ...dsn import redact_dsn
from ...load.adoption import Adoption, AdoptionError, resolve
from ...load.arrival import ArrivalCounts
from ...nemesis import PROCESS_FAULTS, Nemesis, NemesisPlan
from ...nemesis.commands import CommandFailed, run_command
from ...nemesis.faults import FaultContext
from ...nemesis.recovery import BacklogReader
from ...record import OK, RunRecord
from ...record.history import FILE_NAME, RunHistory
from ...record.ids import wallet_id
from ...usage import exit_with_usage_error
from .. import options as suite_options
from ..consistency_tab import ConsistencyTab, StartedTest
from ..html_report import add_verdict_to_file
from ..options import SuiteOptions, UsageError
from ..outcome import OpenModelFigures, RunOutcome, mutation_p95
from ..projection_lag import ProjectionLagSampler
from ..target import EmbeddedTarget, probe
from ..thresholds import LoadFigures, Threshold, judge
from ..weights import apply_weights
from .base import Role

log = logging.getLogger("wallet_suite")


class FrontRole(Role):
    """The target, the verdict and the reports; subclasses say where the record comes from."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.target: EmbeddedTarget | None = None
        self.pg_dsn = ""  # the DSN as given, password included; never shown
        self.started = 0.0
        self.load_started: float | None = None  # when seeding was done and the load began
        self.load_time: float | None = None  # --run-time, taken over to time the load alone
        self.load_ended: float | None = None
        self._time_limit: gevent.Greenlet | None = None
        self.test_open = False  # a test started and not finished
        self.notes: list[str] = []
        self.outcome: RunOutcome | None = None
        self.adoption: Adoption | None = None  # this test's adopted population (--adopt-run)
        self.sampler = ProjectionLagSampler(environment.events.request.fire)
        self.nemesis = Nemesis(environment.events.request.fire, self._fault_on)
        self._nemesis_plan: NemesisPlan | None = None
        self._nemesis_dsn: str | None = None
        self._nemesis_run_id = ""
        self._nemesis_schema = ""
        self._answer_clock_on = False
        self.tab = ConsistencyTab(
            lag=lambda: self.sampler.latest,
            progress=self.progress,
            faults=lambda: self.nemesis.events,
        )

    # --- start-up ----------------------------------------------------------------------------

    def init(self) -> None:
        environment = self.environment
        if environment.parsed_options is None:
            return
        try:
            opts = suite_options.parse(environment.parsed_options)
            apply_weights(environment, opts.weights)
        except UsageError as error:
            exit_with_usage_error(str(error))
        if environment.web_ui is not None:
            from .. import web_ui  # Flask: only where there is a web UI

            web_ui.attach(environment, self)
        self._take_over_run_time()
        if environment.host:
            dsn = opts.pg_dsn  # before _use_external_host hides its password from the UI
            self._check_nemesis_target(opts, embedded=False)
            self._use_external_host(opts)
        else:
            self._check_nemesis_target(opts, embedded=True)
            self._start_embedded_target(opts)
            dsn = self.target.dsn if self.target else None
        if opts.adopt_run:
            try:
                self.adoption = adoption_of(opts, dsn)
            except AdoptionError as error:
                exit_with_usage_error(str(error))
        if opts.nemesis_command:
            self._try_nemesis_command(opts)

    def _check_nemesis_target(self, opts: SuiteOptions, embedded: bool) -> None:
        """The built-in faults act on the embedded target's processes (drop-connections only on
        its database): say so before anything starts."""
        problem = nemesis_target_problem(opts, embedded, self.environment.host or "")
        if problem:
            exit_with_usage_error(problem)

    def _try_nemesis_command(self, opts: SuiteOptions) -> None:
        """Run the command fault and its heal once before any load, so a command that fails or
        hangs is one line and exit 2 now instead of a broken run; the service must answer again
        within the timeout."""
        try:
            run_command(opts.nemesis_command, opts.nemesis_timeout, "--nemesis-command")
            if opts.nemesis_heal:
                run_command(opts.nemesis_heal, opts.nemesis_timeout, "--nemesis-heal")
        except CommandFailed as error:
            exit_with_usage_error(f"before the load: {error}")
        deadline = time.monotonic() + opts.nemesis_timeout
        while (problem := probe(self.environment.host, timeout=2)) is not None:
            if time.monotonic() > deadline:
                exit_with_usage_error(
                    f"before the load: after --nemesis-command and its heal, {self.environment.host}"
                    f" did not answer within {opts.nemesis_timeout:g}s: {problem}"
                )
            time.sleep(0.2)
        log.info("wallet suite: --nemesis-command and its heal work: the service answers again")

    def _use_external_host(self, opts: SuiteOptions) -> None:
        environment = self.environment
        problem = probe(environment.host)
        if problem:
            exit_with_usage_error(f"cannot reach --host {environment.host}: {problem}")
        if not opts.pg_dsn:
            log.warning(
                "wallet suite: --host %s without --pg-dsn: the consistency check will be SKIPPED"
                " and the report will say 'not checked'",
                environment.host,
            )
        self._hide_dsn_password()

    def _start_embedded_target(self, opts: SuiteOptions) -> None:
        environment = self.environment
        if opts.pg_dsn:
            exit_with_usage_error(
                "--pg-dsn without --host: the load would go to the embedded target but the check"
                " would read another database; name the --host that uses this database"
            )
        try:
            self.target = EmbeddedTarget.start()
        except Exception as error:
            print(f"wallet suite: cannot start the embedded target: {error}", file=sys.stderr)
            sys.exit(1)
        atexit.register(self.target.stop)
        environment.host = self.target.url

    def _hide_dsn_password(self) -> None:
        """Locust writes option values into the web UI's page source, secret ones included: keep
        the real DSN here and show the UI (and anything else reading parsed options) a redacted
        one."""
        parsed = self.environment.parsed_options
        dsn = getattr(parsed, "pg_dsn", "")
        if dsn and redact_dsn(dsn) != dsn:
            self.pg_dsn = dsn
            parsed.pg_dsn = redact_dsn(dsn)

    def _take_over_run_time(self) -> None:
        """--run-time is the load's, not the seeding's: Locust starts its timer with the test,
        before test_start has seeded (a 20,000-wallet seeding could take all of it). A headless
        run's limit is taken from Locust here, at init (main.py reads it only afterwards), and
        armed by load_began() once the wallets exist."""
        parsed = self.environment.parsed_options
        if not getattr(parsed, "headless", False) or not getattr(parsed, "run_time", None):
            return
        self.load_time = float(parsed.run_time)
        parsed.run_time = None
        parsed.load_time = self.load_time  # what the load shapes stretch over
        log.info(
            "wallet suite: --run-time %gs times the load: it starts when seeding is done",
            self.load_time,
        )

    def load_began(self) -> None:
        """Seeding is done and the users load: from now on the run time counts, and the
        nemesis's schedule."""
        self.load_started = time.time()
        if self.load_time is not None and self._time_limit is None:
            log.info("seeding done: %gs of load (--run-time) from now", self.load_time)
            self._time_limit = gevent.spawn_later(self.load_time, self._time_is_up)
        plan = self._nemesis_plan
        if plan is not None:
            if not self._answer_clock_on:  # the load's own 2xx answers time the recovery
                self.environment.events.request.add_listener(self.nemesis.clock.on_request)
                self._answer_clock_on = True
            schema = Schema.with_overrides(self._nemesis_schema)
            backlog = BacklogReader(self._nemesis_dsn, schema) if self._nemesis_dsn else None
            probe_url = f"{(self.environment.host or '').rstrip('/')}/wallets/"
            probe_url += wallet_id(self._nemesis_run_id, 0)
            self.nemesis.start(plan, self.load_started, probe_url, backlog)
            log.info("nemesis: %d kinds of fault from now (seed %d)", len(plan.specs), plan.seed)

    def _fault_on(self, on: bool) -> None:
        """Tell this process's users a fault is on (or over): read-your-writes waits count
        from its end."""
        run = getattr(self.environment, "wallet_suite_run", None)
        if run is not None:
            run.faults.begin() if on else run.faults.end()

    def heal_faults(self) -> None:
        """No more faults; heal the one injected now, before in-doubt operations are re-sent
        and the check settles."""
        plan = self._nemesis_plan
        if plan is None:
            return
        problem = self.nemesis.heal(timeout=2 * plan.context.command_timeout + 60)
        if problem:
            log.error("nemesis: %s", problem)
            self.notes.append(f"nemesis: {problem}")

    def _time_is_up(self) -> None:
        log.info("--run-time limit reached (%gs of load), shutting down", self.load_time)
        self.runner.quit()

    # --- each test -----------------------------------------------------------------------------

    def options_for_test(self) -> SuiteOptions | None:
        """This test's options (the web UI's form may change them between tests), its projection
        lag sampling started; None, and the test stopped, if they are bad."""
        self.started = time.time()
        self.load_started = None
        self.load_ended: float | None = None
        self.test_open = True
        self.notes.clear()
        try:
            opts = self._real_dsn(suite_options.parse(self.environment.parsed_options))
            if not self.environment.host and self.target is None:
                raise UsageError("no host to load: name the service (e.g. http://wallex:3000)")
        except UsageError as error:
            log.error("wallet suite: %s", error)
            gevent.spawn(self.runner.stop)
            return None
        opts, plan = self._for_this_host(opts)
        self.adoption = None
        if opts.adopt_run:
            try:
                self.adoption = adoption_of(opts, opts.pg_dsn)
                self.adoption.save(Path(opts.report_dir), opts.run_id)
                if self.adoption.warning:
                    log.warning("wallet suite: %s", self.adoption.warning)
                    self.notes.append(f"note: {self.adoption.warning}")
            except (AdoptionError, OSError) as error:
                log.error("wallet suite: %s", error)
                self.tab.finished(None, str(error))
                gevent.spawn(self.runner.stop)
                return None
        plan.adoption = self.adoption
        try:
            self._plan_nemesis(opts, plan.embedded)
        except UsageError as error:
            log.error("wallet suite: %s", error)
            gevent.spawn(self.runner.stop)
            return None
        self.tab.started(plan)
        schema = Schema.with_overrides(opts.schema_overrides)
        self.sampler.start(opts.pg_dsn, schema, opts.lag_interval)
        return opts

    def _plan_nemesis(self, opts: SuiteOptions, embedded: bool) -> None:
        """This test's faults, or none; UsageError if they cannot act on this host."""
        self._nemesis_plan, self._nemesis_dsn = None, opts.pg_dsn
        self._nemesis_run_id = opts.run_id
        if not opts.nemesis:
            return
        problem = nemesis_target_problem(opts, embedded, self.environment.host or "")
        if problem:
            raise UsageError(problem)
        seed = opts.nemesis_seed if opts.nemesis_seed is not None else opts.seed
        if seed is None:
            seed = random.randrange(1_000_000)
        self._nemesis_plan = NemesisPlan(
            specs=opts.nemesis,
            seed=seed,
            context=FaultContext(
                target=self.target if embedded else None,
                dsn=opts.pg_dsn,
                command=opts.nemesis_command,
                heal_command=opts.nemesis_heal,
                command_timeout=opts.nemesis_timeout,
            ),
        )
        self._nemesis_schema = opts.schema_overrides

    def form_problem(self, form: Any) -> str | None:
        """Why the web UI's start form cannot start a test, in one line; None if it can. Checked
        before Locust starts anything, so the page shows the reason and nothing runs."""
        if self.tab.checking:
            return "the last test is still being checked: start the next one after its verdict"
        parsed = argparse.Namespace(**vars(self.environment.parsed_options))
        for key, value in form.items():
            if hasattr(parsed, key):
                old = getattr(parsed, key)
                setattr(parsed, key, value == "true" if isinstance(old, bool) else value)
        try:
            opts = self._real_dsn(suite_options.parse(parsed))
        except UsageError as error:
            return str(error)
        host = str(form.get("host", self.environment.host or "")).strip().rstrip("/")
        embedded = self.target is not None and host in ("", self.target.url)
        if opts.adopt_run:
            try:
                adoption_of(opts, self.target.dsn if embedded else opts.pg_dsn)
            except AdoptionError as error:
                return str(error)
        if problem := nemesis_target_problem(opts, embedded, host):
            return problem
        if not host:
            return None if self.target else "the host field is empty: name the service to load"
        if self.target is not None and host == self.target.url:
            return None
        problem = probe(host, timeout=3)
        return f"cannot reach the host {host}: {problem}" if problem else None

    def _real_dsn(self, opts: SuiteOptions) -> SuiteOptions:
        """Undo _hide_dsn_password: a DSN still in its redacted form means the one given."""
        if self.pg_dsn and opts.pg_dsn == redact_dsn(self.pg_dsn):
            return dataclasses.replace(opts, pg_dsn=self.pg_dsn)
        return opts

    def _for_this_host(self, opts: SuiteOptions) -> tuple[SuiteOptions, StartedTest]:
        """Which database checks this test, and whether in-doubt operations are re-sent. With
        the embedded target, a test on it (or on an empty host field) is checked in its
        database whatever the form's DSN field holds; a host typed into the form is another
        service, checked only if a DSN was typed too, and never re-sent to (the real Wallex
        ignores keys on credit/debit/transfer)."""
        target, environment = self.target, self.environment
        choice = str(environment.parsed_options.resolve_indeterminate or "auto").strip().lower()
        warnings = []
        host = (environment.host or "").strip().rstrip("/")
        on_target = target is not None and host in ("", target.url)
        if on_target:
            environment.host = target.url  # an empty host field means the embedded target
            resolve, dsn = choice != "no", target.dsn
        elif target is not None:
            resolve = choice == "yes"
            dsn = None if opts.pg_dsn == target.dsn else opts.pg_dsn
            log.warning("wallet suite: the host is not the embedded target: %s", environment.host)
            if not resolve:
                warnings.append(
                    "the host is not the embedded target: in-doubt operations are not re-sent"
                )
        else:
            resolve, dsn = opts.resolve_indeterminate, opts.pg_dsn
        reason = ""
        if not dsn:
            reason = (
                f"no DSN was given for the external host {environment.host}:"
                " type its database into 'Pg dsn' (--pg-dsn) to have it checked"
            )
            if environment.web_ui is not None:  # headless runs said so at start-up
                log.warning("wallet suite: consistency will NOT be checked: %s", reason)
        opts = dataclasses.replace(opts, pg_dsn=dsn, resolve_indeterminate=resolve)
        plan = StartedTest(
            run_id=opts.run_id,
            host=environment.host,
            embedded=on_target,
            checked_against=redact_dsn(dsn) if dsn else None,
            not_checked_reason=reason,
            options=opts,
            warnings=warnings,
        )
        return opts, plan

    def progress(self) -> tuple[int, int, int] | None:
        """This test's operations so far (ok, rejected, indeterminate), where this process
        knows them."""
        return None

    def test_stopping(self) -> None:
        self.tab.stopping()
        self.heal_faults()

    def stop_sampling(self) -> None:
        """The load has stopped: no more lag samples; what they cost goes into the notes."""
        self.sampler.stop()
        if line := self.sampler.describe():
            self.notes.append(line)

    def finish(
        self,
        record: RunRecord,
        options: SuiteOptions,
        seeding: tuple[int, int, float],
        generator: list[str],
        arrival: ArrivalCounts | None = None,
        history: RunHistory | None = None,
    ) -> RunOutcome:
        """Judge the thresholds, save the record, run the check, save its report: in that
        order, so nothing the user ran is lost if the check fails."""
        self.test_open = False
        now = time.time()
        ended = self.load_ended or now
        load_seconds = ended - self.load_started if self.load_started is not None else 0.0
        if self.load_started is None and self.adoption is not None:  # stopped while adopting
            read = sum(1 for t in record.wallets.values() if t.base_version >= 0)
            seeding = (read, self.adoption.wallets, now - self.started)
        elif self.load_started is None:  # stopped while seeding: what it had done by then
            prefix = wallet_id(options.run_id, 0)[:-6]
            made = sum(
                1 for w, t in record.wallets.items() if w.startswith(prefix) and t.created == OK
            )
            seeding = (made, options.wallets, now - self.started)
        outcome = RunOutcome(
            record=record,
            options=options,
            host=self.environment.host or "",
            embedded=self.target is not None and self.environment.host == self.target.url,
            seconds=max(load_seconds, 1e-9),
            seeding=seeding,
            generator=generator,
            notes=list(self.notes),
            adoption=self.adoption,
        )
        stats = self.runner.stats
        outcome.p95_ms = mutation_p95(stats)
        if options.arrival_rate > 0 and arrival is not None:
            outcome.open_model = OpenModelFigures.of(options, arrival, stats)
        load = LoadFigures(
            began=self.load_started is not None,
            seconds=load_seconds,
            seeded=seeding[0],
            planned=seeding[1],
            seed_seconds=seeding[2],
            adopting=self.adoption is not None,
        )
        outcome.thresholds = judge(
            record, options, outcome.p95_ms, arrival, load, staleness_p95(stats)
        )
        report_dir = Path(options.report_dir) / options.run_id
        outcome.record_path = report_dir / "run-record.json"
        saved = _save("the run record", outcome.record_path, record.save)
        if history:
            saved &= _save("the run's history", report_dir / FILE_NAME, history.save)
        if self._nemesis_plan is not None:
            self.heal_faults()  # whoever stopped the test: nothing stays broken for the check
        outcome.consistency, outcome.check_failed = check(record, options, history)
        if self.adoption is not None:
            outcome.consistency.adoption = self.adoption.to_dict()
        if self._nemesis_plan is not None:
            self._record_faults(outcome, report_dir)
        outcome.consistency_path = Path(
            options.consistency_report or report_dir / "consistency.json"
        )
        saved &= _save("the consistency report", outcome.consistency_path, outcome.consistency.save)
        outcome.check_failed |= not saved
        self.outcome = outcome
        self.tab.finished(outcome)
        return outcome

    def _record_faults(self, outcome: RunOutcome, report_dir: Path) -> None:
        """The faults with their recovery figures: into the outcome, the consistency report,
        faults.json and a threshold that fails when one could not be injected or healed."""
        events = self.nemesis.close(wait=10)
        outcome.faults, outcome.nemesis_seed = events, self._nemesis_plan.seed
        failed = [e for e in events if not e.healed]
        line = f"faults: {len(events)} injected, {len(events) - len(failed)} over before the check"
        if failed:
            line += f"; {failed[0].error}"
        if self.nemesis.stopped_early:
            outcome.notes.append(f"nemesis: {self.nemesis.stopped_early}")
        outcome.thresholds.append(Threshold("faults", not failed, line))
        rows = [e.to_dict() for e in events]
        if outcome.consistency is not None:
            outcome.consistency.faults = rows
        path = report_dir / "faults.json"
        document = {"seed": self._nemesis_plan.seed, "faults": rows}
        _save("the faults", path, lambda p: p.write_text(json.dumps(document, indent=1)))
        outcome.faults_path = path

    # --- the end -------------------------------------------------------------------------------

    def test_stop(self) -> None:
        """Whoever stopped the test, the load is over and its timer done."""
        self.load_ended = time.time()
        limit, self._time_limit = self._time_limit, None
        if limit is not None and gevent.getcurrent() is not limit:
            limit.kill(block=False)

    def quitting(self) -> None:
        if self.test_open:
            # SIGTERM or Ctrl+C: Locust fires quitting and takes the exit code before it stops
            # the test, so the verdict would come after the code it should have set
            self.runner.stop()
        self.sampler.stop()
        self.heal_faults()
        if self.outcome is None:
            return
        if self.environment.process_exit_code in (None, 0):
            self.environment.process_exit_code = self.outcome.exit_code
        # Locust has written --html by now (before its quitting event): add the verdict
        html_file = getattr(self.environment.parsed_options, "html_file", None)
        if html_file and Path(html_file).is_file():
            add_verdict_to_file(Path(html_file), self.tab.rows())

    def quit(self, exit_code: int) -> None:
        if self.outcome is not None:
            print("\n".join(self.outcome.summary_lines()), flush=True)
        elif self.notes:
            print("\n".join(self.notes), flush=True)
        if self.target is not None:
            self.target.stop()


def adoption_of(opts: SuiteOptions, dsn: str | None) -> Adoption:
    """The population --adopt-run names, asked of the database (or the saved records)."""
    schema = Schema.with_overrides(opts.schema_overrides)
    return resolve(Path(opts.report_dir), opts.adopt_run, dsn, schema)


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


def nemesis_target_problem(opts: SuiteOptions, embedded: bool, host: str) -> str | None:
    """Why these faults cannot act on this target, in one line; None if they can."""
    if not opts.nemesis:
        return None
    names = [spec.fault for spec in opts.nemesis]
    process = [name for name in names if name in PROCESS_FAULTS]
    if process and not embedded:
        return (
            f"--nemesis: {process[0]} acts on the embedded target's processes, not on {host}:"
            " for your own service use command:every=... with --nemesis-command and --nemesis-heal"
        )
    if process and not all(hasattr(EmbeddedTarget, a) for a in ("kill_service", "pause_postgres")):
        return (
            f"--nemesis: {process[0]}: this version of the embedded target has no fault actuators"
        )
    if "drop-connections" in names and not embedded and not opts.pg_dsn:
        return "--nemesis: drop-connections needs the target's database: give --pg-dsn"
    return None


def staleness_p95(stats: Any) -> dict[str, float | None]:
    """The read-your-writes staleness p95 per endpoint, from Locust's STALE entries."""
    figures = {}
    for endpoint in ("read model", "ledger"):
        entry = stats.entries.get((f"{endpoint} staleness", "STALE"))
        figures[endpoint] = (
            entry.get_response_time_percentile(0.95) if entry and entry.num_requests else None
        )
    return figures


def check(
    record: RunRecord, opts: SuiteOptions, history: RunHistory | None = None
) -> tuple[ConsistencyReport, bool]:
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
            history=history,
        )
        return report, False
    except CheckError as error:
        message = f"the consistency check could not run: {error}"
        print(f"wallet suite: {message}", file=sys.stderr, flush=True)
        return not_checked(record, message, redact_dsn(opts.pg_dsn)), True
