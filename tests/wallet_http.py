"""A small synchronous JSON client for the wallet contract, for tests: it returns every answer
(status, parsed body, headers) instead of raising on 4xx/5xx, and can send raw bytes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

JSON = {"Content-Type": "application/json"}


@dataclass
class Reply:
    status: int
    body: Any  # the parsed JSON, or None when the body is not JSON
    headers: Mapping[str, str]
    text: str

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


def new_id(prefix: str = "w") -> str:
    """A wallet (or key) id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def path_id(wallet_id: str) -> str:
    return quote(wallet_id, safe="")


class WalletHttp:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        data = raw if raw is not None else None if body is None else _encode(body)
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={**(JSON if data is not None else {}), **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _reply(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return _reply(error.code, error.read(), error.headers)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        extra = dict(headers or {})
        if key is not None:
            extra["Idempotency-Key"] = key
        return self.request("POST", path, body, raw=raw, headers=extra)

    # --- the contract's calls -------------------------------------------------------------

    def create_wallet(
        self,
        wallet_id: str,
        owner_id: str = "owner-1",
        initial_balance: Any = None,
        *,
        key: str | None = None,
    ) -> Reply:
        body: dict[str, Any] = {"walletId": wallet_id, "ownerId": owner_id}
        if initial_balance is not None:
            body["initialBalance"] = initial_balance
        return self.post("/wallets", body, key=key)

    def credit(
        self, wallet_id: str, amount: Any, description: str | None = None, *, key: str | None = None
    ) -> Reply:
        return self.post(
            f"/wallets/{path_id(wallet_id)}/credit", _operation(amount, description), key=key
        )

    def debit(
        self, wallet_id: str, amount: Any, description: str | None = None, *, key: str | None = None
    ) -> Reply:
        return self.post(
            f"/wallets/{path_id(wallet_id)}/debit", _operation(amount, description), key=key
        )

    def transfer(
        self,
        from_id: str,
        to_id: str,
        amount: Any,
        description: str | None = None,
        *,
        key: str | None = None,
    ) -> Reply:
        body = {"toWalletId": to_id, **_operation(amount, description)}
        return self.post(f"/wallets/{path_id(from_id)}/transfer", body, key=key)

    def wallet(self, wallet_id: str) -> Reply:
        return self.get(f"/wallets/{path_id(wallet_id)}")

    def ledger(self, wallet_id: str, query: str = "") -> Reply:
        return self.get(f"/ledger/wallet/{path_id(wallet_id)}{'?' + query if query else ''}")

    def summary(self, wallet_id: str) -> Reply:
        return self.get(f"/ledger/wallet/{path_id(wallet_id)}/summary")


def _operation(amount: Any, description: str | None) -> dict[str, Any]:
    body = {"amount": amount}
    if description is not None:
        body["description"] = description
    return body


def _encode(body: Any) -> bytes:
    return json.dumps(body, default=_decimal).encode()


def _decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(type(value).__name__)


def _reply(status: int, data: bytes, headers: Mapping[str, str]) -> Reply:
    text = data.decode("utf-8", errors="replace")
    try:
        body = json.loads(text, parse_float=Decimal)
    except ValueError:
        body = None
    return Reply(status, body, dict(headers.items()), text)
