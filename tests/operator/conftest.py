"""Fixtures of the operator-feature tests: the real coordinator (in process, on the real RabbitMQ and
the default store), simulated services, and the real ``rc`` entry point run as a subprocess."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from rc_cli.client import AdminClient
from schemas.messages import RequireService
from tests.cli.conftest import Outcome, Rc, rc_env, run_rc
from tests.coordinator.fixtures import SERVICES, Running
from tests.coordinator.simulated import SimulatedService

StartService = Callable[..., Awaitable[SimulatedService]]


@pytest.fixture
def rc(amqp_url: str, namespace: str) -> Rc:
    """``await rc("release", "list", "--json")``: the real command line against this test's namespace."""
    base = rc_env(amqp_url, namespace)

    async def call(
        *args: str, env: dict[str, str] | None = None, limit: float = 30, fresh: bool = False
    ) -> Outcome:
        return await run_rc(*args, env={**base, **(env or {})}, limit=limit, fresh=fresh)

    return call


@pytest.fixture
async def ready(
    coordinator: Running,
    admin: AdminClient,
    services: StartService,
) -> list[SimulatedService]:
    """A running coordinator with three required, healthy, well-behaved services."""
    started = []
    for name in SERVICES:
        answer = await admin.request(RequireService(service=name))
        assert answer.ok, answer.error
        started.append(await services(name))
    return started
