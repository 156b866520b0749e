"""Issue 21, items 1, 6 and 7, the coordinator's side of operators' requests, on the real RabbitMQ with the
users ``rc-admin-setup`` makes: the fixtures' coordinator (``tests/coordinator/fixtures.py``) logs in as the
installation's coordinator user, with no trusted users, and requests come from its operator user.

- A request the broker delivers again (the same message id) is carried out once (item 1).
- A request that names no broker user (no ``user_id``) is refused, and changes nothing (item 6).
- An answer goes only to a reply queue an operator may own; a request aimed elsewhere is dead-lettered with
  the reason, and nothing is published where it pointed (item 7).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from coordinator.settings import Settings
from coordinator.store import Store
from schemas.enums import EventKind
from schemas.messages import (
    SCHEMA_VERSION,
    AdminAnswer,
    AdminOperation,
    AdminRequest,
    CreateRelease,
    HoldRelease,
    ListReleases,
    ListServices,
    ReleasePage,
    ReleaseResult,
    RequireService,
    decode,
    encode,
)
from schemas.topology import DEAD_REASON_HEADER, SCHEMA_VERSION_HEADER
from tests.coordinator.fixtures import Asks, Running, fast_settings
from tests.security.conftest import TIMEOUT, Installed, take

pytestmark = pytest.mark.integration

NAMES_NO_BROKER_USER = (
    "refused: the request names no broker user (user_id): every change is recorded under one"
)


@pytest.fixture
def namespace(installed: Installed) -> str:
    return installed.installation.namespace


@pytest.fixture
def broker_url(installed: Installed) -> str:
    """Where the fixtures' operators (``admin``, ``connect_peer``) log in: as the operator user."""
    return installed.url(installed.operator)


@pytest.fixture
def settings(installed: Installed, store_url: str) -> Settings:
    """The fixtures' coordinator, as the installation's coordinator user, trusting nobody."""
    url = installed.url(installed.coordinator)
    return fast_settings(url, store_url, installed.installation.namespace, trusted_users=frozenset())


def request_of(operation: AdminOperation, operator: str = "tester") -> AdminRequest:
    return AdminRequest(
        message_id=uuid.uuid4().hex, sent_at=datetime.now(UTC), operator=operator, operation=operation
    )


def message_of(request: AdminRequest, reply_to: str, user_id: str | None) -> aio_pika.Message:
    """A request as ``rc`` sends it, from broker user ``user_id``, or with none (RabbitMQ lets a publisher
    leave it out)."""
    return aio_pika.Message(
        encode(request),
        content_type="application/json",
        type=request.kind.value,
        message_id=request.message_id,
        correlation_id=request.message_id,
        headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
        reply_to=reply_to,
        user_id=user_id,
    )


async def ask(installed: Installed, request: AdminRequest, *, user_id: str | None) -> AdminAnswer:
    """Send this very request as the operator user (``user_id`` as given), on an exclusive reply queue of
    a new connection, as a new ``rc`` would; its answer. Sent twice, it is a redelivery."""
    t = installed.topology
    async with installed.connect(installed.operator) as connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue("", exclusive=True)
        exchange = await channel.get_exchange(t.admin_exchange, ensure=False)
        message = message_of(request, replies.name, user_id)
        await exchange.publish(message, t.admin_routing_key, timeout=TIMEOUT)
        [answer] = await take(connection, replies.name, 1)
    return decode(answer.body, AdminAnswer)


async def test_a_request_without_a_broker_user_is_refused_and_changes_nothing(
    coordinator: Running, admin: Asks, installed: Installed, store: Store
) -> None:
    """With the first service required, a request to require the second and one to create a release,
    both sent with no ``user_id``: each is answered with the refusal, and neither is carried out."""
    assert (await admin.request(RequireService(service=installed.service))).ok
    anonymous = [
        request_of(RequireService(service=installed.other), "alice (release manager)"),
        request_of(CreateRelease(name="anonymous", studies=("SD_AAAAAAAA",)), "alice (release manager)"),
    ]
    for request in anonymous:
        answer = await ask(installed, request, user_id=None)
        assert (answer.in_reply_to, answer.ok, answer.error) == (
            request.message_id,
            False,
            NAMES_NO_BROKER_USER,
        )
        assert await store.request_events(request.message_id) == []
    assert [s.name for s in await store.all_services() if s.required] == [installed.service]
    listed = await admin.request(ListReleases())
    assert isinstance(listed.result, ReleasePage)
    assert listed.result.releases == ()


