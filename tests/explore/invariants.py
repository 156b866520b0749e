"""The rules the explorer checks, one function each (``docs/design.md``, section 8, names them).

State checks run on every state reached, transition checks on every step taken; each returns why the
rule is broken, or None. ``every_run_can_end`` runs once the whole graph of states is known.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

import semver

from schemas.enums import Action, Outcome, ReleaseState
from tests.explore.machine import Facts
from tests.explore.model import Model
from tests.explore.world import Data, Move, World

StateCheck = Callable[[Model, World], str | None]
TransitionCheck = Callable[[Model, World, Move, World], str | None]

#: Release states that wait on services, so have a deadline.
AWAITING = frozenset(
    {ReleaseState.INITIALIZING, ReleaseState.RUNNING, ReleaseState.PUBLISHING, ReleaseState.CANCELING}
)
_PUBLISHED_SIDE = frozenset({ReleaseState.STAGED, ReleaseState.PUBLISHING, ReleaseState.PUBLISHED})
_HOLDS_DATA = frozenset({Data.PROCESSING, Data.STAGED})


def name(r: int) -> str:
    return f"R{r + 1}"


def _facts(model: Model, w: World, r: int) -> Facts:
    return model.machine.facts[w.releases[r]]


# ---------------------------------------------------------------------- every state


def published_only_when_staged_everywhere(model: Model, w: World) -> str | None:
    """A release is staged, publishing or published, or any service made it public, only when every
    required service holds it staged (or public)."""
    for r, parts in enumerate(w.parts):
        state = _facts(model, w, r).state
        if state in _PUBLISHED_SIDE or any(data is Data.PUBLIC for data, _ in parts):
            behind = [
                f"{model.services[s]} holds {data.words}"
                for s, (data, _) in enumerate(parts)
                if data not in (Data.STAGED, Data.PUBLIC)
            ]
            if behind:
                public = [model.services[s] for s, (data, _) in enumerate(parts) if data is Data.PUBLIC]
                shown = f"made public by {', '.join(public)}" if public else state.value
                return f"{name(r)} is {shown} but not staged everywhere: {'; '.join(behind)}"
    return None


def no_version_twice(model: Model, w: World) -> str | None:
    """No version (tentative or final) belongs to two releases, or twice to one."""
    key = ("no_version_twice", w.releases)
    if key not in model.checked_releases:
        model.checked_releases[key] = _versions_twice(model, w)
    return model.checked_releases[key]


def _versions_twice(model: Model, w: World) -> str | None:
    owners: dict[str, str] = {}
    for r in range(len(w.releases)):
        facts = _facts(model, w, r)
        for kind, version in (("tentative", facts.tentative_version), ("final", facts.final_version)):
            if version is None:
                continue
            mine = f"{kind} version of {name(r)}"
            if version in owners:
                return f"{version} is both the {owners[version]} and the {mine}"
            owners[version] = mine
    return None


def discarded_everywhere(model: Model, w: World) -> str | None:
    """A release canceled, or failed before publication, is discarded by every service holding it:
    each such service has a cancel on its way (in the stored outbox or in flight)."""
    for r in range(len(w.releases)):
        facts = _facts(model, w, r)
        ended = facts.state is ReleaseState.CANCELED or (
            facts.state is ReleaseState.FAILED and facts.final_version is None
        )
        if not ended:
            continue
        for s, (data, _) in enumerate(w.parts[r]):  # none once archived by a re-run
            cancel = (r, s, Action.CANCEL)
            if data in _HOLDS_DATA and cancel not in w.network and cancel not in w.outbox[r]:
                return (
                    f"{name(r)} is {facts.state.value} but {model.services[s]} still holds {data.words} "
                    "and no cancel is on its way to it"
                )
    return None


def deadlines_armed(model: Model, w: World) -> str | None:
    """A release that waits on services has a deadline armed."""
    for r in range(len(w.releases)):
        facts = _facts(model, w, r)
        if facts.state in AWAITING and not facts.armed:
            return f"{name(r)} is {facts.state.value}, waiting on services, with no deadline armed"
    return None


# ---------------------------------------------------------------------- the whole graph


def every_run_can_end(
    model: Model, worlds: list[World], sources: array[int], targets: array[int]
) -> int | None:
    """Progress on every path: from every state reached, some run ends every release. Returns the first
    state (in breadth-first order, so a nearest one) from which none does, or None."""
    facts = model.machine.facts
    count = len(worlds)
    ended = bytearray(count)
    # Reverse edges in compressed rows: predecessors of j are origins[starts[j]:starts[j + 1]].
    starts = array("i", [0]) * (count + 1)
    for target in targets:
        starts[target + 1] += 1
    for j in range(count):
        starts[j + 1] += starts[j]
    origins = array("i", [0]) * len(targets)
    filled = array("i", starts)
    for source, target in zip(sources, targets, strict=True):
        origins[filled[target]] = source
        filled[target] += 1
    frontier = [i for i, w in enumerate(worlds) if all(facts[rid].state.is_terminal for rid in w.releases)]
    for i in frontier:
        ended[i] = 1
    while frontier:
        j = frontier.pop()
        for k in range(starts[j], starts[j + 1]):
            i = origins[k]
            if not ended[i]:
                ended[i] = 1
                frontier.append(i)
    return next((i for i in range(count) if not ended[i]), None)


# ---------------------------------------------------------------------- every step


def ended_releases_never_change(model: Model, before: World, move: Move, after: World) -> str | None:
    """A published, canceled or failed release never changes again."""
    if move.applied:
        state = _facts(model, before, move.release).state
        if state.is_terminal:
            return f"{name(move.release)} had ended ({state.value}) and changed: {move.reason}"
    return None


def publish_respects_hold(model: Model, before: World, move: Move, after: World) -> str | None:
    """An operator's publish of a held release is refused."""
    publish = move.kind == "operator" and move.op == "publish" and move.applied
    if publish and _facts(model, before, move.release).held:
        return f"{name(move.release)} was on hold and the publish was carried out"
    return None


