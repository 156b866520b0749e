"""The users made by ``deploy.setup`` can do their job on a real RabbitMQ, and nothing more.

Each module-level fixture applies the generated definitions to a fresh, uniquely named vhost (users are global
to the broker, so their names are unique too) and deletes the vhost and the users afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec

import aio_pika
import aiormq.exceptions
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from deploy.apply import apply_http, apply_rabbitmqctl, delete_installation, grant
from deploy.definitions import Installation, build_definitions, regex_escape
from schemas.enums import Action, ReplyKind
from schemas.topology import Topology

MANAGEMENT_PORT = 15672
TIMEOUT = 10.0
P = ParamSpec("P")


@dataclass(frozen=True)
class Broker:
    """How the tests reach the broker: the admin AMQP URL and a way to import/delete definitions."""

    amqp_url: str
    management_url: str | None
    admin_user: str
    admin_password: str

    def apply(self, definitions: dict[str, Any]) -> None:
        if self.management_url:
            apply_http(definitions, self.management_url, self.admin_user, self.admin_password)
        else:
            apply_rabbitmqctl(definitions)

    def delete(self, installation: Installation) -> None:
        delete_installation(
            installation,
            management_url=self.management_url,
            user=self.admin_user,
            password=self.admin_password,
        )

    def url_for(self, user: str, password: str, vhost: str) -> str:
        parts = urllib.parse.urlsplit(self.amqp_url)
        netloc = (
            f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{parts.hostname}"
        )
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit(
            (parts.scheme, netloc, "/" + urllib.parse.quote(vhost, safe=""), "", "")
        )


def _management_reachable(url: str, user: str, password: str) -> bool:
    request = urllib.request.Request(f"{url}/api/overview")
    request.add_unredirected_header(
        "Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


@pytest.fixture(scope="session")
def broker(amqp_url: str) -> Broker:
    parts = urllib.parse.urlsplit(amqp_url)
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    management = (
        os.environ.get("RC_MANAGEMENT_URL") or f"http://{parts.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}"
    )
    if _management_reachable(management, user, password):
        return Broker(amqp_url, management, user, password)
    local = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if local and shutil.which("rabbitmqctl"):
        return Broker(amqp_url, None, user, password)
    pytest.fail(
        f"cannot import definitions: no management API at {management} and no local rabbitmqctl "
        "(enable it with `rabbitmq-plugins enable rabbitmq_management` or set RC_MANAGEMENT_URL)",
        pytrace=False,
    )


@dataclass(frozen=True)
class Deployed:
    broker: Broker
    installation: Installation
    passwords: dict[str, str]
    service: str
    other: str

    @property
    def topology(self) -> Topology:
        return self.installation.topology

    @property
    def coordinator(self) -> str:
        return self.installation.coordinator_user

    @property
    def operator(self) -> str:
        return self.installation.operator_user

    @asynccontextmanager
    async def connect(self, user: str) -> AsyncIterator[AbstractConnection]:
        url = self.broker.url_for(user, self.passwords[user], self.installation.vhost)
        connection = await aio_pika.connect(url, timeout=TIMEOUT)
        try:
            yield connection
        finally:
            await connection.close()


def _make_installation() -> tuple[Installation, dict[str, str], str, str]:
    tag = uuid.uuid4().hex[:8]
    service, other = f"portal-{tag}", f"search-index-{tag}"
    installation = Installation(
        services=(service, other),
        namespace=f"rctest-{tag}",
        vhost=f"rctest-{tag}",
        coordinator_user=f"rc-coordinator-{tag}",
        operator_user=f"rc-operator-{tag}",
        listeners=(f"listener-{tag}",),
    )
    passwords = {user: secrets.token_urlsafe(16) for user in installation.users()}
    return installation, passwords, service, other


async def declare_topology(channel: AbstractChannel, topology: Topology, services: tuple[str, ...]) -> None:
    """What the coordinator declares: every exchange, its queues and every service's queue and binding."""
    exchanges = {}
    for name, kind in topology.exchanges().items():
        exchanges[name] = await channel.declare_exchange(name, aio_pika.ExchangeType(kind), durable=True)
    # The coordinator's own table (coordinator/broker.py declares from it too).
    for name, (arguments, exchange, key) in topology.coordinator_queues().items():
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(exchanges[exchange], key)
    for service in services:
        queue = await channel.declare_queue(
            topology.task_queue(service), durable=True, arguments=topology.task_queue_arguments()
        )
        await queue.bind(exchanges[topology.commands_exchange], topology.task_binding(service))


