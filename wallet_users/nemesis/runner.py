"""The fault runner: one greenlet on the process that owns the verdict (a local runner or the
master) that injects the schedule's faults one after another from the moment the load begins,
heals each after its duration, and heals whatever is injected when the test stops, before the
in-doubt operations are re-sent and the check settles."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event

from .events import FaultEvent
from .faults import FaultContext, fault_for
from .recovery import AnswerClock, BacklogReader, watch_recovery
from .schedule import PlannedFault, schedule
from .spec import FaultSpec

log = logging.getLogger("wallet_suite")

NEMESIS = "NEMESIS"  # the Locust entries' request type


@dataclass(frozen=True)
class NemesisPlan:
    """A test's faults: the spec's, the seed of their timing, and what they act on."""

    specs: tuple[FaultSpec, ...]
    seed: int
    context: FaultContext


@dataclass
class Nemesis:
    """Runs one test's faults; `events` are what happened, in order."""

    log_request: Callable[..., None]  # environment.events.request.fire
    on_fault: Callable[[bool], None] = lambda on: None  # a fault begins (True) or is over
    clock: AnswerClock = field(default_factory=AnswerClock)
    events: list[FaultEvent] = field(default_factory=list)
    plan: NemesisPlan | None = None
    stopped_early: str = ""  # why no more faults were injected
    _greenlet: Any = None
    _watches: list[Any] = field(default_factory=list)
    _stopping: Event = field(default_factory=Event)
    _backlog: BacklogReader | None = None
    _load_started: float = 0.0
    _probe_url: str = ""

    @property
    def active(self) -> bool:
        return self.plan is not None

    def start(
        self,
        plan: NemesisPlan | None,
        load_started: float,
        probe_url: str,
        backlog: BacklogReader | None,
    ) -> None:
        """Begin the schedule (load_started: the wall time the load began)."""
        self.close(0)
        self.plan, self.events, self.stopped_early = plan, [], ""
        if plan is None or not plan.specs:
            self.plan = None
            return
        self._stopping = Event()
        self._load_started, self._probe_url, self._backlog = load_started, probe_url, backlog
        if backlog is not None:
            backlog.read()  # opens its window at the load's start, before any fault
        self._greenlet = gevent.spawn(self._run, plan)

    def heal(self, timeout: float) -> str:
        """No more faults; heal the one injected now and wait for it; '' or why not healed."""
        self._stopping.set()
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is None:
            return ""
        greenlet.join(timeout)
        if not greenlet.dead:
            greenlet.kill(block=False)
            return f"the nemesis was still healing after {timeout:g}s"
        return ""

    def close(self, wait: float) -> list[FaultEvent]:
        """Wait up to `wait` seconds for the recovery figures, then stop measuring."""
        deadline = time.monotonic() + wait
        for watch in self._watches:
            watch.join(max(0.0, deadline - time.monotonic()))
        gevent.killall(self._watches, block=True, timeout=2)
        self._watches = []
        for event in self.events:
            event.measured = True
        if self._backlog is not None:
            self._backlog.close()
        return self.events

    def _run(self, plan: NemesisPlan) -> None:
        for planned in schedule(list(plan.specs), plan.seed):
            wait = self._load_started + planned.at - time.time()
            if self._stopping.wait(timeout=max(0.0, wait)):
                return
            event = self._one(planned, plan.context)
            if event.error:  # the target may be left broken: do not pile more faults on it
                self.stopped_early = (
                    f"no fault was injected after {event.fault} at {event.started_at:.1f}s failed"
                )
                log.error("nemesis: no more faults in this test")
                return

    def _one(self, planned: PlannedFault, context: FaultContext) -> FaultEvent:
        spec = planned.spec
        started = time.time()
        event = FaultEvent(
            spec.fault, planned.at, round(started - self._load_started, 3), epoch=started
        )
        if self._backlog is not None:
            event.backlog_before = self._backlog.read()
        self.events.append(event)
        log.info("nemesis: %s at %.1fs into the load", spec.fault, event.started_at)
        self._entry(f"{spec.fault} (start)", 0.0, None)
        fault = fault_for(spec, context)
        errors = []
        self.on_fault(True)
        try:
            fault.inject()
        except Exception as error:
            errors.append(f"{spec.fault} failed: {_first_line(error)}")
        if fault.heal is not None:
            self._stopping.wait(timeout=spec.duration)  # cut short when the test stops
            try:
                fault.heal()
            except Exception as error:
                errors.append(f"its heal failed: {_first_line(error)}")
        self.on_fault(False)
        over = time.time()
        event.healed_at = round(over - self._load_started, 3)
        event.error = "; ".join(errors)
        if event.error:
            log.error("nemesis: %s", event.error)
        self._entry(spec.fault, (over - started) * 1000, event.error or None)
        self._watches.append(gevent.spawn(self._measure, event, over))
        return event

    def _measure(self, event: FaultEvent, over: float) -> None:
        watch_recovery(event, over, self.clock, self._probe_url, self._backlog)
        if event.answered_after is not None:
            self._entry(f"{event.fault} (2xx again)", event.answered_after * 1000, None)
        if event.caught_up_after is not None:
            self._entry(f"{event.fault} (caught up)", event.caught_up_after * 1000, None)

    def _entry(self, name: str, ms: float, error: str | None) -> None:
        self.log_request(
            request_type=NEMESIS,
            name=name,
            response_time=ms,
            response_length=0,
            exception=RuntimeError(error) if error else None,
            context={},
        )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
