"""Adoption (`--adopt-run RUN_ID`): start from the wallets of an earlier run as they are now,
instead of creating new ones. Their balances, versions and ledger entry counts are read once,
from the database in one streamed query, or from the service's API with one GET per wallet."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import gevent.pool
import psycopg
from psycopg import sql

from ..consistency.reading import CheckError, connect
from ..consistency.schema import Schema
from ..dsn import redact_dsn
from ..record import RunRecord
from ..record.ids import ID_PREFIX
from .pool import WalletPool, to_money
from .seeding import SeedResult

log = logging.getLogger(__name__)

FILE_NAME = "adoption.json"  # beside the run record: which run's wallets this run loaded
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Regular ("w") and hot ("h") wallets; a read-your-writes user makes wallets of its own.
POPULATION_SUFFIX = "[wh][0-9]{6}"
BATCH = 10_000  # rows per fetch of the streamed query


class AdoptionError(ValueError):
    """The run cannot be adopted: one line, exit code 2, before any load."""


@dataclass(frozen=True)
class Adoption:
    """Which population a run loads: the run it named, the run that created the wallets (the
    named one, or the one that run adopted in turn), how many wallets, read from where."""

    adopted_from: str
    first_run: str
    wallets: int
    source: str  # "database" or "service API"
    # what the adopted run's own check said, when it found violations: they stay in the
    # wallets' rows, so this run's check finds them again
    warning: str = ""

    def line(self) -> str:
        first = "" if self.first_run == self.adopted_from else f", created by run {self.first_run}"
        return (
            f"population adopted from run {self.adopted_from}{first}: {self.wallets} wallets,"
            f" checked against what they held when this run began (read from the {self.source})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, report_dir: Path, run_id: str) -> None:
        path = Path(report_dir) / run_id / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, report_dir: Path, run_id: str) -> Adoption | None:
        """The adoption a run's report folder records; None if it created its wallets."""
        path = Path(report_dir) / run_id / FILE_NAME
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class AdoptedWallet:
    wallet_id: str
    balance: Decimal
    version: int
    entries: int


def first_run(report_dir: Path, run_id: str) -> str:
    """The run that created run_id's wallets: run_id itself, unless it adopted them."""
    adoption = Adoption.load(report_dir, run_id)
    return adoption.first_run if adoption else run_id


def population_regex(run_id: str) -> str:
    """A PostgreSQL regular expression for the regular and hot wallets run_id created."""
    return "^" + re.escape(f"{ID_PREFIX}{run_id}-") + POPULATION_SUFFIX + "$"


def in_shard(wallet_id: str, shard: tuple[int, int]) -> bool:
    """Seeding's sharding (every count-th wallet from index), by the number in the id."""
    index, count = shard
    return int(wallet_id[-6:]) % count == index


def resolve(report_dir: Path, adopt_run: str, dsn: str | None, schema: Schema) -> Adoption:
    """Check that adopt_run names a run with wallets, and which; AdoptionError if not. With a
    DSN the database says (one count); without, the run's saved record."""
    if not RUN_ID.fullmatch(adopt_run):
        raise AdoptionError(
            f"--adopt-run: {adopt_run!r} is not a run id (letters, digits, '-' and '_', at most 64)"
        )
    first = first_run(report_dir, adopt_run)
    record_path = Path(report_dir) / adopt_run / "run-record.json"
    warning = _earlier_violations(Path(report_dir) / adopt_run / "consistency.json", adopt_run)
    if dsn:
        try:
            with connect(dsn) as conn:
                count = _count(conn, schema, first)
        except (CheckError, psycopg.Error) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else error
            raise AdoptionError(f"--adopt-run: cannot read {redact_dsn(dsn)}: {reason}") from None
        if count:
            return Adoption(adopt_run, first, count, "database", warning)
        if record_path.exists():
            raise AdoptionError(
                f"--adopt-run: run {adopt_run} has no wallets in {redact_dsn(dsn)}"
                " (none created, or cleaned up)"
            )
        raise AdoptionError(
            f"--adopt-run: no run {adopt_run}: no wallet of it in {redact_dsn(dsn)} and no saved"
            f" record at {record_path}"
        )
    if not record_path.exists():
        raise AdoptionError(
            f"--adopt-run: no run {adopt_run}: no saved record at {record_path} (with no database"
            " to read, the record says which wallets to adopt)"
        )
    count = len(record_wallet_ids(record_path))
    if not count:
        raise AdoptionError(f"--adopt-run: run {adopt_run} has no wallets: its record created none")
    return Adoption(adopt_run, first, count, "service API", warning)


