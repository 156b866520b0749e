"""Structured logging: one JSON object per line on stderr (the format of :mod:`schemas.log_format`)."""

from __future__ import annotations

from typing import TextIO

from schemas.log_format import configure_json_logs


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines at ``level`` and above, on ``stream`` (stderr by default). A long-running server configures
    logging once, so its loggers are cached at first use."""
    configure_json_logs(level, stream, cache_loggers=True)
