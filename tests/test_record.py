"""The run record: what a run sent to each wallet and how it ended (ok, rejected, indeterminate),
summed per wallet; the balance range and ledger entry counts it allows; its serialisation; and
merging, which distributed runs rely on."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet_users.money import money as from_cents
from wallet_users.record import INDETERMINATE, OK, REJECTED, RunRecord, WalletTally


def test_the_expected_balance_spans_what_indeterminate_operations_may_have_done() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(100))
    record.operation("credit", OK, "a", Decimal(50))
    record.operation("debit", OK, "a", Decimal(20))
    record.operation("credit", INDETERMINATE, "a", Decimal(30))
    record.operation("debit", INDETERMINATE, "a", Decimal(10))
    record.operation("debit", REJECTED, "a", Decimal(999), refused_for_funds=True)
    tally = record.wallets["a"]
    assert tally.expected_balance() == (Decimal(120), Decimal(160))
    # the initial balance, two acknowledged operations, and up to two maybes
    assert tally.expected_entries() == (3, 5)
    assert (tally.rejected, tally.refused_for_funds, tally.indeterminate) == (1, 1, 2)


def test_a_rejected_operation_changes_neither_the_balance_nor_the_entries() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(100))
    record.operation("credit", REJECTED, "a", Decimal(40))
    record.operation("transfer", REJECTED, "a", Decimal(40), to_wallet_id="b")
    assert record.wallets["a"].expected_balance() == (Decimal(100), Decimal(100))
    assert record.wallets["a"].expected_entries() == (1, 1)
    assert record.wallets["b"].expected_balance() == (Decimal(0), Decimal(0))
    assert record.wallets["a"].rejected == 2
    assert record.wallets["b"].rejected == 0
    assert record.operations == {OK: 0, REJECTED: 2, INDETERMINATE: 0}


def test_a_wallet_created_without_an_initial_balance_expects_no_initial_entry() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(0))
    assert record.wallets["a"].expected_entries() == (0, 0)
    record.operation("credit", OK, "a", Decimal(5))
    assert record.wallets["a"].expected_entries() == (1, 1)


def test_a_transfer_books_both_legs_and_counts_as_one_operation() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(500))
    record.wallet_created("b", OK, Decimal(100))
    record.operation("transfer", OK, "a", Decimal(40), to_wallet_id="b")
    record.operation("transfer", INDETERMINATE, "a", Decimal(7), to_wallet_id="b")
    a, b = record.wallets["a"], record.wallets["b"]
    assert a.ok_sum["transfer_out"] == 40 and a.ok_count["transfer_out"] == 1
    assert b.ok_sum["transfer_in"] == 40 and b.ok_count["transfer_in"] == 1
    assert a.maybe_sum["transfer_out"] == 7 and b.maybe_sum["transfer_in"] == 7
    assert a.expected_balance() == (Decimal(453), Decimal(460))
    assert b.expected_balance() == (Decimal(140), Decimal(147))
    assert a.expected_entries() == (2, 3) and b.expected_entries() == (2, 3)
    assert record.operations == {OK: 1, REJECTED: 0, INDETERMINATE: 1}
    # money moved by transfers is conserved in the record itself
    total_low = a.expected_balance()[0] + b.expected_balance()[0]
    total_high = a.expected_balance()[1] + b.expected_balance()[1]
    assert total_low <= 600 <= total_high


def test_an_operation_is_indeterminate_from_the_moment_it_is_sent_until_answered() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(100))
    record.operation_sent("debit", "a", Decimal(30))
    assert record.operations[INDETERMINATE] == 1
    assert record.wallets["a"].expected_balance() == (Decimal(70), Decimal(100))
    record.operation_answered("debit", OK, "a", Decimal(30))
    assert record.operations == {OK: 1, REJECTED: 0, INDETERMINATE: 0}
    assert record.wallets["a"].expected_balance() == (Decimal(70), Decimal(70))
    assert record.wallets["a"].indeterminate == 0


def test_an_operation_sent_but_never_answered_stays_indeterminate() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(100))
    record.wallet_created("b", OK, Decimal(0))
    record.operation_sent("transfer", "a", Decimal(25), "b")
    record.operation_sent("credit", "a", Decimal(5))
    record.operation_answered("credit", REJECTED, "a", Decimal(5))
    assert record.operations == {OK: 0, REJECTED: 1, INDETERMINATE: 1}
    assert record.wallets["a"].expected_balance() == (Decimal(75), Decimal(100))
    assert record.wallets["b"].expected_balance() == (Decimal(0), Decimal(25))


def test_refusals_for_funds_and_replays_are_summed_across_wallets() -> None:
    record = RunRecord("r1")
    record.operation("debit", REJECTED, "a", Decimal(10), refused_for_funds=True)
    record.operation("debit", REJECTED, "b", Decimal(10), refused_for_funds=True)
    record.operation("debit", REJECTED, "b", Decimal(10))
    record.replay("a", matched=True)
    record.replay("b", matched=False)
    assert record.refused_for_funds() == 2
    assert record.replay_counts() == (2, 1)


def test_creation_counts_hold_each_wallets_creation_outcome() -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(1))
    record.wallet_created("b", REJECTED, Decimal(1))
    record.wallet_created("c", INDETERMINATE, Decimal(1))
    assert record.creation_counts() == {OK: 1, REJECTED: 1, INDETERMINATE: 1}
    assert record.creations_attempted == 3


def test_the_saved_record_loads_back_equal(tmp_path: Path) -> None:
    record = RunRecord("r1", unverified={"z"})
    record.wallet_created("a", OK, Decimal(100))
    record.operation("transfer", OK, "a", Decimal("12.50"), to_wallet_id="b")
    record.replay("a", matched=False)
    path = tmp_path / "nested" / "run-record.json"
    record.save(path)
    assert json.loads(path.read_text())["run_id"] == "r1"
    assert RunRecord.load(path) == record


# --- properties ------------------------------------------------------------------------------

# Each process books the wallets it seeded (its own pool): a and c belong to process 0, b and d
# to process 1; a transfer goes to another wallet of the same pool.
OWNER = {"a": 0, "b": 1, "c": 0, "d": 1}
PARTNER = {"a": "c", "c": "a", "b": "d", "d": "b"}
wallet_ids = st.sampled_from(sorted(OWNER))
money = st.one_of(
    st.integers(1, 5000).map(Decimal),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2),
)
outcomes = st.sampled_from([OK, REJECTED, INDETERMINATE])


@st.composite
def events(draw: st.DrawFn) -> tuple:
    """One thing a load-generating process books, with the process (0 or 1) that books it."""
    wallet_id = draw(wallet_ids)
    process = OWNER[wallet_id]
    choice = draw(st.sampled_from(["operation", "sent and answered", "sent", "replay"]))
    if choice == "replay":
        return (process, "replay", wallet_id, draw(st.booleans()))
    kind = draw(st.sampled_from(["credit", "debit", "transfer"]))
    to_id = PARTNER[wallet_id] if kind == "transfer" else None
    outcome = draw(outcomes)
    refused = outcome == REJECTED and kind != "credit" and draw(st.booleans())
    return (process, choice, kind, outcome, wallet_id, draw(money), to_id, refused)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple]:
    """Creations first (each wallet at most once, by the process that owns it), then operations
    in any order."""
    created = draw(st.lists(wallet_ids, unique=True))
    creations = [
        (OWNER[w], "create", w, draw(outcomes), draw(st.integers(0, 5000))) for w in created
    ]
    return creations + draw(st.lists(events(), max_size=40))


def book(record: RunRecord, event: tuple) -> None:
    name = event[1]
    if name == "create":
        _, _, wallet_id, outcome, balance = event
        record.wallet_created(wallet_id, outcome, Decimal(balance))
    elif name == "replay":
        record.replay(event[2], matched=event[3])
    else:
        _, _, kind, outcome, wallet_id, amount, to_id, refused = event
        if name == "operation":
            record.operation(
                kind, outcome, wallet_id, amount, to_wallet_id=to_id, refused_for_funds=refused
            )
        else:
            record.operation_sent(kind, wallet_id, amount, to_id)
            if name == "sent and answered":
                record.operation_answered(
                    kind, outcome, wallet_id, amount, to_wallet_id=to_id, refused_for_funds=refused
                )


def record_of(history: list[tuple], process: int | None = None) -> RunRecord:
    record = RunRecord("run")
    for event in history:
        if process is None or event[0] == process:
            book(record, event)
    return record


def through_json(record: RunRecord) -> RunRecord:
    return RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))


@settings(max_examples=150, deadline=None)
@given(histories(), st.sets(wallet_ids))
def test_a_record_survives_a_round_trip_through_json(history: list[tuple], unverified) -> None:
    record = record_of(history)
    record.unverified = set(unverified)
    again = through_json(record)
    assert again == record
    assert again.to_dict() == record.to_dict()


@settings(max_examples=150, deadline=None)
@given(histories())
def test_merging_two_processes_records_gives_the_record_of_all_their_operations(
    history: list[tuple],
) -> None:
    merged = RunRecord("run")
    for process in (0, 1):
        merged.merge(through_json(record_of(history, process)))  # as a worker reports it
    whole = record_of(history)
    assert merged == whole
    assert merged.creation_counts() == whole.creation_counts()
    assert merged.refused_for_funds() == whole.refused_for_funds()
    assert merged.replay_counts() == whole.replay_counts()
    for wallet_id, tally in whole.wallets.items():
        assert merged.wallets[wallet_id].expected_balance() == tally.expected_balance()
        assert merged.wallets[wallet_id].expected_entries() == tally.expected_entries()


@settings(max_examples=150, deadline=None)
@given(histories())
def test_the_expected_range_always_holds_the_balance_of_the_acknowledged_operations(
    history: list[tuple],
) -> None:
    """low <= what the ok operations alone give <= high, and entries likewise."""
    record = record_of(history)
    for wallet_id, tally in record.wallets.items():
        low, high = tally.expected_balance()
        certain = WalletTally(initial_balance=tally.initial_balance, ok_sum=tally.ok_sum)
        assert low <= certain.expected_balance()[0] <= high, wallet_id
        fewest, most = tally.expected_entries()
        assert fewest <= most
        assert most - fewest == tally.indeterminate


def test_the_evidence_for_causes_survives_saving_and_merging() -> None:
    record = RunRecord("r")
    record.wallet_created("a", OK, Decimal(100))
    record.wallet_created("b", OK, Decimal(100))
    record.replay("a", False, [("a", Decimal(-30)), ("b", Decimal(30))], "version 4 -> 5")
    record.replay("a", False, difference="status 201 -> 400", refused_again=True)
    record.replay_sent([("b", Decimal(20))])
    record.read_checked("a", "read model", False, "404")
    record.read_checked("a", "read model", True)
    again = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    a, b = again.wallets["a"], again.wallets["b"]
    assert (a.replays_applied_again, a.again_sum, a.replays_refused_again) == (1, Decimal(-30), 1)
    assert (b.replays_applied_again, b.again_sum, b.replays_in_doubt, b.replay_doubt_in) == (
        1,
        Decimal(30),
        1,
        Decimal(20),
    )
    assert a.replay_difference == "status 201 -> 400"
    assert again.read_counts("read model") == (2, 1)
    assert a.unseen_answer == {"read model": "404"}
    record.merge(again)
    assert record.wallets["b"].again_sum == Decimal(60)
    assert record.read_counts("read model") == (4, 2)
    # wallets with none of it keep the saved record as small as before
    record.wallet_created("c", OK, Decimal(5))
    assert "again_sum" not in record.to_dict()["wallets"]["c"]


def test_an_adopted_wallet_starts_from_its_balance_and_entries_and_counts_as_no_creation() -> None:
    record = RunRecord("b")
    record.wallet_adopted("lt-a-w000001", Decimal(700), 12, 12)
    record.operation("credit", OK, "lt-a-w000001", Decimal(50))
    record.operation("debit", INDETERMINATE, "lt-a-w000001", Decimal(20))
    tally = record.wallets["lt-a-w000001"]
    assert tally.expected_balance() == (Decimal(730), Decimal(750))
    # the 12 entries it had, one acknowledged credit, one maybe: not a new initial entry
    assert tally.expected_entries() == (13, 14)
    assert record.creation_counts() == {OK: 0, REJECTED: 0, INDETERMINATE: 0}
    assert record.creations_attempted == 0
    # a wallet created in this run has no baseline; an adopted wallet with no money still has one
    record.wallet_created("lt-b-r00000000-000000", OK, Decimal(0))
    record.wallet_adopted("lt-a-w000002", Decimal(0), 0, 0)
    assert record.wallets["lt-b-r00000000-000000"].base_version == -1
    assert record.wallets["lt-a-w000002"].expected_entries() == (0, 0)


def test_an_adopted_baseline_survives_the_saved_record_and_a_workers_merge(tmp_path: Path) -> None:
    worker = RunRecord("b")
    worker.wallet_adopted("lt-a-w000001", Decimal("700.50"), 12, 11)
    worker.wallet_created("lt-b-r00000000-000000", OK, Decimal(0))
    path = tmp_path / "run-record.json"
    worker.save(path)
    saved = json.loads(path.read_text())["wallets"]
    assert "base_version" not in saved["lt-b-r00000000-000000"]  # kept small when created
    loaded = RunRecord.load(path)
    assert loaded.wallets == worker.wallets
    merged = RunRecord("b")
    merged.merge(RunRecord.from_dict(worker.to_dict()))
    tally = merged.wallets["lt-a-w000001"]
    assert (tally.initial_balance, tally.base_version, tally.base_entries) == (
        Decimal("700.50"),
        12,
        11,
    )


# --- the compact form: message parts, adopted wallets ------------------------------------------


def through_parts(record: RunRecord, size: int) -> RunRecord:
    """As a worker sends its record and the master reads it: the totals, then the wallets in
    parts of `size`, each through msgpack as Locust's messages carry them."""
    wallets = RunRecord(record.run_id)
    for part in record.message_parts(size):
        wallets.absorb(msgpack.loads(msgpack.dumps(part), raw=False, strict_map_key=False))
    whole = RunRecord.from_header(json.loads(json.dumps(record.header())))
    whole.merge(wallets)
    return whole


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(1, 5), st.sets(wallet_ids))
def test_a_record_sent_in_parts_of_any_size_is_read_back_whole(
    history: list[tuple], size: int, unverified
) -> None:
    record = record_of(history)
    record.unverified = set(unverified)
    again = through_parts(record, size)
    assert again == record
    assert again.to_dict() == record.to_dict()
    assert len(list(record.message_parts(size))) == -(-len(record.wallets) // size)


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(1, 5))
def test_merging_records_read_from_parts_equals_merging_the_records(
    history: list[tuple], size: int
) -> None:
    from_parts, from_wholes = RunRecord("run"), RunRecord("run")
    for process in (0, 1):
        from_parts.merge(through_parts(record_of(history, process), size))
        from_wholes.merge(record_of(history, process))
    assert from_parts == from_wholes == record_of(history)


