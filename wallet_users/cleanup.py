"""Delete a run's test data: `python -m wallet_users.cleanup --pg-dsn DSN --run-id ID` (or
`--older-than 2h`). A dry run by default, printing what it would delete; `--yes` deletes. It never
touches a row outside the suite's own id prefix."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from .consistency.reading import BAD_DSN
from .dsn import redact_dsn
from .load.adoption import FILE_NAME as ADOPTION_FILE
from .load.adoption import Adoption
from .record.ids import ID_PREFIX, run_regex
from .usage import OneLineArgumentParser
from .wiring.target import embedded_dsn

# table -> (column holding a wallet id or key, timestamp column); deleted in this order.
# outbox_consumer_processing and outbox_pending go with their outbox rows (ON DELETE CASCADE).
TABLES: list[tuple[str, str, str]] = [
    ("ledger_entries", "walletId", "createdAt"),
    ("outbox", "aggregate_id", "created_at"),
    ("events", "stream_id", "created_at"),
    ("wallets_read_model", "id", "created_at"),
    ("holds", "wallet_id", "created_at"),
    ("wallets", "id", "created_at"),
    ("idempotency_keys", "key", "created_at"),
]
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def like_prefix(run_id: str | None) -> str:
    """A LIKE pattern for the run's rows (or every suite row), with LIKE's wildcards escaped."""
    prefix = ID_PREFIX + (f"{run_id}-" if run_id else "")
    return prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"


def plan(
    conn: psycopg.Connection,
    pattern: str,
    older_than: timedelta | None,
    exact: str | None = None,
) -> list[tuple[str, sql.Composed, int]]:
    """The DELETE statements to run and how many rows each would delete: ids LIKE pattern (and
    matching the regular expression exact, when given), older than older_than if given."""
    statements = []
    params = {"pattern": pattern, "age": older_than, "exact": exact}
    # By age, a wallet's rows go together, when the wallet itself was last written before the
    # cutoff: a population created long ago and loaded again since (--adopt-run) keeps its rows.
    last_write = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = 'wallets' AND column_name = 'updated_at'"
    ).fetchone()[0]
    for table, column, stamp in TABLES:
        present = conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = %s AND column_name = ANY(%s)",
            (table, [column, stamp]),
        ).fetchone()[0]
        if present < 2:
            continue  # no such table, or not the columns we know (the contract names few for holds)
        where = sql.SQL("{} LIKE %(pattern)s").format(sql.Identifier(column))
        if exact is not None:
            where = sql.SQL("{} AND {} ~ %(exact)s").format(where, sql.Identifier(column))
        if older_than is not None:
            where = sql.SQL("{} AND {} < now() - %(age)s").format(where, sql.Identifier(stamp))
            if last_write and table != "idempotency_keys":
                where = sql.SQL(
                    "{} AND NOT EXISTS (SELECT 1 FROM wallets AS w WHERE w.id = {}.{}"
                    " AND w.updated_at >= now() - %(age)s)"
                ).format(where, sql.Identifier(table), sql.Identifier(column))
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table), where),
            params,
        ).fetchone()[0]
        statements.append(
            (table, sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table), where), count)
        )
    return statements


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m wallet_users.cleanup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--pg-dsn", help="the service's PostgreSQL (default: start the embedded one in .state/)"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="delete this run's rows")
    which.add_argument("--older-than", help="delete the suite's rows older than this (30m, 2h, 7d)")
    parser.add_argument("--yes", action="store_true", help="delete for real (default: a dry run)")
    parser.add_argument(
        "--report-dir",
        default="reports",
        help="the runs' saved reports, which say which runs adopted which (default reports/)",
    )
    args = parser.parse_args(argv)
    age = None
    if args.older_than:
        try:
            age = parse_duration(args.older_than)
        except ValueError as error:
            parser.error(f"--older-than: {error}")
    if args.run_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.run_id):
        parser.error(f"--run-id: {args.run_id!r} is not a run id")
    pattern = like_prefix(args.run_id)
    exact = run_regex(args.run_id) if args.run_id is not None else None
    dsn = args.pg_dsn or embedded_dsn()
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # libpq's message quotes the DSN, password and all
        print(f"wallet_users.cleanup: --pg-dsn: {BAD_DSN}", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn, conn.transaction():
            statements = plan(conn, pattern, age, exact)
            for table, _, count in statements:
                print(f"{'deleting' if args.yes else 'would delete'} {count} rows from {table}")
            if args.yes:
                for _, statement, _ in statements:
                    conn.execute(statement, {"pattern": pattern, "age": age, "exact": exact})
    except psycopg.Error as error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        print(
            f"wallet_users.cleanup: {redact_dsn(dsn)}: {lines[-1] if lines else error}",
            file=sys.stderr,
        )
        return 2
    if args.run_id is not None:
        print("\n".join(adoption_notes(Path(args.report_dir), args.run_id, args.yes)))
    if not args.yes:
        print("dry run: nothing deleted; add --yes to delete")
    return 0


def adoption_notes(report_dir: Path, run_id: str, deleting: bool) -> list[str]:
    """Adopted wallets belong to the run that created them (their ids carry its id): cleaning a
    run that adopted them keeps them; cleaning their first run deletes them for every adopter."""
    notes = []
    adoption = Adoption.load(report_dir, run_id)
    if adoption is not None:
        notes.append(
            f"run {run_id} loaded the {adoption.wallets} wallets of run {adoption.first_run}"
            f" (adopted from run {adoption.adopted_from}): they belong to run"
            f" {adoption.first_run} and are kept; clean that run to delete them"
        )
    adopters = sorted(
        path.parent.name
        for path in report_dir.glob(f"*/{ADOPTION_FILE}")
        if path.parent.name != run_id
        and (a := Adoption.load(report_dir, path.parent.name))
        and a.first_run == run_id
    )
    if adopters:
        notes.append(
            f"runs {', '.join(adopters)} adopted the wallets of run {run_id}:"
            f" {'deleting' if deleting else 'to delete'} them leaves those runs nothing to"
            " re-check or adopt"
        )
    return notes


if __name__ == "__main__":
    sys.exit(main())
