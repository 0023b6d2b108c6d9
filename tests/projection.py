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


def checkpoints(dsn: str, consumers: Iterable[str] = CONSUMERS) -> dict[str, int]:
    """Each consumer's projector_checkpoints.last_processed_id (absent: no checkpoint yet)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT projector_name, last_processed_id FROM projector_checkpoints"
            " WHERE projector_name = ANY(%s)",
            (list(consumers),),
        ).fetchall()
    return dict(rows)


def wait_for_checkpoints(
    dsn: str, consumers: Iterable[str] = CONSUMERS, timeout: float = 20.0
) -> dict[str, int]:
    """Block until each consumer's checkpoint has reached the outbox's highest id, and return
    the checkpoints: the drain of projectors that read the outbox by id (fault checkpoint-by-id),
    whose skipped events stay in the queue for good. Every command must have committed."""
    names = list(consumers)

    def reached() -> dict[str, int] | None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            last = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        seen = checkpoints(dsn, names)
        return seen if all(seen.get(name, 0) >= last for name in names) and seen else None

    return wait_until(reached, timeout, f"{', '.join(names)} checkpoints to reach the outbox end")
