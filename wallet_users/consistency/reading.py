"""The SQL side of the consistency check: waiting for the projectors to drain, then reading the
facts in one read-only REPEATABLE READ transaction, one set-based pass per table where one will do
(never one query per wallet). The run's wallets and acknowledged snapshots travel as binary arrays
packed once, and rows come back keyed by the wallet's position in that array."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal

import psycopg
from psycopg import conninfo, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from ..record.history import RECORD_SIZE, RunHistory
from ..record.ids import run_regex
from .facts import (
    EntryRow,
    EventRow,
    Facts,
    Lag,
    LedgerSummary,
    OutboxSummary,
    SnapshotCheck,
    WalletDetail,
    WriteSide,
)
from .schema import CONSUMERS, DEFAULT_SCHEMA, Schema

log = logging.getLogger(__name__)

# The run's wallets with their 1-based position n in the ids array: rows come back keyed by n.
# Sent in binary and packed once (PackedArray): psycopg dumping 100,000 ids element by element
# cost the client about 0.2 s per query. Rows come back keyed by the wallet id.
RUN_WALLETS = sql.SQL("run_wallets(id) AS (SELECT unnest(%(ids)b::text[]))")
# Inconsistent wallets whose rows are read for their causes and first divergence, at most.
DETAIL_CAP = 20_000
# Memory for each sort and hash of the check's queries: with the server's default (often 4 MB)
# a large run's sorts and hashes spill to temporary files.
WORK_MEM = "256MB"


# Projection lag percentiles come from a histogram of buckets LAG_RATIO wide (no sort of every
# processing row): each estimate is within LAG_ERROR of the exact percentile_cont, relatively.
LAG_RATIO = 1.01
LAG_ERROR = (LAG_RATIO - 1) / 2
LAG_FLOOR_MS = 0.001  # lags below a microsecond share one bucket


class PackedArray:
    """A one-dimensional PostgreSQL array already in the binary wire format: built once (from
    Python values or straight from the history's packed records) and sent as is, where psycopg
    would dump a 100,000-element list element by element for every query."""

    __slots__ = ("data",)
    TEXT, INT4, INT8 = 25, 23, 20

    def __init__(self, data: bytes) -> None:
        self.data = data

    @staticmethod
    def header(element_oid: int, length: int) -> bytes:
        if not length:
            return struct.pack(">iii", 0, 0, element_oid)
        return struct.pack(">iiiii", 1, 0, element_oid, length, 1)

    @classmethod
    def of_text(cls, values: Sequence[str]) -> PackedArray:
        encoded = [v.encode() for v in values]
        lengths = struct.pack(f">{len(encoded)}i", *map(len, encoded))
        parts = [lengths[i * 4 : i * 4 + 4] + e for i, e in enumerate(encoded)]
        return cls(cls.header(cls.TEXT, len(encoded)) + b"".join(parts))

    @classmethod
    def of_int4(cls, values: Sequence[int]) -> PackedArray:
        return cls.of_ints(values, 4)

    @classmethod
    def of_int8(cls, values: Sequence[int]) -> PackedArray:
        return cls.of_ints(values, 8)

    @classmethod
    def of_ints(cls, values: Sequence[int], width: int) -> PackedArray:
        """An int4[] (width 4) or int8[] (width 8) of these values."""
        raw = array("i" if width == 4 else "q", values)
        if sys.byteorder == "little":
            raw.byteswap()
        return cls.interleaved(cls.INT4 if width == 4 else cls.INT8, bytes(raw), width)

    @classmethod
    def interleaved(cls, element_oid: int, big_endian: bytes, width: int) -> PackedArray:
        """Elements of `width` bytes each, big-endian, back to back: each gets its length word."""
        n = len(big_endian) // width
        out = bytearray((4 + width) * n)
        out[3 :: 4 + width] = bytes([width]) * n
        for k in range(width):
            out[4 + k :: 4 + width] = big_endian[k::width]
        return cls(cls.header(element_oid, n) + bytes(out))

    @classmethod
    def record_field(cls, records: bytes, offset: int, width: int, as_width: int) -> PackedArray:
        """One little-endian field of fixed-size packed records (history.RECORD) as an int4 or
        int8 array, by byte slicing: no Python loop per record. Unsigned fields narrower than
        the element are zero-extended."""
        n = len(records) // RECORD_SIZE
        element = bytearray(as_width * n)
        for k in range(width):  # big-endian byte k of the element is little-endian byte width-1-k
            element[as_width - width + k :: as_width] = records[
                offset + width - 1 - k :: RECORD_SIZE
            ]
        return cls.interleaved(cls.INT8 if as_width == 8 else cls.INT4, bytes(element), as_width)


class _PackedDumper(Dumper):
    format = Format.BINARY
    oid = 0  # unknown: the query's cast (::text[], ::int4[]) names the type

    def dump(self, obj: PackedArray) -> bytes:
        return obj.data


def _register(conn: psycopg.Connection) -> None:
    conn.adapters.register_dumper(PackedArray, _PackedDumper)


def _limit(conn: psycopg.Connection, statement_timeout_s: float) -> None:
    """The check's limits for the transaction: its statement timeout and WORK_MEM."""
    timeout = sql.Literal(f"{int(statement_timeout_s * 1000)}ms")
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(timeout))
    conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(WORK_MEM)))


def _fetch(conn: psycopg.Connection, query, params, **settings: str) -> list[tuple]:
    """Every row of one query (binary, in one call: iterating the cursor cost about 10 us per
    row) run under planner settings that are then put back as they were."""
    prior = {
        name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
        for name in settings
    }
    for name, value in settings.items():
        conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    rows = conn.execute(query, params, binary=True).fetchall()
    for name, value in prior.items():
        conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    return rows


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused: the check builds a few hundred thousand small
    objects (a summary per wallet and table), none in a cycle, and each collection pass over
    them and the run's record cost about 0.05 s per 100,000 at a million live objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class CheckError(RuntimeError):
    """The check could not run: unreachable database, bad credentials, no contract tables."""


BAD_DSN = "the DSN is not a valid connection string (key=value pairs or a postgresql:// URI)"


def connect(dsn: str, timeout: float = 10.0) -> psycopg.Connection:
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # not libpq's message: it quotes the fragment it choked on, which may be the password
        raise CheckError(f"cannot connect: {BAD_DSN}") from None
    try:
        return psycopg.connect(dsn, connect_timeout=max(1, int(timeout)), autocommit=True)
    except psycopg.OperationalError as error:
        raise CheckError(f"cannot connect: {libpq_reason(error)}") from None


