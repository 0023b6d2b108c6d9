"""The run record: what this run sent to each wallet and how each operation ended, `ok`,
`rejected` (definitely no effect) or `indeterminate` (may or may not have applied), in the manner
of a Jepsen history, but aggregated per wallet so it stays small however long the run.

It is what the consistency check compares the database with, and what workers send to the master
in a distributed run (`to_dict` / `from_dict` / `merge`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

ZERO = Decimal(0)

OK, REJECTED, INDETERMINATE = "ok", "rejected", "indeterminate"
OUTCOMES = (OK, REJECTED, INDETERMINATE)
KINDS = ("credit", "debit", "transfer_out", "transfer_in")


@dataclass
class WalletTally:
    """Everything the run did to one wallet, summed."""

    created: str = OK  # the outcome of its creation
    initial_balance: Decimal = ZERO
    # per kind: acknowledged sum and count; indeterminate sum and count
    ok_sum: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(KINDS, ZERO))
    ok_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    maybe_sum: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(KINDS, ZERO))
    maybe_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rejected: int = 0
    refused_for_funds: int = 0
    replays: int = 0
    replay_mismatches: int = 0
    # replays whose answer showed a new version (applied a second time), and what those second
    # applications did to this wallet's balance (a replayed transfer books both wallets)
    replays_applied_again: int = 0
    again_sum: Decimal = ZERO
    # replays of an acknowledged operation refused for funds: executed again, not answered from
    # storage (which would repeat the first answer)
    replays_refused_again: int = 0
    # replays sent with no answer yet (cut short by the stop, or no answer): executed again or
    # not, unknown; what they would move this wallet by, in and out
    replays_in_doubt: int = 0
    replay_doubt_in: Decimal = ZERO
    replay_doubt_out: Decimal = ZERO
    replay_difference: str = ""  # the last replay answered differently: what differed
    # read-your-writes: per endpoint ("read model", "ledger") the acknowledged writes it was
    # polled for, those it never showed within --visibility-timeout, and the last such answer
    reads_checked: dict[str, int] = field(default_factory=dict)
    reads_unseen: dict[str, int] = field(default_factory=dict)
    unseen_answer: dict[str, str] = field(default_factory=dict)
    # an adopted wallet (--adopt-run): its ledger entries and version when this run began;
    # base_version -1: created in this run. Its balance then is in initial_balance.
    base_entries: int = 0
    base_version: int = -1

    @property
    def indeterminate(self) -> int:
        return sum(self.maybe_count.values())

    def expected_balance(self) -> tuple[Decimal, Decimal]:
        """The (lowest, highest) balance the acknowledged and indeterminate operations allow."""
        base = (
            self.initial_balance
            + self.ok_sum["credit"]
            + self.ok_sum["transfer_in"]
            - self.ok_sum["debit"]
            - self.ok_sum["transfer_out"]
        )
        low = base - self.maybe_sum["debit"] - self.maybe_sum["transfer_out"]
        high = base + self.maybe_sum["credit"] + self.maybe_sum["transfer_in"]
        return low, high

    def expected_entries(self) -> tuple[int, int]:
        """The (fewest, most) ledger entries: one per balance-changing event, the initial
        balance included once."""
        if self.base_version >= 0:  # adopted: the entries it had when this run began
            base = self.base_entries + sum(self.ok_count.values())
        else:
            base = (1 if self.initial_balance > 0 else 0) + sum(self.ok_count.values())
        return base, base + self.indeterminate

    def merge(self, other: WalletTally) -> None:
        # Shared hot wallets are created by one worker and refused (409) to the others:
        # the merged creation is the most that happened.
        # Its initial balance is the creator's: without --seed each worker planned its own.
        rank = {OK: 2, INDETERMINATE: 1, REJECTED: 0}
        if rank[other.created] > rank[self.created]:
            self.created = other.created
            self.initial_balance = other.initial_balance
        if self.base_version < 0 <= other.base_version:
            self.base_entries, self.base_version = other.base_entries, other.base_version
            self.initial_balance = other.initial_balance
        for kind in KINDS:
            self.ok_sum[kind] += other.ok_sum[kind]
            self.ok_count[kind] += other.ok_count[kind]
            self.maybe_sum[kind] += other.maybe_sum[kind]
            self.maybe_count[kind] += other.maybe_count[kind]
        for name in (
            "rejected",
            "refused_for_funds",
            "replays",
            "replay_mismatches",
            "replays_applied_again",
            "again_sum",
            "replays_refused_again",
            "replays_in_doubt",
            "replay_doubt_in",
            "replay_doubt_out",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("reads_checked", "reads_unseen"):
            mine = getattr(self, name)
            for what, count in getattr(other, name).items():
                mine[what] = mine.get(what, 0) + count
        self.unseen_answer.update(other.unseen_answer)
        self.replay_difference = self.replay_difference or other.replay_difference


@dataclass
class RunRecord:
    """Per-wallet tallies of one run, plus the run's identity."""

    run_id: str
    wallets: dict[str, WalletTally] = field(default_factory=dict)
    creations_attempted: int = 0
    operations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    # wallets whose client-side record is incomplete (e.g. their worker died): checked only by
    # the database's own invariants
    unverified: set[str] = field(default_factory=set)

    def tally(self, wallet_id: str) -> WalletTally:
        tally = self.wallets.get(wallet_id)
        if tally is None:
            tally = self.wallets[wallet_id] = WalletTally()
        return tally

    def wallet_created(self, wallet_id: str, outcome: str, initial_balance: Decimal) -> None:
        self.creations_attempted += 1
        tally = self.tally(wallet_id)
        tally.created = outcome
        tally.initial_balance = initial_balance

    def wallet_adopted(self, wallet_id: str, balance: Decimal, version: int, entries: int) -> None:
        """A wallet of an earlier run, as it was when this run began (--adopt-run): its balance
        plays the initial balance's part, its entries and version are the check's baseline."""
        tally = self.tally(wallet_id)
        tally.created = OK
        tally.initial_balance = balance
        tally.base_version = version
        tally.base_entries = entries

    def operation(
        self,
        kind: str,
        outcome: str,
        wallet_id: str,
        amount: Decimal,
        *,
        to_wallet_id: str | None = None,
        refused_for_funds: bool = False,
    ) -> None:
        """One credit, debit or transfer (kind 'transfer', with to_wallet_id) and its outcome."""
        self._book(kind, outcome, wallet_id, amount, to_wallet_id, +1)
        if outcome == REJECTED:
            tally = self.tally(wallet_id)
            tally.rejected += 1
            tally.refused_for_funds += int(refused_for_funds)

    def operation_sent(
        self, kind: str, wallet_id: str, amount: Decimal, to_wallet_id: str | None = None
    ) -> None:
        """Book an operation as indeterminate before it is sent: if the run stops while it is in
        flight (Locust kills users mid-request), it stays so, which is the truth."""
        self.operation(kind, INDETERMINATE, wallet_id, amount, to_wallet_id=to_wallet_id)

    def operation_answered(
        self,
        kind: str,
        outcome: str,
        wallet_id: str,
        amount: Decimal,
        *,
        to_wallet_id: str | None = None,
        refused_for_funds: bool = False,
    ) -> None:
        """Replace an operation_sent booking with the outcome its answer gave: in one pass over
        the legs, since every request of a run comes through here."""
        if outcome == INDETERMINATE:
            return  # it stays booked as operation_sent left it
        self.operations[INDETERMINATE] -= 1
        self.operations[outcome] += 1
        for leg, leg_wallet in _legs(kind, wallet_id, to_wallet_id):
            tally = self.tally(leg_wallet)
            tally.maybe_sum[leg] -= amount
            tally.maybe_count[leg] -= 1
            if outcome == OK:
                tally.ok_sum[leg] += amount
                tally.ok_count[leg] += 1
        if outcome == REJECTED:
            tally = self.tally(wallet_id)
            tally.rejected += 1
            tally.refused_for_funds += int(refused_for_funds)

    def _book(
        self,
        kind: str,
        outcome: str,
        wallet_id: str,
        amount: Decimal,
        to_wallet_id: str | None,
        sign: int,
    ) -> None:
        self.operations[outcome] += sign
        for leg, leg_wallet in _legs(kind, wallet_id, to_wallet_id):
            tally = self.tally(leg_wallet)
            if outcome == OK:
                tally.ok_sum[leg] += sign * amount
                tally.ok_count[leg] += sign
            elif outcome == INDETERMINATE:
                tally.maybe_sum[leg] += sign * amount
                tally.maybe_count[leg] += sign

    def replay(
        self,
        wallet_id: str,
        matched: bool,
        applied_again: Iterable[tuple[str, Decimal]] = (),
        difference: str = "",
        refused_again: bool = False,
    ) -> None:
        """A replayed Idempotency-Key and whether it was answered as the first request;
        applied_again: (wallet, signed amount) per leg when its answer showed a new version;
        difference: what differed between the two answers."""
        tally = self.tally(wallet_id)
        tally.replays += 1
        tally.replay_mismatches += int(not matched)
        tally.replays_refused_again += int(refused_again)
        if difference:
            tally.replay_difference = difference
        for leg_wallet, signed in applied_again:
            leg = self.tally(leg_wallet)
            leg.replays_applied_again += 1
            leg.again_sum += signed

    def replay_sent(self, legs: Iterable[tuple[str, Decimal]], sign: int = 1) -> None:
        """A replay about to be sent: until its answer comes it may have been executed again.
        legs: (wallet, signed amount) it would move; replay_answered takes them back."""
        for leg_wallet, signed in legs:
            leg = self.tally(leg_wallet)
            leg.replays_in_doubt += sign
            if signed > 0:
                leg.replay_doubt_in += sign * signed
            else:
                leg.replay_doubt_out -= sign * signed

    def replay_answered(self, legs: Iterable[tuple[str, Decimal]]) -> None:
        self.replay_sent(legs, sign=-1)

    def read_checked(self, wallet_id: str, endpoint: str, shown: bool, answer: str = "") -> None:
        """A read-your-writes poll of one acknowledged write ended: shown within the visibility
        timeout, or not (answer: the last one, e.g. '404')."""
        tally = self.tally(wallet_id)
        tally.reads_checked[endpoint] = tally.reads_checked.get(endpoint, 0) + 1
        if not shown:
            tally.reads_unseen[endpoint] = tally.reads_unseen.get(endpoint, 0) + 1
            tally.unseen_answer[endpoint] = answer

    def read_counts(self, endpoint: str) -> tuple[int, int]:
        """(writes polled for, writes never shown) on one endpoint, over the run."""
        return (
            sum(t.reads_checked.get(endpoint, 0) for t in self.wallets.values()),
            sum(t.reads_unseen.get(endpoint, 0) for t in self.wallets.values()),
        )

    # --- summaries ---------------------------------------------------------------------------

    def creation_counts(self) -> dict[str, int]:
        """Creations by outcome, over the wallets whose creation this record saw."""
        counts = dict.fromkeys(OUTCOMES, 0)
        for wallet_id, tally in self.wallets.items():
            if wallet_id not in self.unverified and tally.base_version < 0:  # not adopted
                counts[tally.created] += 1
        return counts

    def refused_for_funds(self) -> int:
        return sum(t.refused_for_funds for t in self.wallets.values())

    def replay_counts(self) -> tuple[int, int]:
        return (
            sum(t.replays for t in self.wallets.values()),
            sum(t.replay_mismatches for t in self.wallets.values()),
        )

    # --- serialisation and merging (distributed runs, the saved record) ---------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "creations_attempted": self.creations_attempted,
            "operations": dict(self.operations),
            "unverified": sorted(self.unverified),
            "wallets": {wid: _tally_to_dict(t) for wid, t in self.wallets.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        record = cls(
            run_id=data["run_id"],
            creations_attempted=data.get("creations_attempted", 0),
            operations={**dict.fromkeys(OUTCOMES, 0), **data.get("operations", {})},
            unverified=set(data.get("unverified", [])),
        )
        record.wallets = {wid: _tally_from_dict(t) for wid, t in data.get("wallets", {}).items()}
        return record

    def merge(self, other: RunRecord) -> None:
        self.creations_attempted += other.creations_attempted
        for outcome in OUTCOMES:
            self.operations[outcome] += other.operations[outcome]
        self.unverified |= other.unverified
        for wallet_id, tally in other.wallets.items():
            if wallet_id in self.wallets:
                self.wallets[wallet_id].merge(tally)
            else:  # not into a fresh tally: its default created='ok' would outrank the real one
                self.wallets[wallet_id] = _tally_from_dict(_tally_to_dict(tally))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls.from_dict(json.loads(path.read_text()))


def _legs(kind: str, wallet_id: str, to_wallet_id: str | None) -> list[tuple[str, str | None]]:
    """The per-wallet kinds an operation books: a transfer is out of one wallet, into another."""
    if kind == "transfer":
        return [("transfer_out", wallet_id), ("transfer_in", to_wallet_id)]
    return [(kind, wallet_id)]


_MONEY_FIELDS = {"initial_balance", "again_sum", "replay_doubt_in", "replay_doubt_out"}
_MONEY_MAPS = {"ok_sum", "maybe_sum"}


def _tally_to_dict(tally: WalletTally) -> dict[str, Any]:
    data = asdict(tally)
    for name in _MONEY_FIELDS:
        data[name] = str(getattr(tally, name))
    for name in _MONEY_MAPS:
        data[name] = {k: str(v) for k, v in data[name].items() if v}
    for name in ("ok_count", "maybe_count"):
        data[name] = {k: v for k, v in data[name].items() if v}
    for name in _LEFT_OUT_WHEN_EMPTY:  # most wallets have none: keep the saved record small
        if not getattr(tally, name):
            del data[name]
    if tally.base_version < 0:  # created in this run: no baseline
        del data["base_version"], data["base_entries"]
    return data


_LEFT_OUT_WHEN_EMPTY = (
    "replays_applied_again",
    "again_sum",
    "replays_refused_again",
    "replays_in_doubt",
    "replay_doubt_in",
    "replay_doubt_out",
    "replay_difference",
    "reads_checked",
    "reads_unseen",
    "unseen_answer",
)


def _tally_from_dict(data: dict[str, Any]) -> WalletTally:
    tally = WalletTally()
    for f in fields(WalletTally):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in _MONEY_FIELDS:
            value = Decimal(value)
        elif f.name in _MONEY_MAPS:
            value = {**dict.fromkeys(KINDS, ZERO), **{k: Decimal(v) for k, v in value.items()}}
        elif f.name in ("ok_count", "maybe_count"):
            value = {**dict.fromkeys(KINDS, 0), **value}
        setattr(tally, f.name, value)
    return tally
