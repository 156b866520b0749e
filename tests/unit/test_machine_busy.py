"""A ``start`` that no instance has taken yet, while every instance of its service is busy, waits in the
service's queue: its processing deadline is moved on instead of failing the release."""

from __future__ import annotations

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