@pytest.fixture(scope="module")
async def deployed(broker: Broker) -> AsyncIterator[Deployed]:
    """Users and permissions only (no topology in the definitions): the coordinator user declares it all."""
    installation, passwords, service, other = _make_installation()
    await asyncio.to_thread(broker.apply, build_definitions(installation, passwords, topology=False))
    try:
        setup = Deployed(broker, installation, passwords, service, other)
        async with setup.connect(setup.coordinator) as connection:
            channel = await connection.channel()
            await declare_topology(channel, setup.topology, installation.services)
        yield setup
    finally:
        await asyncio.to_thread(broker.delete, installation)


def _message(user_id: str | None = None, body: bytes = b"{}", **kwargs: Any) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=uuid.uuid4().hex,
        user_id=user_id,
        **kwargs,
    )


async def _publish(
    connection: AbstractConnection,
    exchange: str,
    routing_key: str,
    message: aio_pika.Message,
    *,
    mandatory: bool = True,
) -> None:
    """Publish with confirms and mandatory, as the contract says; raise what the broker answers."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    target = await channel.get_exchange(exchange, ensure=False) if exchange else channel.default_exchange
    await asyncio.wait_for(target.publish(message, routing_key, mandatory=mandatory), TIMEOUT)
    await channel.close()


async def _refused(
    connection: AbstractConnection,
    action: Callable[Concatenate[AbstractChannel, P], Awaitable[object]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> str:
    """Run ``action(channel, ...)`` on a fresh channel; return the broker's refusal (fail if it succeeds)."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        await asyncio.wait_for(action(channel, *args, **kwargs), TIMEOUT)
    except (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelPreconditionFailed) as error:
        return type(error).__name__
    pytest.fail(f"the broker allowed {action.__name__}{args}")


async def _get(channel: AbstractChannel, queue_name: str, count: int = 1) -> list[AbstractIncomingMessage]:
    """Consume ``count`` messages (``basic.get`` is refused by single-active-consumer quorum queues)."""
    queue = await channel.get_queue(queue_name, ensure=False)
    received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await received.put(message)

    tag = await queue.consume(on_message, no_ack=True)
    try:
        return [await asyncio.wait_for(received.get(), TIMEOUT) for _ in range(count)]
    except TimeoutError:
        raise AssertionError(f"only {received.qsize()} of {count} messages arrived on {queue_name}") from None
    finally:
        await queue.cancel(tag)


async def _get_one(channel: AbstractChannel, queue_name: str) -> AbstractIncomingMessage:
    return (await _get(channel, queue_name))[0]


async def _ignore(message: AbstractIncomingMessage) -> None:
    return None


ACCESS_REFUSED = "ChannelAccessRefused"
PRECONDITION_FAILED = "ChannelPreconditionFailed"


# ------------------------------------------------------------------------------------------- task service


async def test_service_does_its_job(deployed: Deployed) -> None:
    """Passive checks of the exchanges and of its own queue, consuming it, replying as itself."""
    t, me = deployed.topology, deployed.service
    async with deployed.connect(me) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.get_exchange(t.commands_exchange, ensure=True)  # passive declare: no permission needed
        replies = await channel.get_exchange(t.replies_exchange, ensure=True)
        await channel.declare_queue(t.task_queue(me), passive=True)  # made for it, checked by the SDK
        async with deployed.connect(deployed.coordinator) as coordinator:
            await _publish(coordinator, t.commands_exchange, t.command_key(me, Action.INITIALIZE), _message())
        got = await _get_one(channel, t.task_queue(me))
        assert got.routing_key == t.command_key(me, Action.INITIALIZE)
        for kind in ReplyKind:
            await replies.publish(_message(user_id=me), t.reply_key(me, kind), mandatory=True)
    async with deployed.connect(deployed.coordinator) as coordinator:
        channel = await coordinator.channel()
        replies_got = await _get(channel, t.replies_queue, len(ReplyKind))
        assert {reply.user_id for reply in replies_got} == {me}
        assert {reply.routing_key for reply in replies_got} == {t.reply_key(me, kind) for kind in ReplyKind}


