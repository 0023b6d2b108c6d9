"""Each fault as an inject and a heal: the embedded target's actuators (its processes and its
PostgreSQL), `pg_terminate_backend` on the service's connections, or the user's own commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from .commands import run_command
from .spec import FaultSpec

SUITE_APPLICATION = "wallet suite"  # the suite's own connections start their name with this


@dataclass
class Fault:
    """One fault's two halves; heal is None for a fault that is over when inject returns."""

    inject: Callable[[], None]
    heal: Callable[[], None] | None = None


@dataclass(frozen=True)
class FaultContext:
    """What the faults act on: the embedded target (None for the user's own service), the
    target's database, and the user's commands."""

    target: Any = None  # EmbeddedTarget
    dsn: str | None = None
    command: str = ""
    heal_command: str = ""
    command_timeout: float = 30.0


def fault_for(spec: FaultSpec, context: FaultContext) -> Fault:
    """The inject and heal of a spec's fault in this context."""
    target, name = context.target, spec.fault
    if name == "drop-connections":
        return Fault(lambda: drop_connections(context.dsn or ""))
    if name == "command":
        heal = None
        if context.heal_command:
            heal = lambda: run_command(  # noqa: E731
                context.heal_command, context.command_timeout, "--nemesis-heal"
            )
        return Fault(
            lambda: run_command(context.command, context.command_timeout, "--nemesis-command"),
            heal,
        )
    if target is None:
        raise ValueError(f"{name} needs the embedded target")
    if name == "kill-service":
        return Fault(target.kill_service, target.start_service)
    if name == "restart-projectors":
        return Fault(lambda: target.stop_projectors(kill=False), target.start_projectors)
    if name == "kill-projectors":
        return Fault(lambda: target.stop_projectors(kill=True), target.start_projectors)
    if name.startswith("restart-postgres-"):
        mode = name.removeprefix("restart-postgres-")
        return Fault(lambda: target.restart_postgres(mode, down_for=spec.duration))
    if name == "pause-postgres":
        return Fault(target.pause_postgres, target.resume_postgres)
    raise ValueError(f"no action for fault {name!r}")


def drop_connections(dsn: str) -> int:
    """Terminate every client connection to the target's database but the suite's own; how
    many. A connection cut mid-transaction rolls back: the service must retry or answer 5xx."""
    with psycopg.connect(
        dsn, autocommit=True, connect_timeout=5, application_name=f"{SUITE_APPLICATION} nemesis"
    ) as conn:
        row = conn.execute(
            """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                 FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()
                  AND backend_type = 'client backend'
                  AND coalesce(application_name, '') NOT LIKE %s""",
            (SUITE_APPLICATION + "%",),
        ).fetchone()
    return int(row[0] or 0)
