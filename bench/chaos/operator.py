"""The chaos run's operator: it drives each release (create, then publish or cancel it once staged, as the
plan says) and injects the plan's faults on that release when it reaches their step."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from bench.chaos.common import TERMINAL, log
from bench.chaos_plan import STEPS, PlannedFault
from rc_cli.client import AdminClient, AdminClientError
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState
from schemas.messages import (
    AdminAnswer,
    AdminOperation,
    CancelRelease,
    CreateRelease,
    ListServices,
    PublishRelease,
    ReleaseResult,
    RequireService,
    ServiceList,
    ShowRelease,
)

if TYPE_CHECKING:
    from bench.chaos.faults import Injector
    from bench.chaos.run import Chaos

#: The step a release is at, by its state (before the operator's publish or cancel is answered).
_STEP_OF = {
    ReleaseState.WAITING: "created",
    ReleaseState.INITIALIZING: "created",
    ReleaseState.RUNNING: "processing",
    ReleaseState.STAGED: "staged",
    ReleaseState.PUBLISHING: "staged",
    ReleaseState.CANCELING: "staged",
}


class Hits:
    """The planned faults of one release, injected as it reaches their steps; a fault that finds nothing
    to act on is tried again at the next look, and a last time when the release ends."""

    def __init__(self, injector: Injector, planned: list[tuple[int, PlannedFault]], release_id: str) -> None:
        self.injector = injector
        self.pending = list(planned)
        self.release_id = release_id

    async def reach(self, step: str, seen: str) -> None:
        """Inject every pending fault planned at ``step`` or an earlier one."""
        for number, fault in list(self.pending):
            if STEPS.index(fault.step) > STEPS.index(step):
                continue
            if await self.injector.attempt(number, fault, self.release_id, seen, final=False):
                self.pending.remove((number, fault))

    async def finish(self, seen: str) -> None:
        """The release ended: every fault still pending is tried a last time (and recorded either way)."""
        for number, fault in self.pending:
            await self.injector.attempt(number, fault, self.release_id, seen, final=True)
        self.pending = []


class Operator:
    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos
        #: The releases driven, in creation order.
        self.release_ids: list[str] = []
        #: How each driven release is meant to end: published, or canceled on purpose once staged.
        self.planned: dict[str, ReleaseState] = {}
        #: Each driven release's number in the plan.
        self.numbers: dict[str, int] = {}

    async def admin(self, operation: AdminOperation, *, patience: float = 60) -> AdminAnswer:
        """Ask until some coordinator answers (it may be dead, restarting, or cut off)."""
        chaos = self.chaos
        deadline = time.monotonic() + patience
        while True:
            try:
                url = chaos.url(chaos.installation.operator_user, direct=True)
                async with AdminClient(url, chaos.namespace, timeout=5, operator="chaos") as client:
                    return await client.request(operation)
            except AdminClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def require_services(self, within: float = 180) -> None:
        """Require every service, then wait until every instance of each was heard from and the
        coordinator holds each healthy (a release created earlier would be canceled as unhealthy)."""
        chaos = self.chaos
        for service in chaos.services:
            await self.admin(RequireService(service=service))
        deadline = time.monotonic() + within
        while True:
            answer = await self.admin(ListServices())
            records = answer.result.services if isinstance(answer.result, ServiceList) else ()
            ready = {
                s.name
                for s in records
                if s.healthy and s.last_heartbeat_at and len(s.instances) >= chaos.config.instances
            }
            if ready >= set(chaos.services):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"services not ready within {within:.0f} s: {set(chaos.services) - ready}")
            await asyncio.sleep(0.5)

    async def drive_all(self) -> None:
        gate = asyncio.Semaphore(self.chaos.config.concurrency)

        async def drive(number: int) -> None:
            async with gate:
                await self.drive(number)

        await asyncio.gather(*(drive(n) for n in range(self.chaos.config.releases)))

    async def drive(self, number: int) -> None:
        """Create release ``number``, inject its faults step by step, publish or cancel it once staged."""
        plan = self.chaos.plan
        answer = await self.admin(CreateRelease(name=f"chaos {number}", studies=("SD_CHAOS001",)))
        if not answer.ok or not isinstance(answer.result, ReleaseResult):
            log(f"release {number}: create refused: {answer.error}")
            return
        release_id = answer.result.release.id
        self.release_ids.append(release_id)
        self.numbers[release_id] = number
        cancel_it = number in plan.cancels
        self.planned[release_id] = ReleaseState.CANCELED if cancel_it else ReleaseState.PUBLISHED
        hits = Hits(self.chaos.injector, plan.of(number), release_id)
        await hits.reach("created", "created")
        decided = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = await self.view(release_id)
            if view is not None and view.state in TERMINAL:
                await hits.finish(view.state.value)
                final = view.final_version or ""
                log(f"release {number} {release_id}: {view.state} {final} {view.state_reason}")
                return
            if view is not None and view.state in _STEP_OF:
                await hits.reach(_STEP_OF[view.state], view.state.value)
            if view is not None and view.state is ReleaseState.STAGED:
                decision = "cancel" if cancel_it else "publish"
                if cancel_it:
                    await self.admin(CancelRelease(release_id=release_id, reason="chaos operator"))
                else:
                    await self.admin(PublishRelease(release_id=release_id))
                if not decided:
                    decided = True
                    await hits.reach("ending", f"{decision} answered")
            await asyncio.sleep(0.3)
        log(f"release {number} {release_id}: not finished within its driver's time")

    async def view(self, release_id: str) -> ReleaseView | None:
        answer = await self.admin(ShowRelease(release_id=release_id, events=0))
        return answer.result.release if isinstance(answer.result, ReleaseResult) else None