def test_an_adopted_wallet_starts_from_its_balance_version_and_entries(tmp_path: Path) -> None:
    record = RunRecord("r")
    record.wallet_adopted("a", Decimal(700), 12, 9)
    record.operation("credit", OK, "a", Decimal(50))
    record.operation("debit", INDETERMINATE, "a", Decimal(20))
    a = record.wallets["a"]
    assert (a.created, a.initial_balance, a.base_version, a.base_entries) == (OK, 700, 12, 9)
    assert a.expected_balance() == (Decimal(730), Decimal(750))
    assert a.expected_entries() == (10, 11)  # the 9 it had, one credit, maybe one debit
    assert record.creations_attempted == 0  # nothing was created
    record.wallet_created("b", OK, Decimal(5))
    assert (record.wallets["b"].base_version, record.wallets["b"].base_entries) == (-1, -1)
    # kept by saving, by parts and by merging into a record that only saw the wallet's operations
    record.save(tmp_path / "run-record.json")
    assert RunRecord.load(tmp_path / "run-record.json") == record
    assert through_parts(record, 1) == record
    other = RunRecord("r")
    other.operation("credit", OK, "a", Decimal(1))
    other.tally("a").created = REJECTED  # a worker that did not adopt it
    other.merge(record)
    assert other.wallets["a"].expected_entries() == (11, 12)
    assert other.wallets["a"].base_version == 12


