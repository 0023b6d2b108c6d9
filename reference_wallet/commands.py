"""The write side: each command is one PostgreSQL transaction that locks the wallets it touches,
appends events under an expected-version check, updates `wallets`, and writes the outbox."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from .faults import Faults

CONSUMERS = ("read-model-projector", "ledger-projector")
# The real service's third consumer of the outbox, queued for only under fault third-consumer.
PUBLISHER = "kafka-publisher"
NOTIFY_CHANNEL = "outbox_event"


class DomainError(Exception):
    """A definite refusal: nothing was written. Rendered in NestJS's error shape."""

    status = 400
    error = "Bad Request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "message": self.message, "error": self.error}


class BadRequest(DomainError):
    pass


class NotFound(DomainError):
    status = 404
    error = "Not Found"


class Conflict(DomainError):
    status = 409
    error = "Conflict"


class InternalServerError(DomainError):
    """NestJS's answer to an exception it does not know: no "error" field, a fixed message."""

    status = 500

    def __init__(self) -> None:
        super().__init__("Internal server error")

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "message": self.message}


@dataclass
class SlowCommits:
    """Hold a share of the command transactions open for `ms` after their outbox insert, so that
    transactions begun later commit first: outbox ids then become visible out of order, as they
    do under real load. Off when ms is 0. Draws from `random`, which is reseeded in a forked
    worker."""

    ms: float = 0.0
    share: float = 0.3

    async def hold(self) -> None:
        if self.ms > 0 and random.random() < self.share:
            await asyncio.sleep(self.ms / 1000)


def json_number(value: Decimal) -> int | float:
    """Money as a JSON number: an int when whole, else a float (amounts carry 2 decimals)."""
    return int(value) if value == value.to_integral_value() else float(value)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return json_number(value)
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class NewEvent:
    stream_id: str
    version: int
    event_type: str
    payload: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class KeyClaim:
    """An Idempotency-Key this request holds. `claimed_at` (the row's created_at) tells this claim
    from a later one that took the key over after this one went stale: only the claim that still
    holds the key may complete it, so a request that lost its key can have no effect."""

    key: str
    claimed_at: datetime


@dataclass
class StoredResponse:
    """What an earlier request with the same Idempotency-Key answered."""

    status: int
    body: Any


_APPEND = """
WITH new_events AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[])
        WITH ORDINALITY AS e(id, stream_id, version, event_type, payload, metadata, ord)
), appended AS (
    INSERT INTO events (id, stream_id, version, event_type, payload, metadata, created_at)
    SELECT id, stream_id, version, event_type, payload::jsonb, metadata::jsonb, $7 FROM new_events
), updated AS (
    UPDATE wallets AS w
       SET balance = u.balance, available_balance = u.balance - w.held_balance,
           version = u.version, updated_at = $8
      FROM unnest($9::text[], $10::numeric[], $11::int[]) AS u(id, balance, version)
     WHERE w.id = u.id
), published AS (
    INSERT INTO outbox (aggregate_id, event_type, event_version, payload, metadata)
    SELECT stream_id, event_type, version, payload::jsonb, metadata::jsonb
      FROM new_events WHERE $12 ORDER BY ord
    RETURNING id
), queued AS (
    INSERT INTO outbox_pending (consumer_name, outbox_event_id)
    SELECT c.name, p.id FROM published AS p CROSS JOIN unnest($13::text[]) AS c(name)
), remembered AS (
    UPDATE idempotency_keys SET status = 'completed', response = $14::jsonb
     WHERE key = $15 AND created_at = $16
    RETURNING 1
)
SELECT (SELECT count(*) FROM remembered) AS remembered, pg_notify('outbox_event', '')
"""

# A pending claim is stale, and a retry may take the key over instead of getting 409, when the
# request that claimed it is gone: the connection it claimed on (claimed_by, a backend pid) has
# ended, as it does when the service process dies or PostgreSQL restarts; or, whatever the
# connection, once it is older than $3 seconds (a command is one short transaction). A takeover is
# safe even when the judgement is wrong: only the claim that still holds the key may complete it.
_BEGIN_KEY = """
WITH claimed AS (
    INSERT INTO idempotency_keys (key, request_hash, status, claimed_by)
    VALUES ($1, $2, 'pending', pg_backend_pid())
    ON CONFLICT (key) DO NOTHING RETURNING created_at
)
SELECT (SELECT created_at FROM claimed) AS claimed_at, k.request_hash, k.status, k.response,
       k.created_at, k.expires_at < now() AS expired,
       CASE WHEN k.status IS DISTINCT FROM 'pending' THEN false
            WHEN k.created_at < now() - make_interval(secs => $3) THEN true
            WHEN k.claimed_by IS NULL THEN false
            ELSE NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a
                              WHERE a.pid = k.claimed_by AND a.backend_start <= k.created_at)
       END AS stale
  FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS k ON k.key = $1
"""

STALE_CLAIM_SECONDS = 30.0


