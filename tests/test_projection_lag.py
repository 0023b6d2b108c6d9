"""The live projection lag: what one sample of the target's outbox reads (per consumer, the events
it has not processed and how far behind it is), how the window it reads moves with the outbox,
and that a sample is one indexed read of the newest events, never a scan of the outbox."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import psycopg
import pytest

from wallet_users.consistency import Schema
from wallet_users.consistency.schema import CONSUMERS
from wallet_users.wiring.projection_lag import (
    MAX_WINDOW,
    SLACK_IDS,
    ProjectionLagSampler,
    Window,
    behind_ms,
    open_window,
    sample,
)

READ_MODEL, LEDGER = CONSUMERS
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_events(conn: psycopg.Connection, count: int, *, age_s: float = 0.0) -> list[int]:
    """`count` outbox events created `age_s` seconds ago; their ids."""
    rows = conn.execute(
        "INSERT INTO outbox (aggregate_id, event_type, event_version, payload, created_at)"
        " SELECT 'lt-lag-' || gen_random_uuid(), 'WalletCredited', 1, '{}',"
        " clock_timestamp() - make_interval(secs => %s)"
        " FROM generate_series(1, %s) AS n RETURNING id",
        (age_s, count),
    ).fetchall()
    return [row[0] for row in rows]


def process(conn: psycopg.Connection, consumer: str, ids: list[int]) -> None:
    conn.execute(
        "INSERT INTO outbox_consumer_processing (outbox_event_id, consumer_name)"
        " SELECT unnest(%s::bigint[]), %s",
        (ids, consumer),
    )


@pytest.fixture
def conn(database_dsn: str):
    with psycopg.connect(database_dsn, autocommit=True) as connection:
        yield connection


def test_a_sample_counts_each_consumers_unprocessed_events_and_how_far_behind_it_is(conn) -> None:
    window = open_window(conn, Schema())
    ids = add_events(conn, 10, age_s=3.0)
    process(conn, READ_MODEL, ids)  # all done, each 3 s after its event was written
    process(conn, LEDGER, ids[:6])  # 4 pending, the oldest written 3 s ago
    by_consumer = {s.consumer: s for s in sample(conn, Schema(), window)}
    assert set(by_consumer) == set(CONSUMERS)
    assert by_consumer[READ_MODEL].backlog == 0
    assert by_consumer[LEDGER].backlog == 4
    assert 3000 <= by_consumer[READ_MODEL].lag_ms < 10_000
    assert 3000 <= by_consumer[LEDGER].lag_ms < 10_000

    # nothing new: the read model has nothing to do (no lag entry), the ledger still lags
    again = {s.consumer: s for s in sample(conn, Schema(), window)}
    assert again[READ_MODEL].lag_ms is None and again[READ_MODEL].backlog == 0
    assert again[LEDGER].backlog == 4 and again[LEDGER].lag_ms >= 3000

    process(conn, LEDGER, ids[6:])
    drained = {s.consumer: s for s in sample(conn, Schema(), window)}
    assert drained[LEDGER].backlog == 0
    assert drained[LEDGER].lag_ms >= 3000  # the events it just caught up on were 3 s old


def test_the_outbox_history_before_the_first_sample_is_not_read(conn) -> None:
    old = add_events(conn, 3 * SLACK_IDS)  # never processed: a projector stopped long ago
    window = open_window(conn, Schema())
    assert window.after == old[-1] - SLACK_IDS
    new = add_events(conn, 5)
    backlog = {s.consumer: s.backlog for s in sample(conn, Schema(), window)}
    # only the slack below the newest event at the start is read, not the whole history
    assert backlog == {READ_MODEL: SLACK_IDS + len(new), LEDGER: SLACK_IDS + len(new)}


def test_the_window_follows_the_oldest_pending_event_and_never_goes_back() -> None:
    window = Window(after=100, since=T0)
    window.advance([1000, 1500], newest=2000, now=T0)
    assert window.after == 999 - SLACK_IDS
    window.advance([None, None], newest=3000, now=T0)  # all processed
    assert window.after == 3000 - SLACK_IDS
    window.advance([200, None], newest=3100, now=T0)  # below the window: not read again
    assert window.after == 3000 - SLACK_IDS
    window.advance([], newest=None, now=T0)  # nothing in the window at all
    assert window.after == 3000 - SLACK_IDS


def test_a_stalled_consumer_cannot_make_a_sample_read_more_than_the_maximum_window() -> None:
    window = Window(after=0, since=T0)
    window.advance([1, None], newest=3 * MAX_WINDOW, now=T0)
    assert window.after == 2 * MAX_WINDOW
    assert window.capped


def test_a_consumer_is_as_far_behind_as_the_worse_of_its_recent_lag_and_its_oldest_pending() -> (
    None
):
    assert behind_ms(0.05, None) == 50
    assert behind_ms(None, 2.5) == 2500
    assert behind_ms(0.05, 2.5) == 2500
    assert behind_ms(None, None) is None


def test_a_sample_reads_the_outbox_by_its_primary_key_and_the_consumers_unique_index(
    conn,
) -> None:
    ids = add_events(conn, 20_000)
    for consumer in CONSUMERS:
        process(conn, consumer, ids)
    conn.execute("ANALYZE outbox")
    conn.execute("ANALYZE outbox_consumer_processing")
    window = open_window(conn, Schema())
    add_events(conn, 50)
    explained = []

    class Explaining:
        def execute(self, query, params=None):
            text = query.as_string(conn) if hasattr(query, "as_string") else query
            explained.append(conn.execute("EXPLAIN (FORMAT JSON) " + text, params).fetchone()[0])
            return conn.execute(query, params)

    sample(Explaining(), Schema(), window)
    plan = json.dumps(explained[0])
    assert '"Seq Scan"' not in plan, plan
    assert '"Index Name": "outbox_pkey"' in plan, plan
    assert "outbox_consumer_processing_outbox_event_id_consumer_name_key" in plan, plan


def test_the_sampler_logs_backlog_and_lag_as_requests_of_their_own(database_dsn: str) -> None:
    logged: list[dict] = []
    sampler = ProjectionLagSampler(log_request=lambda **entry: logged.append(entry))
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        sampler.start(database_dsn, Schema(), interval=0.5)
        try:
            import gevent

            deadline = 50
            while not sampler.query_ms and deadline:
                gevent.sleep(0.1)
                deadline -= 1
            ids = add_events(conn, 3)
            process(conn, READ_MODEL, ids)
            while not any(e["request_type"] == "LAG" for e in logged) and deadline:
                gevent.sleep(0.1)
                deadline -= 1
        finally:
            sampler.stop()
    names = {(e["request_type"], e["name"]) for e in logged}
    assert ("BACKLOG", f"{LEDGER} (events)") in names
    assert ("LAG", READ_MODEL) in names
    assert all(e["exception"] is None for e in logged)
    assert re.match(r"projection lag: \d+ samples? every 0.5s, one query each", sampler.describe())


def test_a_sampler_that_cannot_connect_says_why_once_and_logs_nothing() -> None:
    logged: list[dict] = []
    sampler = ProjectionLagSampler(log_request=lambda **entry: logged.append(entry))
    sampler.start("postgresql://u:secret@127.0.0.1:1/db", Schema(), interval=0.5)
    sampler._greenlet.join(timeout=15)
    assert logged == []
    assert sampler.describe().startswith("projection lag sampling stopped: cannot connect")
    assert "secret" not in sampler.describe()
