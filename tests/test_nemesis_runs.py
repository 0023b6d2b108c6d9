"""Faults during the load, as users run them: real `locust --headless` runs with --nemesis on the
embedded target (each built-in fault alone, then a mixed schedule, then the same with a fault
switch of the reference on), --nemesis-command against a service the test runs itself, and bad
specs that must stop before any load."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reference_wallet.launcher import free_port
from tests.locust_support import (
    PROJECT_ROOT,
    LocustRun,
    closed_port,
    locust_command,
    locust_env,
    start_headless,
)

pytestmark = pytest.mark.timeout(240)

LOAD = ("-u", "6", "-r", "6", "--only-summary", "--wallets", "20", "--settle-timeout", "20")
MUTATIONS = ("/wallets/[id]/credit", "/wallets/[id]/debit", "/wallets/[id]/transfer")


@dataclass
class FaultRun:
    locust: LocustRun
    faults: list[dict]  # faults.json's
    report: dict  # consistency.json

    def explain(self) -> str:
        return self.locust.explain()


def run_with_faults(
    tmp_path: Path, spec: str, *args: str, seconds: int = 6, env: dict | None = None
) -> FaultRun:
    reports, base = tmp_path / "reports", tmp_path / "stats"
    completed = subprocess.run(
        locust_command(
            "--headless",
            *LOAD,
            *("-t", f"{seconds}s", "--nemesis", spec, "--nemesis-seed", "1"),
            *("--report-dir", str(reports), "--json-file", str(base)),
            *args,
        ),
        cwd=PROJECT_ROOT,
        env={**locust_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    run = LocustRun(
        completed.returncode, completed.stdout, completed.stderr, base.with_suffix(".json")
    )
    folders = list(reports.glob("*/faults.json"))
    assert len(folders) == 1, run.explain()
    faults = json.loads(folders[0].read_text())["faults"]
    report = json.loads((folders[0].parent / "consistency.json").read_text())
    return FaultRun(run, faults, report)


def failures_apart_from(
    run: FaultRun, margin_before: float = 1.5, margin_after: float = 3.0
) -> list:
    """Requests that failed in a second far from every fault (from a little before it was
    injected to a little after the service answered again): (type, name, second, failures)."""
    windows = []
    for f in run.faults:
        over = f["epoch"] + (f["healed_at"] - f["started_at"]) + (f["answered_after"] or 0)
        windows.append((f["epoch"] - margin_before, over + margin_after))
    apart = []
    for entry in run.locust.stats().values():  # Locust's failures per second, in wall time
        for second, failed in entry["num_fail_per_sec"].items():
            if entry["method"] != "NEMESIS" and not any(a <= int(second) <= b for a, b in windows):
                apart.append((entry["method"], entry["name"], int(second), failed))
    return apart


BUILT_IN = {
    "kill-service": "",
    "restart-projectors": "",
    "kill-projectors": "",
    "restart-postgres-fast": "",
    "restart-postgres-immediate": "",
    "pause-postgres": ":duration=1s",
    "drop-connections": "",
}
# Every built-in fault, two or three to a run, each due well after the one before has healed
# (one Locust run costs about 10 s of the suite's time, a fault about 1-4 s): the slow ones last.
ONE_AFTER_ANOTHER = (
    ("kill-service", "restart-postgres-immediate"),
    ("pause-postgres", "kill-projectors"),
    # restart-projectors first: it takes 1-11 s, and its backlog must be seen caught up
    ("restart-projectors", "drop-connections", "restart-postgres-fast"),
)
SPACING = 3.0  # seconds between the faults of one run
TAIL = 4.0  # seconds of load after the last is due: for its recovery to be seen


def test_every_built_in_fault_is_in_one_of_the_runs() -> None:
    assert sorted(f for group in ONE_AFTER_ANOTHER for f in group) == sorted(BUILT_IN)


@pytest.mark.parametrize("faults", ONE_AFTER_ANOTHER, ids="+".join)
def test_each_built_in_fault_ends_valid_with_its_recovery_and_failures_only_around_it(
    faults: tuple[str, ...], tmp_path: Path
) -> None:
    spec = ",".join(
        f"{fault}:first={1.5 + SPACING * k}s:every=60s:count=1{BUILT_IN[fault]}"
        for k, fault in enumerate(faults)
    )
    run = run_with_faults(tmp_path, spec, seconds=int(1.5 + SPACING * (len(faults) - 1) + TAIL))
    locust = run.locust
    assert "Traceback" not in locust.output, run.explain()
    assert locust.returncode == 0, run.explain()
    assert locust.verdict() == "PASS", run.explain()
    assert [event["fault"] for event in run.faults] == list(faults), run.faults
    assert 1.0 <= run.faults[0]["started_at"] <= 2.5, run.faults[0]
    stats = locust.stats()
    for event in run.faults:
        fault = event["fault"]
        assert not event["error"], event
        assert event["answered_after"] is not None, event
        assert event["caught_up_after"] is not None, event
        assert stats[("NEMESIS", fault)]["num_requests"] == 1, run.explain()
        assert stats[("NEMESIS", fault)]["num_failures"] == 0, run.explain()
        assert ("NEMESIS", f"{fault} (2xx again)") in stats, run.explain()
        assert ("NEMESIS", f"{fault} (caught up)") in stats, run.explain()
    assert run.report["status"] == "valid" and run.report["faults"] == run.faults
    counts = ", ".join(f"{fault} x1" for fault in faults)
    assert locust.lines_starting(
        f"faults: {len(faults)} injected ({counts}; nemesis seed 1); all over before the check"
    ), run.explain()
    assert failures_apart_from(run) == [], run.explain()
    for name in MUTATIONS:
        assert locust.requests(name) > 0, run.explain()


# Every kind, due one after another from 1 s on (one due while another is on waits for it).
MIXED = (
    "kill-service:first=1s:every=60s,drop-connections:first=1.5s:every=60s,"
    "pause-postgres:first=2s:every=60s:duration=1s,restart-postgres-fast:first=2.5s:every=60s,"
    "restart-projectors:first=3s:every=60s"
)
MIXED_LOAD = ("--replay-ratio", "0.2", "--hot-wallets", "2", "--seed", "5")


def test_a_mixed_schedule_with_replays_and_hot_wallet_transfers_is_valid_with_nothing_in_doubt(
    tmp_path: Path,
) -> None:
    run = run_with_faults(tmp_path, MIXED, *MIXED_LOAD, seconds=8)
    locust = run.locust
    assert "Traceback" not in locust.output, run.explain()
    assert locust.returncode == 0, run.explain()
    assert locust.verdict() == "PASS", run.explain()
    injected = [f["fault"] for f in run.faults]
    # the slow ones last: a loaded machine may not reach them in 8 s, the first three always
    assert injected[:3] == ["kill-service", "drop-connections", "pause-postgres"], run.faults
    assert all(not f["error"] for f in run.faults), run.faults
    assert locust.lines_starting("operations: ") and ", 0 indeterminate;" in locust.output, (
        run.explain()
    )
    assert locust.requests("/wallets/[id]/transfer (replay)") > 0, run.explain()
    assert locust.requests("/wallets/[id]/transfer") > 0, run.explain()
    record = json.loads(next((tmp_path / "reports").glob("*/run-record.json")).read_text())
    hot = [t for w, t in record["wallets"].items() if "-h0" in w]
    assert hot and any(t["ok_count"].get("transfer_out") for t in hot), hot[:1]
    assert sum(t["replays"] for t in hot) > 0, hot[:1]


def test_the_mixed_schedule_with_outbox_drop_on_finds_that_cause_and_nothing_else(
    tmp_path: Path,
) -> None:
    run = run_with_faults(
        tmp_path,
        MIXED,
        *MIXED_LOAD,
        seconds=8,
        env={"REFERENCE_WALLET_FAULTS": "outbox-drop=0.05"},
    )
    assert run.locust.returncode == 1, run.explain()
    assert run.report["status"] == "invalid", run.explain()
    assert [c["key"] for c in run.report["causes"]] == ["outbox_rows_missing"], run.explain()
    assert not run.report["unexplained"], run.report["unexplained"]
    assert all(not f["error"] for f in run.faults), run.faults


# --- the user's own service: --nemesis-command -----------------------------------------------

SERVICE_CONTROL = """\
import os, signal, subprocess, sys, time, urllib.request
pid_file, log, dsn, port = sys.argv[2:6]
if sys.argv[1] == "kill":
    os.kill(int(open(pid_file).read()), signal.SIGKILL)
    sys.exit(0)
