"""POST /wallets/{id}/credit, /debit and /transfer as the contract states them, bodies included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from contract_shapes import assert_error, assert_snapshot
from projection import wait_for_projectors
from wallet_http import WalletHttp, new_id


@pytest.fixture(scope="module")
def api(module_reference_wallet) -> WalletHttp:
    return WalletHttp(module_reference_wallet.url)


@pytest.fixture(scope="module")
def dsn(module_reference_wallet) -> str:
    return module_reference_wallet.dsn


def wallet_with(api: WalletHttp, balance, owner_id: str = "owner-o") -> str:
    wallet_id = new_id()
    assert api.create_wallet(wallet_id, owner_id, balance).status == 201
    return wallet_id


def test_credit_is_a_201_snapshot_with_the_new_balance_and_the_next_version(api):
    wallet_id = wallet_with(api, 100)
    reply = api.credit(wallet_id, 25, "salary")
    assert reply.status == 201, reply.text
    assert_snapshot(reply.body, wallet_id, "owner-o", 125, 2)


def test_debit_is_a_201_snapshot_with_the_new_balance_and_the_next_version(api):
    wallet_id = wallet_with(api, 100)
    reply = api.debit(wallet_id, 30)
    assert reply.status == 201, reply.text
    assert_snapshot(reply.body, wallet_id, "owner-o", 70, 2)


def test_amounts_with_cents_add_up_exactly(api):
    wallet_id = wallet_with(api, None)
    api.credit(wallet_id, Decimal("12.34"))
    api.credit(wallet_id, Decimal("0.66"))
    reply = api.debit(wallet_id, Decimal("0.01"))
    assert reply.status == 201, reply.text
    assert reply.body["balance"] == Decimal("12.99")
    assert reply.body["version"] == 3


def test_a_debit_down_to_exactly_zero_is_allowed(api):
    wallet_id = wallet_with(api, Decimal("50.50"))
    reply = api.debit(wallet_id, Decimal("50.50"))
    assert reply.status == 201, reply.text
    assert reply.body["balance"] == 0


def test_a_debit_past_the_balance_is_a_400_insufficient_funds_and_changes_nothing(api):
    wallet_id = wallet_with(api, 10)
    assert_error(api.debit(wallet_id, Decimal("10.01")), 400, "insufficient funds")

    reply = api.credit(wallet_id, 1)
    assert (reply.body["balance"], reply.body["version"]) == (11, 2)


@pytest.mark.parametrize("operation", ["credit", "debit"])
@pytest.mark.parametrize(
    "amount",
    [0, -5, Decimal("-0.01"), "10", None, True, [5], {"value": 5}, Decimal("0.001")],
    ids=["zero", "negative", "negative cents", "string", "null", "bool", "list", "object", "mills"],
)
def test_credit_or_debit_of_a_non_positive_or_non_numeric_amount_is_a_400(api, operation, amount):
    wallet_id = wallet_with(api, 100)
    assert_error(getattr(api, operation)(wallet_id, amount), 400, "amount")


@pytest.mark.parametrize("operation", ["credit", "debit"])
def test_credit_or_debit_without_an_amount_is_a_400(api, operation):
    wallet_id = wallet_with(api, 100)
    assert_error(api.post(f"/wallets/{wallet_id}/{operation}", {}), 400, "amount")


@pytest.mark.parametrize("operation", ["credit", "debit"])
def test_credit_or_debit_of_an_unknown_wallet_is_a_404(api, operation):
    wallet_id = new_id()
    assert_error(getattr(api, operation)(wallet_id, 5), 404, wallet_id)


def test_transfer_is_a_201_with_both_wallets_snapshots(api):
    source, target = wallet_with(api, 100, "owner-s"), wallet_with(api, None, "owner-t")
    reply = api.transfer(source, target, 40)
    assert reply.status == 201, reply.text
    assert set(reply.body) == {"fromWallet", "toWallet"}
    assert_snapshot(reply.body["fromWallet"], source, "owner-s", 60, 2)
    assert_snapshot(reply.body["toWallet"], target, "owner-t", 40, 1)


def test_transfer_of_the_whole_balance_leaves_the_source_at_zero(api):
    source, target = wallet_with(api, 75), wallet_with(api, 5)
    reply = api.transfer(source, target, 75)
    assert reply.status == 201, reply.text
    assert (reply.body["fromWallet"]["balance"], reply.body["toWallet"]["balance"]) == (0, 80)


def test_transfer_to_the_same_wallet_is_a_400(api):
    wallet_id = wallet_with(api, 100)
    assert_error(api.transfer(wallet_id, wallet_id, 10), 400, "same wallet")


def test_transfer_without_a_target_wallet_is_a_400(api):
    wallet_id = wallet_with(api, 100)
    reply = api.post(f"/wallets/{wallet_id}/transfer", {"amount": 10})
    assert_error(reply, 400, "toWalletId")


@pytest.mark.parametrize("amount", [0, -1, "5", None, Decimal("0.005")])
def test_transfer_of_a_bad_amount_is_a_400(api, amount):
    source, target = wallet_with(api, 100), wallet_with(api, 0)
    assert_error(api.transfer(source, target, amount), 400, "amount")


def test_transfer_past_the_balance_is_a_400_insufficient_funds_and_moves_nothing(api, dsn):
    source, target = wallet_with(api, 30), wallet_with(api, 0)
    assert_error(api.transfer(source, target, 31), 400, "insufficient funds")

    wait_for_projectors(dsn)
    assert api.wallet(source).body["balance"] == 30
    assert api.wallet(target).body["balance"] == 0


def test_transfer_from_an_unknown_wallet_is_a_404(api):
    source, target = new_id(), wallet_with(api, 0)
    assert_error(api.transfer(source, target, 5), 404, source)


def test_transfer_to_an_unknown_wallet_is_a_404_and_debits_nothing(api, dsn):
    source, target = wallet_with(api, 30), new_id()
    assert_error(api.transfer(source, target, 5), 404, target)

    wait_for_projectors(dsn)
    assert api.wallet(source).body["balance"] == 30
