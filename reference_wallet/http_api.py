"""The HTTP face of the reference service: the contract's routes, input validation, and NestJS-shaped
JSON errors. Nothing here touches SQL for writes: commands.py does."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from .commands import (
    BadRequest,
    DomainError,
    IdempotencyKeys,
    KeyClaim,
    NotFound,
    StoredResponse,
    WalletCommands,
    dumps,
    iso,
    json_number,
)
from .faults import Faults
from .outage import database_unavailable

log = logging.getLogger(__name__)

MAX_AMOUNT = Decimal("1000000000")  # a sane bound: far above any test, far below numeric(19,4)
MAX_ID_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 500
MAX_LEDGER_LIMIT = 1000
TRANSACTION_TYPES = {"CREDIT", "DEBIT", "TRANSFER_OUT", "TRANSFER_IN"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, error: str) -> web.Response:
    return _json({"statusCode": status, "message": message, "error": error}, status)


# --- validation: plain functions raising BadRequest --------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw or b"null", parse_float=Decimal, parse_int=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the parser's stack, e.g. 20,000 opening brackets.
        raise BadRequest("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body


def _storable(text: str) -> bool:
    """Whether PostgreSQL can store text: it refuses NUL, and UTF-8 has no lone surrogates
    (which JSON's \\ud800 escapes and undecodable header bytes both produce)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _wallet_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{field} must be at most {MAX_ID_LENGTH} characters")
    if "/" in value or any(ord(ch) < 32 for ch in value) or not _storable(value):
        raise BadRequest(f"{field} must not contain '/', control characters or invalid Unicode")
    return value


def _path_wallet_id(request: web.Request) -> str:
    """The wallet id in the URL, held to the same rules as one in a body: an id that no wallet
    can have is bad input, not an unknown wallet, and must not reach SQL (NUL would fail there)."""
    return _wallet_id(request.match_info["id"], "wallet id in the path")


def _amount(value: Any, field: str = "amount", *, allow_zero: bool = False) -> Decimal:
    # json.loads above parses every number as Decimal; bools and strings are refused here.
    if not isinstance(value, Decimal) or not value.is_finite():
        raise BadRequest(f"{field} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise BadRequest(f"{field} must be {'zero or ' if allow_zero else ''}positive")
    if value > MAX_AMOUNT:
        raise BadRequest(f"{field} must be at most {MAX_AMOUNT}")
    if value != value.quantize(Decimal("0.01")):
        raise BadRequest(f"{field} must have at most 2 decimal places")
    return value.quantize(Decimal("0.01"))


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise BadRequest(
            f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters"
        )
    if not _storable(value):
        raise BadRequest("description must not contain NUL characters or invalid Unicode")
    return value


def _request_hash(request: web.Request, body: dict[str, Any]) -> str:
    canonical = dumps([request.method, request.path, body]).encode()
    return hashlib.sha256(canonical).hexdigest()


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_ID_LENGTH:
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_ID_LENGTH} characters")
    if any(ord(ch) < 32 for ch in key) or not _storable(key):
        raise BadRequest("Idempotency-Key must be UTF-8 text without control characters")
    return key


# --- routes ------------------------------------------------------------------------------------


class WalletApi:
    def __init__(
        self,
        pool: asyncpg.Pool,
        commands: WalletCommands,
        keys: IdempotencyKeys,
        faults: Faults | None = None,
    ) -> None:
        self._pool = pool
        self._commands = commands
        self._keys = keys
        self._faults = faults or Faults()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/wallets", self.create_wallet),
            web.get("/wallets", self.list_wallets),
            web.get("/wallets/{id}", self.get_wallet),
            web.post("/wallets/{id}/credit", self.credit),
            web.post("/wallets/{id}/debit", self.debit),
            web.post("/wallets/{id}/transfer", self.transfer),
            web.get("/ledger/health", self.ledger_health),
            web.get("/ledger/wallet/{id}", self.ledger),
            web.get("/ledger/wallet/{id}/summary", self.ledger_summary),
        ]

    async def _mutation(self, request: web.Request, run, *, creates: bool = False) -> web.Response:
        """Validate, then run the command under the request's Idempotency-Key, if any."""
        body = await _body(request)
        key = _idempotency_key(request)
        command = run(body)  # validates; returns a coroutine factory taking the key claim
        if key is not None and not creates and self._faults.fires("keys-ignored"):
            key = None  # as the real service, which honours the key on POST /wallets only
        if key is None:
            return _json(await command(None), 201)
        claim = await self._keys.begin(key, _request_hash(request, body))
        if isinstance(claim, StoredResponse):
            return _replayed(claim)
        try:
            result = await command(claim)
        except DomainError as error:
            if error.status >= 500:  # not a definite refusal: a retry may run
                await self._abandon(claim)
            else:
                await self._keys.refused(claim, error)
            raise
        except BaseException:
            await self._abandon(claim)
            raise
        return _json(result, 201)

    async def _abandon(self, claim: KeyClaim) -> None:
        """Free the key for a retry. When the database is gone this fails too: the claim then
        stays pending until it is stale, and the original failure is the one to answer with."""
        try:
            await self._keys.abandon(claim)
        except Exception as error:
            if not database_unavailable(error):
                raise
            log.info("could not free Idempotency-Key %r: %s", claim.key, type(error).__name__)

    async def create_wallet(self, request: web.Request) -> web.Response:
        def run(body: dict[str, Any]):
            wallet_id = _wallet_id(body.get("walletId"), "walletId")
            owner_id = _wallet_id(body.get("ownerId"), "ownerId")
            initial = body.get("initialBalance")
            initial = (
                Decimal(0)
                if initial is None
                else _amount(initial, "initialBalance", allow_zero=True)
            )
            return lambda key: self._commands.create(wallet_id, owner_id, initial, key)

        return await self._mutation(request, run, creates=True)

    async def credit(self, request: web.Request) -> web.Response:
        return await self._change(request, self._commands.credit)

    async def debit(self, request: web.Request) -> web.Response:
        return await self._change(request, self._commands.debit)

    async def _change(self, request: web.Request, operation) -> web.Response:
        wallet_id = _path_wallet_id(request)

        def run(body: dict[str, Any]):
            amount = _amount(body.get("amount"))
            description = _description(body.get("description"))
            return lambda key: operation(wallet_id, amount, description, key)

        return await self._mutation(request, run)

    async def transfer(self, request: web.Request) -> web.Response:
        from_id = _path_wallet_id(request)

        def run(body: dict[str, Any]):
            to_id = _wallet_id(body.get("toWalletId"), "toWalletId")
            amount = _amount(body.get("amount"))
            description = _description(body.get("description"))
            return lambda key: self._commands.transfer(from_id, to_id, amount, description, key)

        return await self._mutation(request, run)

    async def get_wallet(self, request: web.Request) -> web.Response:
        wallet_id = _path_wallet_id(request)
        if self._faults.fires("read-404"):
            raise NotFound(f"Wallet {wallet_id} not found")
        row = await self._pool.fetchrow(
            "SELECT id, owner_id, balance, created_at, updated_at FROM wallets_read_model WHERE id = $1",
            wallet_id,
        )
        if row is None:
            raise NotFound(f"Wallet {wallet_id} not found")
        return _json(_read_model(row))

    async def list_wallets(self, request: web.Request) -> web.Response:
        rows = await self._pool.fetch(
            "SELECT id, owner_id, balance, created_at, updated_at FROM wallets_read_model"
            " ORDER BY created_at DESC, id LIMIT 1000"
        )
        return _json([_read_model(row) for row in rows])

    async def ledger_health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "module": "ledger"})

    async def ledger(self, request: web.Request) -> web.Response:
        wallet_id = _path_wallet_id(request)
        query = request.query
        limit = _int_param(query.get("limit"), "limit", 50, 1, MAX_LEDGER_LIMIT)
        offset = _int_param(query.get("offset"), "offset", 0, 0, 10**9)
        conditions = ['"walletId" = $1']
        args: list[Any] = [wallet_id]
        if "transactionType" in query:
            kind = query["transactionType"]
            if kind not in TRANSACTION_TYPES:
                raise BadRequest(
                    f"transactionType must be one of {', '.join(sorted(TRANSACTION_TYPES))}"
                )
            args.append(kind)
            conditions.append(
                f'"transactionType" = ${len(args)}::ledger_entries_transactiontype_enum'
            )
        for name, op in (("startDate", ">="), ("endDate", "<=")):
            if name in query:
                args.append(_date_param(query[name], name))
                conditions.append(f'"createdAt" {op} ${len(args)}')
        args += [limit, offset]
        rows = await self._pool.fetch(
            f"SELECT * FROM ledger_entries WHERE {' AND '.join(conditions)}"
            " ORDER BY (metadata ->> 'eventVersion')::integer DESC NULLS LAST, \"createdAt\" DESC"
            f" LIMIT ${len(args) - 1} OFFSET ${len(args)}",
            *args,
        )
        entries = [_ledger_entry(row) for row in rows]
        return _json({"walletId": wallet_id, "count": len(entries), "transactions": entries})

    async def ledger_summary(self, request: web.Request) -> web.Response:
        wallet_id = _path_wallet_id(request)
        totals = await self._pool.fetchrow(
            "SELECT coalesce(sum(amount) FILTER (WHERE \"transactionType\" IN ('CREDIT', 'TRANSFER_IN')), 0) AS credits,"
            " coalesce(sum(amount) FILTER (WHERE \"transactionType\" IN ('DEBIT', 'TRANSFER_OUT')), 0) AS debits,"
            ' count(*) AS n FROM ledger_entries WHERE "walletId" = $1',
            wallet_id,
        )
        last = await self._pool.fetchrow(
            'SELECT * FROM ledger_entries WHERE "walletId" = $1'
            " ORDER BY (metadata ->> 'eventVersion')::integer DESC NULLS LAST, \"createdAt\" DESC LIMIT 1",
            wallet_id,
        )
        return _json(
            {
                "walletId": wallet_id,
                "totalCredits": json_number(totals["credits"]),
                "totalDebits": json_number(totals["debits"]),
                "transactionCount": totals["n"],
                "lastTransaction": _ledger_entry(last) if last else None,
            }
        )


