"""The sweeper: what happens with no message to trigger it, every quarter of a second.

Deadlines that passed are checked (a silent service cancels or fails its release), a task whose
instance stopped heartbeating is started again elsewhere, and what the broker has not confirmed is
published again. An error (the store unreachable for a moment) is logged and the
next round tries again, later each time while it lasts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

import structlog

from coordinator.instances import Instances
from coordinator.machine import DeadlineCheck, InstanceLost
from coordinator.outbox import Outbox
from coordinator.releases import Releases

log = structlog.get_logger("coordinator")
PERIOD_SECONDS = 0.25


#: The services among those given whose instances all report every process slot busy.
BusyServices = Callable[[Collection[str]], Awaitable[frozenset[str]]]


async def sweep_forever(
    releases: Releases,
    outbox: Outbox,
    instances: Instances,
    clock: Callable[[], datetime],
    busy: BusyServices,
) -> None:
    failures = 0
    while True:
        await asyncio.sleep(PERIOD_SECONDS if not failures else backoff(failures))
        try:
            await sweep(releases, outbox, instances, clock(), busy)
        except Exception as error:
            failures += 1
            log.warning("sweep failed; trying again", error=repr(error), failures=failures)
        else:
            failures = 0


async def sweep(
    releases: Releases,
    outbox: Outbox,
    instances: Instances,
    now: datetime,
    busy: BusyServices,
) -> None:
    for release_id, deadline in list(releases.deadlines.items()):
        if deadline <= now:
            release = await releases.peek(release_id)
            services = release.tasks if release is not None else ()
            await releases.apply(release_id, DeadlineCheck(now, await busy(services)))
    for release_id, task in releases.processing():
        silent = instances.silent_for(task.service, task.instance or "", now)
        if silent is not None and task.instance is not None:
            why = f"stopped heartbeating ({int(silent.total_seconds())}s without one)"
            await releases.apply(release_id, InstanceLost(now, task.service, task.instance, why))
    for release_id in list(outbox.undelivered):
        await releases.redeliver(release_id)


def backoff(failures: int) -> float:
    """Seconds before trying again: 0.5 s, doubled for each failure in a row, at most 30 s."""
    return min(30.0, 0.5 * 2.0 ** max(0, failures - 1))
