"""The suite's own command-line options: registered on Locust's parser (so they also work in conf
files, as LOCUST_* environment variables and in the web UI's start form) and validated into one
`SuiteOptions` before any load starts."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any

from ..nemesis.spec import FAULTS, FaultSpec, NemesisSpecError, parse_spec
from ..record.ids import generate_run_id

DEFAULT_RANGES = {
    "initial_balance": "100-5000",
    "credit_amount": "10-500",
    "debit_amount": "10-200",
    "transfer_amount": "10-300",
}


class UsageError(ValueError):
    """A bad option value: reported in one line, exit code 2, before any load starts."""


@dataclass(frozen=True)
class AmountRange:
    low: int
    high: int

    @classmethod
    def parse(cls, text: str, name: str) -> AmountRange:
        low_text, sep, high_text = str(text).strip().partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if sep else low
        except ValueError:
            raise UsageError(
                f"--{name}: {text!r} is not MIN-MAX in whole numbers (e.g. 10-500)"
            ) from None
        if (low <= 0 and name != "initial-balance") or low < 0:
            raise UsageError(f"--{name}: amounts must be positive, got {text!r}")
        if low > high:
            raise UsageError(f"--{name}: minimum {low} is above maximum {high}")
        return cls(low, high)


@dataclass(frozen=True)
class SuiteOptions:
    wallets: int
    seed: int | None
    run_id: str
    weights: dict[str, int]
    initial_balance: AmountRange
    credit_amount: AmountRange
    debit_amount: AmountRange
    transfer_amount: AmountRange
    replay_ratio: float
    hot_wallets: int
    pg_dsn: str | None
    settle_timeout: float
    min_create_success: float
    min_operation_success: float
    max_p95_ms: float
    report_dir: str
    request_timeout: float
    consistency_report: str | None
    schema_overrides: str
    shared_hot_wallets: bool = False
    resolve_indeterminate: bool = False
    arrival_rate: float = 0.0  # operations per second for the whole run; 0: closed model
    max_in_flight: int = 1000
    max_dropped_percent: float | None = None  # None: no threshold
    visibility_timeout: float = 5.0  # read-your-writes: seconds a write may take to show
    max_staleness_ms: float | None = None  # read-your-writes staleness p95 bound; None: off
    lag_interval: float = 2.0  # seconds between samples of the projectors' lag; 0: off
    adopt_run: str = ""  # load an earlier run's wallets instead of creating new ones
    nemesis: tuple[FaultSpec, ...] = ()  # faults during the load; (): none
    nemesis_seed: int | None = None  # None: --seed, else random
    nemesis_command: str = ""  # the `command` fault's inject, through the shell
    nemesis_heal: str = ""  # its heal
    nemesis_timeout: float = 30.0  # seconds a command may take before it is killed


def register(parser: Any) -> None:
    """Add the suite's options to Locust's parser (the `init_command_line_parser` hook)."""
    # On the parser itself, not a group: only Locust's parser knows is_secret and the web UI form.
    group = parser
    group.add_argument(
        "--wallets",
        type=str,
        default="100",
        help="wallets to create before the load starts (default 100)",
    )
    group.add_argument(
        "--seed",
        type=str,
        default="",
        help="seed for owner ids, balances and the operation mix (default: random)",
    )
    group.add_argument(
        "--run-id",
        type=str,
        default="",
        help="id of this run, part of every wallet id (default: generated)",
    )
    group.add_argument(
        "--adopt-run",
        type=str,
        default="",
        help="load the wallets of this earlier run as they are now instead of creating new ones"
        " (--wallets is then ignored); the check compares against what they held at the start",
    )
    group.add_argument(
        "--credit-weight", type=str, default="50", help="relative weight of credits (default 50)"
    )
    group.add_argument(
        "--debit-weight", type=str, default="30", help="relative weight of debits (default 30)"
    )
    group.add_argument(
        "--transfer-weight",
        type=str,
        default="20",
        help="relative weight of transfers (default 20)",
    )
    for name, default in DEFAULT_RANGES.items():
        flag = name.replace("_", "-")
        group.add_argument(
            f"--{flag}", type=str, default=default, help=f"MIN-MAX (default {default})"
        )
    group.add_argument(
        "--replay-ratio",
        type=str,
        default="0.01",
        help="share of mutations re-sent with the same Idempotency-Key (default 0.01)",
    )
    group.add_argument(
        "--hot-wallets",
        type=str,
        default="3",
        help="wallets the hot-wallet users fight over (default 3)",
    )
    group.add_argument(
        "--pg-dsn",
        type=str,
        default="",
        is_secret=True,
        help="the target's PostgreSQL, for the consistency check (default: the embedded target's)",
    )
    group.add_argument(
        "--lag-interval",
        type=str,
        default="2",
        help="seconds between samples of the projectors' backlog and lag in the target's database"
        " while the load runs, shown as LAG and BACKLOG entries (default 2; 0: off)",
    )
    group.add_argument(
        "--settle-timeout",
        type=str,
        default="60",
        help="seconds to wait for the projectors to drain after the load (default 60)",
    )
    group.add_argument(
        "--min-create-success",
        type=str,
        default="95",
        help="percent of wallet creations that must succeed (default 95)",
    )
    group.add_argument(
        "--min-operation-success",
        type=str,
        default="90",
        help="percent of operations that must succeed, refusals for funds apart (default 90)",
    )
    group.add_argument(
        "--max-p95-ms",
        type=str,
        default="0",
        help="fail the run if the p95 latency is above this (default 0: off)",
    )
    group.add_argument(
        "--arrival-rate",
        type=str,
        default="0",
        help="open model: operations per second for the whole run, started on schedule whatever"
        " the answers do (default 0: closed model, each user waits for its answer)",
    )
    group.add_argument(
        "--max-in-flight",
        type=str,
        default="1000",
        help="open model: operations in flight at most (shared out over the users); one more is"
        " dropped and counted, not delayed (default 1000)",
    )
    group.add_argument(
        "--max-dropped-percent",
        type=str,
        default="",
        help="open model: fail the run if more than this percent of operations were dropped"
        " (default: no threshold)",
    )
    group.add_argument(
        "--visibility-timeout",
        type=str,
        default="5",
        help="read-your-writes: seconds an acknowledged write may take to show in GET"
        " /wallets/{id} and the ledger; a read still 404, 5xx or old after it is a failure"
        " (default 5)",
    )
    group.add_argument(
        "--max-staleness-ms",
        type=str,
        default="",
        help="fail the run if the read-your-writes staleness p95 (read model or ledger) is above"
        " this (default: no bound)",
    )
    group.add_argument(
        "--nemesis",
        type=str,
        default="",
        help="faults during the load, e.g. 'kill-service:every=20s,pause-postgres:every=30s:duration=3s'"
        f" ({', '.join(FAULTS)}; parameters every=, first=, duration=, jitter=, count=;"
        " see README 'Faults during the load'; default: none)",
    )
    group.add_argument(
        "--nemesis-seed",
        type=str,
        default="",
        help="seed of the faults' timing (default: --seed, else random; the summary prints it)",
    )
    group.add_argument(
        "--nemesis-command",
        type=str,
        default="",
        help="the 'command' fault for your own service, run through the shell on the master or"
        " local runner, e.g. 'pm2 stop wallex' (tried once, with its heal, before the load)",
    )
    group.add_argument(
        "--nemesis-heal",
        type=str,
        default="",
        help="what heals the 'command' fault after its duration, e.g. 'pm2 restart wallex'",
    )
    group.add_argument(
        "--nemesis-timeout",
        type=str,
        default="30",
        help="seconds --nemesis-command or --nemesis-heal may run before it is killed and"
        " reported (default 30)",
    )
    group.add_argument(
        "--report-dir",
        type=str,
        default="reports",
        help="where the run record and reports go (default reports/)",
    )
    group.add_argument(
        "--request-timeout",
        type=str,
        default="10",
        help="seconds before a request counts as indeterminate (default 10)",
    )
    group.add_argument(
        "--shared-hot-wallets",
        action="store_true",
        default=False,
        help="distributed runs: every worker fights over the same hot wallets (default: one set per worker)",
    )
    group.add_argument(
        "--resolve-indeterminate",
        type=str,
        default="auto",
        help="after the load, re-send in-doubt operations with their Idempotency-Key to learn their fate:"
        " yes, no, or auto (yes on the embedded target, which honours keys on every POST)",
    )
    group.add_argument(
        "--consistency-report",
        type=str,
        default="",
        help="where the consistency report JSON goes (default <report-dir>/<run-id>/consistency.json)",
    )
    group.add_argument(
        "--schema-overrides",
        type=str,
        default="",
        help="names that differ from the contract, e.g. 'ledger_entries=ledger,ledger_entries.balanceAfter=balance_after'",
    )


def _number(value: Any, name: str, kind: type, low: float | None = None, high: float | None = None):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"--{name}: {value!r} is not a {'whole ' if kind is int else ''}number"
        ) from None
    if number != number or number in (float("inf"), float("-inf")):  # NaN passes any comparison
        raise UsageError(f"--{name}: {value!r} is not a finite number")
    if low is not None and number < low:
        raise UsageError(f"--{name}: {number} is below {low}")
    if high is not None and number > high:
        raise UsageError(f"--{name}: {number} is above {high}")
    return number


def parse(parsed: argparse.Namespace) -> SuiteOptions:
    """Validate Locust's parsed options into SuiteOptions; UsageError names the bad one."""
    weights = {
        kind: _number(getattr(parsed, f"{kind}_weight"), f"{kind}-weight", int, 0)
        for kind in ("credit", "debit", "transfer")
    }
    if sum(weights.values()) <= 0:
        raise UsageError(
            "--credit-weight, --debit-weight, --transfer-weight: at least one must be positive"
        )
    run_id = str(parsed.run_id or "").strip() or generate_run_id()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id):  # ASCII only: it goes into URL paths
        raise UsageError(
            f"--run-id: {run_id!r} may hold only letters, digits, '-' and '_' (at most 64)"
        )
    seed_text = str(parsed.seed or "").strip()
    adopt_run = _adopt_run(getattr(parsed, "adopt_run", ""), run_id, parsed)
    return SuiteOptions(
        wallets=_number(parsed.wallets, "wallets", int, 1, 1_000_000),
        seed=_number(seed_text, "seed", int) if seed_text else None,
        run_id=run_id,
        weights=weights,
        **{
            name: AmountRange.parse(getattr(parsed, name), name.replace("_", "-"))
            for name in DEFAULT_RANGES
        },
        replay_ratio=_number(parsed.replay_ratio, "replay-ratio", float, 0, 1),
        hot_wallets=_number(parsed.hot_wallets, "hot-wallets", int, 1, 1000),
        pg_dsn=str(parsed.pg_dsn or "").strip() or None,
        settle_timeout=_number(parsed.settle_timeout, "settle-timeout", float, 0),
        min_create_success=_number(parsed.min_create_success, "min-create-success", float, 0, 100),
        min_operation_success=_number(
            parsed.min_operation_success, "min-operation-success", float, 0, 100
        ),
        max_p95_ms=_number(parsed.max_p95_ms, "max-p95-ms", float, 0),
        report_dir=str(parsed.report_dir or "reports"),
        request_timeout=_number(parsed.request_timeout, "request-timeout", float, 0.1),
        consistency_report=str(parsed.consistency_report or "").strip() or None,
        schema_overrides=_schema_overrides(parsed.schema_overrides),
        shared_hot_wallets=bool(getattr(parsed, "shared_hot_wallets", False)),
        arrival_rate=_number(getattr(parsed, "arrival_rate", 0), "arrival-rate", float, 0, 1e6),
        max_in_flight=_number(getattr(parsed, "max_in_flight", 1000), "max-in-flight", int, 1),
        max_dropped_percent=_optional_number(
            getattr(parsed, "max_dropped_percent", ""), "max-dropped-percent", 0, 100
        ),
        visibility_timeout=_number(
            getattr(parsed, "visibility_timeout", 5), "visibility-timeout", float, 0.1, 3600
        ),
        max_staleness_ms=_optional_number(
            getattr(parsed, "max_staleness_ms", ""), "max-staleness-ms", 0, 3_600_000
        ),
        resolve_indeterminate=_choice(
            getattr(parsed, "resolve_indeterminate", "auto"),
            "resolve-indeterminate",
            ("auto", "yes", "no"),
        )
        == "yes",
        lag_interval=_lag_interval(getattr(parsed, "lag_interval", "2")),
        adopt_run=adopt_run,
        **_nemesis(parsed),
    )


