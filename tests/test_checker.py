"""The consistency checker as a pure function of (run record, facts read from PostgreSQL): a
consistent run is valid, each kind of violation comes from its own fact and from no other,
indeterminate operations allow a range, unverified wallets face only the database's own
invariants, missing tables are skipped by name, and the report groups and serialises its findings.
No database here: the facts are what a correct service would show, then broken on purpose."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wallet_world import World
from wallet_users.consistency import check_consistency
from wallet_users.consistency.facts import (
    Facts,
    Lag,
    LedgerSummary,
    OutboxSummary,
    SnapshotCheck,
    WriteSide,
)
from wallet_users.consistency.report import KINDS, NOT_CHECKED, ConsistencyReport, Violation
from wallet_users.consistency.schema import CONSUMERS
from wallet_users.record import INDETERMINATE, OK, REJECTED, RunRecord

RUN = "run1"
READ_MODEL, LEDGER = CONSUMERS


def wid(name: str) -> str:
    return f"lt-{RUN}-{name}"


A, B, C = wid("w000000"), wid("w000001"), wid("w000002")


@dataclass
class Scenario:
    """A run as the load generator saw it (the record) and as a correct service applied it (each
    wallet's balance-changing events in order). Indeterminate operations say whether they applied."""

    record: RunRecord = field(default_factory=lambda: RunRecord(RUN))
    events: dict[str, list[Decimal]] = field(default_factory=dict)

    def create(self, wallet: str, initial: int = 100, outcome: str = OK, applied: bool = True):
        self.record.wallet_created(wallet, outcome, Decimal(initial))
        if applied:
            self.events[wallet] = [Decimal(initial)] if initial else []
        return self

    def credit(self, wallet: str, amount: int, outcome: str = OK, applied: bool | None = None):
        return self._operation("credit", wallet, amount, None, outcome, applied)

    def debit(self, wallet: str, amount: int, outcome: str = OK, applied: bool | None = None):
        return self._operation("debit", wallet, amount, None, outcome, applied)

    def transfer(
        self, source: str, to: str, amount: int, outcome: str = OK, applied: bool | None = None
    ):
        return self._operation("transfer", source, amount, to, outcome, applied)

    def _operation(self, kind, wallet, amount, to, outcome, applied):
        self.record.operation(kind, outcome, wallet, Decimal(amount), to_wallet_id=to)
        if applied if applied is not None else outcome == OK:
            sign = 1 if kind == "credit" else -1
            self.events[wallet].append(sign * Decimal(amount))
            if to is not None:
                self.events[to].append(Decimal(amount))
        return self

    def facts(self) -> Facts:
        """What a correct service's tables show after applying the events."""
        facts = Facts(
            write_side={},
            read_model={},
            ledger={},
            outbox={},
            duplicate_references=[],
            duplicate_event_entries=[],
            transfer_imbalances=[],
            lag={consumer: Lag(3, 10.0, 20.0, 30.0, 40.0) for consumer in CONSUMERS},
        )
        for wallet, amounts in self.events.items():
            balance, lowest = Decimal(0), None
            for amount in amounts:
                after = balance + amount
                lowest = min(balance, after) if lowest is None else min(lowest, balance, after)
                balance = after
            version = len(amounts)  # WalletCreated is version 0, then one event per amount
            facts.write_side[wallet] = WriteSide(balance, version)
            facts.read_model[wallet] = balance
            if amounts:
                facts.ledger[wallet] = LedgerSummary(
                    entries=len(amounts),
                    signed_sum=sum(amounts, Decimal(0)),
                    last_after=balance,
                    first_before=Decimal(0),
                    lowest=lowest,
                )
            facts.outbox[wallet] = OutboxSummary(
                events=version + 1,
                min_version=0,
                max_version=version,
                distinct_versions=version + 1,
                unprocessed=dict.fromkeys(CONSUMERS, 0),
                processed_twice=dict.fromkeys(CONSUMERS, 0),
            )
        return facts


def busy_run() -> Scenario:
    """Three wallets, every kind of operation, a refusal and an indeterminate one that applied."""
    return (
        Scenario()
        .create(A, 500)
        .create(B, 200)
        .create(C, 0)
        .credit(A, 50)
        .debit(B, 30)
        .transfer(A, C, 120)
        .transfer(B, A, 70)
        .debit(C, 999, outcome=REJECTED)
        .credit(C, 15, outcome=INDETERMINATE, applied=True)
    )


def kinds(report: ConsistencyReport) -> set[str]:
    return {kind for kind, items in report.violations.items() if items}


def violations(report: ConsistencyReport) -> list[Violation]:
    return [v for items in report.violations.values() for v in items]


def test_a_consistent_run_is_valid_with_its_counts_and_lag() -> None:
    scenario = busy_run()
    report = check_consistency(scenario.record, scenario.facts())
    assert report.status == "valid" and report.valid is True
    assert report.violations == {} and report.skipped == {}
    assert report.counts == {"wallets": 3, "ledger_entries": 9, "outbox_events": 12}
    assert report.lag_ms[LEDGER] == {
        "events": 3,
        "p50": 10.0,
        "p95": 20.0,
        "p99": 30.0,
        "max": 40.0,
    }
    assert report.headline() == "consistency VALID: 3 wallets, no violation"


# Each kind of violation, the one fact that breaks it, and the only kinds that fact may produce.
# Money invented on the write side is two findings by construction: one wallet off its expected
# balance, and the run's total off; expected_balance is shown alone with a movement between two
# wallets that keeps the total. A missing wallet takes its balance with it: the total is off too.


def _missing_wallet(f: Facts) -> None:
    del f.write_side[B], f.read_model[B], f.ledger[B], f.outbox[B]


def _negative_balance(f: Facts) -> None:
    f.ledger[C].lowest = Decimal(-5)  # e.g. a debit applied past the balance, then a credit


def _read_model_missing(f: Facts) -> None:
    del f.read_model[A]


def _read_model_mismatch(f: Facts) -> None:
    f.read_model[A] += 10


def _ledger_balance_mismatch(f: Facts) -> None:
    f.ledger[A].last_after += 10


def _ledger_sum_mismatch(f: Facts) -> None:
    f.ledger[A].signed_sum -= 10


def _ledger_chain_broken(f: Facts) -> None:
    f.ledger[A].chain_breaks = 1
    f.ledger[A].first_break = ("entry-7", Decimal(431), Decimal(430))


def _ledger_arithmetic(f: Facts) -> None:
    f.ledger[A].arithmetic_breaks = 2
    f.ledger[A].first_arithmetic = ("entry-3", Decimal(500), Decimal(50), Decimal(551))


def _duplicate_reference_id(f: Facts) -> None:
    f.duplicate_references.append(("ref-1", 2, B))


def _duplicate_ledger_entry(f: Facts) -> None:
    f.duplicate_event_entries.append((B, "event-9", 2))


def _transfer_not_conserved(f: Facts) -> None:
    f.transfer_imbalances.append(("transfer-4", Decimal(-120), 1, f"{A} {C}"))


def _outbox_missing_versions(f: Facts) -> None:
    f.outbox[B].distinct_versions -= 1
    f.outbox[B].events -= 1


def _outbox_extra_versions(f: Facts) -> None:
    # a version the run never asked for, on the write side and in the outbox alike
    f.write_side[B].version += 1
    f.outbox[B].distinct_versions += 1
    f.outbox[B].events += 1
    f.outbox[B].max_version += 1


def _ledger_snapshot_mismatch(f: Facts) -> None:
    f.snapshots = {A: SnapshotCheck(4, 1, (2, Decimal(550), None))}


def _unprocessed_event(f: Facts) -> None:
    f.outbox[B].unprocessed[LEDGER] = 2


def _event_processed_twice(f: Facts) -> None:
    f.outbox[B].processed_twice[READ_MODEL] = 1


def _expected_entries(f: Facts) -> None:
    f.ledger[B].entries += 1  # e.g. an entry for a refused operation that netted to zero


def _money_moved_unasked(f: Facts) -> None:
    for wallet, delta in ((A, -25), (B, 25)):
        f.write_side[wallet].balance += delta
        f.read_model[wallet] += delta
        f.ledger[wallet].last_after += delta
        f.ledger[wallet].signed_sum += delta


def _money_invented(f: Facts) -> None:
    f.write_side[A].balance += 25
    f.read_model[A] += 25
    f.ledger[A].last_after += 25
    f.ledger[A].signed_sum += 25


BREAKS = {
    "missing_wallet": (_missing_wallet, {"missing_wallet", "conservation"}),
    "negative_balance": (_negative_balance, {"negative_balance"}),
    "read_model_missing": (_read_model_missing, {"read_model_missing"}),
    "read_model_mismatch": (_read_model_mismatch, {"read_model_mismatch"}),
    "ledger_balance_mismatch": (_ledger_balance_mismatch, {"ledger_balance_mismatch"}),
    "ledger_sum_mismatch": (_ledger_sum_mismatch, {"ledger_sum_mismatch"}),
    "ledger_chain_broken": (_ledger_chain_broken, {"ledger_chain_broken"}),
    "ledger_arithmetic": (_ledger_arithmetic, {"ledger_arithmetic"}),
    "duplicate_reference_id": (_duplicate_reference_id, {"duplicate_reference_id"}),
    "duplicate_ledger_entry": (_duplicate_ledger_entry, {"duplicate_ledger_entry"}),
    "transfer_not_conserved": (_transfer_not_conserved, {"transfer_not_conserved"}),
    "outbox_missing_versions": (_outbox_missing_versions, {"outbox_missing_versions"}),
    "outbox_extra_versions": (_outbox_extra_versions, {"outbox_extra_versions"}),
    "ledger_snapshot_mismatch": (_ledger_snapshot_mismatch, {"ledger_snapshot_mismatch"}),
    "unprocessed_event": (_unprocessed_event, {"unprocessed_event"}),
    "event_processed_twice": (_event_processed_twice, {"event_processed_twice"}),
    "expected_balance": (_money_moved_unasked, {"expected_balance"}),
    "expected_entries": (_expected_entries, {"expected_entries"}),
    "conservation": (_money_invented, {"expected_balance", "conservation"}),
}


CLIENT_EVIDENCE = {"idempotency", "read_model_never_showed", "ledger_never_showed"}


def test_every_kind_of_violation_has_a_fact_that_produces_it() -> None:
    assert set(BREAKS) | CLIENT_EVIDENCE == set(KINDS)


@pytest.mark.parametrize("kind", BREAKS)
def test_each_broken_fact_produces_its_own_kind_and_no_other(kind: str) -> None:
    scenario = busy_run()
    facts = scenario.facts()
    breaks, expected_kinds = BREAKS[kind]
    breaks(facts)
    report = check_consistency(scenario.record, facts)
    assert report.status == "invalid" and report.valid is False
    assert kinds(report) == expected_kinds, report.to_dict()["summary"]
    for violation in report.violations[kind]:
        if violation.wallet_id is not None:
            assert violation.wallet_id.startswith(f"lt-{RUN}-")
            assert violation.wallet_id in violation.query  # the paste-able SQL looks at it
        assert violation.magnitude > 0
        assert violation.query.startswith("SELECT")
    assert f"consistency INVALID: {report.violation_count()} violations" in report.headline()


def test_a_replay_answered_differently_is_an_idempotency_violation_and_nothing_else() -> None:
    scenario = busy_run()
    scenario.record.replay(A, matched=True)
    scenario.record.replay(B, matched=False)
    scenario.record.replay(B, matched=False)
    report = check_consistency(scenario.record, scenario.facts())
    assert kinds(report) == {"idempotency"}
    (violation,) = report.violations["idempotency"]
    assert violation.wallet_id == B
    assert violation.found == "2 of 2 answered differently"


def test_a_missing_chain_start_is_a_broken_chain() -> None:
    scenario = busy_run()
    facts = scenario.facts()
    facts.ledger[B].first_before = Decimal(1)
    report = check_consistency(scenario.record, facts)
    assert kinds(report) == {"ledger_chain_broken"}
    assert report.violations["ledger_chain_broken"][0].wallet_id == B


def test_an_acknowledged_overdraft_shows_as_a_negative_balance_and_nothing_else() -> None:
    # the service said yes to a debit past the balance: what the client expects is negative too
    scenario = Scenario().create(A, 100).debit(A, 150)
    report = check_consistency(scenario.record, scenario.facts())
    assert kinds(report) == {"negative_balance"}
    assert {v.detail for v in report.violations["negative_balance"]} == {"", "in the ledger"}
    assert all(v.found == Decimal(-50) for v in report.violations["negative_balance"])


@pytest.mark.parametrize("applied", [False, True])
def test_an_indeterminate_operation_allows_either_outcome(applied: bool) -> None:
    scenario = (
        Scenario()
        .create(A, 100)
        .create(B, 100)
        .credit(A, 40, outcome=INDETERMINATE, applied=applied)
        .debit(A, 30, outcome=INDETERMINATE, applied=applied)
        .transfer(B, A, 60, outcome=INDETERMINATE, applied=applied)
    )
    report = check_consistency(scenario.record, scenario.facts())
    assert report.valid is True, report.to_dict()["summary"]


def test_a_balance_outside_the_indeterminate_range_is_reported_with_the_range() -> None:
    scenario = Scenario().create(A, 100).credit(A, 40, outcome=INDETERMINATE, applied=False)
    facts = scenario.facts()
    facts.write_side[A].balance = facts.read_model[A] = Decimal(150)  # 10 above the most
    report = check_consistency(scenario.record, facts)
    violation = report.violations["expected_balance"][0]
    assert violation.expected == "100..140"
    assert violation.found == Decimal(150)
    assert violation.magnitude == 10.0


def test_an_indeterminate_creation_that_never_happened_is_not_a_missing_wallet() -> None:
    scenario = busy_run().create(wid("w000003"), 100, outcome=INDETERMINATE, applied=False)
    report = check_consistency(scenario.record, scenario.facts())
    assert report.valid is True, report.to_dict()["summary"]
    assert report.counts["wallets"] == 4


def test_a_refused_creation_is_not_checked_at_all() -> None:
    scenario = busy_run().create(wid("w000003"), 100, outcome=REJECTED, applied=False)
    report = check_consistency(scenario.record, scenario.facts())
    assert report.valid is True
    assert report.counts["wallets"] == 3


def test_unverified_wallets_face_only_the_database_invariants() -> None:
    # a lost worker's record: what it did to B and C is unknown to the merged record
    scenario = busy_run()
    scenario.record.unverified |= {B, C}
    facts = scenario.facts()
    for wallet in (B, C):  # money the record knows nothing about, consistent in the database
        facts.write_side[wallet].balance += 1000
        facts.read_model[wallet] += 1000
        facts.ledger[wallet].last_after += 1000
        facts.ledger[wallet].signed_sum += 1000
        facts.ledger[wallet].entries += 3
    report = check_consistency(scenario.record, facts)
    assert report.valid is True, report.to_dict()["summary"]
    assert report.unverified_wallets == [B, C]
    assert any("2 wallets unverified" in line for line in report.console_lines())

    facts.read_model[C] += 1  # the database disagreeing with itself is still found
    facts.write_side[A].balance += 7  # and a verified wallet is still held to the record
    report = check_consistency(scenario.record, facts)
    found = {(v.kind, v.wallet_id) for v in violations(report)}
    assert ("read_model_mismatch", C) in found
    assert ("expected_balance", A) in found
    assert not {kind for kind, wallet in found if wallet in (B, C)} - {"read_model_mismatch"}


MISSING_TABLES = {
    "wallets_read_model": ("read model", ["read_model"]),
    "ledger_entries": ("ledger (chain, sums, duplicates, transfers)", ["ledger"]),
    "outbox": ("outbox processing and projection lag", ["outbox", "lag"]),
    "outbox_consumer_processing": ("outbox processing and projection lag", ["outbox", "lag"]),
}


@pytest.mark.parametrize("table", MISSING_TABLES)
def test_a_missing_table_is_a_skipped_check_by_name_never_a_silent_pass(table: str) -> None:
    scenario = busy_run()
    facts = scenario.facts()
    check, unread = MISSING_TABLES[table]
    for name in unread:
        setattr(facts, name, None)
    facts.tables_missing[table] = f"table public.{table} does not exist"
    report = check_consistency(scenario.record, facts)
    assert report.skipped == {check: f"table public.{table} does not exist"}
    assert report.headline() == "consistency VALID: 3 wallets, no violation (1 checks skipped)"
    assert f"  skipped {check}: table public.{table} does not exist" in report.console_lines()
    assert report.to_dict()["skipped_checks"] == report.skipped


def test_missing_tables_do_not_hide_what_the_remaining_tables_show() -> None:
    scenario = busy_run()
    facts = scenario.facts()
    facts.read_model = None
    facts.tables_missing["wallets_read_model"] = "table public.wallets_read_model does not exist"
    facts.ledger[A].signed_sum += 1
    report = check_consistency(scenario.record, facts)
    assert kinds(report) == {"ledger_sum_mismatch"}
    assert "read model" in report.skipped


def test_groups_give_count_first_worst_and_last_with_worst_the_largest_magnitude() -> None:
    scenario = busy_run()
    facts = scenario.facts()
    for wallet, off in ((A, 3), (B, 40), (C, -7)):  # wallets are checked in id order
        facts.read_model[wallet] += off
    report = check_consistency(scenario.record, facts)
    group = report.groups()["read_model_mismatch"]
    assert group["count"] == 3
    assert group["meaning"] == KINDS["read_model_mismatch"]
    assert (
        group["first"]["wallet_id"],
        group["worst"]["wallet_id"],
        group["last"]["wallet_id"],
    ) == (
        A,
        B,
        C,
    )
    assert group["worst"]["magnitude"] == 40.0
    assert group["last"]["magnitude"] == 7.0  # how far off, whichever the direction


def test_the_json_report_round_trips_and_keeps_decimal_digits(tmp_path: Path) -> None:
    scenario = busy_run()
    facts = scenario.facts()
    facts.read_model[A] += Decimal("0.01")
    _duplicate_reference_id(facts)
    report = check_consistency(scenario.record, facts, target="user=u password=*** dbname=d")
    report.settle = {"drained": True, "waited_s": 0.2, "backlog": {LEDGER: 0}}
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    path = tmp_path / "nested" / "consistency.json"
    report.save(path)
    saved = json.loads(path.read_text())
    assert saved == data
    assert saved["valid"] is False and saved["status"] == "invalid"
    mismatch = saved["violations"]["read_model_mismatch"][0]
    assert (mismatch["wallet_id"], mismatch["found"]) == (A, str(facts.read_model[A]))
    assert saved["summary"]["duplicate_reference_id"]["count"] == 1
    assert saved["projection_lag_ms"][READ_MODEL]["p99"] == 30.0


def test_a_report_that_was_not_checked_says_so_in_json_and_headline() -> None:
    report = ConsistencyReport(status=NOT_CHECKED, run_id=RUN, reason="no --pg-dsn")
    data = json.loads(json.dumps(report.to_dict()))
    assert (data["valid"], data["status"], data["reason"]) == (None, "not checked", "no --pg-dsn")
    assert report.headline() == "consistency NOT CHECKED: no --pg-dsn"


OPERATION = st.tuples(
    st.sampled_from(["credit", "debit", "transfer"]),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(1, 300),
    st.sampled_from([OK, OK, REJECTED, INDETERMINATE]),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=4, max_size=4), st.lists(OPERATION, max_size=40))