def test_the_saved_record_is_readable_json_with_money_as_decimal_strings(tmp_path: Path) -> None:
    record = RunRecord("r1")
    record.wallet_created("a", OK, Decimal(100))
    record.operation("credit", OK, "a", Decimal("12.50"))
    record.operation_sent("debit", "a", Decimal(3))
    path = tmp_path / "run-record.json"
    record.save(path)
    saved = json.loads(path.read_text())["wallets"]["a"]
    assert saved["created"] == OK and saved["initial_balance"] == "100"
    assert saved["ok_sum"] == {"credit": "12.50"} and saved["ok_count"] == {"credit": 1}
    assert saved["maybe_sum"] == {"debit": "3"} and saved["maybe_count"] == {"debit": 1}
    assert "base_entries" not in saved  # only adopted wallets carry their starting point


def test_money_finer_than_a_cent_is_refused_not_rounded() -> None:
    record = RunRecord("r1")
    with pytest.raises(ValueError, match="finer than a cent"):
        record.operation("credit", OK, "a", Decimal("0.001"))
    assert record.operations == {OK: 0, REJECTED: 0, INDETERMINATE: 0}


def test_merging_a_record_that_shares_wallets_adds_their_operations_and_keeps_the_rest() -> None:
    """Shared hot wallets: two workers book the same wallet; only one created it."""
    first, second = RunRecord("r"), RunRecord("r")
    first.wallet_created("a", OK, Decimal(100))
    first.wallet_created("hot", OK, Decimal(500))
    first.operation("credit", OK, "hot", Decimal(10))
    second.wallet_created("hot", REJECTED, Decimal(999))  # a 409: the other worker made it
    second.operation("debit", OK, "hot", Decimal(30))
    second.replay("hot", matched=False)
    second.wallet_created("c", OK, Decimal(7))
    first.merge(through_parts(second, 1))
    assert list(first.wallets) == ["a", "hot", "c"]
    hot = first.wallets["hot"]
    assert (hot.created, hot.initial_balance, hot.replays) == (OK, 500, 1)
    assert hot.expected_balance() == (Decimal(480), Decimal(480))
    assert hot.expected_entries() == (3, 3)
    assert first.wallets["c"].expected_balance() == (Decimal(7), Decimal(7))
    assert first.wallets["a"].expected_balance() == (Decimal(100), Decimal(100))
    assert first.creations_attempted == 4 and first.operations[OK] == 2


