"""The web UI as a person uses it, in a real browser (Playwright driving chromium): one `locust`
started with no --host, its form left as it comes, START and STOP, and the Consistency tab says
VALID; the projectors' lag shows in Statistics while the load runs; a service with a fault switch
typed into the form is INVALID with that kind's row; a bad custom parameter is refused in the page
and starts nothing; a typed host without a DSN says "not checked"; and the `--html` report and
the Download Report page carry the verdict. Each test leaves a screenshot in reports/browser/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    browser_tests_required,
    screenshot_path,
    why_no_browser,
)
from tests.locust_support import WebUI, run_headless, start_web_ui, stop_web_ui
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(240)

if (_missing := why_no_browser()) and not browser_tests_required():
    # one line in the summary for the whole module; required (CI), each test fails instead
    pytest.skip(f"BROWSER TESTS NOT RUN: {_missing}", allow_module_level=True)

UI_TIMEOUT_MS = 60_000  # the page's own refresh is every 2 s; a check takes a few seconds


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = why_no_browser()
    if problem:
        message = f"BROWSER TESTS NOT RUN: {problem}"
        if browser_tests_required():
            pytest.fail(f"{message}; they are required here (CI)", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, request) -> Iterator[Any]:
    """A fresh page; its screenshot is saved when the test ends, passed or failed."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield page
    finally:
        page.screenshot(path=screenshot_path(request.node.name), full_page=True)
        context.close()


@pytest.fixture(scope="module")
def web_ui(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebUI]:
    """One `locust` for the module, as a new user starts it: no --host (the embedded target),
    only the size of the test on the command line."""
    tmp_path = tmp_path_factory.mktemp("web-ui")
    ui = start_web_ui(
        tmp_path,
        *("--users", "4", "--spawn-rate", "4", "--wallets", "15", "--settle-timeout", "30"),
        *("--report-dir", str(tmp_path / "reports")),
    )
    ui.report_dir = tmp_path / "reports"
    try:
        yield ui
    finally:
        stop_web_ui(ui)


# --- what a person does in the page ------------------------------------------------------------


def open_start_form(page: Any, ui: WebUI) -> Any:
    """The start form: on the page before the first test, in the New dialog after one."""
    page.goto(ui.url)
    new = page.get_by_role("button", name="New")
    start = page.get_by_role("button", name="Start")
    new.or_(start).first.wait_for()
    if new.is_visible():
        new.click()
    return page.locator("form")


def field(form: Any, label: str) -> Any:
    """A form field by its label as the page shows it (e.g. "Pg Dsn (the target's ...)")."""
    return form.get_by_label(re.compile(rf"^{re.escape(label)}\b"))


def fill_custom_parameters(form: Any, **values: str) -> None:
    """Open "Custom parameters" and type into the fields, named as on the page (Pg_Dsn="...")."""
    form.get_by_text("Custom parameters").click()
    for name, value in values.items():
        field(form, name.replace("_", " ")).fill(value)


def wait_for_load(ui: WebUI, run_id: str | None = None, operations: int = 150) -> None:
    """Until the running test (run_id, if given) has this many operations acknowledged: a few
    seconds of load. Read from the Consistency tab's rows, which are never cached (Locust's
    statistics are, for 2 s, and would still show the last test's)."""

    def loaded() -> bool:
        tables = {t["key"]: t["data"] for t in ui.stats().get("extended_stats", [])}
        rows = {r["item"]: r for r in tables.get("consistency", [])}
        if rows.get("verdict", {}).get("result") != "running":
            return False
        if run_id is not None and rows.get("target", {}).get("result") != run_id:
            return False
        ok = rows.get("operations", {}).get("result", "0 ok").split()[0]
        return int(ok) >= operations

    wait_until(loaded, 60, f"{operations} operations of run {run_id or 'the test'} acknowledged")


def stop_and_read_the_verdict(page: Any) -> Any:
    page.get_by_role("button", name="Stop").click()
    page.get_by_role("tab", name="Consistency").click()
    verdict = verdict_row(page)
    expect(verdict).to_have_text(re.compile(r"^verdict(PASS|FAIL)"), timeout=UI_TIMEOUT_MS)
    return verdict


def verdict_row(page: Any) -> Any:
    """The Consistency tab's first row: the verdict."""
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name="verdict", exact=True))


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=UI_TIMEOUT_MS)
    return playwright_expect(locator)


# --- the tests ----------------------------------------------------------------------------------


