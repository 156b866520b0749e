"""The fake coordinator of the ``rc`` tests refuses with the real coordinator's very words: each refusal is
compared with what the real state machine (``coordinator.machine.decide``) says in the same situation, so
a test of ``rc`` never asserts a text that only the fake says."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coordinator.machine import Cancel, Hold, Input, Publish, Unhold
from schemas.enums import ReleaseState
from schemas.messages import (
    AdminOperation,
    AdminRequest,
    CancelRelease,
    CreateRelease,
    HoldRelease,
    PublishRelease,
    ReleaseResult,
    UnholdRelease,
)
from tests.cli.fake_coordinator import FakeCoordinator, Refusal
from tests.unit.releases import T0, Driver

S = ReleaseState
#: (state, held, the operator's request to the fake, the same request as the state machine's input)
Make = Callable[[str], AdminOperation]
PUBLISH: Make = lambda rid: PublishRelease(release_id=rid)  # noqa: E731
HOLD: Make = lambda rid: HoldRelease(release_id=rid)  # noqa: E731
UNHOLD: Make = lambda rid: UnholdRelease(release_id=rid)  # noqa: E731
CANCEL: Make = lambda rid: CancelRelease(release_id=rid, reason="again")  # noqa: E731
CASES: list[tuple[ReleaseState, bool, Make, Input]] = [
    (S.RUNNING, False, PUBLISH, Publish(T0, "tester", None)),
    (S.STAGED, True, PUBLISH, Publish(T0, "tester", None)),
    (S.RUNNING, False, HOLD, Hold(T0, "tester")),
    (S.STAGED, True, HOLD, Hold(T0, "tester")),
    (S.STAGED, False, UNHOLD, Unhold(T0, "tester")),
    (S.CANCELED, False, CANCEL, Cancel(T0, "tester", "again")),
    (S.PUBLISHED, False, CANCEL, Cancel(T0, "tester", "again")),
    (S.PUBLISHING, False, CANCEL, Cancel(T0, "tester", "again")),
]


async def fake_refusal(state: ReleaseState, held: bool, operation: Make) -> str:
    fake = FakeCoordinator("amqp://unused.invalid/", "rctest-fake")
    created = await fake.handle(request(CreateRelease(name="r", studies=("SD_AAAAAAAA",))))
    assert isinstance(created, ReleaseResult)
    release_id = created.release.id
    await fake.update(release_id, state=state, held=held, announce=False)
    with pytest.raises(Refusal) as refused:
        await fake.handle(request(operation(release_id)))
    return str(refused.value)


def request(operation: AdminOperation) -> AdminRequest:
    return AdminRequest(message_id="m", sent_at=T0, operator="tester", operation=operation)


def real_refusal(state: ReleaseState, held: bool, event: Input) -> str:
    driver = Driver().to(state)
    driver.release = driver.release.model_copy(update={"held": held})
    decision = driver.apply(event)
    assert not decision.applied
    return decision.reason


@pytest.mark.parametrize(("state", "held", "operation", "event"), CASES)
async def test_the_fake_refuses_with_the_real_coordinators_words(
    state: ReleaseState, held: bool, operation: Make, event: Input
) -> None:
    assert await fake_refusal(state, held, operation) == real_refusal(state, held, event)


async def test_an_unknown_release_is_named_as_the_real_coordinator_names_it() -> None:
    fake = FakeCoordinator("amqp://unused.invalid/", "rctest-fake")
    with pytest.raises(Refusal, match=r"^unknown release RE_ZZZZZZZZ$"):  # coordinator/admin.py's words
        await fake.handle(request(PublishRelease(release_id="RE_ZZZZZZZZ")))
