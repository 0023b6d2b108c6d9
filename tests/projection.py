"""Waiting for the outbox consumers: their backlog is the reference's `outbox_pending` queue."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from polling import wait_until

from reference_wallet.commands import CONSUMERS


def backlog(dsn: str, consumers: Iterable[str] = CONSUMERS) -> int:
    """Outbox events that the given consumers have not yet claimed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox_pending WHERE consumer_name = ANY(%s)", (list(consumers),)
        ).fetchone()
    return row[0]


def wait_for_projectors(
    dsn: str, consumers: Iterable[str] = CONSUMERS, timeout: float = 20.0
) -> None:
    """Block until the given consumers have drained the outbox, or fail the test."""
    names = list(consumers)
    wait_until(lambda: backlog(dsn, names) == 0, timeout, f"{', '.join(names)} to drain the outbox")
