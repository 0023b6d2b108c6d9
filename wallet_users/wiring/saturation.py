"""Watches the load generator's own CPU during a run, so the report can say when the figures are
the client's limit rather than the service's (Locust's own warning needs a longer run)."""

from __future__ import annotations

from dataclasses import dataclass, field

import gevent
import psutil

BUSY_PERCENT = 90.0


@dataclass
class GeneratorLoad:
    interval: float = 1.0
    samples: list[float] = field(default_factory=list)
    _greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self.samples.clear()
        process = psutil.Process()
        process.cpu_percent(None)  # the first call only sets the baseline

        def sample() -> None:
            while True:
                gevent.sleep(self.interval)
                self.samples.append(process.cpu_percent(None))

        self._greenlet = gevent.spawn(sample)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    @property
    def busy_share(self) -> float:
        """The share of samples above BUSY_PERCENT (0 when nothing was sampled)."""
        if not self.samples:
            return 0.0
        return sum(1 for s in self.samples if s >= BUSY_PERCENT) / len(self.samples)

    @property
    def saturated(self) -> bool:
        return len(self.samples) >= 3 and self.busy_share > 0.5

    def describe(self) -> str:
        if not self.samples:
            return "not sampled"
        peak = max(self.samples)
        text = f"peak {peak:.0f}%, above {BUSY_PERCENT:.0f}% for {self.busy_share:.0%} of the run"
        if self.saturated:
            text += ": the load generator was the bottleneck, the figures are the client's limit"
        return text
