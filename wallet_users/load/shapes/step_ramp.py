"""Step ramp: --steps equal steps up to --users, like the original 'progressive' loop."""

from __future__ import annotations

import math

from locust import events

from wallet_users.load.shapes.timeline import TimelineShape


@events.init_command_line_parser.add_listener
def _steps_option(parser) -> None:
    parser.add_argument(
        "--steps", type=int, default=4, help="step ramp: number of steps (default 4)"
    )


class StepRamp(TimelineShape):
    def users_at(self, t: float, length: float, peak: int) -> int:
        steps = max(1, int(getattr(self.runner.environment.parsed_options, "steps", 4) or 4))
        step = min(steps, 1 + math.floor(t / (length / steps)))
        return math.ceil(peak * step / steps)
