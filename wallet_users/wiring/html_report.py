"""The verdict in Locust's HTML report (`--html`, and the web UI's Download Report): Locust 2.47
renders that page from its own fixed arguments (requests, failures, charts), with no place for an
extension's tab, so the Consistency tab's rows go in as a section of plain HTML above the page's
React root, where they read first and need no script."""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("wallet_suite")

ROOT = '<div id="root"></div>'
SECTION_ID = "wallet-suite-consistency"


def verdict_section(rows: Iterable[dict[str, str]]) -> str:
    """The rows as an HTML table under a 'Consistency' heading, the verdict row first and large.
    Styled inline with its own colours: it must read the same in the report's light and dark
    themes."""
    rows = list(rows)
    cell = "padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top"
    head = rows[0] if rows else {"result": "", "detail": ""}
    body = "".join(
        "<tr>"
        + "".join(f'<td style="{cell}">{html.escape(r.get(key, ""))}</td>' for key in KEYS)
        + "</tr>"
        for r in rows
    )
    return (
        f'<section id="{SECTION_ID}" style="max-width:1200px;margin:24px auto 0;padding:16px 24px;'
        "background:#fff;color:#111;border:1px solid #ccc;border-radius:6px;"
        'font-family:Roboto,Helvetica,Arial,sans-serif">'
        '<h2 style="margin:0 0 8px">Consistency</h2>'
        f'<p style="font-size:1.3em;margin:0 0 12px"><strong>{html.escape(head["result"])}</strong>'
        f" {html.escape(head['detail'])}</p>"
        '<table style="border-collapse:collapse;font-size:0.9em;width:100%">'
        "<thead><tr>"
        + "".join(f'<th style="{cell}">{title}</th>' for title in TITLES)
        + f"</tr></thead><tbody>{body}</tbody></table></section>"
    )


KEYS = ("item", "result", "detail")
TITLES = ("Item", "Result", "Detail")


def with_verdict(page: str, rows: Iterable[dict[str, str]]) -> str:
    """Locust's report page with the verdict section above its content (once)."""
    if SECTION_ID in page:
        return page
    section = verdict_section(rows)
    if ROOT in page:
        return page.replace(ROOT, section + ROOT, 1)
    if "</body>" in page:
        return page.replace("</body>", section + "</body>", 1)
    return page + section


def add_verdict_to_file(path: Path, rows: Iterable[dict[str, str]]) -> bool:
    """Rewrite the report Locust wrote with the verdict in it; one line if it cannot."""
    try:
        path.write_text(with_verdict(path.read_text(encoding="utf-8"), rows), encoding="utf-8")
        return True
    except OSError as error:
        log.error("wallet suite: cannot add the verdict to %s: %s", path, error.strerror or error)
        return False
