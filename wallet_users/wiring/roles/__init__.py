"""One class per kind of Locust process, each readable top to bottom as what that process does
in a run: `LocalRole` (one process does everything), `MasterRole` (shards, merges, checks) and
`WorkerRole` (seeds and loads its shard, reports its record)."""

from __future__ import annotations

from typing import Any

from locust.runners import MasterRunner, WorkerRunner

from .base import Role
from .local import LocalRole
from .master import MasterRole
from .worker import WorkerRole


def choose_role(environment: Any) -> Role:
    """The role of this process, from the kind of its runner: the one place that asks."""
    if isinstance(environment.runner, WorkerRunner):
        return WorkerRole(environment)
    if isinstance(environment.runner, MasterRunner):
        return MasterRole(environment)
    return LocalRole(environment)


__all__ = ["LocalRole", "MasterRole", "Role", "WorkerRole", "choose_role"]
