"""Idempotency-Key on every POST: a replay answers the stored response with no second effect, a
different body under the same key is a 409, and so is a duplicate while the first is in flight."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from contract_shapes import assert_error
from polling import wait_until
from wallet_http import Reply, WalletHttp, new_id


@pytest.fixture(scope="module")
def api(module_reference_wallet) -> WalletHttp:
    return WalletHttp(module_reference_wallet.url)


@pytest.fixture(scope="module")
def dsn(module_reference_wallet) -> str:
    return module_reference_wallet.dsn


def write_side(dsn: str, wallet_id: str) -> tuple[Decimal, int, int]:
    """(balance, version, number of events) of a wallet, straight from the database."""
    with psycopg.connect(dsn) as conn:
        balance, version = conn.execute(
            "SELECT balance, version FROM wallets WHERE id = %s", (wallet_id,)
        ).fetchone()
        (events,) = conn.execute(
            "SELECT count(*) FROM events WHERE stream_id = %s", (wallet_id,)
        ).fetchone()
    return balance, version, events


def assert_replay_of(replay: Reply, original: Reply) -> None:
    assert replay.replayed, replay.headers
    assert (replay.status, replay.body) == (original.status, original.body)


def test_a_replayed_create_answers_the_stored_snapshot_and_creates_once(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    original = api.create_wallet(wallet_id, "owner-i", 70, key=key)
    assert original.status == 201 and not original.replayed

    assert_replay_of(api.create_wallet(wallet_id, "owner-i", 70, key=key), original)
    assert write_side(dsn, wallet_id) == (70, 1, 2)


@pytest.mark.parametrize(
    "operation, expected",
    [("credit", (110, 2, 3)), ("debit", (90, 2, 3)), ("transfer", (90, 2, 3))],
)
def test_a_replayed_operation_answers_the_stored_response_and_takes_effect_once(
    api, dsn, operation, expected
):
    wallet_id, other, key = new_id(), new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    api.create_wallet(other, "owner-i")

    def send() -> Reply:
        if operation == "transfer":
            return api.transfer(wallet_id, other, 10, key=key)
        return getattr(api, operation)(wallet_id, 10, key=key)

    original = send()
    assert original.status == 201, original.text
    for _ in range(3):
        assert_replay_of(send(), original)
    assert write_side(dsn, wallet_id) == expected
    if operation == "transfer":
        assert write_side(dsn, other)[0] == 10


def test_the_same_key_with_a_different_amount_is_a_409_and_applies_nothing(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    assert api.credit(wallet_id, 5, key=key).status == 201

    assert_error(api.credit(wallet_id, 6, key=key), 409, "different request")
    assert write_side(dsn, wallet_id) == (105, 2, 3)


def test_the_same_key_on_another_wallet_or_route_is_a_409(api, dsn):
    wallet_id, other, key = new_id(), new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    api.create_wallet(other, "owner-i", 100)
    assert api.credit(wallet_id, 5, key=key).status == 201

    assert_error(api.credit(other, 5, key=key), 409)
    assert_error(api.debit(wallet_id, 5, key=key), 409)
    assert_error(api.create_wallet(new_id(), "owner-i", key=key), 409)
    assert write_side(dsn, other) == (100, 1, 2)


def test_a_refusal_is_replayed_as_a_refusal(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 10)
    refused = api.debit(wallet_id, 50, key=key)
    assert_error(refused, 400, "insufficient funds")
    api.credit(wallet_id, 100)

    assert_replay_of(api.debit(wallet_id, 50, key=key), refused)
    assert write_side(dsn, wallet_id) == (110, 2, 3)


def test_a_create_of_an_existing_wallet_replays_its_409(api):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i")
    conflict = api.create_wallet(wallet_id, "owner-i", key=key)
    assert_error(conflict, 409, "already exists")
    assert_replay_of(api.create_wallet(wallet_id, "owner-i", key=key), conflict)


def test_a_request_refused_by_validation_does_not_use_up_its_key(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i")
    assert_error(api.credit(wallet_id, -5, key=key), 400, "amount")

    assert api.credit(wallet_id, 5, key=key).status == 201
    assert write_side(dsn, wallet_id) == (5, 1, 2)


def test_a_duplicate_while_the_first_is_in_flight_is_a_409(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    with psycopg.connect(dsn) as blocker:
        # Holding the wallet's row lock keeps the first request in flight, its key pending.
        blocker.execute("SELECT 1 FROM wallets WHERE id = %s FOR UPDATE", (wallet_id,))
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(api.credit, wallet_id, 5, key=key)
            wait_until(lambda: key_status(dsn, key) == "pending", 10, "the first request's key")

            assert_error(api.credit(wallet_id, 5, key=key), 409, "in flight")
            assert_error(api.credit(wallet_id, 7, key=key), 409)
            blocker.rollback()
            original = first.result(timeout=10)

    assert original.status == 201, original.text
    assert_replay_of(api.credit(wallet_id, 5, key=key), original)
    assert write_side(dsn, wallet_id) == (105, 2, 3)


def test_simultaneous_duplicates_take_effect_once(api, dsn):
    wallet_id, other, key = new_id(), new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    api.create_wallet(other, "owner-i")
    start = threading.Barrier(12)

    def send(_: int) -> Reply:
        start.wait(timeout=10)
        return api.transfer(wallet_id, other, 1, key=key)

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(send, range(12)))

    firsts = [r for r in replies if r.status == 201 and not r.replayed]
    assert len(firsts) == 1, [(r.status, r.text) for r in replies]
    for reply in replies:
        if reply is firsts[0]:
            continue
        if reply.status == 409:
            assert_error(reply, 409)
        else:
            assert_replay_of(reply, firsts[0])
    assert write_side(dsn, wallet_id) == (99, 2, 3)
    assert write_side(dsn, other) == (1, 1, 2)


def test_an_expired_key_can_be_used_again(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i")
    assert api.credit(wallet_id, 5, key=key).status == 201
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = %s",
            (key,),
        )

    reply = api.credit(wallet_id, 8, key=key)
    assert reply.status == 201 and not reply.replayed, reply.text
    assert write_side(dsn, wallet_id) == (13, 2, 3)


def test_without_a_key_the_same_credit_twice_is_two_credits(api, dsn):
    wallet_id = new_id()
    api.create_wallet(wallet_id, "owner-i")
    assert api.credit(wallet_id, 5).status == 201
    assert api.credit(wallet_id, 5).status == 201
    assert write_side(dsn, wallet_id) == (10, 2, 3)


def key_status(dsn: str, key: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status FROM idempotency_keys WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def make_claim_stale(dsn: str, key: str) -> None:
    """Age a pending claim past the service's staleness bound, as if minutes had passed."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET created_at = created_at - interval '1 hour'"
            " WHERE key = %s AND status = 'pending'",
            (key,),
        )


