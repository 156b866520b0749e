"""A coordinator that dies (SIGKILL) on the first ``start`` reply, after receiving it and before storing
its effect: the reply must not be lost. Run as a subprocess by the tests.

With ``RC_TEST_ACK_FIRST=1`` it acknowledges those replies as they arrive, before storing them: the
guarantee removed, to show that the test notices.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence

from aio_pika.abc import AbstractIncomingMessage

from coordinator import logs
from coordinator.machine import Decision, Event, ReplyReceived
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import Store
from schemas.enums import Action

ACK_FIRST = os.environ.get("RC_TEST_ACK_FIRST") == "1"


class DiesBeforeStoring(Coordinator):
    async def _handle_reply(self, incoming: AbstractIncomingMessage) -> None:
        if ACK_FIRST and b'"action":"start"' in incoming.body:  # the replies this process dies on
            await incoming.ack()
            await asyncio.sleep(0.1)  # let the ack reach the broker, as it would during a store write
        await super()._handle_reply(incoming)

    async def _apply_all(self, release_id: str, inputs: Sequence[tuple[Event, str]]) -> list[Decision] | None:
        if any(isinstance(e, ReplyReceived) and e.reply.action is Action.START for e, _ in inputs):
            os.kill(os.getpid(), signal.SIGKILL)
        return await super()._apply_all(release_id, inputs)


async def main() -> None:
    settings = Settings.from_env()
    assert settings.mongodb_url is not None
    store = Store.connect(settings.mongodb_url, settings.database)
    await DiesBeforeStoring(settings, store).run(asyncio.Event())


if __name__ == "__main__":
    logs.configure("info")
    asyncio.run(main())
