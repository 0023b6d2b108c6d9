"""How a run names what it creates: every wallet id and Idempotency-Key carries the suite's
prefix and the run id, so the check and cleanup find exactly one run's rows."""

from __future__ import annotations

import itertools
import random
import re
import time
import uuid
from collections.abc import Callable

ID_PREFIX = "lt-"  # every wallet the suite creates starts with this; cleanup touches nothing else


def generate_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


def wallet_id(run_id: str, index: int, kind: str = "w") -> str:
    return f"{ID_PREFIX}{run_id}-{kind}{index:06d}"


# What the suite puts after a run's prefix: "w000001" and "h000001" (wallet_id), a
# read-your-writes wallet "r1a2b3c4d-000000" (users.py), an Idempotency-Key's 32 hex digits
# (idempotency_key). Matching it exactly keeps run "nightly" from taking "nightly-2"'s rows.
RUN_SUFFIX = r"(?:[a-z](?:[0-9a-f]{8}-)?[0-9]{6}|[0-9a-f]{32})"


def run_regex(run_id: str) -> str:
    """A PostgreSQL regular expression for exactly the ids of one run."""
    return "^" + re.escape(f"{ID_PREFIX}{run_id}-") + RUN_SUFFIX + "$"


def idempotency_key(run_id: str) -> str:
    """A fresh key, under the suite's prefix and the run id, so cleanup can find it."""
    return f"{ID_PREFIX}{run_id}-{uuid.uuid4().hex}"


def idempotency_keys(run_id: str) -> Callable[[], str]:
    """Keys for the hot path, shaped like idempotency_key's (32 hex digits after the run id) but
    cheaper: a random 64-bit salt per source, then a counter; no system call per key."""
    prefix = f"{ID_PREFIX}{run_id}-{random.getrandbits(64):016x}"
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):016x}"
