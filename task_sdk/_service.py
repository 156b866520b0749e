"""Running a handler as a service: connect (retrying), serve until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog

from task_sdk._amqp import AmqpTransport
from task_sdk._handler import TaskHandler, check_handler
from task_sdk._logging import configure_logging
from task_sdk._runner import Runner
from task_sdk._settings import Settings, mask_url
from task_sdk._store import MemoryOutcomeStore, OutcomeStore, SqliteOutcomeStore

log = structlog.get_logger("task_sdk")


def run(
    handler: TaskHandler, settings: Settings | None = None, *, log_level: str = "INFO", **overrides: Any
) -> None:
    """Serve ``handler`` until SIGTERM or SIGINT, then drain and return.

    ``settings`` default to ``Settings.from_env(**overrides)`` (the ``RC_*`` environment variables).
    """
    configure_logging(log_level)
    asyncio.run(serve(handler, settings or Settings.from_env(**overrides)))


def open_store(settings: Settings, service: str) -> OutcomeStore:
    """The sqlite store in ``RC_TASK_STATE_DIR`` if it is set, else an in-memory one."""
    if settings.state_dir is None:
        return MemoryOutcomeStore()
    return SqliteOutcomeStore.in_directory(settings.state_dir, service)


async def serve(handler: TaskHandler, settings: Settings) -> None:
    """The asynchronous body of :func:`run`: usable from an application's own event loop."""
    service = check_handler(handler)
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    runner = Runner(handler, AmqpTransport(settings), settings, open_store(settings, service))
    if await _start_until_connected(runner, settings, stop):
        await stop.wait()
        log.info("runner.signal_received", service=service)
        await runner.stop()


async def _start_until_connected(runner: Runner, settings: Settings, stop: asyncio.Event) -> bool:
    delay = settings.reconnect_seconds
    while not stop.is_set():
        try:
            await runner.start()
            return True
        except Exception as error:
            log.warning(
                "runner.connect_failed",
                url=mask_url(settings.amqp_url),
                error=f"{type(error).__name__}: {error}",
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 30.0)
    return False


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
