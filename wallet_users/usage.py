"""Usage errors as every command of the suite reports them: one line and exit code 2, never a
usage dump or a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but its errors are one line (argparse's own prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def exit_with_usage_error(message: str) -> NoReturn:
    """One clear line and exit code 2, before any load starts."""
    print(f"wallet suite: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
