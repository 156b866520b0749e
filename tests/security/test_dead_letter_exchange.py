"""Issue 21, item 7: a task service's broker user can neither publish into ``<ns>.dlx`` (forged dead letters
with any reason) nor bind anything to it (``<ns>.commands`` bound to it copies every command into
``<ns>.dead``)."""

from __future__ import annotations

import aio_pika
import aiormq.exceptions
import pytest
from aio_pika.abc import AbstractChannel

from schemas.topology import DEAD_REASON_HEADER
from tests.security.conftest import TIMEOUT, Installed

pytestmark = pytest.mark.integration


async def test_a_service_user_cannot_publish_to_the_dead_letter_exchange(installed: Installed) -> None:
    t = installed.topology
    forged = aio_pika.Message(b"{}", headers={DEAD_REASON_HEADER: "refused by the coordinator"})
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await installed.publish(installed.service, t.dead_letter_exchange, "", forged)


async def _bind_commands_to_dead_letters(channel: AbstractChannel, installed: Installed) -> None:
    t = installed.topology
    underlay = await channel.get_underlay_channel()
    await underlay.exchange_bind(
        destination=t.dead_letter_exchange,
        source=t.commands_exchange,
        routing_key=t.task_binding(installed.service),
        timeout=TIMEOUT,
    )


async def test_a_service_user_cannot_bind_anything_to_the_dead_letter_exchange(installed: Installed) -> None:
    t = installed.topology
    async with installed.connect(installed.service) as connection:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _bind_commands_to_dead_letters(await connection.channel(), installed)
        # Nor the other way: its queue fed from the dead-letter exchange.
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await (await channel.get_underlay_channel()).queue_bind(
                t.task_queue(installed.service), t.dead_letter_exchange, routing_key="", timeout=TIMEOUT
            )
    async with installed.connect(installed.coordinator) as connection:  # control: the coordinator may
        channel = await connection.channel()
        await _bind_commands_to_dead_letters(channel, installed)
        await (await channel.get_underlay_channel()).exchange_unbind(
            destination=t.dead_letter_exchange,
            source=t.commands_exchange,
            routing_key=t.task_binding(installed.service),
            timeout=TIMEOUT,
        )