class IdempotencyKeys:
    """Idempotency-Key handling on every POST: a key is claimed as pending before the command
    runs, completed in the command's own transaction, and answered from storage on a repeat."""

    def __init__(self, pool: asyncpg.Pool, faults: Faults) -> None:
        self._pool = pool
        self._faults = faults

    async def begin(self, key: str, request_hash: str) -> StoredResponse | KeyClaim:
        """Claim key for this request: a KeyClaim means go ahead, a StoredResponse answer it."""
        for _ in range(3):
            row = await self._pool.fetchrow(_BEGIN_KEY, key, request_hash, STALE_CLAIM_SECONDS)
            if row["claimed_at"] is not None:
                return KeyClaim(key, row["claimed_at"])
            if row["status"] is None:
                continue  # committed between our snapshot and our insert: look again
            if row["expired"]:
                await self._pool.execute(
                    "DELETE FROM idempotency_keys WHERE key = $1 AND expires_at < now()", key
                )
                continue
            if row["request_hash"] != request_hash:
                raise Conflict(f"Idempotency-Key {key!r} was already used with a different request")
            if row["status"] == "pending":
                if row["stale"]:
                    taken = await self._take_over(key, row["created_at"])
                    if taken is not None:
                        return taken
                    continue  # someone else completed or took it over meanwhile: look again
                raise Conflict(f"A request with Idempotency-Key {key!r} is still in flight")
            if self._faults.fires("replay-twice"):
                return KeyClaim(key, row["created_at"])
            stored = json.loads(row["response"])
            return StoredResponse(stored["status"], stored["body"])
        raise Conflict(f"Idempotency-Key {key!r} is contended; retry")

    async def _take_over(self, key: str, stale_claimed_at: datetime) -> KeyClaim | None:
        claimed_at = await self._pool.fetchval(
            "UPDATE idempotency_keys SET created_at = clock_timestamp(), claimed_by = pg_backend_pid()"
            " WHERE key = $1 AND status = 'pending' AND created_at = $2 RETURNING created_at",
            key,
            stale_claimed_at,
        )
        return KeyClaim(key, claimed_at) if claimed_at is not None else None

    async def refused(self, claim: KeyClaim, error: DomainError) -> None:
        """Remember a definite refusal, so a repeat gets the same answer."""
        response = dumps({"status": error.status, "body": error.body()})
        await self._pool.execute(
            "UPDATE idempotency_keys SET status = 'failed', response = $2::jsonb"
            " WHERE key = $1 AND created_at = $3 AND status = 'pending'",
            claim.key,
            response,
            claim.claimed_at,
        )

    async def abandon(self, claim: KeyClaim) -> None:
        """Forget a key whose request died unexpectedly, so that a retry can run."""
        await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE key = $1 AND created_at = $2 AND status = 'pending'",
            claim.key,
            claim.claimed_at,
        )