def _adopt_run(value: Any, run_id: str, parsed: argparse.Namespace) -> str:
    """The shape of --adopt-run (whether that run exists is asked of the database or the saved
    records, wallet_users/load/adoption.py)."""
    text = str(value or "").strip()
    if not text:
        return ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise UsageError(
            f"--adopt-run: {text!r} is not a run id (letters, digits, '-' and '_', at most 64)"
        )
    if text == run_id:
        raise UsageError(f"--adopt-run: {text} is this run's own --run-id")
    if getattr(parsed, "shared_hot_wallets", False):
        raise UsageError(
            "--adopt-run with --shared-hot-wallets: one worker would load a shared hot wallet"
            " before another had read what it held at the start"
        )
    return text


def _nemesis(parsed: argparse.Namespace) -> dict[str, Any]:
    try:
        specs = tuple(parse_spec(str(getattr(parsed, "nemesis", "") or "")))
    except NemesisSpecError as error:
        raise UsageError(f"--nemesis: {error}") from None
    command = str(getattr(parsed, "nemesis_command", "") or "").strip()
    heal = str(getattr(parsed, "nemesis_heal", "") or "").strip()
    commanded = any(spec.fault == "command" for spec in specs)
    if commanded and not command:
        raise UsageError("--nemesis: the 'command' fault needs --nemesis-command")
    if command and not commanded:
        raise UsageError(
            "--nemesis-command: schedule it in --nemesis, e.g. --nemesis command:every=20s"
        )
    if heal and not command:
        raise UsageError("--nemesis-heal without --nemesis-command")
    seed_text = str(getattr(parsed, "nemesis_seed", "") or "").strip()
    return {
        "nemesis": specs,
        "nemesis_seed": _number(seed_text, "nemesis-seed", int) if seed_text else None,
        "nemesis_command": command,
        "nemesis_heal": heal,
        "nemesis_timeout": _number(
            getattr(parsed, "nemesis_timeout", 30), "nemesis-timeout", float, 0.1, 3600
        ),
    }


def _optional_number(value: Any, name: str, low: float, high: float) -> float | None:
    text = str(value if value is not None else "").strip()
    return _number(text, name, float, low, high) if text else None


MIN_LAG_INTERVAL = 0.5  # below this the sampling would start to load the target's database


def _lag_interval(value: Any) -> float:
    seconds = _number(value, "lag-interval", float, 0)
    if 0 < seconds < MIN_LAG_INTERVAL:
        raise UsageError(
            f"--lag-interval: {seconds:g} is below {MIN_LAG_INTERVAL:g} seconds (0 turns it off)"
        )
    return seconds


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    text = str(value or choices[0]).strip().lower()
    if text not in choices:
        raise UsageError(f"--{name}: {value!r} is not one of {', '.join(choices)}")
    return text


def _schema_overrides(text: Any) -> str:
    from ..consistency.schema import Schema, SchemaError

    try:
        Schema.with_overrides(str(text or ""))
    except SchemaError as error:
        raise UsageError(f"--schema-overrides: {error}") from None
    return str(text or "")
