"""The Consistency tab as a person reads it, phase by phase (running, checking..., the verdict),
the same rows in Locust's HTML report, and a web UI page source without the database password.
No servers here: the tab, the report section and the page are plain functions of their state."""

from __future__ import annotations

import json
from pathlib import Path

from tests.locust_support import suite_options_from
from wallet_users.consistency.report import INVALID, VALID, ConsistencyReport, Violation
from wallet_users.load.adoption import Adoption
from wallet_users.record import RunRecord
from wallet_users.wiring.consistency_tab import ConsistencyTab, StartedTest
from wallet_users.wiring.html_report import SECTION_ID, add_verdict_to_file, with_verdict
from wallet_users.wiring.outcome import RunOutcome
from wallet_users.wiring.projection_lag import ConsumerSample
from wallet_users.wiring.web_ui import without_passwords

OPTIONS = suite_options_from("--run-id", "tab1")


def plan(checked_against: str | None = "host=127.0.0.1 dbname=wallex password=***") -> StartedTest:
    return StartedTest(
        run_id="tab1",
        host="http://127.0.0.1:3000",
        embedded=checked_against is not None,
        checked_against=checked_against,
        not_checked_reason="" if checked_against else "no DSN was given for the external host",
        options=OPTIONS,
    )


def outcome(report: ConsistencyReport) -> RunOutcome:
    done = RunOutcome(
        record=RunRecord("tab1"),
        options=OPTIONS,
        host="http://127.0.0.1:3000",
        embedded=True,
        seconds=5,
        seeding=(10, 10, 0.1),
        generator=["peak 20%"],
        consistency=report,
        record_path=Path("reports/tab1/run-record.json"),
        consistency_path=Path("reports/tab1/consistency.json"),
        notes=["projection lag sampled 3 times every 2s"],
    )
    return done


def items(rows: list[dict[str, str]]) -> list[str]:
    return [r["item"] for r in rows]


def test_before_any_test_the_tab_says_so() -> None:
    rows = ConsistencyTab().rows()
    assert rows[0]["item"] == "verdict" and rows[0]["result"] == "no test has stopped yet"


def test_while_the_load_runs_the_tab_says_what_will_be_checked_and_shows_the_live_lag() -> None:
    lag = {"ledger-projector": ConsumerSample("ledger-projector", 3, 42.0)}
    tab = ConsistencyTab(lag=lambda: lag)
    tab.started(plan())
    rows = tab.rows()
    assert rows[0] == {
        "item": "verdict",
        "result": "running",
        "detail": "run tab1: the verdict comes when the test stops",
    }
    by_item = {r["item"]: r for r in rows}
    assert by_item["consistency"]["result"] == "will be checked"
    assert "password=***" in by_item["consistency"]["detail"]
    assert by_item["wallet creation"]["detail"] == ">= 95%"
    assert by_item["lag ledger-projector"]["result"] == "42 ms behind"
    assert by_item["lag ledger-projector"]["detail"].startswith("3 events not processed yet")


def test_a_test_that_will_not_be_checked_says_so_while_it_runs() -> None:
    tab = ConsistencyTab()
    tab.started(plan(checked_against=None))
    by_item = {r["item"]: r for r in tab.rows()}
    assert by_item["consistency"]["result"] == "NOT CHECKED"
    assert "no DSN" in by_item["consistency"]["detail"]


def test_after_the_load_stops_the_tab_says_checking_until_the_verdict_is_in() -> None:
    tab = ConsistencyTab()
    tab.started(plan())
    tab.stopping()
    assert tab.checking
    assert tab.rows()[0]["result"] == "checking..."
    tab.finished(outcome(ConsistencyReport(status=VALID, run_id="tab1", counts={"wallets": 10})))
    assert not tab.checking
    rows = tab.rows(served_at="http://127.0.0.1:8089")
    assert rows[0]["item"] == "verdict" and rows[0]["result"] == "PASS"
    assert "consistency VALID" in rows[0]["detail"]
    by_item = {r["item"]: r for r in rows}
    assert by_item["consistency report"]["detail"] == (
        "http://127.0.0.1:8089/consistency (Download Data tab); saved as reports/tab1/consistency.json"
    )
    assert by_item["run record"]["detail"].startswith("http://127.0.0.1:8089/run-record")
    assert "projection lag" in by_item["note"]["detail"]
    # in a report file, nothing serves them: only where they were saved
    assert tab.rows()[-1]["detail"] == "saved as reports/tab1/run-record.json"


