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

from coordinator.machine import Decision, Input, ReplyReceived
from coordinator.service import Coordinator
from schemas.enums import Action
from tests.coordinator.crash_after_store import serve

ACK_FIRST = os.environ.get("RC_TEST_ACK_FIRST") == "1"


class DiesBeforeStoring(Coordinator):
    async def _handle_reply(self, incoming: AbstractIncomingMessage) -> None:
        if ACK_FIRST and b'"action":"start"' in incoming.body:  # the replies this process dies on
            await incoming.ack()
            await asyncio.sleep(0.1)  # let the ack reach the broker, as it would during a store write
        await super()._handle_reply(incoming)

    async def _apply_all(self, release_id: str, inputs: Sequence[tuple[Input, str]]) -> list[Decision] | None:
        if any(isinstance(e, ReplyReceived) and e.reply.action is Action.START for e, _ in inputs):
            os.kill(os.getpid(), signal.SIGKILL)
        return await super()._apply_all(release_id, inputs)


if __name__ == "__main__":
    serve(DiesBeforeStoring)
