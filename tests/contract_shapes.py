"""The shapes the contract promises, as assertions: NestJS error bodies, wallet snapshots, read
models and ledger entries, with timestamps in ISO 8601 UTC."""

from __future__ import annotations

import re
from typing import Any

from wallet_http import Reply

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SNAPSHOT_KEYS = {"id", "ownerId", "balance", "version", "createdAt", "updatedAt"}
READ_MODEL_KEYS = {"id", "ownerId", "balance", "createdAt", "updatedAt"}
LEDGER_ENTRY_KEYS = {
    "id",
    "walletId",
    "transactionType",
    "amount",
    "balanceBefore",
    "balanceAfter",
    "description",
    "referenceId",
    "relatedWalletId",
    "metadata",
    "createdAt",
}
REASONS = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
}


def assert_error(reply: Reply, status: int, message_contains: str = "") -> None:
    """A JSON error in NestJS's shape: {"statusCode", "message", "error"}."""
    assert reply.status == status, f"expected {status}, got {reply.status}: {reply.text[:300]}"
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    assert isinstance(reply.body, dict), reply.text[:300]
    assert set(reply.body) == {"statusCode", "message", "error"}, reply.body
    assert reply.body["statusCode"] == status
    assert reply.body["error"] == REASONS[status]
    assert isinstance(reply.body["message"], str) and reply.body["message"]
    assert message_contains.lower() in reply.body["message"].lower(), reply.body["message"]


def assert_snapshot(body: Any, wallet_id: str, owner_id: str, balance: Any, version: int) -> None:
    assert set(body) == SNAPSHOT_KEYS, body
    assert (body["id"], body["ownerId"], body["balance"], body["version"]) == (
        wallet_id,
        owner_id,
        balance,
        version,
    ), body
    assert ISO_UTC.match(body["createdAt"]) and ISO_UTC.match(body["updatedAt"]), body
    assert body["updatedAt"] >= body["createdAt"]


def assert_read_model(body: Any, wallet_id: str, owner_id: str, balance: Any) -> None:
    assert set(body) == READ_MODEL_KEYS, body
    assert (body["id"], body["ownerId"], body["balance"]) == (wallet_id, owner_id, balance), body
    assert ISO_UTC.match(body["createdAt"]) and ISO_UTC.match(body["updatedAt"]), body


def assert_ledger_entry(entry: Any) -> None:
    assert set(entry) == LEDGER_ENTRY_KEYS, entry
    assert entry["transactionType"] in {"CREDIT", "DEBIT", "TRANSFER_OUT", "TRANSFER_IN"}
    assert ISO_UTC.match(entry["createdAt"]), entry
    sign = 1 if entry["transactionType"] in {"CREDIT", "TRANSFER_IN"} else -1
    assert entry["balanceAfter"] == entry["balanceBefore"] + sign * entry["amount"], entry
