"""Task handlers the SDK tests run (also started as subprocesses: ``rc-task tests.sdk.handlers:Slow``)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import structlog

from schemas.messages import ReleaseInfo
from task_sdk import HealthStatus, ProgressReporter, Reject, TaskHandler

SERVICE = "sdk-test"


class Recorder(TaskHandler):
    """Async steps that count their calls; ``process`` reports progress in ``steps`` chunks."""

    service = SERVICE

    def __init__(
        self,
        *,
        process_seconds: float = 0.05,
        steps: int = 5,
        reject: str | None = None,
        fail_process: int = 0,
        initialize_seconds: float = 0.0,
    ) -> None:
        self.process_seconds = process_seconds
        self.steps = steps
        self.reject = reject
        self.fail_process = fail_process
        self.initialize_seconds = initialize_seconds
        self.calls: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.initialize_started = threading.Event()
        self.process_done = threading.Event()

    async def initialize(self, release: ReleaseInfo) -> None:
        self.calls["initialize"] += 1
        self.initialize_started.set()
        await asyncio.sleep(self.initialize_seconds)
        if self.reject:
            raise Reject(self.reject)
        self.completed["initialize"] += 1

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        self.calls["process"] += 1
        for step in range(1, self.steps + 1):
            await asyncio.sleep(self.process_seconds / self.steps)
            await progress.report(100 * step / self.steps, f"chunk {step}/{self.steps}")
        if self.calls["process"] <= self.fail_process:
            raise RuntimeError("disk full while staging")
        self.completed["process"] += 1
        self.process_done.set()

    async def publish(self, release: ReleaseInfo) -> None:
        self.calls["publish"] += 1

    async def cancel(self, release: ReleaseInfo) -> None:
        self.calls["cancel"] += 1


class CooperativeBlocking(Recorder):
    """A synchronous ``process`` (runs in a thread) that checks for cancellation between chunks."""

    def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:  # type: ignore[override]
        self.calls["process"] += 1
        for step in range(1, self.steps + 1):
            time.sleep(self.process_seconds / self.steps)
            progress.report_sync(100 * step / self.steps, f"chunk {step}/{self.steps}")
        self.completed["process"] += 1
        self.process_done.set()


class BlockingSleeper(Recorder):
    """A synchronous ``process`` stuck in one long blocking call; records when it slept."""

    def __init__(self, sleep_seconds: float) -> None:
        super().__init__()
        self.sleep_seconds = sleep_seconds
        self.slept: tuple[datetime, datetime] | None = None

    def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:  # type: ignore[override]
        self.calls["process"] += 1
        began = datetime.now(UTC)
        time.sleep(self.sleep_seconds)
        self.slept = (began, datetime.now(UTC))
        self.completed["process"] += 1


class Slow(Recorder):
    """For the subprocess tests: ``process`` takes ``$SLOW_SECONDS`` (default 2); ``initialize`` logs
    ``slow.initialize`` at debug level (to see ``--log-level`` work)."""

    def __init__(self) -> None:
        super().__init__(process_seconds=float(os.environ.get("SLOW_SECONDS", "2")), steps=10)

    async def initialize(self, release: ReleaseInfo) -> None:
        structlog.get_logger("tests").debug("slow.initialize", release_id=release.id)
        await super().initialize(release)


class Checked(Recorder):
    """A ``health()`` whose answer the test sets: a :class:`HealthStatus`, an exception to raise,
    or ``hang`` (never answers until ``release_hang`` is set). Counts the checks."""

    def __init__(self, answer: object = None) -> None:
        super().__init__()
        self.answer: object = HealthStatus(True) if answer is None else answer
        self.checks = 0
        self.running = 0
        self.most_running = 0
        self.release_hang = asyncio.Event()

    async def health(self) -> object:  # type: ignore[override]
        self.checks += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.answer == "hang":
                await self.release_hang.wait()
                return HealthStatus(True, "answered late")
            if isinstance(self.answer, BaseException):
                raise self.answer
            return self.answer
        finally:
            self.running -= 1


class BlockingCheck(Recorder):
    """A plain ``def health()`` (so it runs in a worker thread) that blocks briefly, then says unhealthy."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def health(self) -> HealthStatus:
        self.threads.add(threading.get_ident())
        time.sleep(0.02)
        return HealthStatus(False, "database read-only")
