"""The `--nemesis` spec: which faults to inject during the load and how often, e.g.
`kill-service:every=20s,pause-postgres:every=30s:duration=3s` (a fault's parameters follow its
name after `:`; they may also follow it after `,`, since no fault's name holds `=`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# fault -> (what it does, whether it has a heal that a duration separates from the fault)
FAULTS: dict[str, tuple[str, bool]] = {
    "kill-service": ("SIGKILL the service, then start it again on the same port", True),
    "restart-projectors": ("stop the projector process gracefully, then start it again", True),
    "kill-projectors": ("SIGKILL the projector process, then start it again", True),
    "restart-postgres-fast": ("restart PostgreSQL with a fast shutdown", False),
    "restart-postgres-immediate": ("restart PostgreSQL with an immediate shutdown", False),
    "pause-postgres": ("SIGSTOP PostgreSQL for the duration, then SIGCONT", True),
    "drop-connections": ("pg_terminate_backend on the service's database connections", False),
    "command": ("run --nemesis-command, then after the duration --nemesis-heal", True),
}
# Faults a duration= applies to: the time between inject and heal, or (a restart) the time down.
TIMED_FAULTS = frozenset(n for n, (_, heals) in FAULTS.items() if heals) | {
    "restart-postgres-fast",
    "restart-postgres-immediate",
}
# Faults that act on the embedded target's processes; the others need only its database.
PROCESS_FAULTS = frozenset(FAULTS) - {"drop-connections", "command"}
DEFAULT_DURATION = {"pause-postgres": 3.0}
DEFAULT_JITTER = 0.2  # of the interval, drawn from the nemesis seed
PARAMETERS = ("every", "first", "after", "duration", "jitter", "count")


class NemesisSpecError(ValueError):
    """A --nemesis spec that names an unknown fault or parameter, or lacks an interval."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault of the schedule: every `every` seconds (each interval off by up to `jitter` of
    itself), the first `first` seconds into the load, at most `count` times (None: no limit);
    healed `duration` seconds after it was injected."""

    fault: str
    every: float
    first: float
    duration: float = 0.0
    jitter: float = DEFAULT_JITTER
    count: int | None = None

    @property
    def heals(self) -> bool:
        return FAULTS[self.fault][1]

    def describe(self) -> str:
        """'pause-postgres every 30s from 30s, for 3s' (what the tab shows before it runs)."""
        text = f"{self.fault} every {self.every:g}s from {self.first:g}s"
        if self.duration:
            text += f", for {self.duration:g}s"
        return text + (f", {self.count} times at most" if self.count else "")


def parse_duration(text: str, what: str) -> float:
    """Seconds from `20s`, `500ms`, `2m` or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise NemesisSpecError(f"{what}: {text!r} is not a duration (e.g. 20s, 500ms, 2m)")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * unit


def parse_spec(text: str) -> list[FaultSpec]:
    """The faults of a --nemesis spec, in the order given; [] for an empty spec."""
    groups: list[tuple[str, list[str]]] = []
    for item in (part.strip() for part in str(text or "").split(",")):
        if not item:
            continue
        name, _, rest = item.partition(":")
        params = [p for p in rest.split(":") if p.strip()]
        if "=" in name:  # a parameter of the fault before it
            if not groups:
                raise NemesisSpecError(f"{item!r} comes before any fault's name")
            groups[-1][1].append(item)
            continue
        groups.append((name.strip(), params))
    return [_fault(name, params) for name, params in groups]


def _fault(name: str, params: list[str]) -> FaultSpec:
    if name not in FAULTS:
        raise NemesisSpecError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    values: dict[str, str] = {}
    for param in params:
        key, sep, value = (s.strip() for s in param.partition("="))
        if not sep or key not in PARAMETERS:
            raise NemesisSpecError(
                f"{name}: unknown parameter {param.strip()!r}; known: every=, first= (or after=),"
                " duration=, jitter=, count="
            )
        values["first" if key == "after" else key] = value
    if "every" not in values:
        raise NemesisSpecError(f"{name}: no interval: add every=DURATION (e.g. {name}:every=20s)")
    every = parse_duration(values["every"], f"{name} every")
    if every < 1.0:
        raise NemesisSpecError(f"{name}: every={values['every']} is below 1s")
    first = parse_duration(values["first"], f"{name} first") if "first" in values else every
    if "duration" in values and name not in TIMED_FAULTS:
        raise NemesisSpecError(f"{name}: takes no duration (it has no heal of its own)")
    duration = (
        parse_duration(values["duration"], f"{name} duration")
        if "duration" in values
        else DEFAULT_DURATION.get(name, 0.0)
    )
    jitter = DEFAULT_JITTER
    if "jitter" in values:
        text = values["jitter"]
        try:
            jitter = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            raise NemesisSpecError(
                f"{name}: jitter={text} is not a share (e.g. 0.2 or 20%)"
            ) from None
        if not 0 <= jitter <= 1:
            raise NemesisSpecError(f"{name}: jitter={text} is outside 0..1")
    count = None
    if "count" in values:
        if not values["count"].isdigit() or int(values["count"]) < 1:
            raise NemesisSpecError(
                f"{name}: count={values['count']} is not a positive whole number"
            )
        count = int(values["count"])
    return FaultSpec(name, every, first, duration, jitter, count)
