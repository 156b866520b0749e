"""A coordinator that dies (SIGKILL) right after storing a transition that sends ``start`` commands
(``publish`` commands with ``RC_TEST_DIE_ON=publish``), before publishing them: the worst moment for the
outbox. Run as a subprocess by the tests."""

from __future__ import annotations

import asyncio
import os
import signal

from coordinator import logs
from coordinator.__main__ import broker_of
from coordinator.hooks import Hooks
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import store_for
from schemas.documents import Release

DIES_ON = os.environ.get("RC_TEST_DIE_ON", "start")


async def die_before_publishing(release: Release) -> None:
    if any(f".{DIES_ON}." in entry.message_id for entry in release.outbox):
        os.kill(os.getpid(), signal.SIGKILL)


def serve(hooks: Hooks) -> None:
    """Run a coordinator with these deadly hooks, configured like ``python -m coordinator``."""
    logs.configure("info")
    settings = Settings.from_env()

    async def run() -> None:
        store = store_for(settings.store, settings.database)
        await store.open()
        await Coordinator(settings, store, broker_of(settings), hooks=hooks).run(asyncio.Event())

    asyncio.run(run())


if __name__ == "__main__":
    serve(Hooks(stored=die_before_publishing))
