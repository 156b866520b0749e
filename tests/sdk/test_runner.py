"""Runner rules that need no broker: outcome store, restarts, retries, defaults, threads, shutdown."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from schemas.enums import Action, Outcome
from schemas.messages import Heartbeat, ReleaseInfo, encode
from task_sdk import ProgressReporter, Reject, Settings, SqliteOutcomeStore, TaskHandler
from task_sdk.testing import Harness, InMemoryBackend, make_command, make_release
from tests.sdk.handlers import SERVICE, Recorder

QUICK_SHUTDOWN = Settings(heartbeat_seconds=0.3, shutdown_timeout=0.2)


class OnlyProcess(TaskHandler):
    service = SERVICE

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        await progress.report(100)


class Threaded(TaskHandler):
    """Plain ``def`` steps: they must run off the event loop's thread."""

    service = SERVICE

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def initialize(self, release: ReleaseInfo) -> None:
        self.threads.add(threading.get_ident())

    def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        self.threads.add(threading.get_ident())
        progress.report_sync(50, "half way")

    def publish(self, release: ReleaseInfo) -> None:
        self.threads.add(threading.get_ident())
        raise Reject("publish cannot reject")


def test_the_sqlite_store_keeps_outcomes_and_work_taken_on(tmp_path: Path) -> None:
    command = make_command(SERVICE, Action.START, make_release())
    store = SqliteOutcomeStore.in_directory(tmp_path, SERVICE)
    store.record_taken(command)
    store.close()

    reopened = SqliteOutcomeStore.in_directory(tmp_path, SERVICE)
    assert reopened.taken() == [command]
    assert reopened.outcome(command.release_id, Action.START) is None
    reopened.close()


async def test_outcomes_survive_a_restart_with_a_state_dir(tmp_path: Path) -> None:
    release = make_release()
    first = Harness(Recorder(), store=SqliteOutcomeStore.in_directory(tmp_path, SERVICE))
    command = first.command(Action.INITIALIZE, release)
    await first.send(command)
    accepted = await first.reply_to(command)
    await first.stop()

    handler = Recorder()
    second = Harness(handler, store=SqliteOutcomeStore.in_directory(tmp_path, SERVICE))
    assert await second.redeliver(command) == accepted
    assert handler.calls["initialize"] == 0


async def test_processing_cut_short_by_a_shutdown_is_not_resumed_but_run_for_the_start_sent_again(
    tmp_path: Path,
) -> None:
    """No self-resume: another instance may already have taken the work (the coordinator sends ``start``
    again once the instance doing it stops heartbeating); the restarted one runs it for that new start."""
    store_file = tmp_path / "state.sqlite3"
    first = Harness(
        Recorder(process_seconds=5, steps=50), settings=QUICK_SHUTDOWN, store=SqliteOutcomeStore(store_file)
    )
    release = make_release()
    start = first.command(Action.START, release)
    await first.send(start)
    await first.wait_for(lambda: len(first.reports(start)) > 0, "progress")
    await first.stop()  # shutdown_timeout 0.2 s: process() is cancelled, no reply
    assert first.replies == []

    handler = Recorder(process_seconds=0.1)
    second = Harness(handler, store=SqliteOutcomeStore(store_file))
    await second.start(heartbeats=False)
    await second.drain(0.3)
    assert handler.calls["process"] == 0
    again = second.command(Action.START, release)  # the coordinator's retry
    await second.send(again)
    assert (await second.reply_to(again)).outcome is Outcome.STAGED
    assert handler.calls["process"] == 1


async def test_without_a_state_dir_processing_cut_short_by_a_shutdown_is_replied_failed() -> None:
    harness = Harness(Recorder(process_seconds=5, steps=50), settings=QUICK_SHUTDOWN)
    start = harness.command(Action.START, make_release())
    await harness.send(start)
    await harness.wait_for(lambda: len(harness.reports(start)) > 0, "progress")
    await harness.stop()

    reply = await harness.reply_to(start, within=1)
    assert (reply.outcome, reply.reason) == (
        Outcome.FAILED,
        "the service shut down before processing finished",
    )


