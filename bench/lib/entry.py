"""The child processes of the benchmarks: ``python -m bench.lib.entry coordinator|host|profile``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.lib.basics import amqp_url, success_reply
from bench.lib.broker import amqp_message
from bench.lib.coordinator import WRITE_COMMANDS
from bench.lib.profiles import profile_summary
from bench.lib.spans import SPANS_ENV
from bench.lib.spans import install as install_spans
from schemas.enums import Action, ReplyKind
from schemas.messages import (
    Command,
    decode,
    encode,
)
from schemas.topology import Topology


def _exit_on_stdin_eof(on_eof: Callable[[], None]) -> None:
    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        on_eof()

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


def run_coordinator(count_store_commands: bool) -> int:
    """The real coordinator entry point, stopped (SIGTERM, graceful) when the benchmark goes away."""
    _exit_on_stdin_eof(lambda: os.kill(os.getpid(), signal.SIGTERM))
    if count_store_commands:
        import bson
        from prometheus_client import Counter
        from pymongo import monitoring

        commands = Counter(
            "bench_store_commands",
            "Commands the coordinator sent to the store (benchmark listener)",
            ["command"],
        )
        written = Counter(
            "bench_store_write_bytes",
            "BSON bytes of the write commands the coordinator sent to the store (benchmark listener)",
            ["command"],
        )

        class CommandCounter(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                commands.labels(event.command_name).inc()
                if event.command_name in WRITE_COMMANDS:  # encoded again: CPU charged to the coordinator
                    written.labels(event.command_name).inc(len(bson.encode(event.command)))

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                pass

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                pass

        monitoring.register(CommandCounter())
    if spans := os.environ.get(SPANS_ENV):
        install_spans(Path(spans))
    from coordinator.__main__ import main

    return main([])


async def run_host(url: str, namespace: str, services: Sequence[str], mode: str, prefetch: int) -> None:
    """No-op task services, bare aio-pika, all in one event loop on one connection.

    Why not ``task_sdk`` Runners: a Runner opens its own robust connection (3 channels) per service, sends
    progress before ``staged`` and heartbeats every few seconds; with 300 services that measures the SDK and
    the broker's connection handling, not the coordinator. These services do only what the protocol needs
    (validate the command, publish one persistent reply with a confirm, ack) and are the very same processes
    for the bare-broker floor and for the coordinator, so the ratio isolates the coordinator.

    mode ``answer``: answer every command at once. mode ``hold``: ack commands and keep the ``initialize``
    ones; stdin ``count`` prints ``HELD n``, ``answer`` publishes their replies and prints ``ANSWERED n``.
    Stdin EOF, SIGTERM or SIGINT stops the host.
    """
    topology = Topology(namespace)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    lines = _stdin_lines(loop)
    connection = await aio_pika.connect(url, timeout=30, client_properties={"connection_name": "bench-host"})
    user = "guest" if connection.url.user is None else str(connection.url.user)
    publisher = await connection.channel(publisher_confirms=True)
    replies = await publisher.get_exchange(topology.replies_exchange, ensure=False)
    consumer = await connection.channel()
    await consumer.set_qos(prefetch_count=prefetch)
    held: list[Command] = []

    async def reply_to(command: Command) -> None:
        reply = success_reply(command)
        await replies.publish(
            amqp_message(encode(reply), reply.message_id, reply.kind.value, reply.release_id, user),
            routing_key=topology.reply_key(command.service, ReplyKind.REPLY),
            mandatory=True,
            timeout=30,
        )

    async def on_command(incoming: AbstractIncomingMessage) -> None:
        command = decode(incoming.body, Command)
        if mode == "answer":
            await reply_to(command)
        elif command.action is Action.INITIALIZE:
            held.append(command)
        await incoming.ack()

    for name in services:
        queue_ = await consumer.declare_queue(
            topology.task_queue(name), durable=True, arguments=topology.task_queue_arguments()
        )
        await queue_.bind(topology.commands_exchange, routing_key=topology.task_binding(name))
        await queue_.consume(on_command, consumer_tag=f"bench-{name}")
    print("READY", flush=True)
    controller = asyncio.create_task(_control(lines, held, reply_to, stop))
    await stop.wait()
    controller.cancel()
    await asyncio.gather(controller, return_exceptions=True)
    await connection.close()


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """The lines of stdin, stripped, read by a thread; ``None`` at EOF."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    return lines


async def _control(
    lines: asyncio.Queue[str | None],
    held: list[Command],
    reply_to: Callable[[Command], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """A hold-mode host's stdin: ``count`` prints ``HELD n``, ``answer`` answers the held commands."""
    while (line := await lines.get()) is not None:
        if line == "count":
            print(f"HELD {len(held)}", flush=True)
        elif line == "answer":
            pending, held[:] = list(held), []
            for start in range(0, len(pending), 500):
                await asyncio.gather(*(reply_to(c) for c in pending[start : start + 500]))
            print(f"ANSWERED {len(pending)}", flush=True)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lib.entry", description="Benchmark helper processes."
    )
    commands = parser.add_subparsers(dest="what", required=True)
    coordinator = commands.add_parser("coordinator", help="the real coordinator (RC_* settings)")
    coordinator.add_argument("--count-store-commands", action="store_true")
    profile = commands.add_parser("profile", help="summarize py-spy speedscope profiles")
    profile.add_argument("files", nargs="+", type=Path)
    host = commands.add_parser("host", help="no-op task services")
    host.add_argument("--amqp-url", default=amqp_url())
    host.add_argument("--namespace", required=True)
    host.add_argument("--services", required=True, help="comma-separated service names")
    host.add_argument("--mode", choices=("answer", "hold"), default="answer")
    host.add_argument("--prefetch", type=int, default=16)
    args = parser.parse_args(argv)
    if args.what == "coordinator":
        return run_coordinator(args.count_store_commands)
    if args.what == "profile":
        for path in args.files:
            print(json.dumps(profile_summary(path), indent=2))
        return 0
    asyncio.run(run_host(args.amqp_url, args.namespace, args.services.split(","), args.mode, args.prefetch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
