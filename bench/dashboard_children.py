"""Child processes of ``bench/dashboard.py``; each stops by itself when its standard input closes.

* ``python -m bench.dashboard_children serve --namespace NS``: the dashboard (``rc_dashboard.app.serve``,
  configured by ``RC_*`` variables) on a free port of 127.0.0.1; prints ``READY <port>``.
* ``python -m bench.dashboard_children host --namespace NS --services a,b --steps 20 --interval 0.5``:
  task services written with bare aio-pika, all on one connection. They hold every ``initialize`` until
  ``go`` arrives on standard input (so that pages can open before the release moves), then accept; on
  ``start`` they report progress ``--steps`` times, ``--interval`` seconds apart, each with the note
  ``p<step>@<wall clock ms>`` (how the benchmark times a report from its sending to a page), then answer
  ``staged``; ``publish`` is answered at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from bench.lib import amqp_message, amqp_url, now, success_reply
from rc_dashboard.app import serve
from rc_dashboard.settings import DashboardSettings
from schemas.enums import Action, ReplyKind
from schemas.messages import Command, Progress, TaskReply, decode, encode
from schemas.topology import Topology


def _stop_on_eof_or_signal(stop: asyncio.Event, lines: asyncio.Queue[str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in sys.stdin:
                if lines is not None:
                    loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read, name="stdin", daemon=True).start()


async def run_dashboard(namespace: str, url: str) -> None:
    stop = asyncio.Event()
    _stop_on_eof_or_signal(stop)
    environ = {**os.environ, "RC_NAMESPACE": namespace, "RC_AMQP_URL": url}
    settings = DashboardSettings.from_env(environ, listen="127.0.0.1:0")
    await serve(settings, stop, on_ready=lambda port: print(f"READY {port}", flush=True))


class Host:
    def __init__(
        self, url: str, namespace: str, services: Sequence[str], steps: int, interval: float
    ) -> None:
        self.url = url
        self.topology = Topology(namespace)
        self.services = list(services)
        self.steps = steps
        self.interval = interval
        self.go = asyncio.Event()
        self.user = "guest"
        self.replies: AbstractExchange | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, message: TaskReply | Progress, kind: ReplyKind) -> None:
        assert self.replies is not None
        await self.replies.publish(
            amqp_message(
                encode(message), message.message_id, message.kind.value, message.release_id, self.user
            ),
            routing_key=self.topology.reply_key(message.service, kind),
            mandatory=True,
            timeout=30,
        )

    async def answer(self, command: Command) -> None:
        if command.action is Action.INITIALIZE:
            await self.go.wait()
        if command.action is Action.START:
            for step in range(1, self.steps + 1):
                await asyncio.sleep(self.interval)  # "the work"
                progress = Progress(
                    message_id=uuid.uuid4().hex,
                    sent_at=now(),
                    release_id=command.release_id,
                    service=command.service,
                    in_reply_to=command.message_id,
                    percent=100 * step / self.steps,
                    note=f"p{step}@{int(time.time() * 1000)}",
                    instance_id=f"bench-{command.service}",
                )
                await self.send(progress, ReplyKind.PROGRESS)
        reply = success_reply(command)
        await self.send(reply, ReplyKind.REPLY)

    async def on_command(self, incoming: AbstractIncomingMessage) -> None:
        command = decode(incoming.body, Command)
        await incoming.ack()  # the work goes on in a task: the delivery is not held
        task = asyncio.create_task(self.answer(command))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        stop = asyncio.Event()
        lines: asyncio.Queue[str] = asyncio.Queue()
        _stop_on_eof_or_signal(stop, lines)
        connection = await aio_pika.connect(
            self.url, timeout=30, client_properties={"connection_name": "bench"}
        )
        self.user = "guest" if connection.url.user is None else str(connection.url.user)
        publisher = await connection.channel(publisher_confirms=True)
        self.replies = await publisher.get_exchange(self.topology.replies_exchange, ensure=False)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=64)
        for name in self.services:
            queue = await consumer.declare_queue(
                self.topology.task_queue(name), durable=True, arguments=self.topology.task_queue_arguments()
            )
            await queue.bind(self.topology.commands_exchange, routing_key=self.topology.task_binding(name))
            await queue.consume(self.on_command, consumer_tag=f"bench-{name}")
        print("READY", flush=True)

        async def control() -> None:
            while True:
                if await lines.get() == "go":
                    self.go.set()

        controller = asyncio.create_task(control())
        await stop.wait()
        controller.cancel()
        for task in [controller, *self.tasks]:
            task.cancel()
        await asyncio.gather(controller, *self.tasks, return_exceptions=True)
        await connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_children")
    commands = parser.add_subparsers(dest="what", required=True)
    for name in ("serve", "host"):
        command = commands.add_parser(name)
        command.add_argument("--amqp-url", default=amqp_url())
        command.add_argument("--namespace", required=True)
        if name == "host":
            command.add_argument("--services", required=True, help="comma-separated service names")
            command.add_argument("--steps", type=int, default=20)
            command.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.what == "serve":
        asyncio.run(run_dashboard(args.namespace, args.amqp_url))
    else:
        host = Host(args.amqp_url, args.namespace, args.services.split(","), args.steps, args.interval)
        asyncio.run(host.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
