"""How long a fault took to get over: seconds from its heal to the service's first 2xx, and to
both projectors' backlogs back at or under what they were just before the fault. The 2xx comes
from the load's own answers where this process sends load, else from a probe of a seeded
wallet; the backlog from the lag sampler's query on a connection of the nemesis's own."""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import gevent
import psycopg

from ..consistency import Schema
from ..wiring.projection_lag import Window, open_window, sample
from .events import FaultEvent
from .faults import SUITE_APPLICATION

log = logging.getLogger("wallet_suite")

POLL_SECONDS = 0.1
RECOVERY_SECONDS = 60.0  # a fault not got over within this is "not seen"


class AnswerClock:
    """When the load last got a 2xx: a listener on Locust's request event (local runs)."""

    def __init__(self) -> None:
        self.last_ok = 0.0

    def on_request(self, request_type: str = "", exception: Any = None, **kwargs: Any) -> None:
        if exception is None and request_type in ("POST", "GET"):
            response = kwargs.get("response")
            status = getattr(response, "status_code", 200) or 0
            if 200 <= status < 300:
                self.last_ok = time.time()


class BacklogReader:
    """Each consumer's backlog now, or None while the database does not answer; reconnects."""

    def __init__(self, dsn: str, schema: Schema) -> None:
        self.dsn, self.schema = dsn, schema
        self._conn: psycopg.Connection | None = None
        self._window: Window | None = None

    def read(self) -> dict[str, int] | None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=2,
                    application_name=f"{SUITE_APPLICATION} nemesis",
                    options="-c statement_timeout=2000",
                )
                if self._window is None:
                    self._window = open_window(self._conn, self.schema)
            return {s.consumer: s.backlog for s in sample(self._conn, self.schema, self._window)}
        except psycopg.Error:
            self.close()
            return None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def answers_2xx(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def watch_recovery(
    event: FaultEvent,
    over_at: float,
    clock: AnswerClock,
    probe_url: str,
    backlog: BacklogReader | None,
    deadline_s: float = RECOVERY_SECONDS,
) -> None:
    """Fill in the event's recovery figures (over_at: wall time its heal returned); returns
    when both are known or after deadline_s."""
    try:
        deadline = over_at + deadline_s
        want_backlog = backlog is not None and event.backlog_before is not None
        while time.time() < deadline:
            now = time.time()
            if event.answered_after is None:
                if clock.last_ok > over_at:
                    event.answered_after = max(0.0, clock.last_ok - over_at)
                elif probe_url and answers_2xx(probe_url):
                    event.answered_after = max(0.0, now - over_at)
            if want_backlog and event.caught_up_after is None:
                levels = backlog.read()
                before = event.backlog_before or {}
                if levels is not None and all(n <= before.get(c, 0) for c, n in levels.items()):
                    event.caught_up_after = max(0.0, time.time() - over_at)
            if event.answered_after is not None and (
                event.caught_up_after is not None or not want_backlog
            ):
                break
            gevent.sleep(POLL_SECONDS)
    finally:
        event.measured = True
