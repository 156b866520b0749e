"""Fixtures of the SDK tests: one behaviour suite, two back ends (in memory, and RabbitMQ).

``make_harness(handler, **settings)`` returns a :class:`task_sdk.testing.Harness` on the back end of
the current parameter; every harness is stopped after the test. RabbitMQ harnesses use the shared
``amqp_url`` and ``namespace`` fixtures (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

from schemas.broker_url import broker_user
from task_sdk import Settings, TaskHandler
from task_sdk.testing import Backend, Harness, InMemoryBackend
from tests.sdk._rabbit import RabbitBackend

#: Fast settings for tests: a heartbeat every 0.3 s, quick reconnects, short drains; the test plays the
#: coordinator as the local broker user.
FAST = Settings(
    heartbeat_seconds=0.3,
    shutdown_timeout=5.0,
    publish_timeout=3.0,
    reconnect_seconds=0.3,
    coordinator_user="guest",
)


class HarnessFactory(Protocol):
    def __call__(self, handler: TaskHandler, *, amqp_url: str | None = None, **settings: Any) -> Harness: ...


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def broker(request: pytest.FixtureRequest, backend_kind: str) -> tuple[str, str]:
    """``(amqp_url, namespace)`` on the RabbitMQ back end; ``("", "rc")`` in memory."""
    if backend_kind == "memory":
        return "", "rc"
    # amqp_url first: the shared namespace fixture only cleans the broker up if amqp_url is in use.
    # (A plain fixture, because async fixtures cannot be requested dynamically from async ones.)
    amqp_url: str = request.getfixturevalue("amqp_url")
    namespace: str = request.getfixturevalue("namespace")
    return amqp_url, namespace


@pytest.fixture
async def make_harness(broker: tuple[str, str], backend_kind: str) -> AsyncIterator[HarnessFactory]:
    broker_url, namespace = broker
    harnesses: list[Harness] = []

    def make(handler: TaskHandler, *, amqp_url: str | None = None, **settings: Any) -> Harness:
        signer = broker_user(broker_url) if broker_url else FAST.coordinator_user  # the test's coordinator
        configured = FAST.replace(
            namespace=namespace,
            amqp_url=amqp_url or broker_url or FAST.amqp_url,
            **{"coordinator_user": signer, **settings},
        )
        backend: Backend = (
            InMemoryBackend(configured.coordinator_user)
            if backend_kind == "memory"
            else RabbitBackend(configured, broker_url)
        )
        harness = Harness(handler, settings=configured, backend=backend)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        await harness.stop()
