"""Database connection strings as the suite shows them: never with their password."""

from __future__ import annotations

import psycopg
from psycopg import conninfo


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by '***', safe for logs and reports."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return conninfo.make_conninfo(**params)
