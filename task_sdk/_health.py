"""The handler's own health check, as the heartbeats report it: bounded in time, never run twice at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from task_sdk._handler import HealthStatus, TaskHandler, as_health_status, describe_error, invoke, is_default


class HandlerHealth:
    """Runs :meth:`~TaskHandler.health` for the heartbeats, waiting at most ``limit`` seconds.

    A check that takes longer is reported unhealthy and left running; the next heartbeats wait for that
    same check instead of starting another one (so a hung check never piles up threads).
    """

    def __init__(self, handler: TaskHandler, limit: float, log: Any) -> None:
        self.handler = handler
        self.limit = limit
        self._log = log
        self._running: asyncio.Task[HealthStatus] | None = None

    async def check(self) -> HealthStatus:
        if is_default(self.handler.health):
            return HealthStatus(True)
        if self._running is None:
            self._running = asyncio.create_task(self._ask(), name=f"{self.handler.service}-health")
        done, _ = await asyncio.wait({self._running}, timeout=self.limit)
        if not done:
            return HealthStatus(False, f"health() did not answer within {self.limit:g} s")
        check, self._running = self._running, None
        return check.result()

    async def stop(self) -> None:
        """Cancel a check still running (the service is stopping)."""
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._running

    async def _ask(self) -> HealthStatus:
        try:
            result = await invoke(self.handler.health)
        except Exception as error:
            self._log.warning("health.failed", error=describe_error(error))
            return HealthStatus(False, f"health() raised {describe_error(error)}")
        return as_health_status(result)


def write_health_file(path: Path, at: datetime, healthy: bool, detail: str | None) -> None:
    """This instance's health, for a health check that runs beside it (a container's): replaced at once
    (written beside, then renamed), so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"at": at.isoformat(), "healthy": healthy, "detail": detail}))
    os.replace(temporary, path)
