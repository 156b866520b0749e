"""New releases: the snapshot of required services, the tentative version, and the health check at start.

Every required service is checked first (a consumer on its queue, a recent heartbeat, healthy by its own
account), then the release is inserted with the required services of the moment and a tentative version
taken from the last created release (a unique index makes a concurrent creation retry with the next one),
already begun: the machine initializes it, or cancels it naming the unhealthy services, in the same write.
Only when a service may just have gone busy does the release wait in the store (``waiting``) while that
service is asked again; a coordinator that stops meanwhile begins it at its next start.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from coordinator import audit
from coordinator.broker import QueueUnusable, Session
from coordinator.machine import Begin
from coordinator.releases import Releases
from coordinator.store import ReleaseWriter, VersionTaken
from coordinator.versioning import next_tentative
from schemas.documents import Release, ServiceRecord, Task
from schemas.enums import EventKind, ReleaseState
from schemas.messages import BUSY_DETAIL, CreateRelease

log = structlog.get_logger("coordinator")
Clock = Callable[[], datetime]
_ID_ALPHABET = string.ascii_uppercase + string.digits
_CREATE_ATTEMPTS = 20
_NO_CONSUMER = "no consumer on its queue"


class Refused(Exception):
    """An operator request that cannot be carried out; the text is the answer's reason."""


@dataclass(frozen=True)
class Caller:
    """Who asked: the broker user the request came from (the actor of the audit trail), the name the
    operator gives (the author of what they create, a label beside the actor), and the request's id."""

    user: str
    name: str
    request_id: str | None = None


