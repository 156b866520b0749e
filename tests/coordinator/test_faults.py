"""Crashes, a standby replica, and bad input, against the real broker and store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from coordinator.settings import Settings
from coordinator.store import Store
from rc_cli.client import AdminClient
from schemas.documents import Release
from schemas.enums import Action, EventKind, Outcome, ReleaseState, ReplyKind
from schemas.messages import ListServices, PublishRelease, RequireService, TaskReply
from schemas.topology import DEAD_REASON_HEADER, Topology
from tests.coordinator.fixtures import SERVICES, Running, wait_for_state
from tests.coordinator.peers import AmqpPeer
from tests.coordinator.simulated import SimulatedService
from tests.coordinator.test_releases import call, create
from tests.sabotage.plugin import caught_by

StartService = Callable[..., Awaitable[SimulatedService]]
ROOT = Path(__file__).parents[2]


def coordinator_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "RC_AMQP_URL": settings.amqp_url,
        "RC_STORE_URL": settings.store,
        "RC_MONGODB_DATABASE": settings.database,
        "RC_NAMESPACE": settings.namespace,
        "RC_TRUSTED_USERS": "guest",
        "RC_METRICS_PORT": "0",
        "RC_INITIALIZE_TIMEOUT": "10",
        "RC_PROCESS_TIMEOUT": "10",
        "RC_HEARTBEAT_TIMEOUT": "10",
    }


@pytest.fixture
def spawn(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str, log: str = "coordinator.log", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        command = args or ("-m", "coordinator")
        with open(tmp_path / log, "wb") as sink:
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=ROOT,  # where ``-m tests.coordinator...`` is found
                env=coordinator_env(settings) | (env or {}),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def logged(log: Path, text: str, within: float) -> str:
    """The log once it contains ``text`` (polled; the process writes it when it gets there)."""
    deadline = time.monotonic() + within
    while text not in (content := await asyncio.to_thread(log.read_text)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{log.name} never logged {text} in {within}s:\n{content[-2000:]}")
        await asyncio.sleep(0.1)
    return content


async def answers_within(admin: AdminClient, seconds: float) -> float:
    """Seconds until some coordinator answers an admin request."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await admin.request(ListServices(), wait=1)
            return time.monotonic() - started
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError(f"no coordinator answered within {seconds}s")


async def first_release_until_killed(
    doomed: subprocess.Popen[bytes],
    admin: AdminClient,
    services: StartService,
    store: Store,
    delay: dict[Action, float] | None = None,
) -> tuple[str, list[SimulatedService], Release]:
    """With ``doomed`` (a coordinator that kills itself at one point) serving: the services, required, and
    one release created; once ``doomed`` is dead, the release's id, the services and the release as
    stored (still running)."""
    await answers_within(admin, 30)
    sims = [await services(name, delay=delay) for name in SERVICES]
    for name in SERVICES:
        await admin.request(RequireService(service=name))
    release_id = await create(admin)
    assert await asyncio.to_thread(doomed.wait, 30) == -signal.SIGKILL
    stored = await store.get(release_id)
    assert stored is not None
    assert stored.state is ReleaseState.RUNNING
    return release_id, sims, stored


ENGINES = pytest.mark.parametrize("engine", ["sqlite", "mongodb"], indirect=True)


@ENGINES
@caught_by("forget-outbox")
async def test_killed_between_storing_and_publishing_the_release_still_completes(
    settings: Settings,
    spawn: Callable[..., subprocess.Popen[bytes]],
    admin: AdminClient,
    services: StartService,
    store: Store,
    start_coordinator: Callable[[Settings], Awaitable[Running]],
) -> None:
    doomed = spawn("-m", "tests.coordinator.crash_after_store")
    release_id, sims, stored = await first_release_until_killed(doomed, admin, services, store)
    assert [e.message_id for e in stored.outbox if ".start." in e.message_id]  # stored, never sent
    assert all(Action.START not in sim.actions(release_id) for sim in sims)

    await start_coordinator(settings)  # a fresh coordinator replays the outbox
    ended = await wait_for_state(store, release_id, ReleaseState.STAGED, ReleaseState.FAILED)
    assert ended.state is ReleaseState.STAGED, ended.state_reason  # failed: the start commands never went
    await call(admin, PublishRelease(release_id=release_id))
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START, Action.PUBLISH]