def libpq_reason(error: BaseException) -> str:
    """The line of a libpq error that says why ('... failed: FATAL: password authentication
    failed for user ...'), not its hint."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "FATAL" in line or "failed:" in line or "timeout" in line:
            return line
    return lines[0] if lines else type(error).__name__


def missing_tables(conn: psycopg.Connection, schema: Schema) -> dict[str, str]:
    missing = {}
    for logical in schema.tables:
        # quoted, as every query names it: unquoted, to_regclass folds "LedgerEntries" to lower case
        quoted = schema.table(logical).as_string(conn)
        found = conn.execute("SELECT to_regclass(%s)", (quoted,)).fetchone()[0]
        if found is None:
            missing[logical] = f"table {schema.physical(logical)} does not exist"
    return missing


def run_wallet_ids(conn: psycopg.Connection, schema: Schema, run_id: str) -> list[str]:
    """Every write-side wallet of the run, found by its id: for wallets no record knows of
    (made by a worker that died before reporting)."""
    t = "wallets"
    query = sql.SQL("SELECT {id} FROM {table} WHERE {id} ~ %s").format(
        id=schema.col(t, "id"), table=schema.table(t)
    )
    return [row[0] for row in conn.execute(query, (run_regex(run_id),))]


def backlog(
    conn: psycopg.Connection, schema: Schema, wallet_ids: list[str] | PackedArray
) -> dict[str, int]:
    """Per consumer: the run's outbox events it has not processed yet."""
    _register(conn)
    if not isinstance(wallet_ids, PackedArray):
        wallet_ids = PackedArray.of_text(wallet_ids)
    o, p = "outbox", "outbox_consumer_processing"
    query = sql.SQL(
        "WITH {run} SELECT c.name, count(ev.id) FROM unnest(%(consumers)s::text[]) AS c(name)"
        " LEFT JOIN LATERAL (SELECT o.{oid} AS id FROM {outbox} AS o JOIN run_wallets AS r ON r.id = o.{agg}"
        "   WHERE NOT EXISTS (SELECT 1 FROM {proc} AS p WHERE p.{pev} = o.{oid} AND p.{pcons} = c.name)"
        " ) AS ev ON true GROUP BY c.name"
    ).format(
        run=RUN_WALLETS,
        outbox=schema.table(o),
        proc=schema.table(p),
        oid=schema.col(o, "id"),
        agg=schema.col(o, "aggregate_id"),
        pev=schema.col(p, "outbox_event_id"),
        pcons=schema.col(p, "consumer_name"),
    )
    rows = conn.execute(query, {"ids": wallet_ids, "consumers": list(CONSUMERS)}).fetchall()
    return {name: count for name, count in rows}


def current_snapshot(conn: psycopg.Connection) -> str:
    """The database's snapshot, 'xmin:xmax:in-progress ids': two equal ones mean no
    transaction ended between them (txid_current_snapshot, not PostgreSQL 13's
    pg_current_snapshot, so that an older server works too)."""
    return conn.execute("SELECT txid_current_snapshot()::text").fetchone()[0]


QUIET_SECONDS = 0.5  # longer than any command's commit takes after its answer was cut short


