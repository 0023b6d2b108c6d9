"""The two asynchronous consumers of the outbox, `read-model-projector` and `ledger-projector`.

Each claims a batch of its pending events with FOR UPDATE SKIP LOCKED, applies it, records
`outbox_consumer_processing` and its checkpoint, all in one transaction. A per-consumer advisory
lock keeps one active instance per consumer, so a wallet's events are projected in version order
even when a second projector process runs beside the service's own.

Under fault checkpoint-by-id they read the outbox by id above their checkpoint instead, the naive
design: an event whose transaction commits after one with a higher id is never seen. Under fault
third-consumer a third consumer, `kafka-publisher`, only records that it processed its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from .commands import NOTIFY_CHANNEL, PUBLISHER, dumps
from .faults import Faults
from .outage import database_unavailable

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # fallback when a notification is missed (e.g. the listener reconnecting)
RETRY_SECONDS = 0.05  # the first pause after a failed batch, doubled up to RETRY_MAX_SECONDS
RETRY_MAX_SECONDS = 1.0
LISTENER_CHECK_SECONDS = 0.2  # how soon a dropped listening connection is noticed
BATCH_SIZE = 500

_CLAIM = """
WITH claimed AS (
    DELETE FROM outbox_pending AS p
     USING (SELECT outbox_event_id FROM outbox_pending
             WHERE consumer_name = $1
             ORDER BY outbox_event_id LIMIT $2
             FOR UPDATE SKIP LOCKED) AS c
     WHERE p.consumer_name = $1 AND p.outbox_event_id = c.outbox_event_id
    RETURNING p.outbox_event_id
)
SELECT o.id, o.aggregate_id, o.event_type, o.event_version, o.payload::text AS payload,
       o.metadata::text AS metadata
  FROM outbox AS o JOIN claimed AS c ON o.id = c.outbox_event_id
 ORDER BY o.id
"""

# Fault checkpoint-by-id: what a projector that trusts outbox ids to commit in order would read.
# Events already processed are left out only for a database the queue mode used before, whose
# checkpoint can be below ids it processed: re-reading them would wedge on the unique row.
_READ_BY_ID = """
SELECT o.id, o.aggregate_id, o.event_type, o.event_version, o.payload::text AS payload,
       o.metadata::text AS metadata
  FROM outbox AS o
 WHERE o.id > coalesce((SELECT last_processed_id FROM projector_checkpoints
                         WHERE projector_name = $1), 0)
   AND NOT EXISTS (SELECT 1 FROM outbox_consumer_processing AS p
                    WHERE p.outbox_event_id = o.id AND p.consumer_name = $1)
 ORDER BY o.id LIMIT $2
"""

# Under checkpoint-by-id the queue keeps meaning "not processed by this consumer": what it skipped.
_UNQUEUE = """
DELETE FROM outbox_pending WHERE consumer_name = $1 AND outbox_event_id = ANY($2::bigint[])
"""

_PROCESSED = """
INSERT INTO outbox_consumer_processing (outbox_event_id, consumer_name)
SELECT unnest($1::bigint[]), $2
"""

_RECORD = """
WITH processed AS (
    INSERT INTO outbox_consumer_processing (outbox_event_id, consumer_name)
    SELECT unnest($1::bigint[]), $2
)
INSERT INTO projector_checkpoints AS c
       (projector_name, aggregate_id, last_processed_version, last_processed_id,
        last_processed_at, updated_at)
VALUES ($2, $3, $4, $5, clock_timestamp(), clock_timestamp())
ON CONFLICT (projector_name) DO UPDATE
   SET aggregate_id = EXCLUDED.aggregate_id,
       last_processed_version = EXCLUDED.last_processed_version,
       last_processed_id = EXCLUDED.last_processed_id,
       last_processed_at = EXCLUDED.last_processed_at,
       updated_at = EXCLUDED.updated_at