class Creation:
    def __init__(
        self, releases: Releases, store: ReleaseWriter, *, heartbeat_timeout: timedelta, clock: Clock
    ) -> None:
        self.releases = releases
        self.store = store
        self.heartbeat_timeout = heartbeat_timeout
        self.clock = clock
        self.session: Session | None = None
        #: Services whose queue could not be declared as it must be, and why (asked again at each begin).
        self.queue_problems: dict[str, str] = {}
        #: Services whose heartbeats the coordinator refused, and why (cleared by one it accepts).
        self.refused_heartbeats: dict[str, str] = {}
        #: How long a queue without consumer, whose instances last said "healthy", may take to say busy.
        self.busy_grace = timedelta(seconds=2)
        self._lock = asyncio.Lock()

    async def declare_queue(self, service: str) -> str | None:
        """Declare the service's queue; why it cannot be (also remembered for the health check), or None."""
        assert self.session is not None, "declaring needs a broker session"
        try:
            await self.session.declare_task_queue(service)
        except QueueUnusable as problem:
            self.queue_problems[service] = str(problem)
            log.warning("queue unusable", service=service, reason=str(problem))
            return str(problem)
        self.queue_problems.pop(service, None)
        return None

    async def create(self, op: CreateRelease, caller: Caller, *, rerun_of: Release | None = None) -> Release:
        required = await self.store.required_services()
        if not required:
            raise Refused("no service is required yet: require at least one first (rc service require NAME)")
        # The health check asks the broker while the store finds the last release: their waits overlap.
        checking = asyncio.ensure_future(self._first_check(required))
        try:
            async with self._lock:
                release = await self._insert(op, caller, required, rerun_of, checking)
        except BaseException:
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)
            raise
        log.info("created", release_id=release.id, version=release.tentative_version, services=required)
        verdicts, unsure = checking.result()
        if unsure:
            verdicts = await self._ask_again(verdicts, unsure)
            await self.releases.apply(release.id, Begin(self.clock(), verdicts))
        return release

    async def _insert(
        self,
        op: CreateRelease,
        caller: Caller,
        required: list[str],
        rerun_of: Release | None,
        checking: asyncio.Future[tuple[dict[str, str], list[str]]],
    ) -> Release:
        """Insert the new release. Each service known healthy or not, it is stored begun (initializing,
        or canceled naming the unhealthy), one write; if services may just have gone busy, waiting."""
        rerun = f" as a re-run of {rerun_of.id}" if rerun_of else ""
        for _ in range(_CREATE_ATTEMPTS):
            last = await self.store.last_created()
            verdicts, unsure = await checking
            now = self.clock()
            release = Release(
                id="RE_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8)),
                seq=(last.seq + 1) if last else 1,
                name=op.name,
                description=op.description,
                studies=op.studies,
                tags=op.tags,
                author=caller.name,
                is_major=op.is_major,
                rerun_of=rerun_of.id if rerun_of else None,
                tentative_version=next_tentative(last.version if last else None),
                tasks={s: Task(service=s) for s in required},
                entered={ReleaseState.WAITING: now},
                created_at=now,
                updated_at=now,
            )
            created = audit.audit_event(
                release.id,
                EventKind.CREATED,
                f"created by {caller.name}{rerun} with services {', '.join(required)}",
                at=now,
                actor=caller.user,
                label=caller.name,
                event_id=f"{release.id}.r0",
                message_id=caller.request_id,
                state_after=ReleaseState.WAITING,
            )
            begin = None if unsure else Begin(now, verdicts)
            try:
                return await self.releases.insert(release, created, begin)
            except VersionTaken:
                continue
        raise Refused("could not assign a version: too many concurrent creations, try again")

    async def begin(self, release_id: str) -> None:
        """Initialize a waiting release, or cancel it naming the unhealthy services."""
        release = await self.releases.peek(release_id)
        if release is None:
            return
        unhealthy = await self.unhealthy(list(release.tasks))
        await self.releases.apply(release_id, Begin(self.clock(), unhealthy))

    def _alive(self, record: ServiceRecord | None, now: datetime) -> bool:
        """Its instances sent a recent heartbeat that said healthy."""
        return (
            record is not None
            and record.healthy
            and record.last_heartbeat_at is not None
            and now - record.last_heartbeat_at <= self.heartbeat_timeout
        )

    def _busy(self, record: ServiceRecord | None, now: datetime) -> bool:
        """Its instances are alive and every process slot is busy: they consume again once one frees."""
        return (
            self._alive(record, now)
            and record is not None
            and (record.health_detail or "").startswith(BUSY_DETAIL)
        )

    async def busy(self, services: Collection[str]) -> frozenset[str]:
        """The services whose live instances report every process slot busy."""
        records = await self.store.services_named(list(services))
        now = self.clock()
        return frozenset(s for s in services if self._busy(records.get(s), now))

    async def unhealthy(self, services: list[str]) -> dict[str, str]:
        """Why each unhealthy service is: no consumer on its queue, or missed heartbeats."""
        verdicts, unsure = await self._first_check(services)
        return await self._ask_again(verdicts, unsure) if unsure else verdicts

    async def _first_check(self, services: list[str]) -> tuple[dict[str, str], list[str]]:
        """Why each unhealthy service is, and which of them to ask again after :attr:`busy_grace`: a
        queue without consumer whose instances' last word was "healthy, idle". An instance says it is
        busy just before its consumer goes, and that heartbeat may still wait in the replies queue."""
        verdicts, records = await self._check(services)
        now = self.clock()
        unsure = [
            service
            for service, why in verdicts.items()
            if why.startswith(_NO_CONSUMER) and self._alive(records.get(service), now)
        ]
        return verdicts, unsure

    async def _ask_again(self, verdicts: dict[str, str], unsure: list[str]) -> dict[str, str]:
        """``verdicts`` with those of ``unsure`` checked again after :attr:`busy_grace`."""
        await asyncio.sleep(self.busy_grace.total_seconds())
        again, _ = await self._check(unsure)
        verdicts = {s: why for s, why in verdicts.items() if s not in unsure}
        return verdicts | {s: again[s] for s in unsure if s in again}

    async def _check(self, services: list[str]) -> tuple[dict[str, str], dict[str, ServiceRecord]]:
        assert self.session is not None, "begin needs a broker session"
        verdicts: dict[str, str] = {}
        now = self.clock()
        # The broker's counts and the store's records are independent: their round trips overlap.
        consumers, records = await asyncio.gather(
            self.session.consumer_counts(services), self.store.services_named(services)
        )
        for service in services:
            record = records.get(service)
            if service in self.queue_problems and (problem := await self.declare_queue(service)):
                verdicts[service] = problem
            elif not consumers[service] and not self._busy(record, now):
                verdicts[service] = f"{_NO_CONSUMER}: start it, or rc service unrequire {service}"
            elif service in self.refused_heartbeats:
                verdicts[service] = self.refused_heartbeats[service]
            elif record is None or record.last_heartbeat_at is None:
                verdicts[service] = "never sent a heartbeat: is it the task SDK's, on this namespace?"
            elif now - record.last_heartbeat_at > self.heartbeat_timeout:
                age = int((now - record.last_heartbeat_at).total_seconds())
                verdicts[service] = (
                    f"missed heartbeats (the last {age}s ago): is it stuck, or cut from the broker?"
                )
            elif not record.healthy:
                verdicts[service] = f"reports itself unhealthy: {record.health_detail or 'no detail'}"
        return verdicts, records
