"""structlog set up for a task service: one JSON object per line on stderr (:mod:`schemas.log_format`)."""

from __future__ import annotations

from schemas.log_format import configure_json_logs


def configure_logging(level: str = "INFO") -> None:
    """Log JSON lines at ``level`` and above (``run()`` and ``rc-task`` call this; libraries should not).
    Loggers are not cached at first use, so a later ``structlog.configure`` (by a process that embeds the
    SDK, or a test) still reaches them."""
    configure_json_logs(level, cache_loggers=False)
