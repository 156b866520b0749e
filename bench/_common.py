"""The benchmarks' shared code moved to the :mod:`bench.lib` package; this name stays for code written
against it. ``python -m bench._common ...`` runs :mod:`bench.lib.entry`."""

from __future__ import annotations

import sys

from bench.lib import *  # noqa: F403
from bench.lib import __all__  # noqa: F401
from bench.lib.entry import main

if __name__ == "__main__":
    sys.exit(main())
