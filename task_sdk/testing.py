"""Test a handler without a broker.

::

    from task_sdk.testing import Harness

    async def test_search_index():
        result = await Harness(SearchIndex()).run_release(studies=["SD_1"])
        assert result.outcomes == ["accepted", "staged", "published"]

:class:`Harness` plays the coordinator: it sends commands to a real :class:`~task_sdk.Runner` over
an in-memory transport and collects what the service answers. Helpers cover the paths worth
testing: a rejection (``initialize``), a failure (``start``), a cancel during ``process``
(:meth:`Harness.cancel_during_process`), a redelivered command (:meth:`Harness.redeliver`) and an
invalid message (:meth:`Harness.send_invalid`). Use ``async with Harness(...)`` to also run
heartbeats and progress keepalives (and to stop the runner at the end).

The harness drives any :class:`Backend`; the SDK's own tests run the same behaviour suite on
:class:`InMemoryBackend` and on a RabbitMQ backend.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from schemas.enums import Action, Outcome
from schemas.messages import Command, Heartbeat, Progress, ReleaseInfo, TaskReply, encode
from schemas.topology import Topology
from task_sdk._handler import TaskHandler, check_handler
from task_sdk._memory import InMemoryTransport
from task_sdk._runner import Runner
from task_sdk._settings import DEFAULT_COORDINATOR_USER, Settings
from task_sdk._store import OutcomeStore
from task_sdk._transport import Outgoing, Transport
from task_sdk._work import STARTED_NOTE

#: How long helpers wait for an answer unless told otherwise.
DEFAULT_WAIT_SECONDS = 10.0

__all__ = [
    "Backend",
    "CancelRun",
    "Harness",
    "InMemoryBackend",
    "ReleaseRun",
    "make_command",
    "make_release",
]


def make_release(studies: tuple[str, ...] | list[str] = ("SD_1",), **fields: Any) -> ReleaseInfo:
    """A :class:`ReleaseInfo` with a fresh id; ``fields`` override the defaults."""
    release_id = "RE_" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))
    values: dict[str, Any] = {
        "id": release_id,
        "name": f"Release {release_id}",
        "studies": tuple(studies),
        "tentative_version": "1.0.0",
    }
    return ReleaseInfo(**(values | fields))


def make_command(service: str, action: Action, release: ReleaseInfo, **fields: Any) -> Command:
    """A command as the coordinator sends it, with a fresh message id; ``fields`` override."""
    values: dict[str, Any] = {
        "message_id": uuid.uuid4().hex,
        "sent_at": datetime.now(UTC),
        "release_id": release.id,
        "service": service,
        "action": action,
        "release": release,
    }
    return Command(**(values | fields))


class Backend(Protocol):
    """The broker and coordinator side of a transport, as the harness drives it."""

    def transport(self) -> Transport:
        """The transport the runner under test uses."""
        ...

    async def open(self, service: str) -> None: ...

    async def send(self, body: bytes, routing_key: str, *, redelivered: bool = False) -> None:
        """Deliver a command body to the service's queue."""
        ...

    async def receive(self, within: float) -> Outgoing | None:
        """The next reply, progress or heartbeat the service sent, or None after ``within`` seconds."""
        ...

    async def dead_lettered(self, within: float) -> bytes | None:
        """The body of the next message the service refused, or None after ``within`` seconds."""
        ...

    async def close(self) -> None: ...


class InMemoryBackend:
    """A :class:`Backend` over :class:`~task_sdk._memory.InMemoryTransport`; commands are signed by broker
    user ``sender`` (the coordinator's by default, as the runner's settings expect)."""

    def __init__(self, sender: str = DEFAULT_COORDINATOR_USER) -> None:
        self.memory = InMemoryTransport()
        self.sender = sender

    def transport(self) -> Transport:
        return self.memory

    async def open(self, service: str) -> None:
        return None

    async def send(self, body: bytes, routing_key: str, *, redelivered: bool = False) -> None:
        await self.memory.deliver(body, redelivered=redelivered, user_id=self.sender)

    async def receive(self, within: float) -> Outgoing | None:
        return await _get_within(self.memory.published, within)

    async def dead_lettered(self, within: float) -> bytes | None:
        return await _get_within(self.memory.dead_letters, within)

    async def close(self) -> None:
        return None


T = TypeVar("T")


async def _get_within(queue: asyncio.Queue[T], seconds: float) -> T | None:
    try:
        async with asyncio.timeout(seconds):
            return await queue.get()
    except TimeoutError:
        return None


@dataclass
class ReleaseRun:
    """What the service answered while a release went through its steps."""

    release: ReleaseInfo
    replies: list[TaskReply]
    progress: list[Progress]

    @property
    def outcomes(self) -> list[Outcome]:
        return [reply.outcome for reply in self.replies]


@dataclass
class CancelRun:
    """A cancel sent while ``process`` ran: the cancel's reply, and any reply the start got."""

    release: ReleaseInfo
    cancel_reply: TaskReply
    start_replies: list[TaskReply]
    progress: list[Progress]


@dataclass
class _Seen:
    replies: list[TaskReply] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)


