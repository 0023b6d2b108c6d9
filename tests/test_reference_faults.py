"""Each fault switch breaks the reference service in its own way: after the scripted workload that
leaves a fault-free service consistent, the SQL checks find that fault's inconsistency and no other,
and an unknown fault is refused at the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from invariants import FAULT_SYMPTOMS, describe, find_violations, violated_kinds
from projection import wait_for_projectors
from reference_workload import run_scripted_workload
from wallet_http import WalletHttp

from reference_wallet.commands import CONSUMERS
from reference_wallet.faults import FAULTS
from reference_wallet.postgres import PROJECT_ROOT

# Faults that would leave nothing to compare at rate 1 fire on a seeded half of their chances.
FAULT_RATES = {
    "ledger-skip": 0.5,
    "ledger-duplicate": 0.5,
    "read-model-lost-update": 0.5,
    "outbox-drop": 0.5,
}
STALLED_CONSUMER = {"ledger-stall": "ledger-projector", "read-model-stall": "read-model-projector"}


def test_every_fault_switch_has_its_expected_symptoms_listed():
    assert set(FAULT_SYMPTOMS) == set(FAULTS)


def test_the_readme_fault_table_is_faults_row_for_row():
    readme = (PROJECT_ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `") and line.count("|") == 3]
    table = [row for row in rows if row.split("`")[1] in FAULTS]
    assert table == [f"| `{name}` | {text} |" for name, text in FAULTS.items()]


def test_without_faults_the_scripted_workload_leaves_the_database_consistent(
    reference_wallet, database_dsn
):
    service = reference_wallet()
    record = run_scripted_workload(WalletHttp(service.url), "clean")
    assert record.unexpected == []
    assert record.acknowledged >= 30 and record.refused >= 1

    wait_for_projectors(database_dsn)
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == set(), describe(violations)


@pytest.mark.parametrize("fault", FAULT_SYMPTOMS)
def test_fault_switch_produces_its_inconsistency_and_nothing_else(
    fault, reference_wallet, database_dsn
):
    service = reference_wallet(f"{fault}={FAULT_RATES.get(fault, 1)}", ["--fault-seed", "1"])
    record = run_scripted_workload(WalletHttp(service.url), fault)
    assert record.unexpected == []

    wait_for_projectors(database_dsn, [c for c in CONSUMERS if c != STALLED_CONSUMER.get(fault)])
    violations = find_violations(database_dsn, record.balances)
    assert violated_kinds(violations) == FAULT_SYMPTOMS[fault], describe(violations)


def test_an_unknown_fault_exits_2_with_one_line_and_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "reference_wallet", "--faults", "bogus"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bogus" in lines[0]
