"""The suite as users run it: real `locust --headless` processes against the reference service,
each a few seconds of load on 127.0.0.1, judged by their exit code, their verdict block and
Locust's own request statistics."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.leftovers import embedded_postmaster, orphaned_parts
from tests.locust_support import (
    PROJECT_ROOT,
    LocustRun,
    closed_port,
    locust_command,
    locust_env,
    run_headless,
    start_headless,
)
from tests.polling import wait_until
from wallet_users.record import OK, RunRecord

pytestmark = pytest.mark.timeout(240)

MUTATIONS = ("/wallets/[id]/credit", "/wallets/[id]/debit", "/wallets/[id]/transfer")
LOAD = ("-u", "6", "-r", "6", "-t", "8s", "--only-summary", "--wallets", "20")


def against(service, tmp_path: Path, *args: str, with_dsn: bool = True) -> LocustRun:
    """A short headless run against a reference service, its reports under tmp_path; with_dsn
    gives the consistency check the service's database."""
    return run_headless(
        *LOAD,
        "--host",
        service.url,
        *(["--pg-dsn", service.dsn] if with_dsn else []),
        "--report-dir",
        str(tmp_path / "reports"),
        "--settle-timeout",
        "30",
        *args,
        tmp_path=tmp_path,
    )


def summary_figure(run: LocustRun, pattern: str) -> int:
    match = re.search(pattern, run.output, re.M)
    assert match, f"{pattern!r} not in the summary:\n{run.explain()}"
    return int(match.group(1))


def run_record_of(run: LocustRun, report_dir: Path) -> RunRecord:
    lines = run.lines_starting("run record: ")
    assert len(lines) == 1, run.explain()
    path = Path(lines[0].removeprefix("run record: ").strip())
    if not path.is_absolute():
        path = Path(__file__).resolve().parent.parent / path
    assert path.is_relative_to(report_dir), path
    return RunRecord.load(path)


