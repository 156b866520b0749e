"""How the bridge combines callbacks, polls and answers that may arrive out of order."""

from __future__ import annotations

from rc_http_bridge.protocol import HttpState, TaskStatus
from rc_http_bridge.tracker import Tracker
from task_sdk.testing import make_release

RUNNING = HttpState.RUNNING
STAGED = HttpState.STAGED


async def test_a_stale_observation_never_moves_a_task_back() -> None:
    task = Tracker().track("TA_AAAAAAAA", make_release(), "running", now=0)
    assert task.observe(TaskStatus(STAGED, 100), now=1)
    assert not task.observe(TaskStatus(RUNNING, 60), now=2)  # a poll answered before the callback
    assert task.status == TaskStatus(STAGED, 100)
    assert task.heard_at == 2
    assert task.changed_at == 1


async def test_failed_and_canceled_stick_until_the_next_step_answers() -> None:
    task = Tracker().track("TA_AAAAAAAA", make_release(), "running", now=0)
    task.observe(TaskStatus(HttpState.FAILED), now=1)
    assert not task.observe(TaskStatus(RUNNING, 10), now=2)
    assert task.observe(TaskStatus(RUNNING, 0), now=3, authoritative=True)  # a retried start
    assert task.status == TaskStatus(RUNNING, 0)


async def test_a_state_without_progress_keeps_the_last_progress() -> None:
    task = Tracker().track("TA_AAAAAAAA", make_release(), "running", now=0)
    task.observe(TaskStatus(RUNNING, 40), now=1)
    assert not task.observe(TaskStatus(RUNNING), now=2)
    assert task.status == TaskStatus(RUNNING, 40)


async def test_news_wakes_a_waiter_armed_before_it() -> None:
    task = Tracker().track("TA_AAAAAAAA", make_release(), "running", now=0)
    task.arm()
    assert not await task.wait(0.01)
    task.observe(TaskStatus(RUNNING, 10), now=1)
    assert await task.wait(5)
    task.arm()
    task.fail("garbage")
    assert await task.wait(5)
    assert task.error == "garbage"


async def test_a_new_step_forgets_the_last_error_and_the_oldest_tasks_are_forgotten() -> None:
    tracker = Tracker(max_tasks=2)
    first = make_release()
    task = tracker.track("TA_AAAAAAAA", first, "running", now=0)
    task.fail("garbage")
    assert tracker.track("TA_AAAAAAAA", first, "publishing", now=1).error is None
    tracker.track("TA_BBBBBBBB", make_release(), "initializing", now=2)
    tracker.track("TA_CCCCCCCC", make_release(), "initializing", now=3)
    assert tracker.task("TA_AAAAAAAA") is None
    assert tracker.by_release(first.id) is None
    assert tracker.task("TA_CCCCCCCC") is not None
