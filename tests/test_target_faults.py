"""The embedded target's fault actuators against a real target under concurrent load: each fault is
injected and healed while clients keep sending, and afterwards every SQL invariant holds and every
acknowledged operation is in the database exactly once. The target has a PostgreSQL of its own
(a temporary data directory), so restarting it leaves the session's server alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from fault_workload import FaultLoad, FaultLoadRecord
from invariants import describe, find_violations, violated_kinds
from polling import wait_until
from projection import backlog
from wallet_http import WalletHttp, new_id

from tests.locust_support import PROJECT_ROOT
from wallet_users.wiring.target import EmbeddedTarget, TargetFaultError

pytestmark = pytest.mark.timeout(120)

LOAD_BEFORE = 10  # acknowledged operations before the fault, and again after the heal


@pytest.fixture(scope="module")
def target() -> Iterator[EmbeddedTarget]:
    state = Path(tempfile.mkdtemp(prefix="pgf", dir="/tmp"))  # short: the socket lives there
    target = EmbeddedTarget.start(state)
    try:
        yield target
    finally:
        target.stop()
        target.postgres.close()
        logs = sorted(state.glob("*.log"))
        texts = {path.name: path.read_text(errors="replace") for path in logs}
        shutil.rmtree(state, ignore_errors=True)
    for name, text in texts.items():
        at = text.find("Traceback")
        assert at < 0, f"{name} holds a traceback:\n{text[max(0, at - 300) : at + 3000]}"


def drained(dsn: str) -> bool:
    """The queue empty twice, 0.5 s apart: a commit cut short may land just after a read."""
    if backlog(dsn):
        return False
    time.sleep(0.5)
    return backlog(dsn) == 0


def assert_exactly_once(target: EmbeddedTarget, record: FaultLoadRecord) -> None:
    assert record.problems == [], record.problems[:5]
    wait_until(lambda: drained(target.dsn), 30, "the projectors to drain the outbox")
    violations = find_violations(target.dsn)
    assert violated_kinds(violations) == set(), describe(violations)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT w.id, w.balance, (SELECT count(*) FROM events WHERE stream_id = w.id)"
            " FROM wallets AS w WHERE w.id = ANY(%s)",
            (list(record.balances),),
        ).fetchall()
    found = {wallet_id: (balance, events) for wallet_id, balance, events in rows}
    expected = {w: (record.balances[w], record.events[w]) for w in record.balances}
    assert found == expected


def under_load(
    target: EmbeddedTarget, inject: Callable[[FaultLoad], object], heal: Callable[[], object]
) -> FaultLoadRecord:
    """Run the load, inject once LOAD_BEFORE operations are acknowledged, heal, and stop once
    LOAD_BEFORE more are: the record of what the clients were told."""
    load = FaultLoad(target.url, new_id("f")).start()
    try:
        wait_until(lambda: load.acknowledged >= LOAD_BEFORE, 20, "load before the fault")
        inject(load)
        heal()
        healed_at = load.acknowledged
        wait_until(lambda: load.acknowledged >= healed_at + LOAD_BEFORE, 30, "load after the heal")
    finally:
        record = load.stop()
    return record


def test_a_killed_service_restarted_on_its_port_loses_and_repeats_nothing(target) -> None:
    port = target.url
    record = under_load(target, lambda _: target.kill_service(), target.start_service)
    assert target.url == port and target.parts()["service"] is not None
    assert sum(record.indefinite.values()) > 0, "no request met the kill"
    assert_exactly_once(target, record)


def test_the_keys_of_commands_committed_before_a_kill_are_honoured_after_it(target) -> None:
    api = WalletHttp(target.url)
    wallet_id = new_id("k")
    assert api.create_wallet(wallet_id, "owner-k", 100).status == 201
    first = api.credit(wallet_id, 25, key=f"{wallet_id}-credit")
    assert first.status == 201
    target.kill_service()
    target.start_service()
    again = api.credit(wallet_id, 25, key=f"{wallet_id}-credit")
    assert (again.status, again.body, again.replayed) == (201, first.body, True)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        balance = conn.execute("SELECT balance FROM wallets WHERE id = %s", (wallet_id,))
        assert balance.fetchone()[0] == 125


def test_stopped_or_killed_projectors_restarted_resume_their_queue_exactly_once(target) -> None:
    def inject(_: FaultLoad) -> None:
        for kill in (False, True):  # SIGTERM, then SIGKILL (perhaps mid-batch)
            target.stop_projectors(kill=kill)
            assert target.parts()["projectors"] is None
            # the fault shows: what the clients write meanwhile waits in the queue
            wait_until(lambda: backlog(target.dsn) > 0, 10, "events queued while they are away")
            target.start_projectors()

    record = under_load(target, inject, lambda: None)
    assert_exactly_once(target, record)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_restart_under_load_is_survived_exactly_once(target, mode) -> None:
    service, projectors = target.parts()["service"], target.parts()["projectors"]
    load = {}

    def inject(_: FaultLoad) -> None:
        before = target.parts()["postgres"]
        target.restart_postgres(mode)
        load["postgres"] = (before, target.parts()["postgres"])

    record = under_load(target, inject, lambda: None)
    before, after = load["postgres"]
    assert before != after, "the postmaster was not replaced"
    # nobody died of it: the same service and projector processes carry on
    assert (target.parts()["service"], target.parts()["projectors"]) == (service, projectors)
    assert sum(record.indefinite.values()) > 0, "no request met the restart"
    assert any(answer.startswith("503 ") for answer in record.indefinite), record.indefinite
    assert_exactly_once(target, record)


def test_terminated_backends_are_replaced_without_loss_or_repeat(target) -> None:
    """What the suite's drop-connections fault does (pg_terminate_backend) to every connection of
    the service and the projectors, listener included."""
    terminated = []

    def inject(_: FaultLoad) -> None:
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            ).fetchall()
        terminated.append(len(rows))

    record = under_load(target, inject, lambda: None)
    assert terminated[0] >= 3, "too few connections to terminate"
    assert_exactly_once(target, record)


def test_a_paused_postgres_holds_requests_until_it_resumes(target) -> None:
    seen = {}

    def inject(load: FaultLoad) -> None:
        target.pause_postgres()
        seen["states"] = {p.status() for p in target.postgres.processes()}
        acknowledged = load.acknowledged
        time.sleep(1.0)  # the fault's length, not a synchronisation
        seen["acknowledged while frozen"] = load.acknowledged - acknowledged

    record = under_load(target, inject, target.resume_postgres)
    assert seen["states"] == {psutil.STATUS_STOPPED}
    # at most the answers already on their way when the server froze
    assert seen["acknowledged while frozen"] <= 4, seen
    assert not target.postgres.paused
    assert_exactly_once(target, record)


def test_a_service_started_while_postgres_is_down_comes_up_once_it_is_back(target) -> None:
    """Two faults at once: the service's start needs the database, so it is tried again."""
    failed: list[BaseException] = []

    def restart() -> None:
        try:
            target.restart_postgres("fast", down_for=3.0)
        except BaseException as error:
            failed.append(error)

    log = target.service.log_path
    offset = log.stat().st_size
    target.kill_service()
    outage = threading.Thread(target=restart)
    outage.start()
    try:
        wait_until(lambda: target.parts()["postgres"] is None, 10, "PostgreSQL to go down")
        target.start_service()
    finally:
        outage.join(30)
    assert failed == []
    with log.open("rb") as text:
        text.seek(offset)
        assert b"reference_wallet: cannot use " in text.read(), "no start met the outage"
    wallet_id = new_id("o")
    assert WalletHttp(target.url).create_wallet(wallet_id, "owner-o", 1).status == 201


