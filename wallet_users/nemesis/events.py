"""What happened to each fault of a run: when it was injected and healed, whether that worked,
and how long the service took to answer 2xx again and the projectors to catch up. Pure: the
console summary, the Consistency tab and the JSON reports read these."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class FaultEvent:
    fault: str
    planned_at: float  # seconds into the load, from the schedule
    started_at: float  # seconds into the load, when it was injected
    healed_at: float | None = None  # when its heal returned (or the fault, if it has none)
    error: str = ""  # one line: the fault or its heal failed or timed out
    answered_after: float | None = None  # seconds from healed_at to the first 2xx
    caught_up_after: float | None = None  # seconds from healed_at to both backlogs <= before
    backlog_before: dict[str, int] | None = None  # per consumer, just before the fault
    measured: bool = False  # the recovery measurement is over (figures final)
    epoch: float = 0.0  # wall time it was injected (Locust's CSV history is in wall time)

    @property
    def healed(self) -> bool:
        return self.healed_at is not None and not self.error

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def figures(self) -> str:
        """Its times, in a few words: 'at 4.1s, over after 0.8s; first 2xx 0.1s after its end (0.9s after it began); ...'."""
        parts = [f"at {self.started_at:.1f}s"]
        if self.healed_at is not None:
            parts[0] += f", over after {self.healed_at - self.started_at:.1f}s"
        if self.error:
            parts.append(self.error)
        if self.answered_after is not None and self.healed_at is not None:
            # from its start too: what a client saw of it, heal included
            outage = self.healed_at - self.started_at + self.answered_after
            parts.append(
                f"first 2xx {self.answered_after:.1f}s after its end ({outage:.1f}s after it began)"
            )
        else:
            parts.append("first 2xx " + _after(self.answered_after, self.measured))
        if self.backlog_before is not None:
            before = "/".join(str(n) for _, n in sorted(self.backlog_before.items()))
            parts.append(
                f"backlogs back to {before} events "
                + _after(self.caught_up_after, self.measured, " its end")
            )
        return "; ".join(parts)


def _after(seconds: float | None, measured: bool, what: str = "") -> str:
    if seconds is not None:
        return f"{seconds:.1f}s after{what}"
    return "not seen" if measured else "not measured yet"


def summary_lines(events: list[FaultEvent], seed: int | None) -> list[str]:
    """The console summary's lines for the run's faults: a count, then one per fault."""
    if not events:
        return []
    failed = [e for e in events if not e.healed]
    counts: dict[str, int] = {}
    for e in events:
        counts[e.fault] = counts.get(e.fault, 0) + 1
    kinds = ", ".join(f"{name} x{n}" for name, n in counts.items())
    end = f"{len(failed)} FAILED" if failed else "all over before the check"
    lines = [f"faults: {len(events)} injected ({kinds}; nemesis seed {seed}); {end}"]
    lines += [f"  fault {e.fault} {e.figures()}" for e in events]
    return lines
