"""What each transition sends, names and records."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

from coordinator.machine import (
    MAX_STARTS,
    Begin,
    Cancel,
    DeadlineCheck,
    Decision,
    HealthVerdict,
    Hold,
    InstanceLost,
    ProgressReceived,
    Publish,
    ReplyReceived,
    Unhold,
    Verdict,
    awaiting_services,
    next_deadline,
)
from schemas.enums import Action, MessageKind, Outcome, ReleaseState, TaskState
from schemas.messages import Announcement, Command, decode
from schemas.topology import Topology
from tests.sabotage.plugin import caught_by
from tests.unit.releases import SERVICES, TIMEOUTS, Driver, new_release, progress, reply


def commands(decision_messages: tuple[object, ...]) -> list[Command]:
    return [
        decode(m.body.encode(), Command)  # type: ignore[attr-defined]
        for m in decision_messages
        if m.kind is MessageKind.COMMAND  # type: ignore[attr-defined]
    ]


def test_begin_sends_initialize_to_every_service_and_announces() -> None:
    d = Driver()
    decision = d.apply(Begin(d.tick()))
    sent = commands(decision.messages)
    assert sorted(c.service for c in sent) == sorted(SERVICES)
    assert {c.action for c in sent} == {Action.INITIALIZE}
    assert all(c.release.tentative_version == "0.0.1" for c in sent)
    announcement = [m for m in decision.messages if m.kind is MessageKind.ANNOUNCEMENT]
    assert [m.routing_key for m in announcement] == ["release.initializing"]
    assert decision.release.outbox == decision.messages
    assert all(t.deadline_at == d.now + TIMEOUTS.initialize for t in decision.release.tasks.values())


def test_release_advances_only_when_every_service_answered() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    first, *others = SERVICES
    decision = d.apply(ReplyReceived(reply(d.release, first, Action.INITIALIZE, Outcome.ACCEPTED), d.tick()))
    assert decision.release.state is ReleaseState.INITIALIZING
    assert decision.messages == ()
    assert sorted(awaiting_services(d.release)) == sorted(others)
    for service in others:
        decision = d.apply(
            ReplyReceived(reply(d.release, service, Action.INITIALIZE, Outcome.ACCEPTED), d.tick())
        )
    assert decision.release.state is ReleaseState.RUNNING
    assert {c.action for c in commands(decision.messages)} == {Action.START}
    assert all(t.state is TaskState.RUNNING for t in d.release.tasks.values())


def test_the_reason_written_on_every_reply_stays_short_whatever_the_number_of_services() -> None:
    """Each reply's reason (stored in its audit event and logged) names a few of the services still
    awaited and counts the rest: naming all of them made the audit trail of a step grow as the square
    of the number of services (about 300 KB a step at 300 services)."""
    services = tuple(f"svc{i:03d}" for i in range(300))
    d = Driver(release=new_release(services)).to(ReleaseState.INITIALIZING)
    first = d.apply(ReplyReceived(reply(d.release, "svc000", Action.INITIALIZE, Outcome.ACCEPTED), d.tick()))
    assert first.reason == "waiting on 299 service(s): svc001, svc002, svc003, svc004, svc005 and 294 more"
    reasons = [first.reason]
    for service in services[1:-1]:
        decision = d.apply(
            ReplyReceived(reply(d.release, service, Action.INITIALIZE, Outcome.ACCEPTED), d.tick())
        )
        reasons.append(decision.reason)
    assert reasons[-1] == "waiting on 1 service(s): svc299"
    assert max(map(len, reasons)) < 100


def test_rejection_cancels_and_tells_the_others() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    decision = d.apply(
        ReplyReceived(
            reply(d.release, "portal", Action.INITIALIZE, Outcome.REJECTED, "study SD_X unknown"), d.tick()
        )
    )
    assert decision.release.state is ReleaseState.CANCELING
    assert "portal" in (decision.release.state_reason or "")
    assert "study SD_X unknown" in (decision.release.state_reason or "")
    told = sorted(c.service for c in commands(decision.messages))
    assert told == ["file-service", "search-index"]
    for service in told:
        decision = d.apply(
            ReplyReceived(reply(d.release, service, Action.CANCEL, Outcome.CANCELED), d.tick())
        )
    assert decision.release.state is ReleaseState.CANCELED
    assert "portal" in (decision.release.state_reason or "")


def test_unhealthy_service_at_begin_cancels_at_once_with_its_name() -> None:
    d = Driver()
    decision = d.apply(Begin(d.tick(), {"search-index": "no consumer on its queue"}))
    assert decision.release.state is ReleaseState.CANCELED
    assert "search-index (no consumer on its queue)" in (decision.release.state_reason or "")
    assert commands(decision.messages) == []


def test_unhealthy_service_during_initialization_cancels() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    decision = d.apply(HealthVerdict(d.tick(), {"portal": "missed heartbeats"}))
    assert decision.release.state is ReleaseState.CANCELING
    assert "portal (missed heartbeats)" in (decision.release.state_reason or "")


def test_initialization_deadline_names_the_silent_services() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    d.apply(ReplyReceived(reply(d.release, "portal", Action.INITIALIZE, Outcome.ACCEPTED), d.tick()))
    early = d.apply(DeadlineCheck(d.tick(5)))
    assert early.verdict is Verdict.STALE
    deadline = next_deadline(d.release)
    assert deadline is not None
    decision = d.apply(DeadlineCheck(deadline))
    assert decision.release.state is ReleaseState.CANCELING
    assert "file-service, search-index" in (decision.release.state_reason or "")


def test_failure_during_processing_fails_names_service_and_discards_the_others() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ReplyReceived(reply(d.release, "portal", Action.START, Outcome.STAGED), d.tick()))
    decision = d.apply(
        ReplyReceived(reply(d.release, "search-index", Action.START, Outcome.FAILED, "disk full"), d.tick())
    )
    assert decision.release.state is ReleaseState.FAILED
    assert decision.release.state_reason == "search-index failed during processing: disk full"
    cancel = commands(decision.messages)
    assert sorted(c.service for c in cancel) == ["file-service", "portal"]
    assert {c.action for c in cancel} == {Action.CANCEL}


def test_progress_extends_the_processing_deadline() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    started = next_deadline(d.release)
    assert started is not None
    d.now = started - timedelta(seconds=1)
    for service in SERVICES:
        d.apply(ProgressReceived(progress(d.release, service, 50), d.now))
    assert d.apply(DeadlineCheck(started + timedelta(seconds=1))).verdict is Verdict.STALE
    assert d.release.tasks["portal"].progress == 50
    later = next_deadline(d.release)
    assert later is not None
    assert later > started
    decision = d.apply(DeadlineCheck(later))
    assert decision.release.state is ReleaseState.FAILED
    assert "file-service, portal, search-index" in (decision.release.state_reason or "")


def test_hold_blocks_publication_until_unhold() -> None:
    d = Driver().to(ReleaseState.STAGED)
    d.apply(Hold(d.tick(), "alice"))
    assert d.release.held
    refused = d.apply(Publish(d.tick(), "bob", None))
    assert refused.verdict is Verdict.REFUSED
    assert "hold" in refused.reason
    d.apply(Unhold(d.tick(), "alice"))
    decision = d.apply(Publish(d.tick(), "bob", None))
    assert decision.release.state is ReleaseState.PUBLISHING
    assert not decision.release.held


@caught_by("reuse-version")
def test_publication_assigns_the_final_version_and_tells_every_service() -> None:
    d = Driver().to(ReleaseState.STAGED)
    decision = d.apply(Publish(d.tick(), "ops", "0.3.0"))
    assert decision.release.final_version == "0.4.0"
    sent = commands(decision.messages)
    assert {c.action for c in sent} == {Action.PUBLISH}
    assert {c.release.final_version for c in sent} == {"0.4.0"}
    d.answer_all(Action.PUBLISH, Outcome.PUBLISHED)
    assert d.release.state is ReleaseState.PUBLISHED
    final = next(m for m in d.decisions[-1].messages if m.kind is MessageKind.ANNOUNCEMENT)
    assert decode(final.body.encode(), Announcement).release.version == "0.4.0"


def test_major_release_bumps_major() -> None:
    d = Driver(release=Driver().release.model_copy(update={"is_major": True})).to(ReleaseState.STAGED)
    assert d.apply(Publish(d.tick(), "ops", "0.3.0")).release.final_version == "1.0.0"


def test_publication_retry_resends_only_to_services_not_yet_published() -> None:
    d = Driver().to(ReleaseState.PUBLISHING)
    d.apply(ReplyReceived(reply(d.release, "portal", Action.PUBLISH, Outcome.PUBLISHED), d.tick()))
    decision = d.apply(Publish(d.tick(), "ops", None))
    assert decision.verdict is Verdict.APPLIED
    assert sorted(c.service for c in commands(decision.messages)) == ["file-service", "search-index"]
    assert decision.release.final_version == d.decisions[-2].release.final_version


def test_operator_cancel_reaches_every_service() -> None:
    d = Driver().to(ReleaseState.STAGED)
    decision = d.apply(Cancel(d.tick(), "alice", "bad data in SD_X"))
    assert decision.release.state is ReleaseState.CANCELING
    assert sorted(c.service for c in commands(decision.messages)) == sorted(SERVICES)
    assert {c.reason for c in commands(decision.messages)} == {"canceled by alice: bad data in SD_X"}


def test_illegal_operator_commands_are_refused_with_a_reason() -> None:
    running = Driver().to(ReleaseState.RUNNING)
    refusal = running.apply(Publish(running.tick(), "ops", None))
    assert refusal.verdict is Verdict.REFUSED
    assert refusal.reason == "only a staged release can be published; this one is running"
    published = Driver().to(ReleaseState.PUBLISHED)
    refusal = published.apply(Cancel(published.tick(), "ops", "oops"))
    assert refusal.reason == "the release is already published"
    publishing = Driver().to(ReleaseState.PUBLISHING)
    refusal = publishing.apply(Cancel(publishing.tick(), "ops", "oops"))
    assert refusal.verdict is Verdict.REFUSED
    assert "retry the publication" in refusal.reason


def test_duplicate_reply_changes_nothing_and_says_why() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    answer = reply(d.release, "portal", Action.INITIALIZE, Outcome.ACCEPTED)
    d.apply(ReplyReceived(answer, d.tick()))
    before = d.release
    again = d.apply(ReplyReceived(answer, d.tick()))
    assert again.verdict is Verdict.DUPLICATE
    assert again.release is before
    assert "portal already answered initialize" in again.reason


def test_stale_reply_changes_nothing() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    late = d.apply(ReplyReceived(reply(d.release, "portal", Action.INITIALIZE, Outcome.REJECTED), d.tick()))
    assert late.verdict is Verdict.STALE
    assert late.reason == "initialize reply from portal while the release is running"


def test_reply_from_a_service_outside_the_snapshot_is_refused() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    stranger = reply(d.release, "portal", Action.INITIALIZE, Outcome.ACCEPTED).model_copy(
        update={"service": "intruder"}
    )
    decision = d.apply(ReplyReceived(stranger, d.tick()))
    assert decision.verdict is Verdict.REFUSED
    assert "intruder is not a required service" in decision.reason


def test_message_ids_are_deterministic_so_a_replay_sends_the_same_ids() -> None:
    first, second = Driver(), Driver()
    a = first.apply(Begin(first.tick()))
    b = second.apply(Begin(second.tick()))
    assert [m.message_id for m in a.messages] == [m.message_id for m in b.messages]
    assert json.loads(a.messages[0].body)["message_id"] == a.messages[0].message_id


def test_a_task_whose_instance_stopped_is_started_again_after_a_backoff_then_the_release_fails() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    sent = {c.message_id for c in commands(d.decisions[-1].messages) if c.service == "portal"}
    assert len(sent) == 1  # the first start
    first = d.release.tasks["portal"]
    assert (first.starts, first.instance) == (1, None)
    d.apply(ProgressReceived(progress(d.release, "portal", 10), d.tick()))
    assert d.release.tasks["portal"].instance == "test:1"  # the instance its progress came from
    other = d.apply(InstanceLost(d.tick(), "portal", "somebody-else", "stopped heartbeating"))
    assert other.verdict is Verdict.STALE  # not the instance processing it
    for attempt, wait in ((2, TIMEOUTS.retry), (3, TIMEOUTS.retry * 2)):  # the wait doubles
        lost_at = d.tick()
        lost = d.apply(InstanceLost(lost_at, "portal", "test:1", "stopped heartbeating (31s without one)"))
        assert (lost.verdict, lost.messages) == (Verdict.APPLIED, ())  # nothing sent yet
        assert lost.reason == (
            f"start to be sent again to portal in {wait.total_seconds():g}s (attempt {attempt} of "
            f"{MAX_STARTS}): instance test:1 of portal stopped heartbeating (31s without one)"
        )
        task = d.release.tasks["portal"]
        assert (task.resend_at, task.deadline_at, task.instance) == (lost_at + wait, lost_at + wait, None)
        assert task.updated_at == d.release.updated_at == lost_at
        early = d.apply(DeadlineCheck(lost_at + wait - timedelta(seconds=1)))
        assert (early.verdict, early.messages) == (Verdict.STALE, ())
        again = d.apply(DeadlineCheck(lost_at + wait))
        assert again.reason == f"start sent again to portal (attempt {attempt} of {MAX_STARTS})"
        [start] = commands(again.messages)
        assert (start.action, start.service) == (Action.START, "portal")
        assert start.message_id not in sent  # a new command, which any instance may take
        sent.add(start.message_id)
        task = d.release.tasks["portal"]
        assert (task.starts, task.instance, task.state, task.resend_at) == (
            attempt,
            None,
            TaskState.RUNNING,
            None,
        )
        assert task.deadline_at == lost_at + wait + TIMEOUTS.process
        d.now = lost_at + wait
        d.apply(ProgressReceived(progress(d.release, "portal", 20), d.tick()))
    lost = d.apply(InstanceLost(d.tick(), "portal", "test:1", "stopped heartbeating"))
    assert d.release.state is ReleaseState.FAILED
    assert lost.reason.startswith("portal lost 3 instances while processing (the last: instance test:1")


def test_a_start_waiting_for_its_backoff_is_not_sent_once_an_instance_reports_progress_on_it() -> None:
    """The instance taken for lost was only cut off for a while: it processes the release still."""
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ProgressReceived(progress(d.release, "portal", 10), d.tick()))
    d.apply(InstanceLost(d.tick(), "portal", "test:1", "stopped heartbeating"))
    d.apply(ProgressReceived(progress(d.release, "portal", 30), d.tick()))
    task = d.release.tasks["portal"]
    assert (task.resend_at, task.instance, task.starts) == (None, "test:1", 1)
    later = d.apply(DeadlineCheck(d.tick(TIMEOUTS.retry.total_seconds() * 4)))
    assert [c for c in commands(later.messages) if c.action is Action.START] == []


def test_with_no_backoff_the_start_is_sent_again_at_once() -> None:
    d = Driver(timeouts=dataclasses.replace(TIMEOUTS, retry=timedelta(0))).to(ReleaseState.RUNNING)
    d.apply(ProgressReceived(progress(d.release, "portal", 10), d.tick()))
    lost_at = d.tick()
    lost = d.apply(InstanceLost(lost_at, "portal", "test:1", "stopped heartbeating"))
    assert lost.reason.startswith(f"start sent again to portal (attempt 2 of {MAX_STARTS}): instance test:1")
    assert d.release.updated_at == lost_at
    [start] = commands(lost.messages)
    task = d.release.tasks["portal"]
    assert (start.action, task.starts, task.instance, task.resend_at) == (Action.START, 2, None, None)
    assert task.deadline_at == d.now + TIMEOUTS.process


def test_an_instance_lost_after_its_task_staged_or_once_the_release_is_canceling_sends_no_start() -> None:
    """Only a task still processing, in a running release, is started again: not one its instance already
    staged while the others work, and not one whose release is being canceled (a start then would make the
    service process a release it was told to discard). Both were surviving mutants (make mutation)."""
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ProgressReceived(progress(d.release, "portal", 50), d.tick()))
    d.apply(ReplyReceived(reply(d.release, "portal", Action.START, Outcome.STAGED), d.tick()))
    assert (d.release.state, d.release.tasks["portal"].state) == (ReleaseState.RUNNING, TaskState.STAGED)
    after_staging = d.apply(InstanceLost(d.tick(), "portal", "test:1", "stopped heartbeating"))
    assert (after_staging.verdict, after_staging.messages) == (Verdict.STALE, ())

    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ProgressReceived(progress(d.release, "portal", 50), d.tick()))
    d.apply(Cancel(d.tick(), "ops", "wrong studies"))
    assert (d.release.state, d.release.tasks["portal"].state) == (ReleaseState.CANCELING, TaskState.RUNNING)
    while_canceling = d.apply(InstanceLost(d.tick(), "portal", "test:1", "stopped heartbeating"))
    assert (while_canceling.verdict, while_canceling.messages) == (Verdict.STALE, ())


def _progress_from(d: Driver, instance_id: str) -> Decision:
    message = progress(d.release, "portal", 30).model_copy(update={"instance_id": instance_id})
    return d.apply(ProgressReceived(message, d.tick()))


def _cancels_to(decision: Decision) -> list[str]:
    """The routing keys of the cancels a decision sends without storing anything."""
    assert (decision.verdict, decision.messages) == (Verdict.STALE, ())  # nothing stored
    return [
        m.routing_key for m in decision.unstored if decode(m.body.encode(), Command).action is Action.CANCEL
    ]


@caught_by("ignore-stray-instance")
def test_an_instance_processing_a_release_it_was_told_to_discard_gets_a_cancel_of_its_own() -> None:
    """The cancel went to the service's shared queue (no instance known yet), so it may have reached an
    idle instance: progress from the instance really processing gets that instance a cancel of its own,
    at each report while it goes on. Nothing is stored: the release stays as it is."""
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(Cancel(d.tick(), "ops", "wrong studies"))
    before = d.release
    for _ in range(2):
        stray = _progress_from(d, "worker:2")
        assert (stray.verdict, stray.release) == (Verdict.STALE, before)
        assert _cancels_to(stray) == [Topology().control_key("portal", "worker:2")]
        assert stray.reason == (
            "portal instance worker:2 is processing a release that is canceling: cancel sent to that instance"
        )
        [cancel] = stray.unstored
        assert cancel.message_id == f"{before.id}.cancel.portal.r{before.revision}.worker-2"


def test_the_instance_the_cancel_went_to_is_not_sent_another() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    _progress_from(d, "worker:1")
    d.apply(Cancel(d.tick(), "ops", "wrong studies"))
    assert _cancels_to(_progress_from(d, "worker:1")) == []
    assert _cancels_to(_progress_from(d, "worker:2")) == [Topology().control_key("portal", "worker:2")]


def test_a_failed_release_stops_a_stray_instance_of_a_canceled_task_only() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ReplyReceived(reply(d.release, "search-index", Action.START, Outcome.FAILED, "disk"), d.tick()))
    assert d.release.state is ReleaseState.FAILED
    assert d.release.tasks["portal"].state is TaskState.CANCELED
    assert _cancels_to(_progress_from(d, "worker:2")) == [Topology().control_key("portal", "worker:2")]

    published = Driver().to(ReleaseState.PUBLISHED)
    assert _cancels_to(_progress_from(published, "worker:2")) == []


def test_progress_for_a_release_canceled_before_any_start_sends_nothing() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    d.apply(Cancel(d.tick(), "ops", "wrong studies"))
    assert d.release.tasks["portal"].starts == 0
    assert _cancels_to(_progress_from(d, "worker:2")) == []


def test_an_instance_lost_outside_processing_changes_nothing() -> None:
    d = Driver().to(ReleaseState.STAGED)
    assert (
        d.apply(InstanceLost(d.tick(), "portal", "test:1", "stopped heartbeating")).verdict is Verdict.STALE
    )
