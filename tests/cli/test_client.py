"""The reusable :class:`rc_cli.client.AdminClient`, in-process, against the fake coordinator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from rc_cli.client import AdminClient, InvalidAnswer, NoAnswer, NoCoordinator, Refused, expect_ok
from rc_cli.watch import watch_release
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState, TaskState
from schemas.messages import (
    Announcement,
    CreateRelease,
    ListReleases,
    ListServices,
    PublishRelease,
    ReleasePage,
    ReleaseResult,
    ShowRelease,
)
from schemas.topology import Topology
from tests.cli.fake_coordinator import FakeCoordinator


async def test_many_requests_over_one_connection(
    amqp_url: str, namespace: str, coordinator: FakeCoordinator
) -> None:
    async with AdminClient(amqp_url, namespace, timeout=5, operator="bench") as client:
        created = await asyncio.gather(
            *(client.request(CreateRelease(name=f"r{i}", studies=("SD_1",))) for i in range(20))
        )
        names = set()
        for answer in created:
            result = expect_ok(answer)
            assert isinstance(result, ReleaseResult)
            names.add(result.release.name)
            shown = expect_ok(await client.request(ShowRelease(release_id=result.release.id)))
            assert isinstance(shown, ReleaseResult)
            assert shown.release.name == result.release.name  # each answer went to its own request
        assert names == {f"r{i}" for i in range(20)}
        page = expect_ok(await client.request(ListReleases(limit=500)))
        assert isinstance(page, ReleasePage)
        assert len(page.releases) == 20
    assert {received.request.operator for received in coordinator.received if received.request} == {"bench"}


async def test_a_refusal_is_an_answer(amqp_url: str, namespace: str, coordinator: FakeCoordinator) -> None:
    async with AdminClient(amqp_url, namespace, timeout=5) as client:
        answer = await client.request(PublishRelease(release_id="RE_00000000"))
        assert not answer.ok
        assert answer.error == "unknown release RE_00000000"
        with pytest.raises(Refused, match=r"^refused: unknown release RE_00000000$"):
            expect_ok(answer)


async def test_no_answer_then_the_coordinator_starts(amqp_url: str, namespace: str) -> None:
    """The client survives the broker closing its channel (missing exchange) and works once one runs."""
    async with AdminClient(amqp_url, namespace, timeout=5) as client:
        with pytest.raises(NoCoordinator, match="does not exist"):
            await client.request(ListServices())
        async with FakeCoordinator(amqp_url, namespace, silent=True):
            with pytest.raises(NoAnswer, match=r"^no coordinator answered within 0\.5s on "):
                await client.request(ListServices(), wait=0.5)
        with pytest.raises(NoCoordinator, match="unroutable"):
            await client.request(ListServices())
        async with FakeCoordinator(amqp_url, namespace):
            assert expect_ok(await client.request(ListServices())) is not None


async def test_an_invalid_answer_is_reported(amqp_url: str, namespace: str) -> None:
    topology = Topology(namespace)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(topology.admin_exchange, aio_pika.ExchangeType.DIRECT)
        queue = await channel.declare_queue(topology.admin_queue, exclusive=True)
        await queue.bind(exchange, topology.admin_routing_key)

        async def garbage(message: AbstractIncomingMessage) -> None:
            assert message.reply_to is not None
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"kind": "admin_answer"}', correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

        await queue.consume(garbage, no_ack=True)
        async with AdminClient(amqp_url, namespace, timeout=5) as client:
            with pytest.raises(InvalidAnswer, match=r"^invalid answer from the coordinator on "):
                await client.request(ListServices())


async def test_announcements_reach_subscribers(
    amqp_url: str, namespace: str, coordinator: FakeCoordinator
) -> None:
    received: list[Announcement] = []
    async with AdminClient(amqp_url, namespace, timeout=5) as client:
        await client.subscribe_announcements(received.append)
        result = expect_ok(await client.request(CreateRelease(name="x", studies=("SD_1",))))
        assert isinstance(result, ReleaseResult)
        await coordinator.update(result.release.id, state=ReleaseState.RUNNING)
        for _ in range(50):
            if received:
                break
            await asyncio.sleep(0.1)
    assert [(a.release_id, a.state) for a in received] == [(result.release.id, ReleaseState.RUNNING)]


async def wait_until(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


async def test_watch_release_merges_polls_and_announcements(
    amqp_url: str, namespace: str, coordinator: FakeCoordinator
) -> None:
    seen: list[ReleaseView] = []
    async with AdminClient(amqp_url, namespace, timeout=5) as client:
        result = expect_ok(await client.request(CreateRelease(name="x", studies=("SD_1",))))
        assert isinstance(result, ReleaseResult)
        release_id = result.release.id

        async def drive() -> None:
            # The first view is reported only once the watcher has subscribed to announcements.
            await wait_until(lambda: bool(seen), "the watcher subscribed and reported the first view")
            await coordinator.update(release_id, state=ReleaseState.RUNNING, task_state=TaskState.RUNNING)
            await coordinator.update(release_id, progress=70, message="nearly")
            await wait_until(
                lambda: any(v.tasks["portal"].progress == 70 for v in seen), "a poll reported progress 70"
            )
            await coordinator.update(release_id, state=ReleaseState.PUBLISHED, task_state=TaskState.PUBLISHED)

        async with asyncio.timeout(20), asyncio.TaskGroup() as group:
            group.create_task(drive())
            watching = group.create_task(
                watch_release(client, release_id, lambda v, _note: seen.append(v), poll_interval=0.1)
            )
        final = watching.result()
    assert final.state is ReleaseState.PUBLISHED
    assert seen[0].state is ReleaseState.WAITING
    assert any(v.tasks["portal"].progress == 70 for v in seen)
    updated = [v.updated_at for v in seen]
    assert updated == sorted(updated)  # never goes back to an older view


async def test_watch_unknown_release_raises_refused(
    amqp_url: str, namespace: str, coordinator: FakeCoordinator
) -> None:
    async with AdminClient(amqp_url, namespace, timeout=5) as client:
        with pytest.raises(Refused):
            await watch_release(client, f"RE_{uuid.uuid4().hex[:8].upper()}", lambda v, n: None)
