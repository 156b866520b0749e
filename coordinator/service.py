"""The coordinator: one replica leads at a time, the others stand by; the leader wires the parts together.

A session is one broker connection. The replica that takes the leader lock declares the topology,
replays what a previous leader stored but may not have sent (:meth:`Coordinator._recover`), consumes the
replies and admin queues, and sweeps deadlines until the connection is lost or it is told to stop; then it
starts a new session (backing off while sessions end by errors). The parts:

* :mod:`coordinator.releases` applies inputs to releases (decide, store, deliver);
* :mod:`coordinator.replies` admits and settles what services send;
* :mod:`coordinator.admin` carries out operators' requests, :mod:`coordinator.creation` new releases;
* :mod:`coordinator.sweeper` fires deadlines and retries deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from coordinator import metrics
from coordinator.admin import Admin
from coordinator.broker import Broker, BrokerUnreachable, NotLeader, Session
from coordinator.creation import Creation
from coordinator.hooks import Hooks
from coordinator.instances import Instances
from coordinator.outbox import Outbox
from coordinator.releases import Releases
from coordinator.replies import Replies
from coordinator.settings import Settings, running_event_loop
from coordinator.store import Store
from coordinator.sweeper import backoff, sweep_forever
from schemas.enums import ReleaseState
from schemas.messages import AdminRequest, AdminResult
from schemas.topology import Topology

log = structlog.get_logger("coordinator")
Clock = Callable[[], datetime]
#: Seconds between attempts to take the lead while another replica holds it.
STANDBY_SECONDS = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Coordinator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: Broker,
        clock: Clock = utcnow,
        hooks: Hooks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.topology = Topology(settings.namespace)
        hooks = hooks or Hooks()
        self.instances = Instances(settings.heartbeat_timeout)
        self.outbox = Outbox(self.instances, self.topology, clock)
        self.releases = Releases(
            store,
            self.outbox,
            timeouts=settings.timeouts,
            topology=self.topology,
            clock=clock,
            hooks=hooks,
            write_delay=settings.reply_write_delay,
        )
        self.replies = Replies(
            self.releases,
            store,
            trusted_users=settings.trusted_users,
            instances=self.instances,
            clock=clock,
            hooks=hooks,
        )
        self.creation = Creation(
            self.releases, store, heartbeat_timeout=settings.heartbeat_timeout, clock=clock
        )
        self.creation.refused_heartbeats = self.replies.refused_heartbeats  # one record, two readers
        self.admin = Admin(self.releases, self.creation, store, clock=clock)
        self.clock = clock
        self.session: Session | None = None
        #: Set while this replica leads.
        self.active = asyncio.Event()

    async def execute(self, request: AdminRequest, actor: str) -> AdminResult:
        """Carry out an operator's request in this process (what the admin queue's consumer does)."""
        return await self.admin.execute(request, actor)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set: stand by while another replica leads, lead otherwise."""
        _warn_if_trusted_users(self.settings.trusted_users)
        standing_by = False
        failures = 0  # sessions in a row that ended by an error
        while not stop.is_set():
            try:
                session = await self.broker.connect(f"rc-coordinator@{self.settings.instance}")
            except BrokerUnreachable as error:
                log.warning("broker unreachable", error=str(error))
                await _sleep_or_stop(stop, 2.0)
                continue
            try:
                await session.acquire_leadership()
            except NotLeader:
                if not standing_by:
                    log.info("standby", reason="another coordinator is active; waiting to take over")
                    standing_by = True
                await session.close()
                await _sleep_or_stop(stop, STANDBY_SECONDS)
                continue
            standing_by = False
            failures = await self._session(session, stop, failures)
            await _sleep_or_stop(stop, backoff(failures))

    async def _session(self, session: Session, stop: asyncio.Event, failures: int) -> int:
        """Lead until the session ends; the number of sessions in a row that ended by an error."""
        try:
            await self._lead(session, stop)
            return 0
        except Exception as error:
            if failures == 0:
                log.exception("session ended by an error; starting a new one")
            else:  # the traceback was logged once; say it again only in short
                log.error("session ended by an error again", error=repr(error), failures=failures + 1)
            return failures + 1
        finally:
            self.active.clear()
            metrics.IS_ACTIVE.set(0)
            self._attach(None)
            with contextlib.suppress(Exception):
                await session.close()

    def _attach(self, session: Session | None) -> None:
        self.session = self.outbox.session = self.creation.session = self.admin.session = session

    async def _lead(self, session: Session, stop: asyncio.Event) -> None:
        self._attach(session)
        self.releases.forget()
        self.outbox.clear()
        self.instances.lead(self.clock())
        await session.declare_topology()
        for service in await self.store.required_services():
            await self.creation.declare_queue(service)  # a queue in a bad way is reported, not fatal
        await self._recover()
        await session.consume(self.topology.replies_queue, self.replies.on_delivery)
        await session.consume(self.topology.admin_queue, self.admin.on_delivery)
        self.active.set()
        metrics.IS_ACTIVE.set(1)
        log.info(
            "active",
            namespace=self.settings.namespace,
            broker=self.broker.location,
            event_loop=running_event_loop(),
        )
        sweeper = asyncio.create_task(
            sweep_forever(self.releases, self.outbox, self.instances, self.clock, self.creation.busy)
        )
        lost = asyncio.create_task(session.closed())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                log.warning("broker connection lost; reconnecting")
        finally:
            for task in (sweeper, lost, stopped):
                task.cancel()
            await asyncio.gather(sweeper, lost, stopped, return_exceptions=True)
            await self.releases.store_all_held()  # their replies are acknowledged while the channel lasts
            await self.replies.close()
            await self.releases.stop_publishing(grace=self.settings.broker_publish_timeout)

    async def _recover(self) -> None:
        """Replay what a previous run stored but may not have sent, re-arm deadlines, begin what waits."""
        replayed = 0
        open_releases = await self.store.open_releases()
        for release in open_releases:
            self.releases.remember(release)
            replayed += len(release.outbox)
            await self.releases.deliver(release)
            self.releases.arm(release)
            if release.state is ReleaseState.WAITING:
                await self.creation.begin(release.id)
        for state, count in (await self.store.count_by_state()).items():
            metrics.RELEASES_BY_STATE.labels(state.value).set(count)
        log.info("recovered", replayed_messages=replayed, open_releases=len(open_releases))


def _warn_if_trusted_users(users: frozenset[str]) -> None:
    """Trusted users may answer for any service: a development switch that must never go unnoticed."""
    if users:
        log.warning(
            "trusted users set: their replies are accepted for any service (development only; "
            "unset RC_TRUSTED_USERS in production)",
            trusted_users=sorted(users),
        )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
