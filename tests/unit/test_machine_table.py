"""Every (state, event) pair of the release state machine, including the illegal ones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

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
from schemas.enums import Action, Outcome, ReleaseState
from tests.unit.releases import SERVICES, Driver, progress, reply

S = ReleaseState
FIRST = SERVICES[0]
LATER = timedelta(days=1)


def _reply(action: Action, outcome: Outcome) -> Callable[[Driver], Input]:
    return lambda d: ReplyReceived(reply(d.release, FIRST, action, outcome, "why"), d.tick())


EVENTS: dict[str, Callable[[Driver], Input]] = {
    "begin": lambda d: Begin(d.tick()),
    "begin_unhealthy": lambda d: Begin(d.tick(), {FIRST: "no consumer"}),
    "accepted": _reply(Action.INITIALIZE, Outcome.ACCEPTED),
    "rejected": _reply(Action.INITIALIZE, Outcome.REJECTED),
    "init_failed": _reply(Action.INITIALIZE, Outcome.FAILED),
    "staged": _reply(Action.START, Outcome.STAGED),
    "process_failed": _reply(Action.START, Outcome.FAILED),
    "self_canceled": _reply(Action.START, Outcome.CANCELED),
    "published": _reply(Action.PUBLISH, Outcome.PUBLISHED),
    "publish_failed": _reply(Action.PUBLISH, Outcome.FAILED),
    "canceled": _reply(Action.CANCEL, Outcome.CANCELED),
    "progress": lambda d: ProgressReceived(progress(d.release, FIRST, 40), d.tick()),
    "unhealthy": lambda d: HealthVerdict(d.tick(), {FIRST: "missed heartbeats"}),
    "deadline": lambda d: DeadlineCheck(d.tick(LATER.total_seconds())),
    "hold": lambda d: Hold(d.tick(), "ops"),
    "unhold": lambda d: Unhold(d.tick(), "ops"),
    "publish": lambda d: Publish(d.tick(), "ops", None),
    "cancel": lambda d: Cancel(d.tick(), "ops", "not needed"),
}

A, D, X, R = Verdict.APPLIED, Verdict.DUPLICATE, Verdict.STALE, Verdict.REFUSED
STALE_ALL = dict.fromkeys(EVENTS, (X, None))
REFUSE_OPS = {"hold": (R, None), "unhold": (R, None), "publish": (R, None), "cancel": (R, None)}

# (verdict, state afterwards); None = unchanged
EXPECTED: dict[ReleaseState, dict[str, tuple[Verdict, ReleaseState | None]]] = {
    S.WAITING: {
        **STALE_ALL,
        **REFUSE_OPS,
        "begin": (A, S.INITIALIZING),
        "begin_unhealthy": (A, S.CANCELED),
        "cancel": (A, S.CANCELED),
    },
    S.INITIALIZING: {
        **STALE_ALL,
        **REFUSE_OPS,
        "accepted": (A, S.INITIALIZING),
        "rejected": (A, S.CANCELING),
        "init_failed": (A, S.CANCELING),
        "unhealthy": (A, S.CANCELING),
        "deadline": (A, S.CANCELING),
        "cancel": (A, S.CANCELING),
    },
    S.RUNNING: {
        **STALE_ALL,
        **REFUSE_OPS,
        "accepted": (D, None),
        "staged": (A, S.RUNNING),
        "process_failed": (A, S.FAILED),
        "self_canceled": (A, S.CANCELING),
        "progress": (A, S.RUNNING),
        "deadline": (A, S.FAILED),
        "cancel": (A, S.CANCELING),
    },
    S.STAGED: {
        **STALE_ALL,
        **REFUSE_OPS,
        "accepted": (D, None),
        "staged": (D, None),
        "hold": (A, S.STAGED),
        "publish": (A, S.PUBLISHING),
        "cancel": (A, S.CANCELING),
    },
    S.PUBLISHING: {
        **STALE_ALL,
        **REFUSE_OPS,
        "accepted": (D, None),
        "staged": (D, None),
        "published": (A, S.PUBLISHING),
        "publish_failed": (A, S.FAILED),
        "deadline": (A, S.FAILED),
        "publish": (A, S.PUBLISHING),
    },
    S.PUBLISHED: {
        **STALE_ALL,
        **REFUSE_OPS,
        "accepted": (D, None),
        "staged": (D, None),
        "published": (D, None),
    },
    S.CANCELING: {
        **STALE_ALL,
        **REFUSE_OPS,
        "canceled": (A, S.CANCELING),
        "deadline": (A, S.CANCELED),
    },
    S.CANCELED: {**STALE_ALL, **REFUSE_OPS, "canceled": (D, None)},
    S.FAILED: {**STALE_ALL, **REFUSE_OPS, "accepted": (D, None), "process_failed": (D, None)},
}


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(ReleaseState)
    for row in EXPECTED.values():
        assert set(row) == set(EVENTS)


@pytest.mark.parametrize("state", list(ReleaseState))
@pytest.mark.parametrize("event_name", list(EVENTS))
def test_every_state_and_event(state: ReleaseState, event_name: str) -> None:
    driver = Driver().to(state)
    before = driver.release
    decision = driver.apply(EVENTS[event_name](driver))
    verdict, after = EXPECTED[state][event_name]
    assert decision.verdict is verdict, decision.reason
    assert decision.reason  # every decision says why
    if verdict is Verdict.APPLIED:
        assert decision.release.revision == before.revision + 1
        assert decision.release.state is (after or state)
    else:
        assert decision.release is before  # nothing changes, not even the revision
        assert decision.messages == ()
