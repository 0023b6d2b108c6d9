"""The projectors' backlog and lag while the load runs: every `--lag-interval` seconds the process
that owns the verdict (a local runner or the master, never a worker) reads the target's outbox
once and logs per consumer a `BACKLOG` entry (events not processed yet) and a `LAG` entry (how far
behind it is) as Locust requests of their own, so they reach Locust's statistics, charts, CSV
and JSON files and the HTML report like any request.

The read is one statement over the newest outbox events only: a range of the outbox's primary
key from a watermark that follows the oldest unprocessed event, each joined to the consumers'
rows through the contract's UNIQUE (outbox_event_id, consumer_name) index."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import gevent
import psycopg
from psycopg import sql

from ..consistency import CheckError, Schema
from ..consistency.reading import connect
from ..consistency.schema import CONSUMERS

log = logging.getLogger("wallet_suite")

LAG, BACKLOG = "LAG", "BACKLOG"  # the entries' request types
# Outbox ids are taken when a command's transaction inserts, not when it commits: an event may
# become visible below the newest id already seen. The window reaches this far below it.
SLACK_IDS = 500
# However far a stalled consumer falls behind, a sample reads at most this many events.
MAX_WINDOW = 50_000
STATEMENT_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class ConsumerSample:
    """One consumer at one sample: its backlog, and how far behind it is in milliseconds (None
    when it had nothing to do since the previous sample)."""

    consumer: str
    backlog: int
    lag_ms: float | None


@dataclass
class Window:
    """Which outbox events the next sample reads: ids above `after`, processed after `since`."""

    after: int
    since: datetime
    capped: bool = False  # the backlog went beyond MAX_WINDOW at least once

    def advance(self, oldest_pending: list[int | None], newest: int | None, now: datetime) -> None:
        """Move past what no later sample needs: events below the oldest one still pending
        (less the slack for late commits), never backwards, never more than MAX_WINDOW behind
        the newest event."""
        candidates = [oldest - 1 for oldest in oldest_pending if oldest is not None]
        if newest is not None:
            candidates.append(newest)
        if candidates:
            after = max(self.after, min(candidates) - SLACK_IDS)
            if newest is not None and newest - after > MAX_WINDOW:
                after = newest - MAX_WINDOW
                self.capped = True
            self.after = after
        self.since = now


def _parts(schema: Schema) -> dict[str, sql.Composable]:
    o, p = "outbox", "outbox_consumer_processing"
    return {
        "outbox": schema.table(o),
        "proc": schema.table(p),
        "oid": schema.col(o, "id", "o"),
        "created": schema.col(o, "created_at", "o"),
        "pev": schema.col(p, "outbox_event_id", "p"),
        "pcons": schema.col(p, "consumer_name", "p"),
        "pat": schema.col(p, "processed_at", "p"),
    }


def open_window(conn: psycopg.Connection, schema: Schema) -> Window:
    """The window of the first sample: the newest events at the start (the primary key's last
    entry), so a sample never reads the outbox's history."""
    query = sql.SQL("SELECT max({oid}), statement_timestamp() FROM {outbox} AS o").format(
        **_parts(schema)
    )
    newest, now = conn.execute(query).fetchone()
    return Window(after=max(0, (newest or 0) - SLACK_IDS), since=now)


def sample(conn: psycopg.Connection, schema: Schema, window: Window) -> list[ConsumerSample]:
    """Read each consumer's backlog and lag in the window, in one statement, and advance it."""
    # Each (event, consumer) is one probe of the unique index: inside a LATERAL aggregate, which
    # the planner cannot turn into a hash join over every processing row.
    query = sql.SQL(
        """WITH recent AS MATERIALIZED (
    SELECT {oid} AS id, {created} AS created_at FROM {outbox} AS o WHERE {oid} > %(after)s
), pairs AS MATERIALIZED (
    SELECT r.id, r.created_at, c.name, x.done, x.processed_at
      FROM recent AS r CROSS JOIN unnest(%(consumers)s::text[]) AS c(name)
     CROSS JOIN LATERAL (SELECT count(*) > 0 AS done, max({pat}) AS processed_at FROM {proc} AS p
                          WHERE {pev} = r.id AND {pcons} = c.name) AS x
)
SELECT c.name,
       count(e.id) FILTER (WHERE NOT e.done),
       min(e.id) FILTER (WHERE NOT e.done),
       max(extract(epoch FROM e.processed_at - e.created_at)) FILTER (WHERE e.processed_at > %(since)s),
       extract(epoch FROM statement_timestamp() - min(e.created_at) FILTER (WHERE NOT e.done)),
       (SELECT max(id) FROM recent), statement_timestamp()
  FROM unnest(%(consumers)s::text[]) AS c(name) LEFT JOIN pairs AS e ON e.name = c.name
 GROUP BY c.name"""
    ).format(**_parts(schema))
    rows = conn.execute(
        query, {"consumers": list(CONSUMERS), "after": window.after, "since": window.since}
    ).fetchall()
    samples = [
        ConsumerSample(consumer, backlog, behind_ms(worst_s, pending_age_s))
        for consumer, backlog, _, worst_s, pending_age_s, _, _ in rows
    ]
    if rows:  # the newest id and the time are the same on every row
        window.advance([r[2] for r in rows], newest=rows[0][5], now=rows[0][6])
    return sorted(samples, key=lambda s: s.consumer)


