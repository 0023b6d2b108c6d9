"""Distributed runs as users start them: a `locust --master` with `--worker` processes (on
loopback, or in network namespaces this module creates), and `locust --processes 2`, against the
reference service. Each run is judged by its exit code, the master's merged run record, the
consistency report, the processes' logs and the rows in the target's database."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.locust_support import PROJECT_ROOT, VERDICT, closed_port, locust_command, locust_env
from tests.polling import wait_until
from wallet_users.record import INDETERMINATE, OK, REJECTED, RunRecord
from wallet_users.wiring.distributed import (
    RECORD,
    RECORD_PART,
    Coordinator,
    ShardPlan,
    WorkerReport,
    send_report,
)

pytestmark = pytest.mark.timeout(240)

WALLETS = 20
HOT_WALLETS = 3  # the suite's default --hot-wallets: each shard gets its own three
SHARDS = 2
USERS = 8
RUN_TIME = "15s"
EXIT_TIMEOUT = 150.0  # run time, start-up, the records' gathering and the check, on a busy machine

SEEDING = re.compile(r"seeding (\d+) wallets \(shard (\d+) of (\d+)\)")
REPORTED = re.compile(
    r"\(shard (\d+) of (\d+)\) reported: (\d+)/(\d+) wallets created; "
    r"operations (\d+) ok, (\d+) rejected, (\d+) indeterminate"
)
RECORD_PARTS = re.compile(
    r"\(shard (\d+) of \d+\) reported: .*\((\d+) wallets in (\d+) record parts\)"
)


# --- processes -------------------------------------------------------------------------------------


@dataclass
class Started:
    """One process this module started, its output in a file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    closed: bool = False  # its process group killed and the process reaped

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout:g}s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} (tail) ---\n{self.output()[-chars:]}"


@dataclass
class Processes:
    """Starts processes in their own process groups; `close()` kills whatever is left of them
    (`--processes` forks its workers, so a group, not only the parent)."""

    log_dir: Path
    started: list[Started] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str],
        netns: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Started:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*prefix, *args],
                cwd=PROJECT_ROOT,
                env={**locust_env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started = Started(name, process, log_path)
        self.started.append(started)
        return started

    def locust(
        self, name: str, *args: str, netns: str | None = None, env: dict[str, str] | None = None
    ) -> Started:
        return self.start(name, locust_command(*args), netns, env)

    def close(self) -> None:
        for started in reversed(self.started):
            if started.closed:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.process.pid, signal.SIGKILL)
            started.process.wait()
            started.closed = True

    def explain(self) -> str:
        return "\n".join(s.tail() for s in self.started)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    try:
        yield group
    finally:
        group.close()


# --- what a run left behind --------------------------------------------------------------------------


@dataclass
class Reports:
    record: RunRecord
    consistency: dict

    @classmethod
    def of(cls, report_dir: Path, run_id: str) -> Reports:
        folder = report_dir / run_id
        return cls(
            RunRecord.load(folder / "run-record.json"),
            json.loads((folder / "consistency.json").read_text()),
        )


def planned_wallets(run_id: str, shard: int) -> set[str]:
    """A shard's wallets as the README promises them: every SHARDS-th regular wallet, counted
    from the shard's index (0-based), and a block of its own hot wallets."""
    regular = {f"lt-{run_id}-w{i:06d}" for i in range(shard, WALLETS, SHARDS)}
    hot = {f"lt-{run_id}-h{i:06d}" for i in range(shard * HOT_WALLETS, (shard + 1) * HOT_WALLETS)}
    return regular | hot


def kind_of(run_id: str, wallet_id: str) -> str:
    """'w' for a regular wallet, 'h' for a hot one, 'r' for a ReadYourWritesUser's own."""
    return wallet_id.removeprefix(f"lt-{run_id}-")[0]


def is_regular(run_id: str, wallet_id: str) -> bool:
    return kind_of(run_id, wallet_id) == "w"


def shard_of(run_id: str, wallet_id: str) -> int | None:
    """The shard (from 0) a planned wallet belongs to; None for a wallet a user made for
    itself, which belongs to whichever worker ran that user."""
    kind, index = kind_of(run_id, wallet_id), int(wallet_id[-6:])
    if kind == "w":
        return index % SHARDS
    return index // HOT_WALLETS if kind == "h" else None