def quiet_since(
    conn: psycopg.Connection,
    snapshot: str,
    taken_at: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """wait_for_drain's "empty twice, QUIET_SECONDS apart" for a read that found the backlog
    empty in `snapshot` (taken at time.monotonic() `taken_at`): True when QUIET_SECONDS after
    it the database's snapshot is the same (no transaction ended: a second read would read the
    same), so that read needs no second one."""
    rest = QUIET_SECONDS - (time.monotonic() - taken_at)
    if rest > 0:
        sleep(rest)
    return current_snapshot(conn) == snapshot


def wait_for_drain(
    conn: psycopg.Connection,
    schema: Schema,
    wallet_ids: list[str],
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    log_every: float = 2.0,
    confirm: Callable[[], dict[str, int]] | None = None,
) -> tuple[bool, float, dict[str, int]]:
    """Poll the backlog until both consumers have processed every event of the run, or timeout.
    Returns (drained, seconds waited, last backlog).

    Empty twice, QUIET_SECONDS apart: a command the stop cut short may still be committing its
    events (an empty backlog read just before they land would let the check see them
    unprocessed and report a false alarm). `confirm`, if given, is the second read instead of
    a poll: the facts' own read, whose outbox pass counts the same backlog (one poll less);
    when it returns an empty backlog the wait ends right after it."""
    started = time.monotonic()
    last_log = started
    empty_since: float | None = None
    packed = PackedArray.of_text(wallet_ids)
    while True:
        quiet = empty_since is not None and time.monotonic() - empty_since >= QUIET_SECONDS
        pending = confirm() if quiet and confirm else backlog(conn, schema, packed)
        waited = time.monotonic() - started
        if not any(pending.values()):
            if quiet:
                return True, waited, pending
            if empty_since is None:
                empty_since = time.monotonic()
            if waited < timeout:
                sleep(QUIET_SECONDS)
                continue
            return True, waited, pending
        empty_since = None
        if waited >= timeout:
            return False, waited, pending
        if time.monotonic() - last_log >= log_every:
            last_log = time.monotonic()
            log.info(
                "waiting for the projectors: %s (%.0fs of %.0fs)",
                ", ".join(f"{name} {count} behind" for name, count in pending.items()),
                waited,
                timeout,
            )
        sleep(min(2.0, 0.2 + waited / 10))  # back off: the poll reads the target's database


def read_facts(
    conn: psycopg.Connection,
    schema: Schema,
    wallet_ids: list[str],
    statement_timeout_s: float = 120,
    *,
    history: RunHistory | None = None,
    needs_detail: Callable[[Facts], list[str]] | None = None,
    detail_cap: int = DETAIL_CAP,
    beside: psycopg.Connection | None = None,
) -> Facts:
    """Read every fact the checker needs in one read-only REPEATABLE READ snapshot: the
    set-based aggregates over the run's wallets, the acknowledged snapshots against the ledger,
    then, for the wallets `needs_detail` (the checker's own choice) names, their rows.

    With `beside`, a second connection to the same database, the outbox and lag passes, the
    write side and the read model (and the transfers' legs, where the ledger's columns do not
    carry them) run there while the ledger's passes run here, in the same snapshot (exported and
    imported): the same facts, the two sides overlapping where a core is free."""
    facts = Facts(tables_missing=missing_tables(conn, schema))
    _register(conn)
    wallet_ids = list(wallet_ids)
    params = {
        "ids": PackedArray.of_text(wallet_ids),
        "consumers": list(CONSUMERS),
        "wallet_ids": wallet_ids,
    }
    # the snapshots as arrays for the SQL passes: built only if one of them runs (the ledger's
    # columns compare the snapshots from the history itself)
    snapshots = functools.cache(lambda: _history_params(history, wallet_ids)) if history else None
    unique = unique_constraints(conn, schema)
    once = PROCESSED_ONCE in unique
    outbox: _Beside | None = None
    conn.autocommit = False
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # the collector paused: the summaries are a few hundred thousand objects, none in a cycle
        with conn.transaction(), collector_paused():
            _limit(conn, statement_timeout_s)
            facts.snapshot = current_snapshot(conn)  # the first query: the transaction's own
            facts.snapshot_at = time.monotonic()
            have = lambda *tables: not any(t in facts.tables_missing for t in tables)  # noqa: E731
            # beside: the outbox and lag passes, the write side and the read model; here, the
            # ledger's columns, which carry the transfers' legs too where the ledger's amounts
            # let them be exact (else the transfers are a pass of their own, beside)
            from . import ledger_columns  # numpy: only in the process that checks

            carried = ledger_columns.amount_scale(conn, schema) if have("ledger_entries") else None
            passes: dict[str, Callable[[psycopg.Connection], object]] = {}
            read_beside: dict[str, str] = {}  # read_by of the passes beside, merged after them
            if have("outbox", "outbox_consumer_processing") and beside is not None:
                passes["outbox"] = lambda c: _outbox_and_lag(c, schema, params, once, read_beside)
                if have("ledger_entries") and carried is None:
                    passes["transfers"] = lambda c: _transfer_imbalances(c, schema, params)
                if have("wallets"):
                    passes["write_side"] = lambda c: _write_side(c, schema, params)
                if have("wallets_read_model"):
                    passes["read_model"] = lambda c: _read_model(c, schema, params)
                snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
                outbox = _Beside(beside, snapshot, statement_timeout_s)
                outbox.start(lambda c: {name: read(c) for name, read in passes.items()})
            if have("wallets") and "write_side" not in passes:
                facts.write_side = _write_side(conn, schema, params)
            if have("wallets_read_model") and "read_model" not in passes:
                facts.read_model = _read_model(conn, schema, params)
            if have("ledger_entries"):
                facts.ledger, doubled, screened, imbalances = _read_ledger(
                    conn, schema, carried, params, history, snapshots, facts.read_by
                )
                if "ledger_entries.referenceId" in unique:
                    facts.duplicate_references = []
                    facts.proved_by_constraint["duplicate referenceIds"] = unique[
                        "ledger_entries.referenceId"
                    ]
                else:
                    facts.duplicate_references = _duplicate_references(conn, schema, params)
                facts.duplicate_event_entries = (
                    _duplicate_event_entries(
                        conn, schema, {**params, "ids": PackedArray.of_text(doubled)}
                    )
                    if doubled
                    else []
                )
                if imbalances is not None:
                    facts.transfer_imbalances = imbalances
                elif "transfers" not in passes:
                    facts.transfer_imbalances = _transfer_imbalances(conn, schema, params)
                _check_snapshots(conn, schema, params, facts, snapshots, screened)
            if have("outbox", "outbox_consumer_processing"):
                if outbox is not None:
                    found = outbox.result()
                    facts.read_by.update(read_beside)
                    facts.outbox, facts.lag = found["outbox"]
                    facts.transfer_imbalances = found.get("transfers", facts.transfer_imbalances)
                    facts.write_side = found.get("write_side", facts.write_side)
                    facts.read_model = found.get("read_model", facts.read_model)
                else:
                    facts.outbox, facts.lag = _outbox_and_lag(
                        conn, schema, params, once, facts.read_by
                    )
                if once:
                    facts.proved_by_constraint["events processed twice"] = unique[PROCESSED_ONCE]
            if have("projector_checkpoints"):
                facts.checkpoints = _checkpoints(conn, schema)
            if needs_detail is not None:
                flagged = needs_detail(facts)
                facts.details_left_out = max(0, len(flagged) - detail_cap)
                facts.details = _details(conn, schema, flagged[:detail_cap], facts, history)
    finally:
        conn.autocommit = True
        if outbox is not None:
            outbox.finish()
    return facts


class _Beside:
    """One pass of the facts on a second connection, in a thread, inside the main
    transaction's snapshot (SET TRANSACTION SNAPSHOT): the same facts as if read in line."""

    def __init__(self, conn: psycopg.Connection, snapshot: str, statement_timeout_s: float) -> None:
        self.conn, self.snapshot, self.timeout = conn, snapshot, statement_timeout_s
        self.thread: threading.Thread | None = None
        self.value: object = None
        self.error: BaseException | None = None

    def start(self, read: Callable[[psycopg.Connection], object]) -> None:
        def run() -> None:
            conn = self.conn
            try:
                _register(conn)
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute(
                    sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot))
                )
                _limit(conn, self.timeout)
                self.value = read(conn)
            except BaseException as error:  # raised again in the caller's thread
                self.error = error
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")  # read only: nothing to keep

        self.thread = threading.Thread(target=run, name="consistency-beside", daemon=True)
        self.thread.start()

    def result(self) -> object:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def finish(self) -> None:
        """Wait for the thread when the caller stopped early (its own query failed)."""
        if self.thread is not None and self.thread.is_alive():
            self.conn.cancel_safe()
            self.thread.join()


# The key unique_constraints gives the contract's UNIQUE (outbox_event_id, consumer_name).
PROCESSED_ONCE = "outbox_consumer_processing.outbox_event_id,consumer_name"


def unique_constraints(conn: psycopg.Connection, schema: Schema) -> dict[str, str]:
    """The contract's uniqueness rules the database itself enforces, found in the catalog (a
    unique index on exactly those columns, no predicate, valid): 'table.column' -> index name.
    The check then need not look for duplicates that cannot exist; a service without the index
    is checked the long way."""
    wanted = {
        "ledger_entries.referenceId": ("ledger_entries", ["referenceId"]),
        PROCESSED_ONCE: ("outbox_consumer_processing", ["outbox_event_id", "consumer_name"]),
    }
    found = {}
    for key, (logical, columns) in wanted.items():
        names = [schema.columns[logical][c] for c in columns]
        row = conn.execute(
            """SELECT i.indexrelid::regclass::text FROM pg_index AS i
                WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = %s
                  AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                         FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                         JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                        WHERE k.ord <= i.indnkeyatts) = %s::text[]
                LIMIT 1""",
            (schema.table(logical).as_string(conn), len(names), names),
        ).fetchone()
        if row:
            found[key] = f"unique index {row[0]} on {schema.physical(logical)} ({', '.join(names)})"
    return found


