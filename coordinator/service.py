"""The coordinator: wires the pure state machine to the store and the broker.

For every input (a reply, progress, a heartbeat, an operator request, a deadline) it takes the
release (cached while this coordinator leads, else read), asks :func:`coordinator.machine.decide`,
stores the result with a compare-and-set (outbox and audit events in the same update), publishes
the outbox with confirms, and only then acknowledges the input. The replies waiting for one release
are decided in a row and stored with one compare-and-set (:class:`coordinator.batches.KeyedBatcher`).
Anything that crashes in between is replayed: an unacknowledged input is delivered again, and the
outbox of every open release is published again on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from aio_pika.abc import AbstractIncomingMessage

from coordinator import metrics
from coordinator.admission import admit_reply
from coordinator.batches import KeyedBatcher
from coordinator.broker import Broker, NotLeader
from coordinator.machine import (
    OPERATOR_INPUTS,
    AddNote,
    Begin,
    Cancel,
    DeadlineCheck,
    Decision,
    Edit,
    EditNote,
    HealthVerdict,
    Hold,
    Input,
    ProgressReceived,
    Publish,
    RemoveNote,
    ReplyReceived,
    Unhold,
    Verdict,
    decide,
    next_deadline,
)
from coordinator.settings import Settings
from coordinator.store import BadCursor, HeartbeatRecord, StaleRevision, Store, VersionTaken
from coordinator.versioning import next_tentative
from schemas import documents as docs
from schemas.broker_url import mask_url
from schemas.enums import EventKind, ReleaseState
from schemas.messages import (
    AddNote as AddNoteOp,
)
from schemas.messages import (
    AdminAnswer,
    AdminRequest,
    AdminResult,
    CancelRelease,
    CreateRelease,
    EditRelease,
    EventPage,
    Heartbeat,
    HoldRelease,
    ListEvents,
    ListNotes,
    ListReleases,
    ListServices,
    ListStudies,
    MessageError,
    NotePage,
    Progress,
    PublishRelease,
    ReleasePage,
    ReleaseResult,
    RequireService,
    RerunRelease,
    ServiceList,
    ShowRelease,
    ShowStudy,
    StudyPage,
    StudyResult,
    TaskReply,
    UnholdRelease,
    UnrequireService,
    decode,
    encode,
)
from schemas.messages import (
    EditNote as EditNoteOp,
)
from schemas.messages import (
    RemoveNote as RemoveNoteOp,
)
from schemas.topology import Topology

log = structlog.get_logger("coordinator")
Clock = Callable[[], datetime]
_ID_ALPHABET = string.ascii_uppercase + string.digits
_CAS_ATTEMPTS = 20
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Refused(Exception):
    """An operator request that cannot be carried out; the text is the answer's reason."""