def claimant_alive(dsn: str, key: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = k.claimed_by)"
            " FROM idempotency_keys AS k WHERE key = %s",
            (key,),
        ).fetchone()
    return bool(row and row[0])


def test_a_key_whose_request_died_with_the_service_can_be_retried_at_once(
    reference_wallet, database_dsn
):
    """The claim's connection ended with the killed service: the key is free for a retry without
    waiting for the claim to go stale (30 s), which is what a retry after a crash needs."""
    service = reference_wallet()
    api, wallet_id, key = WalletHttp(service.url), new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    with psycopg.connect(database_dsn) as blocker:
        blocker.execute("SELECT 1 FROM wallets WHERE id = %s FOR UPDATE", (wallet_id,))
        with ThreadPoolExecutor(1) as pool:
            doomed = pool.submit(api.credit, wallet_id, 5, key=key)
            wait_until(lambda: key_status(database_dsn, key) == "pending", 10, "the claim")
            service.kill()
            assert doomed.exception(timeout=10) is not None
        blocker.rollback()

    api = WalletHttp(reference_wallet().url)
    wait_until(lambda: not claimant_alive(database_dsn, key), 10, "the claimant's backend to end")
    retry = api.credit(wallet_id, 5, key=key)
    assert retry.status == 201 and not retry.replayed, retry.text
    assert_replay_of(api.credit(wallet_id, 5, key=key), retry)
    assert write_side(database_dsn, wallet_id) == (105, 2, 3)


def test_a_slow_request_whose_stale_key_was_taken_over_has_no_effect(api, dsn):
    wallet_id, key = new_id(), new_id("key")
    api.create_wallet(wallet_id, "owner-i", 100)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("SELECT 1 FROM wallets WHERE id = %s FOR UPDATE", (wallet_id,))
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(api.credit, wallet_id, 5, key=key)
            wait_until(lambda: key_status(dsn, key) == "pending", 10, "the slow request's claim")
            make_claim_stale(dsn, key)
            retry = pool.submit(api.credit, wallet_id, 5, key=key)
            wait_until(
                lambda: key_status(dsn, key) == "pending" and claim_is_fresh(dsn, key),
                10,
                "the retry to take the key over",
            )
            blocker.rollback()
            replies = [slow.result(timeout=10), retry.result(timeout=10)]

    assert sorted(r.status for r in replies) == [201, 409], [r.text for r in replies]
    assert_error(next(r for r in replies if r.status == 409), 409, "taken over")
    assert write_side(dsn, wallet_id) == (105, 2, 3)


def claim_is_fresh(dsn: str, key: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT created_at > now() - interval '1 minute' FROM idempotency_keys WHERE key = %s",
            (key,),
        ).fetchone()
    return bool(row and row[0])
