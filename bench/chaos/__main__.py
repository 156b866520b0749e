"""``python -m bench.chaos``: see the package's documentation."""

from __future__ import annotations

import sys

from bench.chaos.cli import main

if __name__ == "__main__":
    sys.exit(main())
