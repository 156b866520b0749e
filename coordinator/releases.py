"""Applying inputs to releases: the one path by which a release changes.

For a release and some inputs (replies, progress, a deadline, an operator's request): take the release
(cached while this coordinator leads, else read), run the pure state machine over the inputs in order,
store the result with one compare-and-set (outbox and audit events in the same write; a lost race means
read again and decide again), then publish the outbox. An input is done once its effect is stored: what
the broker did not confirm is published again by the sweeper.

Replies need not wait for the broker's confirmations of what they caused (``deliver_later``): their
release's outbox is then published by a task of its own, and the next input of that release waits for
that task before it is decided, so a release's publications and decisions never overlap. A reply that
leaves its release in its step and causes nothing to publish may wait up to ``write_delay`` to be stored
with the next input's write (:mod:`coordinator.unstored`); its delivery is acknowledged only after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import datetime

import structlog

from coordinator import audit, metrics
from coordinator.audit import Cause
from coordinator.hooks import Hooks
from coordinator.machine import Decision, Input, Publish, Timeouts, decide, next_deadline
from coordinator.outbox import Outbox
from coordinator.store import ReleaseWriter, StaleRevision, VersionTaken
from coordinator.unstored import Fold, Unstored
from schemas.documents import AuditEvent, Release, Task
from schemas.enums import ReleaseState, TaskState
from schemas.topology import Topology

log = structlog.get_logger("coordinator")
Clock = Callable[[], datetime]
#: Lost compare-and-set races in a row before giving up on an input (it is then delivered again).
_CAS_ATTEMPTS = 20


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


class Releases:
    def __init__(
        self,
        store: ReleaseWriter,
        outbox: Outbox,
        *,
        timeouts: Timeouts,
        topology: Topology,
        clock: Clock,
        hooks: Hooks,
        write_delay: float = 0.0,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.timeouts = timeouts
        self.topology = topology
        self.clock = clock
        self.hooks = hooks
        self.locks = KeyedLocks()
        #: When each open release must next be given a deadline check.
        self.deadlines: dict[str, datetime] = {}
        #: Open releases as last stored by this coordinator, the only writer while it leads. A
        #: compare-and-set that finds the store moved on drops the entry: a stale copy costs a retry,
        #: never a wrong write.
        self._cache: dict[str, Release] = {}
        #: Per release, the publication of its outbox still running after the inputs that caused it were
        #: settled (``deliver_later``); at most one per release.
        self._publishing: dict[str, asyncio.Task[None]] = {}
        #: Seconds a reply that leaves its release in its step may wait to be stored with the next ones.
        self.write_delay = write_delay
        #: Per release, the replies decided since its last write whose own write waits.
        self._unstored: dict[str, Unstored] = {}

    def forget(self) -> None:
        """A new session: another coordinator may have led since this one last did."""
        for unstored in self._unstored.values():
            unstored.lost(ConnectionError("the session ended before these replies were stored"))
        self._unstored.clear()
        self._cache.clear()
        self.deadlines.clear()

    async def stop_publishing(self, grace: float = 0) -> None:
        """The session ends: let the publications still running finish for at most ``grace`` seconds (what
        the broker confirmed is then recorded, and not sent again), then stop the rest (their outbox is
        stored; the next session publishes it again)."""
        tasks = list(self._publishing.values())
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._publishing.clear()

    async def apply(self, release_id: str, cause: Input | Cause) -> Decision | None:
        """Decide and store one input for one release, then deliver what it caused. None: unknown release."""
        decisions = await self.apply_all(release_id, [cause if isinstance(cause, Cause) else Cause(cause)])
        return None if decisions is None else decisions[0]

    async def apply_all(
        self, release_id: str, causes: Sequence[Cause], *, deliver_later: bool = False
    ) -> list[Decision] | None:
        """Decide inputs for one release in order and store them with one compare-and-set (deciding again
        after a lost race), then deliver what they caused: before returning, or with ``deliver_later`` in
        a task of its own that the release's next input waits for. None: unknown release."""
        applied = await self._apply(release_id, causes, deliver_later=deliver_later, may_wait=False)
        return None if applied is None else applied[0]

    async def apply_replies(
        self, release_id: str, causes: Sequence[Cause]
    ) -> tuple[list[Decision], asyncio.Future[None]] | None:
        """:meth:`apply_all` with ``deliver_later`` for replies, whose write may wait up to
        ``write_delay`` for the next ones when they leave their release in its step
        (:mod:`coordinator.unstored`). The future is done once their effect is stored: acknowledge them
        only then. None: unknown release."""
        return await self._apply(release_id, causes, deliver_later=True, may_wait=self.write_delay > 0)

    async def _apply(
        self, release_id: str, causes: Sequence[Cause], *, deliver_later: bool, may_wait: bool
    ) -> tuple[list[Decision], asyncio.Future[None]] | None:
        await self.hooks.storing(release_id, [cause.input for cause in causes])
        async with self.locks.hold(release_id):
            await self._published(release_id)
            for _ in range(_CAS_ATTEMPTS):
                release = await self.load(release_id)
                if release is None:
                    return None
                fold = await self._fold(release, causes)
                if not fold.applied:
                    return fold.decisions, _done()
                if may_wait and fold.is_quiet(release):
                    return fold.decisions, self._hold(release_id, release, fold).durable
                unstored = self._unstored.pop(release_id, None)
                before, write = (release, fold) if unstored is None else (unstored.stored, unstored.fold)
                if unstored is not None:
                    unstored.fold.extend(fold)
                if not await self._write(before, write, unstored):
                    continue  # a lost race: read again and decide again
                await self._after_write(before, write, deliver_later=deliver_later)
                return fold.decisions, _done()
        raise RuntimeError(f"{release_id}: gave up after {_CAS_ATTEMPTS} lost races")

    async def _write(self, before: Release, write: Fold, unstored: Unstored | None) -> bool:
        """Store ``write`` over ``before``; False: another writer moved the release on. Replies whose write
        waited (``unstored``) are stored with it, or lost with it (they are then delivered again)."""
        try:
            await self.store.compare_and_set(before, write.release, write.audit)
        except (StaleRevision, VersionTaken) as error:  # VersionTaken: read the highest final version again
            self._cache.pop(before.id, None)
            if unstored is not None:
                unstored.lost(error)
            return False
        except BaseException as error:
            if unstored is not None:
                self._cache.pop(before.id, None)  # it holds what was not stored
                unstored.lost(error)
            raise
        if unstored is not None:
            unstored.stored_now()
        return True

    async def _after_write(self, before: Release, write: Fold, *, deliver_later: bool) -> None:
        self._cache[before.id] = write.release
        for prior, decision, cause in write.applied:
            self._observe(prior, decision, cause)
        _log_stored(before, write)
        self.arm(write.release)  # once per write: finding the next deadline reads every task
        await self.hooks.stored(write.release)
        if deliver_later and write.release.outbox:
            self._publish_later(write.release)
        else:
            await self._deliver_or_leave(write.release)

    def _hold(self, release_id: str, release: Release, fold: Fold) -> Unstored:
        """Keep ``fold`` in memory until the delay is over or the release's next write. Under its lock."""
        unstored = self._unstored.get(release_id)
        if unstored is None:
            unstored = Unstored(release, Fold(release))  # nothing held yet: ``release`` is as stored
            unstored.timer = asyncio.get_running_loop().create_task(
                self._store_later(release_id, unstored), name=f"store-later:{release_id}"
            )
            self._unstored[release_id] = unstored
        unstored.fold.extend(fold)
        # Not armed here: a reply that leaves its release in its step moves no deadline earlier, and the
        # write that stores it arms (a deadline check meanwhile decides on this cached release).
        self._cache[release_id] = fold.release
        return unstored

    async def _store_later(self, release_id: str, unstored: Unstored) -> None:
        await asyncio.sleep(self.write_delay)
        await self.store_held(release_id, unstored)

    async def store_held(self, release_id: str, unstored: Unstored | None = None) -> None:
        """Store the replies of this release whose write waits (``unstored``: only if still those)."""
        async with self.locks.hold(release_id):
            held = self._unstored.get(release_id)
            if held is None or (unstored is not None and held is not unstored):
                return
            del self._unstored[release_id]
            try:
                stored = await self._write(held.stored, held.fold, held)
            except Exception as error:  # lost with it: its replies are delivered again
                log.warning("storing replies failed", release_id=release_id, error=repr(error))
                return
            if stored:
                await self._after_write(held.stored, held.fold, deliver_later=True)

    async def store_all_held(self) -> None:
        """Store now every write that waits (the session ends)."""
        for release_id in list(self._unstored):
            await self.store_held(release_id)

    async def _fold(self, release: Release, causes: Sequence[Cause]) -> Fold:
        """Run the pure state machine over the inputs, each seeing the result of the one before."""
        fold = Fold(release)
        for cause in causes:
            cause = replace(cause, input=await self._refresh(cause.input))
            decision = decide(fold.release, cause.input, self.timeouts, self.topology)
            if decision.applied:
                fold.audit.append(audit.of_decision(fold.release.state, decision, cause))
                fold.applied.append((fold.release, decision, cause.input))
                fold.release = decision.release
            fold.decisions.append(decision)
        return fold

    async def _refresh(self, cause: Input) -> Input:
        """Publishing needs the highest final version as of now, read on every attempt."""
        if isinstance(cause, Publish):
            return Publish(cause.now, cause.operator, await self.store.highest_final_version())
        return cause

    async def load(self, release_id: str) -> Release | None:
        """The release as stored, from the cache when this coordinator wrote it last. Under its lock."""
        cached = self._cache.get(release_id)
        if cached is not None:
            return cached
        release = await self.store.get(release_id)
        if release is not None:
            self._cache[release_id] = release
        return release

    async def peek(self, release_id: str) -> Release | None:
        """The release for reading what does not change (its services), without its lock."""
        return self._cache.get(release_id) or await self.store.get(release_id)

    def processing(self) -> list[tuple[str, Task]]:
        """The running tasks of cached running releases that an instance has taken on."""
        return [
            (release.id, task)
            for release in list(self._cache.values())
            if release.state is ReleaseState.RUNNING
            for task in release.tasks.values()
            if task.state is TaskState.RUNNING and task.instance is not None
        ]

    def remember(self, release: Release) -> None:
        """A release this coordinator has just inserted."""
        self._cache[release.id] = release

    async def insert(self, release: Release, created: AuditEvent, then: Input | None = None) -> Release:
        """Store a new release, with ``then`` (its begin) decided on it in the same write if given, then
        deliver what that caused. :class:`VersionTaken`: its sequence or a version was taken meanwhile."""
        causes = [Cause(then)] if then is not None else []
        await self.hooks.storing(release.id, [cause.input for cause in causes])
        async with self.locks.hold(release.id):
            fold = await self._fold(release, causes)
            await self.store.insert(fold.release, [created, *fold.audit])
            metrics.RELEASES_BY_STATE.labels(release.state.value).inc()
            if fold.applied:  # caches the release begun, and delivers its commands
                await self._after_write(release, fold, deliver_later=False)
            else:
                self.remember(release)
            return fold.release

    async def deliver(self, release: Release) -> None:
        """Publish the outbox and tell the store what the broker confirmed. Under the release's lock."""
        confirmed = set(await self.outbox.publish(release))
        await self.store.delivered(release.id, confirmed)
        left = tuple(e for e in release.outbox if e.message_id not in confirmed)
        self.outbox.count(release.id, len(left))
        if release.state.is_terminal and not left:
            self._cache.pop(release.id, None)  # nothing more will happen to it
        elif self._cache.get(release.id) is release:
            self._cache[release.id] = release.model_copy(update={"outbox": left})

    def _publish_later(self, release: Release) -> None:
        task = asyncio.get_running_loop().create_task(
            self._deliver_or_leave(release), name=f"deliver:{release.id}"
        )
        self._publishing[release.id] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._publishing.get(release.id) is task:
                del self._publishing[release.id]

        task.add_done_callback(done)

    async def _published(self, release_id: str) -> None:
        """Wait for the release's publication still running, if any. Under the release's lock."""
        task = self._publishing.get(release_id)
        if task is not None:
            await asyncio.wait({task})  # whatever its end; a caller that gives up does not stop it

    async def _deliver_or_leave(self, release: Release) -> None:
        try:
            await self.deliver(release)
        except Exception as error:  # stored, so the input is done; the sweeper delivers the rest
            self.outbox.count(release.id, max(1, len(release.outbox)))
            log.warning("delivery failed; will retry", release_id=release.id, error=repr(error))

    async def redeliver(self, release_id: str) -> None:
        """Publish again what the broker has not confirmed yet."""
        async with self.locks.hold(release_id):
            await self._published(release_id)
            release = await self.load(release_id)
            if release is not None:
                await self.deliver(release)

    def arm(self, release: Release) -> None:
        deadline = next_deadline(release)
        if deadline is None:
            self.deadlines.pop(release.id, None)
        else:
            self.deadlines[release.id] = deadline

    def _observe(self, before: Release, decision: Decision, cause: Input) -> None:
        after = decision.release
        if before.state is not after.state:
            metrics.TRANSITIONS.labels(after.state.value).inc()
            metrics.RELEASES_BY_STATE.labels(before.state.value).dec()
            metrics.RELEASES_BY_STATE.labels(after.state.value).inc()
            entered = before.entered.get(before.state)
            if entered is not None:
                metrics.STEP_SECONDS.labels(before.state.value).observe(
                    (self.clock() - entered).total_seconds()
                )
        log.debug(  # one info line per stored write instead (_log_stored)
            "decision",
            release_id=after.id,
            verdict=decision.verdict.value,
            state_before=before.state.value,
            state_after=after.state.value,
            reason=decision.reason,
            service=audit.service_of(cause),
            message_id=audit.message_id_of(cause),
            commands=len(decision.messages),
        )


def _log_stored(before: Release, fold: Fold) -> None:
    """One info line per stored write: what its inputs did to the release (each one is logged at debug
    level, and recorded in the audit trail)."""
    verdicts: dict[str, int] = {}
    for decision in fold.decisions:
        verdicts[decision.verdict.value] = verdicts.get(decision.verdict.value, 0) + 1
    log.info(
        "stored",
        release_id=before.id,
        state_before=before.state.value,
        state_after=fold.release.state.value,
        inputs=len(fold.decisions),
        verdicts=verdicts,
        commands=sum(len(decision.messages) for _, decision, _ in fold.applied),
    )


def _done() -> asyncio.Future[None]:
    """A future already done: what was decided is stored (or there was nothing to store)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
