"""The progress reporter handed to :meth:`TaskHandler.process`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

MAX_NOTE_CHARS = 4000

#: Sends one progress message; never raises (failures are logged and the keepalive re-sends later).
ProgressSender = Callable[[float, str | None], Coroutine[Any, Any, None]]


class StepCancelled(Exception):
    """Raised by :meth:`ProgressReporter.raise_if_cancelled` once the release was canceled."""


class ProgressReporter:
    """Tells the coordinator how far ``process`` is, and tells ``process`` when it was canceled.

    From ``async def process``: ``await progress.report(42, "indexing")``. Cancellation interrupts
    the coroutine at its next ``await`` (an :class:`asyncio.CancelledError`), so nothing else is needed.

    From a plain ``def process`` (run in a worker thread): ``progress.report_sync(42, "indexing")``,
    and call ``progress.raise_if_cancelled()`` (or test ``progress.cancelled``) between chunks of work:
    a thread cannot be interrupted, it has to stop by itself. ``report_sync`` never queues more than
    one message: reports made while one is being sent are merged, and the latest is sent next.
    """

    def __init__(self, send: ProgressSender, loop: asyncio.AbstractEventLoop) -> None:
        self._send = send
        self._loop = loop
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._sending_sync = False
        self.percent = 0.0
        self.note: str | None = None

    async def report(self, percent: float, note: str | None = None) -> None:
        """Record and send the progress (``percent`` is clamped to 0..100)."""
        self._record(percent, note)
        await self._send(self.percent, self.note)

    def report_sync(self, percent: float, note: str | None = None) -> None:
        """Like :meth:`report`, for synchronous code in a worker thread; does not wait for the broker.

        Raises :class:`StepCancelled` if the release was canceled, so a loop that reports also stops.
        """
        self.raise_if_cancelled()
        with self._lock:
            self._record(percent, note)
            if self._sending_sync:
                return  # the sender in flight sends this value next
            self._sending_sync = True
        asyncio.run_coroutine_threadsafe(self._send_latest(), self._loop)

    async def _send_latest(self) -> None:
        """Send the latest synchronous report until no newer one arrived meanwhile."""
        try:
            while True:
                with self._lock:
                    percent, note = self.percent, self.note
                await self._send(percent, note)
                with self._lock:
                    if (self.percent, self.note) == (percent, note):
                        self._sending_sync = False
                        return
        except BaseException:
            with self._lock:
                self._sending_sync = False
            raise

    @property
    def cancelled(self) -> bool:
        """True once a cancel command (or a shutdown) asked this step to stop."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`StepCancelled` if this step was asked to stop."""
        if self.cancelled:
            raise StepCancelled("the step was canceled")

    def request_cancel(self) -> None:
        """Ask the step to stop (used by the runner; thread-safe)."""
        self._cancelled.set()

    def _record(self, percent: float, note: str | None) -> None:
        self.percent = min(100.0, max(0.0, float(percent)))
        self.note = note[:MAX_NOTE_CHARS] if note is not None else None
