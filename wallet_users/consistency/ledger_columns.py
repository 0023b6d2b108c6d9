"""The ledger pass as columns: the run's ledger entries fetched once as raw int8 columns (a hash
of the wallet's id, mapped back to its position in the run; the event version; a hash of the
eventId; createdAt; balanceBefore, balanceAfter and the signed amount in minor units; and, for
the transfers' legs alone, two hashes of the transferId and the amount) and summed, chained and
compared with the acknowledged snapshots in numpy, instead of a window and aggregate pass in SQL.

It decides only what it can decide exactly. A wallet whose entries are not plainly in order (an
entry without an event version, two entries of one version), whose chain or arithmetic breaks,
that may carry an event twice, or whose amounts do not fit the columns is handed, with its
snapshots, to the SQL pass (`reading._ledger`) restricted to those wallets: that pass says
which entry broke and how, the columns only that something did. On a healthy run no wallet
goes there; on a broken one the exact pass reads only the broken wallets.

The same columns carry two hashes of each entry's metadata.transferId: the transfers' legs are
grouped by them, and only transfers whose legs do not net to zero in pairs are read in SQL.

Where the columns cannot carry the ledger's values exactly (amounts that are not numeric with a
declared scale, see amount_scale) the whole ledger goes through the SQL passes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import numpy as np
import psycopg
from psycopg import sql

from ..record.history import RECORD_SIZE, RunHistory
from .columns import (
    ROW_BYTES,
    RUN_HASHES,
    TIMESTAMP_SEND,
    column,
    estimated_rows,
    wallet_positions,
)
from .facts import LedgerSummary, SnapshotCheck
from .schema import Schema

# An entry with no event version: sorts after every int4 version, as NULL does in the SQL pass.
UNVERSIONED = 2**31
# Minor units (cents, for a scale of 2) above which a value is not carried: it and any sum of up
# to MAX_ENTRIES of them fit an int8. Such a wallet goes to the SQL pass.
LIMIT = 10**15
MAX_ENTRIES = 9_000
NOT_CARRIED = -(2**62)  # what the columns hold for a value beyond LIMIT, or NULL
MAX_SCALE = 4  # LIMIT cents in the finest unit carried still fit an int8
# The columns come in a power of two of rows, each a share of the wallets by a hash of the id
# (one row, no grouping, up to this many wallets and columns.ROW_BYTES: PostgreSQL builds a result
# row in one buffer of at most 1 GB). An entry takes 56 bytes, a transfer's leg 24 more.
CHUNK_WALLETS = 262_144
ENTRY_BYTES = 80
NEVER = np.iinfo(np.int64).max  # a createdAt of 'infinity' (or none): its order is not known

Ledger = tuple[dict[str, LedgerSummary], list[str], dict[str, SnapshotCheck | None]]
# (transferId, net, legs, the legs' wallets) per transfer whose legs do not net to zero in pairs
Imbalances = list[tuple[str, Decimal, int, str]]


def amount_scale(conn: psycopg.Connection, schema: Schema) -> tuple[int, str] | None:
    """The scale the ledger's amount, balanceBefore and balanceAfter share, where all three are
    numeric(p, s) with the same s (at most MAX_SCALE) and createdAt is a timestamp (with or
    without time zone), and that type's name: the columns then carry them exactly, the amounts
    as integers of 10^-s. None otherwise (unconstrained numeric, another type, different
    scales)."""
    t = "ledger_entries"
    names = [schema.columns[t][c] for c in ("amount", "balanceBefore", "balanceAfter")]
    created, metadata = schema.columns[t]["createdAt"], schema.columns[t]["metadata"]
    rows = conn.execute(
        """SELECT a.attname::text, a.atttypid = 'numeric'::regtype AND a.atttypmod >= 4,
                  (a.atttypmod - 4) & 65535,
                  format_type(a.atttypid, NULL)
             FROM pg_attribute AS a
            WHERE a.attrelid = to_regclass(%s) AND a.attname = ANY(%s) AND NOT a.attisdropped""",
        (schema.table(t).as_string(conn), [*names, created, metadata]),
    ).fetchall()
    amounts = [(numeric, scale) for name, numeric, scale, _ in rows if name in names]
    if not any(name == metadata and kind == "jsonb" for name, _, _, kind in rows):
        return None  # the legs are found by jsonb's ? operator
    created_type = next((kind for name, _, _, kind in rows if name == created), None)
    if created_type not in TIMESTAMP_SEND:
        return None
    scales = {scale for numeric, scale in amounts if numeric}
    if len(amounts) != 3 or not all(numeric for numeric, _ in amounts) or len(scales) != 1:
        return None
    scale = scales.pop()
    return (scale, created_type) if scale <= MAX_SCALE else None


def transfer_hash(metadata: sql.Composable, seed: int) -> sql.Composable:
    """A hash of an entry's metadata.transferId (NULL for none; with seed 0, never 0: its low
    bit set), two seeds together 127 bits: transfers are grouped by them in numpy."""
    hashed = sql.SQL("hashtextextended({m} ->> 'transferId', {seed})").format(
        m=metadata, seed=sql.Literal(seed)
    )
    return sql.SQL("({h} | 1)").format(h=hashed) if seed == 0 else hashed


def _query(schema: Schema, scale: int, created_type: str, chunks: int) -> sql.Composed:
    """The ledger's columns in `chunks` rows (each a share of the run's wallets, by a hash of
    the id): each column the values' int8send back to back (string_agg, cheaper than array_agg's
    per-element send and length words; no value is NULL, which string_agg would skip). The
    entries are found by a hashed `walletId = ANY(ids)` (cheaper than a join, which hashed the
    million entries), each with its wallet id's hash: read() maps those to positions."""
    t = "ledger_entries"
    col = lambda key: schema.col(t, key, "l")  # noqa: E731
    bound = sql.Literal(Decimal(LIMIT).scaleb(-scale))
    factor = sql.Literal(10**scale)

    def minor(value: sql.Composable) -> sql.Composable:
        # NULL and values beyond LIMIT fall to NOT_CARRIED (never an int8 overflow)
        return sql.SQL(
            "CASE WHEN abs({v}) < {bound} THEN ({v} * {factor})::int8 ELSE {no} END"
        ).format(v=value, bound=bound, factor=factor, no=sql.Literal(NOT_CARRIED))

    metadata = col("metadata")
    signed = sql.SQL(
        "CASE WHEN {type}::text IN ('CREDIT', 'TRANSFER_IN') THEN {a} ELSE -{a} END"
    ).format(type=col("transactionType"), a=minor(col("amount")))
    columns = [
        sql.SQL("hashtextextended({w}, 0)").format(w=col("walletId")),
        sql.SQL("coalesce(({m} ->> 'eventVersion')::integer::int8, {no})").format(
            m=metadata, no=sql.Literal(UNVERSIONED)
        ),
        sql.SQL("coalesce(hashtextextended({m} ->> 'eventId', 0) | 1, 0)").format(m=metadata),
        None,  # createdAt: its own send
        minor(col("balanceBefore")),
        minor(col("balanceAfter")),
        signed,
    ]
    sends = [
        sql.SQL("string_agg({send}(coalesce({c}, 'infinity')), '')").format(
            send=sql.SQL(TIMESTAMP_SEND[created_type]), c=col("createdAt")
        )
        if value is None
        else sql.SQL("string_agg(int8send({v}), '')").format(v=value)
        for value in columns
    ]
    # the transfers' legs alone (a fifth of a run's entries): their id's two hashes and amount
    legs = sql.SQL(" FILTER (WHERE {m} ? 'transferId')").format(m=metadata)
    sends += [
        sql.SQL("string_agg(int8send({v}), ''){legs}").format(v=value, legs=legs)
        for value in (
            sql.SQL("coalesce({h}, 0)").format(h=transfer_hash(metadata, 0)),
            sql.SQL("coalesce({h}, 0)").format(h=transfer_hash(metadata, 1)),
            signed,
        )
    ]
    chunked = sql.SQL(" GROUP BY hashtextextended({wallet}, 1) & {mask}").format(
        wallet=col("walletId"), mask=sql.Literal(chunks - 1)
    )
    return sql.SQL(
        "SELECT {sends} FROM {table} AS l WHERE {wallet} = ANY(%(ids)b::text[]){by}"
    ).format(
        sends=sql.SQL(", ").join(sends),
        table=schema.table(t),
        wallet=col("walletId"),
        by=chunked if chunks > 1 else sql.SQL(""),
    )