class KeyedLocks:
    """One asyncio lock per release id, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Coordinator:
    def __init__(self, settings: Settings, store: Store, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.topology = Topology(settings.namespace)
        self.broker: Broker | None = None
        self.locks = KeyedLocks()
        self._create_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._deadlines: dict[str, datetime] = {}
        self._undelivered: dict[str, int] = {}
        #: Open releases as last stored by this coordinator, the only writer while it leads. A
        #: compare-and-set that finds the store moved on drops the entry, so a stale copy costs a
        #: retry, never a wrong write.
        self._cache: dict[str, docs.Release] = {}
        self._replies: KeyedBatcher[TaskReply | Progress, Decision | _DeadLetter] = KeyedBatcher(
            self._apply_replies
        )
        self.active = asyncio.Event()

    # ================================================================== running

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set: stand by while another replica leads, lead otherwise."""
        announced_standby = False
        failures = 0  # sessions in a row that ended by an error
        while not stop.is_set():
            broker = Broker(
                self.settings.amqp_url_with_tls(),
                self.topology,
                publish_timeout=self.settings.broker_publish_timeout,
                prefetch=self.settings.prefetch,
                name=f"rc-coordinator@{self.settings.instance}",
            )
            try:
                await broker.connect()
                await broker.acquire_leadership()
            except NotLeader:
                if not announced_standby:
                    log.info("standby", reason="another coordinator is active; waiting to take over")
                    announced_standby = True
                await broker.close()
                await _sleep_or_stop(stop, 1.0)
                continue
            except (TimeoutError, OSError, ConnectionError) as error:
                log.warning("broker unreachable", url=mask_url(self.settings.amqp_url), error=str(error))
                await broker.close()
                await _sleep_or_stop(stop, 2.0)
                continue
            announced_standby = False
            try:
                await self._lead(broker, stop)
                failures = 0
            except Exception as error:
                failures += 1
                if failures == 1:
                    log.exception("session ended by an error; starting a new one")
                else:  # the traceback was logged once; say it again only in short
                    log.error("session ended by an error again", error=repr(error), failures=failures)
            finally:
                self.active.clear()
                metrics.IS_ACTIVE.set(0)
                self.broker = None
                with contextlib.suppress(Exception):
                    await broker.close()
            await _sleep_or_stop(stop, retry_delay(failures))

    async def _lead(self, broker: Broker, stop: asyncio.Event) -> None:
        self.broker = broker
        self._cache.clear()  # another coordinator may have led since this one last did
        await broker.declare_topology()
        for service in await self.store.required_services():
            await broker.declare_task_queue(service)
        await self._recover()
        await broker.consume(self.topology.replies_queue, self._on_reply_delivery)
        await broker.consume(self.topology.admin_queue, self._on_admin_delivery)
        self.active.set()
        metrics.IS_ACTIVE.set(1)
        log.info("active", namespace=self.settings.namespace, broker=mask_url(self.settings.amqp_url))
        sweeper = asyncio.create_task(self._sweep_forever())
        lost = asyncio.create_task(broker.closed())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                log.warning("broker connection lost; reconnecting")
        finally:
            for task in (sweeper, lost, stopped):
                task.cancel()
            await asyncio.gather(sweeper, lost, stopped, return_exceptions=True)
            await self._replies.close()

    async def _recover(self) -> None:
        """Replay what a previous run stored but may not have sent, and re-arm deadlines."""
        self._deadlines.clear()
        replayed = 0
        for release in await self.store.open_releases():
            replayed += len(release.outbox)
            await self._deliver(release)
            self._arm(release)
            if release.state is ReleaseState.WAITING:
                await self._begin(release.id)
        for state, count in (await self.store.count_by_state()).items():
            metrics.RELEASES_BY_STATE.labels(state.value).set(count)
        log.info("recovered", replayed_messages=replayed, open_releases=len(self._deadlines))

    async def _sweep_forever(self) -> None:
        """Deadlines, retries of undelivered messages and idle clean-ups, every quarter second; an error
        (the store unreachable for a moment) is logged and the next round tries again."""
        failures = 0
        while True:
            await asyncio.sleep(0.25 if not failures else retry_delay(failures))
            try:
                await self._sweep()
            except Exception as error:
                failures += 1
                log.warning("sweep failed; trying again", error=repr(error), failures=failures)
            else:
                failures = 0

    async def _sweep(self) -> None:
        now = self.clock()
        for release_id, deadline in list(self._deadlines.items()):
            if deadline <= now:
                await self._apply(release_id, DeadlineCheck(now))
        for release_id in list(self._undelivered):
            async with self.locks.hold(release_id):
                release = await self._load(release_id)
                if release is not None:
                    await self._deliver(release)

    # ================================================================== the core step

    async def _apply(self, release_id: str, event: Input, *, actor: str = "coordinator") -> Decision | None:
        """Decide and store one event for one release, then deliver what it caused."""
        decisions = await self._apply_all(release_id, [(event, actor)])
        return None if decisions is None else decisions[0]

    async def _apply_all(self, release_id: str, inputs: Sequence[tuple[Input, str]]) -> list[Decision] | None:
        """Decide events for one release in order, store them all with one compare-and-set (re-reading
        and deciding again after a lost race), then deliver what they caused. None: unknown release."""
        async with self.locks.hold(release_id):
            for _ in range(_CAS_ATTEMPTS):
                release = await self._load(release_id)
                if release is None:
                    return None
                fold = await self._fold(release, inputs)
                if not fold.steps:
                    return fold.decisions
                try:
                    await self.store.compare_and_set(release, fold.release, fold.audit)
                except (StaleRevision, VersionTaken):  # VersionTaken: re-read the highest final version
                    self._cache.pop(release_id, None)
                    continue
                self._cache[release_id] = fold.release
                for step in fold.steps:
                    self._observe(*step)
                try:
                    await self._deliver(fold.release)
                except Exception as error:  # stored, so the input is done; the sweeper delivers the rest
                    self._count_undelivered(release_id, max(1, len(fold.release.outbox)))
                    log.warning("delivery failed; will retry", release_id=release_id, error=repr(error))
                return fold.decisions
        raise RuntimeError(f"{release_id}: gave up after {_CAS_ATTEMPTS} lost races")

    async def _fold(self, release: docs.Release, inputs: Sequence[tuple[Input, str]]) -> _Fold:
        """Run the pure state machine over the events, each seeing the result of the one before."""
        fold = _Fold(release)
        for event, actor in inputs:
            event = await self._refresh(event)
            decision = decide(fold.release, event, self.settings.timeouts, self.topology)
            if decision.applied:
                fold.audit.append(_audit_event(fold.release, decision, event, actor))
                fold.steps.append((fold.release, decision.release, decision, event))
                fold.release = decision.release
            fold.decisions.append(decision)
        return fold

    async def _load(self, release_id: str) -> docs.Release | None:
        """The release as stored, from the cache when this coordinator wrote it last. Under its lock."""
        cached = self._cache.get(release_id)
        if cached is not None:
            return cached
        release = await self.store.get(release_id)
        if release is None:
            return None
        self._cache[release_id] = release
        return release

    async def _peek(self, release_id: str) -> docs.Release | None:
        """The release for reading fields that do not change (its services), without its lock."""
        return self._cache.get(release_id) or await self.store.get(release_id)

    async def _refresh(self, event: Input) -> Input:
        """Operator publish needs the highest final version as of now, read on every attempt."""
        if isinstance(event, Publish):
            return Publish(event.now, event.operator, await self.store.highest_final_version())
        return event

    async def _deliver(self, release: docs.Release) -> None:
        """Publish the outbox with confirms and tell the store what the broker confirmed; what it did not
        confirm stays for the sweeper to try again."""
        confirmed = await self._publish_outbox(release)
        await self.store.delivered(release.id, confirmed)
        left = tuple(e for e in release.outbox if e.message_id not in set(confirmed))
        self._count_undelivered(release.id, len(left))
        if release.state.is_terminal and not left:
            self._cache.pop(release.id, None)  # nothing more will happen to it
        elif self._cache.get(release.id) is release:
            self._cache[release.id] = release.model_copy(update={"outbox": left})

    async def _publish_outbox(self, release: docs.Release) -> list[str]:
        """The message ids the broker confirmed."""
        if self.broker is None or not release.outbox:
            return []
        broker = self.broker
        results = await asyncio.gather(
            *(broker.publish_entry(entry, release.id) for entry in release.outbox), return_exceptions=True
        )
        for entry, error in zip(release.outbox, results, strict=True):
            if error is not None:
                metrics.PUBLISH_FAILURES.inc()
                log.warning(
                    "publication not confirmed; will retry",
                    release_id=release.id,
                    message_id=entry.message_id,
                    error=repr(error),
                )
        return [e.message_id for e, r in zip(release.outbox, results, strict=True) if r is None]

    def _count_undelivered(self, release_id: str, count: int) -> None:
        if count:
            self._undelivered[release_id] = count
        else:
            self._undelivered.pop(release_id, None)
        metrics.OUTBOX_SIZE.set(sum(self._undelivered.values()))

    def _arm(self, release: docs.Release) -> None:
        deadline = next_deadline(release)
        if deadline is None:
            self._deadlines.pop(release.id, None)
        else:
            self._deadlines[release.id] = deadline

    def _observe(self, before: docs.Release, after: docs.Release, decision: Decision, event: Input) -> None:
        self._arm(after)
        if before.state is not after.state:
            metrics.TRANSITIONS.labels(after.state.value).inc()
            metrics.RELEASES_BY_STATE.labels(before.state.value).dec()
            metrics.RELEASES_BY_STATE.labels(after.state.value).inc()
            entered = before.entered.get(before.state)
            if entered is not None:
                metrics.STEP_SECONDS.labels(before.state.value).observe(
                    (self.clock() - entered).total_seconds()
                )
        log.info(
            "decision",
            release_id=after.id,
            verdict=decision.verdict.value,
            state_before=before.state.value,
            state_after=after.state.value,
            reason=decision.reason,
            service=_service_of(event),
            message_id=_message_id_of(event),
            commands=len(decision.messages),
        )

    # ================================================================== replies

    async def _on_reply_delivery(self, incoming: AbstractIncomingMessage) -> None:
        await self._handle_safely(incoming, self._handle_reply)

    async def _handle_safely(
        self, incoming: AbstractIncomingMessage, handler: Callable[[AbstractIncomingMessage], object]
    ) -> None:
        try:
            await handler(incoming)  # type: ignore[misc]
        except Exception:
            log.exception(
                "failed to handle a message; it will be redelivered", message_id=incoming.message_id
            )
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await incoming.nack(requeue=True)

    async def _handle_reply(self, incoming: AbstractIncomingMessage) -> None:
        try:
            message = admit_reply(
                incoming.body, incoming.routing_key or "", incoming.user_id, self.settings.trusted_users
            )
        except MessageError as error:
            await self._dead_letter(incoming, error.reason, _peek_release_id(incoming))
            return
        if isinstance(message, Heartbeat):
            await self._on_heartbeat(message)
            metrics.MESSAGES.labels("heartbeat", "applied").inc()
            await incoming.ack()
            return
        outcome = await self._replies.submit(message.release_id, message)
        if isinstance(outcome, _DeadLetter):
            await self._dead_letter(incoming, outcome.reason, outcome.release_id)
            return
        await self._settle(incoming, message, outcome)

    async def _apply_replies(
        self, release_id: str, messages: Sequence[TaskReply | Progress]
    ) -> list[Decision | _DeadLetter]:
        """Apply the replies and progress waiting for one release together (one store update).

        Each gets its decision, or why it must be dead-lettered.
        """
        unknown: list[Decision | _DeadLetter] = [_DeadLetter(f"unknown release {release_id}", None)] * len(
            messages
        )
        release = await self._peek(release_id)
        if release is None:
            return unknown
        now = self.clock()
        events = [(_event_of(m, now), m.service) for m in messages if m.service in release.tasks]
        decided = await self._apply_all(release_id, events)
        if decided is None:
            return unknown
        decisions = iter(decided)
        return [
            next(decisions)
            if m.service in release.tasks
            else _DeadLetter(f"{m.service} is not in the service snapshot of {release_id}", release_id)
            for m in messages
        ]

    async def _settle(
        self, incoming: AbstractIncomingMessage, message: TaskReply | Progress, decision: Decision
    ) -> None:
        """Ack what was applied or is a harmless duplicate; dead-letter what is out of order."""
        kind = message.kind.value
        metrics.MESSAGES.labels(kind, decision.verdict.value).inc()
        if decision.applied:
            await incoming.ack()
            return
        if decision.verdict is Verdict.DUPLICATE or isinstance(message, Progress):
            log.info(
                "ignored",
                release_id=message.release_id,
                service=message.service,
                message_id=message.message_id,
                reason=decision.reason,
            )
            await self.store.record(
                [
                    self._event(
                        message.release_id,
                        EventKind.REFUSED,
                        f"{decision.verdict}: {decision.reason}",
                        message,
                    )
                ]
            )
            await incoming.ack()
            return
        await self._dead_letter(incoming, f"{decision.verdict}: {decision.reason}", message.release_id)

    async def _on_heartbeat(self, beat: Heartbeat) -> None:
        now = self.clock()
        await self.store.heartbeat(
            HeartbeatRecord(beat.service, beat.instance_id, beat.sdk_version, beat.healthy, beat.detail, now)
        )
        if beat.healthy:
            return
        verdict = HealthVerdict(now, {beat.service: beat.detail or "the service reports itself unhealthy"})
        for release_id in list(self._deadlines):
            release = await self._peek(release_id)
            if release and release.state is ReleaseState.INITIALIZING and beat.service in release.tasks:
                await self._apply(release_id, verdict, actor=beat.service)

    async def _dead_letter(
        self, incoming: AbstractIncomingMessage, reason: str, release_id: str | None
    ) -> None:
        assert self.broker is not None
        category = reason.split(":", 1)[0].split(" ", 1)[0]
        metrics.DEAD_LETTERED.labels(category).inc()
        log.warning(
            "dead-lettered",
            reason=reason,
            release_id=release_id,
            message_id=incoming.message_id,
            routing_key=incoming.routing_key,
            user_id=incoming.user_id,
        )
        await self.store.record(
            [
                docs.AuditEvent(
                    id=uuid.uuid4().hex,
                    release_id=release_id,
                    at=self.clock(),
                    kind=EventKind.DEAD_LETTERED,
                    reason=reason,
                    message_id=incoming.message_id,
                    actor=incoming.user_id or "unknown",
                )
            ]
        )
        await self.broker.dead_letter(incoming, reason)
        await incoming.ack()

    def _event(
        self, release_id: str, kind: EventKind, reason: str, message: TaskReply | Progress
    ) -> docs.AuditEvent:
        return docs.AuditEvent(
            id=uuid.uuid4().hex,
            release_id=release_id,
            at=self.clock(),
            kind=kind,
            reason=reason,
            service=message.service,
            message_id=message.message_id,
            actor=message.service,
        )

    # ================================================================== operators

    async def _on_admin_delivery(self, incoming: AbstractIncomingMessage) -> None:
        await self._handle_safely(incoming, self._handle_admin)

    async def _handle_admin(self, incoming: AbstractIncomingMessage) -> None:
        assert self.broker is not None
        try:
            request = decode(incoming.body, AdminRequest)
        except MessageError as error:
            if incoming.reply_to:
                await self._answer(incoming, "invalid", error=f"invalid request: {error.reason}")
                await incoming.ack()
            else:
                await self._dead_letter(incoming, error.reason, None)
            return
        operator = f"operator:{incoming.user_id or 'unknown'}/{request.operator}"
        try:
            result = await self.execute(request, operator)
        except Refused as refusal:
            log.info("refused", operator=operator, op=request.operation.op, reason=str(refusal))
            await self._answer(incoming, request.message_id, error=str(refusal))
        else:
            await self._answer(incoming, request.message_id, result=result)
        await incoming.ack()

    async def _answer(
        self,
        incoming: AbstractIncomingMessage,
        in_reply_to: str,
        *,
        error: str | None = None,
        result: AdminResult | None = None,
    ) -> None:
        if not incoming.reply_to or self.broker is None:
            return
        answer = AdminAnswer(
            message_id=uuid.uuid4().hex,
            sent_at=self.clock(),
            in_reply_to=in_reply_to,
            ok=error is None,
            error=error,
            result=result,
        )
        await self.broker.answer(
            incoming.reply_to, incoming.correlation_id, encode(answer), answer.message_id
        )

    async def execute(self, request: AdminRequest, operator: str) -> AdminResult:
        op = request.operation
        now = self.clock()
        who = request.operator
        match op:
            case CreateRelease():
                return await self._create(op, who, operator)
            case ListReleases():
                return await self._list(op)
            case ShowRelease():
                return await self._show(op.release_id, op.events)
            case HoldRelease():
                return await self._operate(op.release_id, Hold(now, who), operator, op.op)
            case UnholdRelease():
                return await self._operate(op.release_id, Unhold(now, who), operator, op.op)
            case PublishRelease():
                async with self._publish_lock:
                    return await self._operate(op.release_id, Publish(now, who, None), operator, op.op)
            case CancelRelease():
                return await self._operate(op.release_id, Cancel(now, who, op.reason), operator, op.op)
            case EditRelease():
                edit = Edit(now, who, op.name, op.description, op.tags, op.studies, op.is_major)
                return await self._operate(op.release_id, edit, operator, op.op)
            case RerunRelease():
                return await self._rerun(op, who, operator)
            case AddNoteOp():
                note = AddNote(now, who, op.text, op.study)
                return await self._operate(op.release_id, note, operator, op.op, events=1)
            case EditNoteOp():
                edited = EditNote(now, who, op.note_id, op.text)
                return await self._operate(op.release_id, edited, operator, op.op, events=1)
            case RemoveNoteOp():
                removed = RemoveNote(now, who, op.note_id)
                return await self._operate(op.release_id, removed, operator, op.op, events=1)
            case ListNotes():
                return await self._notes(op)
            case ListEvents():
                return await self._events(op)
            case ListStudies():
                return await self._studies(op)
            case ShowStudy():
                return await self._study(op)
            case ListServices():
                return ServiceList(services=tuple(await self.store.all_services()))
            case RequireService():
                if self.broker is not None:
                    await self.broker.declare_task_queue(op.service)
                await self.store.set_required(op.service, True, now)
                return ServiceList(services=tuple(await self.store.all_services()))
            case UnrequireService():
                if await self.store.service(op.service) is None:
                    raise Refused(f"unknown service {op.service}")
                await self.store.set_required(op.service, False, now)
                return ServiceList(services=tuple(await self.store.all_services()))

    async def _operate(
        self, release_id: str, event: Input, actor: str, op: str, *, events: int = 0
    ) -> ReleaseResult:
        """Apply an operator's event; a refusal is recorded in the audit trail, then raised."""
        decision = await self._apply(release_id, event, actor=actor)
        if decision is None:
            raise Refused(f"unknown release {release_id}")
        if decision.verdict is Verdict.DUPLICATE and isinstance(event, Edit):
            return await self._show(release_id, events)  # nothing to change: already so
        if not decision.applied:
            await self.store.record(
                [
                    docs.AuditEvent(
                        id=uuid.uuid4().hex,
                        release_id=release_id,
                        at=self.clock(),
                        kind=EventKind.REFUSED,
                        reason=f"{op} refused: {decision.reason}",
                        state_before=decision.release.state,
                        actor=actor,
                    )
                ]
            )
            raise Refused(decision.reason)
        return await self._show(release_id, events)

    async def _show(self, release_id: str, events: int) -> ReleaseResult:
        release = await self._peek(release_id)
        if release is None:
            raise Refused(f"unknown release {release_id}")
        recent = (await self.store.event_page(release_id, events)).items if events else []
        return ReleaseResult(release=docs.ReleaseView.of(release), events=tuple(recent))

    async def _list(self, op: ListReleases) -> ReleasePage:
        page = await _paged(
            self.store.list_releases(op.limit, op.cursor, state=op.state, study=op.study, since=op.since)
        )
        return ReleasePage(
            releases=tuple(docs.ReleaseView.of(r, notes=False) for r in page.items),
            next_cursor=page.next_cursor,
        )

    async def _events(self, op: ListEvents) -> EventPage:
        state = await self.store.state_of(op.release_id)
        if state is None:
            raise Refused(f"unknown release {op.release_id}")
        page = await _paged(
            self.store.event_page(
                op.release_id, op.limit, op.cursor, kind=op.kind, state=op.state, since=op.since
            )
        )
        return EventPage(
            release_id=op.release_id,
            release_state=state,
            events=tuple(page.items),
            next_cursor=page.next_cursor,
        )

    async def _notes(self, op: ListNotes) -> NotePage:
        page = await _paged(
            self.store.note_page(op.release_id, op.limit, op.cursor, study=op.study, since=op.since)
        )
        if page is None:
            raise Refused(f"unknown release {op.release_id}")
        return NotePage(release_id=op.release_id, notes=tuple(page.items), next_cursor=page.next_cursor)

    async def _studies(self, op: ListStudies) -> StudyPage:
        page = await _paged(
            self.store.study_page(op.limit, op.cursor, prefix=op.study, state=op.state, since=op.since)
        )
        return StudyPage(studies=tuple(page.items), next_cursor=page.next_cursor)

    async def _study(self, op: ShowStudy) -> StudyResult:
        summary, page = await _paged(
            asyncio.gather(
                self.store.study_summary(op.study),
                self.store.study_releases(op.study, op.limit, op.cursor, state=op.state, since=op.since),
            )
        )
        if summary is None:
            raise Refused(f"no release has included study {op.study}")
        return StudyResult(study=summary, releases=tuple(page.items), next_cursor=page.next_cursor)

    async def _rerun(self, op: RerunRelease, author: str, actor: str) -> ReleaseResult:
        original = await self.store.get(op.release_id)
        if original is None:
            raise Refused(f"unknown release {op.release_id}: nothing to re-run")
        if not original.state.is_terminal:
            raise Refused(
                f"{original.id} is {original.state}, not ended: re-run a release once it is published, "
                "canceled or failed (cancel it first if it must be replaced)"
            )
        again = CreateRelease(
            name=original.name,
            studies=original.studies,
            description=original.description,
            tags=original.tags,
            is_major=original.is_major,
        )
        result = await self._create(again, author, actor, rerun_of=original)
        await self.store.record(
            [
                docs.AuditEvent(
                    id=f"{original.id}.rerun.{result.release.id}",
                    release_id=original.id,
                    at=self.clock(),
                    kind=EventKind.OPERATOR,
                    reason=f"re-run by {author} as {result.release.id}",
                    actor=actor,
                )
            ]
        )
        return result

    async def _create(
        self, op: CreateRelease, author: str, actor: str, *, rerun_of: docs.Release | None = None
    ) -> ReleaseResult:
        required = await self.store.required_services()
        if not required:
            raise Refused("no service is required yet: require at least one first (rc service require NAME)")
        async with self._create_lock:
            release = await self._insert_new(op, author, required, rerun_of)
        metrics.RELEASES_BY_STATE.labels(ReleaseState.WAITING.value).inc()
        log.info("created", release_id=release.id, version=release.tentative_version, services=required)
        await self._begin(release.id)
        return await self._show(release.id, 0)

    async def _insert_new(
        self, op: CreateRelease, author: str, required: list[str], rerun_of: docs.Release | None = None
    ) -> docs.Release:
        rerun = f" as a re-run of {rerun_of.id}" if rerun_of else ""
        for _ in range(_CAS_ATTEMPTS):
            last = await self.store.last_created()
            now = self.clock()
            release_id = "RE_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
            release = docs.Release(
                id=release_id,
                seq=(last.seq + 1) if last else 1,
                name=op.name,
                description=op.description,
                studies=op.studies,
                tags=op.tags,
                author=author,
                is_major=op.is_major,
                rerun_of=rerun_of.id if rerun_of else None,
                tentative_version=next_tentative(last.version if last else None),
                tasks={s: docs.Task(service=s) for s in required},
                entered={ReleaseState.WAITING: now},
                created_at=now,
                updated_at=now,
            )
            created = docs.AuditEvent(
                id=f"{release_id}.r0",
                release_id=release_id,
                at=now,
                kind=EventKind.CREATED,
                reason=f"created by {author}{rerun} with services {', '.join(required)}",
                state_after=ReleaseState.WAITING,
                actor=f"operator:{author}",
            )
            try:
                await self.store.insert(release, [created])
            except VersionTaken:
                continue
            self._cache[release.id] = release
            return release
        raise Refused("could not assign a version: too many concurrent creations, try again")

    async def _begin(self, release_id: str) -> None:
        release = await self._peek(release_id)
        if release is None:
            return
        unhealthy = await self._unhealthy(list(release.tasks))
        await self._apply(release_id, Begin(self.clock(), unhealthy))

    async def _unhealthy(self, services: list[str]) -> dict[str, str]:
        """Why each unhealthy service is: no consumer on its queue, or missed heartbeats."""
        assert self.broker is not None
        verdicts: dict[str, str] = {}
        now = self.clock()
        consumers = await self.broker.consumer_counts(services)
        records = await self.store.services_named(services)
        for service in services:
            record = records.get(service)
            if not consumers[service]:
                verdicts[service] = "no consumer on its queue"
            elif record is None or record.last_heartbeat_at is None:
                verdicts[service] = "never sent a heartbeat"
            elif now - record.last_heartbeat_at > self.settings.heartbeat_timeout:
                age = int((now - record.last_heartbeat_at).total_seconds())
                verdicts[service] = f"missed heartbeats (last one {age}s ago)"
            elif not record.healthy:
                verdicts[service] = f"reports itself unhealthy: {record.health_detail or 'no detail'}"
        return verdicts


