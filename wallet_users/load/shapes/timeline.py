"""What the shapes share: the peak, rate and length a run was started with."""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape


class TimelineShape(LoadTestShape):
    """Keeps Locust's -u/-r/-t (use_common_options) and asks the subclass for the users at t."""

    abstract = True
    use_common_options = True

    def users_at(self, t: float, length: float, peak: int) -> int:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        options: Any = self.runner.environment.parsed_options
        # the suite takes --run-time from Locust to time the load only (wiring/roles/front.py)
        length = float(getattr(options, "load_time", None) or options.run_time or 60)
        t = self.get_run_time()
        if t >= length:
            return None
        peak = max(1, int(options.num_users or 1))
        return max(1, self.users_at(t, length, peak)), float(options.spawn_rate or 1)
