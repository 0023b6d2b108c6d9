"""The run record: what this run sent to each wallet and how each operation ended, `ok`,
`rejected` (definitely no effect) or `indeterminate` (may or may not have applied), in the manner
of a Jepsen history, but aggregated per wallet so it stays small however long the run.

It is what the consistency check compares the database with, and what workers send to the master
in a distributed run (`message_parts` / `absorb` / `merge`). Each wallet is a row of flat integer
columns (money in cents) so that a million wallets fit in a generator and move between processes
as column bytes; `wallets` and `WalletTally` read them as objects.
"""

from __future__ import annotations

import json
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..money import cents, money, money_text

ZERO = Decimal(0)

OK, REJECTED, INDETERMINATE = "ok", "rejected", "indeterminate"
OUTCOMES = (OK, REJECTED, INDETERMINATE)
KINDS = ("credit", "debit", "transfer_out", "transfer_in")
KIND_INDEX = {kind: n for n, kind in enumerate(KINDS)}
# a creation's outcome as a byte, ordered by rank: merging keeps the most that happened
CREATED_CODE = {REJECTED: 0, INDETERMINATE: 1, OK: 2}
CREATED_NAME = {code: name for name, code in CREATED_CODE.items()}

# The dense columns: (name, array typecode, value of a wallet never booked). Money is in cents.
# base_entries: ledger entries the wallet had when the run began (-1: the rule for a wallet
# created in this run, one for a positive initial balance); base_version: its version then
# (-1: created in this run).
COLUMNS = (
    ("created", "b", CREATED_CODE[OK]),
    ("initial_balance", "q", 0),
    *((f"ok_sum.{kind}", "q", 0) for kind in KINDS),
    *((f"ok_count.{kind}", "i", 0) for kind in KINDS),
    *((f"maybe_sum.{kind}", "q", 0) for kind in KINDS),
    *((f"maybe_count.{kind}", "i", 0) for kind in KINDS),
    ("rejected", "i", 0),
    ("refused_for_funds", "i", 0),
    ("base_entries", "i", -1),
    ("base_version", "q", -1),
)
# taken whole from the wallet's creator when merging; every other column is summed
CREATOR_COLUMNS = ("created", "initial_balance", "base_entries", "base_version")
MONEY_COLUMNS = {"initial_balance"} | {f"{m}.{k}" for m in ("ok_sum", "maybe_sum") for k in KINDS}
# Rarer per-wallet facts (replays, read-your-writes polls), kept only for the wallets that have
# them: (name, value when absent); money in cents.
EXTRAS = (
    ("replays", 0),
    ("replay_mismatches", 0),
    # replays whose answer showed a new version (applied a second time), and what those second
    # applications did to this wallet's balance (a replayed transfer books both wallets)
    ("replays_applied_again", 0),
    ("again_sum", 0),
    # replays of an acknowledged operation refused for funds: executed again, not answered from
    # storage (which would repeat the first answer)
    ("replays_refused_again", 0),
    # replays sent with no answer yet (cut short by the stop, or no answer): executed again or
    # not, unknown; what they would move this wallet by, in and out
    ("replays_in_doubt", 0),
    ("replay_doubt_in", 0),
    ("replay_doubt_out", 0),
    ("replay_difference", ""),  # the last replay answered differently: what differed
    # read-your-writes: per endpoint ("read model", "ledger") the acknowledged writes it was
    # polled for, those it never showed within --visibility-timeout, and the last such answer
    ("reads_checked", None),
    ("reads_unseen", None),
    ("unseen_answer", None),
)
MONEY_EXTRAS = {"again_sum", "replay_doubt_in", "replay_doubt_out"}
EXTRA_DEFAULTS = dict(EXTRAS)
MAPS = ("reads_checked", "reads_unseen", "unseen_answer")
PART_WALLETS = 20_000  # wallets per message part: a few ms to build, so heartbeats keep flowing


class _Extra:
    """One wallet's rarer facts (EXTRAS)."""

    __slots__ = tuple(name for name, _ in EXTRAS)

    def __init__(self) -> None:
        for name, default in EXTRAS:
            setattr(self, name, {} if name in MAPS else default)

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name, _ in EXTRAS)