async def test_a_request_delivered_twice_is_carried_out_once(
    coordinator: Running, admin: Asks, installed: Installed, store: Store
) -> None:
    """One create, delivered twice, makes one release (it once made six); a refused hold, delivered twice,
    is refused twice with the same words and recorded once."""
    assert (await admin.request(RequireService(service=installed.service))).ok
    create = request_of(CreateRelease(name="once", studies=("SD_AAAAAAAA",)))
    first, again = [await ask(installed, create, user_id=installed.operator) for _ in range(2)]
    assert isinstance(first.result, ReleaseResult), first.error
    assert isinstance(again.result, ReleaseResult), again.error  # answered from what the first did
    release = first.result.release
    assert (again.result.release.id, again.result.release.tentative_version) == (
        release.id,
        release.tentative_version,
    )
    listed = await admin.request(ListReleases())
    assert isinstance(listed.result, ReleasePage)
    assert [r.id for r in listed.result.releases] == [release.id]
    [created] = await store.request_events(create.message_id)
    assert (created.kind, created.actor, created.label) == (EventKind.CREATED, installed.operator, "tester")

    hold = request_of(HoldRelease(release_id=release.id))  # refused: the release is not staged
    denied, denied_again = [await ask(installed, hold, user_id=installed.operator) for _ in range(2)]
    assert (denied.ok, denied_again.ok) == (False, False)
    assert denied.error == denied_again.error
    [refused] = await store.request_events(hold.message_id)
    assert refused.kind is EventKind.REFUSED


async def dead_letter_of(
    connection: AbstractConnection, queue: str, message_id: str
) -> AbstractIncomingMessage:
    """The dead letter of message ``message_id`` (others before it, left by earlier tests, are taken too)."""
    channel = await connection.channel()
    dead = await channel.get_queue(queue, ensure=False)
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    async with dead.iterator() as messages:
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(anext(messages), max(remaining, 0))
            except TimeoutError:
                raise AssertionError(f"no dead letter of {message_id} on {queue}") from None
            await message.ack()
            if message.message_id == message_id:
                return message


@pytest.mark.parametrize("aimed_at", ["a service's task queue", "the coordinator's replies queue"])
async def test_an_answer_goes_only_to_a_reply_queue_an_operator_may_own(
    coordinator: Running, installed: Installed, store: Store, aimed_at: str
) -> None:
    """The operator user may publish a request whose ``reply_to`` names any queue; the coordinator, which
    may publish to every queue of the namespace, refuses to answer there."""
    t = installed.topology
    victim = t.task_queue(installed.service) if aimed_at.endswith("task queue") else t.replies_queue
    request = request_of(ListServices(), "mallory")
    message = message_of(request, victim, installed.operator)
    await installed.publish(installed.operator, t.admin_exchange, t.admin_routing_key, message)
    async with installed.connect(installed.admin) as connection:
        dead = await dead_letter_of(connection, t.dead_letter_queue, request.message_id)
        assert str(dead.headers[DEAD_REASON_HEADER]) == (
            f"refused: reply_to {victim!r} is not a reply queue an operator may own"
        )
        if victim != t.replies_queue:  # (the coordinator consumes its own replies queue)
            found = await (await connection.channel()).declare_queue(victim, passive=True)
            assert found.declaration_result.message_count == 0
    [event] = await store.request_events(request.message_id)
    assert (event.kind, event.actor) == (EventKind.DEAD_LETTERED, installed.operator)
