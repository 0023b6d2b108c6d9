"""The suite through Locust's web UI: a real `locust` process serving the UI on a free loopback
port, whose start form carries the suite's options, and which runs a test started over HTTP the
way the form's button does (POST /swarm), counts its requests, and stops on POST /stop."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reference_wallet.launcher import free_port
from tests.locust_support import PROJECT_ROOT, locust_command, locust_env
from tests.polling import wait_until
from wallet_users.record import RunRecord

pytestmark = pytest.mark.timeout(180)

SUITE_OPTIONS = (
    "wallets",
    "seed",
    "run_id",
    "credit_weight",
    "debit_weight",
    "transfer_weight",
    "initial_balance",
    "credit_amount",
    "debit_amount",
    "transfer_amount",
    "replay_ratio",
    "hot_wallets",
    "pg_dsn",
    "settle_timeout",
    "min_create_success",
    "min_operation_success",
    "max_p95_ms",
    "report_dir",
)


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
        with urllib.request.urlopen(self.url + path, data=data, timeout=10) as response:
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


@pytest.fixture
def web_ui(reference_wallet, tmp_path: Path) -> Iterator[tuple[WebUI, Any]]:
    service = reference_wallet()
    port = free_port()
    log = tmp_path / "locust.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            locust_command(
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(port),
                "--host",
                service.url,
                "--pg-dsn",
                service.dsn,
                "--wallets",
                "15",
                "--settle-timeout",
                "20",
                "--report-dir",
                str(tmp_path / "reports"),
            ),
            cwd=PROJECT_ROOT,
            env=locust_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ui = WebUI(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_until(ui.answering, 60, "the web UI to answer")
        yield ui, service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # Locust's own shutdown path
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def template_args(html: str) -> dict[str, Any]:
    """The JSON Locust's page embeds for its React front end (window.templateArgs)."""
    match = re.search(r"window\.templateArgs = (\{.*\})\s*$", html, re.M)
    assert match, "no window.templateArgs in the page"
    return json.loads(match.group(1))


def test_the_start_form_carries_the_suites_options(web_ui) -> None:
    ui, service = web_ui
    status, html = ui.get("/")
    assert status == 200
    args = template_args(html)
    extra = args["extra_options"]
    assert set(SUITE_OPTIONS) <= set(extra), sorted(set(SUITE_OPTIONS) - set(extra))
    # the command line's values are the form's defaults; the others are the suite's own
    assert extra["wallets"]["default_value"] == "15"
    assert extra["credit_weight"]["default_value"] == "50"
    assert extra["replay_ratio"]["default_value"] == "0.01"
    assert extra["debit_amount"]["default_value"] == "10-200"
    assert "Idempotency-Key" in extra["replay_ratio"]["help_text"]
    assert extra["pg_dsn"]["is_secret"] is True
    assert args["host"] == service.url
    # the suite's own tab for the consistency verdict
    assert {"title": "Consistency", "key": "consistency"} in args.get("extended_tabs", [])


def test_a_test_started_from_the_form_runs_counts_requests_and_stops(
    web_ui, tmp_path: Path
) -> None:
    ui, service = web_ui
    answer = ui.post(
        "/swarm",
        {
            "user_count": "4",
            "spawn_rate": "4",
            "host": service.url,
            "wallets": "10",
            "run_id": "from-the-form",
            "replay_ratio": "0",
        },
    )
    assert answer["success"] is True, answer

    def mutations_counted() -> dict[str, int]:
        counted = {
            entry["name"]: entry["num_requests"]
            for entry in ui.stats()["stats"]
            if entry["name"].startswith("/wallets/[id]/")
        }
        return counted if counted.get("/wallets/[id]/credit", 0) >= 20 else {}

    counted = wait_until(mutations_counted, 60, "credits counted in /stats/requests")
    assert not any("(replay)" in name for name in counted)  # replay_ratio 0 from the form

    ui.post("/stop")
    wait_until(lambda: ui.stats()["state"] == "stopped", 60, "the runner to stop")

    # the form's wallets=10 and run_id reached the run: its record holds ten seeded wallets
    record_path = tmp_path / "reports" / "from-the-form" / "run-record.json"
    wait_until(record_path.exists, 60, f"{record_path} to be written")
    record = RunRecord.load(record_path)
    seeded = [w for w in record.wallets if w.startswith("lt-from-the-form-w")]
    assert len(seeded) == 10
    assert record.operations["ok"] > 0

    def consistency_row() -> dict | None:
        for table in ui.stats().get("extended_stats", []):
            if table["key"] == "consistency":
                rows = {row["item"]: row for row in table["data"]}
                verdict = rows.get("verdict", {}).get("result", "")
                return rows if verdict.startswith(("PASS", "FAIL")) else None
        return None

    rows = wait_until(consistency_row, 60, "the consistency tab to show a verdict")
    assert rows["verdict"]["result"] == "PASS", rows


CHROMIUM = next(
    (
        shutil.which(name)
        for name in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(name)
    ),
    None,
)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (tests install nothing)")
def test_a_screenshot_of_the_start_form_from_headless_chromium(web_ui, tmp_path: Path) -> None:
    ui, _ = web_ui
    shot = tmp_path / "start-form.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,900",
            f"--screenshot={shot}",
            "--virtual-time-budget=5000",
            ui.url,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert shot.stat().st_size > 10_000