def test_any_history_a_correct_service_could_have_produced_is_valid(initial, operations) -> None:
    """Whatever mix of acknowledged, refused and indeterminate operations, and whichever of the
    indeterminate ones applied, a service that applied exactly those raises no alarm."""
    wallets = [wid(f"w{i:06d}") for i in range(4)]
    scenario = Scenario()
    for wallet, balance in zip(wallets, initial, strict=True):
        scenario.create(wallet, balance)
    for kind, source, to, amount, outcome, maybe in operations:
        if kind == "transfer" and source == to:
            continue
        applied = outcome == OK or (outcome == INDETERMINATE and maybe)
        if kind != "credit" and applied and sum(scenario.events[wallets[source]]) < amount:
            outcome, applied = REJECTED, False  # a correct service refuses it for funds
        if kind == "transfer":
            scenario.transfer(wallets[source], wallets[to], amount, outcome, applied)
        else:
            getattr(scenario, kind)(wallets[source], amount, outcome, applied)
    report = check_consistency(scenario.record, scenario.facts())
    assert report.valid is True, report.to_dict()["summary"]


def test_ledger_entries_in_an_unknowable_order_skip_the_chain_but_not_the_sum():
    """The real service keeps no event version: entries sharing a createdAt have no order, so
    their chain and 'last' balanceAfter are guesses, reported as skipped, never as violations."""
    from decimal import Decimal

    from wallet_users.consistency.checker import check_consistency
    from wallet_users.consistency.facts import Facts, LedgerSummary, WriteSide
    from wallet_users.record import RunRecord

    record = RunRecord("r1")
    record.wallet_created("lt-r1-w000000", "ok", Decimal(100))
    record.operation("credit", "ok", "lt-r1-w000000", Decimal(50))
    ledger = LedgerSummary(
        entries=2,
        signed_sum=Decimal(150),
        last_after=Decimal(100),  # the tie put the initial credit last
        first_before=Decimal(100),
        lowest=Decimal(0),
        chain_breaks=1,
        first_break=("e1", Decimal(0), Decimal(150)),
        ambiguous_order=2,
    )
    facts = Facts(
        write_side={"lt-r1-w000000": WriteSide(Decimal(150), 2)},
        read_model={"lt-r1-w000000": Decimal(150)},
        ledger={"lt-r1-w000000": ledger},
    )
    report = check_consistency(record, facts)
    assert report.violations == {}, report.violations
    assert "ledger order" in report.skipped
    # the sum still counts: a wrong one is still found
    ledger.signed_sum = Decimal(140)
    report = check_consistency(record, facts)
    assert set(report.violations) == {"ledger_sum_mismatch"}


