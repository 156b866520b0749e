"""A task service for the scale-out tests: it journals what it really did, with the time and its pid.

    python -m tests.integration.scale_service JOURNAL_FILE      (service ``portal``)

``process`` takes ``$SCALE_WORK_SECONDS`` (default 2) in small chunks, reporting progress; every effect is
appended to the journal (and flushed) as it happens: ``begin``, ``staged``, ``stopped`` (interrupted),
``discarded`` (``cancel()`` ran).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter, TaskHandler, run

SERVICE = "portal"
CHUNKS = 20


class ScaleService(TaskHandler):
    service = SERVICE

    def __init__(self, journal: Path, work_seconds: float) -> None:
        self.journal = journal
        self.work_seconds = work_seconds

    def record(self, release: ReleaseInfo, event: str) -> None:
        line = json.dumps({"release": release.id, "event": event, "pid": os.getpid(), "at": time.time()})
        with self.journal.open("a") as sink:
            sink.write(line + "\n")
            sink.flush()
            os.fsync(sink.fileno())

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        self.record(release, "begin")
        try:
            for chunk in range(1, CHUNKS + 1):
                await asyncio.sleep(self.work_seconds / CHUNKS)
                await progress.report(100 * chunk / CHUNKS, f"chunk {chunk}/{CHUNKS}")
        except asyncio.CancelledError:
            self.record(release, "stopped")
            raise
        self.record(release, "staged")

    async def cancel(self, release: ReleaseInfo) -> None:
        self.record(release, "discarded")


def read_journal(path: Path) -> list[dict[str, object]]:
    """The effects recorded (a line cut short by SIGKILL is ignored)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


if __name__ == "__main__":
    work = float(os.environ.get("SCALE_WORK_SECONDS", "2"))
    run(ScaleService(Path(sys.argv[1]), work), log_level=os.environ.get("RC_LOG_LEVEL", "WARNING"))