def database_wallets(dsn: str, run_id: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id FROM wallets WHERE starts_with(id, %s) ORDER BY id", (f"lt-{run_id}-",)
        ).fetchall()
    return [row[0] for row in rows]


def ledger_entries(dsn: str, run_id: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            'SELECT "walletId", count(*) FROM ledger_entries WHERE starts_with("walletId", %s)'
            ' GROUP BY "walletId"',
            (f"lt-{run_id}-",),
        ).fetchall()
    return dict(rows)


def outbox_events(dsn: str, wallet_ids: set[str]) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM outbox WHERE aggregate_id = ANY(%s)", (sorted(wallet_ids),)
        ).fetchone()[0]


def seeded_shards(output: str) -> list[tuple[int, int]]:
    """(shard counted from 1, wallets it seeds) for each 'seeding N wallets (shard k of n)'."""
    found = []
    for planned, shard, count in SEEDING.findall(output):
        assert int(count) == SHARDS, output[-3000:]
        found.append((int(shard), int(planned)))
    return found


def reported_operations(master_output: str) -> dict[int, dict[str, int]]:
    """Per shard (from 1), the operation counts the master logged when its worker's record
    arrived."""
    reports = {}
    for shard, count, _created, _planned, ok, rejected, maybe in REPORTED.findall(master_output):
        assert int(count) == SHARDS
        assert int(shard) not in reports, f"shard {shard} reported twice"
        reports[int(shard)] = {OK: int(ok), REJECTED: int(rejected), INDETERMINATE: int(maybe)}
    return reports


def shard_operations(record: RunRecord, run_id: str, shard: int | None) -> dict[str, int]:
    """Operation counts over one shard's wallets in the merged record (shard None: the users'
    own wallets). A transfer is counted once, on its sending wallet; no pool sends across
    shards."""
    sent = ("credit", "debit", "transfer_out")
    counts = dict.fromkeys((OK, REJECTED, INDETERMINATE), 0)
    for wallet_id, tally in record.wallets.items():
        if shard_of(run_id, wallet_id) != shard:
            continue
        counts[OK] += sum(tally.ok_count[kind] for kind in sent)
        counts[INDETERMINATE] += sum(tally.maybe_count[kind] for kind in sent)
        counts[REJECTED] += tally.rejected
    return counts


def verdict_of(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(VERDICT)]
    assert len(lines) == 1, output[-4000:]
    return lines[0].removeprefix(VERDICT).strip()


# --- a clean distributed run ---------------------------------------------------------------------------