def _write_side(conn, schema: Schema, params) -> dict[str, WriteSide]:
    t = "wallets"
    query = sql.SQL(
        "WITH {run} SELECT w.{id}, w.{balance}, w.{version} FROM {table} AS w"
        " JOIN run_wallets AS r ON r.id = w.{id}"
    ).format(
        run=RUN_WALLETS,
        table=schema.table(t),
        id=schema.col(t, "id"),
        balance=schema.col(t, "balance"),
        version=schema.col(t, "version"),
    )
    return {
        wid: WriteSide(balance, version)
        for wid, balance, version in conn.execute(query, params, binary=True).fetchall()
    }


def _read_model(conn, schema: Schema, params) -> dict[str, Decimal]:
    t = "wallets_read_model"
    query = sql.SQL(
        "WITH {run} SELECT m.{id}, m.{balance} FROM {table} AS m JOIN run_wallets AS r ON r.id = m.{id}"
    ).format(
        run=RUN_WALLETS,
        table=schema.table(t),
        id=schema.col(t, "id"),
        balance=schema.col(t, "balance"),
    )
    return dict(conn.execute(query, params, binary=True).fetchall())


def _ledger_columns(schema: Schema) -> dict[str, sql.Composable]:
    t = "ledger_entries"
    cols = {key: schema.col(t, key, "l") for key in DEFAULT_SCHEMA[t]}
    cols["table"] = schema.table(t)
    cols["signed"] = sql.SQL(
        "CASE WHEN l.{type}::text IN ('CREDIT', 'TRANSFER_IN') THEN l.{amount} ELSE -l.{amount} END"
    ).format(type=schema.col(t, "transactionType"), amount=schema.col(t, "amount"))
    # a wallet's entries in event order: the event version the projector keeps in metadata,
    # else creation time, else id (the real service keeps no version)
    cols["order"] = sql.SQL("({m} ->> 'eventVersion')::integer, {c}, {i}").format(
        m=cols["metadata"], c=cols["createdAt"], i=cols["id"]
    )
    return cols


# The run's wallets with their 1-based position n in the ids array, for the passes that sort or
# group by wallet: integers sort and hash faster than the ids, and rows come back keyed by n.
RUN_POSITIONS = sql.SQL(
    "run_wallets(id, n) AS (SELECT unnest(%(ids)b::text[]), generate_series(1, cardinality(%(ids)b::text[])))"
)
# No history: the ledger pass's snapshot screen then joins nothing.
NO_HISTORY = {
    "h_n": PackedArray.of_int4([]),
    "h_bases": PackedArray.of_int4([]),
    "h_starts": PackedArray.of_int8([]),
    "h_idx": PackedArray.of_int4([]),
    "h_ver": PackedArray.of_int4([]),
    "h_cents": PackedArray.of_int8([]),
    "h_kind": PackedArray.of_int4([]),
}
# The acknowledged snapshots (history.RECORD columns) as rows: the wallet's position in the run's
# ids (h_n maps each history wallet to it, 0 for none: no join of a million rows on the ids),
# the version, the balance in cents. The arrays unnest in step in select lists (a
# ProjectSet), not WITH ORDINALITY, which first copies a million rows into a tuplestore.
SNAPSHOT_ROWS = """
    SELECT s.n, s.version, s.cents
      FROM (SELECT (%(h_n)s::int4[])[
                       idx + (%(h_bases)s::int4[])[width_bucket(ord, %(h_starts)s::int8[])] + 1
                   ] AS n, version, cents, kind
              FROM (SELECT unnest(%(h_idx)s::int4[]) AS idx, unnest(%(h_ver)s::int4[]) AS version,
                           unnest(%(h_cents)s::int8[]) AS cents, unnest(%(h_kind)s::int4[]) AS kind,
                           generate_series(1::bigint, cardinality(%(h_idx)s::int4[])) AS ord) AS r
           ) AS s
     WHERE s.n > 0  -- a wallet of the run
       AND NOT (s.kind = 0 AND s.version = 0)  -- a creation with no initial balance: no entry
"""


