"""Open-model load (`--arrival-rate`): operations start on a fixed schedule whatever the answers
do, so a slow service is measured as late answers instead of fewer requests (no coordinated
omission). Each pacing user is one connection with a share of the rate; an operation whose
start time comes while its user has `--max-in-flight`'s share in flight is dropped and counted,
never delayed, and never reserves money.

Two latencies per operation: Locust's own entry (from the send on the connection, the closed-loop
figure) and a `SCHEDULED` entry from the operation's scheduled start, which includes the time it
queued for the connection. Dropped operations are `DROPPED` entries."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gevent.lock import Semaphore
from gevent.pool import Group

SCHEDULED = "SCHEDULED"
DROPPED = "DROPPED"


@dataclass
class ArrivalCounts:
    """One process's open-model tallies (merged on the master): operations whose start time came,
    those dropped, and the rate the schedule achieved."""

    scheduled: int = 0
    dropped: int = 0
    rate: float = 0.0  # operations per second the schedule started or dropped (sum over processes)
    began: float | None = None  # this process's first pacer start (perf_counter; not merged)
    ended: float | None = None  # its last pacer stop
    # how late operations started against their schedule: tenths of a millisecond -> count
    # (whole milliseconds past 100 ms); a generator that cannot keep up shows here
    late: dict[int, int] = field(default_factory=dict)

    def started_late(self, seconds: float) -> None:
        tenths = int(seconds * 10_000)
        key = tenths if tenths < 1000 else tenths // 10 * 10
        self.late[key] = self.late.get(key, 0) + 1

    def lateness_ms(self, quantile: float) -> float | None:
        """The schedule's lateness at a quantile (0..1), in milliseconds; None before any start."""
        total = sum(self.late.values())
        if not total:
            return None
        seen = 0
        for key in sorted(self.late):
            seen += self.late[key]
            if seen >= quantile * total:
                return key / 10
        return max(self.late) / 10

    @property
    def dropped_percent(self) -> float:
        return 100.0 * self.dropped / self.scheduled if self.scheduled else 0.0

    def paced(self, began: float, ended: float) -> None:
        """A pacer of this process ran from began to ended."""
        self.began = began if self.began is None else min(self.began, began)
        self.ended = ended if self.ended is None else max(self.ended, ended)
        if self.ended > self.began:
            self.rate = self.scheduled / (self.ended - self.began)

    def merge(self, other: ArrivalCounts) -> None:
        """Another process's counts: their schedules ran side by side, so the rates add up."""
        self.scheduled += other.scheduled
        self.dropped += other.dropped
        self.rate += other.rate
        for key, count in other.late.items():
            self.late[key] = self.late.get(key, 0) + count


@dataclass
class ArrivalShare:
    """What one pacing user gets of the run's rate and in-flight bound."""

    interval: float  # seconds between this user's scheduled starts
    max_in_flight: int

    @classmethod
    def of(cls, rate: float, max_in_flight: int, pacing_users: float) -> ArrivalShare:
        users = max(pacing_users, 1.0)
        return cls(users / rate, max(1, math.ceil(max_in_flight / users)))


class Pacer:
    """One pacing user's schedule: `arrive(kind, work)` waits for the next start time, then runs
    the operation in the background (behind the user's one connection) or drops it."""

    def __init__(
        self,
        share: ArrivalShare,
        counts: ArrivalCounts,
        fire: Callable[..., Any],
        phase: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.share = share
        self.counts = counts
        self.fire = fire  # environment.events.request.fire
        self.clock = clock
        self.began = clock()
        self.next_start = self.began + phase * share.interval  # spread the users' first starts
        self.connection = Semaphore(1)
        self.in_flight = Group()

    def wait_time(self) -> float:
        """Seconds until the next scheduled start (0 when the schedule is behind: catch up)."""
        return max(0.0, self.next_start - self.clock())

    def arrive(self, name: str, work: Callable[[], Any]) -> None:
        scheduled = self.next_start
        delay = scheduled - self.clock()
        if delay > 0:  # only before the first start: Locust's wait_time covers the others
            time.sleep(delay)  # gevent-patched
        self.counts.started_late(max(0.0, self.clock() - scheduled))
        self.next_start = scheduled + self.share.interval
        self.counts.scheduled += 1
        if len(self.in_flight) >= self.share.max_in_flight:
            self.counts.dropped += 1
            self._fire(DROPPED, name, 0.0)
            return
        self.in_flight.spawn(self._run, name, work, scheduled)

    def _run(self, name: str, work: Callable[[], Any], scheduled: float) -> None:
        with self.connection:
            answer = work()  # Locust's own entry times the send
        if answer is not None:  # None: nothing was sent (no wallet could afford it)
            self._fire(SCHEDULED, name, (self.clock() - scheduled) * 1000)

    def _fire(self, kind: str, name: str, ms: float) -> None:
        self.fire(
            request_type=kind,
            name=name,
            response_time=ms,
            response_length=0,
            exception=None,
            context={},
        )

    def stop(self) -> None:
        """The user stops: its queued and in-flight operations end with it (an operation killed
        mid-request stays booked as in doubt, as any request Locust kills at a stop)."""
        self.in_flight.kill(block=True)
        self.counts.paced(self.began, self.clock())
