"""What the mutation run found untested: the stamps, fields and commands each decision writes.

Each test here kills mutants of ``coordinator/machine/`` that survived the state machine's other unit
tests (README, "Mutation testing"): a field a decision must write, a command's address or content, a
verdict, a refusal that must or must not happen.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator.machine import (
    Begin,
    Cancel,
    Decision,
    Edit,
    HealthVerdict,
    Hold,
    Input,
    InstanceLost,
    NoteChange,
    ProgressReceived,
    Publish,
    ReplyReceived,
    Unhold,
    Verdict,
    decide,
)
from schemas.documents import MAX_NOTE_BYTES, MAX_NOTES_TOTAL_BYTES
from schemas.enums import Action, MessageKind, Outcome, ReleaseState, TaskState
from schemas.messages import AddNote, Command, EditNote, decode
from tests.unit.releases import SERVICES, T0, TIMEOUTS, Driver, new_release, progress, reply


def _commands(decision: Decision) -> list[tuple[str, Command]]:
    return [
        (m.routing_key, decode(m.body.encode(), Command))
        for m in (*decision.messages, *decision.unstored)
        if m.kind is MessageKind.COMMAND
    ]


def _stamped(d: Driver, *events: Callable[[], Input]) -> None:
    """Each event, applied in turn, writes a new revision stamped with the time of that event."""
    for event in events:
        revision = d.release.revision
        decision = d.apply(event())
        assert decision.verdict is Verdict.APPLIED, decision.reason
        assert decision.release.revision == revision + 1
        assert decision.release.updated_at == d.now


def test_every_applied_decision_stamps_the_release_with_the_time_of_its_input() -> None:
    """``updated_at`` is what watchers compare to keep the newer view (``rc release watch``, dashboard)."""
    d = Driver().to(ReleaseState.INITIALIZING)
    _stamped(
        d,
        lambda: ReplyReceived(reply(d.release, "portal", Action.INITIALIZE, Outcome.ACCEPTED), d.tick()),
        lambda: Edit(d.tick(), "ann", name="Renamed"),
        lambda: NoteChange(d.tick(), "ann", AddNote(release_id=d.release.id, text="hello")),
    )
    d = Driver().to(ReleaseState.RUNNING)
    _stamped(
        d,
        lambda: ProgressReceived(progress(d.release, "portal", 40), d.tick()),
        lambda: InstanceLost(d.tick(), "portal", "test:1", "stopped heartbeating"),
    )
    d = Driver().to(ReleaseState.STAGED)
    _stamped(d, lambda: Hold(d.tick(), "ops"), lambda: Unhold(d.tick(), "ops"))
    assert d.release.held is False
    _stamped(d, lambda: Publish(d.tick(), "ops", None), lambda: Publish(d.tick(), "ops", None))
    d = Driver().to(ReleaseState.CANCELING)
    first, second, *_ = SERVICES
    _stamped(
        d,
        lambda: ReplyReceived(reply(d.release, first, Action.CANCEL, Outcome.CANCELED), d.tick()),
        lambda: ReplyReceived(reply(d.release, second, Action.CANCEL, Outcome.FAILED), d.tick()),
    )


def test_a_transition_records_when_the_release_and_each_task_entered_their_state() -> None:
    """``entered`` dates the steps: the store's publication date, the state durations, the dashboard's
    timeline."""
    d = Driver()
    begun = d.apply(Begin(d.tick()))
    assert begun.release.entered[ReleaseState.INITIALIZING] == d.now
    for task in begun.release.tasks.values():
        assert (task.entered[TaskState.WAITING], task.updated_at) == (d.now, d.now)
    d.answer_all(Action.INITIALIZE, Outcome.ACCEPTED)
    assert d.release.entered[ReleaseState.RUNNING] == d.now
    for task in d.release.tasks.values():
        assert task.entered[TaskState.RUNNING] == d.now
        assert task.entered[TaskState.INITIALIZED] <= d.now
    before = d.release.tasks
    failed = d.apply(
        ReplyReceived(reply(d.release, "portal", Action.START, Outcome.FAILED, "disk"), d.tick())
    )
    for service, task in failed.release.tasks.items():
        if service == "portal":
            continue
        assert task.state is TaskState.CANCELED
        assert task.entered == {**before[service].entered, TaskState.CANCELED: d.now}
        assert (task.updated_at, task.deadline_at) == (d.now, None)
        assert task.last_message == failed.reason
    assert [c.reason for _, c in _commands(failed)] == [failed.reason] * (len(SERVICES) - 1)


def test_an_answer_records_its_progress_message_and_time_and_clears_the_deadline() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ProgressReceived(progress(d.release, "portal", 40), d.tick()))
    answer = reply(d.release, "portal", Action.START, Outcome.STAGED, "staged 12 files")
    task = d.apply(ReplyReceived(answer, d.tick())).release.tasks["portal"]
    assert (task.state, task.progress, task.deadline_at) == (TaskState.STAGED, 100.0, None)
    assert (task.last_message, task.last_message_id) == ("staged 12 files", answer.message_id)
    assert (task.entered[TaskState.STAGED], task.updated_at) == (d.now, d.now)

    d = Driver().to(ReleaseState.INITIALIZING)
    accepted = d.apply(
        ReplyReceived(reply(d.release, "portal", Action.INITIALIZE, Outcome.ACCEPTED), d.tick())
    )
    assert accepted.release.tasks["portal"].progress == 0.0
    assert accepted.release.tasks["portal"].deadline_at is None


def test_progress_records_its_note_message_id_and_time() -> None:
    """The dashboard matches a task's ``last_message_id`` to the report it has shown already."""
    d = Driver().to(ReleaseState.RUNNING)
    noted = progress(d.release, "portal", 40).model_copy(update={"note": "halfway"})
    task = d.apply(ProgressReceived(noted, d.tick())).release.tasks["portal"]
    assert (task.last_message, task.last_message_id, task.updated_at) == ("halfway", noted.message_id, d.now)
    silent = progress(d.release, "portal", 50)
    task = d.apply(ProgressReceived(silent, d.tick())).release.tasks["portal"]
    assert (task.last_message, task.last_message_id, task.progress) == ("halfway", silent.message_id, 50.0)


