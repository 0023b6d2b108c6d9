"""What the columnar passes (ledger_columns, outbox_columns) share: values fetched as raw
big-endian columns (a string_agg of each value's send), and rows found by their wallet id's hash
mapped back to the wallet's position in the run's ids."""

from __future__ import annotations

import numpy as np
from psycopg import sql

# The run's wallet ids' hashes (hashtextextended, seed 0), in the ids' order: wallet_positions
# maps the rows' hashes of their wallet id to positions with them
RUN_HASHES = sql.SQL(
    "SELECT string_agg(int8send(hashtextextended(u.id, 0)), '') FROM unnest(%(ids)b::text[]) AS u(id)"
)
# PostgreSQL builds a result row in one buffer of at most 1 GB: a row of columns stays below this
ROW_BYTES = 768 * 2**20
# a timestamp's send, by its type: int8 microseconds since 2000, 'infinity' the largest
TIMESTAMP_SEND = {
    "timestamp without time zone": "timestamp_send",
    "timestamp with time zone": "timestamptz_send",
}


def estimated_rows(conn, table: sql.Composable) -> float:
    """The planner's estimate of a table's rows (pg_class.reltuples), or, for a table never
    analyzed, an upper bound from its size (a row takes at least 40 bytes): for sizing the rows
    of columns before fetching them."""
    found = conn.execute(
        "SELECT c.reltuples, pg_relation_size(c.oid) FROM pg_class AS c"
        " WHERE c.oid = to_regclass(%s)",
        (table.as_string(conn),),
    ).fetchone()
    if found is None:
        return 0.0
    reltuples, size = found
    return float(reltuples) if reltuples >= 0 else size / 40


def column(data: bytes | None, width: int = 8) -> np.ndarray:
    """Back-to-back big-endian integers (a string_agg of int8send or int4send) as int64."""
    return np.frombuffer(data or b"", f">i{width}").astype(np.int64)


def wallet_positions(run: np.ndarray, wallets: np.ndarray) -> np.ndarray | None:
    """Each event's wallet's 1-based position in the run's ids, from the hashes of both (run:
    the ids' in order); None where two run ids hash alike or an event's hash is not the run's."""
    order = np.argsort(run, kind="stable")
    ranked = run[order]
    if (ranked[1:] == ranked[:-1]).any():
        return None
    if not len(wallets):
        return np.empty(0, np.int64)
    at = np.minimum(np.searchsorted(ranked, wallets), len(run) - 1)
    if (ranked[at] != wallets).any():
        return None
    return order[at] + 1
