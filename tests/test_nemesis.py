"""The nemesis's deciding parts without a target: the --nemesis spec, its seeded schedule, the
options that go with it, the user's commands and their timeouts, and how faults are told."""

from __future__ import annotations

import time

import pytest

from tests.locust_support import suite_options_from
from wallet_users.nemesis import FaultEvent, NemesisSpecError, parse_spec, summary_lines
from wallet_users.nemesis.commands import CommandFailed, run_command
from wallet_users.nemesis.schedule import planned
from wallet_users.wiring.options import UsageError
from wallet_users.wiring.roles.front import nemesis_target_problem


def test_a_spec_names_faults_with_their_interval_and_parameters_after_a_colon_or_a_comma() -> None:
    specs = parse_spec(
        "kill-service:every=20s,pause-postgres:every=1m:duration=500ms,jitter=0,"
        "drop-connections:every=7:after=2s:count=3"
    )
    assert [(s.fault, s.every, s.first, s.duration) for s in specs] == [
        ("kill-service", 20.0, 20.0, 0.0),
        ("pause-postgres", 60.0, 60.0, 0.5),
        ("drop-connections", 7.0, 2.0, 0.0),
    ]
    assert specs[1].jitter == 0 and specs[2].count == 3 and specs[0].count is None
    assert parse_spec("pause-postgres:every=9s")[0].duration == 3.0  # a pause lasts by default
    assert parse_spec("restart-postgres-fast:every=9s:duration=2s")[0].duration == 2.0  # down
    assert parse_spec("") == []


BAD_SPECS = {
    "kill-everything:every=2s": "unknown fault 'kill-everything'; known: kill-service,",
    "kill-service": "kill-service: no interval: add every=DURATION",
    "kill-service:often=2s": "kill-service: unknown parameter 'often=2s'",
    "kill-service:every=soon": "kill-service every: 'soon' is not a duration",
    "kill-service:every=0.5s": "kill-service: every=0.5s is below 1s",
    "drop-connections:every=2s:duration=1s": "drop-connections: takes no duration",
    "every=2s": "'every=2s' comes before any fault's name",
    "kill-service:every=2s:jitter=3": "kill-service: jitter=3 is outside 0..1",
    "kill-service:every=2s:count=0": "kill-service: count=0 is not a positive whole number",
}


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS.items(), ids=BAD_SPECS.keys())
def test_a_bad_spec_says_what_is_wrong_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(NemesisSpecError) as error:
        parse_spec(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_schedule_is_the_same_for_the_same_seed_and_moves_with_another() -> None:
    specs = parse_spec("kill-service:every=20s,restart-projectors:every=30s")
    first, again = planned(specs, 7, 300), planned(specs, 7, 300)
    assert first == again
    assert [p.at for p in planned(specs, 8, 300)] != [p.at for p in first]
    assert [p.at for p in first] == sorted(p.at for p in first)
    assert {p.spec.fault for p in first} == {"kill-service", "restart-projectors"}


def test_jitter_keeps_each_fault_within_half_its_share_of_the_interval_without_drift() -> None:
    (spec,) = parse_spec("kill-service:every=10s:first=4s:jitter=0.4")
    times = [p.at for p in planned([spec], 3, 1000)]
    assert abs(times[0] - 4) <= 0.4 * 4 / 2
    for n, at in enumerate(times[1:], start=1):
        assert abs(at - (4 + 10 * n)) <= 0.4 * 10 / 2 + 1e-9  # around its nominal time, always
    assert len(times) in (99, 100)


def test_without_jitter_faults_fall_on_their_nominal_times_and_count_bounds_them() -> None:
    specs = parse_spec(
        "kill-service:every=5s:first=1s:jitter=0:count=3,drop-connections:every=2s:jitter=0"
    )
    at = [(p.at, p.spec.fault) for p in planned(specs, 1, 12)]
    assert at == [
        (1.0, "kill-service"),
        (2.0, "drop-connections"),
        (4.0, "drop-connections"),
        (6.0, "kill-service"),
        (6.0, "drop-connections"),
        (8.0, "drop-connections"),
        (10.0, "drop-connections"),
        (11.0, "kill-service"),
        (12.0, "drop-connections"),
    ]
    more = [p.spec.fault for p in planned(specs, 1, 100)].count("kill-service")
    assert more == 3


def test_adding_a_fault_to_the_spec_does_not_move_the_others() -> None:
    alone = planned(parse_spec("kill-service:every=20s"), 5, 200)
    mixed = planned(parse_spec("kill-service:every=20s,pause-postgres:every=15s"), 5, 200)
    assert [p.at for p in alone] == [p.at for p in mixed if p.spec.fault == "kill-service"]


BAD_OPTIONS = {
    "command without its command": (
        ["--nemesis", "command:every=5s"],
        "--nemesis: the 'command' fault needs --nemesis-command",
    ),
    "command never scheduled": (
        ["--nemesis-command", "pm2 stop wallex"],
        "--nemesis-command: schedule it in --nemesis, e.g. --nemesis command:every=20s",
    ),
    "heal without a command": (
        ["--nemesis", "kill-service:every=5s", "--nemesis-heal", "pm2 start wallex"],
        "--nemesis-heal without --nemesis-command",
    ),
    "bad seed": (["--nemesis", "kill-service:every=5s", "--nemesis-seed", "x"], "--nemesis-seed"),
    "bad timeout": (["--nemesis-timeout", "0"], "--nemesis-timeout: 0.0 is below 0.1"),
}


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_options_that_do_not_go_together_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError) as error:
        suite_options_from(*args)
    assert message in str(error.value)


