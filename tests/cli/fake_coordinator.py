"""A stand-in for the coordinator's admin side, on the real broker: enough to drive the ``rc`` command line.

It declares the admin exchange and a queue bound with the admin routing key, answers every
:class:`~schemas.messages.AdminRequest` with an :class:`~schemas.messages.AdminAnswer` built from the schemas,
keeps releases and services in memory with a miniature state machine, and announces state changes on the
events exchange as the real coordinator does. Tests move releases along with :meth:`FakeCoordinator.update`.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from coordinator.admin import NO_BROKER_USER
from coordinator.creation import Caller
from schemas.documents import AuditEvent, ReleaseView, ServiceRecord, Task
from schemas.enums import EventKind, ReleaseState, TaskState
from schemas.messages import (
    AdminAnswer,
    AdminRequest,
    AdminResult,
    Announcement,
    CancelRelease,
    CreateRelease,
    HoldRelease,
    ListReleases,
    ListServices,
    MessageError,
    PublishRelease,
    ReleasePage,
    ReleaseResult,
    RequireService,
    ServiceList,
    ShowRelease,
    UnholdRelease,
    UnrequireService,
    decode,
    encode,
)
from schemas.topology import Topology

_ID_ALPHABET = string.ascii_uppercase + string.digits


def now() -> datetime:
    return datetime.now(UTC)


def new_release_id() -> str:
    return "RE_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


@dataclass
class Received:
    """One request as it arrived, with the AMQP properties the protocol prescribes."""

    request: AdminRequest | None
    body: bytes
    properties: dict[str, Any]
    headers: dict[str, Any]


class Refusal(Exception):
    """Refused, with the very words the real coordinator uses (``tests/cli/test_fake_coordinator.py``)."""


CANNOT_CANCEL_PUBLISHING = (
    "a publishing release cannot be canceled: some services may already be public; "
    "retry the publication instead (rc release publish)"
)


@dataclass
class FakeCoordinator:
    amqp_url: str
    namespace: str
    #: Services registered at start: name -> required.
    initial_services: dict[str, bool] = field(
        default_factory=lambda: {"portal": True, "search-index": True, "file-service": False}
    )
    #: When true, requests are consumed (and recorded) but never answered.
    silent: bool = False
    releases: dict[str, ReleaseView] = field(default_factory=dict)
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    events: dict[str, list[AuditEvent]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topology = Topology(self.namespace)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._arrived = asyncio.Condition()
        moment = now()
        for name, required in self.initial_services.items():
            self.services[name] = ServiceRecord(
                name=name,
                required=required,
                last_heartbeat_at=moment,
                instances={f"{name}-1": moment},
                sdk_version="0.1.0",
                registered_at=moment,
            )

    # -------------------------------------------------------------- broker

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.amqp_url, timeout=10)
        channel = await self._connection.channel(publisher_confirms=True)
        self._channel = channel
        admin = await channel.declare_exchange(
            self.topology.admin_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        await channel.declare_exchange(
            self.topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        # Exclusive: it goes away with the fake, so a later test of "nobody listening" is not fooled.
        queue = await channel.declare_queue(self.topology.admin_queue, exclusive=True)
        await queue.bind(admin, routing_key=self.topology.admin_routing_key)
        await queue.consume(self._on_request)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def __aenter__(self) -> FakeCoordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _require_channel(self) -> AbstractChannel:
        assert self._channel is not None, "start() the fake coordinator first"
        return self._channel

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            properties = {
                "content_type": message.content_type,
                "type": message.type,
                "message_id": message.message_id,
                "correlation_id": message.correlation_id,
                "reply_to": message.reply_to,
                "user_id": message.user_id,
                "expiration": message.expiration,
            }
            try:
                request: AdminRequest | None = decode(message.body, AdminRequest)
            except MessageError:
                request = None
            self.received.append(Received(request, message.body, properties, dict(message.headers or {})))
            async with self._arrived:
                self._arrived.notify_all()
            if self.silent or request is None or not message.reply_to:
                return
            try:
                if not message.user_id:
                    raise Refusal(NO_BROKER_USER)
                answer = AdminAnswer(
                    message_id=uuid.uuid4().hex,
                    sent_at=now(),
                    in_reply_to=request.message_id,
                    ok=True,
                    result=await self.handle(request, message.user_id),
                )
            except Refusal as refusal:
                answer = AdminAnswer(
                    message_id=uuid.uuid4().hex,
                    sent_at=now(),
                    in_reply_to=request.message_id,
                    ok=False,
                    error=str(refusal),
                )
            await self._require_channel().default_exchange.publish(
                aio_pika.Message(
                    encode(answer),
                    content_type="application/json",
                    type=answer.kind.value,
                    message_id=answer.message_id,
                    correlation_id=message.correlation_id,
                ),
                routing_key=message.reply_to,
            )

    def count(self, op: str) -> int:
        """How many requests of operation ``op`` (``show``, ``create``, ...) arrived so far."""
        return sum(1 for r in self.received if r.request is not None and r.request.operation.op == op)

    async def wait_for_requests(self, op: str, at_least: int, limit: float = 10) -> None:
        """Wait until ``at_least`` requests of operation ``op`` have arrived in all."""
        async with asyncio.timeout(limit), self._arrived:
            await self._arrived.wait_for(lambda: self.count(op) >= at_least)

    async def announce(self, view: ReleaseView) -> None:
        announcement = Announcement(
            message_id=uuid.uuid4().hex, sent_at=now(), release_id=view.id, state=view.state, release=view
        )
        exchange = await self._require_channel().get_exchange(self.topology.events_exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                encode(announcement),
                content_type="application/json",
                type=announcement.kind.value,
                message_id=announcement.message_id,
                correlation_id=view.id,
            ),
            routing_key=self.topology.event_key(view.state.value),
        )

    # -------------------------------------------------------------- the miniature coordinator

    def _record(self, release_id: str, kind: EventKind, reason: str, **extra: Any) -> None:
        self.events.setdefault(release_id, []).append(
            AuditEvent(
                id=uuid.uuid4().hex, release_id=release_id, at=now(), kind=kind, reason=reason, **extra
            )
        )

    async def update(
        self,
        release_id: str,
        *,
        state: ReleaseState | None = None,
        task_state: TaskState | None = None,
        progress: float | None = None,
        message: str | None = None,
        announce: bool = True,
        **fields: Any,
    ) -> ReleaseView:
        """Change a release (and all its tasks) as the coordinator would; announce a state change."""
        view = self.releases[release_id]
        moment = now()
        tasks = {
            name: task.model_copy(
                update={
                    "state": task_state or task.state,
                    "progress": task.progress if progress is None else progress,
                    "last_message": task.last_message if message is None else message,
                    "updated_at": moment,
                }
            )
            for name, task in view.tasks.items()
        }
        changes: dict[str, Any] = {"tasks": tasks, "updated_at": moment, **fields}
        if state is not None and state != view.state:
            changes["state"] = state
            changes["entered"] = {**view.entered, state: moment}
            self._record(
                release_id,
                EventKind.TRANSITION,
                fields.get("state_reason") or "moved on",
                state_before=view.state,
                state_after=state,
            )
        updated = view.model_copy(update=changes)
        self.releases[release_id] = updated
        if state is not None and state != view.state and announce:
            await self.announce(updated)
        return updated

    async def stage(self, release_id: str) -> ReleaseView:
        return await self.update(
            release_id, state=ReleaseState.STAGED, task_state=TaskState.STAGED, progress=100, message="staged"
        )

    def _release(self, release_id: str) -> ReleaseView:
        try:
            return self.releases[release_id]
        except KeyError:
            raise Refusal(f"unknown release {release_id}") from None

    def _result(self, view: ReleaseView, events: int = 5) -> ReleaseResult:
        recent = self.events.get(view.id, [])[-events:] if events else []
        return ReleaseResult(release=view, events=tuple(recent))

    def _next_version(self) -> str:
        if not self.releases:
            return "0.0.1"
        last = list(self.releases.values())[-1].tentative_version
        major, minor, patch = (int(part) for part in last.split("."))
        return f"{major}.{minor}.{patch + 1}"

    async def handle(self, request: AdminRequest, user: str = "guest") -> AdminResult:
        """Carry out ``request`` from broker user ``user`` (the suite's ``rc`` logs in as ``guest``): the
        actor of the audit trail, with the name the operator gives as a label, as the real one records."""
        operation = request.operation
        caller = Caller(user, request.operator, request.message_id)
        handlers: dict[type, Callable[[Any, Caller], Awaitable[AdminResult]]] = {
            CreateRelease: self._create,
            ListReleases: self._list,
            ShowRelease: self._show,
            HoldRelease: self._hold,
            UnholdRelease: self._hold,
            PublishRelease: self._publish,
            CancelRelease: self._cancel,
            ListServices: self._list_services,
            RequireService: self._require,
            UnrequireService: self._require,
        }
        handler = handlers.get(type(operation))
        if handler is None:
            raise Refusal(f"unknown operation {operation.op}")
        return await handler(operation, caller)

    async def _create(self, operation: CreateRelease, caller: Caller) -> AdminResult:
        moment = now()
        release_id = new_release_id()
        version = self._next_version()
        view = ReleaseView(
            id=release_id,
            name=operation.name,
            description=operation.description,
            studies=operation.studies,
            tags=operation.tags,
            author=caller.name,
            is_major=operation.is_major,
            version=version,
            tentative_version=version,
            final_version=None,
            state=ReleaseState.WAITING,
            state_reason=None,
            held=False,
            tasks={
                name: Task(service=name, entered={TaskState.WAITING: moment}, updated_at=moment)
                for name, record in sorted(self.services.items())
                if record.required
            },
            entered={ReleaseState.WAITING: moment},
            created_at=moment,
            updated_at=moment,
        )
        self.releases[release_id] = view
        self._record(
            release_id,
            EventKind.CREATED,
            f"created by {caller.name} with services {', '.join(view.tasks)}",
            actor=caller.user,
            label=caller.name,
            message_id=caller.request_id,
            state_after=ReleaseState.WAITING,
        )
        return self._result(view)

    async def _list(self, operation: ListReleases, caller: Caller) -> AdminResult:
        views = [v for v in reversed(self.releases.values()) if operation.state in (None, v.state)]
        start = int(operation.cursor or 0)
        page = views[start : start + operation.limit]
        more = start + operation.limit < len(views)
        return ReleasePage(releases=tuple(page), next_cursor=str(start + operation.limit) if more else None)

    async def _show(self, operation: ShowRelease, caller: Caller) -> AdminResult:
        return self._result(self._release(operation.release_id), operation.events)

    async def _hold(self, operation: HoldRelease | UnholdRelease, caller: Caller) -> AdminResult:
        view = self._release(operation.release_id)
        hold = isinstance(operation, HoldRelease)
        if hold and view.state != ReleaseState.STAGED:
            raise Refusal(f"only a staged release can be held; this one is {view.state.value}")
        if view.held == hold:
            raise Refusal("the release is already on hold" if hold else "the release is not on hold")
        reason = f"held by {caller.name}" if hold else f"released from hold by {caller.name}"
        self._record(
            view.id,
            EventKind.OPERATOR,
            reason,
            actor=caller.user,
            label=caller.name,
            message_id=caller.request_id,
            state_before=view.state,
            state_after=view.state,
        )
        return self._result(await self.update(view.id, held=hold))

    async def _publish(self, operation: PublishRelease, caller: Caller) -> AdminResult:
        view = self._release(operation.release_id)
        if view.state != ReleaseState.STAGED:
            raise Refusal(f"only a staged release can be published; this one is {view.state.value}")
        if view.held:
            raise Refusal("the release is on hold; unhold it before publishing")
        major, minor, _ = (int(part) for part in view.tentative_version.split("."))
        final = f"{major + 1}.0.0" if view.is_major else f"{major}.{minor + 1}.0"
        updated = await self.update(
            view.id,
            state=ReleaseState.PUBLISHING,
            task_state=TaskState.PUBLISHING,
            final_version=final,
            version=final,
        )
        return self._result(updated)

    async def _cancel(self, operation: CancelRelease, caller: Caller) -> AdminResult:
        view = self._release(operation.release_id)
        if view.state.is_terminal:
            raise Refusal(f"the release is already {view.state.value}")
        if view.state == ReleaseState.PUBLISHING:
            raise Refusal(CANNOT_CANCEL_PUBLISHING)
        updated = await self.update(
            view.id,
            state=ReleaseState.CANCELED,
            task_state=TaskState.CANCELED,
            state_reason=operation.reason,
        )
        return self._result(updated)

    async def _list_services(self, operation: ListServices, caller: Caller) -> AdminResult:
        return ServiceList(services=tuple(self.services.values()))

    async def _require(self, operation: RequireService | UnrequireService, caller: Caller) -> AdminResult:
        required = isinstance(operation, RequireService)
        record = self.services.get(operation.service) or ServiceRecord(name=operation.service)
        self.services[operation.service] = record.model_copy(update={"required": required})
        return ServiceList(services=tuple(self.services.values()))
