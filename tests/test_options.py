"""The suite's options as Locust parses them from a command line: the defaults keep the original
scripts' figures, and every bad value is refused with one line naming the option."""

from __future__ import annotations

import re

import pytest

from tests.locust_support import suite_options_from
from wallet_users.record.ids import wallet_id
from wallet_users.wiring.options import AmountRange, UsageError


def test_the_defaults_are_the_original_scripts_figures() -> None:
    opts = suite_options_from()
    assert opts.wallets == 100
    assert opts.weights == {"credit": 50, "debit": 30, "transfer": 20}
    assert opts.initial_balance == AmountRange(100, 5000)
    assert opts.credit_amount == AmountRange(10, 500)
    assert opts.debit_amount == AmountRange(10, 200)
    assert opts.transfer_amount == AmountRange(10, 300)
    assert opts.replay_ratio == 0.01
    assert (opts.min_create_success, opts.min_operation_success) == (95, 90)
    assert opts.max_p95_ms == 0  # off
    assert opts.seed is None and opts.pg_dsn is None
    assert opts.lag_interval == 2  # the projectors' lag is sampled every 2 s


def test_a_lag_interval_of_zero_turns_the_sampling_off() -> None:
    assert suite_options_from("--lag-interval", "0").lag_interval == 0
    assert suite_options_from("--lag-interval", "0.5").lag_interval == 0.5


def test_values_arrive_as_text_from_conf_files_and_are_converted() -> None:
    opts = suite_options_from(
        "--wallets",
        "20",
        "--seed",
        "7",
        "--credit-weight",
        "0",
        "--debit-weight",
        "3",
        "--transfer-weight",
        "1",
        "--debit-amount",
        " 5-50 ",
        "--replay-ratio",
        "0.5",
        "--max-p95-ms",
        "250",
    )
    assert (opts.wallets, opts.seed, opts.replay_ratio, opts.max_p95_ms) == (20, 7, 0.5, 250)
    assert opts.weights == {"credit": 0, "debit": 3, "transfer": 1}
    assert opts.debit_amount == AmountRange(5, 50)


def test_a_single_number_is_a_range_of_one_amount() -> None:
    assert suite_options_from("--credit-amount", "50").credit_amount == AmountRange(50, 50)


def test_an_initial_balance_may_be_zero_but_an_operation_amount_may_not() -> None:
    assert suite_options_from("--initial-balance", "0-0").initial_balance == AmountRange(0, 0)
    with pytest.raises(UsageError, match="--credit-amount: amounts must be positive"):
        suite_options_from("--credit-amount", "0-10")


def test_a_run_id_is_generated_when_none_is_given_and_each_is_fresh() -> None:
    first, second = suite_options_from().run_id, suite_options_from("--run-id", "  ").run_id
    assert re.fullmatch(r"[0-9]{14}-[0-9a-f]{6}", first)
    assert first != second


@pytest.mark.parametrize("run_id", ["ci-run_42", "A" * 64, "20240101"])
def test_a_run_id_of_letters_digits_dashes_and_underscores_is_kept(run_id: str) -> None:
    opts = suite_options_from("--run-id", run_id)
    assert opts.run_id == run_id
    assert wallet_id(opts.run_id, 3) == f"lt-{run_id}-w000003"


@pytest.mark.parametrize("run_id", ["has space", "a/b", "50%", "dot.ted", "quote'", "A" * 65])
def test_a_run_id_that_could_not_sit_in_a_url_or_a_like_pattern_is_refused(run_id: str) -> None:
    with pytest.raises(UsageError, match=r"^--run-id: "):
        suite_options_from("--run-id", run_id)


