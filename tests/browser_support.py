"""A real browser for the web UI tests: Playwright driving Debian's chromium (Playwright's own
browser download is not used). Where there is no browser the tests skip with one loud line,
unless they are required (CI=true, or WALLET_SUITE_BROWSER_TESTS=required as .ci/run sets):
then they fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.locust_support import PROJECT_ROOT

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))),
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None,
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = PROJECT_ROOT / "reports" / "browser"  # git-ignored, kept by CI on failure
VIEWPORT = {"width": 1280, "height": 860}


def browser_tests_required() -> bool:
    return (
        os.environ.get("WALLET_SUITE_BROWSER_TESTS", "").lower() == "required"
        or os.environ.get("CI", "").lower() == "true"
    )


def why_no_browser() -> str | None:
    """None if Playwright and chromium are both here, else what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -r requirements.txt)"
    if CHROMIUM is None:
        return "no chromium on PATH (make test installs it with apt-get when run as root)"
    return None


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
