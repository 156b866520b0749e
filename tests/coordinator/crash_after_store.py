"""A coordinator that dies (SIGKILL) right after storing a transition that sends ``start`` commands,
before publishing them: the worst moment for the outbox. Run as a subprocess by the tests."""

from __future__ import annotations

import asyncio
import os
import signal

from coordinator import logs
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import Store
from schemas import documents as docs


class DiesBeforePublishing(Coordinator):
    async def _deliver(self, release: docs.Release) -> None:
        if any(".start." in entry.message_id for entry in release.outbox):
            os.kill(os.getpid(), signal.SIGKILL)
        await super()._deliver(release)


def serve(coordinator: type[Coordinator]) -> None:
    """Run ``coordinator`` (a doomed subclass) as ``python -m coordinator`` would, from the environment."""
    logs.configure("info")
    settings = Settings.from_env()
    assert settings.mongodb_url is not None
    store = Store.connect(settings.mongodb_url, settings.database)
    asyncio.run(coordinator(settings, store).run(asyncio.Event()))


if __name__ == "__main__":
    serve(DiesBeforePublishing)
