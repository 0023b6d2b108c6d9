"""The target under load: the user's own service (`--host`), or, when no host is named, the
reference service started on the embedded PostgreSQL for the duration of the run.

The one module of the suite that imports `reference_wallet` (tests/test_layout.py holds it to
that): a team pointing the suite at its own Wallex never loads the reference's internals."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from reference_wallet.launcher import ReferenceWalletProcess
from reference_wallet.postgres import DEFAULT_STATE_DIR, apply_schema, start_embedded

from ..dsn import redact_dsn

log = logging.getLogger(__name__)


@dataclass
class EmbeddedTarget:
    """reference_wallet on embedded PostgreSQL, on a free loopback port."""

    dsn: str
    service: ReferenceWalletProcess

    @property
    def url(self) -> str:
        return self.service.url

    @classmethod
    def start(cls, data_dir: Path | None = None) -> EmbeddedTarget:
        state = data_dir or DEFAULT_STATE_DIR
        dsn = embedded_dsn(state)
        log_path = state / "reference_wallet.log"
        service = ReferenceWalletProcess(dsn, log_path=log_path).start()
        log.info("embedded target: reference_wallet at %s on %s", service.url, redact_dsn(dsn))
        return cls(dsn, service)

    def stop(self) -> None:
        self.service.stop()


def embedded_dsn(data_dir: Path | None = None) -> str:
    """Start (or join) the embedded PostgreSQL of the default target; its DSN. It stops when
    this process exits."""
    dsn = start_embedded((data_dir or DEFAULT_STATE_DIR) / "pgdata")
    apply_schema(dsn)
    return dsn


def probe(host: str, timeout: float = 5.0) -> str | None:
    """None if something answers HTTP at host (any status), else why not, in a few words."""
    url = host.rstrip("/") + "/ledger/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return str(reason)