def _replayed(stored: StoredResponse) -> web.Response:
    return _json(stored.body, stored.status, headers={"Idempotent-Replayed": "true"})


def _int_param(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _date_param(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        # OverflowError: an offset that moves year 1 or 9999 out of range when made UTC.
        raise BadRequest(f"{name} must be an ISO 8601 date") from None
    return moment


def _read_model(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "ownerId": row["owner_id"],
        "balance": json_number(row["balance"]),
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def _ledger_entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "walletId": row["walletId"],
        "transactionType": row["transactionType"],
        "amount": json_number(row["amount"]),
        "balanceBefore": json_number(row["balanceBefore"]),
        "balanceAfter": json_number(row["balanceAfter"]),
        "description": row["description"],
        "referenceId": row["referenceId"],
        "relatedWalletId": row["relatedWalletId"],
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        "createdAt": iso(row["createdAt"]),
    }


_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    405: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
}


@web.middleware
async def contract_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error leaves in NestJS's shape; an unknown route or method is a 404 as in NestJS."""
    try:
        return await handler(request)
    except DomainError as error:
        return _json(error.body(), error.status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        status = 404 if error.status == 405 else error.status
        message = f"Cannot {request.method} {request.path}" if status == 404 else error.reason
        return _error(status, message, _REASONS.get(status, error.reason))
    except asyncpg.exceptions.UniqueViolationError:
        # A stale expected version lost the race on events (stream_id, version).
        return _error(409, "Concurrency conflict", "Conflict")
    except Exception as error:
        if database_unavailable(error):
            _outages.note(error)
            response = _error(503, "Database unavailable; retry", "Service Unavailable")
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "Internal server error", "Internal Server Error")


class _OutageLog:
    """One log line per second of database outage, however many requests it fails."""

    def __init__(self) -> None:
        self._last = 0.0
        self._since = 0

    def note(self, error: BaseException) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last >= 1.0:
            log.warning(
                "database unavailable, %d request(s) answered 503: %s: %s",
                self._since,
                type(error).__name__,
                str(error).strip().splitlines()[0] if str(error).strip() else "",
            )
            self._last, self._since = now, 0


_outages = _OutageLog()


def build_app(
    pool: asyncpg.Pool,
    commands: WalletCommands,
    keys: IdempotencyKeys,
    faults: Faults | None = None,
) -> web.Application:
    app = web.Application(middlewares=[contract_errors], client_max_size=64 * 1024)
    app.add_routes(WalletApi(pool, commands, keys, faults).routes())
    return app
