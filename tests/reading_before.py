"""The consistency check's SQL side as it was before issue 11 item 3 (main 550a36d), kept as the
reference the faster reading is compared with: on the same database both must read the same facts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal

import psycopg
from psycopg import conninfo, sql

from wallet_users.consistency.facts import (
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
from wallet_users.consistency.schema import CONSUMERS, DEFAULT_SCHEMA, Schema
from wallet_users.record.history import RunHistory
from wallet_users.record.ids import run_regex

log = logging.getLogger(__name__)

# Sent in binary: dumping 100,000 ids as a text array costs the client about 0.2 s per query.
RUN_WALLETS = sql.SQL("run_wallets(id) AS (SELECT unnest(%(ids)b::text[]))")
# Inconsistent wallets whose rows are read for their causes and first divergence, at most.
DETAIL_CAP = 20_000
# Memory for each sort and hash of the check's queries: with the server's default (often 4 MB)
# a large run's sorts and hashes spill to temporary files.
WORK_MEM = "64MB"


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
        raise CheckError(f"cannot connect: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return libpq_reason(error)


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


def backlog(conn: psycopg.Connection, schema: Schema, wallet_ids: list[str]) -> dict[str, int]:
    """Per consumer: the run's outbox events it has not processed yet."""
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


QUIET_SECONDS = 0.5  # longer than any command's commit takes after its answer was cut short


def wait_for_drain(
    conn: psycopg.Connection,
    schema: Schema,
    wallet_ids: list[str],
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    log_every: float = 2.0,
) -> tuple[bool, float, dict[str, int]]:
    """Poll the backlog until both consumers have processed every event of the run, or timeout.
    Returns (drained, seconds waited, last backlog).

    Empty twice, QUIET_SECONDS apart: a command the stop cut short may still be committing its
    events (an empty backlog read just before they land would let the check see them
    unprocessed and report a false alarm)."""
    started = time.monotonic()
    last_log = started
    empty_since: float | None = None
    while True:
        pending = backlog(conn, schema, wallet_ids)
        waited = time.monotonic() - started
        if not any(pending.values()):
            if empty_since is not None and time.monotonic() - empty_since >= QUIET_SECONDS:
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
) -> Facts:
    """Read every fact the checker needs in one read-only REPEATABLE READ snapshot: the
    set-based aggregates over the run's wallets, the acknowledged snapshots against the ledger,
    then, for the wallets `needs_detail` (the checker's own choice) names, their rows."""
    facts = Facts(tables_missing=missing_tables(conn, schema))
    params = {"ids": wallet_ids, "consumers": list(CONSUMERS)}
    conn.autocommit = False
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(f"{int(statement_timeout_s * 1000)}ms")
                )
            )
            conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(WORK_MEM)))
            have = lambda *tables: not any(t in facts.tables_missing for t in tables)  # noqa: E731
            if have("wallets"):
                facts.write_side = _write_side(conn, schema, params)
            if have("wallets_read_model"):
                facts.read_model = _read_model(conn, schema, params)
            if have("ledger_entries"):
                facts.ledger = _ledger(conn, schema, params)
                facts.duplicate_references = _duplicate_references(conn, schema, params)
                facts.duplicate_event_entries = _duplicate_event_entries(conn, schema, params)
                facts.transfer_imbalances = _transfer_imbalances(conn, schema, params)
                _check_snapshots(conn, schema, params, facts, history)
            if have("outbox", "outbox_consumer_processing"):
                facts.outbox = _outbox(conn, schema, params)
                facts.lag = _lag(conn, schema, params)
            if have("projector_checkpoints"):
                facts.checkpoints = _checkpoints(conn, schema)
            if needs_detail is not None:
                flagged = needs_detail(facts)
                facts.details_left_out = max(0, len(flagged) - detail_cap)
                facts.details = _details(conn, schema, flagged[:detail_cap], facts, history)
    finally:
        conn.autocommit = True
    return facts


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
        wid: WriteSide(balance, version) for wid, balance, version in conn.execute(query, params)
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
    return dict(conn.execute(query, params).fetchall())


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


