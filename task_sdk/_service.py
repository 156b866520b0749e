"""Running a handler as a service: connect (retrying), serve until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog

from schemas.broker_url import mask_url
from task_sdk._amqp import AmqpTransport
from task_sdk._handler import TaskHandler, check_handler
from task_sdk._logging import configure_logging
from task_sdk._runner import Runner
from task_sdk._settings import Settings
from task_sdk._store import MemoryOutcomeStore, OutcomeStore, SqliteOutcomeStore

log = structlog.get_logger("task_sdk")

#: The longest wait between two attempts to connect at start-up.
MAX_RECONNECT_DELAY = 30.0


def run(
    handler: TaskHandler, settings: Settings | None = None, *, log_level: str = "INFO", **overrides: Any
) -> None:
    """Serve ``handler`` until SIGTERM or SIGINT, then drain and return.

    ``settings`` default to ``Settings.from_env()`` (the ``RC_*`` environment variables);
    ``overrides`` (``concurrency=2``, ...) that are not None replace fields of either.
    """
    configure_logging(log_level)
    asyncio.run(serve(handler, _settings(settings, overrides)))


def _settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    if settings is None:
        return Settings.from_env(**overrides)
    changes = {key: value for key, value in overrides.items() if value is not None}
    return settings.replace(**changes) if changes else settings


def open_store(settings: Settings, service: str) -> OutcomeStore:
    """The sqlite store in ``RC_TASK_STATE_DIR`` if it is set, else an in-memory one."""
    if settings.state_dir is None:
        return MemoryOutcomeStore()
    return SqliteOutcomeStore.in_directory(settings.state_dir, service)


async def serve(
    handler: TaskHandler, settings: Settings | None = None, *, stop: asyncio.Event | None = None
) -> None:
    """The asynchronous body of :func:`run`: serve ``handler`` from an application's own event loop.

    Without ``stop``, serve until SIGTERM or SIGINT (the handlers are installed on the running loop
    and removed on return). With ``stop``, the caller decides: serve until ``stop`` is set; no signal
    handler is touched. Either way the service then drains (up to ``shutdown_timeout``) and returns::

        stop = asyncio.Event()
        service = asyncio.create_task(serve(MyHandler(), Settings.from_env(), stop=stop))
        ...
        stop.set()
        await service

    Cancelling the task running ``serve`` also stops it; the connection is closed whatever happens.
    ``settings`` default to ``Settings.from_env()``.
    """
    service = check_handler(handler)
    settings = settings or Settings.from_env()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    installed = _install_signal_handlers(stop) if own_signals else []
    runner: Runner | None = None
    try:
        runner = Runner(handler, AmqpTransport(settings), settings, open_store(settings, service))
        if await _start_until_connected(runner, settings, stop):
            await stop.wait()
            log.info("runner.stop_requested", service=service)
    finally:
        try:
            if runner is not None:
                await runner.stop()  # closes the connection and the store, even if cancelled meanwhile
        finally:
            _remove_signal_handlers(installed)


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
                retry_in=delay,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, MAX_RECONNECT_DELAY)
    return False


def _install_signal_handlers(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    return installed


def _remove_signal_handlers(installed: list[signal.Signals]) -> None:
    """Give SIGTERM/SIGINT back: after ``serve`` returns, Ctrl-C must not be swallowed by a dead event."""
    loop = asyncio.get_running_loop()
    for signum in installed:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signum)
