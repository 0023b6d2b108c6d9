"""The suite through Locust's web UI over HTTP: a real `locust` process serving the UI on a free
loopback port, whose start form carries the suite's options, refuses bad values before anything
starts, keeps the database password out of the page, and runs a test started the way the form's
button does (POST /swarm): it counts its requests and the projectors' lag, stops on POST /stop,
and serves the verdict, the reports and an HTML report that carries the verdict. (A browser
drives the same page in test_browser_ui.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.locust_support import WebUI, closed_port, start_web_ui, stop_web_ui, template_args
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
    "lag_interval",
    "adopt_run",
    "nemesis",
    "nemesis_seed",
    "nemesis_command",
    "nemesis_heal",
    "nemesis_timeout",
)


@pytest.fixture
def web_ui(reference_wallet, tmp_path: Path) -> Iterator[tuple[WebUI, Any]]:
    service = reference_wallet()
    ui = start_web_ui(
        tmp_path,
        "--host",
        service.url,
        "--pg-dsn",
        service.dsn,
        "--wallets",
        "15",
        "--settle-timeout",
        "20",
        "--lag-interval",
        "0.5",
        "--report-dir",
        str(tmp_path / "reports"),
    )
    try:
        yield ui, service
    finally:
        stop_web_ui(ui)


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

    def lag_entries() -> set[tuple[str, str]]:
        entries = {(e["method"], e["name"]) for e in ui.stats()["stats"]}
        wanted = {("BACKLOG", "ledger-projector (events)"), ("LAG", "ledger-projector")}
        return entries & wanted if wanted <= entries else set()

    # the projectors' lag, sampled in the service's database while the load runs
    wait_until(lag_entries, 60, "LAG and BACKLOG entries in /stats/requests")

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
    assert "lt-from-the-form" not in rows["run record"]["detail"]  # a path, not wallet ids
    assert rows["run record"]["detail"].startswith(f"{ui.url}/run-record")

    # the reports the tab links to, served by the UI
    status, body = ui.get("/run-record")
    assert status == 200 and json.loads(body)["run_id"] == "from-the-form"
    status, body = ui.get("/consistency?download=1")
    assert status == 200 and json.loads(body)["status"] == "valid"
    # the Download Report page carries the verdict
    status, page = ui.get("/stats/report")
    assert status == 200
    assert 'id="wallet-suite-consistency"' in page
    assert "consistency VALID" in page


def test_a_bad_custom_parameter_is_refused_in_the_answer_and_starts_nothing(web_ui) -> None:
    ui, service = web_ui
    answer = ui.post(
        "/swarm", {"user_count": "2", "spawn_rate": "2", "host": service.url, "wallets": "lots"}
    )
    assert answer["success"] is False
    assert answer["message"] == "wallet suite: --wallets: 'lots' is not a whole number"
    assert ui.stats()["state"] == "ready"
    # a host that answers nothing is refused the same way
    answer = ui.post(
        "/swarm",
        {"user_count": "2", "spawn_rate": "2", "host": f"http://127.0.0.1:{closed_port()}"},
    )
    assert answer["success"] is False and "cannot reach the host" in answer["message"]
    assert ui.stats()["state"] == "ready"
    # so is a run to adopt that the database has never seen
    answer = ui.post(
        "/swarm",
        {"user_count": "2", "spawn_rate": "2", "host": service.url, "adopt_run": "nosuchrun0"},
    )
    assert answer["success"] is False
    assert "--adopt-run: no run nosuchrun0: no wallet of it in" in answer["message"]
    assert ui.stats()["state"] == "ready"


def test_the_page_source_never_holds_the_database_password(
    reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    secret = "s3cret-in-the-dsn"
    dsn = f"{service.dsn.split('://')[0]}://postgres:{secret}@127.0.0.1:1/wallex"
    ui = start_web_ui(tmp_path, "--host", service.url, "--pg-dsn", dsn)
    try:
        status, page = ui.get("/")
        assert status == 200
        assert secret not in page
        default = template_args(page)["extra_options"]["pg_dsn"]["default_value"]
        assert "***" in default, default
    finally:
        stop_web_ui(ui)