def _ledger(
    conn, schema: Schema, params, history: dict | None = None
) -> tuple[dict[str, LedgerSummary], list[str], dict[str, int | None]]:
    """Per wallet, in one window pass over its entries in order: the sums, the chain, the
    first and last balances, ties, and whether two of its entries may carry the same event (a
    hash of metadata.eventId seen twice: those wallets alone are then read for the exact
    duplicates, a collision costing one more small query and never a missed duplicate).

    The same pass compares the acknowledged snapshots: where a wallet has one entry per version
    from its lowest to its highest, its balances by version are an array, and each snapshot
    joins its wallet's row (100,000 rows, not a million (wallet, version) groups). The third
    value maps such wallets to their SnapshotCheck, and every other wallet with snapshots (a
    duplicate version, a gap, no entry) to None: _check_snapshots compares those one by one."""
    c = _ledger_columns(schema)
    # is_last (no next entry in the wallet's order) comes from the same window as the rest: a
    # count(*) over the partition took a second window pass over every entry.
    # The metadata is read below the window: sorting the whole jsonb with each entry made the
    # sort three times wider and spill to disk.
    query = sql.SQL(
        """WITH {run}, l AS (
    SELECT r.n AS wallet, {id} AS entry, {createdAt} AS created, {balanceBefore} AS before,
           {balanceAfter} AS after, {signed} AS signed,
           ({metadata} ->> 'eventVersion')::integer AS version,
           hashtextextended({metadata} ->> 'eventId', 0) AS event_hash
      FROM {table} AS l JOIN run_wallets AS r ON r.id = {walletId}
    OFFSET 0  -- computed here, below the sort
), e AS (
    SELECT wallet, entry, created, before, after, signed, event_hash, version,
           lag(after) OVER w AS prev_after,
           row_number() OVER w AS position,
           lead(true) OVER w IS NULL AS is_last,
           -- no event version and the same createdAt as a neighbour: the order is a guess
           (version IS NULL AND (created = lag(created) OVER w OR created = lead(created) OVER w))
               AS tied,
           version IS NULL AS unversioned,
           -- another entry of the same version
           -- (false, not null, at either end: bool_or below must see a value for every wallet)
           coalesce(lag(version) OVER w = version OR lead(version) OVER w = version, false)
               AS shared
      FROM l
    WINDOW w AS (PARTITION BY wallet ORDER BY version, created, entry)
), flagged AS (
    SELECT *, (prev_after IS NOT NULL AND before <> prev_after) AS chain_break,
              (after <> before + signed) AS arithmetic_break
      FROM e
), g AS MATERIALIZED (
SELECT wallet, count(*) AS entries, sum(signed) AS total,
       max(after) FILTER (WHERE is_last) AS last_after,
       max(before) FILTER (WHERE position = 1) AS first_before,
       least(min(before), min(after)) AS lowest,
       count(*) FILTER (WHERE chain_break) AS chains, count(*) FILTER (WHERE arithmetic_break) AS ariths,
       -- in the window's order, as the rows come (position's order, spelt out so that the
       -- planner sees it: no sort per wallet and aggregate)
       (array_agg(ARRAY[entry::text, before::text, prev_after::text]
                  ORDER BY version, created, entry) FILTER (WHERE chain_break))[1:1] AS chain_ex,
       (array_agg(ARRAY[entry::text, before::text, signed::text, after::text]
                  ORDER BY version, created, entry) FILTER (WHERE arithmetic_break))[1:1] AS arith_ex,
       count(*) FILTER (WHERE tied) AS tied, count(*) FILTER (WHERE unversioned) AS unversioned,
       count(event_hash) > count(DISTINCT event_hash) AS twice,
       -- one entry per version from the lowest to the highest: the balance after version v is
       -- afters[v - first_version + 1], and a version outside them has no entry
       coalesce(count(*) = max(version) - min(version) + 1 AND NOT bool_or(shared), false)
           AS contiguous,
       min(version) AS first_version,
       array_agg(after ORDER BY version, created, entry) AS afters
  FROM flagged GROUP BY wallet
), compared AS (
    SELECT h.n, h.version, h.cents, g.contiguous,
           g.afters[h.version - g.first_version + 1] AS low
      FROM ({snapshots}) AS h LEFT JOIN g ON g.wallet = h.n
), hc AS (
    SELECT n, count(*) AS checked, count(*) FILTER (WHERE bad) AS mismatched,
           -- the lowest version's: an order-free aggregate, so hashed (no sort of a million rows)
           min(ARRAY[version, cents, low]) FILTER (WHERE bad) AS first,
           coalesce(bool_and(contiguous), false) AS exact
      FROM (SELECT *, (low IS NULL OR low * 100 <> cents) AS bad FROM compared) AS c
     GROUP BY n
)
SELECT coalesce(g.wallet, hc.n), g.entries, g.total, g.last_after, g.first_before, g.lowest,
       g.chains, g.ariths, g.chain_ex, g.arith_ex, g.tied, g.unversioned, g.twice,
       hc.checked, hc.mismatched, hc.first, hc.exact
  FROM g FULL JOIN hc ON hc.n = g.wallet"""
    ).format(run=RUN_POSITIONS, snapshots=sql.SQL(SNAPSHOT_ROWS), **c)
    ids = params["wallet_ids"]
    summaries = {}
    doubled = []
    screened: dict[str, SnapshotCheck | None] = {}
    # Without statistics on the arrays the planner sorts the million snapshots and entries for
    # merge joins; hash joins cost less.
    rows = _fetch(conn, query, {**params, **(history or NO_HISTORY)}, enable_mergejoin="off")
    for row in rows:
        (
            n,
            entries,
            total,
            last_after,
            first_before,
            lowest,
            chains,
            ariths,
            chain_ex,
            arith_ex,
            tied,
            unversioned,
            twice,
            checked,
            mismatched,
            first,
            exact,
        ) = row
        wallet = ids[n - 1]
        if checked is not None:
            screened[wallet] = (
                SnapshotCheck(checked, mismatched, _first_mismatch(first)) if exact else None
            )
        if entries is None:
            continue  # snapshots, no entry
        summaries[wallet] = LedgerSummary(
            entries=entries,
            signed_sum=total,
            last_after=last_after,
            first_before=first_before,
            lowest=lowest,
            chain_breaks=chains,
            arithmetic_breaks=ariths,
            first_break=(chain_ex[0][0], Decimal(chain_ex[0][1]), Decimal(chain_ex[0][2]))
            if chain_ex
            else None,
            first_arithmetic=tuple([arith_ex[0][0], *map(Decimal, arith_ex[0][1:])])
            if arith_ex
            else None,
            ambiguous_order=tied,
            unversioned=unversioned,
        )
        if twice:
            doubled.append(wallet)
    return summaries, doubled, screened


def _read_ledger(
    conn,
    schema: Schema,
    carried: tuple[int, str] | None,
    params,
    history: RunHistory | None,
    snapshots: Callable | None,
    read_by: dict[str, str],
) -> tuple[
    dict[str, LedgerSummary],
    list[str],
    dict[str, SnapshotCheck | None],
    list[tuple[str, Decimal, int, str]] | None,
]:
    """_ledger's facts, and _transfer_imbalances', from the ledger's columns (ledger_columns)
    where `carried` (ledger_columns.amount_scale) says they can be exact: they hand the wallets
    and the transfers they cannot vouch for to the SQL passes restricted to them. Else from
    _ledger alone, and no transfers (None: for _transfer_imbalances to read).
    `read_by["ledger"]` says which."""

    def exact(wallets: list[str]):
        read_by["ledger"] = f"columns; {len(wallets)} wallets through the SQL pass"
        restricted = {**params, "ids": PackedArray.of_text(wallets), "wallet_ids": wallets}
        return _ledger(
            conn, schema, restricted, _history_params(history, wallets) if history else None
        )

    def exact_transfers(hashes: list[int]):
        return _transfer_imbalances(conn, schema, params, hashes)

    if carried is not None:
        from . import ledger_columns  # numpy: only in the process that checks

        read_by["ledger"] = "columns"
        found = ledger_columns.read(
            conn, schema, carried, params["wallet_ids"], params, history, exact, exact_transfers
        )
        if found is not None:
            return found
        read_by["ledger"] = "SQL pass: two of the run's wallet ids hash alike"
    else:
        read_by["ledger"] = (
            "SQL pass: amount, balanceBefore and balanceAfter are not numeric(p, s) of one scale"
            " up to 4 (or createdAt is not a timestamp, or metadata not jsonb)"
        )
    return (*_ledger(conn, schema, params, snapshots() if snapshots else None), None)


