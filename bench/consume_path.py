"""The coordinator's consuming path alone: CPU per delivery, consumed and acknowledged.

Blocks of replies are pre-loaded into a quorum queue like the coordinator's reply queue, then consumed
with the coordinator's prefetch, alternately by bare aio-pika (``Queue.consume``, each message acked by
``message.ack()``: the base of the throughput benchmark) and through the coordinator's own broker session
(:meth:`RabbitSession.consume` with a handler that acknowledges each delivery, as the coordinator's
handlers do once the effect is stored). Prints the CPU of this process per delivery, from the consumer's
start to the last acknowledgement, for both, and their ratio (the pre-loading is not counted).

    python -m bench.consume_path [--messages 2000] [--blocks 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.lib import RESULTS, amqp_url, last_line, new_namespace, ratio, say, write_results
from bench.throughput_bare import PREFETCH, preload
from coordinator.broker import Delivery
from coordinator.broker.rabbitmq import RabbitBroker
from schemas.broker_url import broker_user
from schemas.topology import Topology

NAME = "consume_path"
#: Consume ``count`` messages from a queue and return when the last is acknowledged.
Drain = Callable[[str, int], Awaitable[None]]


def body(index: int) -> bytes:
    """A reply body of realistic size."""
    return ('{"release_id": "RE_BENCH000", "n": ' + str(index) + ', "padding": "' + "x" * 250 + '"}').encode()


class Acked:
    """Acknowledgements counted down to the last of a block."""

    def __init__(self, count: int) -> None:
        self.left = count
        self._done = asyncio.Event()

    async def settle(self, ack: Callable[[], Awaitable[None]]) -> None:
        await ack()
        self.left -= 1
        if not self.left:
            self._done.set()

    async def every(self) -> None:
        await asyncio.wait_for(self._done.wait(), 300)


def through_aio_pika(connection: aio_pika.abc.AbstractConnection) -> Drain:
    async def drain(queue: str, count: int) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        acked = Acked(count)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await acked.settle(message.ack)

        found = await channel.get_queue(queue, ensure=False)
        await found.consume(on_message)
        await acked.every()
        await channel.close()

    return drain


def through_session(broker: RabbitBroker, namespace: str) -> Drain:
    async def drain(queue: str, count: int) -> None:
        session = await broker.connect(f"{namespace}-bench-session")
        acked = Acked(count)

        async def handler(delivery: Delivery) -> None:
            await acked.settle(delivery.ack)

        try:
            await session.consume(queue, handler)
            await acked.every()
        finally:
            await session.close()

    return drain


async def cpu_per_delivery(drain: Drain, queue: str, count: int) -> float:
    """Microseconds of this process's CPU per delivery while ``drain`` empties the queue."""
    started = time.process_time()
    await drain(queue, count)
    return 1e6 * (time.process_time() - started) / count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url, namespace = amqp_url(), new_namespace("consume")
    topology = Topology(namespace)
    queue = f"{namespace}.replies"
    broker = RabbitBroker(url, topology, publish_timeout=30, prefetch=PREFETCH)
    connection = await aio_pika.connect(url, timeout=30)
    samples: dict[str, list[float]] = {"aio_pika": [], "session": []}
    try:
        loader = await connection.channel(publisher_confirms=True)
        await loader.declare_queue(queue, durable=True, arguments=topology.coordinator_queue_arguments())
        replies = [(body(i), "RE_BENCH000") for i in range(args.messages)]
        sides = {"aio_pika": through_aio_pika(connection), "session": through_session(broker, namespace)}
        for block in range(args.blocks + 1):  # the first block warms both sides up
            for side, drain in sides.items():
                await preload(loader, queue, replies, broker_user(url))
                cpu = await cpu_per_delivery(drain, queue, len(replies))
                if block:
                    samples[side].append(cpu)
            if block:
                say(
                    f"block {block}/{args.blocks}: "
                    + ", ".join(f"{k} {v[-1]:.0f} us" for k, v in samples.items())
                )
        await loader.queue_delete(queue, if_unused=False, if_empty=False)
    finally:
        await connection.close()
    medians = {side: round(statistics.median(values), 1) for side, values in samples.items()}
    return {
        "benchmark": NAME,
        "method": {"messages_per_block": args.messages, "blocks": args.blocks, "prefetch": PREFETCH},
        "cpu_us_per_delivery": medians,
        "samples_us": samples,
        "ratio": ratio(medians["session"], medians["aio_pika"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.consume_path", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--messages", type=int, default=2000, help="deliveries per block (default 2000)")
    parser.add_argument("--blocks", type=int, default=6, help="alternations of the two sides (default 6)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    data = asyncio.run(run(args))
    medians = data["cpu_us_per_delivery"]
    say(f"CPU per delivery: aio-pika {medians['aio_pika']} us, coordinator session {medians['session']} us")
    path = write_results(NAME, data, args.results_dir)
    say(f"figures written to {path.name}")
    print(last_line(NAME, medians["session"], "us/delivery", data["ratio"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
