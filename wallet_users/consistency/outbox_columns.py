"""The outbox summaries and the projection lag under UNIQUE (outbox_event_id, consumer_name) as a
columnar pass: the run's events and the processing rows come as a few fixed-width binary columns
(two scans, no join or grouping on the server) and are joined, counted and bucketed in numpy. The
same facts as reading._outbox_counted, read only where the catalog's types make them exact."""

from __future__ import annotations

import itertools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from .columns import (
    ROW_BYTES,
    RUN_HASHES,
    TIMESTAMP_SEND,
    column,
    estimated_rows,
    wallet_positions,
)
from .facts import Lag, OutboxSummary
from .reading import (
    LAG_ERROR,
    LAG_FLOOR_MS,
    LAG_RATIO,
    _fetch,
    _outbox_parts,
    _percentile,
)
from .schema import CONSUMERS, Schema

log = logging.getLogger(__name__)

OUTBOX, PROCESSING = "outbox", "outbox_consumer_processing"
INTEGERS = ("smallint", "integer", "bigint")
NAMES = ("text", "character varying")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A nullable smallint or integer version's NULL (a nullable bigint one could hold it: not read so)
NO_VERSION = INT64_MIN
# A NULL timestamp comes as '-infinity' (INT64_MIN), like a real infinity, and either sends the
# pass back to SQL (what the lag of an infinity is, SQL says); beyond this bound two timestamps'
# difference could overflow.
FINITE_US = 2**62
USECS_PER_DAY = 86_400_000_000
# Processing rows come as event id * 4 + consumer code: 0 and 1 the contract's two consumers (in
# CONSUMERS' order), OTHER the rest, named beside. Ids within this bound keep the product in int8.
OTHER = 2
PACKED_IDS = 2**61
# Both scans alone: in parallel the events' took 0.74-0.85 s against 0.58 at 100,000 wallets
# (the partial strings copied again to be combined), and the other connection needs the core.
SERIAL = {"max_parallel_workers_per_gather": "0"}
# The join looks events up in a table indexed by id where the run's ids are this dense
DENSE = 4


def ineligible(conn, schema: Schema) -> str | None:
    """Why the columnar pass would not give exactly _outbox_counted's facts on this database, or
    None: ids the columns carry as int8, the two timestamps of one type (microseconds, subtracted
    as SQL subtracts them), versions whose NULL a sentinel can stand for, names as text."""
    return _reason(_column_types(conn, schema), schema)


def _column_types(conn, schema: Schema) -> dict[tuple[str, str], tuple[str | None, bool]]:
    """(table, column) -> its type's name and whether it is NOT NULL, from the catalog, at once."""
    o, p = OUTBOX, PROCESSING
    wanted = [
        (o, "id"),
        (o, "aggregate_id"),
        (o, "event_version"),
        (o, "created_at"),
        (p, "outbox_event_id"),
        (p, "consumer_name"),
        (p, "processed_at"),
    ]
    rows = conn.execute(
        """SELECT c.ord, a.atttypid::regtype::text, a.attnotnull
             FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS c(rel, col, ord)
             LEFT JOIN pg_attribute AS a ON a.attrelid = to_regclass(c.rel) AND a.attname = c.col
                   AND a.attnum > 0 AND NOT a.attisdropped""",
        (
            [schema.table(t).as_string(conn) for t, _ in wanted],
            [schema.columns[t][c] for t, c in wanted],
        ),
    ).fetchall()
    return {wanted[ord - 1]: (kind, bool(notnull)) for ord, kind, notnull in rows}


