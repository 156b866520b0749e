"""``send_confirmed``, the coordinator's one way to publish on RabbitMQ: nothing the broker did not confirm
is taken for delivered. A message it returns (mandatory, and no queue took it) is unroutable, even on a
channel that was not opened to raise on returns; one it refuses (``basic.nack``) is refused."""

from __future__ import annotations

import uuid

import aio_pika
import pytest
from pamqp.commands import Basic

from coordinator.broker import Unroutable
from coordinator.broker.rabbitmq import Nacked, send_confirmed


@pytest.mark.parametrize("on_return_raises", [True, False])
async def test_only_what_the_broker_confirmed_is_sent(amqp_url: str, on_return_raises: bool) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=30)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=on_return_raises)
        queue = await channel.declare_queue(exclusive=True)
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )

        async def send(key: str) -> None:
            await send_confirmed(channel, "", key, b"{}", Basic.Properties(), mandatory=True, within=30)

        with pytest.raises(Unroutable):
            await send(f"rc-test-nobody-{uuid.uuid4().hex}")
        with pytest.raises(Nacked):
            await send(full.name)
        await send(queue.name)
        assert (await queue.get(timeout=10, no_ack=True)).body == b"{}"
    finally:
        await connection.close()