class Harness:
    """Drives one handler through commands, as the coordinator would, and records the answers."""

    def __init__(
        self,
        handler: TaskHandler,
        *,
        settings: Settings | None = None,
        store: OutcomeStore | None = None,
        backend: Backend | None = None,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self.service = check_handler(handler)
        self.handler = handler
        self.settings = settings or Settings(heartbeat_seconds=0.5, shutdown_timeout=5.0)
        self.backend: Backend = backend or InMemoryBackend(self.settings.coordinator_user)
        self.runner = Runner(handler, self.backend.transport(), self.settings, store)
        self.wait_seconds = wait_seconds
        self.seen = _Seen()
        self._unclaimed: list[TaskReply] = []
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, heartbeats: bool = True) -> None:
        """Open the backend and start the runner (done lazily, without heartbeats, by every helper)."""
        if not self._started:
            self._started = True
            await self.backend.open(self.service)
            await self.runner.start(heartbeats=heartbeats)

    async def stop(self) -> None:
        """Stop the runner gracefully (drains running steps) and close the backend."""
        if self._started:
            self._started = False
            await self.runner.stop()
            await self.backend.close()

    async def __aenter__(self) -> Self:
        await self.start(heartbeats=True)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ commands
    def command(self, action: Action, release: ReleaseInfo, **fields: Any) -> Command:
        return make_command(self.service, action, release, **fields)

    async def send(self, command: Command, *, redelivered: bool = False) -> None:
        await self.start(heartbeats=False)
        routing_key = Topology.command_key(command.service, command.action)
        await self.backend.send(encode(command), routing_key, redelivered=redelivered)

    async def step(self, action: Action, release: ReleaseInfo, within: float | None = None) -> TaskReply:
        """Send one command and return the service's reply to it."""
        command = self.command(action, release)
        await self.send(command)
        return await self.reply_to(command, within)

    async def initialize(self, release: ReleaseInfo) -> TaskReply:
        return await self.step(Action.INITIALIZE, release)

    async def start_processing(self, release: ReleaseInfo, within: float | None = None) -> TaskReply:
        return await self.step(Action.START, release, within)

    async def publish(self, release: ReleaseInfo) -> TaskReply:
        return await self.step(Action.PUBLISH, release)

    async def cancel(self, release: ReleaseInfo) -> TaskReply:
        return await self.step(Action.CANCEL, release)

    async def run_release(
        self, studies: tuple[str, ...] | list[str] = ("SD_1",), within: float | None = None, **fields: Any
    ) -> ReleaseRun:
        """initialize -> start -> publish, stopping at the first step that does not succeed."""
        release = make_release(studies, **fields)
        replies = [await self.initialize(release)]
        if replies[-1].outcome is Outcome.ACCEPTED:
            replies.append(await self.start_processing(release, within))
        if replies[-1].outcome is Outcome.STAGED:
            final = release.model_copy(update={"final_version": "1.0.0"})
            replies.append(await self.publish(final))
        return ReleaseRun(release, replies, self.progress_of(release))

    async def cancel_during_process(
        self, studies: tuple[str, ...] | list[str] = ("SD_1",), *, after_reports: int = 1, grace: float = 0.3
    ) -> CancelRun:
        """Start processing, send a cancel once ``process`` reported ``after_reports`` times, and
        collect the cancel's reply and (after ``grace`` seconds) any reply the start got."""
        release = make_release(studies)
        start = self.command(Action.START, release)
        await self.send(start)
        await self.wait_for(lambda: len(self.reports(start)) >= after_reports, "progress from process()")
        cancel_reply = await self.cancel(release)
        await self.drain(grace)
        start_replies = [reply for reply in self.seen.replies if reply.in_reply_to == start.message_id]
        return CancelRun(release, cancel_reply, start_replies, self.progress_of(release))

    async def redeliver(self, command: Command) -> TaskReply:
        """Deliver ``command`` again (as the broker does after a lost ack) and return the new reply."""
        await self.send(command, redelivered=True)
        return await self.reply_to(command)

    async def send_invalid(self, body: bytes, action: str = "initialize") -> bytes | None:
        """Send a raw body; return it as dead-lettered, or None if it was not refused in time."""
        await self.start(heartbeats=False)
        await self.backend.send(body, f"task.{self.service}.{action}")
        return await self.backend.dead_lettered(self.wait_seconds)

    # ------------------------------------------------------------------ what the service sent
    @property
    def replies(self) -> list[TaskReply]:
        return self.seen.replies

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return self.seen.heartbeats

    def progress_of(self, release: ReleaseInfo) -> list[Progress]:
        return [progress for progress in self.seen.progress if progress.release_id == release.id]

    async def reply_to(self, command: Command, within: float | None = None) -> TaskReply:
        """The next not-yet-claimed reply to ``command`` (waits for it)."""
        found: list[TaskReply] = []

        def claim() -> bool:
            for reply in self._unclaimed:
                if reply.in_reply_to == command.message_id:
                    self._unclaimed.remove(reply)
                    found.append(reply)
                    return True
            return False

        await self.wait_for(claim, f"a reply to {command.action.value} {command.release_id}", within)
        return found[0]

    async def wait_for(self, condition: Callable[[], bool], what: str, within: float | None = None) -> None:
        """Receive messages until ``condition()`` holds; ``TimeoutError`` naming ``what`` if it does not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (within or self.wait_seconds)
        while not condition():
            remaining = deadline - loop.time()
            message = await self.backend.receive(remaining) if remaining > 0 else None
            if message is None:
                raise TimeoutError(f"no {what} within {within or self.wait_seconds} s")
            self._record(message)

    async def drain(self, seconds: float) -> None:
        """Receive whatever the service sends during ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            message = await self.backend.receive(remaining)
            if message is not None:
                self._record(message)

    def _record(self, message: Outgoing) -> None:
        if isinstance(message, TaskReply):
            self.seen.replies.append(message)
            self._unclaimed.append(message)
        elif isinstance(message, Progress):
            self.seen.progress.append(message)
        else:
            self.seen.heartbeats.append(message)

    def reports(self, command: Command) -> list[Progress]:
        """Progress reported by ``process()`` itself (and keepalives repeating it), not by the runner."""
        mine = [p for p in self.seen.progress if p.in_reply_to == command.message_id]
        return [p for p in mine if p.note != STARTED_NOTE]