def test_progress_from_a_service_outside_the_release_is_refused() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    decision = d.apply(ProgressReceived(progress(d.release, "stranger", 40), d.tick()))
    assert (decision.verdict, decision.messages) == (Verdict.REFUSED, ())
    assert decision.reason == "stranger is not a required service of this release"


def test_commands_go_to_their_service_name_the_stored_revision_and_carry_the_release() -> None:
    described = new_release(is_major=True).model_copy(
        update={"description": "Spring data", "tags": ("spring",), "author": "ann"}
    )
    d = Driver(release=described)
    decision = d.apply(Begin(d.tick()))
    sent = _commands(decision)
    assert sorted(key for key, _ in sent) == sorted(f"task.{s}.initialize" for s in SERVICES)
    for _, command in sent:
        assert (
            command.message_id == f"{described.id}.initialize.{command.service}.r{decision.release.revision}"
        )
        info = command.release
        assert (info.description, info.tags, info.author, info.is_major) == (
            "Spring data",
            ("spring",),
            "ann",
            True,
        )


def test_a_cancel_to_one_instance_says_why_and_its_id_fits_the_limit() -> None:
    long_service = "s" + "x" * 50
    d = Driver(release=new_release((long_service,))).to(ReleaseState.RUNNING)
    d.apply(Cancel(d.tick(), "ops", "wrong studies"))
    stray = progress(d.release, long_service, 30).model_copy(update={"instance_id": "w" * 80})
    decision = d.apply(ProgressReceived(stray, d.tick()))
    [(_, cancel)] = _commands(decision)
    assert cancel.reason == decision.reason
    assert cancel.message_id.startswith(f"{d.release.id}.cancel.{long_service}.r")
    assert len(cancel.message_id) == 128


def test_a_failed_release_sends_no_cancel_to_an_instance_of_the_service_that_failed() -> None:
    """Only the services a failure canceled were told to discard their data."""
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ReplyReceived(reply(d.release, "portal", Action.START, Outcome.FAILED, "disk"), d.tick()))
    stray = progress(d.release, "portal", 30).model_copy(update={"instance_id": "worker:2"})
    decision = d.apply(ProgressReceived(stray, d.tick()))
    assert (decision.verdict, decision.unstored) == (Verdict.STALE, ())