# ---------------------------------------------------------------------- helpers


def _audit_event(before: docs.Release, decision: Decision, event: Input, actor: str) -> docs.AuditEvent:
    """The audit event of one applied decision, stored with it."""
    after = decision.release
    return docs.AuditEvent(
        id=f"{after.id}.r{after.revision}",
        release_id=after.id,
        at=after.updated_at,
        kind=EventKind.TRANSITION if before.state is not after.state else _kind_of(event),
        reason=decision.reason,
        service=_service_of(event),
        message_id=_message_id_of(event),
        state_before=before.state,
        state_after=after.state,
        actor=actor,
    )


@dataclass(frozen=True)
class _DeadLetter:
    reason: str
    release_id: str | None


@dataclass
class _Fold:
    """Events decided in a row: the decisions, and (before, after, decision, event) per applied one."""

    release: docs.Release
    decisions: list[Decision] = field(default_factory=list)
    steps: list[tuple[docs.Release, docs.Release, Decision, Input]] = field(default_factory=list)
    #: The audit event of each applied decision, stored in the same write.
    audit: list[docs.AuditEvent] = field(default_factory=list)


def _event_of(message: TaskReply | Progress, now: datetime) -> Input:
    return ReplyReceived(message, now) if isinstance(message, TaskReply) else ProgressReceived(message, now)


