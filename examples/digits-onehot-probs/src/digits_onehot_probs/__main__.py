"""The command line: `python -m` this package, with `--help` for the commands and their flags.

The commands are the engine's (`engine/cli.py`), run on this project as `PROJECT` hands it over.

Template-owned: `copier update` replaces it with the template's later versions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import PROJECT
from .engine import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (`sys.argv[1:]` by default); the exit code."""
    return cli.main(PROJECT, argv)


if __name__ == "__main__":
    sys.exit(main())
