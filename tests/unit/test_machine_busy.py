"""A command that waits in its service's queue because every instance of the service is busy (a ``start``
no instance has taken yet, an ``initialize``, a ``publish``) has its deadline moved on instead of ending
the release: an instance whose process slots are all taken consumes nothing from the queue until one frees."""

from __future__ import annotations

import pytest

from coordinator.machine import DeadlineCheck, ProgressReceived, ReplyReceived, Verdict
from schemas.enums import Action, Outcome, ReleaseState
from tests.unit.releases import TIMEOUTS, Driver, progress, reply


def _portal_silent() -> Driver:
    """A running release whose other services staged; portal's start is not answered."""
    d = Driver().to(ReleaseState.RUNNING)
    for service in ("file-service", "search-index"):
        d.apply(ReplyReceived(reply(d.release, service, Action.START, Outcome.STAGED), d.tick()))
    return d


def test_a_start_waiting_behind_busy_instances_gets_its_deadline_moved_on() -> None:
    d = _portal_silent()
    late = d.tick(TIMEOUTS.process.total_seconds() + 1)
    moved = d.apply(DeadlineCheck(late, frozenset({"portal"})))
    assert (moved.verdict, d.release.state) == (Verdict.APPLIED, ReleaseState.RUNNING)
    assert d.release.tasks["portal"].deadline_at == late + TIMEOUTS.process
    assert d.release.tasks["portal"].updated_at == d.release.updated_at == late
    assert moved.reason.startswith("start still waiting in the queue of portal: every instance is busy")
    assert moved.messages == ()  # the start already waits in the queue: nothing sent again

    failed = d.apply(DeadlineCheck(d.tick(TIMEOUTS.process.total_seconds() + 1)))  # no longer busy
    assert (failed.verdict, d.release.state) == (Verdict.APPLIED, ReleaseState.FAILED)


def test_a_start_an_instance_took_is_not_waiting_for_a_slot() -> None:
    d = _portal_silent()
    d.apply(ProgressReceived(progress(d.release, "portal", 10), d.tick()))  # an instance took it
    d.apply(DeadlineCheck(d.tick(TIMEOUTS.process.total_seconds() + 1), frozenset({"portal"})))
    assert d.release.state is ReleaseState.FAILED


def test_one_silent_service_that_is_not_busy_fails_the_release() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ReplyReceived(reply(d.release, "file-service", Action.START, Outcome.STAGED), d.tick()))
    d.apply(DeadlineCheck(d.tick(TIMEOUTS.process.total_seconds() + 1), frozenset({"portal"})))
    assert d.release.state is ReleaseState.FAILED
    assert "search-index" in (d.release.state_reason or "")


def _silent_in(state: ReleaseState, action: Action, outcome: Outcome) -> Driver:
    """A release in ``state`` whose services answered ``action`` but portal."""
    d = Driver().to(state)
    for service in ("file-service", "search-index"):
        d.apply(ReplyReceived(reply(d.release, service, action, outcome), d.tick()))
    return d


@pytest.mark.parametrize(
    ("state", "action", "outcome"),
    [
        # the other services are public already: failing now would leave portal behind them
        (ReleaseState.PUBLISHING, Action.PUBLISH, Outcome.PUBLISHED),
        (ReleaseState.INITIALIZING, Action.INITIALIZE, Outcome.ACCEPTED),
    ],
)
def test_a_command_waiting_behind_busy_instances_does_not_end_the_release(
    state: ReleaseState, action: Action, outcome: Outcome
) -> None:
    d = _silent_in(state, action, outcome)
    limit = TIMEOUTS.awaiting(action)
    late = d.tick(limit.total_seconds() + 1)
    moved = d.apply(DeadlineCheck(late, frozenset({"portal"})))
    assert (moved.verdict, d.release.state) == (Verdict.APPLIED, state)
    assert d.release.tasks["portal"].deadline_at == late + limit
    assert moved.reason.startswith(f"{action} still waiting in the queue of portal: every instance is busy")
    assert moved.messages == ()  # the command already waits in the queue: nothing sent again

    d.apply(ReplyReceived(reply(d.release, "portal", action, outcome), d.tick()))
    assert d.release.tasks["portal"].answers[action] is outcome


def test_a_publish_still_unanswered_once_its_service_is_free_fails_the_release() -> None:
    d = _silent_in(ReleaseState.PUBLISHING, Action.PUBLISH, Outcome.PUBLISHED)
    d.apply(DeadlineCheck(d.tick(TIMEOUTS.publish.total_seconds() + 1), frozenset({"portal"})))
    d.apply(DeadlineCheck(d.tick(TIMEOUTS.publish.total_seconds() + 1)))  # no longer busy
    assert d.release.state is ReleaseState.FAILED
    assert "no answer to publish" in (d.release.state_reason or "")


def test_a_cancel_is_never_waiting_for_a_slot() -> None:
    """A cancel goes to the processing instance's own control queue: busy or not, its limit holds."""
    d = Driver().to(ReleaseState.CANCELING)
    d.apply(DeadlineCheck(d.tick(TIMEOUTS.cancel.total_seconds() + 1), frozenset(d.release.tasks)))
    assert d.release.state is ReleaseState.CANCELED