async def test_service_instance_has_its_own_control_queue_and_no_other(deployed: Deployed) -> None:
    """Issue 19: an instance declares its exclusive control queue, binds it to its own cancel key and
    consumes it; it may not declare another service's, nor bind its own to another service's commands."""
    t, me, other = deployed.topology, deployed.service, deployed.other
    async with deployed.connect(me) as connection:
        channel = await connection.channel()
        name = t.control_queue(me, "host:42:abc")
        queue = await channel.declare_queue(name, exclusive=True, arguments=t.control_queue_arguments())
        await queue.bind(t.commands_exchange, t.control_key(me, "host:42:abc"))
        async with deployed.connect(deployed.coordinator) as coordinator:
            await _publish(coordinator, t.commands_exchange, t.control_key(me, "host:42:abc"), _message())
        got = await _get_one(channel, name)
        assert got.routing_key == t.control_key(me, "host:42:abc")
        # After a reconnection, while the broker still holds the lost connection's queue: a new name.
        renamed = await channel.declare_queue(
            f"{name}.1", exclusive=True, arguments=t.control_queue_arguments()
        )
        await renamed.bind(t.commands_exchange, t.control_key(me, "host:42:abc"))
        refusal = await _refused(connection, _bind, name, t.commands_exchange, t.control_key(other, "x"))
        assert refusal == ACCESS_REFUSED

        async def declare_others(channel: AbstractChannel) -> None:
            await channel.declare_queue(t.control_queue(other, "host:42:abc"), exclusive=True)

        assert await _refused(connection, declare_others) == ACCESS_REFUSED
        assert await _refused(connection, _declare_queue, f"{t.namespace}.control.x", True) == ACCESS_REFUSED


async def test_service_cannot_publish_commands(deployed: Deployed) -> None:
    t, me = deployed.topology, deployed.service
    async with deployed.connect(me) as connection:
        for target in (deployed.service, deployed.other):
            message = _message(user_id=me)
            key = t.command_key(target, Action.PUBLISH)
            refusal = await _refused(connection, _publish_on, t.commands_exchange, key, message)
            assert refusal == ACCESS_REFUSED
        for exchange, key in ((t.events_exchange, t.event_key("published")), (t.admin_exchange, "admin")):
            refusal = await _refused(connection, _publish_on, exchange, key, _message(user_id=me))
            assert refusal == ACCESS_REFUSED


async def _bind(channel: AbstractChannel, queue: str, exchange: str, routing_key: str) -> None:
    """A raw ``queue.bind`` (no passive declares first)."""
    await (await channel.get_underlay_channel()).queue_bind(queue, exchange, routing_key=routing_key)


async def _consume(channel: AbstractChannel, name: str) -> None:
    queue = await channel.get_queue(name, ensure=False)
    await queue.consume(_ignore)


async def _delete_queue(channel: AbstractChannel, name: str) -> None:
    await channel.queue_delete(name)


async def _declare_queue(channel: AbstractChannel, name: str = "", exclusive: bool = False) -> None:
    await channel.declare_queue(name or None, exclusive=exclusive)


async def _declare_exchange(channel: AbstractChannel, name: str, kind: str) -> None:
    await channel.declare_exchange(name, aio_pika.ExchangeType(kind), durable=True)


async def _basic_get(channel: AbstractChannel, queue: str) -> None:
    await (await channel.get_underlay_channel()).basic_get(queue, no_ack=True)


async def _publish_on(
    channel: AbstractChannel, exchange: str, routing_key: str, message: aio_pika.Message
) -> None:
    target = await channel.get_exchange(exchange, ensure=False) if exchange else channel.default_exchange
    await target.publish(message, routing_key, mandatory=True)


async def test_service_cannot_impersonate_another(deployed: Deployed) -> None:
    t, me, other = deployed.topology, deployed.service, deployed.other
    async with deployed.connect(me) as connection:
        # Topic permission on rc.replies: only reply.<me>.* routing keys.
        for kind in ReplyKind:
            key = t.reply_key(other, kind)
            refusal = await _refused(connection, _publish_on, t.replies_exchange, key, _message(user_id=me))
            assert refusal == ACCESS_REFUSED
        # user_id must be the connection's own user: RabbitMQ refuses anything else.
        own_key = t.reply_key(me, ReplyKind.REPLY)
        refusal = await _refused(
            connection, _publish_on, t.replies_exchange, own_key, _message(user_id=other)
        )
        assert refusal == PRECONDITION_FAILED


