"""Shared fixtures: a real RabbitMQ, a real MongoDB-protocol server, and a namespace per test.

- ``amqp_url`` (session): ``$RC_AMQP_URL`` or ``amqp://guest:guest@127.0.0.1:5672/``, checked reachable
  at first use; an unreachable broker is an error naming the URL, never a skip.
- ``mongo_url`` (session): ``$RC_MONGODB_URL``; else a ``mongo:7`` container if a Docker engine is reachable;
  else the embedded in-memory server (:class:`tests._mongoeco.MongoecoServer`), stopped at the end.
- ``mongo_client`` (session): a ``pymongo.AsyncMongoClient(mongo_url, tz_aware=True)``.
- ``namespace`` (function): ``rctest-<8 hex>``, the ``RC_NAMESPACE`` of one test; afterwards every queue and
  exchange named ``<namespace>.*`` is deleted from the broker (if the test used the broker).
- ``mongo_db`` (function): the database named after the namespace (``-`` -> ``_``), dropped afterwards.

Tests that use ``amqp_url`` or ``mongo_url`` (directly or through another fixture) are marked ``integration``.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests import _rc_client as rc_client
from tests._harness import (
    DEFAULT_AMQP_URL,
    check_broker_blocking,
    check_store,
    delete_namespace,
    docker_mongo,
)

Document = dict[str, Any]


#: The real coordinator, its store, brokers, simulated services and operators, for every directory's tests;
#: and the sabotage matrix (``@caught_by``).
pytest_plugins = ["tests.coordinator.fixtures", "tests.sabotage.plugin"]


def pytest_configure(config: pytest.Config) -> None:
    """Started in the background by a shell without job control (``make test &``, a CI runner), the
    suite inherits SIGINT ignored, and so would every process it starts: a Ctrl-C sent to them (the demo's
    tests) would do nothing. Undo that here, so that they see SIGINT as from a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _plain_tracebacks_in_logs()


def _plain_tracebacks_in_logs() -> None:
    """The coordinators the tests run in this process log to the console with structlog's defaults, whose
    tracebacks (rich's, with every frame's locals) took 3-5 s each to render: a test that logs a few let
    its release reach a deadline meanwhile. The same console logs, with plain tracebacks."""
    processors = list(structlog.get_config()["processors"])
    processors[-1] = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(processors=processors)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "amqp_url" in names or "mongo_url" in names:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
async def _rc_fork_server() -> AsyncIterator[None]:
    """The pre-loaded ``rc`` that the tests' ``rc`` commands are forked from stops with the session."""
    yield
    await rc_client.close()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("RC_AMQP_URL") or DEFAULT_AMQP_URL
    try:
        check_broker_blocking(url)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    return url


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    configured = os.environ.get("RC_MONGODB_URL")
    with ExitStack() as stack:
        url = configured or stack.enter_context(docker_mongo()) or _embedded(stack)
        try:
            check_store(url)
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)
        yield url


def _embedded(stack: ExitStack) -> str:
    from tests._mongoeco import MongoecoServer

    store = MongoecoServer()
    try:
        url = store.start()
    except RuntimeError as error:
        pytest.fail(
            "no MongoDB-protocol server for the tests: RC_MONGODB_URL is unset, no Docker engine is "
            f"reachable, and the embedded store cannot start: {error}",
            pytrace=False,
        )
    stack.callback(store.stop)
    return url


@pytest.fixture(scope="session")
async def mongo_client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def namespace(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = f"rctest-{uuid.uuid4().hex[:8]}"
    # amqp_url is a plain (synchronous) fixture, so it can be resolved from here.
    url: str | None = request.getfixturevalue("amqp_url") if "amqp_url" in request.fixturenames else None
    yield name
    if url is not None:
        await delete_namespace(url, name)


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[Document], namespace: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    name = namespace.replace("-", "_")
    try:
        yield mongo_client[name]
    finally:
        await mongo_client.drop_database(name)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The store engine of the test: ``sqlite`` (the default engine) unless parametrized with
    ``@pytest.mark.parametrize("engine", ["sqlite", "mongodb"], indirect=True)``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A SQLite file in the test's temporary directory, or the suite's MongoDB-protocol server."""
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'rc.db'}"
    return str(request.getfixturevalue("mongo_url"))
