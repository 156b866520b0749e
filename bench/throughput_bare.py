"""The base of the throughput benchmark (:mod:`bench.throughput`): as many reply messages pre-loaded into a
quorum queue like the coordinator's, consumed with the same prefetch and acked by bare aio-pika, and the rate
between 10 % and 90 % of them consumed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.lib import amqp_message, new_release_id, now, ratio, say
from schemas.broker_url import broker_user
from schemas.enums import Action, Outcome
from schemas.messages import TaskReply, encode
from schemas.topology import Topology

TARGET_RATE = 5000.0
#: The prefetch of the bare consumer, and the coordinator's (``RC_PREFETCH``) in the benchmark.
PREFETCH = 64


def window_rate(points: Sequence[tuple[float, float]], total: int) -> tuple[float, float, float]:
    """(rate, t_start, t_end) from ``(time, consumed)`` points: consumed 10 % -> 90 % of ``total``."""
    low, high = 0.1 * total, 0.9 * total
    start = next((p for p in points if p[1] >= low), None)
    end = next((p for p in points if p[1] >= high), None)
    if start is None or end is None or end[0] <= start[0]:
        return 0.0, 0.0, 0.0
    return (end[1] - start[1]) / (end[0] - start[0]), start[0], end[0]


async def preload(
    channel: aio_pika.abc.AbstractChannel, name: str, replies: Sequence[tuple[bytes, str | None]], user: str
) -> None:
    """Publish ``(body, correlation id)`` replies into queue ``name`` as broker user ``user``, persistent
    and confirmed, 500 at a time."""
    for start in range(0, len(replies), 500):
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    amqp_message(body, uuid.uuid4().hex, "reply", correlation_id, user),
                    routing_key=name,
                    timeout=60,
                )
                for body, correlation_id in replies[start : start + 500]
            )
        )


def window_cpu(points: Sequence[Sequence[float]], t_start: float, t_end: float) -> list[float] | None:
    """CPU ms per message of each process between ``t_start`` and ``t_end``, from ``(time, consumed, CPU
    seconds of process 1, of process 2, ...)`` points; None without two points and a message between."""
    window = [p for p in points if t_start <= p[0] <= t_end]
    if len(window) < 2 or window[-1][1] <= window[0][1]:
        return None
    consumed = window[-1][1] - window[0][1]
    return [
        round((after - before) / consumed * 1000, 3)
        for before, after in zip(window[0][2:], window[-1][2:], strict=True)
    ]


async def bare_consume(url: str, namespace: str, bodies: Sequence[bytes]) -> dict[str, Any]:
    """Pre-load ``bodies`` into a quorum queue like the coordinator's, then consume + ack them all."""
    topology = Topology(namespace)
    name = f"{namespace}.bare"
    connection = await aio_pika.connect(url, timeout=30)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True, arguments=topology.coordinator_queue_arguments())
        await preload(channel, name, [(body, None) for body in bodies], broker_user(url))
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=PREFETCH)
        stamps: list[float] = []
        done = asyncio.Event()
        total = len(bodies)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await message.ack()
            stamps.append(time.perf_counter())
            if len(stamps) == total:
                done.set()

        bare_queue = await consumer.get_queue(name, ensure=False)
        tag = await bare_queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 300)
        await bare_queue.cancel(tag)
        await channel.queue_delete(name, if_unused=False, if_empty=False)
    finally:
        await connection.close()
    points = [(t, float(i + 1)) for i, t in enumerate(stamps)]
    rate, _, _ = window_rate(points, total)
    return {
        "messages": total,
        "rate_per_s": round(rate, 1),
        "whole_drain_s": round(stamps[-1] - stamps[0], 3),
        "whole_drain_rate_per_s": round((total - 1) / (stamps[-1] - stamps[0]), 1),
    }


async def against_bare(url: str, namespace: str, service: str, depth: int, rate: float) -> dict[str, Any]:
    """The base (bare consume + ack of as many replies), the target and the ratio."""
    say(f"bare consume + ack of {depth} messages")
    reply = TaskReply(
        message_id=uuid.uuid4().hex,
        sent_at=now(),
        release_id=new_release_id(),
        service=service,
        in_reply_to=uuid.uuid4().hex,
        action=Action.INITIALIZE,
        outcome=Outcome.ACCEPTED,
        instance_id="bench",
        sdk_version="bench",
    )
    bare = await bare_consume(url, namespace, [encode(reply)] * depth)
    say(f"bare consume + ack: {bare['rate_per_s']:.1f} messages/s")
    target = min(TARGET_RATE, 0.8 * bare["rate_per_s"])
    return {
        "bare": bare,
        "target_per_s": round(target, 1),
        "ratio": ratio(rate, bare["rate_per_s"]),
        "meets_target": rate >= target,
    }