# --- root causes: each fault switch and each behaviour of the real Wallex, from its rows ----------


def world_run(world: World | None = None, before=None) -> World:
    """Four wallets, every kind of operation, replays answered from storage; `before(world, A,
    B, C, D)` may switch a fault on before the operations."""
    world = world or World()
    a, b, c, d = (
        world.create(n, i)
        for n, i in (("w000000", 500), ("w000001", 300), ("w000002", 0), ("w000003", 800))
    )
    if before is not None:
        before(world, a, b, c, d)
    world.credit(a, 50).debit(b, 30).transfer(a, c, 120).transfer(b, a, 70, replay="stored")
    world.credit(c, 15).debit(d, 100).transfer(d, b, 200).credit(a, 25, replay="stored")
    world.debit(a, 40).transfer(c, d, 35).credit(b, 60)
    return world


def cause_keys(report: ConsistencyReport) -> set[str]:
    return {cause.key for cause in report.causes}


def test_a_clean_world_is_valid_with_no_cause() -> None:
    world = world_run()
    report = check_consistency(world.record, world.facts())
    assert report.valid is True, report.to_dict()["summary"]
    assert report.causes == [] and report.divergences == {}


def _replays_again(world, a, b, c, d):
    world.credit(a, 40, replay="again").transfer(d, c, 90, replay="again").debit(
        b, 20, replay="again"
    )


