"""Named fault switches that break the reference service on purpose, one class of inconsistency
each, so that the suite's consistency check can be shown to catch every one of them; and compat
profiles, sets of switches at set rates that make it behave like a real deployment (`wallex`:
what the real service did when run, per the contract's last section)."""

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
    # What the real service does (the contract's last section); --compat wallex turns them on.
    "keys-ignored": "Idempotency-Key is ignored on credit, debit and transfer (honoured on POST /wallets only): a replay is applied again",
    "ledger-initial-twice": "ledger-projector also writes a CREDIT entry for WalletCreated's initial balance, so it counts twice",
    "read-404": "GET /wallets/{id} answers 404 for every wallet, as the real service's unwritten index does",
    "third-consumer": "a third consumer, kafka-publisher, records its own outbox_consumer_processing rows (and does nothing else)",
    "read-model-unbuilt": "read-model-projector marks a new wallet's events processed but never creates its read-model row",
    "self-transfer-500": "a transfer to the same wallet answers 500 Internal server error instead of 400",
    # The naive projector design whose late-commit race the reference's work queue avoids.
    "checkpoint-by-id": "the projectors read the outbox by id above their checkpoint: an event committed after a higher id is skipped for good (any rate > 0 turns it on)",
}

# profile -> the switches it turns on and their rates. wallex: the real service as run on loopback
# (20 wallets, 30 s); the rates make each behaviour show within seconds on ~20 wallets. Its ledger
# entries lost to a failing insert are ledger-skip: marked processed, no entry, the same thing seen
# from outside. Its read model held 1 row for 24 wallets.
COMPAT_PROFILES: dict[str, dict[str, float]] = {
    "wallex": {
        "keys-ignored": 1.0,
        "ledger-initial-twice": 1.0,
        "read-404": 1.0,
        "third-consumer": 1.0,
        "ledger-skip": 0.15,
        "read-model-unbuilt": 0.95,
        "self-transfer-500": 1.0,
    },
}


class FaultSpecError(ValueError):
    """A --faults value that does not name known faults with rates in [0, 1], or an unknown
    --compat profile."""


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

    def on(self, name: str) -> bool:
        """Whether a switch that is a mode rather than a draw (any rate > 0) is on."""
        return self.rates.get(name, 0.0) > 0.0

    def __bool__(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())


def compat_rates(profile: str | None) -> dict[str, float]:
    """The switches a compat profile turns on (none for None or ''), or FaultSpecError."""
    if not profile:
        return {}
    if profile not in COMPAT_PROFILES:
        raise FaultSpecError(
            f"unknown compat profile {profile!r}; known: {', '.join(COMPAT_PROFILES)}"
        )
    return dict(COMPAT_PROFILES[profile])


def parse_faults(spec: str | None, seed: int | None = None, compat: str | None = None) -> Faults:
    """Parse 'name=rate,name' (a bare name means rate 1) into Faults, over the switches of the
    compat profile if one is named: the union of both, a rate given in spec winning."""
    rates: dict[str, float] = compat_rates(compat)
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
