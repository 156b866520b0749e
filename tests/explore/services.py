"""What a task service does with a command, as ``task_sdk/_runner.py`` does it.

A service records the outcome of each action of a release and answers a repeated command with it; a
``publish`` that failed may also run again (the coordinator's retry of a publication is a new command,
which the SDK runs again after a failure). ``initialize`` is accepted, rejected or fails. ``start`` is
taken on (processing runs; it stages or fails later, see :func:`finish`), is ignored while it runs, and
is answered ``canceled`` without processing once a cancel was received. ``publish`` makes the staged
data public, or fails. ``cancel`` interrupts processing (the start is then recorded ``canceled``,
answered by the cancel's reply) and discards what was prepared. ``test_services_model.py`` sends the
same commands to the real runner (the SDK's in-memory harness) and checks the same answers and data.
"""

from __future__ import annotations

from schemas.enums import Action, Outcome
from tests.explore.world import SLOT, Data, Part

#: What a service did, its answer (None: it answers nothing now), and its part afterwards.
Handling = tuple[str, Outcome | None, Part]


def handle(action: Action, part: Part, failures: bool) -> list[Handling]:
    """Every way the service may handle ``action`` given its part in the release."""
    data, outcomes = part
    stored = outcomes[SLOT[action]]
    replayed: list[Handling] = []
    if stored is not None:
        replayed.append(("replays its recorded answer", stored, part))
        if not (action is Action.PUBLISH and stored is Outcome.FAILED):
            return replayed
    if action is Action.START:
        return [*replayed, _start(part)]
    if action is Action.CANCEL:
        return [_cancel(part)]
    success = Outcome.ACCEPTED if action is Action.INITIALIZE else Outcome.PUBLISHED
    results = replayed
    for outcome in outcomes_of(success, failures):
        held = Data.PUBLIC if outcome is Outcome.PUBLISHED else data
        results.append(("runs it", outcome, (held, record(outcomes, action, outcome))))
    return results


def finish(part: Part, failures: bool) -> list[tuple[Outcome, Part]]:
    """Every way processing may end: staged, or failed (nothing kept)."""
    _, outcomes = part
    return [
        (
            outcome,
            (
                Data.STAGED if outcome is Outcome.STAGED else Data.NONE,
                record(outcomes, Action.START, outcome),
            ),
        )
        for outcome in outcomes_of(Outcome.STAGED, failures)
    ]


def outcomes_of(success: Outcome, failures: bool) -> tuple[Outcome, ...]:
    if not failures:
        return (success,)
    if success is Outcome.ACCEPTED:
        return (Outcome.ACCEPTED, Outcome.REJECTED, Outcome.FAILED)
    return (success, Outcome.FAILED)


def record(
    outcomes: tuple[Outcome | None, ...], action: Action, outcome: Outcome
) -> tuple[Outcome | None, ...]:
    slot = SLOT[action]
    return (*outcomes[:slot], outcome, *outcomes[slot + 1 :])


def _start(part: Part) -> Handling:
    data, outcomes = part
    if data is Data.PROCESSING:
        return "is already processing it", None, part
    if outcomes[SLOT[Action.CANCEL]] is Outcome.CANCELED:
        return (
            "was canceled before",
            Outcome.CANCELED,
            (data, record(outcomes, Action.START, Outcome.CANCELED)),
        )
    return "takes it on", None, (Data.PROCESSING, outcomes)


def _cancel(part: Part) -> Handling:
    data, outcomes = part
    interrupted = data is Data.PROCESSING
    if interrupted:
        outcomes = record(outcomes, Action.START, Outcome.CANCELED)
    discarded = Data.DISCARDED if data in (Data.PROCESSING, Data.STAGED) else data
    op = "interrupts processing and discards" if interrupted else "discards"
    return op, Outcome.CANCELED, (discarded, record(outcomes, Action.CANCEL, Outcome.CANCELED))
