"""Running the suite the way users do, for tests: Locust's own option parser for the pure tests,
and real `locust` subprocesses (headless, or with the web UI and a small HTTP client for it) from
the project root."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust.argument_parser import LocustArgumentParser

from reference_wallet.launcher import free_port
from tests.polling import wait_until
from wallet_users.wiring import options as suite_options
from wallet_users.wiring.options import SuiteOptions

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VERDICT = "wallet suite verdict:"


def suite_options_from(*argv: str) -> SuiteOptions:
    """SuiteOptions as the suite validates them from a command line (through Locust's parser)."""
    parser = LocustArgumentParser()
    suite_options.register(parser)
    return suite_options.parse(parser.parse_args(list(argv)))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def locust_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", *args]


def locust_env() -> dict[str, str]:
    # no colour codes or a terminal's width in the output we parse
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "NO_COLOR": "1", "COLUMNS": "200"}


@dataclass
class LocustRun:
    returncode: int
    stdout: str
    stderr: str
    stats_file: Path | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def lines_starting(self, prefix: str) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(prefix)]

    def verdict(self) -> str:
        lines = self.lines_starting(VERDICT)
        assert len(lines) == 1, f"expected one verdict line:\n{self.explain()}"
        return lines[0][len(VERDICT) :].strip()

    def stats(self) -> dict[tuple[str, str], dict]:
        """The final request statistics, from Locust's --json-file (written at shutdown, unlike
        the --csv files, which are rewritten once a second and may lag): (method, name) -> entry."""
        assert self.stats_file is not None, "run_headless(..., stats=True) writes them"
        if not self.stats_file.exists():
            return {}
        entries = json.loads(self.stats_file.read_text())
        return {(entry["method"], entry["name"]): entry for entry in entries}

    def requests(self, name: str, method: str = "POST") -> int:
        entry = self.stats().get((method, name))
        return entry["num_requests"] if entry else 0

    def failures(self, name: str, method: str = "POST") -> int:
        entry = self.stats().get((method, name))
        return entry["num_failures"] if entry else 0

    def explain(self) -> str:
        return (
            f"exit code {self.returncode}\n--- stdout (tail) ---\n{self.stdout[-4000:]}"
            f"\n--- stderr (tail) ---\n{self.stderr[-4000:]}"
        )


def run_headless(
    *args: str, tmp_path: Path, timeout: float = 90.0, stats: bool = True
) -> LocustRun:
    """`locust --headless ARGS` from the project root until it exits (killed after timeout)."""
    return start_headless(*args, tmp_path=tmp_path, stats=stats).finish(timeout)


@dataclass
class StartedLocust:
    """A `locust --headless` process started by start_headless, its output going to files."""

    process: subprocess.Popen
    stdout: Path
    stderr: Path
    stats_file: Path | None

    def finish(self, timeout: float = 90.0) -> LocustRun:
        """Wait for it to exit (killed after timeout) and read what it wrote."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.stop()
        return LocustRun(
            self.process.returncode,
            self.stdout.read_text(),
            self.stderr.read_text(),
            self.stats_file,
        )

    def stop(self) -> None:
        """Kill it if it is still running (a test that failed before finish)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_headless(*args: str, tmp_path: Path, stats: bool = True) -> StartedLocust:
    """run_headless without the wait: for runs that are independent of each other (bad input
    that must stop before any load), started together so they overlap their start-up."""
    stats_base = tmp_path / "stats"
    extra = ["--json-file", str(stats_base)] if stats else []
    out, err = tmp_path / "locust-stdout.txt", tmp_path / "locust-stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            locust_command("--headless", *args, *extra),
            cwd=PROJECT_ROOT,
            env=locust_env(),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    return StartedLocust(process, out, err, stats_base.with_suffix(".json") if stats else None)


class WebUI:
    """One `locust` process with its web UI, and a tiny HTTP client for it."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post(self, path: str, form: dict[str, str] | None = None) -> Any:
        data = urllib.parse.urlencode(form or {}).encode()
        # POST /stop returns once the test's check is over: give it the check's time
        with urllib.request.urlopen(self.url + path, data=data, timeout=60) as response:
            body = response.read().decode()
        return json.loads(body) if body.strip().startswith("{") else body

    def stats(self) -> dict[str, Any]:
        return json.loads(self.get("/stats/requests")[1])

    def answering(self) -> bool:
        assert self.process.poll() is None, f"locust exited early:\n{self.output()}"
        try:
            return self.get("/")[0] == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_web_ui(tmp_path: Path, *args: str) -> WebUI:
    """`locust` with its web UI on a free loopback port, answering; stopped by stop_web_ui."""
    port = free_port()
    log = tmp_path / f"locust-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            locust_command("--web-host", "127.0.0.1", "--web-port", str(port), *args),
            cwd=PROJECT_ROOT,
            env=locust_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ui = WebUI(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until(ui.answering, 60, "the web UI to answer")
    except BaseException:
        stop_web_ui(ui)
        raise
    return ui


def stop_web_ui(ui: WebUI) -> None:
    if ui.process.poll() is None:
        ui.process.send_signal(signal.SIGTERM)  # Locust's own shutdown path
        try:
            ui.process.wait(30)
        except subprocess.TimeoutExpired:
            ui.process.kill()
            ui.process.wait()


def template_args(html: str) -> dict[str, Any]:
    """The JSON Locust's page embeds for its React front end (window.templateArgs)."""
    match = re.search(r"window\.templateArgs = (\{.*\})\s*$", html, re.M)
    assert match, "no window.templateArgs in the page"
    return json.loads(match.group(1))
