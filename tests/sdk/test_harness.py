"""How a task team tests its handler: a few lines per path, no broker (task_sdk.testing)."""

from __future__ import annotations

from schemas.enums import Action
from task_sdk.testing import Harness, make_release
from tests.sdk.handlers import Recorder


async def test_the_happy_path() -> None:
    result = await Harness(Recorder()).run_release(studies=["SD_1"])
    assert result.outcomes == ["accepted", "staged", "published"]


async def test_a_rejection() -> None:
    result = await Harness(Recorder(reject="not our studies")).run_release()
    assert result.outcomes == ["rejected"]


async def test_a_failure() -> None:
    result = await Harness(Recorder(fail_process=1)).run_release()
    assert result.outcomes == ["accepted", "failed"]


async def test_a_cancel_during_process() -> None:
    run = await Harness(Recorder(process_seconds=5, steps=50)).cancel_during_process()
    assert (run.cancel_reply.outcome, run.start_replies) == ("canceled", [])


async def test_a_redelivery() -> None:
    handler = Recorder()
    harness = Harness(handler)
    command = harness.command(Action.INITIALIZE, make_release())
    await harness.send(command)
    first = await harness.reply_to(command)
    assert await harness.redeliver(command) == first  # the stored reply, the same message
    assert handler.calls["initialize"] == 1
