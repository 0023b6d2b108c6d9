"""Malformed or hostile input gets a 4xx JSON error in NestJS's shape, never a 500, and writes
nothing: bad JSON, wrong types, absurd amounts, oversized ids and bodies, unknown routes."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import psycopg
import pytest
from contract_shapes import assert_error
from projection import wait_for_projectors
from wallet_http import WalletHttp, new_id


@pytest.fixture(scope="module")
def api(module_reference_wallet) -> WalletHttp:
    return WalletHttp(module_reference_wallet.url)


@pytest.fixture(scope="module")
def dsn(module_reference_wallet) -> str:
    return module_reference_wallet.dsn


@pytest.fixture
def wallet(api, dsn):
    """A wallet with 100 on it; after the test, still exactly that: one create, one credit."""
    wallet_id = new_id()
    assert api.create_wallet(wallet_id, "owner-b", 100).status == 201
    yield wallet_id
    with psycopg.connect(dsn) as conn:
        balance, version = conn.execute(
            "SELECT balance, version FROM wallets WHERE id = %s", (wallet_id,)
        ).fetchone()
        events = conn.execute(
            "SELECT count(*) FROM events WHERE stream_id = %s", (wallet_id,)
        ).fetchone()[0]
    assert (balance, version, events) == (100, 1, 2), "bad input changed the wallet"


def raw_post(api: WalletHttp, path: str, data: bytes, headers: dict[str, str] | None = None):
    return api.post(path, raw=data, headers=headers)


@pytest.mark.parametrize(
    "data",
    [b'{"walletId": "x", ', b"{'walletId': 'x'}", b"not json", b"\xff\xfe\x00garbage", b"{}}"],
    ids=["truncated", "single quotes", "text", "binary", "trailing brace"],
)
def test_malformed_json_is_a_400(api, wallet, data):
    assert_error(raw_post(api, "/wallets", data), 400, "JSON")
    assert_error(raw_post(api, f"/wallets/{wallet}/credit", data), 400, "JSON")


@pytest.mark.parametrize(
    "data", [b"", b"null", b"[]", b'"credit"', b"42"], ids=["empty", "null", "array", "str", "num"]
)
def test_a_body_that_is_not_a_json_object_is_a_400(api, wallet, data):
    assert_error(raw_post(api, f"/wallets/{wallet}/credit", data), 400)


def test_deeply_nested_json_is_a_400(api, wallet):
    data = b'{"amount": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert_error(raw_post(api, f"/wallets/{wallet}/credit", data), 400)


@pytest.mark.parametrize(
    "amount",
    ["NaN", "Infinity", "-Infinity", "1e400", "1000000000.01", "1e10", "-1e400", "1E-400"],
)
def test_absurd_amounts_are_a_400(api, wallet, amount):
    data = f'{{"amount": {amount}}}'.encode()
    assert_error(raw_post(api, f"/wallets/{wallet}/credit", data), 400, "amount")
    assert_error(raw_post(api, f"/wallets/{wallet}/debit", data), 400, "amount")


def test_a_huge_initial_balance_is_a_400_and_creates_nothing(api, dsn):
    wallet_id = new_id()
    body = {"walletId": wallet_id, "ownerId": "o", "initialBalance": 10**30}
    assert_error(api.post("/wallets", body), 400, "initialBalance")
    wait_for_projectors(dsn)
    assert_error(api.wallet(wallet_id), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"walletId": 7, "ownerId": "o"},
        {"walletId": ["x"], "ownerId": "o"},
        {"walletId": "{id}", "ownerId": {"name": "o"}},
        {"walletId": "{id}", "ownerId": "o", "initialBalance": "100"},
        {"walletId": "{id}", "ownerId": "o", "initialBalance": True},
        {"walletId": "{id}", "ownerId": "o", "initialBalance": [1]},
    ],
    ids=["int id", "list id", "object owner", "string balance", "bool balance", "list balance"],
)
def test_wrong_types_in_a_create_are_a_400(api, dsn, body):
    wallet_id = new_id()
    body = {k: v.format(id=wallet_id) if isinstance(v, str) else v for k, v in body.items()}
    assert_error(api.post("/wallets", body), 400)
    wait_for_projectors(dsn)
    assert_error(api.wallet(wallet_id), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"toWalletId": 5, "amount": 1},
        {"toWalletId": None, "amount": 1},
        {"toWalletId": "{other}", "amount": 1, "description": 12},
        {"toWalletId": "{other}", "amount": 1, "description": "x" * 501},
    ],
    ids=["int target", "null target", "int description", "long description"],
)
def test_wrong_types_in_a_transfer_are_a_400(api, wallet, body):
    other = new_id()
    api.create_wallet(other, "owner-b")
    body = {k: v.format(other=other) if isinstance(v, str) else v for k, v in body.items()}
    assert_error(api.post(f"/wallets/{wallet}/transfer", body), 400)


def test_ids_of_255_characters_are_fine_and_of_256_a_400(api, dsn):
    longest, too_long = "w" * 254 + "1", "w" * 256
    assert api.create_wallet(longest, "o" * 255).status == 201
    assert_error(api.create_wallet(too_long, "o"), 400, "walletId")
    assert_error(api.create_wallet(new_id(), "o" * 256), 400, "ownerId")
    assert_error(api.transfer(longest, too_long, 1), 400, "toWalletId")
    wait_for_projectors(dsn)
    assert api.wallet(longest).status == 200


@pytest.mark.parametrize("call", ["credit", "debit", "transfer", "wallet", "ledger", "summary"])
def test_an_oversized_id_in_the_path_is_a_400(api, call):
    too_long = "w" * 5000
    reply = {
        "credit": lambda: api.credit(too_long, 5),
        "debit": lambda: api.debit(too_long, 5),
        "transfer": lambda: api.transfer(too_long, new_id(), 5),
        "wallet": lambda: api.wallet(too_long),
        "ledger": lambda: api.ledger(too_long),
        "summary": lambda: api.summary(too_long),
    }[call]()
    assert_error(reply, 400, "at most 255")


@pytest.mark.parametrize(
    "text",
    ["nul\u0000byte", "lone \ud800 surrogate", "bell\u0007", "slash/in/id"],
    ids=["nul", "surrogate", "control", "slash"],
)
def test_unstorable_characters_in_ids_are_a_400(api, dsn, text):
    body = json.dumps({"walletId": text, "ownerId": "o"}).encode()
    assert_error(raw_post(api, "/wallets", body), 400, "walletId")
    body = json.dumps({"walletId": new_id(), "ownerId": text}).encode()
    assert_error(raw_post(api, "/wallets", body), 400, "ownerId")


@pytest.mark.parametrize(
    "text", ["nul\u0000byte", "lone \udfff surrogate"], ids=["nul", "surrogate"]
)
def test_unstorable_characters_in_a_description_are_a_400(api, wallet, text):
    body = json.dumps({"amount": 1, "description": text}).encode()
    assert_error(raw_post(api, f"/wallets/{wallet}/credit", body), 400, "description")


@pytest.mark.parametrize("encoded", ["%00", "a%00b", "%07"])
def test_control_characters_in_a_path_id_are_a_400(api, wallet, encoded):
    for reply in (
        api.post(f"/wallets/{encoded}/credit", {"amount": 1}),
        api.post(f"/wallets/{encoded}/debit", {"amount": 1}),
        api.post(f"/wallets/{encoded}/transfer", {"toWalletId": wallet, "amount": 1}),
        api.get(f"/wallets/{encoded}"),
        api.get(f"/ledger/wallet/{encoded}"),
        api.get(f"/ledger/wallet/{encoded}/summary"),
    ):
        assert_error(reply, 400, "control characters")


@pytest.mark.parametrize("encoded", ["%ED%A0%80", "%FF", "%C3%28"])
def test_a_path_id_that_is_not_utf8_is_an_ordinary_unknown_wallet(api, encoded):
    assert_error(api.post(f"/wallets/{encoded}/credit", {"amount": 1}), 404)
    assert_error(api.get(f"/wallets/{encoded}"), 404)
    assert api.get(f"/ledger/wallet/{encoded}").body["count"] == 0


def test_a_description_of_500_characters_is_fine(api):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "o")
    assert api.credit(wallet_id, 1, "d" * 500).status == 201


def test_a_body_over_64_kib_is_a_413(api, wallet):
    body = json.dumps({"amount": 1, "description": "x" * 70_000}).encode()
    assert_error(raw_post(api, f"/wallets/{wallet}/credit", body), 413)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/nope"),
        ("POST", "/wallets/x/explode"),
        ("GET", "/ledger"),
        ("DELETE", "/wallets/x"),
        ("PUT", "/wallets"),
        ("GET", "/wallets/x/credit"),
    ],
)
def test_an_unknown_route_or_method_is_a_404_naming_it(api, method, path):
    reply = api.request(method, path)
    assert_error(reply, 404, f"Cannot {method} {path}")


@pytest.mark.parametrize("key", ["", "   ", "k" * 256], ids=["empty", "blank", "256 characters"])
def test_a_bad_idempotency_key_is_a_400(api, wallet, key):
    assert_error(api.credit(wallet, 5, key=key), 400, "Idempotency-Key")


def test_an_idempotency_key_that_is_not_utf8_is_a_400(module_reference_wallet, wallet):
    url = urlsplit(module_reference_wallet.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("POST", f"/wallets/{wallet}/credit")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Idempotency-Key", b"key-\xff\xfe")
        conn.putheader("Content-Length", "13")
        conn.endheaders(b'{"amount": 1}')
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        conn.close()
    assert 400 <= status < 500, body
    assert set(body) == {"statusCode", "message", "error"}