def test_a_clean_run_exits_0_with_a_pass_verdict_and_stats_for_every_operation(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = against(service, tmp_path, "--run-id", "clean-run", "--seed", "11")
    assert run.returncode == 0, run.explain()
    assert run.verdict() == "PASS", run.explain()
    assert "Traceback" not in run.output
    for name in MUTATIONS:
        assert run.requests(name) > 0, f"no {name} requests:\n{run.explain()}"
        assert run.failures(name) == 0, run.explain()
    assert run.requests("/wallets") >= 20  # the seeding
    # requests are grouped by route, never one entry per wallet
    assert not [name for _, name in run.stats() if "lt-" in name]
    assert re.search(r"^wallets: 20/20 created \(100\.0%\)", run.output, re.M), run.explain()

    record = run_record_of(run, tmp_path / "reports")
    assert record.run_id == "clean-run"
    seeded = [w for w in record.wallets if w.startswith("lt-clean-run-w")]
    assert len(seeded) == 20
    assert record.creation_counts()[OK] >= 20
    answered = sum(run.requests(name) for name in MUTATIONS)
    # every request Locust counted was booked; what the stop cut short stays indeterminate
    assert 0 < record.operations[OK] <= answered <= sum(record.operations.values())
    assert summary_figure(run, r"^operations: (\d+) ok") == record.operations[OK]


def test_a_threshold_that_cannot_pass_exits_1_with_a_line_naming_it(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = against(service, tmp_path, "--max-p95-ms", "0.001")
    assert run.returncode == 1, run.explain()
    assert run.verdict().startswith("FAIL: p95 latency"), run.explain()
    failed = [line.strip() for line in run.output.splitlines() if line.strip().startswith("FAIL ")]
    assert len(failed) == 1 and failed[0].startswith("FAIL p95 latency"), run.explain()
    assert failed[0].endswith("> 0.001 ms")


BAD_INPUTS = {
    "unreachable host": (
        ["--host", "http://127.0.0.1:{closed}"],
        "wallet suite: cannot reach --host http://127.0.0.1:{closed}",
    ),
    "all weights zero": (
        ["--credit-weight", "0", "--debit-weight", "0", "--transfer-weight", "0"],
        "wallet suite: --credit-weight, --debit-weight, --transfer-weight: at least one must be",
    ),
    "negative weight": (["--debit-weight", "-3"], "wallet suite: --debit-weight: -3 is below 0"),
    "min above max": (
        ["--debit-amount", "300-10"],
        "wallet suite: --debit-amount: minimum 300 is above maximum 10",
    ),
    "not a number": (["--wallets", "abc"], "wallet suite: --wallets: 'abc' is not a whole number"),
    "bad arrival rate": (
        ["--arrival-rate", "lots"],
        "wallet suite: --arrival-rate: 'lots' is not a number",
    ),
    "unknown profile": (
        ["--config", "conf/no-such-profile.conf"],
        "Unable to open config file: conf/no-such-profile.conf",
    ),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every BAD_INPUTS case started at once (each is its own process that must stop before
    any load; together they overlap their start-up): case -> (process, message, report dir)."""
    closed = str(closed_port())
    started = {}
    for case, (args, message) in BAD_INPUTS.items():
        args = [arg.replace("{closed}", closed) for arg in args]
        if "--host" not in args:  # never the embedded target: a bad option must stop before it
            args += ["--host", f"http://127.0.0.1:{closed}"]
        tmp_path = tmp_path_factory.mktemp("bad-input")
        report_dir = tmp_path / "reports"
        process = start_headless(*LOAD, "--report-dir", str(report_dir), *args, tmp_path=tmp_path)
        started[case] = (process, message.replace("{closed}", closed), report_dir)
    yield started
    for process, _, _ in started.values():
        process.stop()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_no_traceback_before_any_load(
    case: str, bad_input_runs: dict[str, tuple]
) -> None:
    started, message, report_dir = bad_input_runs[case]
    run = started.finish(timeout=60)
    assert run.returncode == 2, run.explain()
    assert "Traceback" not in run.output, run.explain()
    errors = [line for line in run.output.splitlines() if message in line]
    assert len(errors) == 1, run.explain()
    assert len(run.lines_starting("wallet suite:")) <= 1, run.explain()
    # no load: no requests, no statistics, no run record
    assert "/wallets" not in run.output.replace(message, ""), run.explain()
    assert not run.stats()
    assert not report_dir.exists()


def test_tags_select_only_the_tagged_operation(reference_wallet, tmp_path: Path) -> None:
    service = reference_wallet()
    run = against(service, tmp_path, "--tags", "transfer")
    assert run.returncode == 0, run.explain()
    assert run.requests("/wallets/[id]/transfer") > 0, run.explain()
    mutations = {
        name
        for method, name in run.stats()
        # LAG and BACKLOG are the projectors' lag, read in the database: not requests to it
        if method not in ("POST", "LAG", "BACKLOG") or name.startswith("/wallets/[id]/")
    }
    assert mutations <= {"/wallets/[id]/transfer", "/wallets/[id]/transfer (replay)"}, mutations


def test_every_replay_is_answered_identically_by_the_reference_service(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = against(service, tmp_path, "--replay-ratio", "1")
    assert run.returncode == 0, run.explain()
    assert run.verdict() == "PASS", run.explain()
    for name in MUTATIONS:
        assert run.requests(f"{name} (replay)") > 0, run.explain()
        assert run.failures(f"{name} (replay)") == 0, run.explain()
    replays = summary_figure(run, r"replays (\d+) \(0 answered differently\)")
    assert replays > 0


def test_a_service_that_executes_replays_again_fails_the_run_even_with_no_database_to_check(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet(faults="replay-twice")
    run = against(service, tmp_path, "--replay-ratio", "1", with_dsn=False)
    mismatched = summary_figure(run, r"replays \d+ \((\d+) answered differently\)")
    assert mismatched > 0, run.explain()
    assert sum(run.failures(f"{name} (replay)") for name in MUTATIONS) > 0, run.explain()
    assert "consistency NOT CHECKED" in run.output
    assert run.verdict().startswith("FAIL: idempotent replays"), run.explain()
    assert run.lines_starting("  FAIL idempotent replays"), run.explain()
    assert run.returncode == 1, run.explain()


def test_the_hot_wallet_users_refusals_for_funds_are_not_errors(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = against(
        service,
        tmp_path,
        "--hot-wallets",
        "2",
        "--initial-balance",
        "100-200",
        # debits outweigh credits, so the two wallets run dry and debits are refused
        "--credit-weight",
        "1",
        "--debit-weight",
        "4",
        "--credit-amount",
        "10-50",
        "--debit-amount",
        "50-200",
        "HotWalletUser",
    )
    assert run.returncode == 0, run.explain()
    assert run.verdict() == "PASS", run.explain()
    refused = summary_figure(run, r"^operations: \d+ ok, (\d+) refused for funds")
    assert refused > 0, run.explain()
    assert summary_figure(run, r"refused for funds, (\d+) rejected") == 0
    assert run.requests("/wallets/[id]/debit") > 0
    for name in MUTATIONS:
        assert run.failures(name) == 0, run.explain()
    # the success ratio leaves the refusals out: ok / (ok + other errors)
    assert (
        summary_figure(run, r"ok +operation success .*, (\d+) refused for funds apart\)") == refused
    )
    record = run_record_of(run, tmp_path / "reports")
    assert record.refused_for_funds() == refused
    assert any(w.startswith(f"lt-{record.run_id}-h") for w in record.wallets)


def test_with_no_host_the_run_starts_and_uses_the_embedded_reference_service_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    postgres_before = embedded_postmaster()
    run = run_headless(
        *LOAD, "--report-dir", str(tmp_path / "reports"), tmp_path=tmp_path, timeout=180
    )
    # checked at once: a part left running would stop by itself within a second or two
    assert orphaned_parts() == [], "the embedded target left processes behind"
    if postgres_before is None:
        assert embedded_postmaster() is None, "the embedded PostgreSQL was left running"
    assert run.returncode == 0, run.explain()
    assert run.verdict() == "PASS", run.explain()
    assert re.search(r"target http://127\.0\.0\.1:\d+ \(embedded reference_wallet\)", run.output)
    for name in MUTATIONS:
        assert run.requests(name) > 0, run.explain()


# --- the run time is the load's -------------------------------------------------------------------


def test_the_run_time_counts_from_the_end_of_seeding_so_a_long_seeding_still_loads(
    reference_wallet, tmp_path: Path
) -> None:
    """Locust's --run-time timer starts with the test, before test_start has seeded: a seeding
    longer than -t used to take the whole run, send nothing and pass. Now the load gets its -t."""
    # every commit held 100 ms: 300 wallets seed in seconds (2,000 at full speed took 29 s of
    # the suite's time with their drain and check)
    service = reference_wallet("", ["--slow-commit-ms", "100", "--slow-commit-share", "1"])
    run = run_headless(
        *("-u", "4", "-r", "4", "-t", "1s", "--only-summary", "--wallets", "300"),
        *("--host", service.url, "--pg-dsn", service.dsn, "--settle-timeout", "30"),
        # the operations a 100-ms commit leaves in flight at the stop, learnt by their keys
        *("--resolve-indeterminate", "yes"),
        *("--report-dir", str(tmp_path / "reports")),
        tmp_path=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.explain()
    seeded = re.search(r"^wallets: 300/300 created \(100\.0%\) in ([\d.]+)s", run.output, re.M)
    assert seeded, run.explain()
    assert float(seeded.group(1)) > 1.0, "the seeding did not outlast -t: nothing shown"
    assert summary_figure(run, r"^operations: (\d+) ok") > 0, run.explain()
    assert re.search(r"^throughput: [\d.]+ ops/s over 1s", run.output, re.M), run.explain()
    assert run.lines_starting("  ok   load: "), run.explain()
    assert run.verdict() == "PASS", run.explain()


def test_a_run_stopped_while_seeding_fails_saying_so_with_exit_code_1(
    reference_wallet, tmp_path: Path
) -> None:
    """No load, no pass: SIGTERM during the seeding of 20,000 wallets."""
    service = reference_wallet()
    args = locust_command(
        *("--headless", "-u", "4", "-r", "4", "-t", "10s", "--wallets", "20000"),
        *("--host", service.url, "--pg-dsn", service.dsn, "--settle-timeout", "5"),
        *("--report-dir", str(tmp_path / "reports"), "--only-summary"),
    )
    with (tmp_path / "out").open("w+") as out, (tmp_path / "err").open("w+") as err:
        locust = subprocess.Popen(args, cwd=PROJECT_ROOT, env=locust_env(), stdout=out, stderr=err)
        try:
            # the line that says seeding has begun; its first progress line comes 4,000
            # wallets later, which took 14-59 s of the suite's time
            wait_until(
                lambda: " wallets (shard 1 of 1) at " in (tmp_path / "err").read_text(),
                60,
                "the seeding",
            )
            locust.send_signal(signal.SIGTERM)
            returncode = locust.wait(timeout=60)
        finally:
            if locust.poll() is None:
                locust.kill()
                locust.wait()
        out.seek(0), err.seek(0)
        run = LocustRun(returncode, out.read(), err.read())
    assert "Traceback" not in run.output, run.explain()
    verdict = run.verdict()
    assert re.match(
        r"FAIL: load: no operation was acknowledged: the run stopped while seeding"
        r" \(\d+/20000 wallets created in [\d.]+s\)",
        verdict,
    ), run.explain()
    assert run.returncode == 1, run.explain()
