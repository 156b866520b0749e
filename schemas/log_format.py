"""The one log format of every component (coordinator, task services, bridge, dashboard): one JSON object
per line, with the level, a UTC ISO timestamp and the bound context variables."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_json_logs(level: str, stream: TextIO | None = None, *, cache_loggers: bool) -> None:
    """Log JSON lines at ``level`` and above (an unknown level counts as ``INFO``) on ``stream`` (stderr by
    default); the standard library's loggers only from WARNING up. ``cache_loggers`` fixes each logger's
    configuration at its first use: faster, but a later ``structlog.configure`` no longer reaches it."""
    stream = stream or sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=stream, level=max(numeric, logging.WARNING), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=cache_loggers,
    )
