"""The explorer's task services (tests/explore/services.py) do what the real task_sdk runner does: the same
commands, in the same order, get the same answers and leave the same data, on the SDK's in-memory harness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from schemas.enums import Action, Outcome
from schemas.messages import Command, ReleaseInfo
from task_sdk import TaskHandler
from task_sdk._progress import ProgressReporter
from task_sdk.testing import Harness, make_release
from tests.explore import services
from tests.explore.world import EMPTY_PART, Data, Part


class Staging(TaskHandler):
    """Keeps what it holds of each release; ``process`` stages only when told to finish."""

    service = "portal"

    def __init__(self) -> None:
        self.data: dict[str, Data] = {}
        self.finish = asyncio.Event()

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        self.data[release.id] = Data.PROCESSING
        await progress.report(50, "working")
        await self.finish.wait()
        self.data[release.id] = Data.STAGED

    async def publish(self, release: ReleaseInfo) -> None:
        self.data[release.id] = Data.PUBLIC

    async def cancel(self, release: ReleaseInfo) -> None:
        if self.data.get(release.id) in (Data.PROCESSING, Data.STAGED):
            self.data[release.id] = Data.DISCARDED


class Both:
    """One release sent to the real runner and to the model, step by step, compared after each step."""

    def __init__(self, harness: Harness, handler: Staging) -> None:
        self.harness, self.handler = harness, handler
        self.release = make_release()
        self.part: Part = EMPTY_PART
        self.sent: dict[Action, Command] = {}

    def model(self, action: Action) -> Outcome | None:
        [(_, outcome, self.part)] = services.handle(action, self.part, failures=False)
        return outcome

    async def command(self, action: Action, *, again: bool = False) -> Outcome | None:
        """Send ``action`` (the same command again if ``again``); the answer (None: a start taken on)."""
        expected = self.model(action)
        command = self.sent[action] if again else self.harness.command(action, self.release)
        self.sent[action] = command
        if expected is None:  # a start taken on: no answer now, processing reports its progress
            await self.harness.send(command, redelivered=again)
            await self.harness.wait_for(lambda: bool(self.harness.reports(command)), "progress")
            actual = None
        else:
            await self.harness.send(command, redelivered=again)
            actual = (await self.harness.reply_to(command)).outcome
        assert actual is expected
        self.check_data()
        return actual

    async def finish(self) -> Outcome:
        [(expected, self.part)] = services.finish(self.part, failures=False)
        self.handler.finish.set()
        actual = (await self.harness.reply_to(self.sent[Action.START])).outcome
        assert actual is expected
        self.check_data()
        return actual

    def check_data(self) -> None:
        assert self.handler.data.get(self.release.id, Data.NONE) is self.part[0]


@pytest.fixture
async def both() -> AsyncIterator[Both]:
    handler = Staging()
    pair = Both(Harness(handler), handler)
    yield pair
    handler.finish.set()
    await pair.harness.stop()


async def test_a_release_that_goes_well(both: Both) -> None:
    assert await both.command(Action.INITIALIZE) is Outcome.ACCEPTED
    assert await both.command(Action.INITIALIZE, again=True) is Outcome.ACCEPTED
    assert await both.command(Action.START) is None
    assert await both.finish() is Outcome.STAGED
    assert await both.command(Action.PUBLISH) is Outcome.PUBLISHED
    assert both.part[0] is Data.PUBLIC


async def test_a_cancel_before_the_start_means_the_start_is_never_processed(both: Both) -> None:
    assert await both.command(Action.CANCEL) is Outcome.CANCELED
    assert await both.command(Action.START) is Outcome.CANCELED
    assert both.part[0] is Data.NONE


async def test_a_cancel_interrupts_processing_and_the_start_replays_canceled(both: Both) -> None:
    assert await both.command(Action.START) is None
    assert await both.command(Action.CANCEL) is Outcome.CANCELED
    assert both.part[0] is Data.DISCARDED
    assert await both.command(Action.START, again=True) is Outcome.CANCELED


async def test_staged_data_is_discarded_and_never_staged_again(both: Both) -> None:
    assert await both.command(Action.START) is None
    assert await both.finish() is Outcome.STAGED
    assert await both.command(Action.CANCEL) is Outcome.CANCELED
    assert await both.command(Action.START, again=True) is Outcome.STAGED  # the recorded answer, no work
    assert both.part[0] is Data.DISCARDED