class WalletCommands:
    """Create, credit, debit and transfer, each in one transaction."""

    def __init__(
        self, pool: asyncpg.Pool, faults: Faults, slow_commits: SlowCommits | None = None
    ) -> None:
        self._pool = pool
        self._faults = faults
        self._slow_commits = slow_commits or SlowCommits()

    async def create(
        self, wallet_id: str, owner_id: str, initial_balance: Decimal, claim: KeyClaim | None
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        events = [
            NewEvent(
                wallet_id,
                0,
                "WalletCreated",
                {"ownerId": owner_id, "initialBalance": json_number(initial_balance)},
                {},
            )
        ]
        if initial_balance > 0:
            events.append(
                NewEvent(
                    wallet_id,
                    1,
                    "WalletCredited",
                    {"amount": json_number(initial_balance), "description": "Initial balance"},
                    {},
                )
            )
        version = len(events) - 1
        snapshot = _snapshot(wallet_id, owner_id, initial_balance, version, now, now)
        async with self._pool.acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                "INSERT INTO wallets (id, owner_id, created_at, updated_at) VALUES ($1, $2, $3, $3)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                wallet_id,
                owner_id,
                now.replace(tzinfo=None),
            )
            if created is None:
                raise Conflict(f"Wallet {wallet_id} already exists")
            await self._append(
                conn,
                events,
                [(wallet_id, initial_balance, version)],
                now,
                snapshot,
                claim,
            )
        return snapshot

    async def credit(
        self, wallet_id: str, amount: Decimal, description: str | None, key: KeyClaim | None
    ) -> dict[str, Any]:
        return await self._change(wallet_id, amount, description, key)

    async def debit(
        self, wallet_id: str, amount: Decimal, description: str | None, key: KeyClaim | None
    ) -> dict[str, Any]:
        return await self._change(wallet_id, -amount, description, key)

    async def _change(
        self, wallet_id: str, delta: Decimal, description: str | None, key: KeyClaim | None
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT owner_id, balance, version, created_at FROM wallets WHERE id = $1 FOR UPDATE",
                wallet_id,
            )
            if row is None:
                raise NotFound(f"Wallet {wallet_id} not found")
            balance = row["balance"] + delta
            if balance < 0 and not self._faults.fires("overdraft"):
                raise BadRequest(
                    f"Wallet {wallet_id} has insufficient funds: balance"
                    f" {json_number(row['balance'])}, requested {json_number(-delta)}"
                )
            version = row["version"] + 1
            payload: dict[str, Any] = {"amount": json_number(abs(delta))}
            if description is not None:
                payload["description"] = description
            event_type = "WalletCredited" if delta > 0 else "WalletDebited"
            event = NewEvent(wallet_id, version, event_type, payload, {})
            snapshot = _snapshot(
                wallet_id, row["owner_id"], balance, version, row["created_at"], now
            )
            await self._append(conn, [event], [(wallet_id, balance, version)], now, snapshot, key)
        return snapshot

    async def transfer(
        self,
        from_id: str,
        to_id: str,
        amount: Decimal,
        description: str | None,
        key: KeyClaim | None,
    ) -> dict[str, Any]:
        if from_id == to_id:
            if self._faults.fires("self-transfer-500"):
                raise InternalServerError()
            raise BadRequest("Cannot transfer to the same wallet")
        now = datetime.now(UTC)
        transfer_id = str(uuid.uuid4())
        async with self._pool.acquire() as conn, conn.transaction():
            # Locks in id order, so two opposite transfers cannot deadlock.
            rows = await conn.fetch(
                "SELECT id, owner_id, balance, version, created_at FROM wallets"
                " WHERE id = ANY($1::varchar[]) ORDER BY id FOR UPDATE",
                [from_id, to_id],
            )
            found = {row["id"]: row for row in rows}
            for wallet_id in (from_id, to_id):
                if wallet_id not in found:
                    raise NotFound(f"Wallet {wallet_id} not found")
            source, target = found[from_id], found[to_id]
            source_balance = source["balance"] - amount
            if source_balance < 0 and not self._faults.fires("overdraft"):
                raise BadRequest(
                    f"Wallet {from_id} has insufficient funds: balance"
                    f" {json_number(source['balance'])}, requested {json_number(amount)}"
                )
            target_balance = target["balance"] + amount
            source_version, target_version = source["version"] + 1, target["version"] + 1
            moved = json_number(amount)
            debit = NewEvent(
                from_id,
                source_version,
                "WalletDebited",
                {"amount": moved, "description": description or f"Transfer to wallet {to_id}"},
                {"transferId": transfer_id, "relatedWalletId": to_id},
            )
            credit = NewEvent(
                to_id,
                target_version,
                "WalletCredited",
                {"amount": moved, "description": description or f"Transfer from wallet {from_id}"},
                {"transferId": transfer_id, "relatedWalletId": from_id},
            )
            result = {
                "fromWallet": _snapshot(
                    from_id,
                    source["owner_id"],
                    source_balance,
                    source_version,
                    source["created_at"],
                    now,
                ),
                "toWallet": _snapshot(
                    to_id,
                    target["owner_id"],
                    target_balance,
                    target_version,
                    target["created_at"],
                    now,
                ),
            }
            await self._append(
                conn,
                [debit, credit],
                [
                    (from_id, source_balance, source_version),
                    (to_id, target_balance, target_version),
                ],
                now,
                result,
                key,
            )
        return result

    async def _append(
        self,
        conn: asyncpg.Connection,
        events: list[NewEvent],
        wallet_updates: list[tuple[str, Decimal, int]],
        now: datetime,
        response: dict[str, Any],
        claim: KeyClaim | None,
    ) -> None:
        """Events, write-side rows, outbox, consumer queue and idempotency record: one statement;
        the last thing of every command's transaction, which commits when it returns."""
        ids = [uuid.uuid4() for _ in events]
        for event_id, event in zip(ids, events, strict=True):
            event.metadata = {"eventId": str(event_id), "occurredAt": iso(now), **event.metadata}
        remembered = await conn.fetchval(
            _APPEND,
            ids,
            [e.stream_id for e in events],
            [e.version for e in events],
            [e.event_type for e in events],
            [dumps(e.payload) for e in events],
            [dumps(e.metadata) for e in events],
            now,
            now.replace(tzinfo=None),
            [u[0] for u in wallet_updates],
            [u[1] for u in wallet_updates],
            [u[2] for u in wallet_updates],
            not self._faults.fires("outbox-drop"),
            [*CONSUMERS, PUBLISHER] if self._faults.fires("third-consumer") else list(CONSUMERS),
            dumps({"status": 201, "body": response}),
            claim.key if claim else None,
            claim.claimed_at if claim else None,
        )
        if claim is not None and not remembered:
            # Raised inside the command's transaction, so none of the above is committed.
            raise Conflict(
                f"Idempotency-Key {claim.key!r} was taken over by a retry; this request had no effect"
            )
        await self._slow_commits.hold()


def _snapshot(
    wallet_id: str,
    owner_id: str,
    balance: Decimal,
    version: int,
    created_at: datetime,
    updated_at: datetime,
) -> dict[str, Any]:
    return {
        "id": wallet_id,
        "ownerId": owner_id,
        "balance": json_number(balance),
        "version": version,
        "createdAt": iso(created_at),
        "updatedAt": iso(updated_at),
    }