def _earlier_violations(report_path: Path, run_id: str) -> str:
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(report, dict) or report.get("valid") is not False:
        return ""
    kinds = ", ".join(sorted(report.get("violations") or {}))
    return (
        f"run {run_id}'s own check found violations ({kinds}): what they broke is still in its"
        " wallets' rows, and this run's check will find it again"
    )


def record_wallet_ids(record_path: Path, shard: tuple[int, int] = (0, 1)) -> list[str]:
    """The regular and hot wallets a saved record says exist (created, or adopted in turn)."""
    try:
        record = RunRecord.load(record_path)
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as error:
        raise AdoptionError(f"--adopt-run: cannot read {record_path}: {error}") from None
    pattern = re.compile(POPULATION_SUFFIX + "$")
    return sorted(
        wallet_id
        for wallet_id, tally in record.wallets.items()
        if tally.created == "ok"
        and wallet_id not in record.unverified
        and pattern.search(wallet_id)
        and in_shard(wallet_id, shard)
    )


def _count(conn: psycopg.Connection, schema: Schema, run_id: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {table} WHERE {id} ~ %s").format(
        table=schema.table("wallets"), id=schema.col("wallets", "id")
    )
    return conn.execute(query, (population_regex(run_id),)).fetchone()[0]


def baseline_query(schema: Schema) -> sql.Composed:
    """Every population wallet of one shard with its balance, version and ledger entry count:
    the wallets found by their ids, the ledger joined to them (read once, not once per wallet)."""
    w, le = "wallets", "ledger_entries"
    return sql.SQL(
        """SELECT w.{id}, w.{balance}, w.{version}, count(l.{wallet_id})
  FROM {wallets} AS w LEFT JOIN {ledger} AS l ON l.{wallet_id} = w.{id}
 WHERE CASE WHEN w.{id} ~ %(regex)s THEN right(w.{id}, 6)::integer %% %(count)s = %(index)s END
 GROUP BY w.{id}, w.{balance}, w.{version}"""
    ).format(
        id=schema.col(w, "id"),
        balance=schema.col(w, "balance"),
        version=schema.col(w, "version"),
        wallets=schema.table(w),
        ledger=schema.table(le),
        wallet_id=schema.col(le, "walletId"),
    )


def read_from_database(
    dsn: str, schema: Schema, run_id: str, shard: tuple[int, int] = (0, 1)
) -> list[AdoptedWallet]:
    """One shard of run_id's wallets as they are now, in one streamed query (one snapshot)."""
    return list(stream_from_database(dsn, schema, run_id, shard))


def stream_from_database(
    dsn: str,
    schema: Schema,
    run_id: str,
    shard: tuple[int, int] = (0, 1),
    pause: Callable[[], None] = lambda: None,
) -> Iterator[AdoptedWallet]:
    """read_from_database's wallets as they arrive, BATCH rows a fetch, pause() between
    fetches: psycopg blocks the gevent loop, and a worker that sends no heartbeat for 3 s is
    marked missing by its master."""
    index, count = shard
    params = {"regex": population_regex(run_id), "index": index, "count": count}
    with (
        connect(dsn) as conn,
        conn.transaction(),
        conn.cursor(name="wallet_suite_adoption") as cursor,
    ):
        cursor.execute(baseline_query(schema), params)
        while rows := cursor.fetchmany(BATCH):
            for wallet_id, balance, version, entries in rows:
                yield AdoptedWallet(wallet_id, balance, version, entries)
            pause()


