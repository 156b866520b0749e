"""Operators' requests, from the admin queue: each decoded, carried out, and answered to its reply queue.

Requests that change a release become inputs of the state machine (hold, publish, cancel, edit, notes),
applied like any other; a refusal is answered with its one-line reason and recorded in the audit trail.
Reads go to the store's read side. The operation's type picks its handler (:attr:`Admin.handlers`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import structlog

from coordinator import audit
from coordinator.audit import Cause
from coordinator.broker import Delivery, Session
from coordinator.creation import Caller, Creation, Refused
from coordinator.deliveries import dead_letter, settle_safely
from coordinator.machine import Cancel, Edit, Hold, Input, NoteChange, Publish, Unhold, Verdict
from coordinator.releases import Releases
from coordinator.store import BadCursor, Store
from schemas.documents import AuditEvent, ReleaseView
from schemas.enums import EventKind
from schemas.messages import (
    AddNote,
    AdminAnswer,
    AdminRequest,
    AdminResult,
    CancelRelease,
    CreateRelease,
    EditNote,
    EditRelease,
    EventPage,
    HoldRelease,
    ListEvents,
    ListNotes,
    ListReleases,
    ListServices,
    ListStudies,
    MessageError,
    NotePage,
    PublishRelease,
    ReleasePage,
    ReleaseResult,
    RemoveNote,
    RequireService,
    RerunRelease,
    ServiceList,
    ShowRelease,
    ShowStudy,
    StudyPage,
    StudyResult,
    UnholdRelease,
    UnrequireService,
    decode,
    encode,
)

log = structlog.get_logger("coordinator")
Clock = Callable[[], datetime]
T = TypeVar("T")
Handler = Callable[[Any, Caller], Awaitable[AdminResult]]
#: Operations that change a release: the state machine input each becomes.
_INPUTS: dict[type, Callable[[Any, datetime, str], Input]] = {
    HoldRelease: lambda op, now, who: Hold(now, who),
    UnholdRelease: lambda op, now, who: Unhold(now, who),
    PublishRelease: lambda op, now, who: Publish(now, who, None),
    CancelRelease: lambda op, now, who: Cancel(now, who, op.reason),
    EditRelease: lambda op, now, who: Edit(
        now, who, op.name, op.description, op.tags, op.studies, op.is_major
    ),
    AddNote: lambda op, now, who: NoteChange(now, who, op),
    EditNote: lambda op, now, who: NoteChange(now, who, op),
    RemoveNote: lambda op, now, who: NoteChange(now, who, op),
}
#: Operations that change something: carried out once, whatever the broker delivers again.
_CHANGES = frozenset({*_INPUTS, CreateRelease, RerunRelease})
#: The answer to a request that names no broker user: nothing is done without an actor to record.
NO_BROKER_USER = "refused: the request names no broker user (user_id): every change is recorded under one"
#: How many recent events a changed release is shown with.
_EVENTS_SHOWN: dict[type, int] = {AddNote: 1, EditNote: 1, RemoveNote: 1}


class Admin:
    def __init__(self, releases: Releases, creation: Creation, store: Store, *, clock: Clock) -> None:
        self.releases = releases
        self.creation = creation
        self.store = store
        self.clock = clock
        self.session: Session | None = None
        self._publish_lock = asyncio.Lock()
        self.handlers: dict[type, Handler] = {
            **{op: self._change for op in _INPUTS},
            CreateRelease: self._create,
            RerunRelease: self._rerun,
            ShowRelease: self._show_release,
            ListReleases: self._list,
            ListEvents: self._events,
            ListNotes: self._notes,
            ListStudies: self._studies,
            ShowStudy: self._study,
            ListServices: self._services,
            RequireService: self._require,
            UnrequireService: self._unrequire,
        }

    # ------------------------------------------------------------------ deliveries and answers

    async def on_delivery(self, delivery: Delivery) -> None:
        await settle_safely(delivery, self._handle)

    async def _handle(self, delivery: Delivery) -> None:
        if delivery.reply_to and not self.may_answer(delivery.reply_to):
            reason = f"refused: reply_to {delivery.reply_to!r} is not a reply queue an operator may own"
            await dead_letter(delivery, reason, None, self.store, self.clock())
            return
        try:
            request = decode(delivery.body, AdminRequest)
        except MessageError as error:
            await self._answer(delivery, "invalid", error=f"invalid request: {error.reason}")
            await delivery.ack()
            return
        if not delivery.user_id:
            await self._answer(delivery, request.message_id, error=NO_BROKER_USER)
            await delivery.ack()
            return
        try:
            result = await self.execute(request, delivery.user_id)
        except Refused as refusal:
            log.info("refused", user=delivery.user_id, op=request.operation.op, reason=str(refusal))
            await self._answer(delivery, request.message_id, error=str(refusal))
        else:
            await self._answer(delivery, request.message_id, result=result)
        await delivery.ack()

    def may_answer(self, reply_to: str) -> bool:
        """Answers go only to queues an operator's client makes: server-named, or ``<ns>.cli.*``."""
        return reply_to.startswith("amq.gen-") or reply_to.startswith(
            f"{self.releases.topology.namespace}.cli."
        )

    async def _answer(
        self,
        delivery: Delivery,
        in_reply_to: str,
        *,
        error: str | None = None,
        result: AdminResult | None = None,
    ) -> None:
        if not delivery.reply_to or self.session is None:
            return
        answer = AdminAnswer(
            message_id=uuid.uuid4().hex,
            sent_at=self.clock(),
            in_reply_to=in_reply_to,
            ok=error is None,
            error=error,
            result=result,
        )
        await self.session.answer(
            delivery.reply_to, delivery.correlation_id, encode(answer), answer.message_id
        )

    async def execute(self, request: AdminRequest, user: str) -> AdminResult:
        """Carry out one request from broker user ``user``, once: a request that already changed something
        (the broker delivered it again) is answered from what it did. :class:`Refused` with the reason when it
        cannot be carried out."""
        operation = request.operation
        caller = Caller(user, request.operator, request.message_id)
        if type(operation) in _CHANGES:
            earlier = await self.store.request_events(request.message_id)
            if earlier:
                return await self._answered_before(operation, earlier)
        return await self.handlers[type(operation)](operation, caller)

    async def _answered_before(self, op: Any, events: Sequence[AuditEvent]) -> ReleaseResult:
        """The answer to a request carried out before: the release it changed or made, or its refusal."""
        created = [e for e in events if e.kind is EventKind.CREATED]
        if created and created[0].release_id:
            return await self._show(created[0].release_id, 0)
        refused = next((e for e in events if e.kind is EventKind.REFUSED), None)
        if refused is not None:
            raise Refused(refused.reason.removeprefix(f"{op.op} refused: "))
        return await self._show(op.release_id, _EVENTS_SHOWN.get(type(op), 0))

    # ------------------------------------------------------------------ changes

    async def _change(self, op: Any, caller: Caller) -> ReleaseResult:
        """Apply an operator's change; a refusal is recorded in the audit trail, then raised."""
        change = _INPUTS[type(op)](op, self.clock(), caller.name)
        cause = Cause(change, caller.user, caller.name, caller.request_id)
        if isinstance(change, Publish):
            async with self._publish_lock:  # one final version at a time
                decision = await self.releases.apply(op.release_id, cause)
        else:
            decision = await self.releases.apply(op.release_id, cause)
        if decision is None:
            raise Refused(f"unknown release {op.release_id}")
        shown = _EVENTS_SHOWN.get(type(op), 0)
        if decision.applied or (decision.verdict is Verdict.DUPLICATE and isinstance(change, Edit)):
            return await self._show(op.release_id, shown)  # (an edit that changes nothing: already so)
        refusal = audit.audit_event(
            op.release_id,
            EventKind.REFUSED,
            f"{op.op} refused: {decision.reason}",
            at=self.clock(),
            actor=caller.user,
            label=caller.name,
            message_id=caller.request_id,
            state_before=decision.release.state,
        )
        await self.store.record([refusal])
        raise Refused(decision.reason)

    async def _create(self, op: CreateRelease, caller: Caller) -> ReleaseResult:
        release = await self.creation.create(op, caller)
        return await self._show(release.id, 0)

    async def _rerun(self, op: RerunRelease, caller: Caller) -> ReleaseResult:
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
        release = await self.creation.create(again, caller, rerun_of=original)
        link = audit.audit_event(
            original.id,
            EventKind.OPERATOR,
            f"re-run by {caller.name} as {release.id}",
            at=self.clock(),
            actor=caller.user,
            label=caller.name,
            event_id=f"{original.id}.rerun.{release.id}",
        )
        await self.store.record([link])
        return await self._show(release.id, 0)

    async def _require(self, op: RequireService, caller: Caller) -> ServiceList:
        if self.session is not None and (problem := await self.creation.declare_queue(op.service)):
            raise Refused(f"cannot require {op.service}: {problem}")
        await self.store.set_required(op.service, True, self.clock())
        return await self._services(ListServices(), caller)

    async def _unrequire(self, op: UnrequireService, caller: Caller) -> ServiceList:
        if await self.store.service(op.service) is None:
            raise Refused(f"unknown service {op.service}")
        await self.store.set_required(op.service, False, self.clock())
        return await self._services(ListServices(), caller)

    # ------------------------------------------------------------------ reads

    async def _show_release(self, op: ShowRelease, caller: Caller) -> ReleaseResult:
        return await self._show(op.release_id, op.events)

    async def _show(self, release_id: str, events: int) -> ReleaseResult:
        release = await self.releases.peek(release_id)
        if release is None:
            raise Refused(f"unknown release {release_id}")
        recent = (await self.store.event_page(release_id, events)).items if events else []
        return ReleaseResult(release=ReleaseView.of(release), events=tuple(recent))

    async def _list(self, op: ListReleases, caller: Caller) -> ReleasePage:
        page = await _paged(
            self.store.list_releases(op.limit, op.cursor, state=op.state, study=op.study, since=op.since)
        )
        return ReleasePage(releases=tuple(page.items), next_cursor=page.next_cursor)

    async def _events(self, op: ListEvents, caller: Caller) -> EventPage:
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

    async def _notes(self, op: ListNotes, caller: Caller) -> NotePage:
        page = await _paged(
            self.store.note_page(op.release_id, op.limit, op.cursor, study=op.study, since=op.since)
        )
        if page is None:
            raise Refused(f"unknown release {op.release_id}")
        return NotePage(release_id=op.release_id, notes=tuple(page.items), next_cursor=page.next_cursor)

    async def _studies(self, op: ListStudies, caller: Caller) -> StudyPage:
        page = await _paged(
            self.store.study_page(op.limit, op.cursor, prefix=op.study, state=op.state, since=op.since)
        )
        return StudyPage(studies=tuple(page.items), next_cursor=page.next_cursor)

    async def _study(self, op: ShowStudy, caller: Caller) -> StudyResult:
        summary, page = await _paged(
            asyncio.gather(
                self.store.study_summary(op.study),
                self.store.study_releases(op.study, op.limit, op.cursor, state=op.state, since=op.since),
            )
        )
        if summary is None:
            raise Refused(f"no release has included study {op.study}")
        return StudyResult(study=summary, releases=tuple(page.items), next_cursor=page.next_cursor)

    async def _services(self, op: ListServices, caller: Caller) -> ServiceList:
        return ServiceList(services=tuple(await self.store.all_services()))


async def _paged(query: Awaitable[T]) -> T:
    """A store query whose cursor came from an operator: a cursor the store did not hand out is refused."""
    try:
        return await query
    except BadCursor as error:
        raise Refused(str(error)) from None