def _kind_of(event: Input) -> EventKind:
    return EventKind.OPERATOR if isinstance(event, OPERATOR_INPUTS) else EventKind.ACCEPTED


async def _paged(query: Awaitable[T]) -> T:
    """A store query whose cursor came from an operator: a cursor the store did not hand out is refused."""
    try:
        return await query
    except BadCursor as error:
        raise Refused(str(error)) from None


def _service_of(event: Input) -> str | None:
    if isinstance(event, ReplyReceived):
        return event.reply.service
    if isinstance(event, ProgressReceived):
        return event.progress.service
    return None


def _message_id_of(event: Input) -> str | None:
    if isinstance(event, ReplyReceived):
        return event.reply.message_id
    if isinstance(event, ProgressReceived):
        return event.progress.message_id
    return None


def _peek_release_id(incoming: AbstractIncomingMessage) -> str | None:
    """The correlation id names the release; keep it on the audit event only if it looks like one."""
    value = incoming.correlation_id
    if value and len(value) == 11 and value.startswith("RE_"):
        return value
    return None


def retry_delay(failures: int) -> float:
    """Seconds before the next session: 0.5 s, doubled for each failed session in a row, at most 30 s."""
    return min(30.0, 0.5 * 2.0 ** max(0, failures - 1))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