class WalletTally:
    """Everything the run did to one wallet, summed: a view of its row in a RunRecord. Built
    alone (`WalletTally(initial_balance=..., ok_sum=...)`) it has a one-wallet record of its own.
    Maps it returns (ok_sum, reads_checked...) are copies: write through the record's methods."""

    __slots__ = ("_record", "_row")

    def __init__(self, *, _record: RunRecord | None = None, _row: int = 0, **values: Any) -> None:
        if _record is None:
            _record = RunRecord("")
            _row = _record._row("")
        self._record, self._row = _record, _row
        for name, value in values.items():
            setattr(self, name, value)

    def _column(self, name: str) -> int:
        return self._record._columns[name][self._row]

    def _set_column(self, name: str, value: int) -> None:
        self._record._columns[name][self._row] = value

    def _extra(self) -> _Extra | None:
        return self._record._extras.get(self._row)

    @property
    def created(self) -> str:
        return CREATED_NAME[self._column("created")]

    @created.setter
    def created(self, outcome: str) -> None:
        self._set_column("created", CREATED_CODE[outcome])

    @property
    def initial_balance(self) -> Decimal:
        return money(self._column("initial_balance"))

    @initial_balance.setter
    def initial_balance(self, value: object) -> None:
        self._set_column("initial_balance", cents(value))

    @property
    def indeterminate(self) -> int:
        return sum(self._column(f"maybe_count.{kind}") for kind in KINDS)

    def expected_balance(self) -> tuple[Decimal, Decimal]:
        """The (lowest, highest) balance the acknowledged and indeterminate operations allow."""
        low, high = self._record._expected_cents(self._row)
        return money(low), money(high)

    def expected_entries(self) -> tuple[int, int]:
        """The (fewest, most) ledger entries: one per balance-changing event, the initial
        balance included once (or, for an adopted wallet, the entries it had already)."""
        return self._record._expected_entries(self._row)

    def values(self) -> tuple:
        """Every column and extra of this wallet, in order: what equality compares."""
        columns = tuple(self._record._columns[name][self._row] for name, _, _ in COLUMNS)
        extra = self._extra()
        return columns + (extra.values() if extra else _Extra().values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WalletTally) and self.values() == other.values()

    def __repr__(self) -> str:
        shown = {n: getattr(self, n) for n in ("created", "initial_balance", "ok_sum", "maybe_sum")}
        return f"WalletTally({', '.join(f'{k}={v!r}' for k, v in shown.items())}, ...)"


def _counter_property(name: str) -> property:
    return property(
        lambda self: self._column(name), lambda self, value: self._set_column(name, int(value))
    )


def _map_property(prefix: str, is_money: bool) -> property:
    convert = money if is_money else int

    def read(self: WalletTally) -> dict[str, Any]:
        return {kind: convert(self._column(f"{prefix}.{kind}")) for kind in KINDS}

    def write(self: WalletTally, value: Mapping[str, Any]) -> None:
        for kind in KINDS:
            amount = value.get(kind, 0)
            self._set_column(f"{prefix}.{kind}", cents(amount) if is_money else int(amount))

    return property(read, write)


def _extra_property(name: str) -> property:
    default = EXTRA_DEFAULTS[name]

    def read(self: WalletTally) -> Any:
        extra = self._extra()
        if extra is None:
            return {} if name in MAPS else (ZERO if name in MONEY_EXTRAS else default)
        value = getattr(extra, name)
        if name in MAPS:
            return dict(value)
        return money(value) if name in MONEY_EXTRAS else value

    def write(self: WalletTally, value: Any) -> None:
        extra = self._record._extra(self._row)
        if name in MAPS:
            value = dict(value)
        elif name in MONEY_EXTRAS:
            value = cents(value)
        setattr(extra, name, value)

    return property(read, write)


for _name in ("rejected", "refused_for_funds", "base_entries", "base_version"):
    setattr(WalletTally, _name, _counter_property(_name))
for _prefix, _is_money in (
    ("ok_sum", True),
    ("ok_count", False),
    ("maybe_sum", True),
    ("maybe_count", False),
):
    setattr(WalletTally, _prefix, _map_property(_prefix, _is_money))