def _replay_refused(world, a, b, c, d):
    world.debit(b, 200, replay="refused")  # the replay found 100 left: refused for funds


def _ledger_skip(world, a, b, c, d):
    world.ledger_skip |= {(a, 3), (b, 2)}


def _ledger_duplicate(world, a, b, c, d):
    world.ledger_duplicate |= {(a, 3)}


def _ledger_wrong_before(world, a, b, c, d):
    world.ledger_wrong_before |= {(b, 3)}


def _read_model_lost_update(world, a, b, c, d):
    world.read_model_lost |= {(a, 3)}


def _outbox_drop(world, a, b, c, d):
    world.drop_outbox = True
    world.credit(b, 45)


def _overdraft(world, a, b, c, d):
    world.debit(c, 20)  # c holds nothing yet: the service said yes


def _initial_twice(world, a, b, c, d):
    world.ledger_initial_twice = True


def _read_404(world, a, b, c, d):
    world.read_your_writes(d, "read model", 6, 6, "404")


def _read_model_unbuilt(world, a, b, c, d):
    world.read_model_unbuilt |= {a, b}


def _third_consumer(world, a, b, c, d):
    world.consumers = (*world.consumers, "kafka-publisher")


# the behaviour, and the one cause it must be reported as (None: nothing to report)
BEHAVIOURS = {
    "replay-twice / keys-ignored": (_replays_again, "replays_applied_twice"),
    "keys-ignored, replay refused for funds": (_replay_refused, "replays_applied_twice"),
    "ledger-skip": (_ledger_skip, "ledger_entries_missing"),
    "ledger-duplicate": (_ledger_duplicate, "ledger_entries_duplicated"),
    "ledger-wrong-before": (_ledger_wrong_before, "ledger_entries_unchained"),
    "read-model-lost-update": (_read_model_lost_update, "read_model_lost_updates"),
    "outbox-drop": (_outbox_drop, "outbox_rows_missing"),
    "overdraft": (_overdraft, "balances_below_zero"),
    "ledger-initial-twice": (_initial_twice, "initial_balance_twice"),
    "read-404": (_read_404, "read_endpoint_stale"),
    "read-model-unbuilt": (_read_model_unbuilt, "read_model_not_built"),
    "third-consumer": (_third_consumer, None),
}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_each_behaviour_is_reported_as_exactly_its_cause_explaining_every_violation(
    behaviour: str,
) -> None:
    switch, expected = BEHAVIOURS[behaviour]
    world = world_run(before=switch)
    report = check_consistency(world.record, world.facts())
    if expected is None:
        assert report.valid is True, report.to_dict()["summary"]
        assert report.causes == []
        return
    assert report.valid is False
    assert cause_keys(report) == {expected}, [c.line() for c in report.causes]
    assert report.unexplained() == {}, report.to_dict()["summary"]
    (cause,) = report.causes
    assert cause.wallets and cause.evidence, cause
    assert cause.explained == report.violation_count()
    assert report.cause_lines()[0] == f"  cause: {cause.line()}"


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_a_projector_that_stopped_is_a_stall(consumer: str) -> None:
    world = world_run()
    world.stall(consumer, after=10)
    report = check_consistency(world.record, world.facts())
    assert cause_keys(report) == {"projector_stalled"}, [c.line() for c in report.causes]
    assert report.unexplained() == {}, report.to_dict()["summary"]
    assert consumer in report.causes[0].detail and consumer in report.causes[0].evidence