def read_from_service(
    client: Any, wallet_ids: list[str], concurrency: int = 50
) -> list[AdoptedWallet]:
    """The wallets as the service's ledger shows them: one GET of each one's ledger summary
    (the real service's GET /wallets/{id} answers 404). Its version is the last entry's
    eventVersion, else its entry count (the version a stream has after that many balance
    changes, the initial balance one of them). A wallet that cannot be read is left out."""
    read: list[AdoptedWallet] = []

    def one(wallet_id: str) -> None:
        with client.get(
            f"/ledger/wallet/{wallet_id}/summary",
            name="/ledger/wallet/[id]/summary (adopt)",
            catch_response=True,
        ) as response:
            try:
                body = response.json() if response.status_code == 200 else None
                entries = int(body["transactionCount"])
                last = body.get("lastTransaction") or {}
                balance = to_money(last.get("balanceAfter", 0))
                version = (last.get("metadata") or {}).get("eventVersion")
                version = int(version) if version is not None else entries
            except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError):
                response.failure(f"adopt: {response.status_code}: {(response.text or '')[:200]}")
                return
            response.success()
            read.append(AdoptedWallet(wallet_id, balance, version, entries))

    workers = gevent.pool.Pool(max(1, min(concurrency, len(wallet_ids))))
    for wallet_id in wallet_ids:
        workers.spawn(one, wallet_id)
    workers.join(raise_error=True)
    return read


def adopt(
    wallets: Iterable[AdoptedWallet], pool: WalletPool, hot_pool: WalletPool, record: RunRecord
) -> tuple[int, int]:
    """Put the wallets in the pools (hot ones in the hot pool) and their baseline in the
    record; (regular, hot) adopted."""
    regular = hot = 0
    for wallet in wallets:
        record.wallet_adopted(wallet.wallet_id, wallet.balance, wallet.version, wallet.entries)
        if wallet.wallet_id[-7] == "h":
            hot_pool.add(wallet.wallet_id, wallet.balance, wallet.version)
            hot += 1
        else:
            pool.add(wallet.wallet_id, wallet.balance, wallet.version)
            regular += 1
    return regular, hot


def load_shard(
    *,
    client: Any,
    dsn: str | None,
    schema: Schema,
    report_dir: Path,
    adopt_run: str,
    shard: tuple[int, int],
    pool: WalletPool,
    hot_pool: WalletPool,
    record: RunRecord,
) -> SeedResult:
    """This process's shard of the adopted population, in its pools and record: from the
    database when a DSN is known (the service's API if it cannot be read), else the API with
    the saved record's wallet ids. planned: wallets to adopt; created: adopted."""
    started = time.monotonic()
    first = first_run(report_dir, adopt_run)
    regular = hot = planned = 0
    read = False
    if dsn:
        try:
            regular, hot = adopt(
                stream_from_database(dsn, schema, first, shard, pause=lambda: gevent.sleep(0)),
                pool,
                hot_pool,
                record,
            )
            planned, read = regular + hot, True
        except (CheckError, psycopg.Error) as error:
            log.warning(
                "adopting run %s: cannot read %s (%s): reading the service's API instead",
                adopt_run,
                redact_dsn(dsn),
                str(error).strip().splitlines()[0] if str(error).strip() else error,
            )
    if not read:  # a connection lost midway re-reads every wallet: wallet_adopted overwrites
        ids = record_wallet_ids(Path(report_dir) / adopt_run / "run-record.json", shard)
        planned = len(ids)
        regular, hot = adopt(read_from_service(client, ids), pool, hot_pool, record)
    seconds = time.monotonic() - started
    log.info(
        "adopted %d wallets and %d hot wallets of run %s (shard %d of %d) in %.1fs",
        regular,
        hot,
        adopt_run,
        shard[0] + 1,
        shard[1],
        seconds,
    )
    return SeedResult(planned, regular + hot, seconds)