"""


class Projector:
    """One outbox consumer. Subclasses say how a batch of events changes their tables."""

    name = ""
    checkpointed = True  # keeps a row in projector_checkpoints

    def __init__(self, pool: asyncpg.Pool, faults: Faults, batch_size: int = BATCH_SIZE) -> None:
        self._pool = pool
        self._faults = faults
        self._batch_size = batch_size
        self.stalled = False
        self.wake = asyncio.Event()

    async def drain_once(self) -> int:
        """Project one batch; the number of events it held (0: nothing to do, or not our turn)."""
        async with self._pool.acquire() as conn, conn.transaction():
            ours = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('projector:' || $1))", self.name
            )
            if not ours:
                return 0
            by_id = self.checkpointed and self._faults.on("checkpoint-by-id")
            rows = await conn.fetch(_READ_BY_ID if by_id else _CLAIM, self.name, self._batch_size)
            if not rows:
                return 0
            events = [
                {
                    "outbox_id": row["id"],
                    "wallet_id": row["aggregate_id"],
                    "type": row["event_type"],
                    "version": row["event_version"],
                    "payload": json.loads(row["payload"]),
                    "metadata": json.loads(row["metadata"] or "{}"),
                }
                for row in rows
            ]
            await self.apply(conn, events)
            ids = [e["outbox_id"] for e in events]
            if by_id:
                await conn.execute(_UNQUEUE, self.name, ids)
            if not self.checkpointed:
                await conn.execute(_PROCESSED, ids, self.name)
                return len(events)
            last = events[-1]  # the highest id: both reads are in id order
            await conn.execute(
                _RECORD,
                ids,
                self.name,
                last["wallet_id"],
                last["version"],
                last["outbox_id"],
            )
            return len(events)

    async def apply(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def run(self, stopping: asyncio.Event) -> None:
        """Drain, then sleep until notified (or the poll interval passes), until stopping is set.
        A batch that fails is retried with a growing pause (a notification cuts it short): its
        transaction rolled back, so its events are still queued and nothing was applied."""
        stall_fault = f"{self.name.removesuffix('-projector')}-stall"
        failures = 0
        while not stopping.is_set():
            if not self.stalled and self._faults.fires(stall_fault):
                self.stalled = True
                log.warning(
                    "%s: fault %s fired, consuming nothing from now on", self.name, stall_fault
                )
            self.wake.clear()
            processed = 0
            if not self.stalled:
                try:
                    processed = await self.drain_once()
                except Exception as error:
                    failures += 1
                    self._report_failure(error, failures)
                    await self._pause(min(RETRY_MAX_SECONDS, RETRY_SECONDS * 2 ** (failures - 1)))
                    continue
                if failures:
                    log.warning("%s: projecting again after %d failed batches", self.name, failures)
                    failures = 0
            if processed:
                continue
            await self._pause(POLL_SECONDS)

    def _report_failure(self, error: Exception, failures: int) -> None:
        if not database_unavailable(error):
            log.exception("%s: batch failed, will retry", self.name)
        elif failures == 1:
            log.warning(
                "%s: batch failed, retrying until the database answers: %s: %s",
                self.name,
                type(error).__name__,
                error,
            )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)


class ReadModelProjector(Projector):
    """Keeps `wallets_read_model` in step with the events: one row per wallet, its balance."""

    name = "read-model-projector"

    async def apply(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
        created = [
            e
            for e in events
            if e["type"] == "WalletCreated" and not self._faults.fires("read-model-unbuilt")
        ]
        # Without its row a wallet's later updates change nothing: the UPDATE below finds no row.
        if created:
            await conn.execute(
                "INSERT INTO wallets_read_model (id, owner_id, balance, created_at, updated_at)"
                " SELECT id, owner, 0, at, at FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
                " AS n(id, owner, at) ON CONFLICT (id) DO NOTHING",
                [e["wallet_id"] for e in created],
                [e["payload"]["ownerId"] for e in created],
                [_occurred_at(e) for e in created],
            )
        deltas: dict[str, Decimal] = defaultdict(Decimal)
        for event in events:
            sign = _SIGNS.get(event["type"])
            if sign is None:
                continue
            if self._faults.fires("read-model-lost-update"):
                # As if an unlocked read-modify-write had been overwritten by a concurrent one.
                log.debug("read-model-lost-update: dropping %s", event["metadata"].get("eventId"))
                continue
            deltas[event["wallet_id"]] += sign * Decimal(str(event["payload"]["amount"]))
        if deltas:
            await conn.execute(
                "UPDATE wallets_read_model AS r SET balance = r.balance + d.delta,"
                " updated_at = clock_timestamp()"
                " FROM unnest($1::text[], $2::numeric[]) AS d(id, delta) WHERE r.id = d.id",
                list(deltas),
                list(deltas.values()),
            )


class LedgerProjector(Projector):
    """Writes one `ledger_entries` row per balance-changing event, chaining balanceBefore to the
    wallet's previous balanceAfter in event-version order."""

    name = "ledger-projector"

    async def apply(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
        moves = []
        for event in events:
            if event["type"] in _SIGNS:
                moves.append(event)
            elif (
                event["type"] == "WalletCreated"
                and event["payload"].get("initialBalance")
                and self._faults.fires("ledger-initial-twice")
            ):
                # As the real projectors: the creation's initial balance is credited, and then
                # again by the "Initial balance" WalletCredited that follows it.
                moves.append(_initial_balance_credit(event))
        if not moves:
            return
        wallet_ids = sorted({e["wallet_id"] for e in moves})
        heads: dict[str, Decimal] = {
            row["id"]: row["balance_after"]
            for row in await conn.fetch(
                'SELECT w.id, last."balanceAfter" AS balance_after'
                " FROM unnest($1::varchar[]) AS w(id) CROSS JOIN LATERAL ("
                '   SELECT "balanceAfter" FROM ledger_entries WHERE "walletId" = w.id'
                "    ORDER BY (metadata ->> 'eventVersion')::integer DESC LIMIT 1) AS last",
                wallet_ids,
            )
        }
        entries: list[tuple[Any, ...]] = []
        for event in moves:
            if self._faults.fires("ledger-skip"):
                continue
            copies = 2 if self._faults.fires("ledger-duplicate") else 1
            for copy in range(copies):
                entries.append(self._entry(event, heads, copy))
        if entries:
            columns = list(zip(*entries, strict=True))
            await conn.execute(
                'INSERT INTO ledger_entries ("walletId", "transactionType", amount, "balanceBefore",'
                ' "balanceAfter", description, "referenceId", "relatedWalletId", metadata,'
                ' "createdAt")'
                " SELECT w, t::ledger_entries_transactiontype_enum, a, b, af, d, r, rel, m::jsonb,"
                " (clock_timestamp() AT TIME ZONE 'UTC')"
                " FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[],"
                " $6::text[], $7::text[], $8::text[], $9::text[]) AS e(w, t, a, b, af, d, r, rel, m)",
                *[list(column) for column in columns],
            )

    def _entry(self, event: dict[str, Any], heads: dict[str, Decimal], copy: int) -> tuple:
        wallet_id = event["wallet_id"]
        sign = _SIGNS[event["type"]]
        amount = Decimal(str(event["payload"]["amount"]))
        before = heads.get(wallet_id, Decimal(0))
        after = before + sign * amount
        heads[wallet_id] = after
        written_before = before
        if self._faults.fires("ledger-wrong-before"):
            written_before = before + 1
        metadata = event["metadata"]
        reference = metadata.get("eventId") or f"{wallet_id}:{event['version']}"
        return (
            wallet_id,
            "CREDIT" if sign > 0 else "DEBIT",
            amount,
            written_before,
            after,
            event["payload"].get("description"),
            reference if copy == 0 else f"{reference}:copy{copy}",
            metadata.get("relatedWalletId"),
            dumps(
                {
                    "eventId": metadata.get("eventId"),
                    "eventVersion": event["version"],
                    "outboxId": event["outbox_id"],
                    **({"transferId": metadata["transferId"]} if "transferId" in metadata else {}),
                }
            ),
        )


class KafkaPublisher(Projector):
    """The real service's third outbox consumer (fault third-consumer): it would publish to Kafka;
    here it only records its outbox_consumer_processing rows, and keeps no checkpoint."""

    name = PUBLISHER
    checkpointed = False

    async def apply(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
        pass


_SIGNS = {"WalletCredited": Decimal(1), "WalletDebited": Decimal(-1)}


def _initial_balance_credit(created: dict[str, Any]) -> dict[str, Any]:
    """A WalletCreated read as the credit of its initial balance (fault ledger-initial-twice)."""
    amount = created["payload"]["initialBalance"]
    return {
        **created,
        "type": "WalletCredited",
        "payload": {"amount": amount, "description": "Initial balance"},
    }


def _occurred_at(event: dict[str, Any]) -> datetime:
    text = event["metadata"].get("occurredAt")
    return datetime.fromisoformat(text) if text else datetime.now(UTC)


async def listen_for_outbox(dsn: str, projectors: list[Projector], stopping: asyncio.Event) -> None:
    """Wake the projectors on every outbox NOTIFY; reconnect (with a growing pause) whenever the
    listening connection drops or cannot be made, waking them once it listens again."""

    def wake_all(*_: Any) -> None:
        for projector in projectors:
            projector.wake.set()

    failures = 0
    while not stopping.is_set():
        conn = None
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            await conn.add_listener(NOTIFY_CHANNEL, wake_all)
            if failures:
                log.warning("outbox listener: listening again")
            failures = 0
            wake_all()  # whatever was written while nobody listened
            while not stopping.is_set() and not conn.is_closed():
                await _sleep_unless(stopping, LISTENER_CHECK_SECONDS)
        except Exception as error:
            if not database_unavailable(error):
                raise
            failures += 1
            if failures == 1:
                log.warning(
                    "outbox listener lost the database, polling meanwhile: %s: %s",
                    type(error).__name__,
                    error,
                )
        finally:
            if conn is not None:
                await _close(conn)
        if failures:
            await _sleep_unless(stopping, min(RETRY_MAX_SECONDS, RETRY_SECONDS * 2**failures))


async def _close(conn: asyncpg.Connection) -> None:
    """Close, or drop the socket if the server does not answer (it may be frozen)."""
    try:
        await conn.close(timeout=2)
    except Exception:
        conn.terminate()


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


def build_projectors(pool: asyncpg.Pool, faults: Faults, names: list[str]) -> list[Projector]:
    """The named projectors; under fault third-consumer the publisher too, wherever any runs."""
    known = {cls.name: cls for cls in (ReadModelProjector, LedgerProjector)}
    projectors = [known[name](pool, faults) for name in names]
    if projectors and faults.on("third-consumer"):
        projectors.append(KafkaPublisher(pool, faults))
    return projectors