async def test_service_cannot_touch_other_queues(deployed: Deployed) -> None:
    t, me, other = deployed.topology, deployed.service, deployed.other

    async with deployed.connect(me) as connection:
        for name in (t.task_queue(other), t.replies_queue, t.admin_queue, t.dead_letter_queue):
            assert await _refused(connection, _consume, name) == ACCESS_REFUSED
            assert await _refused(connection, _delete_queue, name) == ACCESS_REFUSED
        # Its own queue bound to someone else's commands: refused by the topic permission on rc.commands.
        for key in (t.task_binding(other), "#", "task.*.*"):
            refusal = await _refused(connection, _bind, t.task_queue(me), t.commands_exchange, key)
            assert refusal == ACCESS_REFUSED
        # Its own queue bound to replies or events: no read on those exchanges.
        for exchange in (t.replies_exchange, t.events_exchange):
            assert await _refused(connection, _bind, t.task_queue(me), exchange, "#") == ACCESS_REFUSED
        # Any other queue, even a server-named one.
        assert await _refused(connection, _declare_queue, exclusive=True) == ACCESS_REFUSED
        assert await _refused(connection, _declare_queue, f"{t.namespace}.task.x") == ACCESS_REFUSED


async def test_service_cannot_declare_exchanges(deployed: Deployed) -> None:
    """Re-declaring an existing exchange (non-passively) needs configure on it: task services must not."""
    t = deployed.topology
    async with deployed.connect(deployed.service) as connection:
        for name, kind in t.exchanges().items():
            assert await _refused(connection, _declare_exchange, name, kind) == ACCESS_REFUSED


# ------------------------------------------------------------------------------------------- operator


async def test_operator_request_reply_and_watch(deployed: Deployed) -> None:
    """The CLI publishes to rc.admin with an exclusive server-named reply queue; the coordinator answers
    through the default exchange; ``rc release watch`` binds a server-named queue to rc.events."""
    t = deployed.topology
    async with deployed.connect(deployed.operator) as operator:
        channel = await operator.channel(publisher_confirms=True, on_return_raises=True)
        reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        assert reply_queue.name.startswith("amq.gen-")
        named = await channel.declare_queue(f"{t.namespace}.cli.{uuid.uuid4().hex}", exclusive=True)
        watch = await channel.declare_queue(exclusive=True)
        events = await channel.get_exchange(t.events_exchange, ensure=True)
        await watch.bind(events, "release.#")
        admin = await channel.get_exchange(t.admin_exchange, ensure=False)
        request = _message(user_id=deployed.operator, reply_to=reply_queue.name, correlation_id="c1")
        await admin.publish(request, t.admin_routing_key, mandatory=True)

        async with deployed.connect(deployed.coordinator) as coordinator:
            cchannel = await coordinator.channel()
            got = await _get_one(cchannel, t.admin_queue)
            assert got.user_id == deployed.operator
            assert got.reply_to == reply_queue.name
            answer = _message(user_id=deployed.coordinator, correlation_id=got.correlation_id)
            await _publish(coordinator, "", got.reply_to, answer)
            await _publish(coordinator, "", named.name, _message(user_id=deployed.coordinator))
            await _publish(coordinator, t.events_exchange, t.event_key("staged"), _message())

        answered = await _get_one(channel, reply_queue.name)
        assert answered.correlation_id == "c1"
        assert answered.user_id == deployed.coordinator
        await _get_one(channel, named.name)
        announced = await _get_one(channel, watch.name)
        assert announced.routing_key == t.event_key("staged")


async def test_operator_cannot_act_as_service_or_coordinator(deployed: Deployed) -> None:
    t, op = deployed.topology, deployed.operator
    async with deployed.connect(op) as connection:
        reply_key = t.reply_key(deployed.service, ReplyKind.REPLY)
        command_key = t.command_key(deployed.service, Action.PUBLISH)
        for exchange, key in (
            (t.replies_exchange, reply_key),
            (t.commands_exchange, command_key),
            (t.events_exchange, t.event_key("published")),
            (t.dead_letter_exchange, ""),
        ):
            assert (
                await _refused(connection, _publish_on, exchange, key, _message(user_id=op)) == ACCESS_REFUSED
            )
        for name in (t.admin_queue, t.replies_queue, t.task_queue(deployed.service)):
            assert await _refused(connection, _basic_get, name) == ACCESS_REFUSED
        # Its reply queues may not be bound to the commands or replies exchanges.
        for exchange in (t.commands_exchange, t.replies_exchange):

            async def bind(channel: AbstractChannel, source: str = exchange) -> None:
                queue = await channel.declare_queue(exclusive=True)
                await queue.bind(source, "#")

            assert await _refused(connection, bind) == ACCESS_REFUSED
        for name, kind in t.exchanges().items():
            assert await _refused(connection, _declare_exchange, name, kind) == ACCESS_REFUSED