@pytest.mark.parametrize("consumers", [(LEDGER,), (READ_MODEL,), CONSUMERS])
def test_events_committed_after_a_higher_id_was_processed_are_skipped_events_not_a_stall(
    consumers: tuple[str, ...],
) -> None:
    """checkpoint-by-id under slow commits: no processing row, below the checkpoint."""
    world = world_run()
    for consumer in consumers:
        world.skip(consumer, {7, 12})
    facts = world.facts()
    assert all(facts.checkpoints[c] > 12 for c in consumers)
    report = check_consistency(world.record, facts)
    assert cause_keys(report) == {"events_skipped_by_projector"}, [c.line() for c in report.causes]
    assert report.unexplained() == {}, report.to_dict()["summary"]
    assert report.causes[0].title.startswith("events skipped by a projector: committed after")


def test_marked_processed_without_an_entry_is_not_a_skip() -> None:
    """ledger-skip leaves a processing row: the checkpoint and the rows tell it from a skip."""
    world = world_run(before=_ledger_skip)
    world.skip(LEDGER, {14})
    report = check_consistency(world.record, world.facts())
    assert cause_keys(report) == {"ledger_entries_missing", "events_skipped_by_projector"}


def wallex_world(ryw_row: bool = False) -> World:
    """The real Wallex as run: replays applied again, some ledger entries lost, the initial
    balance twice, the read model mostly unbuilt, GET /wallets/{id} 404 for every read, a third
    consumer."""
    world = World()
    world.consumers = (*world.consumers, "kafka-publisher")
    world.ledger_initial_twice = True

    def before(world, a, b, c, d):
        world.read_model_unbuilt |= {a, b, c} | ({d} if not ryw_row else set())
        world.ledger_skip |= {(b, 2), (d, 4)}
        _replays_again(world, a, b, c, d)
        world.read_your_writes(d, "read model", 9, 9, "404")
        world.read_your_writes(d, "ledger", 9, 9, "balance 1700")

    return world_run(world, before)


