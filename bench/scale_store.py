"""The stored releases of the scale benchmarks: a long history of valid releases (mostly published, a few
canceled or failed) and their audit events, loaded through the store's own interface (``import_batch``)
into a fresh store, and the :class:`Site` that store is timed through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bench.lib import Children, CoordinatorHandle, StoreHandle, connect_store, now, say, start_store
from coordinator.service import Coordinator
from coordinator.store import Store
from rc_cli.client import AdminClient
from schemas.documents import AuditEvent, Release, Task
from schemas.enums import PUBLISHED_PATH, Action, EventKind, Outcome, ReleaseState, TaskState

SERVICES = ("file-service", "portal", "search-index")
#: In every stored release (the worst case of ``rc study show``: 10,000 releases to count).
COMMON_STUDY = "SD_ABCDEFGH"
#: Release ``seq`` also has study ``SD_000000<seq % 100>``: each of those is in 1 % of the releases.
RARE_STUDIES = 100
LOAD_BATCH = 500
_FINAL = {ReleaseState.PUBLISHED: TaskState.PUBLISHED, ReleaseState.CANCELED: TaskState.CANCELED}
_PATH = {
    ReleaseState.PUBLISHED: PUBLISHED_PATH,
    ReleaseState.CANCELED: (ReleaseState.WAITING, ReleaseState.INITIALIZING, ReleaseState.CANCELED),
    ReleaseState.FAILED: (
        ReleaseState.WAITING,
        ReleaseState.INITIALIZING,
        ReleaseState.RUNNING,
        ReleaseState.FAILED,
    ),
}


def rare_study(seq: int) -> str:
    return f"SD_{seq % RARE_STUDIES:08d}"


def stored_release(seq: int) -> tuple[Release, list[AuditEvent]]:
    """Release number ``seq`` of a long history (mostly published), with one event per transition."""
    state = (
        ReleaseState.CANCELED
        if seq % 15 == 0
        else ReleaseState.FAILED
        if seq % 33 == 0
        else ReleaseState.PUBLISHED
    )
    started = now() - timedelta(hours=10 * (20_000 - seq))
    path = _PATH[state]
    entered = {s: started + timedelta(minutes=10 * i) for i, s in enumerate(path)}
    task_state = _FINAL.get(state, TaskState.FAILED)
    tasks = {
        s: Task(
            service=s,
            state=task_state,
            progress=100.0,
            last_message=str(task_state),
            last_message_id=f"{seq:032x}",
            answers={Action.INITIALIZE: Outcome.ACCEPTED},
            entered={TaskState.INITIALIZED: started, task_state: entered[state]},
            updated_at=entered[state],
        )
        for s in SERVICES
    }
    release_id = f"RE_{seq:08d}"
    release = Release(
        id=release_id,
        seq=seq,
        name=f"Release {seq}",
        description="stored by bench.scale",
        studies=(COMMON_STUDY, rare_study(seq)),
        tags=("bench",),
        author="bench",
        tentative_version=f"0.{seq // 1000}.{seq % 1000 + 1}",
        final_version=f"{seq}.0.0" if state is ReleaseState.PUBLISHED else None,
        state=state,
        state_reason=None if state is ReleaseState.PUBLISHED else f"{state} by bench",
        tasks=tasks,
        entered=entered,
        revision=len(path) * 4,
        created_at=started,
        updated_at=entered[state],
    )
    events = [
        AuditEvent(
            id=f"{release_id}.r{i}",
            release_id=release_id,
            at=entered[s],
            kind=EventKind.CREATED if i == 0 else EventKind.TRANSITION,
            reason=f"entered {s}",
            state_before=path[i - 1] if i else None,
            state_after=s,
        )
        for i, s in enumerate(path)
    ]
    return release, events


def release_batches(count: int, batch: int = LOAD_BATCH) -> Iterator[tuple[list[Release], list[AuditEvent]]]:
    """Releases ``1..count`` and their events, ``batch`` releases at a time."""
    for start in range(1, count + 1, batch):
        releases: list[Release] = []
        events: list[AuditEvent] = []
        for seq in range(start, min(start + batch, count + 1)):
            release, its_events = stored_release(seq)
            releases.append(release)
            events.extend(its_events)
        yield releases, events


@dataclass
class Site:
    """One store with ``stored`` releases, its coordinator and an operator client."""

    label: str
    stored: int
    namespace: str
    store: StoreHandle | None = None
    coordinator: CoordinatorHandle | None = None
    client: AdminClient | None = None
    #: The same store, opened in this process: its queries timed alone.
    direct: Store | None = None
    #: The coordinator's request handling run in this process on ``direct`` (no broker).
    in_process: Coordinator | None = None
    load: dict[str, Any] = field(default_factory=dict)


async def start_preloaded_store(children: Children, site: Site) -> None:
    """A fresh store for ``site`` with its releases in it (see the module docstring)."""
    site.store = await start_store(children, site.namespace)
    store = site.direct = await connect_store(site.store.url, site.namespace)
    started = time.perf_counter()
    events = 0
    for releases, batch_events in release_batches(site.stored):
        await store.import_batch(releases, batch_events, ())
        events += len(batch_events)
        if (stored := releases[-1].seq) % 2000 == 0 and stored < site.stored:
            say(f"{site.label}: stored {stored} releases ({time.perf_counter() - started:.1f}s)")
    site.load = {
        "releases": site.stored,
        "events": events,
        "total_seconds": round(time.perf_counter() - started, 2),
        "how": f"import_batch through the store interface ({store.engine})",
    }
