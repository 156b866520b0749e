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

from coordinator.broker import Delivery
from coordinator.hooks import Hooks
from coordinator.machine import Input, ReplyReceived
from schemas.enums import Action
from tests.coordinator.crash_after_store import serve

ACK_FIRST = os.environ.get("RC_TEST_ACK_FIRST") == "1"


async def ack_start_replies_first(delivery: Delivery) -> None:
    if ACK_FIRST and b'"action":"start"' in delivery.body:  # the replies this process dies on
        await delivery.ack()
        await asyncio.sleep(0.1)  # let the ack reach the broker, as it would during a store write


async def die_before_storing_a_start_reply(release_id: str, inputs: Sequence[Input]) -> None:
    if any(isinstance(i, ReplyReceived) and i.reply.action is Action.START for i in inputs):
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    serve(Hooks(received=ack_start_replies_first, storing=die_before_storing_a_start_reply))
