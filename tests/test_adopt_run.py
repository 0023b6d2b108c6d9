"""--adopt-run: a run loads an earlier run's wallets as they are and is checked against what they
held when it began. Real `locust --headless` runs on the embedded target (its PostgreSQL held
open by this module, so every run joins the same data): a clean adopting run on two workers, each
adopting its shard, is VALID and creates no wallet; a ledger fault switched on in a later adopting
run alone is found in it and not blamed on the earlier runs' entries; cleanup keeps adopted
wallets with their first run; an unknown run is one line and exit code 2. Then, on a real service
and database: both ways of reading the baseline agree, the saved record stands in for the
database, and cleanup by age keeps a wallet written since the cutoff whole."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from locust.contrib.fasthttp import FastHttpSession
from locust.event import Events
from locust_support import PROJECT_ROOT, LocustRun, locust_command, locust_env
from projection import wait_for_projectors
from wallet_http import WalletHttp

from wallet_users.consistency import Schema
from wallet_users.load import adoption
from wallet_users.record import RunRecord
from wallet_users.wiring.target import embedded_dsn

pytestmark = pytest.mark.timeout(180)

LOAD_CLASSES = ("WalletUser", "HotWalletUser")  # no read-your-writes user: it makes wallets


@pytest.fixture(scope="module")
def embedded_pg() -> str:
    """The embedded target's PostgreSQL, started (or joined) by this process: every run of the
    module joins it instead of starting it, and sees the earlier runs' wallets."""
    return embedded_dsn()