def _duplicate_references(conn, schema: Schema, params) -> list[tuple[str, int, str]]:
    c = _ledger_columns(schema)
    query = sql.SQL(
        "WITH {run} SELECT {referenceId}, count(*), min({walletId}) FROM {table} AS l"
        " JOIN run_wallets AS r ON r.id = {walletId} GROUP BY {referenceId} HAVING count(*) > 1"
        " ORDER BY count(*) DESC LIMIT 10000"
    ).format(run=RUN_WALLETS, **c)
    return conn.execute(query, params).fetchall()


def _duplicate_event_entries(conn, schema: Schema, params) -> list[tuple[str, str, int]]:
    c = _ledger_columns(schema)
    query = sql.SQL(
        "WITH {run} SELECT {walletId}, {metadata} ->> 'eventId', count(*) FROM {table} AS l"
        " JOIN run_wallets AS r ON r.id = {walletId} WHERE {metadata} ->> 'eventId' IS NOT NULL"
        " GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT 10000"
    ).format(run=RUN_WALLETS, **c)
    return conn.execute(query, params).fetchall()


def _transfer_imbalances(
    conn, schema: Schema, params, hashes: list[int] | None = None
) -> list[tuple[str, Decimal, int, str]]:
    """Transfers whose legs (entries sharing metadata.transferId) do not net to zero in pairs;
    with `hashes`, only among the transfers of those ids' ledger_columns.transfer_hash."""
    c = _ledger_columns(schema)
    from .ledger_columns import transfer_hash  # numpy: only in the process that checks

    among = (
        sql.SQL(" AND {h} = ANY(%(hashes)s::int8[])").format(h=transfer_hash(c["metadata"], 0))
        if hashes is not None
        else sql.SQL("")
    )
    query = sql.SQL(
        "WITH {run} SELECT {metadata} ->> 'transferId', sum({signed}), count(*),"
        " string_agg({walletId}, ' ' ORDER BY {walletId}) FROM {table} AS l"
        " JOIN run_wallets AS r ON r.id = {walletId} WHERE {metadata} ->> 'transferId' IS NOT NULL"
        "{among} GROUP BY 1 HAVING sum({signed}) <> 0 OR count(*) <> 2 ORDER BY 1 LIMIT 10000"
    ).format(run=RUN_WALLETS, among=among, **c)
    return conn.execute(query, {**params, "hashes": hashes}).fetchall()


def _outbox_parts(schema: Schema) -> dict[str, sql.Composable]:
    o, p = "outbox", "outbox_consumer_processing"
    return {
        "run": RUN_WALLETS,
        "outbox": schema.table(o),
        "proc": schema.table(p),
        "oid": schema.col(o, "id", "o"),
        "agg": schema.col(o, "aggregate_id", "o"),
        "ver": schema.col(o, "event_version", "o"),
        "created": schema.col(o, "created_at", "o"),
        "pev": schema.col(p, "outbox_event_id", "p"),
        "pcons": schema.col(p, "consumer_name", "p"),
        "pat": schema.col(p, "processed_at", "p"),
    }


def _outbox_and_lag(
    conn, schema: Schema, params, once: bool, read_by: dict[str, str] | None = None
) -> tuple[dict[str, OutboxSummary], dict[str, Lag]]:
    """The outbox summaries and the projection lag: where UNIQUE (outbox_event_id, consumer_name)
    holds, counted from the events and their processing rows read as columns (outbox_columns,
    where the types make that exact) or joined in SQL; else each event's processing rows counted
    one by one."""
    if once:
        from .outbox_columns import outbox_counted  # it imports this module's lag buckets

        return outbox_counted(conn, schema, params, read_by) or _outbox_counted(
            conn, schema, params
        )
    if read_by is not None:
        read_by["outbox"] = (
            "SQL pass: no unique index on (outbox_event_id, consumer_name), each event's"
            " processing rows counted"
        )
    return _outbox(conn, schema, params), _lag(conn, schema, params)


def _outbox_counted(
    conn, schema: Schema, params
) -> tuple[dict[str, OutboxSummary], dict[str, Lag]]:
    """Under UNIQUE (outbox_event_id, consumer_name) an event has at most one processing row per
    consumer: none is processed twice, and a wallet's unprocessed events per consumer are its
    events less its processing rows. Those rows are counted per (wallet, consumer) in the lag's
    own pass (a second grouping set beside the histogram's); the first event not processed by
    both is read only for the wallets that have one."""
    rm, lg = CONSUMERS
    parts = _outbox_parts(schema)
    events = sql.SQL(
        "WITH {run} SELECT {agg}, count(*), min({ver}), max({ver}), count(DISTINCT {ver})"
        "  FROM {outbox} AS o JOIN run_wallets AS r ON r.id = {agg} GROUP BY {agg}"
    ).format(**parts)
    counted = conn.execute(events, params, binary=True).fetchall()
    processed, buckets = _lag_pass(conn, schema, params, per_wallet=True)
    result = {}
    flagged = []
    for wallet, n, vmin, vmax, distinct in counted:
        done = processed.get(wallet, {})
        unprocessed = {rm: n - done.get(rm, 0), lg: n - done.get(lg, 0)}
        result[wallet] = OutboxSummary(
            events=n,
            min_version=vmin,
            max_version=vmax,
            distinct_versions=distinct,
            unprocessed=unprocessed,
            processed_twice={rm: 0, lg: 0},
        )
        if unprocessed[rm] or unprocessed[lg]:
            flagged.append(wallet)
    if flagged:
        first = sql.SQL(
            "WITH {run} SELECT {agg}, min({oid}) FROM {outbox} AS o"
            "  JOIN run_wallets AS r ON r.id = {agg}"
            " WHERE NOT EXISTS (SELECT 1 FROM {proc} AS p WHERE {pev} = {oid} AND {pcons} = %(rm)s)"
            "    OR NOT EXISTS (SELECT 1 FROM {proc} AS p WHERE {pev} = {oid} AND {pcons} = %(lg)s)"
            " GROUP BY {agg}"
        ).format(**parts)
        for wallet, example in conn.execute(
            first, {"ids": PackedArray.of_text(flagged), "rm": rm, "lg": lg}
        ):
            result[wallet].example_event = example
    return result, buckets