def test_a_misused_actuator_says_why_in_one_line(target) -> None:
    errors = []
    for call in (
        target.resume_postgres,
        target.start_service,
        target.start_projectors,
        lambda: target.restart_postgres("slow"),
    ):
        with pytest.raises(TargetFaultError) as raised:
            call()
        errors.append(str(raised.value))
    assert all(len(e.splitlines()) == 1 for e in errors), errors
    assert errors[0] == "resume PostgreSQL: the server is not paused"
    assert re.fullmatch(r"the service is already running \(pid \d+\)", errors[1])
    assert "unknown shutdown mode 'slow'; known: fast, immediate" in errors[3]
    target.kill_service()
    with pytest.raises(TargetFaultError, match=r"^cannot kill the service: it is not running"):
        target.kill_service()
    target.start_service()


ORPHANED_PARENT = """
import sys, time
from reference_wallet.launcher import ReferenceWalletProcess
dsn = sys.argv[1]
service = ReferenceWalletProcess(dsn, extra_args=["--no-projectors"], exit_with_parent=True)
projectors = ReferenceWalletProcess(dsn, command="project", exit_with_parent=True)
print(service.start().process.pid, projectors.start().process.pid, flush=True)
time.sleep(120)
"""


def test_the_targets_processes_stop_by_themselves_when_the_suite_is_killed(target) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANED_PARENT, target.dsn],
        stdout=subprocess.PIPE,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert len(pids) == 2
    wait_until(lambda: not any(running(pid) for pid in pids), 15, "the orphans to stop")


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
