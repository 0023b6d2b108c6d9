"""An ArgumentParser whose usage errors are one line and exit code 2, as every command of this
project promises (argparse's own prints the whole usage first)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