def _outbox(conn, schema: Schema, params) -> dict[str, OutboxSummary]:
    rm, lg = CONSUMERS
    query = sql.SQL(
        # Each event's processing rows are counted through the contract's UNIQUE (outbox_event_id,
        # consumer_name) index, and the run's events come in wallet order through UNIQUE
        # (aggregate_id, ...): half the time of hashing every processing row and sorting again.
        """WITH {run}, per_event AS (
    SELECT {oid} AS id, {agg} AS wallet_id, {ver} AS version, x.rm, x.lg
      FROM {outbox} AS o JOIN run_wallets AS r ON r.id = {agg}
     CROSS JOIN LATERAL (
           SELECT count(*) FILTER (WHERE {pcons} = %(rm)s) AS rm,
                  count(*) FILTER (WHERE {pcons} = %(lg)s) AS lg
             FROM {proc} AS p WHERE {pev} = {oid}) AS x
)
SELECT wallet_id, count(*), min(version), max(version), count(DISTINCT version),
       count(*) FILTER (WHERE rm = 0), count(*) FILTER (WHERE rm > 1),
       count(*) FILTER (WHERE lg = 0), count(*) FILTER (WHERE lg > 1),
       min(id) FILTER (WHERE rm <> 1 OR lg <> 1)
  FROM per_event GROUP BY wallet_id"""
    ).format(**_outbox_parts(schema))
    result = {}
    for (
        wallet,
        events,
        vmin,
        vmax,
        distinct,
        rm_none,
        rm_many,
        lg_none,
        lg_many,
        example,
    ) in conn.execute(query, {**params, "rm": rm, "lg": lg}, binary=True).fetchall():
        result[wallet] = OutboxSummary(
            events=events,
            min_version=vmin,
            max_version=vmax,
            distinct_versions=distinct,
            unprocessed={rm: rm_none, lg: lg_none},
            processed_twice={rm: rm_many, lg: lg_many},
            example_event=example,
        )
    return result


def _lag(conn, schema: Schema, params) -> dict[str, Lag]:
    """Per consumer, the lag from an event's commit to its processing: count and max exact,
    the percentiles from a histogram of LAG_RATIO-wide buckets (no sort of every lag)."""
    return _lag_pass(conn, schema, params, per_wallet=False)[1]


def _lag_pass(
    conn, schema: Schema, params, *, per_wallet: bool
) -> tuple[dict[str, dict[str, int]], dict[str, Lag]]:
    """The lag histogram per consumer and, `per_wallet`, in the same pass each wallet's
    processing rows per consumer (wallet -> consumer -> rows)."""
    bucket = sql.SQL("CASE WHEN ms > %(floor)s THEN floor(ln(ms / %(floor)s) / %(ln_ratio)s) END")
    groups = (
        sql.SQL("GROUPING SETS ((wallet_id, consumer), (consumer, {}))").format(bucket)
        if per_wallet
        else sql.SQL("consumer, {}").format(bucket)
    )
    query = sql.SQL(
        """WITH {run}, lags AS (
    SELECT {agg} AS wallet_id, {pcons} AS consumer,
           date_part('epoch', {pat} - {created}) * 1000 AS ms
      FROM {outbox} AS o JOIN run_wallets AS r ON r.id = {agg} JOIN {proc} AS p ON {pev} = {oid}
)
SELECT {grouping}, consumer, count(*), min(ms), max(ms) FROM lags GROUP BY {groups}"""
    ).format(
        grouping=sql.SQL("GROUPING(wallet_id), wallet_id" if per_wallet else "1, NULL::text"),
        groups=groups,
        **_outbox_parts(schema),
    )
    buckets: dict[str, list[tuple[float, float, int]]] = {}
    processed: dict[str, dict[str, int]] = {}
    # The planner cannot know there are a few hundred buckets, guesses one per row and sorts
    # them all; hashing is what the histogram is for. And, per_wallet, it guesses 2 M wide groups for the (wallet, consumer) set, too many to
    # hash in work_mem: it sorted the 2.2 M joined rows instead (10 s at 100,000 wallets). The
    # groups are a wallet's two or three consumers: a few MB.
    rows = _fetch(
        conn,
        query,
        {**params, "floor": LAG_FLOOR_MS, "ln_ratio": math.log(LAG_RATIO)},
        enable_sort="off",
        **({"hash_mem_multiplier": "16"} if per_wallet else {}),
    )
    for histogram, wallet, consumer, n, low, high in rows:
        if histogram:
            buckets.setdefault(consumer, []).append((float(low), float(high), n))
        else:
            processed.setdefault(wallet, {})[consumer] = n
    lags = {}
    for consumer, found in buckets.items():
        found.sort()
        total = sum(n for _, _, n in found)
        p50, p95, p99 = (_percentile(found, total, q) for q in (0.5, 0.95, 0.99))
        lags[consumer] = Lag(total, p50, p95, p99, found[-1][1], LAG_ERROR)
    return processed, lags


def _percentile(buckets: list[tuple[float, float, int]], total: int, q: float) -> float:
    """percentile_cont(q) from sorted buckets (lowest, highest, count): the two ranks it
    interpolates between, each estimated by its bucket's midpoint (exact at a bucket's ends)."""
    rank = q * (total - 1)
    below, above = math.floor(rank), math.ceil(rank)
    values = {}
    seen = 0
    for low, high, n in buckets:
        for wanted in (below, above):
            if wanted not in values and seen <= wanted < seen + n:
                if wanted == seen:
                    values[wanted] = low
                elif wanted == seen + n - 1:
                    values[wanted] = high
                else:
                    values[wanted] = (low + high) / 2
        seen += n
    return values[below] + (rank - below) * (values[above] - values[below])


def _checkpoints(conn, schema: Schema) -> dict[str, int | None]:
    t = "projector_checkpoints"
    query = sql.SQL("SELECT {name}, {last} FROM {table}").format(
        name=schema.col(t, "projector_name"),
        last=schema.col(t, "last_processed_id"),
        table=schema.table(t),
    )
    return {name: last for name, last in conn.execute(query)}


