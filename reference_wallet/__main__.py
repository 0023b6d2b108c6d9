"""Command line: `python -m reference_wallet [serve] [options]` or `python -m reference_wallet project`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from pathlib import Path

from .cli import OneLineArgumentParser
from .commands import CONSUMERS, SlowCommits
from .faults import COMPAT_PROFILES, FAULTS, FaultSpecError, compat_rates, parse_faults

FAULTS_ENV = "REFERENCE_WALLET_FAULTS"
COMPAT_ENV = "REFERENCE_WALLET_COMPAT"
SLOW_COMMIT_MS_ENV = "REFERENCE_WALLET_SLOW_COMMIT_MS"
SLOW_COMMIT_SHARE_ENV = "REFERENCE_WALLET_SLOW_COMMIT_SHARE"
PARENT_ENV = "REFERENCE_WALLET_EXIT_WITH_PARENT"  # a pid: stop once it is no longer the parent


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-dsn",
        help="PostgreSQL to use (default: $REFERENCE_WALLET_PG_DSN, else an embedded server)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="embedded server's data directory (default: .state/pgdata in the project)",
    )
    parser.add_argument(
        "--faults",
        default=os.environ.get(FAULTS_ENV, ""),
        help="comma-separated fault switches, name=rate (rate 0..1, bare name = 1): "
        + ", ".join(FAULTS),
    )
    parser.add_argument(
        "--compat",
        type=_compat,
        default=os.environ.get(COMPAT_ENV, ""),
        help="behave like a real deployment: turn on that profile's fault switches at its rates,"
        f" under any --faults given (default: ${COMPAT_ENV}); profiles: "
        + ", ".join(COMPAT_PROFILES),
    )
    parser.add_argument(
        "--fault-seed", type=int, help="seed for the fault draws (reproducible runs)"
    )
    parser.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")


def _compat(text: str) -> str:
    try:
        compat_rates(text)
    except FaultSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def _consumers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONSUMERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown consumer {unknown[0]!r}; known: {', '.join(CONSUMERS)}"
        )
    return names


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "project":
        parser = OneLineArgumentParser(
            prog="python -m reference_wallet project",
            description="Run the outbox projectors on their own, without the HTTP API.",
        )
        _common(parser)
        parser.add_argument(
            "--consumers",
            type=_consumers,
            default=list(CONSUMERS),
            help="which projectors to run (default: both)",
        )
        return parser
    parser = OneLineArgumentParser(
        prog="python -m reference_wallet",
        description="The reference Wallex service on PostgreSQL (embedded by default).",
        epilog="Subcommand 'project' runs only the projectors; see 'project --help'.",
    )
    _common(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=_port, default=3000, help="port (default 3000; 0 picks a free one)"
    )
    parser.add_argument(
        "--projectors",
        type=_consumers,
        default=None,
        help="projectors to run inside the service (default both; see --no-projectors)",
    )
    parser.add_argument(
        "--no-projectors",
        action="store_true",
        help="run no projector inside the service (run 'project' separately)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (slow)")
    parser.add_argument(
        "--pool-size",
        type=_positive,
        default=16,
        help="PostgreSQL connections per process (default 16)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="HTTP server processes sharing the port with SO_REUSEPORT; the projectors run in"
        " the first (default 1)",
    )
    parser.add_argument(
        "--slow-commit-ms",
        type=_milliseconds,
        default=os.environ.get(SLOW_COMMIT_MS_ENV, "0"),
        help="hold a share of the command transactions open this long after their outbox insert,"
        " so later ones commit first (default 0: off; $" + SLOW_COMMIT_MS_ENV + ")",
    )
    parser.add_argument(
        "--slow-commit-share",
        type=_share,
        default=os.environ.get(SLOW_COMMIT_SHARE_ENV, "0.3"),
        help="the share of commands --slow-commit-ms holds, 0..1 (default 0.3; $"
        + SLOW_COMMIT_SHARE_ENV
        + ")",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("serve", "project") else "serve"
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        faults = parse_faults(args.faults, args.fault_seed, args.compat)
    except FaultSpecError as error:
        parser.error(str(error))

    from psycopg import conninfo

    from .postgres import apply_schema, redact_dsn, resolve_dsn

    if args.pg_dsn:
        try:
            conninfo.conninfo_to_dict(args.pg_dsn)
        except Exception:  # libpq's message quotes the fragment it choked on: maybe the password
            print(
                "reference_wallet: --pg-dsn is not a valid connection string"
                " (key=value pairs or a postgresql:// URI)",
                file=sys.stderr,
            )
            return 2
    try:
        dsn = resolve_dsn(args.pg_dsn, args.data_dir)
        apply_schema(dsn)
    except Exception as error:
        target = redact_dsn(args.pg_dsn) if args.pg_dsn else "the embedded PostgreSQL"
        print(f"reference_wallet: cannot use {target}: {_first_line(error)}", file=sys.stderr)
        return 1

    import uvloop

    from .service import ServeOptions, project, run_service

    parent_pid = _parent_pid()
    try:
        if command == "project":
            uvloop.run(project(dsn, faults, args.consumers, parent_pid))
        else:
            projectors = [] if args.no_projectors else args.projectors
            options = ServeOptions(
                dsn=dsn,
                host=args.host,
                port=args.port,
                faults=faults,
                projectors=projectors,
                access_log=args.access_log,
                pool_size=args.pool_size,
                workers=args.workers,
                slow_commits=SlowCommits(args.slow_commit_ms, args.slow_commit_share),
                parent_pid=parent_pid,
            )
            return run_service(options)
    except OSError as error:
        print(f"reference_wallet: {_first_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _parent_pid() -> int | None:
    """The pid in $REFERENCE_WALLET_EXIT_WITH_PARENT, taken out of the environment so that no
    process this one starts inherits it."""
    text = os.environ.pop(PARENT_ENV, "")
    return int(text) if text.isdigit() else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