def _reason(found: dict[tuple[str, str], tuple[str | None, bool]], schema: Schema) -> str | None:
    o, p = OUTBOX, PROCESSING
    types = {key: kind for key, (kind, _) in found.items()}
    name = lambda t, c: f"{schema.physical(t)}.{schema.columns[t][c]}"  # noqa: E731
    for key in ((o, "id"), (p, "outbox_event_id")):
        if types.get(key) not in INTEGERS:
            return f"{name(*key)} is {types.get(key)}, not an integer type"
    for key in ((o, "aggregate_id"), (p, "consumer_name")):
        if types.get(key) not in NAMES:
            return f"{name(*key)} is {types.get(key)}, not text"
    version, notnull = found.get((o, "event_version"), (None, False))
    if version not in INTEGERS or (version == "bigint" and not notnull):
        return f"{name(o, 'event_version')} is {version}{'' if notnull else ' (nullable)'}"
    created, processed = types.get((o, "created_at")), types.get((p, "processed_at"))
    if created not in TIMESTAMP_SEND or processed != created:
        return (
            f"{name(o, 'created_at')} is {created} and {name(p, 'processed_at')} {processed},"
            " not one timestamp type"
        )
    return None


def outbox_counted(
    conn, schema: Schema, params, read_by: dict[str, str] | None = None
) -> tuple[dict[str, OutboxSummary], dict[str, Lag]] | None:
    """reading._outbox_counted's facts from the columns, or None where they would not be exact
    (the caller then reads them in SQL): the types (`ineligible`), a run id given twice, two
    run ids' hashes alike, an outbox id held by two events, an infinite or NULL timestamp."""
    ids = params["wallet_ids"]
    found = _read(conn, schema, params, ids)
    if isinstance(found, str):
        log.info("outbox and lag read in SQL, not as columns: %s", found)
        if read_by is not None:
            read_by["outbox"] = f"SQL pass: {found}"
        return None
    if read_by is not None:
        read_by["outbox"] = "columns"
    return found


def _read(
    conn, schema: Schema, params, ids: list[str]
) -> tuple[dict[str, OutboxSummary], dict[str, Lag]] | str:
    types = _column_types(conn, schema)
    reason = _reason(types, schema)
    if reason:
        return reason
    if len(set(ids)) != len(ids):
        return "a wallet id given twice"
    # each query's result is one row of columns, at most ROW_BYTES: the events' 32 bytes each
    # (and the run's ids' hashes), the processing rows' 16 (whole tables: an upper bound)
    events = estimated_rows(conn, schema.table(OUTBOX))
    processing = estimated_rows(conn, schema.table(PROCESSING))
    if events * 32 + len(ids) * 8 > ROW_BYTES or processing * 16 > ROW_BYTES:
        return f"about {events:,.0f} events and {processing:,.0f} processing rows: too many for a row of columns"
    fetched = _events(conn, schema, params, types)
    event_ids = column(fetched[0])
    if not len(event_ids):
        return {}, {}
    low, high = int(event_ids.min()), int(event_ids.max())
    if low < -PACKED_IDS or high >= PACKED_IDS:
        return f"outbox ids beyond {PACKED_IDS}"
    # the processing rows' scan runs while the events are decoded here (0.1 s at 100,000
    # wallets): the connection is the helper thread's until its result is taken
    with ThreadPoolExecutor(1, thread_name_prefix="outbox-processing") as helper:
        scanned = helper.submit(_processing, conn, schema, types, low, high)
        events = _decode_events(event_ids, *fetched[1:])
        versions = _versions(events, len(ids) + 1) if not isinstance(events, str) else None
        rows = scanned.result()
    if isinstance(events, str):
        return events
    return summarize(events, rows, ids, versions)


@dataclass
class Events:
    """The run's outbox events, one element each: id, the wallet's 1-based position in the run's
    ids, version (NO_VERSION for NULL where `nullable_version`), created_at in microseconds."""

    id: np.ndarray
    n: np.ndarray
    version: np.ndarray
    created: np.ndarray
    nullable_version: bool = False


@dataclass
class Processing:
    """Processing rows: the event's id, the consumer (0 and 1 the contract's two, in CONSUMERS'
    order; OTHER for the rest, whose names come in `others`, in the rows' order), processed_at."""

    event: np.ndarray
    consumer: np.ndarray
    at: np.ndarray
    others: list[str | None]