def _history_params(history: RunHistory, wallet_ids: Sequence[str]) -> dict[str, PackedArray]:
    """The acknowledged snapshots as binary arrays cut straight from the history's packed
    records (no Python loop per snapshot): the segments' wallet tables one after the other as
    positions in `wallet_ids` (1-based, 0 for a wallet not among them), and where each
    segment's records and wallets start."""
    position = {wallet: n for n, wallet in enumerate(wallet_ids, 1)}
    table: list[int] = []
    bases: list[int] = []
    starts: list[int] = []
    records = bytearray()
    for segment in history.segments:
        bases.append(len(table))
        starts.append(len(records) // RECORD_SIZE + 1)
        table.extend(position.get(wallet, 0) for wallet in segment.wallets)
        for block in segment.blocks():
            records += block
    return {
        "h_n": PackedArray.of_int4(table),
        "h_bases": PackedArray.of_int4(bases),
        "h_starts": PackedArray.of_int8(starts),
        "h_idx": PackedArray.record_field(records, 0, 4, 4),
        "h_ver": PackedArray.record_field(records, 4, 4, 4),
        "h_cents": PackedArray.record_field(records, 8, 8, 8),
        "h_kind": PackedArray.record_field(records, 24, 1, 4),
    }


def _check_snapshots(
    conn, schema: Schema, params, facts: Facts, history: Callable[[], dict] | None, screened: dict
) -> None:
    """Every acknowledged snapshot (wallet, version, balance) against the ledger entry of that
    version: per wallet the count, the mismatches and the first one. Only where the ledger keeps
    event versions. The ledger pass has compared most (`screened`: wallet -> its SnapshotCheck,
    None where it could not); the others are compared here."""
    if not history:
        return  # nothing acknowledged to compare (or a record saved without its history)
    unversioned = sum(s.unversioned for s in (facts.ledger or {}).values())
    if unversioned:
        facts.snapshots_skipped = (
            f"{unversioned} ledger entries carry no metadata.eventVersion: an acknowledged"
            " version has no entry to compare with"
        )
        return
    checks = {wallet: check for wallet, check in screened.items() if check is not None}
    unsure = [wallet for wallet, check in screened.items() if check is None]
    if unsure:
        checks.update(_compare_snapshots(conn, schema, unsure, params["wallet_ids"], history()))
    facts.snapshots = checks


def _compare_snapshots(
    conn, schema: Schema, wallet_ids: list[str], all_ids: list[str], history: dict
) -> dict[str, SnapshotCheck]:
    """The snapshots of these wallets against their ledger entries, one by one. The history's
    wallets map to positions in `all_ids`, the run's wallets: so do these wallets here."""
    c = _ledger_columns(schema)
    query = sql.SQL(
        """WITH run_wallets(id, n) AS (SELECT unnest(%(ids)b::text[]), unnest(%(positions)s::int4[])),
h AS (
    SELECT h.* FROM ({snapshots}) AS h JOIN run_wallets AS r ON r.n = h.n
), e AS (
    SELECT r.n, ({metadata} ->> 'eventVersion')::integer AS version,
           min({balanceAfter}) AS low, max({balanceAfter}) AS high
      FROM {table} AS l JOIN run_wallets AS r ON r.id = {walletId}
     GROUP BY 1, 2
), compared AS (
    SELECT h.n, h.version, h.cents, e.low,
           (e.low IS NULL OR e.low * 100 <> h.cents OR e.high * 100 <> h.cents) AS bad
      FROM h LEFT JOIN e ON e.n = h.n AND e.version = h.version
)
SELECT n, count(*), count(*) FILTER (WHERE bad),
       (array_agg(ARRAY[version::text, cents::text, low::text] ORDER BY version)
            FILTER (WHERE bad))[1:1]
  FROM compared GROUP BY n"""
    ).format(snapshots=sql.SQL(SNAPSHOT_ROWS), **c)
    checks = {}
    position = {wallet: n for n, wallet in enumerate(all_ids, 1)}
    params = {
        "ids": PackedArray.of_text(wallet_ids),
        "positions": PackedArray.of_int4([position[wallet] for wallet in wallet_ids]),
        **history,
    }
    rows = _fetch(conn, query, params, enable_mergejoin="off")  # as in _ledger
    for n, checked, mismatched, first in rows:
        checks[all_ids[n - 1]] = SnapshotCheck(
            checked, mismatched, _first_mismatch(first[0] if first else None)
        )
    return checks


def _first_mismatch(first: list | None) -> tuple[int, Decimal, Decimal | None] | None:
    """SnapshotCheck.first from the query's [version, cents, ledger's balanceAfter]."""
    if not first:
        return None
    version, cents, low = first
    return int(version), Decimal(int(cents)) / 100, Decimal(low) if low is not None else None


def _details(
    conn, schema: Schema, wallet_ids: list[str], facts: Facts, history: RunHistory | None
) -> dict[str, WalletDetail]:
    """The rows of a few wallets: outbox events with their processing counts per consumer,
    ledger entries in the ledger's order, and the acknowledged snapshots."""
    if not wallet_ids:
        return {}
    details = {wallet: WalletDetail() for wallet in wallet_ids}
    params = {"ids": PackedArray.of_text(wallet_ids), "consumers": list(CONSUMERS)}
    if facts.outbox is not None:
        parts = _outbox_parts(schema)
        query = sql.SQL(
            """WITH {run} SELECT {agg}, {oid}, {ver}, {etype}, {payload} ->> 'amount',
       (SELECT array_agg({pcons}) FROM {proc} AS p WHERE {pev} = {oid}),
       {metadata} ->> 'transferId'
  FROM {outbox} AS o JOIN run_wallets AS r ON r.id = {agg} ORDER BY {agg}, {ver}, {oid}"""
        ).format(
            etype=schema.col("outbox", "event_type", "o"),
            payload=schema.col("outbox", "payload", "o"),
            metadata=schema.col("outbox", "metadata", "o"),
            **parts,
        )
        for wallet, outbox_id, version, event_type, amount, consumers, transfer in conn.execute(
            query, params
        ):
            processed: dict[str, int] = {}
            for consumer in consumers or []:
                processed[consumer] = processed.get(consumer, 0) + 1
            details[wallet].events.append(
                EventRow(outbox_id, version, event_type, _decimal(amount), processed, transfer)
            )
    if facts.ledger is not None:
        c = _ledger_columns(schema)
        query = sql.SQL(
            """WITH {run} SELECT {walletId}, {id}::text, ({metadata} ->> 'eventVersion')::integer,
       {signed}, {balanceBefore}, {balanceAfter}, {description}::text,
       {metadata} ->> 'transferId'
  FROM {table} AS l JOIN run_wallets AS r ON r.id = {walletId} ORDER BY {walletId}, {order}"""
        ).format(run=RUN_WALLETS, **c)
        for wallet, entry_id, version, signed, before, after, description, transfer in conn.execute(
            query, params
        ):
            details[wallet].entries.append(
                EntryRow(entry_id, version, signed, before, after, description, transfer)
            )
    if history:
        for wallet, snapshots in history.of_wallets(wallet_ids).items():
            if wallet in details:
                details[wallet].acknowledged = snapshots
    return details


def _decimal(text: str | None) -> Decimal | None:
    try:
        return Decimal(text) if text is not None else None
    except ArithmeticError:
        return None
