"""The acknowledged answers of a run, compactly: one 25-byte record per wallet snapshot the service
returned in a 2xx answer (wallet, version, balance after, kind, amount), so the check can name the
first event version where the ledger or the read model departs from what the service said.

A recorder (`AckHistory`) appends to a bytearray on the hot path and, for long runs, spills it to
a file under the run's report folder. A run's history (`RunHistory`) is one or more segments, each
with its own wallet table: a worker's segment travels to the master in chunks and is kept as is,
so merging costs the bytes' copy and nothing per record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# wallet index (u32), event version (i32), balance after in hundredths (i64), amount in
# hundredths (i64), kind (u8): 25 bytes per snapshot, about 30 per operation (a transfer has two)
RECORD = struct.Struct("<IiqqB")
RECORD_SIZE = RECORD.size
KIND_CODES = {
    "create": 0,
    "credit": 1,
    "debit": 2,
    "transfer_out": 3,
    "transfer_in": 4,
    "replay": 5,  # a replay's answer that showed a new version: applied again
}
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}
SPILL_BYTES = 4 << 20  # spill to the report folder beyond this (about 160,000 snapshots)
CHUNK_BYTES = 1 << 20  # a worker sends its history to the master in chunks of this size
FILE_MAGIC = b"WSHIST1\n"
FILE_NAME = "history.bin"
_SEGMENT_HEAD = struct.Struct("<IQ")  # wallet table length, data length


def cents(value: Any) -> int | None:
    """A JSON money value (number or numeric string, as TypeORM returns) in hundredths."""
    if type(value) is int:
        return value * 100
    if type(value) is float:
        return round(value * 100)
    try:
        return int((Decimal(str(value)) * 100).to_integral_value())
    except (ArithmeticError, ValueError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One acknowledged snapshot, decoded: what the service said a wallet held at a version."""

    version: int
    balance: Decimal
    kind: str
    amount: Decimal


@dataclass
class Segment:
    """A wallet table and the records that index into it: in memory, or in a file."""

    wallets: list[str] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    spill_path: Path | None = None  # records written out before `data`
    spilled: int = 0  # bytes in spill_path

    @property
    def records(self) -> int:
        return (self.spilled + len(self.data)) // RECORD_SIZE

    def blocks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The records' bytes in order, a whole number of records per block."""
        size -= size % RECORD_SIZE
        if self.spill_path is not None and self.spilled:
            with self.spill_path.open("rb") as spilled:
                left = self.spilled
                while left > 0:
                    block = spilled.read(min(size, left))
                    if not block:
                        break
                    left -= len(block)
                    yield block
        view = memoryview(self.data)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])

    def append(self, block: bytes) -> None:
        self.data += block


class AckHistory:
    """The recorder of one process: `add` is on the hot path (a dict lookup, a pack, an
    append)."""

    def __init__(self, spill_path: Path | None = None, spill_bytes: int = SPILL_BYTES) -> None:
        self.segment = Segment(spill_path=spill_path)
        self._index: dict[str, int] = {}
        self._spill_bytes = spill_bytes
        self._pack = RECORD.pack

    def add(self, wallet_id: str, version: Any, balance: Any, kind: int, amount: int) -> None:
        """One snapshot of an acknowledged answer; kind is a KIND_CODES value, amount in
        hundredths. Snapshots without an integer version or a money balance are not kept."""
        if type(version) is not int:
            return
        balance = balance * 100 if type(balance) is int else cents(balance)
        if balance is None:
            return
        index = self._index.get(wallet_id)
        if index is None:
            index = self._index[wallet_id] = len(self.segment.wallets)
            self.segment.wallets.append(wallet_id)
        data = self.segment.data
        data += self._pack(index, version, balance, amount, kind)
        if len(data) >= self._spill_bytes and self.segment.spill_path is not None:
            self._spill()

    def _spill(self) -> None:
        segment = self.segment
        try:
            segment.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with segment.spill_path.open("ab") as out:
                out.write(segment.data)
        except OSError as error:
            log.warning(
                "history stays in memory: cannot spill to %s: %s", segment.spill_path, error
            )
            segment.spill_path = None
            return
        segment.spilled += len(segment.data)
        segment.data = bytearray()

    def __len__(self) -> int:
        return self.segment.records

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[dict[str, Any]]:
        """The segment as messages for the master, the wallet table with the first."""
        blocks = list(self.segment.blocks(size)) or [b""]
        for number, block in enumerate(blocks):
            # the whole table with the first block: every record's index is below its length
            table = self.segment.wallets if number == 0 else []
            yield {"wallets": table, "data": block, "last": number == len(blocks) - 1}

    def discard(self) -> None:
        """Remove the spill file (after the history was saved or sent)."""
        path = self.segment.spill_path
        if path is not None and self.segment.spilled:
            with contextlib.suppress(OSError):
                path.unlink()