def test_health_that_names_no_service_of_the_release_changes_nothing() -> None:
    d = Driver().to(ReleaseState.INITIALIZING)
    before = d.release
    decision = d.apply(HealthVerdict(d.tick(), {"stranger": "no heartbeat"}))
    assert (decision.verdict, decision.release, decision.messages) == (Verdict.STALE, before, ())
    assert decision.reason == "every service of the release is healthy"


def test_a_different_answer_from_a_task_that_answered_already_is_a_duplicate() -> None:
    d = Driver().to(ReleaseState.RUNNING)
    d.apply(ReplyReceived(reply(d.release, "portal", Action.START, Outcome.STAGED), d.tick()))
    before = d.release
    decision = d.apply(ReplyReceived(reply(d.release, "portal", Action.START, Outcome.FAILED), d.tick()))
    assert (decision.verdict, decision.release) == (Verdict.DUPLICATE, before)
    assert decision.reason == "portal already answered start (task is staged)"


def test_unhealthy_at_begin_cancels_every_task_and_says_why_on_the_unhealthy_one() -> None:
    d = Driver()
    decision = d.apply(Begin(d.tick(), {"portal": "no heartbeat"}))
    assert decision.release.state is ReleaseState.CANCELED
    for service, task in decision.release.tasks.items():
        assert (task.state, task.entered[TaskState.CANCELED], task.updated_at) == (
            TaskState.CANCELED,
            d.now,
            d.now,
        )
        assert task.last_message == ("no heartbeat" if service == "portal" else None)


def test_cancel_before_begin_cancels_every_task_with_the_operator_reason() -> None:
    d = Driver()
    decision = d.apply(Cancel(d.tick(), "ops", "wrong studies"))
    assert decision.release.state is ReleaseState.CANCELED
    for task in decision.release.tasks.values():
        assert (task.state, task.entered[TaskState.CANCELED]) == (TaskState.CANCELED, d.now)
        assert task.last_message == "canceled by ops: wrong studies"


def test_a_note_edit_changes_that_note_only_and_an_unknown_note_is_refused() -> None:
    release = new_release().model_copy(update={"state": ReleaseState.STAGED})
    for text in ("first", "second"):
        release = decide(
            release, NoteChange(T0, "ann", AddNote(release_id=release.id, text=text)), TIMEOUTS
        ).release
    edit = NoteChange(T0, "bob", EditNote(release_id=release.id, note_id="N1", text="revised"))
    edited = decide(release, edit, TIMEOUTS).release
    assert [n.text for n in edited.notes] == ["revised", "second"]
    unknown = NoteChange(T0, "bob", EditNote(release_id=release.id, note_id="N7", text="x"))
    assert decide(release, unknown, TIMEOUTS).verdict is Verdict.REFUSED


def test_studies_may_change_while_the_notes_are_general_or_on_kept_studies() -> None:
    sd_a, sd_b = "SD_AAAAAAAA", "SD_BBBBBBBB"
    release = new_release().model_copy(update={"state": ReleaseState.INITIALIZING, "studies": (sd_a, sd_b)})
    for study in (None, sd_a):
        change = AddNote(release_id=release.id, text="note", study=study)
        release = decide(release, NoteChange(T0, "ann", change), TIMEOUTS).release
    decision = decide(release, Edit(T0, "ann", studies=(sd_a,)), TIMEOUTS)
    assert decision.verdict is Verdict.APPLIED, decision.reason
    assert decision.release.studies == (sd_a,)


def test_the_notes_may_take_exactly_the_total_limit() -> None:
    release = new_release().model_copy(update={"state": ReleaseState.STAGED})
    big = NoteChange(T0, "ann", AddNote(release_id=release.id, text="a" * MAX_NOTE_BYTES))
    release = decide(release, big, TIMEOUTS).release

    def add(length: int) -> Decision:
        return decide(
            release, NoteChange(T0, "ann", AddNote(release_id=release.id, text="a" * length)), TIMEOUTS
        )

    from coordinator.machine.rules import notes_size

    fits = 1 + MAX_NOTES_TOTAL_BYTES - notes_size(add(1).release.notes)
    exact = add(fits)
    assert notes_size(exact.release.notes) == MAX_NOTES_TOTAL_BYTES
    assert exact.verdict is Verdict.APPLIED
    assert add(fits + 1).verdict is Verdict.REFUSED