def test_the_form_as_it_comes_on_the_embedded_target_ends_valid_with_live_lag_in_statistics(
    web_ui: WebUI, page: Any
) -> None:
    form = open_start_form(page, web_ui)
    host = field(form, "Host")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", host.input_value()), host.input_value()
    form.get_by_text("Custom parameters").click()
    assert field(form, "Pg Dsn").input_value() == ""  # left empty, as it comes
    form.get_by_role("button", name="Start").click()

    # while the load runs, the projectors' lag and backlog are rows of Statistics
    statistics = page.get_by_role("table")
    lag_row = (
        statistics.get_by_role("row").filter(has_text="LAG").filter(has_text="ledger-projector")
    )
    expect(lag_row.first).to_be_visible()
    expect(statistics.get_by_role("cell", name="BACKLOG").first).to_be_visible()
    expect(statistics.get_by_role("cell", name="read-model-projector (events)")).to_be_visible()
    page.screenshot(path=screenshot_path("statistics-with-projection-lag"))

    wait_for_load(web_ui)
    verdict = stop_and_read_the_verdict(page)
    expect(verdict).to_contain_text("PASS")
    expect(verdict).to_contain_text("consistency VALID")
    expect(verdict).not_to_contain_text("not checked")
    tab = page.get_by_role("tabpanel").or_(page.locator("main")).first
    expect(tab.get_by_role("cell", name="lag ledger-projector")).to_be_visible()
    expect(tab.get_by_role("cell", name="run record", exact=True)).to_be_visible()
    page.screenshot(path=screenshot_path("consistency-tab-valid"))

    # the Download Report page (Download Data tab) carries the same verdict
    page.get_by_role("tab", name="Download Data").click()
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Download Report").click()
    report = opened.value
    section = report.locator("#wallet-suite-consistency")
    expect(section).to_contain_text("consistency VALID")
    expect(report.get_by_text("Locust Test Report")).to_be_visible()
    report.screenshot(path=screenshot_path("download-report-with-verdict"), full_page=True)
    # and the reports the tab names are there to download
    expect(page.get_by_role("link", name="Download the run record (JSON)")).to_be_visible()


def test_a_service_with_a_fault_switch_typed_into_the_form_is_invalid_with_that_kinds_row(
    web_ui: WebUI, page: Any, reference_wallet
) -> None:
    faulty = reference_wallet(faults="ledger-duplicate=0.3", extra_args=["--fault-seed", "5"])
    form = open_start_form(page, web_ui)
    field(form, "Host").fill(faulty.url)
    fill_custom_parameters(form, Pg_Dsn=faulty.dsn, Wallets="10", Run_Id="browser-faulty")
    form.get_by_role("button", name="Start").click()
    wait_for_load(web_ui, "browser-faulty")

    verdict = stop_and_read_the_verdict(page)
    expect(verdict).to_contain_text("FAIL")
    expect(verdict).to_contain_text("consistency INVALID")
    kind = page.get_by_role("row").filter(
        has=page.get_by_role("cell", name="duplicate_ledger_entry", exact=True)
    )
    expect(kind).to_contain_text(re.compile(r"e\.g\. lt-[\w-]+: expected"))


def test_a_bad_custom_parameter_is_shown_in_the_page_and_starts_nothing(
    web_ui: WebUI, page: Any
) -> None:
    before = web_ui.stats()["state"]
    runs_before = sorted(web_ui.report_dir.glob("*")) if web_ui.report_dir.exists() else []
    form = open_start_form(page, web_ui)
    fill_custom_parameters(form, Wallets="lots")
    form.get_by_role("button", name="Start").click()
    expect(
        form.get_by_text("wallet suite: --wallets: 'lots' is not a whole number")
    ).to_be_visible()
    assert web_ui.stats()["state"] == before
    assert (sorted(web_ui.report_dir.glob("*")) if web_ui.report_dir.exists() else []) == (
        runs_before
    )


def test_a_typed_external_host_without_a_dsn_says_not_checked_in_the_page(
    web_ui: WebUI, page: Any, reference_wallet
) -> None:
    service = reference_wallet()
    form = open_start_form(page, web_ui)
    field(form, "Host").fill(service.url)
    fill_custom_parameters(form, Pg_Dsn="", Wallets="10", Run_Id="browser-unchecked")
    form.get_by_role("button", name="Start").click()
    page.get_by_role("tab", name="Consistency").click()
    warning = page.get_by_role("row").filter(
        has=page.get_by_role("cell", name="NOT CHECKED", exact=True)
    )
    expect(warning).to_contain_text("no DSN was given for the external host")  # while it runs
    wait_for_load(web_ui, "browser-unchecked")
    verdict = stop_and_read_the_verdict(page)
    expect(verdict).to_contain_text("PASS (consistency not checked)")
    expect(verdict).to_contain_text("NOT CHECKED")


def test_the_html_report_of_a_headless_run_opened_in_the_browser_shows_the_verdict(
    page: Any, reference_wallet, tmp_path: Path
) -> None:
    service = reference_wallet()
    html = tmp_path / "report.html"
    run = run_headless(
        *("-u", "4", "-r", "4", "-t", "5s", "--only-summary", "--wallets", "10"),
        *("--host", service.url, "--pg-dsn", service.dsn, "--lag-interval", "1"),
        *("--report-dir", str(tmp_path / "reports"), "--html", str(html)),
        tmp_path=tmp_path,
    )
    assert run.returncode == 0, run.explain()
    page.goto(html.as_uri())
    section = page.locator("#wallet-suite-consistency")
    expect(section).to_contain_text("PASS")
    expect(section).to_contain_text("consistency VALID")
    expect(section.get_by_role("cell", name="run record", exact=True)).to_be_visible()
    # Locust's own tables in the same report hold the lag entries
    expect(page.get_by_role("cell", name="read-model-projector (events)").first).to_be_visible()
