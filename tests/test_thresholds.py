"""The threshold judge: the original scripts' success criteria (wallet creation above 95 %,
operations above 90 % with refusals for funds counted apart) and the optional p95 bound, as a
pure function of the run record."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.locust_support import suite_options_from
from wallet_users.record import INDETERMINATE, OK, REJECTED, RunRecord
from wallet_users.wiring.thresholds import LoadFigures, judge, operation_counts


def record_with(
    *,
    created: int = 20,
    not_created: int = 0,
    ok: int = 0,
    refused: int = 0,
    rejected: int = 0,
    indeterminate: int = 0,
) -> RunRecord:
    record = RunRecord("r")
    for index in range(created + not_created):
        outcome = OK if index < created else REJECTED
        record.wallet_created(f"w{index}", outcome, Decimal(100))
    booked = [(OK, False)] * ok + [(REJECTED, True)] * refused
    booked += [(REJECTED, False)] * rejected + [(INDETERMINATE, False)] * indeterminate
    for outcome, for_funds in booked:
        record.operation("debit", outcome, "w0", Decimal(1), refused_for_funds=for_funds)
    return record


def verdict(record: RunRecord, *argv: str, p95: float | None = 12.0) -> dict[str, tuple]:
    return {t.name: (t.passed, t.line) for t in judge(record, suite_options_from(*argv), p95)}


def test_a_clean_run_passes_creation_and_operations_and_has_no_latency_bound_by_default() -> None:
    result = verdict(record_with(ok=100))
    assert set(result) == {"load", "wallet creation", "operation success", "idempotent replays"}
    assert result["wallet creation"] == (True, "wallet creation 100.0% (20/20) >= 95%")
    assert result["operation success"][0]
    assert "100.0% (100/100, 0 refused for funds apart) >= 90%" in result["operation success"][1]


def test_refusals_for_funds_are_not_counted_as_errors() -> None:
    record = record_with(ok=10, refused=90)
    counts = operation_counts(record)
    assert (counts.ok, counts.refused_for_funds, counts.rejected, counts.counted) == (10, 90, 0, 10)
    passed, line = verdict(record)["operation success"]
    assert passed
    assert "(10/10, 90 refused for funds apart)" in line


def test_other_refusals_and_indeterminate_outcomes_count_against_operation_success() -> None:
    passed, line = verdict(record_with(ok=85, rejected=10, indeterminate=5))["operation success"]
    assert not passed
    assert line == "operation success 85.0% (85/100, 0 refused for funds apart) < 90%"


def test_operation_success_exactly_at_the_minimum_passes() -> None:
    assert verdict(record_with(ok=90, rejected=10))["operation success"][0]
    assert not verdict(record_with(ok=89, rejected=11))["operation success"][0]


def test_a_run_with_no_operations_is_not_an_operation_failure() -> None:
    assert verdict(record_with(ok=0))["operation success"][0]


def test_wallet_creation_below_the_minimum_fails_and_says_so() -> None:
    passed, line = verdict(record_with(created=94, not_created=6))["wallet creation"]
    assert not passed
    assert line == "wallet creation 94.0% (94/100) < 95%"
    assert verdict(record_with(created=95, not_created=5))["wallet creation"][0]


def test_a_run_that_attempted_no_wallets_fails_wallet_creation() -> None:
    assert not verdict(record_with(created=0))["wallet creation"][0]


def test_the_minimums_come_from_the_options() -> None:
    record = record_with(created=8, not_created=2, ok=50, rejected=50)
    result = verdict(record, "--min-create-success", "80", "--min-operation-success", "50")
    assert result["wallet creation"][0] and result["operation success"][0]
    assert not verdict(record_with(ok=99, rejected=1), "--min-operation-success", "100")[
        "operation success"
    ][0]


def test_a_replay_answered_differently_fails_the_run_without_any_database() -> None:
    record = record_with(ok=10)
    record.replay("w0", matched=True)
    assert verdict(record)["idempotent replays"] == (
        True,
        "idempotent replays 1/1 answered as the first request",
    )
    record.replay("w1", matched=False)
    assert verdict(record)["idempotent replays"] == (
        False,
        "idempotent replays 1/2 answered as the first request",
    )


@pytest.mark.parametrize(
    ("p95", "passed", "line"),
    [
        (40.0, True, "p95 latency 40.0 ms <= 50 ms"),
        (50.0, True, "p95 latency 50.0 ms <= 50 ms"),
        (51.0, False, "p95 latency 51.0 ms > 50 ms"),
        (None, False, "p95 latency n/a ms > 50 ms"),
    ],
)
def test_the_p95_bound_is_judged_only_when_set(p95: float | None, passed: bool, line: str) -> None:
    result = verdict(record_with(ok=10), "--max-p95-ms", "50", p95=p95)
    assert result["p95 latency"] == (passed, line)


def test_every_threshold_says_its_result_in_one_line_naming_it() -> None:
    record = record_with(created=1, not_created=1, ok=0, rejected=1)
    record.replay("w0", matched=False)
    record.read_checked("w0", "read model", False, "404")
    record.read_checked("w0", "ledger", False, "balance 10")
    options = suite_options_from("--max-p95-ms", "1", "--max-staleness-ms", "5")
    thresholds = judge(record, options, 999.0, staleness_p95={"read model": 80.0})
    assert {"load", "read model", "ledger", "staleness p95"} <= {t.name for t in thresholds}
    for threshold in thresholds:
        assert not threshold.passed
        assert "\n" not in threshold.line
        assert threshold.line.startswith(threshold.name)


def test_dropped_operations_fail_the_run_only_above_the_bound_and_only_when_one_is_set() -> None:
    from wallet_users.load.arrival import ArrivalCounts

    record, options = record_with(ok=100), suite_options_from("--arrival-rate", "100")
    counts = ArrivalCounts(scheduled=200, dropped=20)
    assert "dropped operations" not in {t.name for t in judge(record, options, 12.0, counts)}
    bounded = suite_options_from("--arrival-rate", "100", "--max-dropped-percent", "10")
    (dropped,) = [t for t in judge(record, bounded, 12.0, counts) if t.name == "dropped operations"]
    assert (dropped.passed, dropped.line) == (True, "dropped operations 10.0% (20/200) <= 10%")
    counts.dropped = 21
    (dropped,) = [t for t in judge(record, bounded, 12.0, counts) if t.name == "dropped operations"]
    assert (dropped.passed, dropped.line) == (False, "dropped operations 10.5% (21/200) > 10%")


# --- no load, no pass ----------------------------------------------------------------------------


def test_a_run_with_no_acknowledged_operation_fails_and_says_why() -> None:
    options = suite_options_from()
    stopped_seeding = LoadFigures(began=False, seeded=4100, planned=20000, seed_seconds=10.2)
    (load,) = [
        t for t in judge(record_with(ok=0), options, None, load=stopped_seeding) if t.name == "load"
    ]
    assert load == (
        load.__class__(
            "load",
            False,
            "load: no operation was acknowledged: the run stopped while seeding"
            " (4100/20000 wallets created in 10.2s)",
        )
    )
    nothing_sent = judge(record_with(ok=0), options, None, load=LoadFigures(seconds=10.0))
    assert [t.line for t in nothing_sent if t.name == "load"] == [
        "load: no operation was acknowledged: none was sent in 10.0s of load"
    ]
    refused = judge(record_with(ok=0, rejected=3, indeterminate=2), options, None)
    (line,) = [t.line for t in refused if t.name == "load"]
    assert line.endswith("5 sent: 0 refused for funds, 3 rejected, 2 indeterminate")


def test_a_run_with_acknowledged_operations_passes_the_load_threshold() -> None:
    result = {
        t.name: t
        for t in judge(record_with(ok=7), suite_options_from(), 12.0, load=LoadFigures(seconds=9.6))
    }
    assert result["load"].passed
    assert result["load"].line == "load: 7 operations acknowledged in 10s of load"


# --- read-your-writes ----------------------------------------------------------------------------


def test_a_read_endpoint_that_never_shows_a_write_fails_the_run_with_a_line() -> None:
    record = record_with(ok=10)
    for shown in (False, False, True):
        record.read_checked("w1", "read model", shown, "404")
    for _ in range(3):
        record.read_checked("w1", "ledger", True)
    result = verdict(record)
    assert result["read model"] == (
        False,
        "read model never showed 2 of 3 writes within 5s (last answers: 404)",
    )
    assert result["ledger"] == (True, "ledger showed 3/3 writes within 5s")


def test_no_read_your_writes_user_means_no_visibility_line() -> None:
    assert "read model" not in verdict(record_with(ok=10))


@pytest.mark.parametrize(
    ("staleness", "passed", "line"),
    [
        (
            {"read model": 40.0, "ledger": 90.0},
            True,
            "staleness p95 ledger 90 ms, read model 40 ms <= 100 ms",
        ),
        (
            {"read model": 40.0, "ledger": 130.0},
            False,
            "staleness p95 ledger 130 ms, read model 40 ms > 100 ms",
        ),
        (
            {"read model": None, "ledger": None},
            False,
            "staleness p95 n/a: no read-your-writes staleness was measured (bound 100 ms)",
        ),
    ],
)
def test_the_staleness_bound_is_judged_only_when_set(staleness, passed, line) -> None:
    record = record_with(ok=10)
    assert "staleness p95" not in {
        t.name for t in judge(record, suite_options_from(), 1.0, staleness_p95=staleness)
    }
    options = suite_options_from("--max-staleness-ms", "100")
    (result,) = [
        t for t in judge(record, options, 1.0, staleness_p95=staleness) if t.name == "staleness p95"
    ]
    assert (result.passed, result.line) == (passed, line)


def test_an_adopting_run_creates_nothing_and_says_so_and_one_stopped_while_adopting_says_that() -> (
    None
):
    options = suite_options_from("--adopt-run", "earlier")
    record = RunRecord("b")
    for i in range(3):
        record.wallet_adopted(f"lt-earlier-w{i:06d}", Decimal(100), 1, 1)
    record.operation("credit", OK, "lt-earlier-w000000", Decimal(10))
    (creation,) = [t for t in judge(record, options, None) if t.name == "wallet creation"]
    assert (creation.passed, creation.line) == (True, "wallet creation: none, 3 wallets adopted")
    stopped = LoadFigures(began=False, seeded=3, planned=9, seed_seconds=1.5, adopting=True)
    (load,) = [t for t in judge(RunRecord("b"), options, None, load=stopped) if t.name == "load"]
    assert load.line == (
        "load: no operation was acknowledged: the run stopped while adopting"
        " (3/9 wallets read in 1.5s)"
    )
