"""Random sequences of replies, duplicates, deadlines and operator commands keep the invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.machine import (
    Begin,
    Cancel,
    DeadlineCheck,
    HealthVerdict,
    Hold,
    Input,
    ProgressReceived,
    Publish,
    ReplyReceived,
    Unhold,
    Verdict,
)
from coordinator.versioning import next_final
from schemas.documents import Release
from schemas.enums import OUTCOMES_BY_ACTION, Action, Outcome, ReleaseState, TaskState
from schemas.messages import TaskReply
from tests.unit.releases import SERVICES, Driver, progress, reply

HIGHEST_FINAL = "2.4.0"

service = st.sampled_from(SERVICES)
reply_move = st.tuples(st.just("reply"), service, st.sampled_from(list(Action))).flatmap(
    lambda t: st.tuples(
        st.just(t[0]), st.just(t[1]), st.just(t[2]), st.sampled_from(sorted(OUTCOMES_BY_ACTION[t[2]]))
    )
)
move = st.one_of(
    reply_move,
    reply_move,
    reply_move,
    st.tuples(st.just("duplicate")),
    st.tuples(st.just("progress"), service, st.floats(0, 100)),
    st.tuples(st.just("deadline"), st.integers(0, 3600)),
    st.tuples(st.just("unhealthy"), service),
    st.tuples(st.sampled_from(["begin", "hold", "unhold", "publish", "cancel"])),
)


def to_event(d: Driver, m: tuple[object, ...], last: TaskReply | None) -> Input | None:
    match m:
        case ("reply", str(s), Action() as action, outcome):
            return ReplyReceived(reply(d.release, s, action, outcome), d.tick())  # type: ignore[arg-type]
        case ("duplicate",):
            return None if last is None else ReplyReceived(last, d.tick())
        case ("progress", str(s), float(pct)):
            return ProgressReceived(progress(d.release, s, pct), d.tick())
        case ("deadline", int(seconds)):
            return DeadlineCheck(d.tick(seconds))
        case ("unhealthy", str(s)):
            return HealthVerdict(d.tick(), {s: "missed heartbeats"})
        case ("begin",):
            return Begin(d.tick())
        case ("hold",):
            return Hold(d.tick(), "ops")
        case ("unhold",):
            return Unhold(d.tick(), "ops")
        case ("publish",):
            return Publish(d.tick(), "ops", HIGHEST_FINAL)
        case ("cancel",):
            return Cancel(d.tick(), "ops", "random")
    raise AssertionError(m)


def check_invariants(before: Release, after: Release, applied: bool) -> None:
    if not applied:
        assert after is before
        return
    assert after.revision == before.revision + 1
    assert not before.state.is_terminal, "a terminal release never changes"
    tasks = after.tasks.values()
    if after.state is ReleaseState.PUBLISHED:
        assert all(t.state is TaskState.PUBLISHED for t in tasks)
    if after.state is ReleaseState.STAGED:
        assert all(t.state is TaskState.STAGED for t in tasks)
    if after.state in (ReleaseState.PUBLISHING, ReleaseState.PUBLISHED):
        assert all(TaskState.STAGED in t.entered for t in tasks), "publishing only what is staged everywhere"
    if any(TaskState.PUBLISHING in t.entered for t in tasks):
        assert ReleaseState.STAGED in after.entered
        assert all(TaskState.STAGED in t.entered for t in tasks)
    if after.final_version is not None:
        assert after.final_version == next_final(HIGHEST_FINAL, is_major=after.is_major)
        assert before.final_version in (None, after.final_version), "a final version is assigned once"
        assert ReleaseState.PUBLISHING in after.entered
    if after.held:
        assert after.state is ReleaseState.STAGED


@settings(max_examples=400, deadline=None)
@given(moves=st.lists(move, max_size=40), start_begun=st.booleans())
def test_random_sequences_keep_the_invariants(moves: list[tuple[object, ...]], start_begun: bool) -> None:
    d = Driver()
    if start_begun:
        d.apply(Begin(d.tick()))
    seen_ids: set[str] = {m.message_id for m in d.release.outbox}
    last: TaskReply | None = None
    applied_replies: set[str] = set()
    for m in moves:
        event = to_event(d, m, last)
        if event is None:
            continue
        if isinstance(event, ReplyReceived):
            last = event.reply
        before = d.release
        decision = d.apply(event)
        check_invariants(before, decision.release, decision.applied)
        if isinstance(event, ReplyReceived):
            if event.reply.message_id in applied_replies:
                assert decision.verdict is Verdict.DUPLICATE, "an applied reply sent again is a duplicate"
            if decision.applied:
                applied_replies.add(event.reply.message_id)
        new_ids = [e.message_id for e in decision.messages]
        assert len(set(new_ids)) == len(new_ids)
        assert seen_ids.isdisjoint(new_ids), "a message id is never reused for another message"
        seen_ids.update(new_ids)


@settings(max_examples=100, deadline=None)
@given(orders=st.lists(st.permutations(SERVICES), min_size=3, max_size=3))
def test_happy_path_in_any_reply_order_publishes(orders: list[list[str]]) -> None:
    """Whatever order the services answer in, the release advances once, after the last answer."""
    d = Driver().to(ReleaseState.INITIALIZING)
    steps = [
        (Action.INITIALIZE, Outcome.ACCEPTED),
        (Action.START, Outcome.STAGED),
        (Action.PUBLISH, Outcome.PUBLISHED),
    ]
    for (action, outcome), order in zip(steps, orders, strict=True):
        state = d.release.state
        for position, s in enumerate(order):
            d.apply(ReplyReceived(reply(d.release, s, action, outcome), d.tick()))
            last = position == len(order) - 1
            assert (d.release.state is not state) == last
        if d.release.state is ReleaseState.STAGED:
            d.apply(Publish(d.tick(), "ops", None))
    assert d.release.state is ReleaseState.PUBLISHED
    assert d.release.final_version == "0.1.0"