BAD_VALUES = [
    (["--credit-weight", "-1"], "--credit-weight: -1 is below 0"),
    (["--debit-weight", "abc"], "--debit-weight: 'abc' is not a whole number"),
    (["--transfer-weight", "2.5"], "--transfer-weight: '2.5' is not a whole number"),
    (
        ["--credit-weight", "0", "--debit-weight", "0", "--transfer-weight", "0"],
        "at least one must be positive",
    ),
    (["--debit-amount", "300-10"], "--debit-amount: minimum 300 is above maximum 10"),
    (["--transfer-amount", "10-"], "--transfer-amount: '10-' is not MIN-MAX"),
    (["--credit-amount", "ten-20"], "--credit-amount: 'ten-20' is not MIN-MAX"),
    (["--credit-amount", "-5"], "--credit-amount: '-5' is not MIN-MAX"),
    (["--initial-balance", "1.5-3"], "--initial-balance: '1.5-3' is not MIN-MAX"),
    (["--wallets", "abc"], "--wallets: 'abc' is not a whole number"),
    (["--wallets", "0"], "--wallets: 0 is below 1"),
    (["--wallets", "1e3"], "--wallets: '1e3' is not a whole number"),
    (["--seed", "x"], "--seed: 'x' is not a whole number"),
    (["--replay-ratio", "1.5"], "--replay-ratio: 1.5 is above 1"),
    (["--replay-ratio", "often"], "--replay-ratio: 'often' is not a number"),
    (["--replay-ratio", "nan"], "--replay-ratio: 'nan' is not a finite number"),
    (["--hot-wallets", "0"], "--hot-wallets: 0 is below 1"),
    (["--settle-timeout", "soon"], "--settle-timeout: 'soon' is not a number"),
    (["--settle-timeout", "-1"], "--settle-timeout: -1.0 is below 0"),
    (["--min-create-success", "101"], "--min-create-success: 101.0 is above 100"),
    (["--min-operation-success", "-1"], "--min-operation-success: -1.0 is below 0"),
    (["--min-operation-success", "NaN"], "--min-operation-success: 'NaN' is not a finite number"),
    (["--max-p95-ms", "-5"], "--max-p95-ms: -5.0 is below 0"),
    (["--max-p95-ms", "nan"], "--max-p95-ms: 'nan' is not a finite number"),
    (["--settle-timeout", "inf"], "--settle-timeout: 'inf' is not a finite number"),
    (["--request-timeout", "0"], "--request-timeout: 0.0 is below 0.1"),
    (["--arrival-rate", "fast"], "--arrival-rate: 'fast' is not a number"),
    (["--arrival-rate", "-10"], "--arrival-rate: -10.0 is below 0"),
    (["--max-in-flight", "0"], "--max-in-flight: 0 is below 1"),
    (["--max-dropped-percent", "150"], "--max-dropped-percent: 150.0 is above 100"),
    (["--lag-interval", "-1"], "--lag-interval: -1.0 is below 0"),
    (["--lag-interval", "0.1"], "--lag-interval: 0.1 is below 0.5 seconds (0 turns it off)"),
    (["--lag-interval", "often"], "--lag-interval: 'often' is not a number"),
    (["--visibility-timeout", "0"], "--visibility-timeout: 0.0 is below 0.1"),
    (["--visibility-timeout", "inf"], "--visibility-timeout: 'inf' is not a finite number"),
    (["--max-staleness-ms", "-1"], "--max-staleness-ms: -1.0 is below 0"),
    (["--max-staleness-ms", "quick"], "--max-staleness-ms: 'quick' is not a number"),
]


@pytest.mark.parametrize(
    ("argv", "message"), BAD_VALUES, ids=[" ".join(argv) for argv, _ in BAD_VALUES]
)
def test_a_bad_value_is_refused_in_one_line_naming_the_option(
    argv: list[str], message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        suite_options_from(*argv)
    text = str(refused.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith("--")


def test_the_open_model_is_off_unless_a_rate_is_given_and_drops_have_no_threshold_by_default() -> (
    None
):
    opts = suite_options_from()
    assert (opts.arrival_rate, opts.max_in_flight, opts.max_dropped_percent) == (0.0, 1000, None)
    opts = suite_options_from("--arrival-rate", "250", "--max-dropped-percent", "0")
    assert (opts.arrival_rate, opts.max_dropped_percent) == (250.0, 0.0)


def test_reads_must_show_a_write_within_5s_apart_from_the_settle_timeout_and_staleness_is_unbounded() -> (
    None
):
    opts = suite_options_from()
    assert (opts.visibility_timeout, opts.settle_timeout, opts.max_staleness_ms) == (
        5.0,
        60.0,
        None,
    )
    opts = suite_options_from("--visibility-timeout", "2.5", "--max-staleness-ms", "300")
    assert (opts.visibility_timeout, opts.max_staleness_ms) == (2.5, 300.0)


def test_adopt_run_takes_a_run_id_other_than_this_runs_and_not_with_shared_hot_wallets() -> None:
    assert suite_options_from().adopt_run == ""
    assert suite_options_from("--adopt-run", "nightly_1").adopt_run == "nightly_1"
    with pytest.raises(UsageError, match=r"^--adopt-run: '\.\./x' is not a run id"):
        suite_options_from("--adopt-run", "../x")
    with pytest.raises(UsageError, match=r"^--adopt-run: same is this run's own --run-id"):
        suite_options_from("--adopt-run", "same", "--run-id", "same")
    with pytest.raises(UsageError, match=r"^--adopt-run with --shared-hot-wallets"):
        suite_options_from("--adopt-run", "a1", "--shared-hot-wallets")