def test_each_violation_kind_shows_its_count_its_first_and_its_worst_example() -> None:
    small = Violation("ledger_sum_mismatch", "lt-tab1-w000001", "100", "101", magnitude=1)
    large = Violation("ledger_sum_mismatch", "lt-tab1-w000002", "100", "400", magnitude=300)
    report = ConsistencyReport(
        status=INVALID,
        run_id="tab1",
        violations={"ledger_sum_mismatch": [small, large]},
        skipped={"ledger order": "no event versions"},
        unverified_wallets=["lt-tab1-w000007"],
    )
    tab = ConsistencyTab()
    tab.finished(outcome(report))
    rows = tab.rows()
    assert rows[0]["result"].startswith("FAIL")
    names = items(rows)
    kind = names.index("ledger_sum_mismatch")
    assert rows[kind]["result"] == "2"
    assert "lt-tab1-w000001" in rows[kind]["detail"]  # the first
    assert names[kind + 1] == "ledger_sum_mismatch (worst)"
    assert "lt-tab1-w000002: expected 100, found 400" in rows[kind + 1]["detail"]
    assert {"item": "ledger order", "result": "skipped", "detail": "no event versions"} in rows
    unverified = rows[names.index("unverified wallets")]
    assert unverified["result"] == "1" and "lt-tab1-w000007" in unverified["detail"]


def test_a_test_that_ended_without_a_verdict_says_why() -> None:
    tab = ConsistencyTab()
    tab.started(plan())
    tab.stopping()
    tab.finished(None, "no worker had a shard of this test")
    assert tab.rows() == [
        {"item": "verdict", "result": "no verdict", "detail": "no worker had a shard of this test"}
    ]


REPORT_PAGE = """<!DOCTYPE html><html><head><title>Locust</title></head><body>
    <div id="root"></div>
    <script>window.templateArgs = {"is_report": true}</script></body></html>"""


def test_the_html_report_gets_the_tabs_rows_above_its_content_escaped_and_once(
    tmp_path: Path,
) -> None:
    rows = [
        {"item": "verdict", "result": "FAIL: <script>", "detail": "consistency INVALID"},
        {"item": "ledger_sum_mismatch", "result": "2", "detail": "e.g. a & b"},
    ]
    page = with_verdict(REPORT_PAGE, rows)
    assert page.index(SECTION_ID) < page.index('<div id="root">')
    assert "FAIL: &lt;script&gt;" in page and "<script>window" in page
    assert "e.g. a &amp; b" in page
    assert with_verdict(page, rows) == page  # a second pass adds nothing

    report = tmp_path / "report.html"
    report.write_text(REPORT_PAGE)
    assert add_verdict_to_file(report, rows)
    assert report.read_text().count(SECTION_ID) == 1
    assert not add_verdict_to_file(tmp_path / "missing" / "report.html", rows)


def start_page(dsn: str) -> str:
    args = {"host": "http://h", "extra_options": {"pg_dsn": {"default_value": dsn}}}
    return (
        "<html><body><div id='root'></div><script>\n"
        f"      window.templateArgs = {json.dumps(args)}\n</script></body></html>"
    )


def test_the_start_page_shows_the_dsn_without_its_password() -> None:
    page = without_passwords(start_page("postgresql://wallet:s3cret@db:5432/wallex"))
    assert "s3cret" not in page
    assert "postgresql://wallet:***@db:5432/wallex" in page or "password=***" in page
    unchanged = start_page("postgresql://wallet@db/wallex")
    assert without_passwords(unchanged) == unchanged


def test_an_adopting_test_says_which_population_it_loads_while_it_runs_and_in_its_verdict() -> None:
    population = Adoption("pop1", "pop0", 1000, "database")
    tab = ConsistencyTab()
    started = plan()
    started.adoption = population
    tab.started(started)
    by_item = {r["item"]: r for r in tab.rows()}
    assert by_item["population"]["result"] == "adopted"
    assert by_item["population"]["detail"].startswith(
        "population adopted from run pop1, created by run pop0: 1000 wallets"
    )
    done = outcome(ConsistencyReport(status=VALID, run_id="tab1", adoption=population.to_dict()))
    done.adoption = population
    tab.finished(done)
    assert "population" in items(tab.rows())
    assert "wallets: 10 adopted from run pop1, created by run pop0, none created" in "\n".join(
        done.summary_lines()
    )
    assert any(
        line.startswith("  population adopted from run pop1 (created by run pop0)")
        for line in done.summary_lines()
    )
