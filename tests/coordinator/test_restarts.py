"""Versions continue across coordinator restarts, on both store engines, never repeating."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import store_for
from schemas.enums import ReleaseState
from schemas.messages import PublishRelease
from tests.coordinator.fixtures import Asks, Running, wait_for_state
from tests.coordinator.simulated import SimulatedService
from tests.coordinator.test_releases import call, create, setup

pytestmark = [
    pytest.mark.parametrize("broker_kind", ["memory"], indirect=True),
    pytest.mark.parametrize("engine", ["sqlite", "mongodb"], indirect=True),
]


async def test_versions_continue_after_each_restart_and_never_repeat(
    settings: Settings,
    memory_broker: object,
    coordinator_broker: object,
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
) -> None:
    seen: list[tuple[str, str | None]] = []
    for restart in range(3):  # each round: a new coordinator process's worth of state, on the same store
        store = store_for(settings.store, settings.database)
        await store.open()
        running = await Running(Coordinator(settings, store, coordinator_broker)).started()  # type: ignore[arg-type]
        try:
            if restart == 0:
                await setup(admin, services)
            release_id = await create(admin, major=restart == 2)
            await wait_for_state(store, release_id, ReleaseState.STAGED)
            await call(admin, PublishRelease(release_id=release_id))
            published = await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
            seen.append((published.tentative_version, published.final_version))
        finally:
            await running.shutdown()
            if restart == 2:
                await store.drop()
            else:
                await store.close()
    assert seen == [("0.0.1", "0.1.0"), ("0.1.1", "0.2.0"), ("0.2.1", "1.0.0")]
