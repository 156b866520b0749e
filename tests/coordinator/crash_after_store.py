"""A coordinator that dies (SIGKILL) right after storing a transition that sends ``start`` commands
(``publish`` commands with ``RC_TEST_DIE_ON=publish``), before publishing them: the worst moment for the
outbox. Run as a subprocess by the tests."""

from __future__ import annotations

import asyncio
import os
import signal

from coordinator import logs
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import store_for
from schemas import documents as docs

DIES_ON = os.environ.get("RC_TEST_DIE_ON", "start")


class DiesBeforePublishing(Coordinator):
    async def _deliver(self, release: docs.Release) -> None:
        if any(f".{DIES_ON}." in entry.message_id for entry in release.outbox):
            os.kill(os.getpid(), signal.SIGKILL)
        await super()._deliver(release)


def serve(coordinator: type[Coordinator]) -> None:
    """Run ``coordinator`` (a doomed subclass) as ``python -m coordinator`` would, from the environment."""
    logs.configure("info")
    settings = Settings.from_env()

    async def run() -> None:
        store = store_for(settings.store, settings.database)
        await store.open()
        await coordinator(settings, store).run(asyncio.Event())

    asyncio.run(run())


if __name__ == "__main__":
    serve(DiesBeforePublishing)
