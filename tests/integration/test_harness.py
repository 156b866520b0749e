"""The test harness is real: a RabbitMQ that confirms and redelivers, a MongoDB-protocol server that does
compare-and-set updates, and a clear error when the broker is missing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from tests._harness import BrokerUnreachable, check_broker, delete_namespace


async def test_persistent_message_round_trip_with_confirms(amqp_url: str, namespace: str) -> None:
    queue_name = f"{namespace}.harness"
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"hello": "world"}',
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id="harness-1",
            ),
            routing_key=queue_name,
            mandatory=True,
            timeout=10,
        )
        assert isinstance(confirmation, Basic.Ack)

        message = None
        for _ in range(
            50
        ):  # the message is routable as soon as the publish is confirmed; allow a moment anyway
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None
        assert message.body == b'{"hello": "world"}'
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.message_id == "harness-1"
        await message.ack()


async def test_namespace_cleanup_deletes_queues_and_exchanges(amqp_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(f"{namespace}.commands", aio_pika.ExchangeType.TOPIC, durable=True)
        await channel.declare_queue(f"{namespace}.task.x", durable=True, arguments={"x-queue-type": "quorum"})
    await delete_namespace(amqp_url, namespace)
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(f"{namespace}.task.x", passive=True)
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.get_exchange(f"{namespace}.commands", ensure=True)


async def test_guarded_find_one_and_update(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    releases = mongo_db["releases"]
    now = datetime.now(UTC)
    await releases.insert_one({"_id": "RE_00000001", "state": "waiting", "revision": 0, "updated_at": now})

    def guard(state: str, revision: int) -> dict[str, Any]:
        return {"_id": "RE_00000001", "state": state, "revision": revision}

    change = {"$set": {"state": "initializing"}, "$inc": {"revision": 1}}
    updated = await releases.find_one_and_update(
        guard("waiting", 0), change, return_document=ReturnDocument.AFTER
    )
    assert updated is not None
    assert updated["state"] == "initializing"
    assert updated["revision"] == 1
    assert updated["updated_at"].tzinfo is not None  # tz_aware client

    stale = await releases.find_one_and_update(
        guard("waiting", 0), {"$set": {"state": "canceled"}, "$inc": {"revision": 1}}
    )
    assert stale is None
    stored = await releases.find_one({"_id": "RE_00000001"})
    assert stored is not None
    assert (stored["state"], stored["revision"]) == ("initializing", 1)


async def test_unreachable_broker_is_an_error_naming_the_url() -> None:
    url = "amqp://guest:secret@127.0.0.1:1/"
    with pytest.raises(BrokerUnreachable) as raised:
        await check_broker(url, connect_timeout=2)
    message = str(raised.value)
    assert "amqp://guest:***@127.0.0.1:1/" in message
    assert "secret" not in message
    assert isinstance(raised.value, RuntimeError)
