"""The weighted users' task lists, built from --credit/debit/transfer-weight and the tags."""

from __future__ import annotations

from typing import Any

from ..load.users import TASK_KINDS, WalletBehaviour
from .options import UsageError


def apply_weights(environment: Any, weights: dict[str, int], *, drop_empty: bool = True) -> None:
    """Build the weighted users' task lists from --credit/debit/transfer-weight and the tags
    (Locust filters tags once, before test_start; the weights may change per test in the web UI),
    and drop user classes left without tasks (Locust would fail to start them)."""
    tags = set(getattr(environment.parsed_options, "tags", None) or []) or None
    excluded = set(getattr(environment.parsed_options, "exclude_tags", None) or []) or None
    kept = []
    for user_class in environment.user_classes:
        if issubclass(user_class, WalletBehaviour):
            user_class.tasks = [
                task
                for kind in TASK_KINDS
                if _selected(task := getattr(user_class, kind), tags, excluded)
                for _ in range(weights[kind])
            ]
        if any(_selected(t, tags, excluded) for t in user_class.tasks):
            kept.append(user_class)
    if not drop_empty:
        return
    if not kept:
        raise UsageError("no task is left after --tags/--exclude-tags and the weights")
    environment.user_classes[:] = kept


def _selected(task: Any, tags: set[str] | None, excluded: set[str] | None) -> bool:
    task_tags = getattr(task, "locust_tag_set", set())
    return (tags is None or bool(task_tags & tags)) and not (excluded and task_tags & excluded)
