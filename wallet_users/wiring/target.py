"""The target under load: the user's own service (`--host`), or, when no host is named, the
reference service started on the embedded PostgreSQL for the duration of the run, with the fault
actuators a nemesis drives (kill and restart the service or the projectors, restart or pause
PostgreSQL).

The one module of the suite that imports `reference_wallet` (tests/test_layout.py holds it to
that): a team pointing the suite at its own Wallex never loads the reference's internals."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from reference_wallet.embedded import EmbeddedPostgres, ServerControlError
from reference_wallet.launcher import ReferenceWalletProcess, ServiceStartError
from reference_wallet.postgres import DATABASE, DEFAULT_STATE_DIR, apply_schema, ensure_database

from ..dsn import redact_dsn

log = logging.getLogger(__name__)

PROJECTING = b"reference_wallet: projecting "  # the projector process's line once it runs
STOP_SECONDS = 10.0
RETRY_SECONDS = 0.2  # between two starts of a part whose first start exited


class TargetFaultError(RuntimeError):
    """A fault actuator failed or timed out; the message is one line."""


@dataclass
class EmbeddedTarget:
    """reference_wallet on embedded PostgreSQL, on a free loopback port: the HTTP service (no
    projectors of its own) and the two projectors in a `project` process beside it, so that
    each part can be killed, stopped and started on its own."""

    dsn: str
    service: ReferenceWalletProcess
    projectors: ReferenceWalletProcess
    postgres: EmbeddedPostgres
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return self.service.url

    @classmethod
    def start(cls, data_dir: Path | None = None, *, cleanup_mode: str = "stop") -> EmbeddedTarget:
        """Start (or join) the embedded PostgreSQL under data_dir (default .state), then the
        service and the projector process. cleanup_mode: the wheel's, see EmbeddedPostgres."""
        state = data_dir or DEFAULT_STATE_DIR
        postgres = EmbeddedPostgres.start(state / "pgdata", cleanup_mode=cleanup_mode)
        ensure_database(postgres.uri(), DATABASE)
        dsn = postgres.uri(DATABASE)
        apply_schema(dsn)
        service = ReferenceWalletProcess(
            dsn,
            extra_args=["--no-projectors"],
            log_path=state / "reference_wallet.log",
            exit_with_parent=True,
        )
        projectors = ReferenceWalletProcess(
            dsn,
            command="project",
            log_path=state / "reference_wallet-projectors.log",
            exit_with_parent=True,
        )
        target = cls(dsn, service, projectors, postgres)
        try:
            service.start()
            target.start_projectors()
        except (ServiceStartError, TargetFaultError):
            target.stop()
            raise
        log.info("embedded target: reference_wallet at %s on %s", service.url, redact_dsn(dsn))
        return target

    def parts(self) -> dict[str, int | None]:
        """Each part's pid (None: not running), to show what a fault hits."""
        return {
            "service": _pid(self.service),
            "projectors": _pid(self.projectors),
            "postgres": self.postgres.postmaster_pid(),
        }

    def stop(self) -> None:
        """Stop the service and the projectors (PostgreSQL stops when this process exits); safe
        to call twice, and after any fault."""
        if self._stopped:
            return
        self._stopped = True
        if self.postgres.paused:
            with contextlib.suppress(ServerControlError):
                self.postgres.resume()  # a frozen server would hang the processes' shutdown
        self.service.stop(STOP_SECONDS)
        self.projectors.stop(STOP_SECONDS)

    # --- the service ----------------------------------------------------------------------------

    def kill_service(self, timeout: float = 5.0) -> None:
        """SIGKILL the HTTP service process and any worker it forked; return once they are gone."""
        process = self.service.process
        if process is None or process.poll() is not None:
            raise TargetFaultError(f"cannot kill the service: {_not_running(self.service)}")
        try:
            victims = [psutil.Process(process.pid)]
            victims += victims[0].children(recursive=True)
        except psutil.NoSuchProcess:
            victims = []
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.kill()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TargetFaultError(f"the service survived SIGKILL for {timeout:g}s") from None
        _, alive = psutil.wait_procs(victims[1:], timeout=timeout)
        self.service.kill()  # closes its log
        if alive:
            raise TargetFaultError(
                f"service workers {', '.join(str(p.pid) for p in alive)} survived SIGKILL"
            )

    def start_service(self, timeout: float = 15.0) -> None:
        """Start the service again on the same port; return once /ledger/health answers 200. A
        start that exits (PostgreSQL down at that moment, under another fault) is tried again
        until the timeout."""
        if _pid(self.service) is not None:
            raise TargetFaultError(f"the service is already running (pid {_pid(self.service)})")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.service.start(max(1.0, deadline - time.monotonic()))
                return
            except ServiceStartError as error:
                self.service.kill()  # closes its log
                if time.monotonic() + RETRY_SECONDS >= deadline:
                    raise TargetFaultError(
                        f"the service did not start again: {_one_line(error)}"
                    ) from None
            time.sleep(RETRY_SECONDS)

    # --- the projectors -------------------------------------------------------------------------

    def stop_projectors(self, kill: bool = False, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM (SIGKILL when kill) the projector process; return once it has exited."""
        process = self.projectors.process
        if process is None or process.poll() is not None:
            raise TargetFaultError(f"cannot stop the projectors: {_not_running(self.projectors)}")
        if kill:
            self.projectors.kill()
            return
        self.projectors.stop(timeout)  # SIGKILLs it if SIGTERM is not enough in time
        if process.returncode not in (0, -15):
            raise TargetFaultError(
                f"the projectors exited with code {process.returncode} after SIGTERM"
            )

    def start_projectors(self, timeout: float = 15.0) -> None:
        """Start the projector process again; return once it says it projects (its pool is
        connected and both consumers run). A start that exits is tried again until the
        timeout, as in start_service."""
        if _pid(self.projectors) is not None:
            raise TargetFaultError(
                f"the projectors are already running (pid {_pid(self.projectors)})"
            )
        deadline = time.monotonic() + timeout
        while True:
            exited = self._start_projectors_once(deadline)
            if exited is None:
                return
            if time.monotonic() + RETRY_SECONDS >= deadline:
                raise TargetFaultError(exited)
            time.sleep(RETRY_SECONDS)

    def _start_projectors_once(self, deadline: float) -> str | None:
        """None once the process projects; why not if it exited; raises at the deadline."""
        log_path = self.projectors.log_path
        offset = log_path.stat().st_size if log_path and log_path.exists() else 0
        self.projectors.start()
        process = self.projectors.process
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.projectors.kill()  # closes its log
                return (
                    f"the projectors exited with code {process.returncode}"
                    f"{_log_tail(log_path, offset)}"
                )
            if PROJECTING in _read_from(log_path, offset):
                return None
            time.sleep(0.05)
        self.projectors.kill()
        raise TargetFaultError(f"the projectors did not start in time{_log_tail(log_path, offset)}")

    # --- PostgreSQL -----------------------------------------------------------------------------

    def restart_postgres(self, mode: str, timeout: float = 30.0, down_for: float = 0.0) -> None:
        """pg_ctl stop -m mode ("fast" or "immediate"), down_for seconds down, then start on the
        same data directory and socket; return once it accepts connections."""
        try:
            self.postgres.restart(mode, timeout, down_for)
        except ServerControlError as error:
            raise TargetFaultError(f"restart PostgreSQL ({mode}): {error}") from None

    def pause_postgres(self) -> None:
        """SIGSTOP the postmaster and all its children: every query and connection attempt hangs
        until resume_postgres()."""
        try:
            self.postgres.pause()
        except ServerControlError as error:
            raise TargetFaultError(f"pause PostgreSQL: {error}") from None

    def resume_postgres(self) -> None:
        """SIGCONT what pause_postgres() stopped."""
        try:
            self.postgres.resume()
        except ServerControlError as error:
            raise TargetFaultError(f"resume PostgreSQL: {error}") from None


def _pid(part: ReferenceWalletProcess) -> int | None:
    process = part.process
    return process.pid if process is not None and process.poll() is None else None


def _not_running(part: ReferenceWalletProcess) -> str:
    if part.process is None:
        return "it was never started"
    return f"it is not running (exit code {part.process.returncode})"


def _read_from(path: Path | None, offset: int) -> bytes:
    if path is None or not path.exists():
        return b""
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


def _log_tail(path: Path | None, offset: int) -> str:
    lines = _read_from(path, offset).decode(errors="replace").strip().splitlines()
    return f": {lines[-1]}" if lines else ""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return " | ".join(text) if text else type(error).__name__


def embedded_dsn(data_dir: Path | None = None) -> str:
    """Start (or join) the embedded PostgreSQL of the default target; its DSN. It stops when
    this process exits."""
    postgres = EmbeddedPostgres.start((data_dir or DEFAULT_STATE_DIR) / "pgdata")
    ensure_database(postgres.uri(), DATABASE)
    dsn = postgres.uri(DATABASE)
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