def _ledger(conn, schema: Schema, params) -> dict[str, LedgerSummary]:
    c = _ledger_columns(schema)
    # is_last (no next entry in the wallet's order) comes from the same window as the rest: a
    # count(*) over the partition took a second window pass over every entry.
    query = sql.SQL(
        """WITH {run}, e AS (
    SELECT {walletId} AS wallet_id, {id}::text AS entry_id, {balanceBefore} AS before,
           {balanceAfter} AS after, {signed} AS signed,
           lag({balanceAfter}) OVER w AS prev_after,
           row_number() OVER w AS position,
           lead(true) OVER w IS NULL AS is_last,
           -- no event version and the same createdAt as a neighbour: the order is a guess
           ({metadata} ->> 'eventVersion' IS NULL
            AND ({createdAt} = lag({createdAt}) OVER w OR {createdAt} = lead({createdAt}) OVER w))
               AS tied,
           {metadata} ->> 'eventVersion' IS NULL AS unversioned
      FROM {table} AS l JOIN run_wallets AS r ON r.id = {walletId}
    WINDOW w AS (PARTITION BY {walletId} ORDER BY {order})
), flagged AS (
    SELECT *, (prev_after IS NOT NULL AND before <> prev_after) AS chain_break,
              (after <> before + signed) AS arithmetic_break
      FROM e
)
SELECT wallet_id, count(*), sum(signed),
       max(after) FILTER (WHERE is_last), max(before) FILTER (WHERE position = 1),
       least(min(before), min(after)),
       count(*) FILTER (WHERE chain_break), count(*) FILTER (WHERE arithmetic_break),
       (array_agg(ARRAY[entry_id, before::text, prev_after::text] ORDER BY position)
            FILTER (WHERE chain_break))[1:1],
       (array_agg(ARRAY[entry_id, before::text, signed::text, after::text] ORDER BY position)
            FILTER (WHERE arithmetic_break))[1:1],
       count(*) FILTER (WHERE tied), count(*) FILTER (WHERE unversioned)
  FROM flagged GROUP BY wallet_id"""
    ).format(run=RUN_WALLETS, **c)
    summaries = {}
    for row in conn.execute(query, params):
        (
            wallet,
            n,
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
        ) = row
        summaries[wallet] = LedgerSummary(
            entries=n,
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
    return summaries


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


def _transfer_imbalances(conn, schema: Schema, params) -> list[tuple[str, Decimal, int, str]]:
    """Transfers whose legs (entries sharing metadata.transferId) do not net to zero in pairs."""
    c = _ledger_columns(schema)
    query = sql.SQL(
        "WITH {run} SELECT {metadata} ->> 'transferId', sum({signed}), count(*),"
        " string_agg({walletId}, ' ' ORDER BY {walletId}) FROM {table} AS l"
        " JOIN run_wallets AS r ON r.id = {walletId} WHERE {metadata} ->> 'transferId' IS NOT NULL"
        " GROUP BY 1 HAVING sum({signed}) <> 0 OR count(*) <> 2 LIMIT 10000"
    ).format(run=RUN_WALLETS, **c)
    return conn.execute(query, params).fetchall()


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
        n,
        vmin,
        vmax,
        distinct,
        rm_none,
        rm_many,
        lg_none,
        lg_many,
        example,
    ) in conn.execute(query, {**params, "rm": rm, "lg": lg}):
        result[wallet] = OutboxSummary(
            events=n,
            min_version=vmin,
            max_version=vmax,
            distinct_versions=distinct,
            unprocessed={rm: rm_none, lg: lg_none},
            processed_twice={rm: rm_many, lg: lg_many},
            example_event=example,
        )
    return result


def _lag(conn, schema: Schema, params) -> dict[str, Lag]:
    query = sql.SQL(
        """WITH {run} SELECT {pcons}, count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM {pat} - {created})),
       max(extract(epoch FROM {pat} - {created}))
  FROM {outbox} AS o JOIN run_wallets AS r ON r.id = {agg} JOIN {proc} AS p ON {pev} = {oid}
 GROUP BY {pcons}"""
    ).format(**_outbox_parts(schema))
    lags = {}
    for consumer, n, (p50, p95, p99), worst in conn.execute(query, params):
        lags[consumer] = Lag(n, p50 * 1000, p95 * 1000, p99 * 1000, float(worst) * 1000)
    return lags


