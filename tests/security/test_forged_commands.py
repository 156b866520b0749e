"""Issue 21, item 8: a task service acts only on commands its coordinator's broker user sent. A command
from any other user (here the break-glass administrator, who may publish anything, as ``guest`` may in
development) is dead-lettered unheard: the handler never runs and the outcome store remembers nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest
from structlog.testing import capture_logs

from schemas.enums import Action, Outcome
from schemas.messages import Command, TaskReply, decode, encode
from task_sdk import Runner, Settings, SqliteOutcomeStore
from task_sdk._amqp import AmqpTransport
from task_sdk.testing import make_command, make_release
from tests.sabotage.plugin import caught_by
from tests.security.conftest import Installed, recorder, take

pytestmark = pytest.mark.integration


class Service:
    """The installation's first service on its own broker user, with a durable outcome store."""

    def __init__(self, installed: Installed, settings: Settings, state_dir: Path) -> None:
        self.handler = recorder(installed.service)
        self.store = SqliteOutcomeStore.in_directory(state_dir, installed.service)
        self.runner = Runner(self.handler, AmqpTransport(settings), settings, self.store)


@pytest.fixture
async def start_service(installed: Installed, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Service] = []

    async def start(**changes: Any) -> Service:
        service = Service(installed, installed.settings(installed.service, **changes), tmp_path)
        await service.runner.start(heartbeats=False)
        started.append(service)
        return service

    yield start
    for service in started:
        await service.runner.stop()
    async with installed.connect(installed.coordinator) as connection:  # nothing left for the next test
        channel = await connection.channel()
        for name in (installed.topology.replies_queue, installed.topology.dead_letter_queue):
            await (await channel.get_queue(name, ensure=False)).purge()


async def _send(installed: Installed, sender: str, command: Command) -> None:
    message = aio_pika.Message(
        encode(command), message_id=command.message_id, content_type="application/json", user_id=sender
    )
    key = installed.topology.command_key(command.service, command.action)
    await installed.publish(sender, installed.topology.commands_exchange, key, message)


@caught_by("accept-forged-commands")
async def test_a_command_from_another_broker_user_never_reaches_the_handler(
    installed: Installed, start_service: Any
) -> None:
    t = installed.topology
    with capture_logs() as logs:
        service: Service = await start_service()
        forged_release = make_release(final_version="9.0.0")
        forged = [
            make_command(installed.service, action, forged_release)
            for action in (Action.START, Action.PUBLISH)
        ]
        for command in forged:
            await _send(installed, installed.admin, command)
        genuine = make_command(installed.service, Action.INITIALIZE, make_release())
        await _send(installed, installed.coordinator, genuine)
        async with installed.connect(installed.coordinator) as connection:
            [answer] = await take(connection, t.replies_queue, 1)
            # Checked before waiting for the dead letters: a service acting on them fails here at once.
            assert dict(service.handler.calls) == {"initialize": 1}
            dead = await take(connection, t.dead_letter_queue, len(forged))
    reply = decode(answer.body, TaskReply)
    assert (reply.in_reply_to, reply.outcome) == (genuine.message_id, Outcome.ACCEPTED)
    assert dict(service.handler.calls) == {"initialize": 1}
    for action in (Action.START, Action.PUBLISH):
        assert service.store.outcome(forged_release.id, action) is None
    assert service.store.taken() == []
    # Dead-lettered by the queue itself (the service may not publish to the dead-letter exchange).
    assert {message.message_id for message in dead} == {command.message_id for command in forged}
    for message in dead:
        assert message.user_id == installed.admin
        [death] = cast(list[dict[str, Any]], message.headers["x-death"])
        assert (death["reason"], death["queue"]) == ("rejected", t.task_queue(installed.service))
    refusals = [entry for entry in logs if entry["event"] == "command.refused"]
    assert {entry["message_id"] for entry in refusals} == {command.message_id for command in forged}
    assert all(f"signed by broker user {installed.admin!r}" in entry["reason"] for entry in refusals)


async def test_in_development_a_trusted_users_command_is_acted_on(
    installed: Installed, start_service: Any
) -> None:
    """Control: with the administrator among the trusted users (``RC_TRUSTED_USERS``), a command runs."""
    service: Service = await start_service(trusted_users=frozenset({installed.admin}))
    command = make_command(installed.service, Action.INITIALIZE, make_release())
    await _send(installed, installed.admin, command)
    async with installed.connect(installed.coordinator) as connection:
        [answer] = await take(connection, installed.topology.replies_queue, 1)
    assert decode(answer.body, TaskReply).in_reply_to == command.message_id
    assert dict(service.handler.calls) == {"initialize": 1}