async def test_a_reply_the_broker_did_not_confirm_is_published_again() -> None:
    backend = InMemoryBackend()
    backend.memory.fail_publications = 3
    harness = Harness(Recorder(), backend=backend)

    assert (await harness.initialize(make_release())).outcome is Outcome.ACCEPTED
    await harness.drain(0.2)
    assert len(harness.replies) == 1


async def test_steps_a_handler_does_not_write_succeed() -> None:
    result = await Harness(OnlyProcess()).run_release()
    assert result.outcomes == ["accepted", "staged", "published"]
    assert (await Harness(OnlyProcess()).cancel(make_release())).outcome is Outcome.CANCELED


async def test_plain_def_steps_run_in_worker_threads() -> None:
    handler = Threaded()
    result = await Harness(handler).run_release()

    assert result.outcomes == ["accepted", "staged", "failed"]
    assert result.replies[2].reason == "Reject raised by publish: publish cannot reject"
    assert [p.note for p in result.progress] == ["processing started", "half way"]
    assert threading.get_ident() not in handler.threads


async def test_a_long_error_is_truncated_to_fit_the_reply() -> None:
    result = await Harness(Recorder(reject="x" * 10_000)).run_release()
    assert len(result.replies[0].reason or "") == 4000


def test_a_handler_must_name_its_service_and_write_process() -> None:
    class Nameless(TaskHandler):
        async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None: ...

    class Lazy(TaskHandler):
        service = SERVICE

    class BadName(OnlyProcess):
        service = "Search Index"

    with pytest.raises(TypeError, match="service"):
        Harness(Nameless())
    with pytest.raises(TypeError, match="process"):
        Harness(Lazy())
    with pytest.raises(ValueError, match="invalid service name"):
        Harness(BadName())


class Chatty(TaskHandler):
    """A plain ``def process`` that reports progress far faster than it can be sent."""

    service = SERVICE

    def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        for done in range(1, 20_001):
            progress.report_sync(done / 200, f"row {done}")


async def test_fast_synchronous_reports_are_merged_and_the_last_one_is_sent() -> None:
    harness = Harness(Chatty())
    result = await harness.run_release()
    await harness.drain(0.2)

    reported = [p for p in harness.progress_of(result.release) if p.note and p.note.startswith("row")]
    assert result.outcomes == ["accepted", "staged", "published"]
    assert len(reported) < 2_000, f"{len(reported)} progress messages for 20000 reports"
    assert (reported[-1].percent, reported[-1].note) == (100, "row 20000")


async def test_commands_it_dead_lettered_are_told_in_its_heartbeats() -> None:
    """A service may not put the reason into its dead letters (no write on the dead-letter exchange): its
    heartbeats tell them instead, and the coordinator keeps that as the service's health detail."""
    handler = Recorder()
    backend = InMemoryBackend()
    harness = Harness(handler, backend=backend)
    forged = make_command(SERVICE, Action.PUBLISH, make_release(final_version="9.0.0"))
    await harness.start(heartbeats=False)
    await backend.memory.deliver(encode(forged), user_id="intruder", message_id=forged.message_id)
    assert await backend.dead_lettered(5) == encode(forged)
    await harness.runner.tick()
    beat = await backend.receive(5)
    assert isinstance(beat, Heartbeat)
    assert beat.healthy
    assert beat.detail == (
        "1 command(s) dead-lettered since start, the last: command refused: signed by broker user "
        "'intruder', not by the coordinator's 'rc-coordinator' (set RC_COORDINATOR_USER to the coordinator's "
        f"broker user; RC_TRUSTED_USERS only in development) (message {forged.message_id})"
    )
    assert await harness.send_invalid(b"{not json") is not None
    await harness.runner.tick()
    beat = await backend.receive(5)
    assert isinstance(beat, Heartbeat)
    assert beat.detail is not None
    assert beat.detail.startswith("2 command(s) dead-lettered since start, the last: invalid command: ")
    assert not handler.calls
    await harness.stop()
