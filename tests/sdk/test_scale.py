"""Several instances of one service: the prefetch follows the free process slots, and a cancel on the
instance's own control queue stops its processing before ``cancel()`` runs (issue 19, the SDK's side)."""

from __future__ import annotations

import threading
import time

import aio_pika
import aiormq
import pytest

from schemas.broker_url import broker_user
from schemas.enums import Action, Outcome
from schemas.messages import BUSY_DETAIL, Command, Heartbeat, ReleaseInfo, encode
from schemas.topology import Topology
from task_sdk import ProgressReporter, Runner, StepCancelled
from task_sdk._amqp import AmqpTransport
from task_sdk._memory import InMemoryTransport, Settlement
from task_sdk._transport import Delivery, Outgoing
from task_sdk.testing import Harness, InMemoryBackend, make_release
from tests.sdk._rabbit import RabbitBackend
from tests.sdk.conftest import FAST
from tests.sdk.handlers import Recorder

#: The broker user the test's coordinator sends commands as.
COORDINATOR = FAST.coordinator_user


class SlowToStop(Recorder):
    """A plain ``def process`` (a thread) that takes a while to stop once canceled; journals the order."""

    def __init__(self) -> None:
        super().__init__()
        self.journal: list[str] = []
        self.running = threading.Event()

    def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:  # type: ignore[override]
        self.running.set()
        while True:  # reports as it goes (so the test's waits see messages) until it is canceled
            try:
                progress.report_sync(1, "working")
            except StepCancelled:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # cleaning up what it was writing: still staging
        self.journal.append("process stopped")

    async def cancel(self, release: ReleaseInfo) -> None:
        self.journal.append("cancel")


def memory_harness(handler: Recorder, concurrency: int = 1) -> tuple[Harness, InMemoryTransport]:
    backend = InMemoryBackend(sender=FAST.coordinator_user)
    return Harness(handler, settings=FAST.replace(concurrency=concurrency), backend=backend), backend.memory


async def test_a_start_takes_a_slot_and_the_prefetch_follows_the_free_slots() -> None:
    harness, memory = memory_harness(Recorder(process_seconds=0.2), concurrency=2)
    first, second = make_release(), make_release()
    await harness.send(harness.command(Action.START, first))
    await harness.send(harness.command(Action.START, second))
    await harness.wait_for(lambda: len(memory.windows) >= 2, "both starts taken")
    assert memory.windows[:2] == [1, 0]  # narrowed before each start was acked: no consumer once all busy
    assert all(d.settlement is Settlement.ACKED for d in memory.deliveries)  # acked early all the same
    await harness.wait_for(lambda: len(harness.replies) == 2, "both staged")
    await harness.drain(0.1)
    assert memory.windows[-1] == 2
    await harness.stop()


async def test_an_instance_says_it_is_busy_before_its_consumer_goes() -> None:
    """Otherwise the coordinator may find the queue without consumer while the instance's last heartbeat
    said "idle", and cancel a release created in that moment as having no consumer (seen in CI)."""
    harness, memory = memory_harness(Recorder(process_seconds=0.3))
    journal: list[str] = []
    publish, set_window = memory.publish, memory.set_work_window

    async def journal_publish(message: Outgoing) -> None:
        if isinstance(message, Heartbeat):
            journal.append(f"heartbeat {message.detail}")
        await publish(message)

    async def journal_window(free_slots: int, taken: Delivery | None = None) -> None:
        journal.append(f"window {free_slots}")
        await set_window(free_slots, taken)

    memory.publish = journal_publish  # type: ignore[method-assign]
    memory.set_work_window = journal_window  # type: ignore[method-assign]
    await harness.start(heartbeats=True)
    await harness.wait_for(lambda: bool(journal), "the first heartbeat")
    await harness.send(harness.command(Action.START, make_release()))
    await harness.wait_for(lambda: "window 0" in journal, "the window closed")
    closed = journal.index("window 0")
    assert journal[closed - 1].startswith(f"heartbeat {BUSY_DETAIL}")
    busy = next(h for h in harness.heartbeats if h.detail and h.detail.startswith(BUSY_DETAIL))
    assert busy.healthy
    await harness.stop()


async def test_a_start_that_found_no_free_slot_is_acked_only_once_it_has_one() -> None:
    backend = InMemoryBackend(sender=FAST.coordinator_user)
    memory = backend.memory
    memory.set_work_window = _record_only(memory)  # type: ignore[method-assign]  # never closes, as a
    # broker may deliver one more command while the consumer is being cancelled
    harness = Harness(Recorder(process_seconds=0.3), settings=FAST.replace(concurrency=1), backend=backend)
    await harness.start(heartbeats=False)
    await harness.send(harness.command(Action.START, make_release()))
    await harness.send(harness.command(Action.START, make_release()))
    await harness.wait_for(lambda: memory.deliveries[0].settlement is Settlement.ACKED, "the first taken")
    assert memory.deliveries[1].settlement is Settlement.PENDING
    await harness.wait_for(lambda: memory.deliveries[1].settlement is Settlement.ACKED, "the second taken")
    assert len(harness.replies) == 1  # the first had finished: it never ran two at once
    await harness.stop()