for _name, _ in EXTRAS:
    setattr(WalletTally, _name, _extra_property(_name))


class WalletTallies(Mapping):
    """The record's wallets as a read-only mapping of wallet id to WalletTally view."""

    def __init__(self, record: RunRecord) -> None:
        self._record = record

    def __getitem__(self, wallet_id: str) -> WalletTally:
        return WalletTally(_record=self._record, _row=self._record._index[wallet_id])

    def __contains__(self, wallet_id: object) -> bool:
        return wallet_id in self._record._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._record._ids)

    def __len__(self) -> int:
        return len(self._record._ids)

    def items(self) -> Iterator[tuple[str, WalletTally]]:  # type: ignore[override]
        record = self._record
        return ((w, WalletTally(_record=record, _row=n)) for n, w in enumerate(record._ids))

    def values(self) -> Iterator[WalletTally]:  # type: ignore[override]
        record = self._record
        return (WalletTally(_record=record, _row=n) for n in range(len(record._ids)))


class RunRecord:
    """Per-wallet tallies of one run, plus the run's identity."""

    def __init__(
        self,
        run_id: str,
        creations_attempted: int = 0,
        operations: dict[str, int] | None = None,
        unverified: set[str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.creations_attempted = creations_attempted
        self.operations = {**dict.fromkeys(OUTCOMES, 0), **(operations or {})}
        # wallets whose client-side record is incomplete (e.g. their worker died): checked only
        # by the database's own invariants
        self.unverified: set[str] = set(unverified or ())
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._columns: dict[str, array] = {name: array(code) for name, code, _ in COLUMNS}
        self._extras: dict[int, _Extra] = {}
        self._bind()

    def _bind(self) -> None:
        """Direct references to the columns the hot path touches."""
        c = self._columns
        self._ok_sum = [c[f"ok_sum.{k}"] for k in KINDS]
        self._ok_count = [c[f"ok_count.{k}"] for k in KINDS]
        self._maybe_sum = [c[f"maybe_sum.{k}"] for k in KINDS]
        self._maybe_count = [c[f"maybe_count.{k}"] for k in KINDS]
        self._rejected, self._refused = c["rejected"], c["refused_for_funds"]
        self._appenders = [(c[name].append, default) for name, _, default in COLUMNS]

    @property
    def wallets(self) -> WalletTallies:
        return WalletTallies(self)

    def _row(self, wallet_id: str) -> int:
        row = self._index.get(wallet_id)
        if row is None:
            row = self._index[wallet_id] = len(self._ids)
            self._ids.append(wallet_id)
            for append, default in self._appenders:
                append(default)
        return row

    def _extra(self, row: int) -> _Extra:
        extra = self._extras.get(row)
        if extra is None:
            extra = self._extras[row] = _Extra()
        return extra

    def tally(self, wallet_id: str) -> WalletTally:
        return WalletTally(_record=self, _row=self._row(wallet_id))

    def wallet_created(self, wallet_id: str, outcome: str, initial_balance: Decimal) -> None:
        self.creations_attempted += 1
        row = self._row(wallet_id)
        self._columns["created"][row] = CREATED_CODE[outcome]
        self._columns["initial_balance"][row] = cents(initial_balance)

    def wallet_adopted(self, wallet_id: str, balance: Decimal, version: int, entries: int) -> None:
        """A wallet of an earlier run taken as it stands: its balance, version and ledger
        entries when this run began are the starting point the check compares with."""
        row = self._row(wallet_id)
        columns = self._columns
        columns["created"][row] = CREATED_CODE[OK]
        columns["initial_balance"][row] = cents(balance)
        columns["base_version"][row] = version
        columns["base_entries"][row] = entries

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
        amount = cents(amount)
        self.operations[outcome] += 1
        for leg, leg_wallet in _legs(kind, wallet_id, to_wallet_id):
            row = self._row(leg_wallet)
            if outcome == OK:
                self._ok_sum[leg][row] += amount
                self._ok_count[leg][row] += 1
            elif outcome == INDETERMINATE:
                self._maybe_sum[leg][row] += amount
                self._maybe_count[leg][row] += 1
        if outcome == REJECTED:
            row = self._row(wallet_id)
            self._rejected[row] += 1
            self._refused[row] += int(refused_for_funds)

    def operation_sent(
        self, kind: str, wallet_id: str, amount: Decimal, to_wallet_id: str | None = None
    ) -> None:
        """Book an operation as indeterminate before it is sent: if the run stops while it is in
        flight (Locust kills users mid-request), it stays so, which is the truth."""
        self.sent_cents(kind, wallet_id, cents(amount), to_wallet_id)

    def sent_cents(
        self, kind: str, wallet_id: str, amount: int, to_wallet_id: str | None = None
    ) -> None:
        """operation_sent with the amount in cents. (What `operation` does for an indeterminate
        one, without its branches or lists: every request of a run comes through here.)"""
        self.operations[INDETERMINATE] += 1
        maybe_sum, maybe_count = self._maybe_sum, self._maybe_count
        transfer = kind == "transfer"
        leg = _TRANSFER_LEGS[0] if transfer else KIND_INDEX[kind]
        row = self._row(wallet_id)
        maybe_sum[leg][row] += amount
        maybe_count[leg][row] += 1
        if transfer:
            row = self._row(to_wallet_id)
            maybe_sum[_TRANSFER_LEGS[1]][row] += amount
            maybe_count[_TRANSFER_LEGS[1]][row] += 1

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
        """Replace an operation_sent booking with the outcome its answer gave."""
        self.answered_cents(
            kind, outcome, wallet_id, cents(amount), to_wallet_id, refused_for_funds
        )

    def answered_cents(
        self,
        kind: str,
        outcome: str,
        wallet_id: str,
        amount: int,
        to_wallet_id: str | None = None,
        refused_for_funds: bool = False,
    ) -> None:
        """operation_answered with the amount in cents: in one pass over the legs, without
        lists, since every request of a run comes through here."""
        if outcome == INDETERMINATE:
            return  # it stays booked as operation_sent left it
        operations = self.operations
        operations[INDETERMINATE] -= 1
        operations[outcome] += 1
        maybe_sum, maybe_count = self._maybe_sum, self._maybe_count
        transfer = kind == "transfer"
        leg = _TRANSFER_LEGS[0] if transfer else KIND_INDEX[kind]
        row = self._row(wallet_id)
        maybe_sum[leg][row] -= amount
        maybe_count[leg][row] -= 1
        if transfer:
            to_leg, to_row = _TRANSFER_LEGS[1], self._row(to_wallet_id)
            maybe_sum[to_leg][to_row] -= amount
            maybe_count[to_leg][to_row] -= 1
        if outcome == OK:
            self._ok_sum[leg][row] += amount
            self._ok_count[leg][row] += 1
            if transfer:
                self._ok_sum[to_leg][to_row] += amount
                self._ok_count[to_leg][to_row] += 1
        else:  # REJECTED
            self._rejected[row] += 1
            self._refused[row] += int(refused_for_funds)

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
        extra = self._extra(self._row(wallet_id))
        extra.replays += 1
        extra.replay_mismatches += int(not matched)
        extra.replays_refused_again += int(refused_again)
        if difference:
            extra.replay_difference = difference
        for leg_wallet, signed in applied_again:
            leg = self._extra(self._row(leg_wallet))
            leg.replays_applied_again += 1
            leg.again_sum += cents(signed)

    def replay_sent(self, legs: Iterable[tuple[str, Decimal]], sign: int = 1) -> None:
        """A replay about to be sent: until its answer comes it may have been executed again.
        legs: (wallet, signed amount) it would move; replay_answered takes them back."""
        for leg_wallet, signed in legs:
            leg = self._extra(self._row(leg_wallet))
            leg.replays_in_doubt += sign
            amount = cents(signed)
            if amount > 0:
                leg.replay_doubt_in += sign * amount
            else:
                leg.replay_doubt_out -= sign * amount

    def replay_answered(self, legs: Iterable[tuple[str, Decimal]]) -> None:
        self.replay_sent(legs, sign=-1)

    def read_checked(self, wallet_id: str, endpoint: str, shown: bool, answer: str = "") -> None:
        """A read-your-writes poll of one acknowledged write ended: shown within the visibility
        timeout, or not (answer: the last one, e.g. '404')."""
        extra = self._extra(self._row(wallet_id))
        extra.reads_checked[endpoint] = extra.reads_checked.get(endpoint, 0) + 1
        if not shown:
            extra.reads_unseen[endpoint] = extra.reads_unseen.get(endpoint, 0) + 1
            extra.unseen_answer[endpoint] = answer

    def read_counts(self, endpoint: str) -> tuple[int, int]:
        """(writes polled for, writes never shown) on one endpoint, over the run."""
        extras = self._extras.values()
        return (
            sum(e.reads_checked.get(endpoint, 0) for e in extras),
            sum(e.reads_unseen.get(endpoint, 0) for e in extras),
        )

    # --- what the record expects of one wallet (row) -----------------------------------------

    def expectations_of(
        self, wallet_ids: list[str]
    ) -> list[tuple[Decimal, Decimal, int, int, bool]]:
        """Each wallet's (lowest, highest) expected balance, (fewest, most) ledger entries, and
        whether its replays and reads all matched (no replay answered differently, no read
        missed a write), as its WalletTally says, computed over the record's columns (numpy)
        for all of them at once: the checker's shortcut, without a view per wallet."""
        low, high, fewest, most, matched = self._expectation_columns(wallet_ids)
        made: dict[int, Decimal] = {}  # each distinct amount made a Decimal once

        def as_money(value: int) -> Decimal:
            found = made.get(value)
            if found is None:
                found = made[value] = money(value)
            return found

        return list(
            zip(
                map(as_money, low.tolist()),
                map(as_money, high.tolist()),
                fewest.tolist(),
                most.tolist(),
                matched.tolist(),
                strict=True,
            )
        )

    def expected_cents_of(self, wallet_ids: list[str]) -> tuple[list[int], list[int]]:
        """Each wallet's expected balance (WalletTally.expected_balance) in cents, (lowest,
        highest), in order: for sums over many wallets."""
        low, high, *_ = self._expectation_columns(wallet_ids)
        return low.tolist(), high.tolist()

    def _expectation_columns(self, wallet_ids: list[str]) -> tuple:
        """_expected_cents, _expected_entries and the replays' and reads' match of these
        wallets, as numpy columns in their order."""
        import numpy as np  # the check's dependency, not the load generator's

        rows = np.fromiter((self._index[w] for w in wallet_ids), np.int64, len(wallet_ids))
        column = lambda values: np.frombuffer(values, values.typecode)[rows].astype(np.int64)  # noqa: E731
        ok = [column(c) for c in self._ok_sum]
        maybe = [column(c) for c in self._maybe_sum]
        initial = column(self._columns["initial_balance"])
        base = initial + ok[0] + ok[3] - ok[1] - ok[2]  # as _expected_cents
        low, high = base - maybe[1] - maybe[2], base + maybe[0] + maybe[3]
        start = column(self._columns["base_entries"])  # as _expected_entries
        start = np.where(start < 0, (initial > 0).astype(np.int64), start)
        fewest = start + sum(column(c) for c in self._ok_count)
        most = fewest + sum(column(c) for c in self._maybe_count)
        matched = np.ones(len(rows), bool)
        if self._extras:
            where = {row: n for n, row in enumerate(rows.tolist())}
            for row, extra in self._extras.items():
                if row in where and (extra.replay_mismatches or any(extra.reads_unseen.values())):
                    matched[where[row]] = False
        return low, high, fewest, most, matched

    def _expected_cents(self, row: int) -> tuple[int, int]:
        c, n = self._columns, row
        ok, maybe = self._ok_sum, self._maybe_sum
        base = c["initial_balance"][n] + ok[0][n] + ok[3][n] - ok[1][n] - ok[2][n]
        return base - maybe[1][n] - maybe[2][n], base + maybe[0][n] + maybe[3][n]

    def _expected_entries(self, row: int) -> tuple[int, int]:
        start = self._columns["base_entries"][row]
        if start < 0:  # created in this run
            start = 1 if self._columns["initial_balance"][row] > 0 else 0
        base = start + sum(count[row] for count in self._ok_count)
        return base, base + sum(count[row] for count in self._maybe_count)

    # --- summaries ---------------------------------------------------------------------------

    def creation_counts(self) -> dict[str, int]:
        """Creations by outcome, over the wallets whose creation this record saw."""
        created, base_version = self._columns["created"], self._columns["base_version"]
        found = [0, 0, 0]
        for code, version in zip(created, base_version, strict=True):
            if version < 0:  # adopted wallets (--adopt-run) were not created by this run
                found[code] += 1
        for wallet_id in self.unverified:
            row = self._index.get(wallet_id)
            if row is not None and base_version[row] < 0:
                found[created[row]] -= 1
        return {name: found[code] for name, code in CREATED_CODE.items()}

    def refused_for_funds(self) -> int:
        return sum(self._refused)

    def replay_counts(self) -> tuple[int, int]:
        extras = self._extras.values()
        return (sum(e.replays for e in extras), sum(e.replay_mismatches for e in extras))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunRecord):
            return NotImplemented
        return self._header() == other._header() and self._rows() == other._rows()

    def _header(self) -> tuple:
        return (self.run_id, self.creations_attempted, self.operations, self.unverified)

    def _rows(self) -> dict[str, tuple]:
        return {w: t.values() for w, t in self.wallets.items()}

    def __repr__(self) -> str:
        return f"RunRecord({self.run_id!r}, {len(self._ids)} wallets, {self.operations})"

    # --- the saved record: readable JSON, one object per wallet ------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "creations_attempted": self.creations_attempted,
            "operations": dict(self.operations),
            "unverified": sorted(self.unverified),
            "wallets": {w: self._row_to_dict(n) for n, w in enumerate(self._ids)},
        }

    def _row_to_dict(self, row: int) -> dict[str, Any]:
        c = self._columns
        data: dict[str, Any] = {
            "created": CREATED_NAME[c["created"][row]],
            "initial_balance": money_text(c["initial_balance"][row]),
        }
        for prefix in ("ok_sum", "ok_count", "maybe_sum", "maybe_count"):
            shown = money_text if prefix.endswith("sum") else int
            data[prefix] = {
                k: shown(c[f"{prefix}.{k}"][row]) for k in KINDS if c[f"{prefix}.{k}"][row]
            }
        data["rejected"] = c["rejected"][row]
        data["refused_for_funds"] = c["refused_for_funds"][row]
        for name in ("base_entries", "base_version"):  # left out unless adopted: as before
            if c[name][row] != -1:
                data[name] = c[name][row]
        extra = self._extras.get(row)
        data["replays"] = extra.replays if extra else 0
        data["replay_mismatches"] = extra.replay_mismatches if extra else 0
        if extra:  # most wallets have none of the rest: keep the saved record small
            for name, default in EXTRAS[2:]:
                value = getattr(extra, name)
                if value and value != default:
                    data[name] = money_text(value) if name in MONEY_EXTRAS else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        record = cls(
            data["run_id"],
            data.get("creations_attempted", 0),
            data.get("operations", {}),
            set(data.get("unverified", [])),
        )
        c = record._columns
        for wallet_id, values in data.get("wallets", {}).items():
            row = record._row(wallet_id)
            c["created"][row] = CREATED_CODE[values.get("created", OK)]
            c["initial_balance"][row] = cents(values.get("initial_balance", 0))
            for prefix in ("ok_sum", "ok_count", "maybe_sum", "maybe_count"):
                read = cents if prefix.endswith("sum") else int
                for kind, value in values.get(prefix, {}).items():
                    c[f"{prefix}.{kind}"][row] = read(value)
            for name in ("rejected", "refused_for_funds", "base_entries", "base_version"):
                if name in values:
                    c[name][row] = int(values[name])
            if any(values.get(name) for name, _ in EXTRAS):
                extra = record._extra(row)
                for name, _ in EXTRAS:
                    if name in values:
                        value = values[name]
                        if name in MONEY_EXTRAS:
                            value = cents(value)
                        elif name in MAPS:
                            value = dict(value)
                        setattr(extra, name, value)
        return record

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls.from_dict(json.loads(path.read_text()))

    # --- messages and merging (distributed runs) ---------------------------------------------

    def header(self) -> dict[str, Any]:
        """What a record message carries besides its wallets."""
        return {
            "run_id": self.run_id,
            "creations_attempted": self.creations_attempted,
            "operations": dict(self.operations),
            "unverified": sorted(self.unverified),
        }

    @classmethod
    def from_header(cls, data: dict[str, Any], wallets: RunRecord | None = None) -> RunRecord:
        """The record a message's header describes, with the wallets of its parts (assembled
        by absorb; taken over, not copied)."""
        record = cls(
            data["run_id"],
            data.get("creations_attempted", 0),
            data.get("operations", {}),
            set(data.get("unverified", [])),
        )
        if wallets is not None:
            record._ids, record._index = wallets._ids, wallets._index
            record._columns, record._extras = wallets._columns, wallets._extras
            record._bind()
        return record

    def message_parts(self, size: int = PART_WALLETS) -> Iterator[dict[str, Any]]:
        """The wallets in parts of at most size rows: ids, each column's bytes, and the rows'
        extras; each part is cheap to build, so a sender can yield between them."""
        rows = sorted(self._extras)
        for start in range(0, len(self._ids), size):
            stop = min(start + size, len(self._ids))
            first, last = bisect_left(rows, start), bisect_left(rows, stop)
            extras = [[row - start, *self._extras[row].values()] for row in rows[first:last]]
            yield {
                "byteorder": sys.byteorder,
                "ids": self._ids[start:stop],
                "columns": self._part_columns(start, stop),
                "extras": extras,
            }

    def _part_columns(self, start: int, stop: int) -> dict[str, bytes]:
        """Each column's rows as bytes, but for columns that hold only their default there
        (no wallet adopted, nothing in doubt): most of them, at the end of a run."""
        columns = {}
        for name, _, default in COLUMNS:
            rows = self._columns[name][start:stop]
            if rows.count(default) != len(rows):
                columns[name] = rows.tobytes()
        return columns

    def absorb(self, part: dict[str, Any]) -> None:
        """Merge one message part's wallets into this record."""
        self.merge(RunRecord.of_part(part))

    @classmethod
    def joined(cls, parts: list[RunRecord]) -> RunRecord:
        """The wallets of all the parts (of_part) of one record, put back together: their rows
        end to end and the index built once, since one record's parts share no wallet."""
        record = cls("")
        for name, *_ in COLUMNS:
            column = record._columns[name]
            for part in parts:
                column.extend(part._columns[name])
        for part in parts:
            offset = len(record._ids)
            record._extras.update((offset + row, x) for row, x in part._extras.items())
            record._ids.extend(part._ids)
        record._index = dict(zip(record._ids, range(len(record._ids)), strict=True))
        if len(record._index) != len(record._ids):
            raise ValueError("record parts: a wallet in two parts of one record")
        record._bind()
        return record

    @classmethod
    def of_part(cls, part: dict[str, Any]) -> RunRecord:
        """One message part's wallets, unindexed: for merge or joined only."""
        record = cls("")
        ids = list(part["ids"])
        for name, code, default in COLUMNS:
            if name not in part["columns"]:
                record._columns[name] = array(code, [default]) * len(ids)
                continue
            column = array(code)
            column.frombytes(part["columns"][name])
            if part.get("byteorder", sys.byteorder) != sys.byteorder:
                column.byteswap()
            if len(column) != len(ids):
                raise ValueError(
                    f"record part: column {name} has {len(column)} rows, not {len(ids)}"
                )
            record._columns[name] = column
        record._ids = ids  # no index: merge reads a part by row, and a part is only merged
        for row, *values in part.get("extras", []):
            extra = record._extra(row)
            for (name, _), value in zip(EXTRAS, values, strict=True):
                setattr(extra, name, dict(value) if name in MAPS else value)
        record._bind()
        return record

    def merge(self, other: RunRecord) -> None:
        """Add other's operations to this record's; a wallet both have keeps the creation of the
        one that created it (the most that happened). Wallets new to this record are appended
        column by column."""
        self.creations_attempted += other.creations_attempted
        for outcome in OUTCOMES:
            self.operations[outcome] += other.operations[outcome]
        self.unverified |= other.unverified
        index, ids = self._index, self._ids
        if not ids and len(other._index) == len(other._ids):  # into an empty record: a copy
            self._ids = list(other._ids)
            self._index = dict(other._index)  # copied as a table, not rebuilt key by key
            self._columns = {name: other._columns[name][:] for name, _, _ in COLUMNS}
            self._extras = {row: _copy_extra(extra) for row, extra in other._extras.items()}
            self._bind()
            return
        # The usual case is another worker's shard, no wallet in common: index other's wallets
        # in one update, and see from the count whether one was already there (then rebuild the
        # overwritten index, which only --shared-hot-wallets makes happen, and go row by row).
        before, start = len(index), len(ids)
        index.update(zip(other._ids, range(start, start + len(other._ids)), strict=True))
        if len(index) == before + len(other._ids):
            for name, *_ in COLUMNS:
                self._columns[name].extend(other._columns[name])
            ids.extend(other._ids)
            for n, extra in other._extras.items():
                self._extras[start + n] = _copy_extra(extra)
            return
        index.clear()
        index.update(zip(ids, range(len(ids)), strict=True))
        shared = [(n, index[w]) for n, w in enumerate(other._ids) if w in index]
        start = len(ids)
        # the rows new to this record, as runs between the shared ones: copied slice by slice
        runs, begin = [], 0
        for n, _ in shared:
            if n > begin:
                runs.append((begin, n))
            begin = n + 1
        if begin < len(other._ids):
            runs.append((begin, len(other._ids)))
        for name, *_ in COLUMNS:
            column, theirs = self._columns[name], other._columns[name]
            for begin, end in runs:
                column.extend(theirs[begin:end])
        for begin, end in runs:
            ids.extend(other._ids[begin:end])
        index.update(zip(ids[start:], range(start, len(ids)), strict=True))
        for n, mine in shared:
            self._merge_row(mine, other, n)
        for n, extra in other._extras.items():
            row = index[other._ids[n]]
            if row >= start:  # a wallet new to this record: take its extras whole
                self._extras[row] = _copy_extra(extra)
            else:
                _merge_extra(self._extra(row), extra)

    def _merge_row(self, row: int, other: RunRecord, n: int) -> None:
        # Shared hot wallets are created by one worker and refused (409) to the others: the
        # merged creation is the most that happened. Its initial balance is the creator's:
        # without --seed each worker planned its own.
        mine, theirs = self._columns, other._columns
        if theirs["created"][n] > mine["created"][row]:
            for name in CREATOR_COLUMNS:
                mine[name][row] = theirs[name][n]
        for name, *_ in COLUMNS:
            if name not in CREATOR_COLUMNS:
                mine[name][row] += theirs[name][n]


