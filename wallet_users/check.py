"""Re-check a past run: `python -m wallet_users.check --pg-dsn DSN --run-record FILE`.

Exit codes: 0 consistent, 1 violations found, 2 bad usage or the check could not run."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .consistency import CheckError, Schema, SchemaError, run_check
from .dsn import redact_dsn
from .load.adoption import Adoption
from .record import RunRecord
from .record.history import FILE_NAME, RunHistory
from .usage import OneLineArgumentParser
from .wiring.target import embedded_dsn


def seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m wallet_users.check",
        description="Check a past run's wallets in the service's PostgreSQL against its run record.",
    )
    parser.add_argument(
        "--pg-dsn", help="the service's PostgreSQL (default: start the embedded one in .state/)"
    )
    parser.add_argument("--run-record", required=True, type=Path, help="run-record.json of the run")
    parser.add_argument(
        "--report", type=Path, help="where to write the report (default: beside the record)"
    )
    parser.add_argument(
        "--settle-timeout",
        type=seconds,
        default=10.0,
        help="seconds to wait for the projectors (default 10)",
    )
    parser.add_argument(
        "--schema-overrides", default="", help="names that differ from the contract"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        record = RunRecord.load(args.run_record)
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as error:  # bad Decimal
        parser.error(f"cannot read run record {args.run_record}: {error}")
    try:
        schema = Schema.with_overrides(args.schema_overrides)
    except SchemaError as error:
        parser.error(f"--schema-overrides: {error}")
    history_path = args.run_record.with_name(FILE_NAME)
    try:
        history = RunHistory.load(history_path) if history_path.exists() else None
    except (OSError, ValueError) as error:
        parser.error(f"cannot read the run's history {history_path}: {error}")
    report_path = args.report or args.run_record.with_name("consistency-recheck.json")
    dsn = args.pg_dsn or embedded_dsn()
    try:
        report = run_check(
            dsn, record, schema=schema, settle_timeout=args.settle_timeout, history=history
        )
    except CheckError as error:
        from .consistency import not_checked

        report = not_checked(
            record, f"the consistency check could not run: {error}", redact_dsn(dsn)
        )
        report.save(report_path)
        print(f"wallet_users.check: {report.reason} (report: {report_path})", file=sys.stderr)
        return 2
    adoption = Adoption.load(args.run_record.parent.parent, args.run_record.parent.name)
    if adoption is not None:
        report.adoption = adoption.to_dict()
    report.save(report_path)
    print("\n".join(report.console_lines(report_path)))
    return 0 if report.valid else 1


if __name__ == "__main__":
    sys.exit(main())
