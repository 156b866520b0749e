"""How ``rc`` writes: JSON on stdout, Rich renderables on the console, and one-line errors with exit codes.

Exit codes: 0 success; 1 the coordinator refused (or ``watch`` ended canceled/failed); 2 bad input;
3 no coordinator answering or broker unreachable; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from rc_cli import render
from rc_cli.options import Settings
from schemas.messages import AdminResult

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


def console() -> Console:
    return Console(highlight=False)


def print_json(data: Any, *, compact: bool = False) -> None:
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """One ``rc: ...`` line on stderr, its control characters made visible (it may quote data)."""
    sys.stderr.write(f"rc: {render.visible(message)}\n")
    sys.stderr.flush()


def fail(settings: Settings, message: str, code: int) -> NoReturn:
    """One line on stderr (and ``{"error": ...}`` on stdout with ``--json``), then exit with ``code``."""
    if settings.json:
        print_json(render.error_json(message))
    note(message)
    raise typer.Exit(code)


def show_result(settings: Settings, result: AdminResult | None, verb: str | None = None) -> None:
    """Print any result: JSON with ``--json``, else a summary line (``verb``) or the full rendering."""
    if settings.json:
        print_json(render.result_json(result))
        return
    out = console()
    for part in render.result_view(result, verb):
        out.print(part.renderable, soft_wrap=part.soft_wrap)
