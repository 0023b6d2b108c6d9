"""The consistency check: after a run, prove from PostgreSQL that the ledger, the read model, the
write side and both projectors agree with each other and with what the run acknowledged.

`reading` talks to the database, `checker` decides (a pure function), `report` says it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from ..dsn import redact_dsn
from ..record import INDETERMINATE, RunRecord
from ..record.history import RunHistory
from .checker import check_consistency, detail_wallets, find_violations, wallets_in_scope
from .facts import Facts
from .reading import (
    CheckError,
    collector_paused,
    connect,
    missing_tables,
    quiet_since,
    read_facts,
    run_wallet_ids,
    wait_for_drain,
)
from .report import NOT_CHECKED, ConsistencyReport
from .schema import CONSUMERS, Schema, SchemaError

log = logging.getLogger(__name__)

ESSENTIAL_TABLES = ("wallets", "ledger_entries")

__all__ = ["CheckError", "ConsistencyReport", "Schema", "SchemaError", "not_checked", "run_check"]


def not_checked(record: RunRecord, reason: str, target: str = "") -> ConsistencyReport:
    return ConsistencyReport(status=NOT_CHECKED, run_id=record.run_id, reason=reason, target=target)


def adopt_unknown_wallets(record: RunRecord, found: list[str]) -> None:
    """A lost worker may have made wallets no record knows of (a read-your-writes user's own):
    they join the check as maybe-created and unverified, held to the database's invariants."""
    for wallet_id in found:
        if wallet_id not in record.wallets:
            record.tally(wallet_id).created = INDETERMINATE
            record.unverified.add(wallet_id)


def unprocessed(facts: Facts) -> dict[str, int]:
    """The backlog as the facts' outbox pass counts it: per consumer, the run's events it has
    not processed (the same count as reading.backlog, in the facts' snapshot)."""
    return {
        consumer: sum(s.unprocessed.get(consumer, 0) for s in (facts.outbox or {}).values())
        for consumer in CONSUMERS
    }


@collector_paused()  # from the read to the report: the facts are many objects, no cycle
def run_check(
    dsn: str,
    record: RunRecord,
    *,
    schema: Schema | None = None,
    settle_timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    history: RunHistory | None = None,
) -> ConsistencyReport:
    """Wait for the projectors to drain the run's events, read the facts (the history of
    acknowledged answers against the ledger, and the broken wallets' rows), decide.
    Raises CheckError when the check cannot run at all (database unreachable, refused, empty)."""
    schema = schema or Schema()
    target = redact_dsn(dsn)
    started = time.monotonic()
    with connect(dsn) as conn, connect(dsn) as beside:
        try:
            missing = missing_tables(conn, schema)
            absent = [t for t in ESSENTIAL_TABLES if t in missing]
            if absent:
                raise CheckError(
                    f"{', '.join(missing[t] for t in absent)} in {target}: is this the service's database?"
                )
            if record.unverified:
                adopt_unknown_wallets(record, run_wallet_ids(conn, schema, record.run_id))
            wallet_ids = wallets_in_scope(record)
            found: list = []

            def needs_detail(read: Facts) -> list[str]:
                # the violations, found once: the report is made from the same list
                found[:] = find_violations(record, read, schema, wallet_ids)
                return detail_wallets(record, read, found)

            def read_all() -> Facts:
                return read_facts(
                    conn,
                    schema,
                    wallet_ids,
                    history=history,
                    needs_detail=needs_detail,
                    beside=beside,
                )

            read: list[Facts] = []  # the facts, when the drain's last read was theirs

            def confirm() -> dict[str, int]:
                read[:] = [read_all()]
                return unprocessed(read[0])

            def settled(first: Facts, backlog: dict[str, int]) -> bool:
                # the first read is final when it found nothing unprocessed and the database
                # stayed quiet after it; else the drain polls the backlog as it always did
                return (
                    first.snapshot is not None
                    and not any(backlog.values())
                    and quiet_since(conn, first.snapshot, first.snapshot_at, sleep)
                )

            settle: dict = {}
            if "outbox" not in missing and "outbox_consumer_processing" not in missing:
                draining = time.monotonic()
                first = read_all()
                backlog = unprocessed(first)
                if settled(first, backlog):
                    read[:] = [first]
                    drained, waited = True, time.monotonic() - draining
                else:
                    log.debug("the first read was not final: polling the backlog")
                    drained, waited, backlog = wait_for_drain(
                        conn, schema, wallet_ids, settle_timeout, sleep=sleep, confirm=confirm
                    )
                settle = {
                    "drained": drained,
                    "waited_s": round(waited, 3),
                    "backlog": backlog,
                    # how the last read was known final: see settled()
                    "confirmed_by": "snapshot unchanged"
                    if read and read[0] is first
                    else ("second read" if drained else None),
                }
                if not drained:
                    log.warning(
                        "projectors did not drain within %.0fs: %s", settle_timeout, backlog
                    )
                if read and read[0] is not first and any(unprocessed(read[0]).values()):
                    read.clear()  # read before the wait gave up: read again, as it stands now
            facts = read[0] if read else read_all()
        except psycopg.Error as error:
            raise CheckError(f"query failed: {str(error).strip().splitlines()[0]}") from None
    report = check_consistency(record, facts, schema, target, found=found, wallets=wallet_ids)
    report.settle = settle
    report.seconds = time.monotonic() - started
    return report
