"""The chaos run's plan, fixed by its seed before anything runs (``bench/chaos.py``).

One seed gives one plan: the order of the fault kinds with the pause before each, and which releases the
operator cancels on purpose (the others are published). The plan is drawn from a generator of its own, so
the timing of a run (which depends on the machine) never changes it; the picks made while the run goes on
(which captured reply to duplicate, which service to kill) come from another generator. Two runs with one
seed inject the same kinds, in the same order, after the same pauses, and cancel the same releases.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Faults planned beyond the first round, as a multiple of the kinds (the run stops when its drivers end).
_ROUNDS = 6
#: The share of releases an operator cancels once staged, on purpose.
CANCEL_SHARE = 0.15


@dataclass(frozen=True)
class PlannedFault:
    kind: str
    #: Seconds to wait before injecting it.
    gap: float


@dataclass(frozen=True)
class Plan:
    seed: int
    #: The first round (every kind that must be injected), then more at random.
    faults: tuple[PlannedFault, ...]
    #: Numbers of the releases (0-based, in creation order of the drivers) the operator cancels when staged.
    cancels: frozenset[int]

    def describe(self, shown: int = 12) -> list[str]:
        """A few lines an operator reads at the start of a run (and compares between two runs)."""
        order = ", ".join(f"{f.kind} (+{f.gap:.1f}s)" for f in self.faults[:shown])
        canceled = ", ".join(str(n) for n in sorted(self.cancels)) or "none"
        return [
            f"plan (seed {self.seed}): faults in order: {order}, ... ({len(self.faults)} planned)",
            f"plan (seed {self.seed}): releases canceled on purpose when staged: {canceled}",
        ]


def make_plan(
    seed: int, first: Sequence[str], kinds: Sequence[str], *, releases: int, fault_gap: tuple[float, float]
) -> Plan:
    """The kinds of ``first`` (each must be injected) in a seeded order, then seeded picks among
    ``kinds``; each with a seeded pause; and the releases to cancel."""
    draw = random.Random(f"chaos-plan:{seed}")
    first = list(first)
    draw.shuffle(first)
    later = [draw.choice(list(kinds)) for _ in range(_ROUNDS * len(kinds) + releases)]
    faults = tuple(PlannedFault(kind, round(draw.uniform(*fault_gap), 3)) for kind in [*first, *later])
    # At least one release is canceled on purpose (when there are two); extra releases (driven when a
    # fault kind still needs a target) are numbered from 1000.
    share = max(1, round(CANCEL_SHARE * releases)) if releases >= 2 else 0
    extras = [n for n in range(1000, 1000 + 2 * len(kinds)) if draw.random() < CANCEL_SHARE]
    return Plan(seed, faults, frozenset([*draw.sample(range(releases), share), *extras]))


# ---------------------------------------------------------------------- what the run must show at the end

#: (release id, service) -> effect ("staged", "published", "discarded") -> when the service first did it.
Effects = Mapping[tuple[str, str], Mapping[str, float]]


def kept_data(releases: Mapping[str, Mapping[str, Any]], effects: Effects) -> list[tuple[str, str]]:
    """(release, service) pairs where a service staged data for a release that ended canceled, or failed
    before publication, and did not discard it afterwards. (A release that fails *during* publication is not
    taken back, by design: its services keep what they staged.)"""
    kept = []
    for (release_id, service), done in effects.items():
        release = releases.get(release_id)
        if release is None or "staged" not in done:
            continue
        ended_unpublished = release["state"] == "canceled" or (
            release["state"] == "failed" and "publishing" not in release["entered"]
        )
        if ended_unpublished and done.get("discarded", -1.0) < done["staged"]:
            kept.append((release_id, service))
    return sorted(kept)


def outcome_figures(
    planned: Mapping[str, str], releases: Mapping[str, Mapping[str, Any]]
) -> dict[str, int | str | float]:
    """How the driven releases ended against the plan: published, or canceled on purpose."""
    return {
        "releases planned to be published": sum(1 for s in planned.values() if s == "published"),
        "releases planned to be canceled": sum(1 for s in planned.values() if s == "canceled"),
        "releases ended as planned": len(planned) - len(unplanned_ends(planned, releases)),
    }


def unplanned_ends(planned: Mapping[str, str], releases: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per driven release that did not end as planned: how it ended, and the coordinator's reason
    (a fault may end one legitimately: a service killed during initialization cancels it as unhealthy)."""
    lines = []
    for release_id, meant in sorted(planned.items()):
        release = releases.get(release_id)
        if release is None or release["state"] != meant:
            ended = "lost" if release is None else f"{release['state']}: {release.get('state_reason')}"
            lines.append(f"{release_id} (planned {meant}) ended {ended}")
    return lines