def _record_only(memory: InMemoryTransport):  # type: ignore[no-untyped-def]
    async def set_work_window(free_slots: int, taken: Delivery | None = None) -> None:
        memory.windows.append(free_slots)

    return set_work_window


async def test_a_cancel_on_the_control_queue_stops_process_before_cancel_runs() -> None:
    handler = SlowToStop()
    harness, memory = memory_harness(handler)
    release = make_release()
    start = harness.command(Action.START, release)
    await harness.send(start)
    await harness.wait_for(handler.running.is_set, "process() running")

    cancel = harness.command(Action.CANCEL, release)
    await memory.deliver_control(encode(cancel), user_id=COORDINATOR)
    reply = await harness.reply_to(cancel)

    assert reply.outcome is Outcome.CANCELED
    assert handler.journal == ["process stopped", "cancel"]
    await harness.drain(0.2)
    assert [r.in_reply_to for r in harness.replies] == [cancel.message_id]  # the start is not answered
    await harness.stop()


async def test_a_control_cancel_for_a_release_this_instance_never_saw_is_not_answered() -> None:
    handler = Recorder()
    harness, memory = memory_harness(handler)
    await harness.start(heartbeats=False)
    cancel = harness.command(Action.CANCEL, make_release())
    delivery = await memory.deliver_control(encode(cancel), user_id=COORDINATOR)
    await harness.drain(0.3)
    assert delivery.settlement is Settlement.ACKED
    assert harness.replies == []
    assert handler.calls["cancel"] == 0
    await harness.stop()


async def test_a_control_cancel_not_from_the_coordinator_is_dropped() -> None:
    handler = SlowToStop()
    harness, memory = memory_harness(handler)
    release = make_release()
    await harness.send(harness.command(Action.START, release))
    await harness.wait_for(handler.running.is_set, "process() running")
    forged = harness.command(Action.CANCEL, release)
    delivery = await memory.deliver_control(encode(forged), user_id="portal")
    await harness.drain(0.3)
    assert delivery.settlement is Settlement.DEAD_LETTERED
    assert handler.journal == []  # still processing, cancel() not called
    assert not [reply for reply in harness.replies if reply.in_reply_to == forged.message_id]
    await harness.stop()


async def test_a_cancel_from_the_shared_queue_is_answered_as_before() -> None:
    handler = Recorder()
    harness, _ = memory_harness(handler)
    assert (await harness.cancel(make_release())).outcome is Outcome.CANCELED
    assert handler.calls["cancel"] == 1
    await harness.stop()


# ------------------------------------------------------------------------------------------- RabbitMQ


@pytest.mark.integration
async def test_each_instance_consumes_its_own_control_queue_which_goes_with_it(
    amqp_url: str, namespace: str
) -> None:
    settings = FAST.replace(amqp_url=amqp_url, namespace=namespace)
    harness = Harness(Recorder(), settings=settings, backend=RabbitBackend(settings, amqp_url))
    await harness.start(heartbeats=False)
    topology, runner = Topology(namespace), harness.runner
    control = topology.control_queue(runner.service, runner.instance_id)
    assert await _exclusive_queue(amqp_url, control) == "held by another connection"
    await harness.stop()
    assert await _exclusive_queue(amqp_url, control) == "missing"  # gone with its connection


async def _exclusive_queue(amqp_url: str, name: str) -> str:
    async with await aio_pika.connect(amqp_url) as connection:
        try:
            await (await connection.channel()).declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelLockedResource:
            return "held by another connection"
        except aiormq.exceptions.ChannelNotFoundEntity:
            return "missing"
        return "open to anyone"


@pytest.mark.integration
async def test_a_busy_instance_leaves_new_work_for_an_idle_one(amqp_url: str, namespace: str) -> None:
    """A is busy with a long ``process`` (concurrency 1); B starts; two more starts all go to B."""
    settings = FAST.replace(amqp_url=amqp_url, namespace=namespace, concurrency=1)
    busy, idle = Recorder(process_seconds=4, steps=40), Recorder(process_seconds=0.2)
    harness = Harness(busy, settings=settings, backend=RabbitBackend(settings, amqp_url))
    first = harness.command(Action.START, make_release())
    await harness.send(first)
    await harness.wait_for(lambda: len(harness.reports(first)) > 0, "A processing")

    other = Runner(idle, AmqpTransport(settings), settings)
    await other.start(heartbeats=False)
    try:
        later = [harness.command(Action.START, make_release()) for _ in range(2)]
        for start in later:
            await harness.send(start)
        for start in later:
            assert (await harness.reply_to(start)).outcome is Outcome.STAGED
        assert (busy.calls["process"], idle.calls["process"]) == (1, 2)
    finally:
        await other.stop()
        await harness.stop()


