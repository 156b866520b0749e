"""Fixtures: a fake HTTP task service and a bridge in front of it (the release tests also use the real
coordinator of ``tests/coordinator/fixtures.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from coordinator.store import Store
from rc_cli.client import AdminClient
from rc_http_bridge import BridgeConfig, HttpBridge, make_bridge
from schemas.broker_url import broker_user
from schemas.messages import RequireService
from task_sdk import Runner, Settings
from task_sdk._amqp import AmqpTransport
from tests.bridge.fake_service import Behaviour, FakeTaskService

SERVICE = "portal"
#: The token the bridge sends to the service, and the one callbacks must carry.
OUTBOUND_TOKEN = "out-secret"
CALLBACK_TOKEN = "in-secret"

MakeFake = Callable[..., Awaitable[FakeTaskService]]
OpenBridge = Callable[..., Awaitable[HttpBridge]]
StartBridge = Callable[..., Awaitable[FakeTaskService]]


def bridge_config(url: str, **overrides: Any) -> BridgeConfig:
    values: dict[str, Any] = {
        "service": SERVICE,
        "url": url,
        "listen": "127.0.0.1:0",
        "poll_seconds": 0.2,
        "http_timeout": 2.0,
        "stall_seconds": 0,
        "token": OUTBOUND_TOKEN,
        "callback_token": CALLBACK_TOKEN,
    }
    return BridgeConfig(**(values | overrides))


@pytest.fixture
async def make_fake() -> AsyncIterator[MakeFake]:
    """Start a fake HTTP task service: ``await make_fake(callbacks=True, ...)`` (``Behaviour`` fields)."""
    started: list[FakeTaskService] = []

    async def make(**behaviour: Any) -> FakeTaskService:
        behaviour.setdefault("callback_token", CALLBACK_TOKEN)
        fake = await FakeTaskService(Behaviour(**behaviour), token=OUTBOUND_TOKEN).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


@pytest.fixture
async def open_bridge() -> AsyncIterator[OpenBridge]:
    """Open a bridge in front of a fake (its callbacks pointed at the bridge): ``await open_bridge(fake)``."""
    opened: list[HttpBridge] = []

    async def open_(fake: FakeTaskService, **config: Any) -> HttpBridge:
        bridge = make_bridge(bridge_config(fake.url, **config))
        await bridge.open()
        opened.append(bridge)
        fake.callback_url = bridge.public_url
        return bridge

    yield open_
    for bridge in opened:
        await bridge.close()


@pytest.fixture
async def start_bridge(
    amqp_url: str,
    namespace: str,
    admin: AdminClient,
    store: Store,
    make_fake: MakeFake,
    open_bridge: OpenBridge,
) -> AsyncIterator[StartBridge]:
    """A fake HTTP service and a bridge serving it on the broker as the required service ``portal``.

    ``await start_bridge(behaviour={...}, config={...})`` returns the fake once the coordinator has
    the bridge's first heartbeat (so a release created next finds the service healthy).
    """
    runners: list[Runner] = []

    async def start(
        behaviour: dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> FakeTaskService:
        fake = await make_fake(**(behaviour or {}))
        bridge = await open_bridge(fake, **(config or {}))
        answer = await admin.request(RequireService(service=SERVICE))
        assert answer.ok, answer.error
        sdk = Settings(
            amqp_url=amqp_url,
            namespace=namespace,
            heartbeat_seconds=0.3,
            shutdown_timeout=2,
            coordinator_user=broker_user(amqp_url),  # the coordinator of the fixtures
        )
        runner = Runner(bridge, AmqpTransport(sdk), sdk)
        await runner.start()
        runners.append(runner)
        await wait_for_heartbeat(store)
        return fake

    yield start
    for runner in runners:
        await runner.stop()


async def wait_for_heartbeat(store: Store, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        record = await store.service(SERVICE)
        if record is not None and record.last_heartbeat_at is not None:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no heartbeat from {SERVICE} within {within} s")
        await asyncio.sleep(0.05)
