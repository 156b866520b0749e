"""A task service written on a bare :class:`tests.coordinator.peers.Peer` (RabbitMQ or in memory), so
tests can make it misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from schemas.enums import SUCCESS_BY_ACTION, Action, Outcome, ReplyKind
from schemas.messages import Command, Envelope, Heartbeat, Progress, TaskReply, decode, encode
from schemas.topology import Topology
from tests.coordinator.peers import Peer, Received


class SimulatedService:
    """Answers every command per ``behaviour`` (``None`` = stays silent); heartbeats if asked."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Peer]],
        namespace: str,
        name: str,
        *,
        behaviour: Mapping[Action, Outcome | None] | None = None,
        reason: str | None = None,
        heartbeat: float | None = 0.2,
        duplicate_replies: bool = False,
        consume: bool = True,
        delay: Mapping[Action, float] | None = None,
        progress_as: str | None = None,
    ) -> None:
        self.connect = connect
        self.topology = Topology(namespace)
        self.name = name
        self.behaviour = {**SUCCESS_BY_ACTION, **(behaviour or {})}
        self.reason = reason
        self.heartbeat_period = heartbeat
        self.duplicate_replies = duplicate_replies
        self.consume = consume
        self.delay = dict(delay or {})
        #: Report progress at each start as this instance (which never heartbeats), if set.
        self.progress_as = progress_as
        self.received: list[Command] = []
        self._peer: Peer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def actions(self, release_id: str) -> list[Action]:
        """The distinct commands received for a release, in order (deduplicated by message id)."""
        seen: set[str] = set()
        result = []
        for command in self.received:
            if command.release_id == release_id and command.message_id not in seen:
                seen.add(command.message_id)
                result.append(command.action)
        return result

    @property
    def peer(self) -> Peer:
        assert self._peer is not None, "not started"
        return self._peer

    async def start(self) -> SimulatedService:
        self._peer = peer = await self.connect()
        for exchange, kind in self.topology.exchanges().items():
            await peer.declare_exchange(exchange, kind)
        queue = await peer.declare_queue(
            self.topology.task_queue(self.name), self.topology.task_queue_arguments()
        )
        await peer.bind(queue, self.topology.commands_exchange, self.topology.task_binding(self.name))
        if self.consume:
            await peer.consume(queue, self._on_command)
        if self.heartbeat_period:
            await self.beat()
            self._tasks.append(asyncio.create_task(self._heartbeat_forever()))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._peer is not None:
            await self._peer.close()

    async def beat(self, healthy: bool = True, detail: str | None = None) -> None:
        beat = Heartbeat(
            detail=detail,
            message_id=uuid.uuid4().hex,
            sent_at=datetime.now(UTC),
            service=self.name,
            instance_id=f"sim-{self.name}",
            sdk_version="sim",
            healthy=healthy,
        )
        await self.send(beat, ReplyKind.HEARTBEAT)

    async def send(self, message: Envelope, kind: ReplyKind, *, user_id: str | None = None) -> None:
        await self.peer.publish(
            self.topology.replies_exchange,
            self.topology.reply_key(self.name, kind),
            encode(message),
            message_id=message.message_id,
            correlation_id=message.release_id,
            kind=message.kind.value,
            user_id=user_id,
        )

    async def report(self, command: Command, percent: float, instance_id: str) -> None:
        progress = Progress(
            message_id=uuid.uuid4().hex,
            sent_at=datetime.now(UTC),
            release_id=command.release_id,
            service=self.name,
            in_reply_to=command.message_id,
            percent=percent,
            instance_id=instance_id,
        )
        await self.send(progress, ReplyKind.PROGRESS)

    async def answer(self, command: Command, outcome: Outcome) -> TaskReply:
        reply = TaskReply(
            message_id=uuid.uuid4().hex,
            sent_at=datetime.now(UTC),
            release_id=command.release_id,
            service=self.name,
            in_reply_to=command.message_id,
            action=command.action,
            outcome=outcome,
            reason=self.reason if outcome not in (Outcome.ACCEPTED, Outcome.STAGED) else None,
            instance_id=f"sim-{self.name}",
            sdk_version="sim",
        )
        await self.send(reply, ReplyKind.REPLY)
        if self.duplicate_replies:
            await self.send(reply, ReplyKind.REPLY)
        return reply

    async def _on_command(self, incoming: Received) -> None:
        command = decode(incoming.body, Command)
        self.received.append(command)
        if self.progress_as and command.action is Action.START:
            await self.report(command, 10, self.progress_as)
        outcome = self.behaviour.get(command.action)
        if outcome is not None:
            await asyncio.sleep(self.delay.get(command.action, 0))  # "the work" takes that long
            await self.answer(command, outcome)

    async def _heartbeat_forever(self) -> None:
        assert self.heartbeat_period is not None
        while True:
            await asyncio.sleep(self.heartbeat_period)
            with contextlib.suppress(Exception):
                await self.beat()
