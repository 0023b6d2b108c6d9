"""Waiting for the system under test without sleeping blindly: poll a condition until a deadline,
and fail with what was awaited and what was last seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

POLL_INTERVAL = 0.02


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Call predicate until it returns something truthy, and return that; fail the test with
    `what` and the last value seen if timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last seen: {result!r})")
        time.sleep(POLL_INTERVAL)  # the polling interval, not a guess at how long things take