@pytest.mark.parametrize("ryw_row", [False, True], ids=["its read model unbuilt", "its row built"])
def test_the_wallex_behaviours_are_reported_as_their_causes_and_nothing_else(ryw_row: bool) -> None:
    world = wallex_world(ryw_row)
    report = check_consistency(world.record, world.facts())
    expected = {
        "replays_applied_twice",
        "ledger_entries_missing",
        "initial_balance_twice",
        "read_model_not_built",
    } | ({"read_endpoint_stale"} if ryw_row else set())
    assert cause_keys(report) == expected, [c.line() for c in report.causes]
    assert report.unexplained() == {}, {
        k: [(v.wallet_id, v.expected, v.found, v.detail) for v in vs if not v.causes]
        for k, vs in report.violations.items()
    }
    titles = {c.key: c.title for c in report.causes}
    assert titles["read_model_not_built"] == f"read model not built for {4 - ryw_row} of 4 wallets"
    # ordered by how much they explain
    explained = [c.explained for c in report.causes]
    assert explained == sorted(explained, reverse=True)
    replays = next(c for c in report.causes if c.key == "replays_applied_twice")
    assert {"idempotency", "expected_balance", "outbox_extra_versions"} <= set(replays.explains)


def test_a_violation_no_cause_explains_stays_on_its_own() -> None:
    world = world_run(before=_replays_again)
    facts = world.facts()
    a = world.wid("w000000")
    facts.write_side[a].balance += 7  # besides the replay's second credit, 7 from nowhere
    facts.read_model[a] += 7
    report = check_consistency(world.record, facts)
    alone = report.unexplained()
    assert alone.get("expected_balance") == 1 and "conservation" in alone, alone
    (violation,) = [v for v in report.violations["expected_balance"] if v.wallet_id == a]
    assert violation.causes == []
    assert "  not explained by a cause: " in "\n".join(report.cause_lines())