def _events(conn, schema: Schema, params, types) -> tuple:
    """The run's events' columns, found by a hashed `= ANY(ids)` (a join on the ids hashed the
    1.1 M events, 0.14 s more at 100,000 wallets), each with its wallet id's hash: the run's ids'
    hashes in their order map those to positions (_decode_events: or why not, two run ids hashed
    alike, or an event's wallet hashed unlike any, a collation not the ids', where SQL's join
    decides). Then the version's width and whether NO_VERSION stands for NULL."""
    o = OUTBOX
    version, notnull = types[(o, "event_version")]
    narrow = notnull and version != "bigint"  # four bytes, no NULL
    ver = schema.col(o, "event_version", "o")
    if narrow:
        ver = sql.SQL("int4send({}::int4)").format(ver)
    elif notnull:
        ver = sql.SQL("int8send({}::int8)").format(ver)
    else:
        ver = sql.SQL("int8send(coalesce({}::int8, {}))").format(ver, sql.Literal(NO_VERSION))
    created = _microseconds(schema.col(o, "created_at", "o"), *types[(o, "created_at")])
    # string_agg of each value's send: raw big-endian columns, cheaper than array_send's
    # per-element call and length words; a NULL would be skipped, so none can come
    query = sql.SQL(
        "SELECT string_agg(int8send({oid}::int8), ''),"
        " string_agg(int8send(hashtextextended({agg}, 0)), ''), string_agg({version}, ''),"
        " string_agg({created_us}, ''), ({run_hashes})"
        "  FROM {outbox} AS o WHERE {agg} = ANY(%(ids)b::text[])"
    ).format(version=ver, created_us=created, run_hashes=RUN_HASHES, **_outbox_parts(schema))
    ((oid, wallet, version_col, created_col, run),) = _fetch(conn, query, params, **SERIAL)
    return oid, wallet, version_col, created_col, run, 4 if narrow else 8, not notnull


def _decode_events(
    ids: np.ndarray,
    wallet: bytes,
    version: bytes,
    created: bytes,
    run: bytes,
    version_width: int,
    nullable_version: bool,
) -> Events | str:
    positions = wallet_positions(column(run), column(wallet))
    if positions is None:
        return "two run wallets' ids hash alike, or an event's wallet id hashes unlike the run's"
    return Events(
        ids,
        positions,
        column(version, version_width),
        column(created),
        nullable_version=nullable_version,
    )


def _microseconds(col: sql.Composable, kind: str, notnull: bool) -> sql.Composable:
    value = col if notnull else sql.SQL("coalesce({}, '-infinity')").format(col)
    return sql.SQL("{}({})").format(sql.SQL(TIMESTAMP_SEND[kind]), value)


def _processing(conn, schema: Schema, types, low: int, high: int) -> Processing:
    """The processing rows of the events with ids from `low` to `high`: the run's (other runs'
    events in that range are dropped in the join, in numpy)."""
    rm, lg = CONSUMERS
    p = PROCESSING
    query = sql.SQL(
        "SELECT string_agg(int8send(key), ''), string_agg(at, ''),"
        "       array_agg(name) FILTER (WHERE key & 3 = %(other)s)"
        "  FROM (SELECT {pev}::int8 * 4 + CASE {pcons} WHEN %(rm)s THEN 0 WHEN %(lg)s THEN 1"
        "                                 ELSE %(other)s END AS key,"
        "               {at} AS at, {pcons}::text AS name"
        "          FROM {proc} AS p WHERE {pev} BETWEEN %(low)s::int8 AND %(high)s::int8"
        "        OFFSET 0) AS rows"  # below the aggregate: the key computed once, for the filter too
    ).format(
        at=_microseconds(schema.col(p, "processed_at", "p"), *types[(p, "processed_at")]),
        **_outbox_parts(schema),
    )
    values = {"rm": rm, "lg": lg, "other": OTHER, "low": low, "high": high}
    ((key, at, others),) = _fetch(conn, query, values, **SERIAL)
    # one aggregate node advances all its aggregates row by row: `others` is in the rows' order
    key = column(key)
    return Processing(key >> 2, key & 3, column(at), others or [])