@ENGINES
async def test_killed_during_processing_and_again_during_publication_the_release_still_publishes(
    settings: Settings,
    spawn: Callable[..., subprocess.Popen[bytes]],
    admin: AdminClient,
    services: StartService,
    store: Store,
    start_coordinator: Callable[[Settings], Awaitable[Running]],
) -> None:
    """SIGKILL while processing (start commands stored, not sent), a restart on the same store, SIGKILL
    again while publishing (publish commands stored, not sent), a restart: the release is published, and
    every service ran each step once."""
    doomed = spawn("-m", "tests.coordinator.crash_after_store")
    release_id, sims, _ = await first_release_until_killed(doomed, admin, services, store)
    doomed_again = spawn(
        "-m", "tests.coordinator.crash_after_store", log="second.log", env={"RC_TEST_DIE_ON": "publish"}
    )
    await wait_for_state(store, release_id, ReleaseState.STAGED, within=60)
    publishing = asyncio.create_task(admin.request(PublishRelease(release_id=release_id), wait=120))
    assert await asyncio.to_thread(doomed_again.wait, 60) == -signal.SIGKILL
    stored = await store.get(release_id)
    assert stored is not None
    assert stored.state is ReleaseState.PUBLISHING
    assert all(Action.PUBLISH not in sim.actions(release_id) for sim in sims)

    await start_coordinator(settings)  # replays the publish commands, and answers the operator
    await publishing
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED, within=60)
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START, Action.PUBLISH]


@ENGINES
async def test_killed_between_receiving_and_storing_a_reply_loses_nothing(
    settings: Settings,
    spawn: Callable[..., subprocess.Popen[bytes]],
    admin: AdminClient,
    services: StartService,
    store: Store,
    start_coordinator: Callable[[Settings], Awaitable[Running]],
) -> None:
    """A reply is acknowledged only once its effect is stored: one received by a coordinator that dies
    before storing it is delivered again to the next one."""
    doomed = spawn("-m", "tests.coordinator.crash_before_store")
    # Processing takes a while, so the start commands are long confirmed and cleared from the outbox
    # when the replies come: a fresh coordinator has nothing to replay that would make services answer again.
    # The release is still running when it dies: no "staged" reply stored, it died on the first.
    release_id, sims, _ = await first_release_until_killed(
        doomed, admin, services, store, delay={Action.START: 1.5}
    )

    await start_coordinator(settings)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START]  # nothing had to be redone


def active_line(log: str) -> dict[str, object]:
    """The coordinator's ``active`` log line."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "active":
                return event
    raise AssertionError(f"no active line in:\n{log[-2000:]}")


async def test_a_second_coordinator_stands_by_then_takes_over(
    settings: Settings, spawn: Callable[..., subprocess.Popen[bytes]], admin: AdminClient, tmp_path: Path
) -> None:
    """Each replica on one event loop (RC_EVENT_LOOP): its ``active`` line names the one it ran."""
    first = spawn(log="first.log", env={"RC_EVENT_LOOP": "asyncio"})
    await answers_within(admin, 30)
    second = spawn(log="second.log", env={"RC_EVENT_LOOP": "uvloop"})
    second_log = await logged(tmp_path / "second.log", '"standby"', within=60)
    assert '"active"' not in second_log
    assert active_line((tmp_path / "first.log").read_text())["event_loop"] == "asyncio"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    await answers_within(admin, 30)
    second_log = await logged(tmp_path / "second.log", '"active"', within=10)
    assert active_line(second_log)["event_loop"] == "uvloop"
    assert second.poll() is None


async def _dead_letters(
    amqp_url: str, namespace: str, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(namespace).dead_letter_queue)
        found: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = time.monotonic() + 10
        while len(found) < count and time.monotonic() < deadline:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.1)
            else:
                found.append(message)
        return found


@caught_by("accept-spoofed")
async def test_malformed_spoofed_and_unknown_messages_are_dead_lettered_and_service_goes_on(
    patient_coordinator: Running,
    admin: AdminClient,
    services: StartService,
    store: Store,
    amqp_url: str,
    namespace: str,
) -> None:
    portal = await services("portal", behaviour={Action.START: None})
    await admin.request(RequireService(service="portal"))
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.RUNNING)

    forged = _forged_failure(release_id)
    mallory = await _sent_by_another_user(amqp_url, namespace, forged)
    unknown = forged.model_copy(update={"release_id": "RE_00000000", "message_id": uuid.uuid4().hex})
    await portal.send(unknown, ReplyKind.REPLY)
    await _publish_garbage(amqp_url, namespace)

    dead = await _dead_letters(amqp_url, namespace, 3)
    reasons = sorted(str((m.headers or {})[DEAD_REASON_HEADER]) for m in dead)
    assert len(reasons) == 3, reasons
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1].startswith(f"spoofed: broker user '{mallory}' may not answer for 'portal'")
    assert reasons[2] == "unknown release RE_00000000"

    running = await store.get(release_id)
    assert running is not None
    assert running.state is ReleaseState.RUNNING  # the forged failure changed nothing
    events = [
        e async for batch in store.export_events(500) for e in batch if e.kind is EventKind.DEAD_LETTERED
    ]
    assert len(events) == 3
    # and the coordinator keeps serving
    start = next(c for c in portal.received if c.action is Action.START)
    await portal.answer(start, Outcome.STAGED)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    assert portal.actions(release_id) == [Action.INITIALIZE, Action.START]


def _forged_failure(release_id: str) -> TaskReply:
    """A ``failed`` reply to the release's start, in portal's name."""
    return TaskReply(
        message_id=uuid.uuid4().hex,
        sent_at=datetime.now(UTC),
        release_id=release_id,
        service="portal",
        in_reply_to="x",
        action=Action.START,
        outcome=Outcome.FAILED,
        reason="forged",
        instance_id="evil",
        sdk_version="evil",
    )


async def _sent_by_another_user(amqp_url: str, namespace: str, reply: TaskReply) -> str:
    """Send ``reply`` as portal's, logged in as a broker user of its own (deleted after); its name."""
    mallory = f"mallory-{namespace}"
    _rabbitmqctl("add_user", mallory, "secret")
    try:
        _rabbitmqctl("set_permissions", "-p", "/", mallory, ".*", ".*", ".*")
        evil_url = amqp_url.replace("guest:guest", f"{mallory}:secret")
        spoofer = SimulatedService(
            lambda: AmqpPeer.connect(evil_url), namespace, "portal", heartbeat=None, consume=False
        )
        await spoofer.start()
        await spoofer.send(reply, ReplyKind.REPLY)
        await spoofer.stop()
    finally:
        _rabbitmqctl("delete_user", mallory)
    return mallory


