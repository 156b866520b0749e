"""What task services send: replies, progress and heartbeats, from the replies queue.

Each delivery is admitted (valid, routed as it says, signed by the service's own broker user) or
dead-lettered with the reason. Heartbeats update the registry. Replies and progress of one release are
applied together (:class:`coordinator.batches.KeyedBatcher`: one store write for all that waited), and
each delivery is then settled: acknowledged once its effect is stored, acknowledged and recorded when it
is a harmless duplicate, dead-lettered when it is out of order or names no release of this coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from coordinator import audit, metrics
from coordinator.admission import admit_reply
from coordinator.audit import Cause
from coordinator.batches import KeyedBatcher
from coordinator.broker import Delivery
from coordinator.deliveries import dead_letter, release_id_of, settle_safely
from coordinator.hooks import Hooks
from coordinator.instances import Instances
from coordinator.machine import Decision, HealthVerdict, Input, ProgressReceived, ReplyReceived, Verdict
from coordinator.releases import Releases
from coordinator.store import HeartbeatRecord, ReleaseWriter
from schemas.enums import EventKind, ReleaseState
from schemas.messages import Heartbeat, MessageError, Progress, TaskReply

log = structlog.get_logger("coordinator")
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Sent:
    """A reply or progress report, and the broker user that sent it."""

    message: TaskReply | Progress
    user: str


@dataclass(frozen=True)
class Decided:
    """A reply's decision, and when its effect is stored (acknowledge it only then)."""

    decision: Decision
    stored: asyncio.Future[None]


@dataclass(frozen=True)
class DeadLetter:
    """Why a message must be dead-lettered, and the release it named (if it named a real one)."""

    reason: str
    release_id: str | None


class Replies:
    def __init__(
        self,
        releases: Releases,
        store: ReleaseWriter,
        *,
        trusted_users: Collection[str],
        instances: Instances,
        clock: Clock,
        hooks: Hooks,
    ) -> None:
        self.releases = releases
        self.instances = instances
        self.store = store
        self.trusted_users = trusted_users
        self.clock = clock
        self.hooks = hooks
        self._batches: KeyedBatcher[Sent, Decided | DeadLetter] = KeyedBatcher(self._apply)
        #: Services whose heartbeats were refused, and why in words an operator can act on.
        self.refused_heartbeats: dict[str, str] = {}

    def _note_refused_heartbeat(self, routing_key: str, reason: str) -> None:
        """A refused heartbeat explains why its service looks silent: remember why, with the fix."""
        parts = routing_key.split(".")
        if len(parts) != 3 or parts[0] != "reply" or parts[2] != "heartbeat":
            return
        if reason.startswith("spoofed: "):
            reason = (
                f"heartbeats refused: {reason.removeprefix('spoofed: ')} (connect it as its own broker user, "
                "which rc-admin-setup makes; or, for development only, name that user in RC_TRUSTED_USERS)"
            )
        else:
            reason = f"heartbeats refused: {reason}"
        self.refused_heartbeats[parts[1]] = reason

    async def close(self) -> None:
        await self._batches.close()

    async def on_delivery(self, delivery: Delivery) -> None:
        await settle_safely(delivery, self._handle)

    async def _handle(self, delivery: Delivery) -> None:
        await self.hooks.received(delivery)
        try:
            message = admit_reply(delivery.body, delivery.routing_key, delivery.user_id, self.trusted_users)
        except MessageError as error:
            self._note_refused_heartbeat(delivery.routing_key, error.reason)
            await self.dead_letter(delivery, error.reason, release_id_of(delivery))
            return
        sender = delivery.user_id or message.service  # admitted: the broker vouched for user_id
        if not isinstance(message, TaskReply):  # heartbeats and progress say the instance is alive
            self.instances.heard(message.service, message.instance_id, self.clock())
        if isinstance(message, Heartbeat):
            self.refused_heartbeats.pop(message.service, None)
            await self._on_heartbeat(message, sender)
            metrics.MESSAGES.labels("heartbeat", "applied").inc()
            await delivery.ack()
            return
        outcome = await self._batches.submit(message.release_id, Sent(message, sender))
        if isinstance(outcome, DeadLetter):
            await self.dead_letter(delivery, outcome.reason, outcome.release_id)
        else:
            await self._settle(delivery, message, outcome)

    async def _apply(self, release_id: str, sent: Sequence[Sent]) -> list[Decided | DeadLetter]:
        """Apply the replies and progress waiting for one release together (one store write): each gets its
        decision, or why it must be dead-lettered."""
        unknown: list[Decided | DeadLetter] = [DeadLetter(f"unknown release {release_id}", None)] * len(sent)
        release = await self.releases.peek(release_id)
        if release is None:
            return unknown
        now = self.clock()
        causes = [
            Cause(_input_of(s.message, now), s.user) for s in sent if s.message.service in release.tasks
        ]
        # Acknowledged once stored: the commands they caused are published meanwhile, in order.
        applied = await self.releases.apply_replies(release_id, causes)
        if applied is None:
            return unknown
        decided, stored = applied
        decisions = iter(decided)
        return [
            Decided(next(decisions), stored)
            if s.message.service in release.tasks
            else DeadLetter(f"{s.message.service} is not in the service snapshot of {release_id}", release_id)
            for s in sent
        ]

    async def _settle(self, delivery: Delivery, message: TaskReply | Progress, decided: Decided) -> None:
        """Ack what was applied (once stored) or is a harmless duplicate; dead-letter what is out of order."""
        decision = decided.decision
        metrics.MESSAGES.labels(message.kind.value, decision.verdict.value).inc()
        if decision.applied:
            await asyncio.shield(decided.stored)  # raises if it never will be: delivered again, then
            await delivery.ack()
            return
        reason = f"{decision.verdict}: {decision.reason}"
        if decision.verdict is Verdict.DUPLICATE or isinstance(message, Progress):
            log.info(
                "ignored", release_id=message.release_id, service=message.service, reason=decision.reason
            )
            refusal = audit.audit_event(
                message.release_id,
                EventKind.REFUSED,
                reason,
                at=self.clock(),
                actor=delivery.user_id or message.service,
                service=message.service,
                message_id=message.message_id,
            )
            await self.store.record([refusal])
            await self.releases.outbox.send_once(message.release_id, decision.unstored)
            await delivery.ack()
            return
        await self.dead_letter(delivery, reason, message.release_id)

    async def _on_heartbeat(self, beat: Heartbeat, sender: str) -> None:
        now = self.clock()
        record = HeartbeatRecord(
            beat.service, beat.instance_id, beat.sdk_version, beat.healthy, beat.detail, now
        )
        await self.store.heartbeat(record)
        if beat.healthy:
            return
        verdict = HealthVerdict(now, {beat.service: beat.detail or "the service reports itself unhealthy"})
        for release_id in list(self.releases.deadlines):
            release = await self.releases.peek(release_id)
            if release and release.state is ReleaseState.INITIALIZING and beat.service in release.tasks:
                await self.releases.apply(release_id, Cause(verdict, sender))

    async def dead_letter(self, delivery: Delivery, reason: str, release_id: str | None) -> None:
        await dead_letter(delivery, reason, release_id, self.store, self.clock())


def _input_of(message: TaskReply | Progress, now: datetime) -> Input:
    return ReplyReceived(message, now) if isinstance(message, TaskReply) else ProgressReceived(message, now)
