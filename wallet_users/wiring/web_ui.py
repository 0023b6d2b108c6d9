"""The suite in Locust's web UI, through Locust's own extension points (template_args, Flask
hooks and routes, as in Locust's extend_web_ui example): the live Consistency tab, the reports
it links to, the verdict in the Download Report page, a start form whose bad values are refused
in the page before anything starts, and a page source without the database password."""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Protocol

import psycopg
from flask import jsonify, request, send_file
from jinja2.utils import htmlsafe_json_dumps
from psycopg import conninfo

from ..dsn import redact_dsn
from .consistency_tab import ConsistencyTab, Row
from .html_report import with_verdict
from .outcome import RunOutcome

log = logging.getLogger("wallet_suite")

TAB = "consistency"
TEMPLATE_ARGS = re.compile(r"(window\.templateArgs = )(\{.*\})\s*$", re.M)


class SuiteFront(Protocol):
    """What the web UI needs from the role that owns the verdict (roles/front.py)."""

    tab: ConsistencyTab
    outcome: RunOutcome | None

    def form_problem(self, form: Any) -> str | None: ...


def attach(environment: Any, front: SuiteFront) -> None:
    web_ui = environment.web_ui
    app = web_ui.app
    base = (getattr(environment.parsed_options, "web_base_path", None) or "").rstrip("/")
    web_ui.template_args["extended_tabs"] = [{"title": "Consistency", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {
            "key": TAB,
            "structure": [
                {"key": "item", "title": "Item"},
                {"key": "result", "title": "Result"},
                {"key": "detail", "title": "Detail"},
            ],
        }
    ]
    # links in the Download Data tab
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./consistency?download=1", "title": "Download the consistency report (JSON)"},
        {"href": "./run-record?download=1", "title": "Download the run record (JSON)"},
    ]

    def rows() -> list[Row]:
        return front.tab.rows(served_at=request.host_url.rstrip("/") + base)

    @app.before_request
    def _refuse_a_bad_form():
        if request.method == "POST" and request.path == f"{base}/swarm":
            problem = front.form_problem(request.form)
            if problem:
                log.error("wallet suite: %s", problem)
                message = f"wallet suite: {problem}"
                return jsonify({"success": False, "message": message, "host": environment.host})
        return None

    @app.after_request
    def _extend(response):
        path = request.path
        if path == f"{base}/stats/requests" and response.is_json:
            payload = response.get_json()
            payload["extended_stats"] = [{"key": TAB, "data": rows()}]
            if front.tab.checking:
                # Locust's page refreshes only while the test runs: keep it refreshing until the
                # verdict is in, so the tab goes from "checking..." to the verdict by itself
                payload["state"] = "running"
            else:
                payload["state"] = environment.runner.state
            response.set_data(json.dumps(payload))
        elif path == f"{base}/stats/report" and response.mimetype == "text/html":
            response.set_data(with_verdict(response.get_data(as_text=True), rows()))
        elif path in (base or "/", f"{base}/") and response.mimetype == "text/html":
            response.set_data(without_passwords(response.get_data(as_text=True)))
        return response

    @app.route(f"{base}/consistency")
    def _consistency_report():
        outcome = front.outcome
        if outcome is None or outcome.consistency is None:
            return jsonify({"status": "no test has stopped yet"}), 404
        if request.args.get("download") and _saved(outcome.consistency_path):
            return send_file(outcome.consistency_path.resolve(), as_attachment=True)
        return jsonify({"verdict": outcome.verdict, **outcome.consistency.to_dict()})

    @app.route(f"{base}/run-record")
    def _run_record():
        outcome = front.outcome
        if outcome is None or not _saved(outcome.record_path):
            return jsonify({"status": "no run record yet"}), 404
        return send_file(
            outcome.record_path.resolve(),
            mimetype="application/json",
            as_attachment=bool(request.args.get("download")),
            download_name=f"run-record-{outcome.options.run_id}.json",
        )


def _has_password(dsn: str) -> bool:
    try:
        return "password" in conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return True  # unparseable: it may hold one anywhere, so it is shown redacted


def _saved(path: Any) -> bool:
    return path is not None and path.is_file()


def without_passwords(page: str) -> str:
    """Locust fills the start form's defaults from the command line, conf files and environment
    again, secret options included: the page would carry --pg-dsn's password. Show its redacted
    form (the role maps it back to the real DSN when the form sends it)."""
    match = TEMPLATE_ARGS.search(page)
    if not match:
        return page
    args = json.loads(match.group(2))
    field = (args.get("extra_options") or {}).get("pg_dsn") or {}
    dsn = field.get("default_value")
    if not dsn or not _has_password(str(dsn)):
        return page
    field["default_value"] = redact_dsn(str(dsn))
    return page[: match.start(2)] + str(htmlsafe_json_dumps(args)) + page[match.end(2) :]
