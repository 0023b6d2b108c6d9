"""Start the reference service as a subprocess on a free loopback port and wait until it answers:
used by the Locust suite for its embedded default target and by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .postgres import PROJECT_ROOT


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServiceStartError(RuntimeError):
    """The service exited or did not answer before its deadline; the message holds its output."""


@dataclass
class ReferenceWalletProcess:
    """One `python -m reference_wallet` subprocess (or `... project` with command='project')."""

    dsn: str
    faults: str = ""
    extra_args: list[str] = field(default_factory=list)
    command: str = "serve"
    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    compat: str = ""  # a --compat profile, e.g. "wallex"
    slow_commit_ms: float = 0.0  # --slow-commit-ms (serve only); 0: off
    exit_with_parent: bool = False  # the process stops by itself if this one dies

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ReferenceWalletProcess:
        if self.command == "serve" and not self.port:
            self.port = free_port(self.host)
        args = [sys.executable, "-m", "reference_wallet", self.command, "--pg-dsn", self.dsn]
        if self.command == "serve":
            args += ["--host", self.host, "--port", str(self.port)]
        if self.faults:
            args += ["--faults", self.faults]
        if self.compat:
            args += ["--compat", self.compat]
        if self.slow_commit_ms and self.command == "serve":
            args += ["--slow-commit-ms", f"{self.slow_commit_ms:g}"]
        args += self.extra_args
        self.log_path = self.log_path or Path(os.devnull)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        if self.exit_with_parent:
            env["REFERENCE_WALLET_EXIT_WITH_PARENT"] = str(os.getpid())
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env
        )
        if self.command == "serve":
            self._wait_until_serving(timeout)
        return self

    def _wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceStartError(
                    f"reference_wallet exited with code {self.process.returncode}{self._tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ledger/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.kill()
        raise ServiceStartError(
            f"reference_wallet did not answer within {timeout:.0f}s{self._tail()}"
        )

    def _tail(self) -> str:
        if self.log_path and self.log_path != Path(os.devnull) and self.log_path.exists():
            lines = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            return ": " + " | ".join(lines) if lines else ""
        return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within timeout; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        log_file = getattr(self, "_log", None)
        if log_file is not None:
            log_file.close()