async def test_listener_only_watches(deployed: Deployed) -> None:
    t = deployed.topology
    (listener,) = deployed.installation.listeners
    async with deployed.connect(listener) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(t.events_exchange, "release.*")
        await channel.declare_queue(f"{t.namespace}.listen.{listener}.announcements", exclusive=True)
        for exchange, key in ((t.admin_exchange, t.admin_routing_key), (t.events_exchange, "release.x")):
            assert await _refused(connection, _publish_on, exchange, key, _message()) == ACCESS_REFUSED


# ------------------------------------------------------------------------------------------- coordinator


async def test_coordinator_can_do_everything_it_needs(deployed: Deployed) -> None:
    """Re-declare the whole topology (identical arguments), publish commands/events/dead letters, consume."""
    t = deployed.topology
    async with deployed.connect(deployed.coordinator) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(channel, t, deployed.installation.services)
        for service in deployed.installation.services:
            await _publish(connection, t.commands_exchange, t.command_key(service, Action.CANCEL), _message())
            got = await _get_one(channel, t.task_queue(service))
            assert got.routing_key == t.command_key(service, Action.CANCEL)
        await _publish(connection, t.dead_letter_exchange, "", _message(headers={"x-rc-dead-reason": "test"}))
        await _get_one(channel, t.dead_letter_queue)
        # No listener bound: a mandatory announcement would come back NO_ROUTE, so they are not mandatory.
        await _publish(connection, t.events_exchange, t.event_key("published"), _message(), mandatory=False)
        replies = await channel.get_queue(t.replies_queue, ensure=True)
        tag = await replies.consume(_ignore)
        await replies.cancel(tag)


@asynccontextmanager
async def _installed(
    broker: Broker, definitions: Callable[[Installation, dict[str, str]], dict[str, Any]]
) -> AsyncIterator[Deployed]:
    installation, passwords, service, other = _make_installation()
    await asyncio.to_thread(broker.apply, definitions(installation, passwords))
    try:
        yield Deployed(broker, installation, passwords, service, other)
    finally:
        await asyncio.to_thread(broker.delete, installation)


async def _declare_exchanges(setup: Deployed) -> None:
    async with setup.connect(setup.coordinator) as connection:
        channel = await connection.channel()
        for name, kind in setup.topology.exchanges().items():
            await channel.declare_exchange(name, aio_pika.ExchangeType(kind), durable=True)


async def _declare_task_queue(channel: AbstractChannel, topology: Topology, service: str) -> None:
    arguments = topology.task_queue_arguments()
    await channel.declare_queue(topology.task_queue(service), durable=True, arguments=arguments)


async def test_service_cannot_create_delete_or_bind_its_own_queue(broker: Broker) -> None:
    """No configure right on its queue (rc-admin-setup creates it), no write on it (no binding to it)."""

    def users_only(installation: Installation, passwords: dict[str, str]) -> dict[str, Any]:
        return build_definitions(installation, passwords, topology=False)

    async with _installed(broker, users_only) as setup:
        await _declare_exchanges(setup)
        t, me = setup.topology, setup.service
        async with setup.connect(me) as connection:
            assert await _refused(connection, _declare_task_queue, t, me) == ACCESS_REFUSED
        async with setup.connect(setup.coordinator) as connection:
            await _declare_task_queue(await connection.channel(), t, me)
        async with setup.connect(me) as connection:
            assert await _refused(connection, _declare_task_queue, t, me) == ACCESS_REFUSED
            assert await _refused(connection, _delete_queue, t.task_queue(me)) == ACCESS_REFUSED
            own_binding = (t.task_queue(me), t.commands_exchange, t.task_binding(me))
            assert await _refused(connection, _bind, *own_binding) == ACCESS_REFUSED
            assert await _refused(connection, _delete_queue, t.task_queue(setup.other)) == ACCESS_REFUSED