@given(
    histories(),
    st.lists(st.integers(0, 5000), max_size=3),
    st.lists(st.tuples(wallet_ids, st.booleans())),
)
def test_the_expectations_of_many_wallets_at_once_are_each_wallets_own(
    history: list[tuple], adopted: list[int], reads: list[tuple[str, bool]]
) -> None:
    record = record_of(history)
    for wallet, shown in reads:  # read-your-writes polls, some that missed a write
        record.read_checked(wallet, "ledger", shown)
    for n, balance in enumerate(adopted):  # adopted wallets: a baseline instead of a creation
        record.wallet_adopted(f"lt-a-w{n:06d}", Decimal(balance), n, n)
        record.operation("credit", INDETERMINATE, f"lt-a-w{n:06d}", Decimal(5))
    wallets = sorted(record.wallets)
    tallies = [record.wallets[w] for w in wallets]
    assert record.expectations_of(wallets) == [
        (
            *tally.expected_balance(),
            *tally.expected_entries(),
            not (tally.replay_mismatches or any(tally.reads_unseen.values())),
        )
        for tally in tallies
    ]
    lows, highs = record.expected_cents_of(wallets)
    assert [(from_cents(low), from_cents(high)) for low, high in zip(lows, highs, strict=True)] == [
        tally.expected_balance() for tally in tallies
    ]
