"""Faults during the load (a nemesis): the `--nemesis` spec, its seeded schedule, the faults'
injects and heals, the runner greenlet and the recovery figures of each fault."""

from .events import FaultEvent, summary_lines
from .runner import NEMESIS, Nemesis, NemesisPlan
from .spec import FAULTS, PROCESS_FAULTS, FaultSpec, NemesisSpecError, parse_duration, parse_spec

__all__ = [
    "FAULTS",
    "NEMESIS",
    "PROCESS_FAULTS",
    "FaultEvent",
    "FaultSpec",
    "Nemesis",
    "NemesisPlan",
    "NemesisSpecError",
    "parse_duration",
    "parse_spec",
    "summary_lines",
]