def behind_ms(worst_processed_s: Any, oldest_pending_age_s: Any) -> float | None:
    """How far behind a consumer is: the worse of the lag of the events it processed since the
    previous sample and the age of the oldest event it has not processed (which keeps growing
    while it is stalled)."""
    seconds = [float(s) for s in (worst_processed_s, oldest_pending_age_s) if s is not None]
    return max(0.0, max(seconds) * 1000) if seconds else None


@dataclass
class ProjectionLagSampler:
    """Samples the target's projectors while a test runs and logs what it reads as Locust
    requests (`LAG <consumer>`, `BACKLOG <consumer> (events)`)."""

    log_request: Callable[..., None]  # environment.events.request.fire
    latest: dict[str, ConsumerSample] = field(default_factory=dict)
    query_ms: list[float] = field(default_factory=list)
    problem: str = ""
    interval: float = 0.0
    reconnects: int = 0  # the database went away during the test and came back
    _greenlet: Any = None

    def start(self, dsn: str | None, schema: Schema, interval: float) -> None:
        self.stop()
        self.latest, self.query_ms, self.problem, self.interval = {}, [], "", interval
        self.reconnects = 0
        if dsn and interval > 0:
            self._greenlet = gevent.spawn(self._run, dsn, schema, interval)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None

    def describe(self) -> str | None:
        """One line on what the sampling did and what it cost, for the run's notes."""
        if self.problem:
            return f"projection lag sampling stopped: {self.problem}"
        if not self.query_ms:
            return None
        count = len(self.query_ms)
        return (
            f"projection lag: {count} sample{'s' if count != 1 else ''} every {self.interval:g}s,"
            f" one query each ({statistics.median(self.query_ms):.1f} ms median,"
            f" {max(self.query_ms):.1f} ms max, as this process waited for it)"
            + (f"; reconnected {self.reconnects} times" if self.reconnects else "")
        )

    def _run(self, dsn: str, schema: Schema, interval: float) -> None:
        """Sample until stopped. A database that goes away after the first sample (a fault of
        the nemesis: a restart, dropped connections) is waited for and reconnected to; one
        that never answered stops the sampling with the reason."""
        window: Window | None = None
        while True:
            try:
                conn = connect(dsn, timeout=5)
            except CheckError as error:
                if window is None:
                    self._give_up(str(error))
                    return
                gevent.sleep(interval)
                continue
            try:
                conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
                conn.execute("SET application_name = 'wallet suite lag sampling'")
                conn.execute("SET default_transaction_read_only = on")
                window = window or open_window(conn, schema)
                while True:
                    started = time.perf_counter()
                    samples = sample(conn, schema, window)
                    self.query_ms.append((time.perf_counter() - started) * 1000)
                    self._log(samples, window)
                    gevent.sleep(max(0.0, interval - (time.perf_counter() - started)))
            except psycopg.Error as error:
                if window is None:
                    self._give_up(f"query failed: {str(error).strip().splitlines()[0]}")
                    return
                self.reconnects += 1
                log.info("projection lag sampling: the database went away, reconnecting")
                gevent.sleep(interval)
            finally:
                conn.close()

    def _log(self, samples: list[ConsumerSample], window: Window) -> None:
        for s in samples:
            self.latest[s.consumer] = s
            self.log_request(
                request_type=BACKLOG,
                name=f"{s.consumer} (events)",
                response_time=s.backlog,
                response_length=0,
                exception=None,
                context={},
            )
            if s.lag_ms is not None:
                self.log_request(
                    request_type=LAG,
                    name=s.consumer,
                    response_time=s.lag_ms,
                    response_length=0,
                    exception=None,
                    context={},
                )
        if window.capped and not self.problem:
            window.capped = False
            log.warning(
                "projection lag sampling: a backlog beyond %d events; BACKLOG counts the newest"
                " %d only",
                MAX_WINDOW,
                MAX_WINDOW,
            )

    def _give_up(self, reason: str) -> None:
        self.problem = reason
        log.warning("wallet suite: projection lag sampling stopped: %s", reason)
