"""Reconnections on a real broker, one after the other, while the SDK's own checks run at full pace.

After a reconnection, aio-pika's robust connection restores each channel (reopens it, declares its
queues again, consumes again) before it calls the reconnect callbacks. Meanwhile the channels are
closed, and the heartbeat, which checks the consumer, sees the consumer channel closed and asks the
transport to recover it. Whatever the SDK does then must not race with aio-pika's own restore.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError

from schemas.enums import Action, Outcome
from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter
from task_sdk.testing import Harness, make_release
from tests._proxy import TcpProxy
from tests.sdk.conftest import HarnessFactory
from tests.sdk.handlers import Recorder
from tests.sdk.test_rabbitmq import through

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend_kind", ["rabbitmq"], indirect=True)]

#: Cuts in a row. With a heartbeat every 2 ms and progress in flight, the code this test fixed stalled in 5
#: runs of 5, after 2 to 5 cuts (without the progress, in 1 to 5 runs of 5, depending on the machine's load).
CUTS = 20
CLOSES = 10


class Chatty(Recorder):
    """``process`` reports progress in a tight loop, many reports awaiting their confirms at once, until
    told to stop (publications in flight at every cut, and during every restore)."""

    def __init__(self) -> None:
        super().__init__()
        self.stop = asyncio.Event()

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        while not self.stop.is_set():
            await asyncio.gather(*(progress.report(50, "busy") for _ in range(50)))
            await asyncio.sleep(0)


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    parts = urllib.parse.urlsplit(amqp_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as running:
        yield running


async def test_every_reconnection_is_restored_while_the_heartbeat_checks_the_consumer(
    make_harness: HarnessFactory, proxy: TcpProxy, amqp_url: str
) -> None:
    """The heartbeat (every 2 ms here) finds the consumer channel closed while aio-pika restores it,
    and the transport's recovery used to reopen that channel itself, alongside aio-pika's restore: the
    two consumed under the same tag on one channel (the broker closes it, "DuplicateConsumerTag") or
    closed each other's channel, and aio-pika's restore then waited for the closed channel's callback,
    which waited for the restore. The connection was never restored again: after the next loss every
    reply and heartbeat failed with "channel closed", for good (as the service of issue 19's chaos run,
    cut off after its connection was lost)."""
    handler = Chatty()
    harness = make_harness(handler, amqp_url=through(proxy, amqp_url), heartbeat_seconds=0.002)
    await harness.start(heartbeats=True)
    start = harness.command(Action.START, make_release())
    await harness.send(start)

    async def cut() -> None:
        proxy.cut()

    await _answers_after_each(harness, CUTS, cut, "cuts: the connection was not restored")
    beats = len(harness.heartbeats)
    await harness.drain(0.5)
    assert len(harness.heartbeats) > beats
    assert proxy.connections_made > CUTS
    handler.stop.set()
    assert (await harness.reply_to(start, within=10)).outcome is Outcome.STAGED


async def test_a_consumer_channel_the_broker_closes_is_consumed_again(make_harness: HarnessFactory) -> None:
    """What the transport's recovery is for: the connection stays up, the broker closes the consumer channel,
    and it is consumed again (aio-pika restores it; the heartbeat, every 2 ms here, finds it closed meanwhile
    and waits for that restore). This passed on the old recovery too: it guards the new one."""
    harness = make_harness(Recorder(), heartbeat_seconds=0.002)
    await harness.start(heartbeats=True)
    channel = harness.runner._transport._consume_channel  # type: ignore[attr-defined]

    async def close() -> None:
        await _closed_by_the_broker(channel)

    await _answers_after_each(harness, CLOSES, close, "channel closes: the channel was not restored")
    assert harness.runner._transport.health().consuming


async def _answers_after_each(
    harness: Harness, times: int, disrupt: Callable[[], Awaitable[None]], unrestored: str
) -> None:
    """A command answered, then ``disrupt``, ``times`` over; and a command answered after the last."""
    for done in range(times + 1):
        try:
            reply = await harness.step(Action.INITIALIZE, make_release(), within=10)
        except TimeoutError:
            pytest.fail(f"no reply within 10 s after {done} {unrestored}")
        assert reply.outcome is Outcome.ACCEPTED
        if done < times:
            await disrupt()


async def _closed_by_the_broker(channel: AbstractChannel) -> None:
    """Ack an unknown delivery tag on ``channel``: the broker closes it (PRECONDITION_FAILED)."""
    async with asyncio.timeout(5):
        while True:
            try:
                underlay = await channel.get_underlay_channel()
                await underlay.basic_ack(delivery_tag=999_999)
            except ChannelInvalidStateError:  # closed (or being replaced) already: once it is open again
                await asyncio.sleep(0.01)
                continue
            await asyncio.wait({underlay.closing})
            if "PRECONDITION_FAILED" in str(underlay.closing.exception()):
                return