def test_the_first_divergence_names_the_version_where_the_ledger_departs() -> None:
    world = world_run(before=_ledger_skip)
    report = check_consistency(world.record, world.facts())
    b = world.wid("w000001")
    divergence = report.divergences[b]["ledger"]
    assert divergence["version"] == 2
    assert "no ledger entry" in divergence["what"]
    initial = world_run(before=_initial_twice)
    report = check_consistency(initial.record, initial.facts())
    assert report.divergences[world.wid("w000000")]["ledger"]["version"] == 0


def test_the_first_divergence_of_a_read_model_names_the_version_it_stopped_at() -> None:
    world = world_run(before=_read_model_lost_update)
    report = check_consistency(world.record, world.facts())
    a = world.wid("w000000")
    read = report.divergences[a]["read_model"]
    assert read["version"] == 3, read


def test_an_acknowledged_snapshot_the_ledger_does_not_hold_is_a_violation() -> None:
    world = world_run()
    facts = world.facts()
    a = world.wid("w000000")
    facts.snapshots[a] = SnapshotCheck(8, 1, (4, Decimal(450), Decimal(460)))
    report = check_consistency(world.record, facts)
    assert kinds(report) == {"ledger_snapshot_mismatch"}
    (violation,) = report.violations["ledger_snapshot_mismatch"]
    assert (violation.wallet_id, violation.found) == (a, "balanceAfter 460")
    assert violation.detail == "1 of 8 acknowledged snapshots, first at version 4"


def test_causes_lead_the_json_report() -> None:
    world = wallex_world()
    data = check_consistency(world.record, world.facts()).to_dict()
    assert list(data).index("causes") < list(data).index("summary")
    assert data["causes"][0]["line"].startswith(data["causes"][0]["title"])
    assert json.loads(json.dumps(data)) == data


def test_without_event_versions_in_the_ledger_the_wallex_causes_come_from_counts() -> None:
    """The real service's ledger keeps no eventVersion: missing entries are counted against the
    processed events, the double initial balance found by its description."""
    world = wallex_world()
    world.ledger_versions = False
    facts = world.facts()
    report = check_consistency(world.record, facts)
    assert cause_keys(report) == {
        "replays_applied_twice",
        "ledger_entries_missing",
        "initial_balance_twice",
        "read_model_not_built",
    }, [c.line() for c in report.causes]
    assert "acknowledged snapshots" in report.skipped
    assert report.unexplained() == {}, report.to_dict()["summary"]


def test_a_stall_before_a_wallet_was_created_counts_only_its_balance_changing_events() -> None:
    """Its WalletCreated was never projected either, but that event has no ledger entry."""
    world = world_run()
    world.stall(LEDGER, after=2)  # before the second wallet's creation
    report = check_consistency(world.record, world.facts())
    assert cause_keys(report) == {"projector_stalled"}
    assert report.unexplained() == {}, report.to_dict()["summary"]