async def _publish_garbage(amqp_url: str, namespace: str) -> None:
    """A reply body that is not JSON, on portal's reply routing key."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        replies = await channel.get_exchange(Topology(namespace).replies_exchange)
        garbage = aio_pika.Message(b"{not json", message_id="garbage-1", user_id="guest")
        await replies.publish(garbage, routing_key="reply.portal.reply")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _mutants(release_id: str, count: int, seed: int) -> list[tuple[bytes, str]]:
    """``count`` invalid bodies with the routing key to send them on (seeded, so failures replay)."""
    rng = random.Random(seed)
    valid = json.loads(
        TaskReply(
            message_id="m",
            sent_at=datetime.now(UTC),
            release_id=release_id,
            service="portal",
            in_reply_to="c",
            action=Action.START,
            outcome=Outcome.STAGED,
            instance_id="i",
            sdk_version="1",
        ).model_dump_json()
    )
    out: list[tuple[bytes, str]] = []
    for n in range(count):
        body = dict(valid, message_id=f"fuzz-{n}")
        key = "reply.portal.reply"
        match n % 6:
            case 0:
                raw = rng.randbytes(rng.randint(0, 300))
            case 1:
                raw = json.dumps(body).encode()[: rng.randint(0, 120)]
            case 2:
                body[f"extra_{n}"] = rng.random()
                raw = json.dumps(body).encode()
            case 3:
                body[rng.choice(["percent", "outcome", "action", "sent_at", "release_id"])] = rng.choice(
                    [7, [], {}]
                )
                raw = json.dumps(body).encode()
            case 4:
                raw = json.dumps({**body, "reason": "x" * 300_000}).encode()
            case _:
                raw = json.dumps(body).encode()
                key = "reply.search-index.reply"
        out.append((raw, key))
    return out


async def test_hundreds_of_mutated_messages_are_all_dead_lettered_and_change_nothing(
    patient_coordinator: Running,
    admin: AdminClient,
    services: StartService,
    store: Store,
    amqp_url: str,
    namespace: str,
) -> None:
    portal = await services("portal", behaviour={Action.START: None})
    await admin.request(RequireService(service="portal"))
    release_id = await create(admin)
    before = await wait_for_state(store, release_id, ReleaseState.RUNNING)
    mutants = _mutants(release_id, 240, seed=20261123)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.get_exchange(Topology(namespace).replies_exchange)
        for n, (raw, key) in enumerate(mutants):
            await replies.publish(
                aio_pika.Message(raw, message_id=f"fuzz-{n}", user_id="guest"), routing_key=key
            )
    dead = await _dead_letters(amqp_url, namespace, len(mutants))
    assert len(dead) == len(mutants)
    assert all((m.headers or {}).get(DEAD_REASON_HEADER) for m in dead)
    after = await store.get(release_id)
    assert after is not None
    assert after.revision == before.revision  # nothing invalid changed the release
    start = next(c for c in portal.received if c.action is Action.START)
    await portal.answer(start, Outcome.STAGED)
    await wait_for_state(store, release_id, ReleaseState.STAGED)  # and the coordinator still serves
