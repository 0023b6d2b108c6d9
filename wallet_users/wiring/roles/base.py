"""What every role has: one method per Locust event the suite listens to, called in this order
in a run (the web UI repeats test_start .. test_stop once per test)."""

from __future__ import annotations

from typing import Any


class Role:
    """What one Locust process does in a run. hooks.py forwards each event to these methods."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment

    @property
    def runner(self) -> Any:
        return self.environment.runner

    def init(self) -> None:
        """Locust's `init`: options are parsed, the runner exists, no test has started."""

    def test_start(self) -> None:
        """Before any user's task runs (a distributed master: before the workers spawn)."""

    def test_stopping(self) -> None:
        """The users are about to be stopped."""

    def test_stop(self) -> None:
        """The users have stopped."""

    def quitting(self) -> None:
        """The process is about to exit: the last chance to set its exit code."""

    def quit(self, exit_code: int) -> None:
        """Locust has printed its own summary and is exiting."""