async def test_grant_also_makes_the_services_queues_and_bindings(broker: Broker) -> None:
    """``grant`` (users and permissions, the quick way) also makes the topology: a service may not make its
    queue, so it finds it, bound to its commands."""

    def vhost_only(installation: Installation, passwords: dict[str, str]) -> dict[str, Any]:
        return {"vhosts": [{"name": installation.vhost}]}

    async with _installed(broker, vhost_only) as setup:
        password = broker.admin_password
        await asyncio.to_thread(
            grant,
            setup.installation,
            setup.passwords,
            management_url=broker.management_url,
            user=broker.admin_user,
            password=password,
        )
        t, me = setup.topology, setup.service
        async with setup.connect(me) as connection:
            channel = await connection.channel()
            await channel.declare_queue(t.task_queue(me), passive=True)
            async with setup.connect(setup.coordinator) as coordinator:
                await _publish(coordinator, t.commands_exchange, t.command_key(me, Action.START), _message())
            await _get_one(channel, t.task_queue(me))


async def test_topic_permissions_are_what_stop_impersonation(broker: Broker) -> None:
    """Control: without the topic permissions, the same service could reply and bind as another service
    (binding given the write on its queue that services had before: what the topic permission on
    ``<ns>.commands`` still stops on queues a service may bind)."""

    def without_topic_permissions(installation: Installation, passwords: dict[str, str]) -> dict[str, Any]:
        definitions = build_definitions(installation, passwords) | {"topic_permissions": []}
        for granted in definitions["permissions"]:
            if granted["user"] == installation.services[0]:
                queue = regex_escape(installation.topology.task_queue(installation.services[0]))
                granted["write"] = f"^({queue}|{granted['write'][1:-1]})$"
        return definitions

    async with _installed(broker, without_topic_permissions) as setup:
        t, me, other = setup.topology, setup.service, setup.other
        async with setup.connect(me) as connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await _bind(channel, t.task_queue(me), t.commands_exchange, t.task_binding(other))
            await _publish_on(
                channel, t.replies_exchange, t.reply_key(other, ReplyKind.REPLY), _message(user_id=me)
            )


async def test_full_definitions_match_what_clients_declare(broker: Broker) -> None:
    """With the topology in the definitions, the coordinator's declarations (same arguments) are accepted,
    and a service finds its queue bound to its commands."""
    installation, passwords, service, _ = _make_installation()
    await asyncio.to_thread(broker.apply, build_definitions(installation, passwords, topology=True))
    try:
        setup = Deployed(broker, installation, passwords, service, installation.services[1])
        t = setup.topology
        async with setup.connect(setup.coordinator) as connection:
            await declare_topology(await connection.channel(), t, installation.services)
        async with setup.connect(service) as connection:
            channel = await connection.channel()
            await channel.declare_queue(t.task_queue(service), passive=True)  # made by the definitions
            async with setup.connect(setup.coordinator) as coordinator:
                await _publish(
                    coordinator, t.commands_exchange, t.command_key(service, Action.START), _message()
                )
            await _get_one(channel, t.task_queue(service))
    finally:
        await asyncio.to_thread(broker.delete, installation)


async def test_apply_with_rabbitmqctl(broker: Broker) -> None:
    """The other way to apply: ``rabbitmqctl import_definitions`` on the broker's host (stdin)."""
    if broker.management_url is None:
        pytest.skip("already the way every other test applies definitions")
    if shutil.which("rabbitmqctl") is None or urllib.parse.urlsplit(broker.amqp_url).hostname not in {
        "127.0.0.1",
        "localhost",
        "::1",
    }:
        missing = "no rabbitmqctl for this broker on this host"
        if os.environ.get("CI"):  # CI machines must have every tool a check needs: fail, never skip
            pytest.fail(f"{missing}: install RabbitMQ's CLI tools on the CI machine")
        pytest.skip(missing)
    local = Broker(broker.amqp_url, None, broker.admin_user, broker.admin_password)

    def users_only(installation: Installation, passwords: dict[str, str]) -> dict[str, Any]:
        return build_definitions(installation, passwords, topology=False)

    async with _installed(local, users_only) as setup:
        await _declare_exchanges(setup)
        async with setup.connect(setup.service) as connection:
            channel = await connection.channel()
            await channel.get_exchange(setup.topology.replies_exchange, ensure=True)