@dataclass
class RunHistory:
    """A run's acknowledged snapshots: the local recorder's segment, or the workers' segments on
    the master."""

    segments: list[Segment] = field(default_factory=list)
    _senders: dict[Any, Segment] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, *recorders: AckHistory) -> RunHistory:
        return cls([r.segment for r in recorders])

    def receive(self, sender: Any, chunk: dict[str, Any]) -> None:
        """Append one chunk sent by AckHistory.chunks to the segment of its sender."""
        segment = self._senders.get(sender)
        if segment is None:
            segment = self._senders[sender] = Segment()
            self.segments.append(segment)
        segment.wallets.extend(chunk.get("wallets") or [])
        segment.append(chunk.get("data") or b"")

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    def __bool__(self) -> bool:
        return self.records > 0

    def columns(self) -> tuple[list[str], list[int], list[int], list[int], list[int]]:
        """For the SQL side: the wallet table (one entry per segment's wallet, duplicates
        allowed) and per record its row in it, version, balance in hundredths and kind code."""
        table: list[str] = []
        index: list[int] = []
        versions: list[int] = []
        balances: list[int] = []
        kinds: list[int] = []
        for segment in self.segments:
            base = len(table)
            table.extend(segment.wallets)
            for block in segment.blocks():
                for wallet, version, balance, _amount, kind in RECORD.iter_unpack(block):
                    index.append(base + wallet)
                    versions.append(version)
                    balances.append(balance)
                    kinds.append(kind)
        return table, index, versions, balances, kinds

    def of_wallets(self, wallet_ids: Iterable[str]) -> dict[str, list[Snapshot]]:
        """The snapshots of some wallets, in version order (for the check's first divergence)."""
        wanted = set(wallet_ids)
        found: dict[str, list[Snapshot]] = {}
        hundred = Decimal(100)
        for segment in self.segments:
            local = {i for i, w in enumerate(segment.wallets) if w in wanted}
            if not local:
                continue
            for block in segment.blocks():
                for wallet, version, balance, amount, kind in RECORD.iter_unpack(block):
                    if wallet in local:
                        found.setdefault(segment.wallets[wallet], []).append(
                            Snapshot(
                                version,
                                Decimal(balance) / hundred,
                                KIND_NAMES.get(kind, "?"),
                                Decimal(amount) / hundred,
                            )
                        )
        for snapshots in found.values():
            snapshots.sort(key=lambda s: s.version)
        return found

    # --- the saved file ------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """One file: a magic line, then per segment its wallet table (JSON) and its records."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            out.write(FILE_MAGIC)
            for segment in self.segments:
                table = json.dumps(segment.wallets).encode()
                out.write(_SEGMENT_HEAD.pack(len(table), segment.records * RECORD_SIZE))
                out.write(table)
                for block in segment.blocks():
                    out.write(block)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> RunHistory:
        """A saved history; ValueError if the file is not one."""
        history = cls()
        with path.open("rb") as source:
            if source.read(len(FILE_MAGIC)) != FILE_MAGIC:
                raise ValueError(f"{path} is not a wallet suite history")
            while head := source.read(_SEGMENT_HEAD.size):
                if len(head) != _SEGMENT_HEAD.size:
                    raise ValueError(f"{path} is truncated")
                table_len, data_len = _SEGMENT_HEAD.unpack(head)
                wallets = json.loads(source.read(table_len))
                data = source.read(data_len)
                if len(data) != data_len or data_len % RECORD_SIZE:
                    raise ValueError(f"{path} is truncated")
                history.segments.append(Segment(wallets=wallets, data=bytearray(data)))
        return history
