"""The user's own fault and heal commands (`--nemesis-command`, `--nemesis-heal`): run through
the shell in a process group of their own, so a command that hangs is killed with its children
after the timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


class CommandFailed(RuntimeError):
    """A command exited non-zero or timed out; the message is one line."""


def run_command(command: str, timeout: float, what: str = "command") -> None:
    """Run `command` with sh; CommandFailed if it exits non-zero or outlives `timeout`."""
    process = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.communicate()
        raise CommandFailed(f"{what} {command!r} timed out after {timeout:g}s") from None
    if process.returncode != 0:
        last = (output or b"").decode("utf-8", "replace").strip().splitlines()
        tail = f": {last[-1][:200]}" if last else ""
        raise CommandFailed(f"{what} {command!r} exited with code {process.returncode}{tail}")


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