def _decimals(values: np.ndarray, scale: int) -> np.ndarray:
    """Minor units as the Decimals the SQL pass reads (its numeric's scale), in an object array:
    each distinct value made once (a run's balances repeat; a Decimal is immutable)."""
    distinct, where = np.unique(values, return_inverse=True)
    made = np.empty(len(distinct), object)
    made[:] = [Decimal(v).scaleb(-scale) for v in distinct.tolist()]
    return made[where]


# history.RECORD ("<IiqqB"): the wallet's index in its segment's table, the version, the
# balance in cents, the amount in cents, the kind.
RECORD_DTYPE = np.dtype(
    [("idx", "<u4"), ("version", "<i4"), ("cents", "<i8"), ("amount", "<i8"), ("kind", "u1")]
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE, "history.RECORD changed: change RECORD_DTYPE too"


def history_columns(history: RunHistory, wallet_ids: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The acknowledged snapshots as columns: the wallet's 1-based position in `wallet_ids`,
    the version and the balance in cents, for the snapshots of the run's wallets that have a
    ledger entry to compare with (as reading.SNAPSHOT_ROWS: not a creation without balance)."""
    position = {wallet: n for n, wallet in enumerate(wallet_ids, 1)}
    tables, records = [], []
    for segment in history.segments:
        table = np.fromiter((position.get(w, 0) for w in segment.wallets), np.int64)
        data = b"".join(segment.blocks())
        rows = np.frombuffer(data, RECORD_DTYPE)
        tables.append(table[rows["idx"]] if len(table) else np.zeros(len(rows), np.int64))
        records.append(rows)
    if not records:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    n = np.concatenate(tables)
    rows = np.concatenate(records)
    version = rows["version"].astype(np.int64)
    keep = (n > 0) & ~((rows["kind"] == 0) & (version == 0))
    return n[keep], version[keep], rows["cents"][keep].astype(np.int64)


def read(
    conn: psycopg.Connection,
    schema: Schema,
    carried: tuple[int, str],
    wallet_ids: list[str],
    params: dict,
    history: RunHistory | None,
    exact: Callable[[list[str]], Ledger],
    exact_transfers: Callable[[list[int]], Imbalances],
) -> tuple[dict[str, LedgerSummary], list[str], dict[str, SnapshotCheck | None], Imbalances] | None:
    """reading._ledger's three values (summaries, wallets that may carry an event twice, the
    snapshots compared) and reading._transfer_imbalances' from the columns, for amounts of the
    scale and a createdAt of the type amount_scale found (`carried`). `exact(wallets)` is the
    SQL pass for those wallets, `exact_transfers(hashes)` the transfers' SQL pass for the
    transfers of those hashes (their transfer_hash with seed 0): the ones whose legs the
    columns do not see netting to zero in pairs. None when two of the run's wallet ids hash
    alike (the entries could not be told apart by wallet: the SQL passes then read it all)."""
    scale, created_type = carried
    # rows of at most CHUNK_WALLETS wallets and ROW_BYTES (an entry takes up to ENTRY_BYTES)
    entries = estimated_rows(conn, schema.table("ledger_entries"))
    wanted = max(-(-len(wallet_ids) // CHUNK_WALLETS), int(entries * ENTRY_BYTES // ROW_BYTES) + 1)
    chunks = 1 << (wanted - 1).bit_length()
    with ThreadPoolExecutor(1, thread_name_prefix="history-columns") as pool:
        # the snapshots' columns are cut from the history while the server reads the ledger
        acknowledged = pool.submit(history_columns, history, wallet_ids) if history else None
        (run,) = conn.execute(RUN_HASHES, params, binary=True).fetchone()
        from .reading import _fetch  # reading imports this module

        # in rows of a share of the wallets each, hashed: the planner, which cannot know there
        # are a few, would sort the million entries by their share. Serial: parallel workers
        # only crowd the cores the other connection's passes use (the check at 100,000 wallets
        # 2.7-3.0 s serial against 3.0-3.3 s with two workers)
        rows = _fetch(
            conn,
            _query(schema, scale, created_type, chunks),
            params,
            enable_sort="off",
            max_parallel_workers_per_gather="0",
        )
        snapshots = acknowledged.result() if acknowledged else None
    wallet, version, event_hash, created, before, after, signed, transfer_0, transfer_1, legs = (
        np.concatenate([column(row[k]) for row in rows]) if rows else np.empty(0, np.int64)
        for k in range(10)
    )
    n = wallet_positions(column(run), wallet)
    if n is None:
        return None
    imbalances = _transfers(transfer_0, transfer_1, legs, exact_transfers)

    # each wallet's entries in the SQL pass's order: by version (unversioned ones last, as NULLS
    # LAST), then createdAt; the entry's id, which breaks the ties left, is not read: ties are odd
    key = (n << 33) | (version + 2**31)
    order = np.argsort(key, kind="stable")  # the scan's order is mostly the wallets': quick
    ranked = key[order]
    if (ranked[1:] == ranked[:-1]).any():  # entries of one version, or unversioned: by createdAt
        order = np.lexsort((created, key))
    n, version, event_hash, created = n[order], version[order], event_hash[order], created[order]
    before, after, signed = before[order], after[order], signed[order]
    total_rows = len(n)
    first = np.ones(total_rows, bool)
    first[1:] = n[1:] != n[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], total_rows)
    counts = ends - starts
    wallet_n = n[starts]
    unversioned = version == UNVERSIONED

    # rows the columns cannot vouch for: their wallets go to the exact pass
    odd = (
        (unversioned & (np.abs(created) == NEVER))
        | (np.abs(before) >= LIMIT)
        | (np.abs(after) >= LIMIT)
        | (np.abs(signed) >= LIMIT)
        | (after != before + signed)
    )
    if total_rows > 1:
        same = ~first[1:]
        either = unversioned[1:] | unversioned[:-1]
        odd[1:] |= (
            same
            & (
                ((version[1:] == version[:-1]) & ~unversioned[1:])  # two entries of one version
                # an unversioned entry beside one of its createdAt: the order is a guess (tied)
                | (either & (created[1:] == created[:-1]))
                | (before[1:] != after[:-1])
            )
        )
    odd_wallet = (np.logical_or.reduceat(odd, starts) if total_rows else np.zeros(0, bool)) | (
        counts > MAX_ENTRIES
    )
    # two entries of a wallet whose eventIds hash alike in their top 33 bits: maybe the same
    # event, for the exact pass to count (0: no eventId; a hash is never 0, its low bit is set)
    hashed = (n << 33) | ((event_hash >> 31) & (2**33 - 1))
    hashed = np.sort(hashed[event_hash != 0])
    twins = np.unique(hashed[1:][hashed[1:] == hashed[:-1]] >> 33)
    odd_wallet |= np.isin(wallet_n, twins)

    total = np.add.reduceat(signed, starts) if total_rows else signed[:0]
    lowest = (
        np.minimum(np.minimum.reduceat(before, starts), np.minimum.reduceat(after, starts))
        if total_rows
        else before[:0]
    )
    first_version = version[starts]
    # as the SQL pass: one entry per version from the lowest to the highest, counting the
    # unversioned entries too (a wallet with one has its snapshots skipped anyway)
    if total_rows:
        unversioned_count = np.add.reduceat(unversioned.astype(np.int64), starts)
        last_version = np.maximum.reduceat(np.where(unversioned, -(2**40), version), starts)
    else:
        unversioned_count = last_version = counts
    contiguous = (unversioned_count < counts) & (last_version - first_version + 1 == counts)

    summaries: dict[str, LedgerSummary] = {}
    screened: dict[str, SnapshotCheck | None] = {}
    plain = ~odd_wallet
    kept = int(plain.sum())
    # the four money figures of every plain wallet, each distinct value made a Decimal once
    sums, lasts, firsts, lows = (
        _decimals(
            np.concatenate(
                [total[plain], after[ends[plain] - 1], before[starts[plain]], lowest[plain]]
            ),
            scale,
        )
        .reshape(4, kept)
        .tolist()
        if kept
        else ([], [], [], [])
    )
    # LedgerSummary's fields in order: no chain or arithmetic break, no example, no tie
    none, zero = itertools.repeat(None), itertools.repeat(0)
    summaries = dict(
        zip(
            [wallet_ids[wn - 1] for wn in wallet_n[plain].tolist()],
            map(
                LedgerSummary,
                counts[plain].tolist(),
                sums,
                lasts,
                firsts,
                lows,
                zero,
                zero,
                none,
                none,
                zero,
                unversioned_count[plain].tolist(),
            ),
            strict=False,  # the repeats are endless
        )
    )

    if snapshots is not None:
        screened = _screen(
            snapshots,
            wallet_ids,
            wallet_n,
            plain,
            contiguous,
            starts,
            counts,
            first_version,
            after,
            scale,
        )
    doubled: list[str] = []
    flagged = [wallet_ids[wn - 1] for wn in wallet_n[odd_wallet].tolist()]
    if flagged:
        more, doubled, checks = exact(flagged)
        summaries.update(more)
        screened.update(checks)
    return summaries, doubled, screened, imbalances


def _transfers(
    transfer_0: np.ndarray,
    transfer_1: np.ndarray,
    signed: np.ndarray,
    exact: Callable[[list[int]], Imbalances],
) -> Imbalances:
    """The transfers' legs grouped by their id's two hashes: a group of two legs netting to zero
    is a balanced transfer (two ids hashing alike in 127 bits aside); every other group (one leg,
    three, a net, an amount the columns do not carry) is read by `exact`, which says which
    transfer and which wallets. None flagged: no query at all."""
    legs = transfer_0 != 0
    t0, t1, amount = transfer_0[legs], transfer_1[legs], signed[legs]
    if not len(t0):
        return []
    order = np.lexsort((t1, t0))
    t0, t1, amount = t0[order], t1[order], amount[order]
    first = np.ones(len(t0), bool)
    first[1:] = (t0[1:] != t0[:-1]) | (t1[1:] != t1[:-1])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(t0)))
    uncarried = np.logical_or.reduceat(np.abs(amount) >= LIMIT, starts)
    # a group of more than two legs may overflow its sum: it is flagged by its count anyway
    net = np.add.reduceat(amount, starts)
    flagged = (counts != 2) | uncarried | (net != 0)
    if not flagged.any():
        return []
    return exact(np.unique(t0[starts[flagged]]).tolist())


def _screen(
    snapshots: tuple[np.ndarray, np.ndarray, np.ndarray],
    wallet_ids: list[str],
    wallet_n: np.ndarray,
    plain: np.ndarray,
    contiguous: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    first_version: np.ndarray,
    after: np.ndarray,
    scale: int,
) -> dict[str, SnapshotCheck | None]:
    """The snapshots of the plain wallets with one entry per version from their lowest to their
    highest, against the balanceAfter of that version: wallet -> its SnapshotCheck. Every other
    wallet with snapshots maps to None (compared one by one later), but for the flagged wallets,
    which the exact pass screens."""
    h_n, h_version, h_cents = snapshots
    where = np.full(len(wallet_ids) + 1, -1, np.int64)  # position -> the wallet's group, or -1
    where[wallet_n] = np.arange(len(wallet_n))
    group = where[h_n]
    in_ledger = group >= 0
    screened: dict[str, SnapshotCheck | None] = {
        wallet_ids[n - 1]: None for n in np.unique(h_n[~in_ledger]).tolist()
    }
    g = group[in_ledger]
    version, cents = h_version[in_ledger], h_cents[in_ledger]
    usable = plain[g] & contiguous[g]
    for n in np.unique(wallet_n[g[plain[g] & ~contiguous[g]]]).tolist():
        screened[wallet_ids[n - 1]] = None
    g, version, cents = g[usable], version[usable], cents[usable]
    offset = version - first_version[g]
    inside = (offset >= 0) & (offset < counts[g])
    at = starts[g] + np.where(inside, offset, 0)
    low = after[at]
    # balanceAfter * 100 = the acknowledged cents, compared in the finer of the two units (an
    # acknowledged balance beyond LIMIT cannot equal a carried one: never multiplied)
    if scale >= 2:
        same = (np.abs(cents) < LIMIT) & (low == cents * 10 ** (scale - 2))
    else:
        same = low * 10 ** (2 - scale) == cents
    bad = ~inside | ~same
    checked = np.bincount(g, minlength=len(wallet_n))
    mismatched = np.bincount(g[bad], minlength=len(wallet_n))
    first: dict[int, tuple] = {}
    for group_, v, c, low_, ok in zip(
        g[bad].tolist(),
        version[bad].tolist(),
        cents[bad].tolist(),
        low[bad].tolist(),
        inside[bad].tolist(),
        strict=True,
    ):
        # the lowest (version, cents, balanceAfter), no entry after any balance (array order)
        key = (v, c, (0, low_) if ok else (1, 0))
        if group_ not in first or key < first[group_][0]:
            first[group_] = (key, v, c, low_ if ok else None)
    groups = np.flatnonzero(checked)
    keys = [wallet_ids[n - 1] for n in wallet_n[groups].tolist()]
    counts_, wrongs = checked[groups].tolist(), mismatched[groups].tolist()
    # one SnapshotCheck for each count of snapshots without a mismatch (facts are not changed)
    alike = {count: SnapshotCheck(count, 0, None) for count in set(counts_)}
    screened.update(zip(keys, map(alike.__getitem__, counts_), strict=True))
    for at in np.flatnonzero(mismatched[groups]).tolist():
        _, v, c, low_ = first[int(groups[at])]
        screened[keys[at]] = SnapshotCheck(
            counts_[at],
            wrongs[at],
            (v, Decimal(c) / 100, Decimal(low_).scaleb(-scale) if low_ is not None else None),
        )
    return screened