def _checkpoints(conn, schema: Schema) -> dict[str, int | None]:
    t = "projector_checkpoints"
    query = sql.SQL("SELECT {name}, {last} FROM {table}").format(
        name=schema.col(t, "projector_name"),
        last=schema.col(t, "last_processed_id"),
        table=schema.table(t),
    )
    return {name: last for name, last in conn.execute(query)}


def _check_snapshots(
    conn, schema: Schema, params, facts: Facts, history: RunHistory | None
) -> None:
    """Every acknowledged snapshot (wallet, version, balance) against the ledger entry of that
    version: per wallet the count, the mismatches and the first one. Only where the ledger keeps
    event versions; the history travels as four arrays, the ledger is read once."""
    if not history:
        return  # nothing acknowledged to compare (or a record saved without its history)
    unversioned = sum(s.unversioned for s in (facts.ledger or {}).values())
    if unversioned:
        facts.snapshots_skipped = (
            f"{unversioned} ledger entries carry no metadata.eventVersion: an acknowledged"
            " version has no entry to compare with"
        )
        return
    table, index, versions, balances, kinds = history.columns()
    c = _ledger_columns(schema)
    query = sql.SQL(
        """WITH {run}, h AS (
    SELECT t.wallet_id, s.version, s.cents
      FROM unnest(%(h_idx)s::int4[], %(h_ver)s::int4[], %(h_cents)s::int8[], %(h_kind)s::int2[])
           AS s(idx, version, cents, kind)
      JOIN unnest(%(h_wallets)s::text[]) WITH ORDINALITY AS t(wallet_id, n) ON t.n = s.idx + 1
      JOIN run_wallets AS r ON r.id = t.wallet_id
     WHERE NOT (s.kind = 0 AND s.version = 0)  -- a creation with no initial balance: no entry
), e AS (
    SELECT {walletId} AS wallet_id, ({metadata} ->> 'eventVersion')::integer AS version,
           min({balanceAfter}) AS low, max({balanceAfter}) AS high
      FROM {table} AS l JOIN run_wallets AS r ON r.id = {walletId}
     GROUP BY 1, 2
), compared AS (
    SELECT h.wallet_id, h.version, h.cents, e.low,
           (e.low IS NULL OR e.low * 100 <> h.cents OR e.high * 100 <> h.cents) AS bad
      FROM h LEFT JOIN e ON e.wallet_id = h.wallet_id AND e.version = h.version
)
SELECT wallet_id, count(*), count(*) FILTER (WHERE bad),
       (array_agg(ARRAY[version::text, cents::text, low::text] ORDER BY version)
            FILTER (WHERE bad))[1:1]
  FROM compared GROUP BY wallet_id"""
    ).format(run=RUN_WALLETS, **c)
    rows = conn.execute(
        query,
        {
            **params,
            "h_idx": index,
            "h_ver": versions,
            "h_cents": balances,
            "h_kind": kinds,
            "h_wallets": table,
        },
    )
    checks = {}
    for wallet, checked, mismatched, first in rows:
        example = None
        if first:
            version, cents, low = first[0]
            example = (
                int(version),
                Decimal(int(cents)) / 100,
                Decimal(low) if low is not None else None,
            )
        checks[wallet] = SnapshotCheck(checked, mismatched, example)
    facts.snapshots = checks


def _details(
    conn, schema: Schema, wallet_ids: list[str], facts: Facts, history: RunHistory | None
) -> dict[str, WalletDetail]:
    """The rows of a few wallets: outbox events with their processing counts per consumer,
    ledger entries in the ledger's order, and the acknowledged snapshots."""
    if not wallet_ids:
        return {}
    details = {wallet: WalletDetail() for wallet in wallet_ids}
    params = {"ids": wallet_ids, "consumers": list(CONSUMERS)}
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