@pytest.mark.integration
async def test_each_reopening_of_the_work_window_consumes_under_a_new_tag(
    amqp_url: str, namespace: str
) -> None:
    """RabbitMQ 3.10 up to 3.10.8 crashes the channel (and closes the connection: INTERNAL_ERROR) when a
    quorum queue's consumer is cancelled and a new one takes the same tag while deliveries of the first are
    in flight (rabbitmq-server issue 5927; seen in a chaos run as a service cut off for 20 s)."""
    settings = FAST.replace(amqp_url=amqp_url, namespace=namespace, concurrency=1)
    transport = AmqpTransport(settings)
    runner = Runner(Recorder(), transport, settings)
    await runner.start(heartbeats=False)
    work = transport._work
    assert work is not None
    try:
        tags = list(work.tags)
        for _ in range(3):
            await work.follow(0, taken_by=work.tags[0])  # a start took the slot: its consumer goes
            assert work.tags == []
            await work.follow(1, taken_by=None)  # the slot is free again
            tags.extend(work.tags)
        assert len(tags) == 4
        assert len(set(tags)) == len(tags)
        assert transport.health().consuming
    finally:
        await runner.stop()


@pytest.mark.integration
async def test_a_cancel_sent_to_the_instance_key_stops_its_processing_first(
    amqp_url: str, namespace: str
) -> None:
    settings = FAST.replace(amqp_url=amqp_url, namespace=namespace)
    handler = SlowToStop()
    harness = Harness(handler, settings=settings, backend=RabbitBackend(settings, amqp_url))
    release = make_release()
    await harness.send(harness.command(Action.START, release))
    await harness.wait_for(handler.running.is_set, "process() running")
    cancel = harness.command(Action.CANCEL, release)
    key = Topology.control_key(handler.service, harness.runner.instance_id)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        commands = await channel.get_exchange(Topology(namespace).commands_exchange)
        message = aio_pika.Message(
            encode(cancel), message_id=cancel.message_id, user_id=broker_user(amqp_url)
        )
        await commands.publish(message, routing_key=key, mandatory=True)  # the shared queue does not take it
    assert (await harness.reply_to(cancel)).outcome is Outcome.CANCELED
    assert handler.journal == ["process stopped", "cancel"]
    await harness.stop()


@pytest.mark.integration
async def test_starts_arriving_together_leave_the_next_one_for_an_idle_instance(
    amqp_url: str, namespace: str
) -> None:
    """Three starts wait in the queue when A (concurrency 2) starts consuming: A takes two, and the third
    stays in the queue (never held by busy A) until B, idle, takes it."""
    settings = FAST.replace(amqp_url=amqp_url, namespace=namespace, concurrency=2)
    busy, idle = Recorder(process_seconds=4, steps=40), Recorder(process_seconds=0.2)
    harness = Harness(busy, settings=settings, backend=RabbitBackend(settings, amqp_url))
    starts = [harness.command(Action.START, make_release()) for _ in range(3)]
    await _queue_before_any_instance(amqp_url, namespace, starts)
    await harness.start(heartbeats=False)  # A consumes: the three are there at once
    await harness.wait_for(lambda: sum(bool(harness.reports(s)) for s in starts) == 2, "A processing two")
    other = Runner(idle, AmqpTransport(settings.replace(concurrency=1)), settings)
    await other.start(heartbeats=False)
    try:
        (third,) = [s for s in starts if not harness.reports(s)]
        assert (await harness.reply_to(third)).outcome is Outcome.STAGED
        assert (busy.calls["process"], idle.calls["process"]) == (2, 1)
    finally:
        await other.stop()
        await harness.stop()


async def _queue_before_any_instance(amqp_url: str, namespace: str, commands: list[Command]) -> None:
    """The service's queue and its binding, as rc-admin-setup makes them, with ``commands`` waiting in it."""
    topology = Topology(namespace)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        commands_exchange = await channel.declare_exchange(
            topology.commands_exchange,
            aio_pika.ExchangeType(topology.exchanges()[topology.commands_exchange]),
            durable=True,
        )
        service = commands[0].service
        queue = await channel.declare_queue(
            topology.task_queue(service), durable=True, arguments=topology.task_queue_arguments()
        )
        await queue.bind(commands_exchange, routing_key=Topology.task_binding(service))
        for command in commands:
            message = aio_pika.Message(
                encode(command), message_id=command.message_id, user_id=broker_user(amqp_url)
            )
            key = Topology.command_key(service, command.action)
            await commands_exchange.publish(message, routing_key=key, mandatory=True)