def test_process_faults_need_the_embedded_target_and_drop_connections_a_database() -> None:
    def problem(*args: str, embedded: bool) -> str | None:
        return nemesis_target_problem(suite_options_from(*args), embedded, "http://wallex:3000")

    assert problem("--nemesis", "kill-service:every=5s", embedded=True) is None
    assert "kill-service acts on the embedded target's processes, not on http://wallex:3000" in (
        problem("--nemesis", "kill-service:every=5s", embedded=False) or ""
    )
    assert "drop-connections needs the target's database: give --pg-dsn" in (
        problem("--nemesis", "drop-connections:every=5s", embedded=False) or ""
    )
    assert (
        problem("--nemesis", "drop-connections:every=5s", "--pg-dsn", "dbname=x", embedded=False)
        is None
    )
    command = ("--nemesis", "command:every=5s", "--nemesis-command", "true")
    assert problem(*command, embedded=False) is None


def test_a_command_that_hangs_is_killed_with_its_children_after_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(CommandFailed) as error:
        run_command("sleep 30 & sleep 30", 0.5, "--nemesis-heal")
    assert time.monotonic() - started < 5  # the shell's children held its output pipe open
    assert str(error.value) == "--nemesis-heal 'sleep 30 & sleep 30' timed out after 0.5s"


def test_a_command_that_fails_says_its_exit_code_and_last_line() -> None:
    with pytest.raises(CommandFailed) as error:
        run_command("echo starting; echo 'no such app' >&2; exit 3", 5)
    assert str(error.value).endswith("exited with code 3: no such app")
    run_command("true", 5)


def test_the_summary_counts_the_faults_and_gives_each_its_recovery() -> None:
    events = [
        FaultEvent(
            "kill-service",
            2.0,
            2.1,
            healed_at=3.4,
            answered_after=0.2,
            caught_up_after=1.5,
            backlog_before={"ledger-projector": 4, "read-model-projector": 3},
            measured=True,
        ),
        FaultEvent(
            "command", 6.0, 6.0, healed_at=8.0, error="its heal failed: timed out", measured=True
        ),
    ]
    lines = summary_lines(events, 7)
    assert lines[0] == "faults: 2 injected (kill-service x1, command x1; nemesis seed 7); 1 FAILED"
    assert lines[1] == (
        "  fault kill-service at 2.1s, over after 1.3s; first 2xx 0.2s after its end (1.5s after it began);"
        " backlogs back to 4/3 events 1.5s after its end"
    )
    assert lines[2] == (
        "  fault command at 6.0s, over after 2.0s; its heal failed: timed out; first 2xx not seen"
    )
    assert summary_lines([], 7) == []


def test_the_consistency_tab_shows_the_plan_then_a_row_per_fault_with_its_recovery() -> None:
    from pathlib import Path

    from wallet_users.consistency.report import VALID, ConsistencyReport
    from wallet_users.record import RunRecord
    from wallet_users.wiring.consistency_tab import ConsistencyTab, StartedTest
    from wallet_users.wiring.outcome import RunOutcome

    opts = suite_options_from("--run-id", "n1", "--nemesis", "pause-postgres:every=30s")
    started = StartedTest("n1", "http://127.0.0.1:3000", True, "dbname=wallex", "", opts)
    events: list[FaultEvent] = []
    tab = ConsistencyTab(faults=lambda: events)
    tab.started(started)
    (plan,) = [r for r in tab.rows() if r["item"] == "nemesis"]
    assert plan["detail"].startswith("pause-postgres every 30s from 30s, for 3s")
    events.append(FaultEvent("pause-postgres", 30.0, 30.2, healed_at=33.3, answered_after=0.1))
    (live,) = [r for r in tab.rows() if r["item"] == "fault pause-postgres"]
    assert live["result"] == "at 30.2s" and "first 2xx 0.1s after" in live["detail"]
    done = RunOutcome(
        record=RunRecord("n1"),
        options=opts,
        host="http://127.0.0.1:3000",
        embedded=True,
        seconds=60,
        seeding=(10, 10, 0.1),
        generator=[],
        consistency=ConsistencyReport(VALID, "n1", counts={"wallets": 10}),
        record_path=Path("reports/n1/run-record.json"),
        faults=events,
        nemesis_seed=4,
    )
    events[0].caught_up_after, events[0].backlog_before = 2.5, {"a": 1, "b": 0}
    tab.finished(done)
    (row,) = [r for r in tab.rows() if r["item"] == "fault pause-postgres"]
    assert row["detail"] == (
        "at 30.2s, over after 3.1s; first 2xx 0.1s after its end (3.2s after it began);"
        " backlogs back to 1/0 events 2.5s after its end"
    )
    assert "faults: 1 injected (pause-postgres x1; nemesis seed 4); all over before the check" in (
        done.summary_lines()
    )
