"""POST /wallets, GET /wallets/{id} and GET /wallets as the contract states them, bodies included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from contract_shapes import assert_error, assert_read_model, assert_snapshot
from projection import wait_for_projectors
from wallet_http import WalletHttp, new_id


@pytest.fixture(scope="module")
def api(module_reference_wallet) -> WalletHttp:
    return WalletHttp(module_reference_wallet.url)


@pytest.fixture(scope="module")
def dsn(module_reference_wallet) -> str:
    return module_reference_wallet.dsn


def test_creating_a_wallet_without_initial_balance_is_a_201_snapshot_at_version_0(api):
    wallet_id = new_id()
    reply = api.create_wallet(wallet_id, "owner-a")
    assert reply.status == 201, reply.text
    assert_snapshot(reply.body, wallet_id, "owner-a", 0, 0)


def test_creating_a_wallet_with_an_initial_balance_is_a_201_snapshot_at_version_1(api):
    wallet_id = new_id()
    reply = api.create_wallet(wallet_id, "owner-a", 250)
    assert reply.status == 201, reply.text
    assert_snapshot(reply.body, wallet_id, "owner-a", 250, 1)


def test_an_initial_balance_of_zero_emits_no_credit_and_stays_at_version_0(api):
    wallet_id = new_id()
    reply = api.create_wallet(wallet_id, "owner-a", 0)
    assert reply.status == 201, reply.text
    assert_snapshot(reply.body, wallet_id, "owner-a", 0, 0)


def test_an_initial_balance_with_cents_is_kept_exactly(api):
    wallet_id = new_id()
    reply = api.create_wallet(wallet_id, "owner-a", Decimal("10.25"))
    assert reply.status == 201, reply.text
    assert reply.body["balance"] == Decimal("10.25")


def test_creating_an_existing_wallet_is_a_409_and_leaves_it_unchanged(api, dsn):
    wallet_id = new_id()
    assert api.create_wallet(wallet_id, "owner-a", 100).status == 201
    assert_error(api.create_wallet(wallet_id, "owner-b", 5), 409, "already exists")

    wait_for_projectors(dsn)
    assert_read_model(api.wallet(wallet_id).body, wallet_id, "owner-a", 100)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"ownerId": "owner-a"}, "walletId"),
        ({"walletId": "{id}"}, "ownerId"),
        ({"walletId": "", "ownerId": "owner-a"}, "walletId"),
        ({"walletId": "{id}", "ownerId": "   "}, "ownerId"),
        ({"walletId": "{id}", "ownerId": "owner-a", "initialBalance": -1}, "initialBalance"),
        ({"walletId": "{id}", "ownerId": "owner-a", "initialBalance": -0.01}, "initialBalance"),
    ],
    ids=[
        "no walletId",
        "no ownerId",
        "empty walletId",
        "blank ownerId",
        "negative initialBalance",
        "negative cents",
    ],
)
def test_creating_without_ids_or_with_a_negative_initial_balance_is_a_400(api, dsn, body, message):
    wallet_id = new_id()
    body = {k: v.format(id=wallet_id) if isinstance(v, str) else v for k, v in body.items()}
    assert_error(api.post("/wallets", body), 400, message)

    wait_for_projectors(dsn)
    assert_error(api.wallet(wallet_id), 404)


def test_get_wallet_answers_the_read_model_once_projected(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-a", 40)
    api.credit(wallet_id, 2)

    wait_for_projectors(dsn)
    reply = api.wallet(wallet_id)
    assert reply.status == 200, reply.text
    assert_read_model(reply.body, wallet_id, "owner-a", 42)


def test_get_an_unknown_wallet_is_a_404(api):
    wallet_id = new_id()
    assert_error(api.wallet(wallet_id), 404, wallet_id)


def test_listing_wallets_is_a_json_array_of_read_models(api, dsn):
    created = {new_id(): n for n in range(3)}
    for wallet_id, balance in created.items():
        api.create_wallet(wallet_id, "owner-l", balance)

    wait_for_projectors(dsn)
    reply = api.get("/wallets")
    assert reply.status == 200, reply.text
    assert isinstance(reply.body, list) and len(reply.body) <= 1000
    listed = {wallet["id"]: wallet for wallet in reply.body}
    for wallet_id, balance in created.items():
        assert_read_model(listed[wallet_id], wallet_id, "owner-l", balance)
