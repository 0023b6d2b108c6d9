"""Named fault switches that break the reference service on purpose, one class of inconsistency
each, so that the suite's consistency check can be shown to catch every one of them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# name -> what it breaks; the README's fault table is written from this.
FAULTS: dict[str, str] = {
    "ledger-skip": "ledger-projector marks an event processed but writes no ledger entry for it",
    "ledger-duplicate": "ledger-projector writes a second ledger entry for the same event",
    "ledger-wrong-before": "ledger-projector writes a wrong balanceBefore (balanceAfter stays right)",
    "read-model-lost-update": "read-model-projector loses an update (unlocked read-modify-write)",
    "ledger-stall": "ledger-projector stops consuming for good (until restarted)",
    "read-model-stall": "read-model-projector stops consuming for good (until restarted)",
    "outbox-drop": "a command commits its event and write-side update without its outbox row",
    "replay-twice": "a replayed Idempotency-Key is executed again instead of answered from storage",
    "overdraft": "a debit or transfer is allowed past the balance",
}


class FaultSpecError(ValueError):
    """A --faults value that does not name known faults with rates in [0, 1]."""


@dataclass
class Faults:
    """The active fault switches and their rates; `fires(name)` draws once."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def fires(self, name: str) -> bool:
        rate = self.rates.get(name, 0.0)
        return rate > 0.0 and self._random.random() < rate

    def __bool__(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())


def parse_faults(spec: str | None, seed: int | None = None) -> Faults:
    """Parse 'name=rate,name' (a bare name means rate 1) into Faults."""
    rates: dict[str, float] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, rate_text = item.partition("=")
        name = name.strip()
        if name not in FAULTS:
            raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        try:
            rate = float(rate_text) if rate_text else 1.0
        except ValueError:
            raise FaultSpecError(f"fault {name!r}: rate {rate_text!r} is not a number") from None
        if not 0.0 <= rate <= 1.0:
            raise FaultSpecError(f"fault {name!r}: rate {rate} is outside [0, 1]")
        rates[name] = rate
    return Faults(rates, seed)