def assert_a_clean_sharded_run(
    *,
    exit_code: int,
    master_output: str,
    worker_outputs: Sequence[str],
    dsn: str,
    report_dir: Path,
    run_id: str,
    explain: str,
) -> None:
    """The properties every distributed run without a fault must have."""
    assert exit_code == 0, explain
    assert verdict_of(master_output) == "PASS", explain
    for output in (master_output, *worker_outputs):
        assert "Traceback" not in output, explain
    # the master sampled the projectors' lag in the database: its own entries in the statistics
    assert re.search(r"^BACKLOG +ledger-projector \(events\) ", master_output, re.M), explain
    assert re.search(r"^projection lag: \d+ samples? every", master_output, re.M), explain

    # no wallet in two shards: each worker seeded its own shard, and the shards cover the plan
    seeded = sorted(s for output in worker_outputs for s in seeded_shards(output))
    assert seeded == [(1, WALLETS // SHARDS), (2, WALLETS // SHARDS)], explain
    reports = Reports.of(report_dir, run_id)
    record = reports.record
    planned = sorted(w for shard in range(SHARDS) for w in planned_wallets(run_id, shard))
    in_database = database_wallets(dsn, run_id)
    assert [w for w in in_database if shard_of(run_id, w) is not None] == planned, explain
    # each wallet of the database was asked for exactly once: two shards holding the same
    # wallet would have tried to create it twice
    assert record.creations_attempted == len(in_database), explain
    assert sorted(w for w, t in record.wallets.items() if t.created == OK) == in_database

    # The merged counts are the sum over the workers, and each worker's part is its shard's
    # plus what it did on the wallets its ReadYourWritesUsers made for themselves.
    per_worker = reported_operations(master_output)
    assert sorted(per_worker) == [1, 2], explain
    outcomes = (OK, REJECTED, INDETERMINATE)
    for outcome in outcomes:
        assert record.operations[outcome] == sum(p[outcome] for p in per_worker.values())
    beyond_shards = dict.fromkeys(outcomes, 0)
    for shard, reported in per_worker.items():
        in_shard = shard_operations(record, run_id, shard - 1)
        assert in_shard[OK] > 0, f"shard {shard} did no work:\n{explain}"
        for outcome in outcomes:
            assert reported[outcome] >= in_shard[outcome], (shard, reported, in_shard)
            beyond_shards[outcome] += reported[outcome] - in_shard[outcome]
    assert beyond_shards == shard_operations(record, run_id, None), explain

    # and the database agrees with the merged record, shard by shard, without the checker
    entries = ledger_entries(dsn, run_id)
    for shard in range(SHARDS):
        wallets = [w for w in record.wallets if shard_of(run_id, w) == shard]
        low = sum(record.wallets[w].expected_entries()[0] for w in wallets)
        high = sum(record.wallets[w].expected_entries()[1] for w in wallets)
        found = sum(entries.get(w, 0) for w in wallets)
        assert low <= found <= high, (shard, low, found, high)

    consistency = reports.consistency
    assert consistency["status"] == "valid", json.dumps(consistency, indent=1)[:4000]
    assert consistency["violations"] == {}
    assert consistency["unverified_wallets"] == []
    assert consistency["counts"].get("wallets", 0) >= WALLETS
    # the workers' histories reached the master and were checked against the ledger
    assert consistency["counts"].get("acknowledged_snapshots", 0) > WALLETS, explain
    # the master's --run-time timed the load, which began when both shards were seeded
    timed = re.search(r"^throughput: [\d.]+ ops/s over (\d+)s", master_output, re.M)
    assert timed and int(timed.group(1)) == int(RUN_TIME.rstrip("s")), explain


def load(run_time: str = RUN_TIME, users: int = USERS) -> list[str]:
    users_ = str(users)
    return ["--headless", "-u", users_, "-r", users_, "-t", run_time, "--only-summary"]


def master_args(
    port: int, service_url: str, dsn: str, report_dir: Path, run_id: str, *more: str
) -> list[str]:
    return [
        "--master",
        "--expect-workers",
        str(SHARDS),
        "--master-bind-port",
        str(port),
        *(more or load()),
        "--wallets",
        str(WALLETS),
        "--host",
        service_url,
        "--pg-dsn",
        dsn,
        "--report-dir",
        str(report_dir),
        "--run-id",
        run_id,
        "--settle-timeout",
        "30",
    ]


def new_run_id(label: str) -> str:
    return f"{label}{uuid.uuid4().hex[:6]}"


def test_a_master_and_two_workers_on_loopback_check_once_over_disjoint_shards(
    reference_wallet, processes: Processes, tmp_path: Path
) -> None:
    service = reference_wallet()
    port, run_id, report_dir = closed_port(), new_run_id("mw"), tmp_path / "reports"
    master = processes.locust(
        "master", *master_args(port, service.url, service.dsn, report_dir, run_id)
    )
    # each worker sends its record in parts of 3 wallets: many parts, every one of them needed
    # for the merged record and the check below to come out whole
    parts = {"WALLET_SUITE_RECORD_PART_WALLETS": "3"}
    workers = [
        processes.locust(f"worker{i}", "--worker", "--master-port", str(port), env=parts)
        for i in (1, 2)
    ]
    exit_code = master.wait(EXIT_TIMEOUT)
    for worker in workers:
        worker.wait(60)
    assert_a_clean_sharded_run(
        exit_code=exit_code,
        master_output=master.output(),
        worker_outputs=[w.output() for w in workers],
        dsn=service.dsn,
        report_dir=report_dir,
        run_id=run_id,
        explain=processes.explain(),
    )
    reported = {
        int(shard): (int(w), int(n)) for shard, w, n in RECORD_PARTS.findall(master.output())
    }
    assert sorted(reported) == [1, 2], processes.explain()
    for wallets, count in reported.values():
        assert wallets >= WALLETS // SHARDS + HOT_WALLETS, reported
        assert count == -(-wallets // 3) and count >= 4, reported


def test_processes_2_shards_and_checks_like_a_master_with_two_workers(
    reference_wallet, processes: Processes, tmp_path: Path
) -> None:
    service = reference_wallet()
    run_id, report_dir = new_run_id("pr"), tmp_path / "reports"
    run = processes.locust(
        "processes",
        "--processes",
        str(SHARDS),
        *processes_ports(),
        *load(),
        "--wallets",
        str(WALLETS),
        "--host",
        service.url,
        "--pg-dsn",
        service.dsn,
        "--report-dir",
        str(report_dir),
        "--run-id",
        run_id,
        "--settle-timeout",
        "30",
    )
    exit_code = run.wait(EXIT_TIMEOUT)
    output = run.output()
    assert_a_clean_sharded_run(
        exit_code=exit_code,
        master_output=output,
        worker_outputs=[output],  # the forked workers log into the same output
        dsn=service.dsn,
        report_dir=report_dir,
        run_id=run_id,
        explain=processes.explain(),
    )


def _no_pause() -> None:
    pass


def test_a_record_missing_one_of_its_parts_is_not_taken_for_the_whole() -> None:
    """The master merges a worker's parts only when every part it announced came: a record with
    a part missing would check those wallets against too little; it counts as not reported
    (its shard unverified) instead."""
    record = RunRecord("run1")
    for index in range(7):
        record.wallet_created(f"w{index}", OK, Decimal(10))
        record.operation("credit", OK, f"w{index}", Decimal(index + 1))
    report = WorkerReport(record=record, created=7, planned=7)
    for lose in (None, 1):
        coordinator = Coordinator(shards={"worker": ShardPlan("run1")})
        sent: list[tuple[str, dict]] = []
        send_report(lambda kind, data, sent=sent: sent.append((kind, data)), report, _no_pause, 2)
        assert [kind for kind, _ in sent] == [RECORD_PART] * 4 + [RECORD]
        for number, (kind, data) in enumerate(sent):
            if number == lose:
                continue
            if kind == RECORD_PART:
                coordinator.record_part("worker", data)
            else:
                coordinator.received("worker", data)
        if lose is None:
            assert coordinator.reports["worker"].record == record
        else:
            assert "worker" not in coordinator.reports


# --- a worker lost mid-run ------------------------------------------------------------------------------


def test_a_worker_killed_mid_run_leaves_its_shard_unverified_without_a_false_alarm(
    reference_wallet, processes: Processes, tmp_path: Path
) -> None:
    service = reference_wallet()
    port, run_id, report_dir = closed_port(), new_run_id("kw"), tmp_path / "reports"
    master = processes.locust(
        "master", *master_args(port, service.url, service.dsn, report_dir, run_id)
    )
    workers = [
        processes.locust(f"worker{i}", "--worker", "--master-port", str(port)) for i in (1, 2)
    ]
    victim = workers[1]
    seeding = wait_until(
        lambda: seeded_shards(victim.output()), 90, "the second worker to start seeding"
    )
    dead_shard = seeding[0][0] - 1
    wait_until(lambda: "seeded " in victim.output(), 60, "the second worker to finish seeding")
    dead_wallets = planned_wallets(run_id, dead_shard)
    after_seeding = outbox_events(service.dsn, dead_wallets)
    wait_until(
        lambda: outbox_events(service.dsn, dead_wallets) >= after_seeding + 20,
        30,
        "the second worker's load to reach the database",
    )
    assert master.process.poll() is None, "the run ended before the kill:\n" + master.tail()
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()

    exit_code = master.wait(EXIT_TIMEOUT)
    workers[0].wait(60)
    explain = processes.explain()
    output = master.output()
    assert exit_code == 0, explain
    assert "Traceback" not in output + workers[0].output(), explain
    assert verdict_of(output) == "PASS", explain
    assert f"(shard {dead_shard + 1} of {SHARDS}) never sent its record" in output, explain
    assert "sent no record" in output, explain

    reports = Reports.of(report_dir, run_id)
    consistency = reports.consistency
    # exactly the dead worker's wallets are unverified, and nothing is called a violation: its
    # shard, plus any read-your-writes wallet of its own that the check found in the database
    unverified = set(consistency["unverified_wallets"])
    assert dead_wallets <= unverified, explain
    assert all(f"lt-{run_id}-r" in w for w in unverified - dead_wallets), explain
    assert set(reports.record.unverified) == dead_wallets
    assert consistency["status"] == "valid", json.dumps(consistency, indent=1)[:4000]
    assert consistency["violations"] == {}
    # the survivor's record arrived and is whole: its shard is verified against the database
    survivor_shard = 2 if dead_shard == 0 else 1  # counted from 1, as the logs count
    per_worker = reported_operations(output)
    assert list(per_worker) == [survivor_shard], explain
    assert per_worker[survivor_shard][OK] > 0
    assert reports.record.operations == per_worker[survivor_shard]
    # the dead worker did change its wallets before it died, which the check had to accept
    entries = ledger_entries(service.dsn, run_id)
    regular_dead = {w for w in dead_wallets if is_regular(run_id, w)}
    assert sum(entries.get(w, 0) for w in regular_dead) > len(regular_dead)


def test_every_wallet_a_killed_worker_made_is_checked_or_reported_unverified(
    reference_wallet, processes: Processes, tmp_path: Path
) -> None:
    service = reference_wallet()
    port, run_id, report_dir = closed_port(), new_run_id("kr"), tmp_path / "reports"
    # only ReadYourWritesUsers, two on each worker: each worker makes wallets of its own
    short = load("10s", users=4)
    args = master_args(port, service.url, service.dsn, report_dir, run_id, *short)
    master = processes.locust("master", *args, "ReadYourWritesUser")
    workers = [
        processes.locust(f"worker{i}", "--worker", "--master-port", str(port)) for i in (1, 2)
    ]
    own = f"lt-{run_id}-r"
    wait_until(
        lambda: sum(w.startswith(own) for w in database_wallets(service.dsn, run_id)) >= 4,
        90,
        "every ReadYourWritesUser to make its wallet",
    )
    own_wallets = {w for w in database_wallets(service.dsn, run_id) if w.startswith(own)}
    before = outbox_events(service.dsn, own_wallets)
    wait_until(
        lambda: outbox_events(service.dsn, own_wallets) >= before + 20,
        30,
        "load on the users' own wallets",
    )
    os.killpg(workers[1].process.pid, signal.SIGKILL)
    workers[1].process.wait()
    exit_code = master.wait(EXIT_TIMEOUT)
    workers[0].wait(60)
    explain = processes.explain()
    assert exit_code == 0, explain
    reports = Reports.of(report_dir, run_id)
    assert "never sent its record" in master.output(), explain
    assert reports.consistency["status"] == "valid", explain
    # the master must know every wallet of the run: what the dead worker made, it checks by
    # the database's own invariants and names as unverified
    unverified = set(reports.consistency["unverified_wallets"])
    known = set(reports.record.wallets) | unverified
    unaccounted = set(database_wallets(service.dsn, run_id)) - known
    assert unaccounted == set(), "wallets neither checked nor reported unverified"
    assert any(w.startswith(own) for w in unverified), explain


# --- master and workers on different hosts ------------------------------------------------------------


@dataclass
class Namespaces:
    """Two network namespaces joined by a veth pair, on addresses no other host has: the
    master's `MASTER_ADDRESS` and the workers' and the service's `WORKER_ADDRESS`."""

    master: str
    workers: str

    MASTER_ADDRESS = "10.200.7.1"
    WORKER_ADDRESS = "10.200.7.2"

    @classmethod
    @contextlib.contextmanager
    def created(cls) -> Iterator[Namespaces]:
        if shutil.which("ip") is None:
            pytest.skip("`ip` (Debian's iproute2) is not installed: cannot create namespaces")
        if os.geteuid() != 0:
            pytest.skip("creating network namespaces needs root")
        tag = f"{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
        spaces = cls(f"wl-m{tag}", f"wl-w{tag}")
        made: list[str] = []
        try:
            for name in (spaces.master, spaces.workers):
                added = _ip("netns", "add", name)
                if added.returncode != 0:
                    pytest.skip(f"`ip netns add` is not allowed here: {added.stderr.strip()}")
                made.append(name)
            veth_m, veth_w = f"vm{tag}", f"vw{tag}"
            _ip_ok("link", "add", veth_m, "type", "veth", "peer", "name", veth_w)
            _ip_ok("link", "set", veth_m, "netns", spaces.master)
            _ip_ok("link", "set", veth_w, "netns", spaces.workers)
            for name, veth, address in (
                (spaces.master, veth_m, cls.MASTER_ADDRESS),
                (spaces.workers, veth_w, cls.WORKER_ADDRESS),
            ):
                _ip_ok("-n", name, "addr", "add", f"{address}/24", "dev", veth)
                _ip_ok("-n", name, "link", "set", veth, "up")
                _ip_ok("-n", name, "link", "set", "lo", "up")
            yield spaces
        finally:
            for name in made:  # deleting a namespace deletes its end of the veth pair too
                _ip("netns", "del", name)


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _ip_ok(*args: str) -> None:
    done = _ip(*args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


def reachable_from(processes: Processes, netns: str, url: str, timeout: float) -> bool:
    """Whether url answers from inside netns within timeout (one process polls there)."""
    poll = (
        "import sys, time, urllib.request\n"
        f"deadline = time.monotonic() + {timeout}\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n"
        f"        urllib.request.urlopen({url!r}, timeout=1).close()\n"
        "        sys.exit(0)\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    probe = processes.start(f"probe-{netns}", [sys.executable, "-c", poll], netns)
    return probe.wait(timeout + 30) == 0


def test_master_and_workers_in_separate_network_namespaces(
    database_dsn: str, processes: Processes, tmp_path: Path
) -> None:
    run_id, report_dir, port = new_run_id("ns"), tmp_path / "reports", 5557
    with Namespaces.created() as spaces:
        try:
            master, workers, service = run_across(
                spaces, processes, database_dsn, port, report_dir, run_id
            )
            exit_code = master.wait(EXIT_TIMEOUT)
            for worker in workers:
                worker.wait(60)
        finally:
            processes.close()  # nothing of the run outlives its namespaces
    assert_a_clean_sharded_run(
        exit_code=exit_code,
        master_output=master.output(),
        worker_outputs=[w.output() for w in workers],
        dsn=database_dsn,
        report_dir=report_dir,
        run_id=run_id,
        explain=processes.explain(),
    )
    assert "Traceback" not in service.output(), service.tail()


def run_across(
    spaces: Namespaces, processes: Processes, dsn: str, port: int, report_dir: Path, run_id: str
) -> tuple[Started, list[Started], Started]:
    """The service and two workers in the workers' namespace, the master in its own: the
    master reaches the service, and the workers the master, only across the veth pair. The
    database is a unix socket, a file, which every namespace sees."""
    service_url = f"http://{spaces.WORKER_ADDRESS}:3000"
    serve = ["serve", "--pg-dsn", dsn, "--host", spaces.WORKER_ADDRESS, "--port", "3000"]
    service = processes.start(
        "service", [sys.executable, "-m", "reference_wallet", *serve], spaces.workers
    )
    assert reachable_from(processes, spaces.master, f"{service_url}/ledger/health", 30), (
        processes.explain()
    )
    master = processes.locust(
        "master", *master_args(port, service_url, dsn, report_dir, run_id), netns=spaces.master
    )
    workers = [
        processes.locust(
            f"worker{i}",
            "--worker",
            "--master-host",
            spaces.MASTER_ADDRESS,
            "--master-port",
            str(port),
            netns=spaces.workers,
        )
        for i in (1, 2)
    ]
    return master, workers, service


def processes_ports() -> list[str]:
    """--processes binds Locust's default master port (5557) unless told otherwise: a free one,
    so that runs on the same machine (another test session, a user's own Locust) do not collide."""
    port = str(closed_port())
    return ["--master-bind-port", port, "--master-port", port]
