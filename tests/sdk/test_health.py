"""``TaskHandler.health()``: its answer goes into every heartbeat; a failing or hung check is unhealthy,
and nothing it does stops the heartbeats."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path

from deploy.healthcheck import check_health_file
from schemas.messages import Heartbeat
from task_sdk import HealthStatus, Settings
from task_sdk._memory import InMemoryTransport
from task_sdk._transport import Health
from task_sdk.testing import Harness, InMemoryBackend
from tests.sdk.conftest import HarnessFactory
from tests.sdk.handlers import BlockingCheck, Checked, Recorder

BEAT = Settings(heartbeat_seconds=0.2, shutdown_timeout=2.0)


async def beats(harness: Harness, count: int) -> list[Heartbeat]:
    """Wait for ``count`` more heartbeats and return them."""
    seen = len(harness.heartbeats)
    await harness.wait_for(lambda: len(harness.heartbeats) >= seen + count, f"{count} heartbeats")
    return harness.heartbeats[seen:]


async def test_heartbeats_are_healthy_by_default() -> None:
    async with Harness(Recorder(), settings=BEAT) as harness:
        beat = (await beats(harness, 1))[0]
    assert (beat.healthy, beat.detail) == (True, None)


async def test_the_handlers_answer_is_in_every_heartbeat(make_harness: HarnessFactory) -> None:
    handler = Checked(HealthStatus(False, "search cluster unreachable"))
    async with make_harness(handler, heartbeat_seconds=0.2) as harness:
        unhealthy = await beats(harness, 2)
        handler.answer = HealthStatus(True, "3 nodes up")
        await beats(harness, 1)  # one may have been checked before the change
        healthy = await beats(harness, 1)

    assert [(b.healthy, b.detail) for b in unhealthy] == [(False, "search cluster unreachable")] * 2
    assert (healthy[0].healthy, healthy[0].detail) == (True, "3 nodes up")


async def test_an_exception_in_health_is_unhealthy_and_heartbeats_go_on(make_harness: HarnessFactory) -> None:
    handler = Checked(ConnectionError("database down"))
    async with make_harness(handler, heartbeat_seconds=0.2) as harness:
        failing = await beats(harness, 3)
        handler.answer = HealthStatus(True)
        await beats(harness, 1)
        recovered = await beats(harness, 1)

    assert {(b.healthy, b.detail) for b in failing} == {
        (False, "health() raised ConnectionError: database down")
    }
    assert recovered[0].healthy


async def test_a_plain_def_health_runs_in_a_worker_thread() -> None:
    handler = BlockingCheck()
    async with Harness(handler, settings=BEAT) as harness:
        beat = (await beats(harness, 1))[0]
    assert (beat.healthy, beat.detail) == (False, "database read-only")
    assert handler.threads
    assert threading.get_ident() not in handler.threads


async def test_a_hung_health_check_is_unhealthy_and_never_runs_twice_at_once() -> None:
    handler = Checked("hang")
    async with Harness(handler, settings=BEAT) as harness:
        hung = await beats(harness, 3)
        handler.release_hang.set()
        answered = await beats(harness, 2)

    assert {(b.healthy, b.detail) for b in hung} == {(False, "health() did not answer within 0.1 s")}
    assert handler.most_running == 1
    assert (True, "answered late") in {(b.healthy, b.detail) for b in answered}


async def test_an_answer_that_is_not_a_health_status() -> None:
    answers: list[object] = [True, (False, "disk 97% full"), "fine"]
    expected = [
        (True, None),
        (False, "disk 97% full"),
        (False, "health() returned 'fine', not a HealthStatus"),
    ]
    for answer, (healthy, detail) in zip(answers, expected, strict=True):
        async with Harness(Checked(answer), settings=BEAT) as harness:
            beat = (await beats(harness, 1))[0]
        assert (beat.healthy, beat.detail) == (healthy, detail)


async def test_a_long_detail_is_truncated_to_fit_the_heartbeat() -> None:
    async with Harness(Checked(HealthStatus(False, "x" * 10_000)), settings=BEAT) as harness:
        beat = (await beats(harness, 1))[0]
    assert beat.detail == "x" * 4000


async def test_a_lost_consumer_and_an_unhealthy_handler_are_both_reported() -> None:
    backend = InMemoryBackend()
    handler = Checked(HealthStatus(False, "index stale"))
    async with Harness(handler, settings=BEAT, backend=backend) as harness:
        await backend.memory.stop_consuming()
        beat = (await beats(harness, 1))[0]
    assert (beat.healthy, beat.detail) == (False, "not consuming; index stale")


class FlakyTransport(InMemoryTransport):
    """Its ``health()`` raises twice (a transport bug), then works."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    def health(self) -> Health:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("transport bug")
        return super().health()


async def test_an_error_in_one_heartbeat_does_not_end_the_heartbeats() -> None:
    backend = InMemoryBackend()
    backend.memory = FlakyTransport()
    async with Harness(Recorder(), settings=BEAT, backend=backend) as harness:
        later = await beats(harness, 2)
    assert backend.memory.failures == 0
    assert all(beat.healthy for beat in later)


async def test_the_health_file_follows_the_heartbeats(tmp_path: Path) -> None:
    """With ``RC_TASK_HEALTH_FILE``, each heartbeat also rewrites that file (what a container's health
    check reads: this instance's own health, busy or not), and the health check reads it right."""
    health_file = tmp_path / "health"
    handler = Checked(HealthStatus(False, "search cluster unreachable"))
    async with Harness(handler, settings=BEAT.replace(health_file=health_file)) as harness:
        beat = (await beats(harness, 1))[0]
        assert check_health_file(health_file, max_age=60) == "unhealthy: search cluster unreachable"
        handler.answer = HealthStatus(True)
        await harness.wait_for(lambda: check_health_file(health_file, max_age=60) is None, "a healthy file")
    told = json.loads(health_file.read_text())
    assert datetime.fromisoformat(told["at"]) >= beat.sent_at
    assert os.listdir(tmp_path) == ["health"]  # written beside and renamed: no leftovers
    later = datetime.fromisoformat(told["at"]) + timedelta(seconds=61)
    assert check_health_file(health_file, max_age=60, now=later) == "no heartbeat for 61s (more than 60s)"