def _copy_extra(extra: _Extra) -> _Extra:
    copy = _Extra()
    for name, _ in EXTRAS:
        value = getattr(extra, name)
        setattr(copy, name, dict(value) if name in MAPS else value)
    return copy


def _merge_extra(mine: _Extra, other: _Extra) -> None:
    for name, _ in EXTRAS:
        if name in MAPS or name == "replay_difference":
            continue
        setattr(mine, name, getattr(mine, name) + getattr(other, name))
    for name in ("reads_checked", "reads_unseen"):
        counts = getattr(mine, name)
        for what, count in getattr(other, name).items():
            counts[what] = counts.get(what, 0) + count
    mine.unseen_answer.update(other.unseen_answer)
    mine.replay_difference = mine.replay_difference or other.replay_difference


_TRANSFER_LEGS = (KIND_INDEX["transfer_out"], KIND_INDEX["transfer_in"])


def _legs(kind: str, wallet_id: str, to_wallet_id: str | None) -> list[tuple[int, str | None]]:
    """The per-wallet kinds (as column indexes) an operation books: a transfer is out of one
    wallet, into another."""
    if kind == "transfer":
        return [(_TRANSFER_LEGS[0], wallet_id), (_TRANSFER_LEGS[1], to_wallet_id)]
    return [(KIND_INDEX[kind], wallet_id)]
