"""GET /ledger/wallet/{id}, its summary and /ledger/health: what the ledger projector wrote, as the
contract states it, bodies included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from contract_shapes import assert_error, assert_ledger_entry
from projection import wait_for_projectors
from wallet_http import WalletHttp, new_id


@pytest.fixture(scope="module")
def api(module_reference_wallet) -> WalletHttp:
    return WalletHttp(module_reference_wallet.url)


@pytest.fixture(scope="module")
def dsn(module_reference_wallet) -> str:
    return module_reference_wallet.dsn


def projected_ledger(api: WalletHttp, dsn: str, wallet_id: str, query: str = "") -> list[dict]:
    wait_for_projectors(dsn)
    reply = api.ledger(wallet_id, query)
    assert reply.status == 200, reply.text
    assert set(reply.body) == {"walletId", "count", "transactions"}
    assert reply.body["walletId"] == wallet_id
    assert reply.body["count"] == len(reply.body["transactions"])
    for entry in reply.body["transactions"]:
        assert_ledger_entry(entry)
    return reply.body["transactions"]


def test_ledger_health_is_ok(api):
    reply = api.get("/ledger/health")
    assert reply.status == 200
    assert reply.body == {"status": "ok", "module": "ledger"}


def test_the_initial_balance_is_one_credit_entry(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-l", 300)

    [entry] = projected_ledger(api, dsn, wallet_id)
    assert entry["walletId"] == wallet_id
    assert entry["transactionType"] == "CREDIT"
    assert (entry["amount"], entry["balanceBefore"], entry["balanceAfter"]) == (300, 0, 300)
    assert entry["description"] == "Initial balance"
    assert api.summary(wallet_id).body["totalCredits"] == 300


def test_a_wallet_created_without_balance_has_an_empty_ledger(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-l")
    assert projected_ledger(api, dsn, wallet_id) == []


def test_entries_come_newest_first_and_chain_balance_before_to_balance_after(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-l", 100)
    api.credit(wallet_id, Decimal("20.50"), "top-up")
    api.debit(wallet_id, 70, "rent")
    api.credit(wallet_id, 1)

    entries = projected_ledger(api, dsn, wallet_id)
    assert [(e["transactionType"], e["amount"], e["balanceAfter"]) for e in entries] == [
        ("CREDIT", 1, Decimal("51.50")),
        ("DEBIT", 70, Decimal("50.50")),
        ("CREDIT", Decimal("20.50"), Decimal("120.50")),
        ("CREDIT", 100, 100),
    ]
    oldest_first = list(reversed(entries))
    assert oldest_first[0]["balanceBefore"] == 0
    for previous, entry in pairwise(oldest_first):
        assert entry["balanceBefore"] == previous["balanceAfter"]
    assert [e["description"] for e in entries] == [None, "rent", "top-up", "Initial balance"]
    assert len({e["referenceId"] for e in entries}) == 4


def test_a_transfer_is_a_debit_and_a_credit_naming_each_other(api, dsn):
    source, target = new_id(), new_id()
    api.create_wallet(source, "owner-l", 100)
    api.create_wallet(target, "owner-l")
    api.transfer(source, target, 35)

    [out, _initial] = projected_ledger(api, dsn, source)
    [incoming] = projected_ledger(api, dsn, target)
    assert (out["transactionType"], out["amount"], out["balanceAfter"]) == ("DEBIT", 35, 65)
    assert out["description"] == f"Transfer to wallet {target}"
    assert out["relatedWalletId"] == target
    assert (incoming["transactionType"], incoming["amount"], incoming["balanceAfter"]) == (
        "CREDIT",
        35,
        35,
    )
    assert incoming["description"] == f"Transfer from wallet {source}"
    assert incoming["relatedWalletId"] == source
    assert out["referenceId"] != incoming["referenceId"]


def test_a_transfer_description_is_used_on_both_entries(api, dsn):
    source, target = new_id(), new_id()
    api.create_wallet(source, "owner-l", 100)
    api.create_wallet(target, "owner-l")
    api.transfer(source, target, 10, "rent share")

    assert projected_ledger(api, dsn, source)[0]["description"] == "rent share"
    assert projected_ledger(api, dsn, target)[0]["description"] == "rent share"


def test_the_ledger_pages_by_limit_default_50_and_offset(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-l")
    for amount in range(1, 56):
        assert api.credit(wallet_id, amount).status == 201

    assert len(projected_ledger(api, dsn, wallet_id)) == 50
    newest = projected_ledger(api, dsn, wallet_id, "limit=3")
    assert [e["amount"] for e in newest] == [55, 54, 53]
    page = projected_ledger(api, dsn, wallet_id, "limit=3&offset=3")
    assert [e["amount"] for e in page] == [52, 51, 50]
    assert [e["amount"] for e in projected_ledger(api, dsn, wallet_id, "offset=50")] == [
        5,
        4,
        3,
        2,
        1,
    ]


def test_the_ledger_filters_by_transaction_type(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-l", 100)
    api.debit(wallet_id, 10)
    api.credit(wallet_id, 5)

    debits = projected_ledger(api, dsn, wallet_id, "transactionType=DEBIT")
    assert [(e["transactionType"], e["amount"]) for e in debits] == [("DEBIT", 10)]
    credits = projected_ledger(api, dsn, wallet_id, "transactionType=CREDIT")
    assert [e["amount"] for e in credits] == [5, 100]
    assert projected_ledger(api, dsn, wallet_id, "transactionType=TRANSFER_IN") == []


def test_the_ledger_filters_by_start_and_end_date(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-l", 100)
    api.credit(wallet_id, 5)
    now = datetime.now(UTC)
    hour = timedelta(hours=1)

    def between(start: datetime, end: datetime) -> list[dict]:
        query = f"startDate={_iso(start)}&endDate={_iso(end)}"
        return projected_ledger(api, dsn, wallet_id, query)

    assert len(between(now - hour, now + hour)) == 2
    assert between(now + hour, now + 2 * hour) == []
    assert between(now - 2 * hour, now - hour) == []
    assert len(projected_ledger(api, dsn, wallet_id, f"startDate={(now - hour).date()}")) == 2


def test_the_ledger_of_an_unknown_wallet_is_empty(api, dsn):
    wallet_id = new_id()
    assert projected_ledger(api, dsn, wallet_id) == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=ten",
        "limit=100000",
        "offset=-5",
        "transactionType=REFUND",
        "startDate=yesterday",
        "endDate=2024-13-45",
        "startDate=0001-01-01T00:00:00%2B14:00",
        "endDate=9999-12-31T23:59:59-14:00",
        "startDate=%00",
    ],
)
def test_a_bad_ledger_query_is_a_400(api, query):
    assert_error(api.ledger(new_id(), query), 400, query.split("=")[0])


def test_the_summary_totals_credits_and_debits_and_shows_the_last_entry(api, dsn):
    wallet_id, other = new_id(), new_id()
    api.create_wallet(wallet_id, "owner-l", 100)
    api.create_wallet(other, "owner-l", 100)
    api.credit(wallet_id, Decimal("2.50"))
    api.debit(wallet_id, 30)
    api.transfer(other, wallet_id, 7)
    api.transfer(wallet_id, other, 1)
    wait_for_projectors(dsn)

    reply = api.summary(wallet_id)
    assert reply.status == 200, reply.text
    body = reply.body
    assert set(body) == {
        "walletId",
        "totalCredits",
        "totalDebits",
        "transactionCount",
        "lastTransaction",
    }
    assert (body["walletId"], body["totalCredits"], body["totalDebits"]) == (
        wallet_id,
        Decimal("109.50"),
        31,
    )
    assert body["transactionCount"] == 5
    assert_ledger_entry(body["lastTransaction"])
    assert body["lastTransaction"]["amount"] == 1
    assert body["lastTransaction"]["relatedWalletId"] == other


def test_the_summary_of_an_unknown_wallet_is_zero_with_no_last_entry(api):
    wallet_id = new_id()
    reply = api.summary(wallet_id)
    assert reply.status == 200, reply.text
    assert reply.body == {
        "walletId": wallet_id,
        "totalCredits": 0,
        "totalDebits": 0,
        "transactionCount": 0,
        "lastTransaction": None,
    }


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
