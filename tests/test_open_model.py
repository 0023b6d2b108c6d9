"""The open model (--arrival-rate): operations start on a fixed schedule whatever the answers do,
what cannot start is dropped and counted, and latency from the scheduled start shows what the
closed-loop figure hides. Real locust runs against the reference service, plus the pacer's
bookkeeping on its own."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import gevent
import pytest
from gevent.event import Event
from locust_support import PROJECT_ROOT, LocustRun, locust_command, locust_env
from polling import wait_until
from test_consistency_runs import FinishedRun, outbox_events, run_suite, suite_args
from test_distributed import processes_ports

from wallet_users.load.arrival import DROPPED, ArrivalCounts, ArrivalShare, Pacer
from wallet_users.load.pool import WalletPool

# rates and latencies measured against the clock: run with nothing beside them (make test)
pytestmark = [pytest.mark.timeout(120), pytest.mark.alone]

OPEN_MODEL = re.compile(
    r"open model: (?P<achieved>[\d.]+) of (?P<target>[\d.]+) ops/s scheduled;"
    r" (?P<dropped>\d+) of (?P<scheduled>\d+) dropped .*"
    r"from the scheduled start (?P<s95>[\d.]+|n/a)/(?P<s99>[\d.]+|n/a) ms,"
    r" from the send (?P<p95>[\d.]+|n/a)/(?P<p99>[\d.]+|n/a) ms"
)


def open_model(run: FinishedRun) -> dict[str, float]:
    lines = run.locust.lines_starting("open model:")
    assert len(lines) == 1, run.explain()
    match = OPEN_MODEL.match(lines[0])
    assert match, lines[0]
    return {k: float(v) for k, v in match.groupdict().items()}


# --- the pacer on its own ---------------------------------------------------------------------


def test_an_operation_that_finds_its_users_share_in_flight_is_dropped_and_reserves_nothing() -> (
    None
):
    pool = WalletPool(random.Random(1))
    pool.add("w1", Decimal(100))
    counts, fired = ArrivalCounts(), []
    answers = Event()
    pacer = Pacer(
        ArrivalShare(interval=0.001, max_in_flight=2),
        counts,
        lambda **entry: fired.append(entry),
        phase=0.0,
        clock=lambda: 1e9,  # every start is already due: no waiting
    )

    def debit() -> object:
        reservation = pool.reserve(Decimal(10))
        answers.wait()  # the service has not answered yet
        pool.rejected(reservation)
        return reservation

    for _ in range(5):
        pacer.arrive("/wallets/[id]/debit", debit)
    gevent.sleep(0)  # let the two admitted operations reach their reservations
    assert (counts.scheduled, counts.dropped) == (5, 3)
    assert [e["request_type"] for e in fired] == [DROPPED] * 3
    assert pool.wallet("w1").reserved == Decimal(10)  # only the one on the connection
    answers.set()
    pacer.in_flight.join(timeout=5)
    assert pool.wallet("w1").reserved == 0


def test_schedule_lateness_is_kept_in_tenths_of_a_millisecond_and_merges_across_processes() -> None:
    one, other = ArrivalCounts(), ArrivalCounts()
    for _ in range(98):
        one.started_late(0.00012)  # 0.12 ms
    one.started_late(0.0031)
    other.started_late(0.25)  # 250 ms: kept to the millisecond
    one.merge(other)
    assert one.lateness_ms(0.5) == 0.1
    assert one.lateness_ms(0.99) == 3.1
    assert one.lateness_ms(1.0) == 250.0
    assert ArrivalCounts().lateness_ms(0.99) is None


# --- real runs ----------------------------------------------------------------------------------


def test_a_rate_the_target_sustains_is_kept_within_2_percent_nothing_dropped_and_valid(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = run_suite(
        service.url, service.dsn, tmp_path, "--arrival-rate", "120", "WalletUser", seconds=8
    )
    figures = open_model(run)
    assert abs(figures["achieved"] - 120) <= 0.02 * 120, run.explain()
    assert figures["dropped"] == 0, run.explain()
    assert figures["scheduled"] >= 0.9 * 120 * 8, run.explain()
    assert run.report["status"] == "valid", run.explain()
    assert run.locust.returncode == 0, run.explain()


def test_far_more_than_the_connections_sustain_drops_operations_and_latency_from_schedule_shows_it(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = run_suite(
        service.url,
        service.dsn,
        tmp_path,
        *("--arrival-rate", "2400", "--max-in-flight", "40", "--max-dropped-percent", "5"),
        "WalletUser",
        seconds=5,
        users=2,  # two connections: a few hundred operations per second at most here
    )
    figures = open_model(run)
    assert figures["dropped"] > 0.3 * figures["scheduled"], run.explain()
    assert figures["s95"] > 3 * figures["p95"], run.explain()  # queued behind the connections
    assert run.report["status"] == "valid", run.explain()  # dropped operations moved no money
    verdict = run.locust.verdict()
    assert verdict.startswith("FAIL: dropped operations"), run.explain()
    assert "consistency" not in verdict, run.explain()
    assert run.locust.returncode == 1, run.explain()


def test_a_paused_service_is_in_the_p99_from_the_scheduled_start_but_not_in_the_closed_loop_p99(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    args, run_id, report_dir = suite_args(
        service.url,
        service.dsn,
        tmp_path,
        *("--arrival-rate", "200", "--max-in-flight", "2000"),
        "WalletUser",
        seconds=10,
        users=4,
    )
    with (tmp_path / "locust.out").open("w+") as out, (tmp_path / "locust.err").open("w+") as err:
        locust = subprocess.Popen(
            locust_command(*args), cwd=PROJECT_ROOT, env=locust_env(), stdout=out, stderr=err
        )
        try:
            seeded = wait_until(lambda: outbox_events(service.dsn), 30, "the seeding to start")
            wait_until(lambda: outbox_events(service.dsn) > seeded + 300, 30, "load under way")
            os.kill(service.process.pid, signal.SIGSTOP)
            try:
                time.sleep(2.0)  # the fault itself: the service answers nothing for 2 s
            finally:
                os.kill(service.process.pid, signal.SIGCONT)
            returncode = locust.wait(timeout=90)
        finally:
            if locust.poll() is None:
                locust.kill()
                locust.wait()
        out.seek(0), err.seek(0)
        run = FinishedRun(LocustRun(returncode, out.read(), err.read()), run_id, report_dir)

    figures = open_model(run)
    assert figures["s99"] >= 1000, run.explain()  # ~400 operations waited out the pause
    assert figures["p99"] < 1000, run.explain()  # only the 4 on the connections did, as sent
    assert figures["dropped"] == 0, run.explain()
    assert run.report["status"] == "valid", run.explain()


def test_with_processes_2_the_rate_is_split_over_the_workers_and_their_counts_add_up(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    run = run_suite(
        service.url,
        service.dsn,
        tmp_path,
        *("--arrival-rate", "120", "--processes", "2", *processes_ports()),
        "WalletUser",
        seconds=6,
        users=4,
    )
    figures = open_model(run)
    assert abs(figures["achieved"] - 120) <= 0.03 * 120, run.explain()
    assert figures["scheduled"] >= 0.8 * 120 * 6, run.explain()
    assert run.report["status"] == "valid", run.explain()
    assert run.locust.returncode == 0, run.explain()