def test_a_stopped_projector_owns_the_late_commits_below_its_checkpoint() -> None:
    """It stalled with an event committed late below its checkpoint: a live projector would
    have taken that one in its next batch, so it is the stall's, not a skip."""
    world = world_run()
    world.stall(LEDGER, after=10)
    world.skip(LEDGER, {8})
    facts = world.facts()
    assert facts.checkpoints[LEDGER] == 10
    report = check_consistency(world.record, facts)
    assert cause_keys(report) == {"projector_stalled"}, [c.line() for c in report.causes]
    assert report.unexplained() == {}


def test_a_replay_cut_short_by_the_stop_may_have_been_applied_again() -> None:
    """The stop killed the user before the replay's answer came: the service executed it again,
    the client never learnt it. In a run where replays are seen applied twice, that one is
    within the cause's reach; in a run where none was, it explains nothing."""
    world = world_run(before=_replays_again)
    world.transfer(world.wid("w000003"), world.wid("w000001"), 55, replay="cut short")
    report = check_consistency(world.record, world.facts())
    assert cause_keys(report) == {"replays_applied_twice"}
    assert report.unexplained() == {}, report.to_dict()["summary"]

    alone = world_run()
    alone.credit(alone.wid("w000000"), 30, replay="cut short")
    report = check_consistency(alone.record, alone.facts())
    assert report.causes == [] and report.unexplained()


def test_the_readme_tables_name_every_kind_and_every_cause_as_the_code_does() -> None:
    from wallet_users.consistency.causes import CAUSES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for kind, meaning in KINDS.items():
        assert f"| `{kind}` | {meaning} |" in readme, kind
    for cause, meaning in CAUSES.items():
        assert f"| `{cause}` | {meaning} |" in readme, cause
    assert "`outbox_gap`" not in readme


def test_each_cause_shows_the_first_divergence_of_its_own_evidence() -> None:
    world = wallex_world()
    report = check_consistency(world.record, world.facts())
    lines = report.cause_lines()
    for number, line in enumerate(lines):
        if not line.startswith("  cause: "):
            continue
        cause = next(c for c in report.causes if line == f"  cause: {c.line()}")
        follow = lines[number + 1 : number + 3]
        divergence = [x for x in follow if x.startswith("    first divergence: ")]
        if cause.key == "replays_applied_twice":
            assert not divergence  # the ledger agrees with both acknowledged applications
            continue
        assert divergence, (cause.key, follow)
        if cause.example_wallet:
            assert divergence[0].startswith(f"    first divergence: {cause.example_wallet}: ")
        part = "ledger at version" if cause.divergence_of == ("ledger",) else "read model at"
        assert part in divergence[0] and ";" not in divergence[0], divergence[0]


def test_the_web_ui_rows_and_the_console_lead_with_the_causes_after_the_verdict() -> None:
    from tests.locust_support import suite_options_from
    from wallet_users.wiring.outcome import RunOutcome

    world = wallex_world()
    report = check_consistency(world.record, world.facts())
    outcome = RunOutcome(
        record=world.record,
        options=suite_options_from("--run-id", "run1"),
        host="http://127.0.0.1:1",
        embedded=False,
        seconds=10.0,
        seeding=(4, 4, 0.1),
        generator=["peak 10%"],
        consistency=report,
    )
    rows = outcome.web_rows()
    assert rows[0]["item"] == "verdict"
    assert [r["detail"].split(" (e.g.")[0] for r in rows[1 : 1 + len(report.causes)]] == [
        c.line() for c in report.causes
    ]
    assert {r["item"] for r in rows[1 : 1 + len(report.causes)]} == {"cause"}
    lines = outcome.summary_lines()
    verdict = next(i for i, line in enumerate(lines) if line.startswith("wallet suite verdict:"))
    assert lines[verdict + 1] == f"  cause: {report.causes[0].line()}"
    assert sum(1 for line in lines if line.startswith("  cause: ")) == len(report.causes)


def test_an_adopted_wallet_is_checked_against_what_it_held_when_the_run_began() -> None:
    earlier = Scenario().create(A, 500).credit(A, 50).create(B, 0).credit(B, 20)
    before = earlier.facts()
    adopting = RunRecord("run2")
    for wallet in (A, B):
        held = before.write_side[wallet]
        adopting.wallet_adopted(wallet, held.balance, held.version, before.ledger[wallet].entries)
    earlier.record = adopting
    run = earlier.debit(A, 30).transfer(A, B, 100).credit(B, 5, outcome=INDETERMINATE, applied=True)
    facts = run.facts()
    report = check_consistency(run.record, facts)
    assert report.status == "valid", report.violations
    # one entry short of the baseline plus this run's operations: found, against that baseline
    facts.ledger[A].entries -= 1
    found = check_consistency(run.record, facts).violations["expected_entries"]
    assert (found[0].wallet_id, found[0].expected, found[0].found) == (A, 4, 3)
