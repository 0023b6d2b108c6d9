"""The suite's shape: it reaches the reference service through one module only, Locust's
events are wired in one thin table, and a load process does not load the check's numpy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "wallet_users"
TARGET_STARTER = SUITE / "wiring" / "target.py"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_only_the_target_starter_imports_the_reference_service() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in [*SUITE.rglob("*.py"), ROOT / "locustfile.py"]
        if any(name.split(".")[0] == "reference_wallet" for name in imported_modules(path))
    )
    assert importers == [str(TARGET_STARTER.relative_to(ROOT))]


def test_the_hooks_table_is_thin_and_asks_no_runner_kind() -> None:
    hooks = (SUITE / "hooks.py").read_text()
    assert len(hooks.splitlines()) < 120
    assert "isinstance" not in hooks
    kinds_asked = sorted(
        str(path.relative_to(ROOT))
        for path in SUITE.rglob("*.py")
        if "isinstance(environment.runner" in path.read_text()
        or "isinstance(runner" in path.read_text()
    )
    assert kinds_asked == ["wallet_users/wiring/roles/__init__.py"]


def test_a_locust_process_that_does_not_check_never_loads_numpy() -> None:
    # numpy is the consistency check's (its columnar passes): a worker would carry its ~16 MB
    # and import time for nothing
    found = subprocess.run(
        [sys.executable, "-c", "import sys, locustfile; print('numpy' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.strip() == "False"
