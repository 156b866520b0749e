"""The SDK's behaviour, one suite run on both back ends (in memory, and a real RabbitMQ).

Each test plays the coordinator through :class:`task_sdk.testing.Harness`.
"""

from __future__ import annotations

from schemas.enums import Action, Outcome
from task_sdk import SDK_VERSION
from task_sdk.testing import make_release
from tests.sdk.conftest import HarnessFactory
from tests.sdk.handlers import BlockingSleeper, CooperativeBlocking, Recorder


async def test_a_release_goes_through_every_step(make_harness: HarnessFactory) -> None:
    handler = Recorder()
    harness = make_harness(handler)

    result = await harness.run_release(studies=["SD_1", "SD_2"])

    assert result.outcomes == ["accepted", "staged", "published"]
    assert [reply.action for reply in result.replies] == [Action.INITIALIZE, Action.START, Action.PUBLISH]
    assert {reply.instance_id for reply in result.replies} == {harness.runner.instance_id}
    assert {reply.sdk_version for reply in result.replies} == {SDK_VERSION}
    assert [p.percent for p in result.progress][:6] == [0, 20, 40, 60, 80, 100]
    assert handler.calls == {"initialize": 1, "process": 1, "publish": 1}


async def test_initialize_may_reject_the_release(make_harness: HarnessFactory) -> None:
    result = await make_harness(Recorder(reject="study SD_1 is not indexed here")).run_release()

    assert result.outcomes == ["rejected"]
    assert result.replies[0].reason == "study SD_1 is not indexed here"


async def test_an_exception_in_process_is_replied_failed_with_the_error(make_harness: HarnessFactory) -> None:
    result = await make_harness(Recorder(fail_process=1)).run_release()

    assert result.outcomes == ["accepted", "failed"]
    assert result.replies[1].reason == "RuntimeError: disk full while staging"


async def test_a_cancel_interrupts_a_running_process(make_harness: HarnessFactory) -> None:
    handler = Recorder(process_seconds=5.0, steps=50)

    run = await make_harness(handler).cancel_during_process()

    assert run.cancel_reply.outcome is Outcome.CANCELED
    assert run.start_replies == []  # no `staged`: the interrupted start is answered by the cancel
    assert handler.completed["process"] == 0
    assert handler.calls["cancel"] == 1


async def test_a_cancel_stops_blocking_code_that_checks_for_it(make_harness: HarnessFactory) -> None:
    handler = CooperativeBlocking(process_seconds=5.0, steps=50)

    run = await make_harness(handler).cancel_during_process()

    assert run.cancel_reply.outcome is Outcome.CANCELED
    assert run.start_replies == []
    assert handler.completed["process"] == 0


async def test_a_start_after_the_release_was_canceled_is_not_processed(make_harness: HarnessFactory) -> None:
    handler = Recorder()
    harness = make_harness(handler)
    release = make_release()

    assert (await harness.cancel(release)).outcome is Outcome.CANCELED
    assert (await harness.start_processing(release)).outcome is Outcome.CANCELED
    assert handler.calls["process"] == 0


async def test_a_replayed_command_gets_the_stored_reply_and_is_not_redone(
    make_harness: HarnessFactory,
) -> None:
    handler = Recorder()
    harness = make_harness(handler)
    release = make_release()
    initialize, start = harness.command(Action.INITIALIZE, release), harness.command(Action.START, release)
    await harness.send(initialize)
    first_accept = await harness.reply_to(initialize)
    await harness.send(start)
    first_staged = await harness.reply_to(start)

    assert await harness.redeliver(initialize) == first_accept
    assert await harness.redeliver(start) == first_staged
    assert handler.calls == {"initialize": 1, "process": 1}


async def test_a_new_command_for_a_step_already_done_gets_its_outcome(make_harness: HarnessFactory) -> None:
    handler = Recorder()
    harness = make_harness(handler)
    release = make_release()
    first = await harness.initialize(release)

    again = await harness.initialize(release)

    assert (again.outcome, again.in_reply_to != first.in_reply_to) == (Outcome.ACCEPTED, True)
    assert handler.calls["initialize"] == 1


async def test_a_start_redelivered_while_running_is_not_run_twice(make_harness: HarnessFactory) -> None:
    handler = Recorder(process_seconds=0.5)
    harness = make_harness(handler)
    start = harness.command(Action.START, make_release())
    await harness.send(start)
    await harness.send(start, redelivered=True)

    assert (await harness.reply_to(start)).outcome is Outcome.STAGED
    await harness.drain(0.3)
    assert [reply.outcome for reply in harness.replies] == [Outcome.STAGED]
    assert handler.calls["process"] == 1


async def test_a_failed_step_is_run_again_by_a_new_command(make_harness: HarnessFactory) -> None:
    handler = Recorder(fail_process=1)
    harness = make_harness(handler)
    release = make_release()

    assert (await harness.start_processing(release)).outcome is Outcome.FAILED
    assert (await harness.start_processing(release)).outcome is Outcome.STAGED
    assert handler.calls["process"] == 2


async def test_an_invalid_command_is_dead_lettered_and_the_runner_keeps_working(
    make_harness: HarnessFactory,
) -> None:
    harness = make_harness(Recorder())
    not_for_us = harness.command(Action.INITIALIZE, make_release()).model_copy(update={"service": "other"})

    assert await harness.send_invalid(b"{not json") == b"{not json"
    assert await harness.send_invalid(not_for_us.model_dump_json().encode()) is not None
    assert (await harness.initialize(make_release())).outcome is Outcome.ACCEPTED


async def test_blocking_code_does_not_stop_heartbeats_or_progress_keepalives(
    make_harness: HarnessFactory,
) -> None:
    handler = BlockingSleeper(sleep_seconds=1.2)  # four heartbeat periods of 0.3 s
    async with make_harness(handler, heartbeat_seconds=0.3) as harness:
        release = make_release()
        assert (await harness.start_processing(release)).outcome is Outcome.STAGED

    assert handler.slept is not None
    began, ended = handler.slept
    during = [beat for beat in harness.heartbeats if began <= beat.sent_at <= ended]
    keepalives = [p for p in harness.progress_of(release) if began <= p.sent_at <= ended]
    assert len(during) >= 3, f"{len(during)} heartbeats while blocked for {ended - began}"
    assert len(keepalives) >= 3
    assert all(beat.healthy for beat in during)
    assert any(beat.active_releases == (release.id,) for beat in during)