def event_index(
    ids: np.ndarray, wanted: np.ndarray, dense: bool | None = None
) -> np.ndarray | None:
    """For each id in `wanted` the index of the event holding it in `ids`, -1 for none; None where
    two events hold one id (SQL's join then pairs a processing row with each). A table indexed by
    id where the ids are dense (`dense`: force either way), else a binary search."""
    if not len(ids):
        return np.full(len(wanted), -1, np.int64)
    low = int(ids.min())
    span = int(ids.max()) - low + 1
    if dense if dense is not None else span <= DENSE * len(ids) + 1024:
        table = np.full(span, -1, np.int64)
        table[ids - low] = np.arange(len(ids))
        if (table[ids - low] != np.arange(len(ids))).any():
            return None
        inside = (wanted >= low) & (wanted < low + span)
        found = np.full(len(wanted), -1, np.int64)
        found[inside] = table[wanted[inside] - low]
        return found
    order = np.argsort(ids, kind="stable")
    ranked = ids[order]
    if (ranked[1:] == ranked[:-1]).any():
        return None
    at = np.minimum(np.searchsorted(ranked, wanted), len(ids) - 1)
    return np.where(ranked[at] == wanted, order[at], -1)


def summarize(
    events: Events, rows: Processing, wallet_ids: list[str], versions: tuple | None = None
) -> tuple[dict[str, OutboxSummary], dict[str, Lag]] | str:
    """_outbox_counted's facts from the columns: per wallet its events' count, versions (min, max,
    distinct, NULLs ignored), unprocessed events per contract consumer and the first event not
    processed by both; per consumer the lag histogram, with LAG_RATIO-wide buckets as in SQL. Or
    why not, where SQL's join would pair differently (an outbox id held by two events) or SQL's
    arithmetic is not plain (an infinite or NULL timestamp). `versions`: _versions(events), if
    already computed."""
    found = event_index(events.id, rows.event)
    if found is None:
        return "two events share an outbox id"
    hit = found >= 0
    every = hit.all()  # every row the run's: no copies
    event = found if every else found[hit]
    consumer = rows.consumer.copy() if rows.others else rows.consumer
    names: list[str | None] = list(CONSUMERS)
    if rows.others:
        others = list(dict.fromkeys(rows.others))  # first seen first; codes OTHER, OTHER + 1, ...
        code = {name: OTHER + k for k, name in enumerate(others)}
        consumer[consumer == OTHER] = [code[name] for name in rows.others]
        names += others
    if not every:
        consumer = consumer[hit]
    processed_at, created = rows.at if every else rows.at[hit], events.created[event]
    if len(event) and not all(_finite(column) for column in (processed_at, created)):
        return "an infinite or NULL timestamp"
    lags = _lags(processed_at - created, consumer, names)
    versions = versions or _versions(events, len(wallet_ids) + 1)
    return _summaries(events, event, consumer, wallet_ids, versions), lags


def _finite(us: np.ndarray) -> bool:
    """No infinity (nor NULL, sent as -infinity) and no difference that could overflow."""
    return int(us.min()) > -FINITE_US and int(us.max()) < FINITE_US


def _summaries(
    events: Events, event: np.ndarray, consumer: np.ndarray, wallet_ids: list[str], versions
) -> dict[str, OutboxSummary]:
    rm, lg = CONSUMERS
    size = len(wallet_ids) + 1  # positions are 1-based
    count = np.bincount(events.n, minlength=size)
    # per event, whether each contract consumer processed it (one row at most: UNIQUE)
    done = []
    for code in (0, 1):
        flags = np.zeros(len(events.id), bool)
        flags[event[consumer == code]] = True
        done.append(flags)
    unprocessed = [count - np.bincount(events.n[flags], minlength=size) for flags in done]
    # the first event (lowest id) not processed by both, for the wallets that have one
    missing = ~(done[0] & done[1])
    example = np.full(size, INT64_MAX, np.int64)
    np.minimum.at(example, events.n[missing], events.id[missing])
    examples = np.full(size, None, object)
    flagged = (unprocessed[0] > 0) | (unprocessed[1] > 0)
    examples[flagged] = example[flagged].tolist()
    low, high, distinct = versions
    present = np.flatnonzero(count)
    ids = [wallet_ids[position - 1] for position in present.tolist()]
    columns = (count, low, high, distinct, *unprocessed, examples)
    # the two per-consumer counts every wallet of a drained run has, shared (facts are read,
    # never changed): 200,000 dicts fewer at 100,000 wallets
    none = {rm: 0, lg: 0}
    n, vmin, vmax, vdistinct, rm_left, lg_left, first = (
        column[present].tolist() for column in columns
    )
    left = [{rm: a, lg: b} if a or b else none for a, b in zip(rm_left, lg_left, strict=True)]
    # OutboxSummary's fields in order (the caller, read_facts, pauses the cyclic collector)
    return dict(
        zip(
            ids,
            map(OutboxSummary, n, vmin, vmax, vdistinct, left, itertools.repeat(none), first),
            strict=False,  # the repeat is endless
        )
    )