process = subprocess.Popen(
    [sys.executable, "-m", "reference_wallet", "serve", "--pg-dsn", dsn, "--port", port],
    stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
)
open(pid_file, "w").write(str(process.pid))
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ledger/health", timeout=1)
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
"""


@pytest.fixture
def service_by_pid_file(database_dsn: str, tmp_path: Path):
    """A reference service that a script starts and kills by its PID file, as pm2 would:
    (url, dsn, the fault command, the heal command, the PID file)."""
    script = tmp_path / "service_control.py"
    script.write_text(SERVICE_CONTROL)
    port, pid_file = free_port(), tmp_path / "service.pid"
    common = f"{pid_file} {tmp_path / 'service.log'} '{database_dsn}' {port}"
    control = f"{sys.executable} {script}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    subprocess.run(f"{control} start {common}", shell=True, check=True, cwd=PROJECT_ROOT, env=env)
    try:
        yield (
            f"http://127.0.0.1:{port}",
            database_dsn,
            f"{control} kill {common}",
            f"cd {PROJECT_ROOT} && PYTHONPATH={PROJECT_ROOT} {control} start {common}",
            pid_file,
        )
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_nemesis_command_kills_and_restarts_the_users_service_and_the_run_is_valid(
    service_by_pid_file, tmp_path: Path
) -> None:
    url, dsn, kill, start, pid_file = service_by_pid_file
    first_pid = pid_file.read_text()
    run = run_with_faults(
        tmp_path,
        "command:first=2s:every=60s:count=1:duration=0.5s",
        *("--host", url, "--pg-dsn", dsn, "--resolve-indeterminate", "yes"),
        *("--nemesis-command", kill, "--nemesis-heal", start),
    )
    locust = run.locust
    assert locust.returncode == 0, run.explain()
    assert locust.verdict() == "PASS", run.explain()
    (event,) = run.faults
    assert event["fault"] == "command" and not event["error"], event
    assert event["answered_after"] is not None and event["caught_up_after"] is not None, event
    assert pid_file.read_text() != first_pid  # killed and started again (before and during)
    assert locust.lines_starting("  fault command at "), run.explain()
    assert failures_apart_from(run) == [], run.explain()


def test_a_heal_command_that_hangs_during_the_run_is_timed_out_and_fails_the_run(
    module_reference_wallet, tmp_path: Path
) -> None:
    service = module_reference_wallet
    mark = tmp_path / "healed-once"
    heal = f"if [ -e {mark} ]; then sleep 60; fi; touch {mark}"  # the pre-flight's heal works
    run = run_with_faults(
        tmp_path,
        "command:first=1s:every=60s:count=1",
        *("--host", service.url, "--pg-dsn", service.dsn),
        *("--nemesis-command", "true", "--nemesis-heal", heal, "--nemesis-timeout", "1"),
        seconds=4,
    )
    locust = run.locust
    assert locust.returncode == 1, run.explain()
    timed_out = f"its heal failed: --nemesis-heal {heal!r} timed out after 1s"
    assert locust.verdict() == f"FAIL: faults: 1 injected, 0 over before the check; {timed_out}", (
        run.explain()
    )
    (event,) = run.faults
    assert event["error"] == timed_out, event
    assert locust.failures("command", "NEMESIS") == 1, run.explain()
    assert run.report["status"] == "valid", run.explain()  # the check still ran


# --- bad specs: one line, exit 2, before any load ----------------------------------------------
# (every message of the spec parser and of a failing command: tests/test_nemesis.py; here the
# three ways they reach the command line: the options, the target check, the pre-flight)

BAD = {
    "unknown fault": (
        ["--nemesis", "kill-everything:every=5s"],
        "wallet suite: --nemesis: unknown fault 'kill-everything'; known: kill-service,",
    ),
    "built-in fault on your own host": (
        ["--nemesis", "pause-postgres:every=5s", "--host", "{host}"],
        "wallet suite: --nemesis: pause-postgres acts on the embedded target's processes, not on",
    ),
    "a command that hangs": (
        [
            "--nemesis",
            "command:every=5s",
            "--nemesis-command",
            "sleep 60",
            "--host",
            "{host}",
            "--nemesis-timeout",
            "1",
        ],
        "wallet suite: before the load: --nemesis-command 'sleep 60' timed out after 1s",
    ),
}


@pytest.fixture(scope="module")
def bad_nemesis_runs(module_reference_wallet, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every BAD case started at once (each must stop before any load; together they overlap
    their start-up): case -> (process, message, report dir)."""
    started = {}
    for case, (args, message) in BAD.items():
        args = [a.replace("{host}", module_reference_wallet.url) for a in args]
        if "--host" not in args:  # never the embedded target: the spec must stop before it
            args += ["--host", f"http://127.0.0.1:{closed_port()}"]
        tmp_path = tmp_path_factory.mktemp("bad-nemesis")
        reports = tmp_path / "reports"
        process = start_headless(
            *LOAD, "-t", "5s", "--report-dir", str(reports), *args, tmp_path=tmp_path, stats=False
        )
        started[case] = (process, message, reports)
    yield started
    for process, _, _ in started.values():
        process.stop()


@pytest.mark.parametrize("case", BAD)
def test_a_bad_nemesis_exits_2_with_one_line_before_any_load(case: str, bad_nemesis_runs) -> None:
    started, message, reports = bad_nemesis_runs[case]
    run = started.finish(timeout=60)
    assert run.returncode == 2, run.explain()
    assert "Traceback" not in run.output, run.explain()
    assert [line for line in run.output.splitlines() if message in line] == [
        line for line in run.output.splitlines() if line.startswith("wallet suite:")
    ], run.explain()
    assert len(run.lines_starting(message)) == 1, run.explain()
    assert "/wallets" not in run.output.replace(message, ""), run.explain()
    assert not reports.exists()