def duplicates_change_nothing(model: Model, before: World, move: Move, after: World) -> str | None:
    """A reply whose answer the release already recorded changes nothing."""
    if move.kind == "receive" and move.applied and move.action is not None:
        _, answers = _facts(model, before, move.release).tasks[move.service]
        if answers.get(move.action) is move.outcome:
            return (
                f"{model.services[move.service]} had already answered {move.action.value}: "
                f"{move.outcome}, and the same answer was applied again ({move.reason})"
            )
    return None


def final_versions_increase(model: Model, before: World, move: Move, after: World) -> str | None:
    """A final version, when assigned, is above every final version assigned before."""
    if move.kind != "operator" or move.op != "publish" or not move.applied:
        return None
    assigned = _facts(model, after, move.release).final_version
    if assigned is None or _facts(model, before, move.release).final_version is not None:
        return None
    for r in range(len(before.releases)):
        earlier = _facts(model, before, r).final_version
        if earlier is not None and semver.Version.parse(earlier) >= semver.Version.parse(assigned):
            return f"{name(move.release)} was given {assigned}, not above {earlier} ({name(r)})"
    return None


def deadline_ends_the_step(model: Model, before: World, move: Move, after: World) -> str | None:
    """When a deadline passes, a release waiting on services leaves its state (canceled or failed)."""
    if move.kind == "deadline":
        state = _facts(model, before, move.release).state
        if state in AWAITING and _facts(model, after, move.release).state is state:
            return f"the deadline of {name(move.release)} passed and it is still {state.value}"
    return None


def services_publish_only_staged_data(model: Model, before: World, move: Move, after: World) -> str | None:
    """A service makes a release public only from data it staged."""
    if move.kind == "command" and move.action is Action.PUBLISH and move.outcome is Outcome.PUBLISHED:
        data, _ = before.parts[move.release][move.service]
        if data not in (Data.STAGED, Data.PUBLIC):
            return (
                f"{model.services[move.service]} was told to publish {name(move.release)} "
                f"while it holds {data.words}"
            )
    return None


STATE_CHECKS: tuple[StateCheck, ...] = (
    published_only_when_staged_everywhere,
    no_version_twice,
    discarded_everywhere,
    deadlines_armed,
)
#: Each transition check, with the kinds of move it looks at.
TRANSITION_CHECKS: tuple[tuple[TransitionCheck, tuple[str, ...]], ...] = (
    (ended_releases_never_change, ("begin", "deadline", "unhealthy", "receive", "operator")),
    (publish_respects_hold, ("operator",)),
    (duplicates_change_nothing, ("receive",)),
    (final_versions_increase, ("operator",)),
    (deadline_ends_the_step, ("deadline",)),
    (services_publish_only_staged_data, ("command",)),
)
