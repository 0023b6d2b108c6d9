"""The history of acknowledged answers: 25 bytes per snapshot, spilled to a file past a size,
sent to the master in chunks and kept there as one segment per worker, saved and loaded; and what
a replay's answer says about the first (the fields that differ, whether it was executed again)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from wallet_users.load.operations import answer_differences, applied_again, differing_fields
from wallet_users.record.history import (
    KIND_CODES,
    RECORD_SIZE,
    AckHistory,
    RunHistory,
    Snapshot,
    cents,
)

CREDIT, DEBIT = KIND_CODES["credit"], KIND_CODES["debit"]


def test_a_snapshot_takes_25_bytes_and_decodes_to_what_was_acknowledged() -> None:
    history = AckHistory()
    history.add("w1", 1, 500, KIND_CODES["create"], 50_000)
    history.add("w1", 2, 550.5, CREDIT, 5_050)
    history.add("w2", 7, "1234.5000", DEBIT, 100)  # TypeORM's numeric strings
    assert RECORD_SIZE == 25 and len(history.segment.data) == 3 * RECORD_SIZE
    found = RunHistory.of(history).of_wallets(["w1", "w2"])
    assert found["w1"] == [
        Snapshot(1, Decimal(500), "create", Decimal(500)),
        Snapshot(2, Decimal("550.5"), "credit", Decimal("50.5")),
    ]
    assert found["w2"] == [Snapshot(7, Decimal("1234.5"), "debit", Decimal(1))]


def test_a_snapshot_without_an_integer_version_or_a_money_balance_is_not_kept() -> None:
    history = AckHistory()
    history.add("w1", None, 500, CREDIT, 100)
    history.add("w1", "3", 500, CREDIT, 100)
    history.add("w1", 3, "lots", CREDIT, 100)
    history.add("w1", 3, None, CREDIT, 100)
    assert len(history) == 0
    assert cents(12) == 1200 and cents(0.1) == 10 and cents("7.25") == 725 and cents(None) is None


def test_a_long_run_spills_to_the_report_folder_and_reads_back_in_order(tmp_path: Path) -> None:
    spill = tmp_path / "run" / "history-1.part"
    history = AckHistory(spill, spill_bytes=10 * RECORD_SIZE)
    for version in range(35):
        history.add("w1", version, version * 10, CREDIT, 1000)
    assert spill.exists() and spill.stat().st_size == 30 * RECORD_SIZE
    assert len(history.segment.data) == 5 * RECORD_SIZE and len(history) == 35
    versions = [s.version for s in RunHistory.of(history).of_wallets(["w1"])["w1"]]
    assert versions == list(range(35))
    history.discard()
    assert not spill.exists()


def test_workers_histories_merge_on_the_master_as_one_segment_each(tmp_path: Path) -> None:
    one, two = AckHistory(tmp_path / "a.part", spill_bytes=4 * RECORD_SIZE), AckHistory()
    for version in range(9):
        one.add(f"w{version % 3}", version, 100 + version, CREDIT, 100)
    two.add("w1", 20, 999, DEBIT, 100)  # a shared hot wallet: both workers answered for it
    two.add("h0", 1, 5, CREDIT, 500)
    master = RunHistory()
    for sender, recorder in (("worker-1", one), ("worker-2", two)):
        for chunk in recorder.chunks(size=3 * RECORD_SIZE):
            master.receive(sender, chunk)
    assert len(master.segments) == 2 and master.records == 11
    merged = master.of_wallets(["w1", "h0"])
    assert [s.version for s in merged["w1"]] == [1, 4, 7, 20]
    table, index, versions, balances, kinds = master.columns()
    assert [table[i] for i in index].count("w1") == 4
    assert balances[versions.index(20)] == 99_900 and kinds[versions.index(20)] == DEBIT


def test_a_saved_history_loads_as_it_was_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    history = AckHistory(tmp_path / "x.part", spill_bytes=2 * RECORD_SIZE)
    for version in range(5):
        history.add("w1", version, version, CREDIT, 100)
    other = AckHistory()
    other.add("w2", 3, 40, DEBIT, 200)
    path = tmp_path / "history.bin"
    RunHistory.of(history, other).save(path)
    loaded = RunHistory.load(path)
    assert loaded.of_wallets(["w1", "w2"]) == RunHistory.of(history, other).of_wallets(["w1", "w2"])
    path.write_bytes(b"not a history")
    with pytest.raises(ValueError, match="not a wallet suite history"):
        RunHistory.load(path)


def answer(status: int, body) -> SimpleNamespace:
    return SimpleNamespace(status=status, body=body)


def snapshot(balance: int, version: int, wallet: str = "w1") -> dict:
    return {"id": wallet, "balance": balance, "version": version}


def test_a_replay_answered_differently_says_which_fields_whatever_the_status() -> None:
    first, again = answer(201, snapshot(1200, 5)), answer(201, snapshot(1350, 6))
    assert answer_differences(first, again) == "balance 1200 -> 1350, version 5 -> 6"
    assert differing_fields(first, again) == ["balance", "version"]
    refused = answer(
        400, {"statusCode": 400, "message": "Insufficient funds", "error": "Bad Request"}
    )
    text = answer_differences(first, refused)
    assert text.startswith("status 201 -> 400, balance 1200 -> None, version 5 -> None")
    transfer = answer(201, {"fromWallet": snapshot(10, 3), "toWallet": snapshot(90, 8, "w2")})
    later = answer(201, {"fromWallet": snapshot(5, 4), "toWallet": snapshot(95, 9, "w2")})
    assert "fromWallet.balance 10 -> 5" in answer_differences(transfer, later)
    assert "toWallet.version 8 -> 9" in answer_differences(transfer, later)
    assert answer_differences(answer(409, {"message": "a"}), answer(409, {"message": "b"})) == (
        "message 'a' -> 'b'"
    )


def test_a_replay_executed_again_shows_a_newer_version_or_succeeds_after_a_refusal() -> None:
    first = answer(201, snapshot(1200, 5))
    assert applied_again(first, answer(201, snapshot(1350, 7)))
    assert not applied_again(first, answer(201, snapshot(1200, 5)))
    assert not applied_again(first, answer(400, {"message": "insufficient funds"}))
    assert applied_again(answer(400, {"message": "insufficient funds"}), first)
    assert not applied_again(answer(503, None), first)
