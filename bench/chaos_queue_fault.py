"""The chaos run's fault "a service redeclares its queue" (``bench/chaos/``).

A service's broker user deletes the task queue ``<ns>.task.<service>`` and declares it again as a classic
queue (as an attack or a misconfigured service would). Where that user may not (least privilege: no
*configure* on its queue), the broker's administrator does it instead, so the coordinator meets the
broken queue either way. The coordinator must mark that service unhealthy, with the reason, and keep its
own channels. After a pause an operator repairs it: the classic queue is deleted and declared again as it must
be (as ``rc-admin-setup`` does).
"""

from __future__ import annotations

import contextlib

import aio_pika
from aiormq.exceptions import ChannelAccessRefused

from schemas.topology import Topology


async def redeclare_as_classic(service_url: str, admin_url: str, queue: str) -> str:
    """Delete ``queue`` and declare it as a classic queue; returns who could: "the service" or "the admin"."""
    for who, url in (("the service", service_url), ("the admin", admin_url)):
        connection = await aio_pika.connect(url, timeout=10)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.queue_delete(queue)
                classic = await connection.channel()
                await classic.declare_queue(queue, durable=True)
            except ChannelAccessRefused:
                continue
            return who
    raise RuntimeError(f"neither the service nor the admin could redeclare {queue}")


async def repair(admin_url: str, topology: Topology, service: str) -> None:
    """Delete the classic queue and declare it again as ``rc-admin-setup`` does (a quorum queue, bound to
    the service's commands): the coordinator and the service's SDK find it as it must be."""
    queue = topology.task_queue(service)
    connection = await aio_pika.connect(admin_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
            await channel.queue_delete(queue)
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, arguments=topology.task_queue_arguments())
        await declared.bind(topology.commands_exchange, routing_key=topology.task_binding(service))