def locust_run(
    report_dir: Path, run_id: str, *args: str, faults: str = "", timeout: float = 90
) -> LocustRun:
    env = locust_env()
    env.pop("REFERENCE_WALLET_FAULTS", None)
    if faults:
        env["REFERENCE_WALLET_FAULTS"] = faults  # the embedded reference_wallet reads it
    completed = subprocess.run(
        locust_command(
            "--headless",
            "--only-summary",
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "2s",
            "--settle-timeout",
            "15",
            "--report-dir",
            str(report_dir),
            "--run-id",
            run_id,
            "--json-file",
            str(report_dir / f"{run_id}-stats"),
            *args,
        ),
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return LocustRun(
        completed.returncode,
        completed.stdout,
        completed.stderr,
        report_dir / f"{run_id}-stats.json",
    )


def run_cleanup(report_dir: Path, run_id: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["--run-id", run_id, "--report-dir", str(report_dir), *extra]
    return subprocess.run(
        [sys.executable, "-m", "wallet_users.cleanup", *args],
        cwd=PROJECT_ROOT,
        env=locust_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def report_of(report_dir: Path, run_id: str) -> dict:
    return json.loads((report_dir / run_id / "consistency.json").read_text())


def new_run_id(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:8]}"


def test_an_adopted_population_is_loaded_again_checked_against_its_baseline_and_cleaned_with_its_first_run(
    embedded_pg: str, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    first, second, third = new_run_id("a"), new_run_id("b"), new_run_id("c")

    created = locust_run(reports, first, "--wallets", "20", *LOAD_CLASSES)
    assert created.returncode == 0, created.explain()
    assert created.verdict() == "PASS", created.explain()

    # run B adopts A's 20 wallets and 3 hot wallets, on two workers each reading its own
    # shard's baseline: it creates none, and is VALID
    adopted = locust_run(reports, second, "--adopt-run", first, "--processes", "2", *LOAD_CLASSES)
    assert adopted.returncode == 0, adopted.explain()
    assert "load generator CPU: shard 2:" in adopted.output, adopted.explain()
    assert adopted.verdict() == "PASS", adopted.explain()
    assert f"wallets: 23 adopted from run {first}, none created" in adopted.output
    assert adopted.requests("/wallets") == 0, adopted.explain()
    report = report_of(reports, second)
    assert report["valid"] is True
    assert report["adoption"] == {
        "adopted_from": first,
        "first_run": first,
        "wallets": 23,
        "source": "database",
        "warning": "",
    }
    record = RunRecord.load(reports / second / "run-record.json")
    assert len(record.wallets) == 23
    assert all(w.startswith(f"lt-{first}-") for w in record.wallets)
    assert all(t.base_version >= 1 and t.base_entries >= 1 for t in record.wallets.values())
    assert record.operations["ok"] > 0
    # the ledger entries the check counted are A's and B's together: B began from A's
    assert (
        report["counts"]["ledger_entries"] > report_of(reports, first)["counts"]["ledger_entries"]
    )

    # re-checked on its own, B is still held to its baseline, and says it adopted A
    recheck = subprocess.run(
        [
            sys.executable,
            "-m",
            "wallet_users.check",
            "--run-record",
            str(reports / second / "run-record.json"),
        ],
        cwd=PROJECT_ROOT,
        env=locust_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert recheck.returncode == 0, recheck.stdout + recheck.stderr
    assert f"population adopted from run {first}: checked against" in recheck.stdout

    # run C adopts B (so A's wallets) with the ledger projector dropping entries: C alone is
    # INVALID, and no wallet is short of more entries than C's own operations on it
    faulty = locust_run(
        reports, third, "--adopt-run", second, *LOAD_CLASSES, faults="ledger-skip=0.3"
    )
    assert faulty.returncode == 1, faulty.explain()
    assert f"adopted from run {second}, created by run {first}" in faulty.output
    found = report_of(reports, third)
    assert found["valid"] is False
    assert "expected_entries" in found["violations"], faulty.explain()
    assert any("ledger entries missing" in c["line"] for c in found["causes"]), found["causes"]
    at_start = RunRecord.load(reports / third / "run-record.json").wallets
    for violation in found["violations"]["expected_entries"]:
        assert int(violation["found"]) >= at_start[violation["wallet_id"]].base_entries
    assert report_of(reports, second)["valid"] is True

    # cleanup: cleaning C keeps A's wallets; cleaning A deletes them, for every adopter
    kept = run_cleanup(reports, third)
    assert kept.returncode == 0, kept.stderr
    assert "would delete 0 rows from wallets" in kept.stdout
    assert f"they belong to run {first} and are kept" in kept.stdout
    gone = run_cleanup(reports, first, "--yes")
    assert gone.returncode == 0, gone.stderr
    assert "deleting 23 rows from wallets" in gone.stdout
    assert f"runs {second}, {third} adopted the wallets of run {first}" in gone.stdout

    # and A can no longer be adopted (the same check a run makes at start-up: exit code 2)
    with pytest.raises(adoption.AdoptionError, match=f"^--adopt-run: run {first} has no wallets"):
        adoption.resolve(reports, first, embedded_pg, Schema())


def test_an_unknown_adopt_run_is_one_line_and_exit_code_2_before_any_load(
    embedded_pg: str, tmp_path: Path
) -> None:
    """(Its shape is checked with the other options: tests/test_options.py.)"""
    run_id = new_run_id("e")
    run = locust_run(tmp_path, run_id, "--adopt-run", "nosuchrun0", timeout=60)
    assert run.returncode == 2, run.explain()
    assert "Traceback" not in run.output, run.explain()
    errors = run.lines_starting("wallet suite:")
    assert len(errors) == 1, run.explain()
    assert "--adopt-run: no run nosuchrun0: no wallet of it in" in errors[0], run.explain()
    assert not run.stats()  # no load: no requests, no statistics, no run record
    assert not (tmp_path / run_id).exists()


def test_the_service_api_and_the_database_give_the_same_baseline(reference_wallet) -> None:
    service = reference_wallet()
    api = WalletHttp(service.url)
    run_id = new_run_id("f")
    ids = [f"lt-{run_id}-w{i:06d}" for i in range(4)] + [f"lt-{run_id}-h000000"]
    for n, wallet in enumerate(ids):
        assert api.create_wallet(wallet, initial_balance=100 * n).status == 201
    assert api.credit(ids[0], 30).status == 201  # a wallet created empty, then credited
    assert api.debit(ids[1], 40).status == 201
    assert api.transfer(ids[2], ids[3], 50).status == 201
    schema = Schema()
    wait_for_projectors(service.dsn)

    from_db = adoption.read_from_database(service.dsn, schema, run_id)
    client = FastHttpSession(service.url, Events().request, user=None)
    from_api = adoption.read_from_service(client, ids)
    assert sorted(from_db, key=lambda w: w.wallet_id) == sorted(from_api, key=lambda w: w.wallet_id)
    by_id = {w.wallet_id: w for w in from_db}
    assert by_id[ids[0]].entries == 1 and by_id[ids[0]].version == 1  # no initial balance
    assert by_id[ids[2]].entries == 2 and by_id[ids[2]].balance == 150
    assert len(by_id) == 5
    # a shard is every count-th wallet by the number in its id, as seeding shards its plan
    shard = adoption.read_from_database(service.dsn, schema, run_id, (1, 2))
    assert sorted(w.wallet_id for w in shard) == [ids[1], ids[3]]


def test_without_a_database_the_saved_record_says_which_wallets_and_a_broken_run_is_warned_of(
    tmp_path: Path,
) -> None:
    schema = Schema()
    with pytest.raises(adoption.AdoptionError, match=r"^--adopt-run: no run r1: no saved record"):
        adoption.resolve(tmp_path, "r1", None, schema)
    record = RunRecord("r1")
    record.wallet_created("lt-r1-w000000", "rejected", Decimal(10))
    record.save(tmp_path / "r1" / "run-record.json")
    with pytest.raises(adoption.AdoptionError, match=r"^--adopt-run: run r1 has no wallets"):
        adoption.resolve(tmp_path, "r1", None, schema)
    for i in range(3):
        record.wallet_created(f"lt-r1-w{i:06d}", "ok", Decimal(10))
    record.wallet_created("lt-r1-h000000", "ok", Decimal(10))
    record.wallet_created("lt-r1-r0a1b2c3d-000000", "ok", Decimal(0))  # a reader's own: left
    record.save(tmp_path / "r1" / "run-record.json")
    (tmp_path / "r1" / "consistency.json").write_text(
        json.dumps({"valid": False, "violations": {"ledger_sum_mismatch": []}})
    )
    found = adoption.resolve(tmp_path, "r1", None, schema)
    assert (found.wallets, found.source, found.first_run) == (4, "service API", "r1")
    assert "run r1's own check found violations (ledger_sum_mismatch)" in found.warning
    path = tmp_path / "r1" / "run-record.json"
    assert adoption.record_wallet_ids(path, (1, 2)) == ["lt-r1-w000001"]


def test_by_age_cleanup_keeps_every_row_of_a_wallet_written_since_the_cutoff(
    database_dsn: str,
) -> None:
    """A population created long ago and adopted by a recent run keeps its rows; an untouched
    one goes with all of its rows, not only those older than the cutoff."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        for wallet, updated in (("lt-old-w000000", "3 days"), ("lt-old-w000001", "10 minutes")):
            conn.execute(
                "INSERT INTO wallets (id, owner_id, balance, version, created_at, updated_at)"
                " VALUES (%s, 'o', 10, 2, now() - interval '3 days', now() - %s::interval)",
                (wallet, updated),
            )
            for n, age in enumerate(("3 days", updated)):
                conn.execute(
                    'INSERT INTO ledger_entries ("walletId", "transactionType", amount,'
                    ' "balanceBefore", "balanceAfter", "referenceId", "createdAt")'
                    " VALUES (%s, 'CREDIT', 5, 0, 5, %s, now() - %s::interval)",
                    (wallet, f"{wallet}-{n}", age),
                )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "wallet_users.cleanup",
            "--pg-dsn",
            database_dsn,
            "--older-than",
            "2h",
            "--yes",
        ],
        cwd=PROJECT_ROOT,
        env=locust_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        left = conn.execute(
            'SELECT "walletId", count(*) FROM ledger_entries GROUP BY 1 ORDER BY 1'
        ).fetchall()
        wallets = [row[0] for row in conn.execute("SELECT id FROM wallets")]
    assert wallets == ["lt-old-w000001"]
    assert left == [("lt-old-w000001", 2)]