def _versions(events: Events, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per wallet position its lowest and highest version (None where it has none but NULLs)
    and how many distinct ones, from one sort of (position, version) keys."""
    known = events.version != NO_VERSION if events.nullable_version else slice(None)
    n, version = events.n[known], events.version[known]
    low, high = np.full(size, None, object), np.full(size, None, object)
    distinct = np.zeros(size, np.int64)
    if not len(n):
        return low, high, distinct
    base = int(version.min())
    if int(version.max()) - base < 2**32 and size < 2**31:  # one int64 key: a plain sort
        key = np.sort((n << 32) | (version - base))
        n, version = key >> 32, (key & 0xFFFFFFFF) + base
    else:
        ranked = np.lexsort((version, n))
        n, version = n[ranked], version[ranked]
    starts = np.ones(len(n), bool)  # a wallet's first (lowest) version
    starts[1:] = n[1:] != n[:-1]
    ends = np.roll(starts, -1)  # its last (highest)
    low[n[starts]], high[n[ends]] = version[starts].tolist(), version[ends].tolist()
    new = starts.copy()
    new[1:] |= version[1:] != version[:-1]
    return low, high, np.bincount(n[new], minlength=size)


def _lags(lag_us: np.ndarray, consumer: np.ndarray, names: list[str | None]) -> dict[str, Lag]:
    """reading._lag_pass's histogram: the lag in ms as SQL computes date_part('epoch', processed_at
    - created_at) * 1000 (the difference justified into days and microseconds, the epoch the
    seconds plus the days' seconds), then per consumer and bucket count, lowest and highest."""
    # (in place where it can be: each temporary of 2.2 M floats costs its page faults)
    if len(lag_us) and max(-lag_us.min(), lag_us.max()) < USECS_PER_DAY:
        ms = lag_us / 1_000_000.0  # under a day: no days, the same floats
    else:
        days = np.where(lag_us >= 0, lag_us // USECS_PER_DAY, -(-lag_us // USECS_PER_DAY))
        ms = (lag_us - days * USECS_PER_DAY) / 1_000_000.0
        ms += (days * 86_400).astype(float)
    ms *= 1000
    over = ms > LAG_FLOOR_MS
    scaled = ms / LAG_FLOOR_MS
    np.log(scaled, out=scaled, where=over)
    scaled /= math.log(LAG_RATIO)
    np.floor(scaled, out=scaled)
    bucket = scaled.astype(np.int64)
    bucket += 1
    if not over.all():
        bucket[~over] = 0  # at or under the floor: one bucket
    width = int(bucket.max()) + 1 if len(bucket) else 1
    key = bucket
    key += consumer * width
    groups = len(names) * width
    counts = np.bincount(key, minlength=groups)
    low, high = np.full(groups, np.inf), np.full(groups, -np.inf)
    np.minimum.at(low, key, ms)
    np.maximum.at(high, key, ms)
    lags = {}
    for code, name in enumerate(names):
        span = slice(code * width, (code + 1) * width)
        present = counts[span] > 0
        if not present.any():
            continue
        found = sorted(
            zip(
                low[span][present].tolist(),
                high[span][present].tolist(),
                counts[span][present].tolist(),
                strict=True,
            )
        )
        total = sum(n for _, _, n in found)
        p50, p95, p99 = (_percentile(found, total, q) for q in (0.5, 0.95, 0.99))
        lags[name] = Lag(total, p50, p95, p99, found[-1][1], LAG_ERROR)
    return lags
