"""Move an installation from one store to another (``rc-coordinator store copy``).

Everything is copied as it is: releases with their notes, tasks and undelivered outbox, the whole audit
trail, and the service registry. The target must be empty, so a copy never mixes two installations;
counts are compared at the end. Run it with the coordinator stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from coordinator.store._interface import Store, StoreCounts


class CopyRefused(Exception):
    """The copy cannot start, or its result does not match the source."""


async def copy_store(
    source: Store, target: Store, *, batch: int = 500, progress: Callable[[str], None] = lambda line: None
) -> StoreCounts:
    """Copy ``source`` into the empty ``target``; returns the counts, verified on both sides."""
    expected = await source.counts()
    found = await target.counts()
    if not found.empty:
        raise CopyRefused(
            f"the target {target.location} is not empty ({found.releases} releases, {found.events} events, "
            f"{found.services} services): copy into an empty store"
        )
    report = _Progress(progress)
    progress(
        f"copying {expected.releases} releases, {expected.events} events and {expected.services} services "
        f"from {source.location} to {target.location}"
    )
    copied = 0
    async for releases in source.export_releases(batch):
        await target.import_batch(releases, (), ())
        copied += len(releases)
        report("releases", copied, expected.releases)
    copied = 0
    async for events in source.export_events(batch):
        await target.import_batch((), events, ())
        copied += len(events)
        report("events", copied, expected.events)
    services = await source.all_services()
    await target.import_batch((), (), services)
    report("services", len(services), expected.services, last=True)
    return await _verified(source, target, expected)


async def _verified(source: Store, target: Store, expected: StoreCounts) -> StoreCounts:
    now = await source.counts()
    copied = await target.counts()
    if now != expected:
        raise CopyRefused(
            f"the source changed during the copy ({expected} before, {now} after): stop the coordinator, "
            "empty the target and copy again"
        )
    if copied != expected:
        raise CopyRefused(f"the target holds {copied}, the source {expected}: the copy is incomplete")
    return copied


class _Progress:
    """One line per kind of document, then at most one a second while it lasts."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._last = 0.0

    def __call__(self, what: str, done: int, total: int, *, last: bool = False) -> None:
        now = time.monotonic()
        if done == total or last or now - self._last >= 1.0:
            share = f" ({100 * done // total}%)" if total else ""
            self._emit(f"  {what}: {done} of {total}{share}")
            self._last = now
