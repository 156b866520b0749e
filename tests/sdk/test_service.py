"""``serve(handler, settings, stop=event)``: embedding a service in an existing asyncio program.

However ``serve`` ends (its stop event set, its task cancelled, a stop before it ever connected), the
connection is closed and the signal handlers are left as they were.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from schemas.messages import Heartbeat
from schemas.topology import Topology
from task_sdk import Settings, TaskHandler, run, serve
from task_sdk._memory import InMemoryTransport
from task_sdk._service import open_store
from tests.sdk._rabbit import RabbitBackend, consumers_of, next_message
from tests.sdk.handlers import SERVICE, Recorder

FAST = Settings(heartbeat_seconds=0.2, shutdown_timeout=2.0, publish_timeout=2.0, reconnect_seconds=0.2)


class Recording(InMemoryTransport):
    """An in-memory transport that remembers whether it was closed (and can refuse to open)."""

    made: list[Recording] = []

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.closed = False
        self.opened = asyncio.Event()
        self.refuse = settings.amqp_url.endswith("/refuse")
        self.hang_on_close = settings.amqp_url.endswith("/hang")
        Recording.made.append(self)

    async def open(self, *arguments: object, **keywords: object) -> None:
        if self.refuse:
            raise ConnectionRefusedError("broker down")
        await super().open(*arguments, **keywords)  # type: ignore[arg-type]
        self.opened.set()

    async def close(self) -> None:
        self.closed = True
        if self.hang_on_close:
            await asyncio.Event().wait()  # a broker that stopped answering
        await super().close()


@pytest.fixture
def transports(monkeypatch: pytest.MonkeyPatch) -> list[Recording]:
    """``serve`` gets :class:`Recording` transports instead of RabbitMQ ones; returns those made."""
    Recording.made = []
    monkeypatch.setattr("task_sdk._service.AmqpTransport", Recording)
    return Recording.made


async def test_serve_returns_when_its_stop_event_is_set_and_closes_the_connection(
    transports: list[Recording],
) -> None:
    stop = asyncio.Event()
    service = asyncio.create_task(serve(Recorder(), FAST, stop=stop))
    await asyncio.wait_for(_opened(transports), 5)

    stop.set()
    await asyncio.wait_for(service, 5)

    assert [transport.closed for transport in transports] == [True]


async def test_a_connection_that_never_closes_does_not_keep_serve_from_returning(
    transports: list[Recording],
) -> None:
    stop = asyncio.Event()
    settings = FAST.replace(amqp_url="amqp://guest:guest@127.0.0.1:5672/hang")
    service = asyncio.create_task(serve(Recorder(), settings, stop=stop))
    await asyncio.wait_for(_opened(transports), 5)

    stop.set()
    await asyncio.wait_for(service, 2 * settings.publish_timeout + 1)  # bounded by publish_timeout

    assert [transport.closed for transport in transports] == [True]


async def test_cancelling_serve_still_closes_the_connection(transports: list[Recording]) -> None:
    service = asyncio.create_task(serve(Recorder(), FAST, stop=asyncio.Event()))
    await asyncio.wait_for(_opened(transports), 5)

    service.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(service, 5)

    assert [transport.closed for transport in transports] == [True]


async def test_a_stop_while_still_trying_to_connect_returns_promptly(transports: list[Recording]) -> None:
    stop = asyncio.Event()
    service = asyncio.create_task(serve(Recorder(), FAST.replace(amqp_url="amqp://h/refuse"), stop=stop))
    await asyncio.sleep(0.5)  # a few refused attempts

    stop.set()
    await asyncio.wait_for(service, 2)

    assert [transport.closed for transport in transports] == [True]


async def test_serve_with_a_stop_event_leaves_signal_handlers_alone(transports: list[Recording]) -> None:
    loop = asyncio.get_running_loop()
    mine = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, mine.set)  # stands for the application's own handlers
    loop.add_signal_handler(signal.SIGTERM, mine.set)
    try:
        stop = asyncio.Event()
        service = asyncio.create_task(serve(Recorder(), FAST, stop=stop))
        await asyncio.wait_for(_opened(transports), 5)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(mine.wait(), 2)  # the application's handler got it, not serve
        assert not service.done()
        stop.set()
        await asyncio.wait_for(service, 5)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGTERM)


async def test_serve_without_a_stop_event_gives_the_signals_back(transports: list[Recording]) -> None:
    service = asyncio.create_task(serve(Recorder(), FAST))
    await asyncio.wait_for(_opened(transports), 5)

    signal.raise_signal(signal.SIGTERM)
    await asyncio.wait_for(service, 5)

    assert transports[0].closed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again


def test_run_applies_overrides_to_explicit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings | None] = []

    async def fake_serve(handler: TaskHandler, settings: Settings | None = None) -> None:
        served.append(settings)

    monkeypatch.setattr("task_sdk._service.serve", fake_serve)
    monkeypatch.setattr("task_sdk._service.configure_logging", lambda level: None)

    run(Recorder(), FAST, concurrency=2, namespace=None)
    run(Recorder(), FAST)

    assert served == [FAST.replace(concurrency=2), FAST]


def test_a_state_dir_given_as_a_string_opens_the_sqlite_store(tmp_path: Path) -> None:
    store = open_store(Settings(state_dir=str(tmp_path)), SERVICE)  # type: ignore[arg-type]
    try:
        assert store.durable
    finally:
        store.close()
    assert (tmp_path / f"{SERVICE}.sqlite3").exists()


async def test_cancelling_serve_on_rabbitmq_leaves_no_consumer(amqp_url: str, namespace: str) -> None:
    settings = FAST.replace(amqp_url=amqp_url, namespace=namespace)
    coordinator = RabbitBackend(settings, amqp_url)
    await coordinator.open(SERVICE)
    queue = Topology(namespace).task_queue(SERVICE)
    try:
        service = asyncio.create_task(serve(Recorder(), settings, stop=asyncio.Event()))
        await next_message(coordinator, Heartbeat, within=5)  # connected and consuming
        assert await consumers_of(amqp_url, queue) == settings.concurrency  # one per free slot

        service.cancel()
        await asyncio.gather(service, return_exceptions=True)

        assert await consumers_of(amqp_url, queue) == 0  # serve closed the connection before returning
    finally:
        await coordinator.close()


async def _opened(transports: list[Recording]) -> None:
    while not transports:  # noqa: ASYNC110 (the transport is made inside serve)
        await asyncio.sleep(0.01)
    await transports[-1].opened.wait()
