"""What a lost or unreachable PostgreSQL looks like from asyncpg, so that the HTTP API answers 503
instead of 500 and the projectors retry instead of reporting a bug; and a log filter that keeps
asyncpg's pool from writing a traceback each time it cannot refill itself during an outage."""

from __future__ import annotations

import logging

import asyncpg

# Connection lost or refused (08xxx), the server shutting down, crashing or starting up (57P0x),
# a socket that is gone or a connect that timed out (OSError, TimeoutError among them).
OUTAGE_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    OSError,
)


def database_unavailable(error: BaseException) -> bool:
    """Whether error says the database could not be reached or went away mid-statement: no
    definite answer about the work, and nothing wrong with the request."""
    if isinstance(error, OUTAGE_ERRORS):
        return True
    # asyncpg's own words for a statement on a connection that the server has just closed, and
    # for the COMMIT of a transaction whose connection broke in the middle of a statement
    if isinstance(error, asyncpg.InterfaceError):
        return "connection is closed" in str(error)
    return isinstance(error, asyncpg.exceptions.InternalClientError) and (
        "another operation" in str(error) and "in progress" in str(error)
    )


class OneLineOutages(logging.Filter):
    """Turn a log record's traceback into one line when it is a database outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if database_unavailable(error):
                record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
                record.args = ()
                record.exc_info = None
                record.exc_text = None
        return True


def quiet_pool_outages() -> None:
    logging.getLogger("asyncpg.pool").addFilter(OneLineOutages())
