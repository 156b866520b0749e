"""A task service for the fault-injection run: believable work, and a journal of what it really did.

    python -m bench.chaos_service NAME JOURNAL_FILE

Every effect (staged, published, discarded) is appended to the journal and fsynced *before* the
SDK replies, so the journal is the service's own testimony of what it did, whatever crashes later.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter, TaskHandler, run


class ChaosService(TaskHandler):
    """Subclassed per run with the service's name (``for_service``)."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal

    @classmethod
    def for_service(cls, name: str) -> type[ChaosService]:
        return type(f"ChaosService_{name.replace('-', '_')}", (cls,), {"service": name})

    def record(self, release: ReleaseInfo, effect: str) -> None:
        line = json.dumps(
            {"release": release.id, "effect": effect, "version": release.version, "at": time.time()}
        )
        with self.journal.open("a") as sink:
            sink.write(line + "\n")
            sink.flush()
            os.fsync(sink.fileno())

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        steps = random.randint(3, 8)
        seconds = float(os.environ.get("CHAOS_WORK_SECONDS", "1")) * random.uniform(0.5, 1.5)
        for step in range(1, steps + 1):
            await asyncio.sleep(seconds / steps)
            await progress.report(100 * step / steps, f"chunk {step}/{steps}")
        self.record(release, "staged")

    async def publish(self, release: ReleaseInfo) -> None:
        self.record(release, "published")

    async def cancel(self, release: ReleaseInfo) -> None:
        self.record(release, "discarded")


def read_journal(path: Path) -> list[dict[str, object]]:
    """The effects a service recorded (a line cut short by SIGKILL mid-write is ignored)."""
    if not path.exists():
        return []
    effects = []
    for line in path.read_text().splitlines():
        try:
            effects.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return effects


if __name__ == "__main__":
    name, journal = sys.argv[1], Path(sys.argv[2])
    run(ChaosService.for_service(name)(journal), log_level=os.environ.get("RC_LOG_LEVEL", "WARNING"))
