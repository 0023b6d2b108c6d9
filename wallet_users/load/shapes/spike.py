"""Spike: a fifth of --users, all of them for the middle third of --run-time, then a fifth again."""

from __future__ import annotations

from wallet_users.load.shapes.timeline import TimelineShape


class Spike(TimelineShape):
    def users_at(self, t: float, length: float, peak: int) -> int:
        in_spike = length / 3 <= t < 2 * length / 3
        return peak if in_spike else max(1, peak // 5)
