"""The chaos run's plan, fixed by its seed before anything runs (``bench/chaos/``).

One seed gives one plan: which fault hits which release (its number in the run, 0-based, in the order the
operator's drivers create them) at which step of that release, the pause after each, and which releases the
operator cancels on purpose once staged (the others are published). The run injects a planned fault when its
release reaches its step (``bench/chaos/operator.py``), so the timing of a run (which depends on the machine)
never changes which faults hit which release where. The picks a fault makes when it is injected (which
service to kill, which captured reply to copy) come from a generator of that fault's own, seeded with the
seed and the fault's number in the plan. Two runs with one seed inject the same faults.

The steps, as the operator's driver sees its release:

* ``created``: the create request was just answered (the services are being initialized);
* ``processing``: the release is running (its services are processing);
* ``staged``: every service staged, before the operator publishes or cancels it;
* ``ending``: the operator's publish or cancel was just answered.

A release may pass a step between two looks (a slow answer while the coordinator restarts): its faults of that
step are then injected at the next step seen. A release that ends before a step gets that step's faults when
it ends. Each is recorded with the state its release was in (``bench/chaos/faults.py``).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STEPS = ("created", "processing", "staged", "ending")
#: Faults that send a message (forged or copied): they act on no process and no connection.
MESSAGE_FAULTS = frozenset({"duplicate", "reordered", "stale", "malformed", "oversize", "spoofed"})
#: Kinds that need a reply of their release (or, for ``spoofed``, a service still processing it): not at
#: creation, when there is none yet.
_STEPS_OF = {
    "spoofed": ("processing",),
    "duplicate": ("processing", "staged", "ending"),
    "reordered": ("processing", "staged", "ending"),
    "stale": ("processing", "staged", "ending"),
    "oversize": ("processing", "staged", "ending"),
}
#: The share of releases an operator cancels once staged, on purpose.
CANCEL_SHARE = 0.15


def steps_of(kind: str) -> tuple[str, ...]:
    """The steps at which a fault of ``kind`` may be planned."""
    return _STEPS_OF.get(kind, STEPS)


@dataclass(frozen=True)
class PlannedFault:
    kind: str
    #: The release it hits: its number in the run (0-based, in creation order of the drivers).
    release: int
    #: The step of that release at which it is injected (one of :data:`STEPS`).
    step: str
    #: Seconds the run waits after injecting it before the next disruptive fault may start (a kill, a cut, a
    #: redeclared queue, a node stop; forged or copied messages are sent at once).
    pause: float

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.kind, self.release, self.step)


@dataclass(frozen=True)
class Plan:
    seed: int
    #: Every fault of the run, in the order the plan drew them.
    faults: tuple[PlannedFault, ...]
    #: Numbers of the releases (0-based, in creation order of the drivers) the operator cancels when staged.
    cancels: frozenset[int]

    def of(self, release: int) -> list[tuple[int, PlannedFault]]:
        """The faults (with their number in the plan) that hit release number ``release``, in step order."""
        hits = [(n, f) for n, f in enumerate(self.faults) if f.release == release]
        return sorted(hits, key=lambda hit: (STEPS.index(hit[1].step), hit[0]))

    def keys(self) -> list[tuple[str, int, str]]:
        """(fault, release, step) of every planned fault, sorted: what a run's record is compared with."""
        return sorted(f.key for f in self.faults)

    def describe(self) -> list[str]:
        """The lines an operator reads at the start of a run (and compares between two runs)."""
        hits = ", ".join(f"{f.kind}@{f.release}/{f.step}" for f in self.faults)
        canceled = ", ".join(str(n) for n in sorted(self.cancels)) or "none"
        return [
            f"plan (seed {self.seed}): {len(self.faults)} faults (kind@release/step): {hits}",
            f"plan (seed {self.seed}): releases canceled on purpose when staged: {canceled}",
        ]


def make_plan(
    seed: int, first: Sequence[str], kinds: Sequence[str], *, releases: int, fault_gap: tuple[float, float]
) -> Plan:
    """Every fault of ``first`` (each must be injected), then one fault of a seeded kind among ``kinds`` for
    each release the first ones left untouched; each on a seeded release at a seeded step it may hit, with a
    seeded pause after it; and the releases to cancel."""
    if releases < 1:
        raise ValueError(f"a chaos plan needs at least one release, not {releases}")
    draw = random.Random(f"chaos-plan:{seed}")
    first = list(first)
    draw.shuffle(first)
    order = list(range(releases))
    draw.shuffle(order)
    targets = [order[n % releases] for n in range(len(first))]  # spread over the releases
    untouched = sorted(set(range(releases)) - set(targets))
    hits = [*zip(first, targets, strict=True), *((draw.choice(list(kinds)), n) for n in untouched)]
    faults = tuple(
        PlannedFault(kind, release, draw.choice(steps_of(kind)), round(draw.uniform(*fault_gap), 3))
        for kind, release in hits
    )
    share = max(1, round(CANCEL_SHARE * releases)) if releases >= 2 else 0  # at least one, with two
    return Plan(seed, faults, frozenset(draw.sample(range(releases), share)))


# ---------------------------------------------------------------------- what the run must show at the end

#: (release id, service) -> effect ("staged", "published", "discarded") -> when the service first did it.
Effects = Mapping[tuple[str, str], Mapping[str, float]]


def _ended_unpublished(release: Mapping[str, Any]) -> bool:
    """Canceled, or failed before publication (a release that fails *during* publication is not taken back,
    by design: its services keep what they staged)."""
    return release["state"] == "canceled" or (
        release["state"] == "failed" and "publishing" not in release["entered"]
    )


def to_discard(releases: Mapping[str, Mapping[str, Any]], effects: Effects) -> list[tuple[str, str]]:
    """(release, service) pairs where a service staged data for a release that ended canceled, or failed
    before publication: each must be discarded (what :func:`kept_data` checks)."""
    return sorted(
        (release_id, service)
        for (release_id, service), done in effects.items()
        if "staged" in done and release_id in releases and _ended_unpublished(releases[release_id])
    )


def kept_data(releases: Mapping[str, Mapping[str, Any]], effects: Effects) -> list[tuple[str, str]]:
    """The pairs of :func:`to_discard` whose service did not discard the data after it staged it."""
    return [
        (release_id, service)
        for release_id, service in to_discard(releases, effects)
        if effects[(release_id, service)].get("discarded", -1.0) < effects[(release_id, service)]["staged"]
    ]


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


def faults_off_plan(plan: Plan, injected: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per difference between the plan and the faults the run tried (``injected``: records with
    ``kind``, ``release``, ``step``): a planned fault never tried, or a fault tried that the plan lacks."""
    tried = sorted((str(r["kind"]), int(r["release"]), str(r["step"])) for r in injected)
    missing, extra = list(plan.keys()), []
    for key in tried:
        if key in missing:
            missing.remove(key)
        else:
            extra.append(key)
    return [f"planned, never tried: {k}@{r}/{s}" for k, r, s in missing] + [
        f"tried, not planned: {k}@{r}/{s}" for k, r, s in extra
    ]


#: How a disruptive fault may end a release otherwise than planned, by design: a service killed, or its queue
#: broken, just before the release began (the coordinator cancels it as unhealthy); a service killed, or its
#: queue deleted with the release's command in it, while it processed the release (no progress: it fails).
FAULT_ENDINGS = ("canceled: unhealthy at initialization", "failed: no progress during processing")
#: Faults that act on one service, recorded with it (``service``): an ending they cause names it.
_ON_ONE_SERVICE = frozenset({"kill_service", "redeclare_queue"})
#: The step a release was at when a fault was injected, by the state it was seen in (``seen``): its state
#: when its driver looked, the operator's decision just answered, or its final state at the last attempt.
STEP_SEEN = {
    **dict.fromkeys(("waiting", "initializing", "created"), "created"),
    "running": "processing",
    **dict.fromkeys(("staged", "publishing", "canceling"), "staged"),
    **dict.fromkeys(("publish answered", "cancel answered"), "ending"),
    **dict.fromkeys(("published", "canceled", "failed"), "ended"),
}
_STEPS_SEEN = (*STEPS, "ended")


def disruptive(injected: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The faults that acted on a process or a connection (not a message), in the order they began."""
    acted = [r for r in injected if r["applied"] and r["kind"] not in MESSAGE_FAULTS]
    return sorted(acted, key=lambda record: float(record["started"]))


def misplaced_faults(injected: Sequence[Mapping[str, Any]], numbers: Mapping[str, int]) -> list[str]:
    """One line per fault that did not land where the plan put it: on another release than the plan's
    (``numbers``: each driven release's number), or before the plan's step; and per disruptive fault that
    began before the one before it had ended (they take turns)."""
    lines = []
    for r in injected:
        where = f"{r['kind']}@{r['release']}/{r['step']} on {r['release_id']} ({r['seen']})"
        if numbers.get(str(r["release_id"])) != r["release"]:
            lines.append(f"{where}: not the plan's release")
        seen = STEP_SEEN.get(str(r["seen"]))
        if seen is None:
            lines.append(f"{where}: at no step a release has")
        elif _STEPS_SEEN.index(seen) < STEPS.index(str(r["step"])):
            lines.append(f"{where}: before its step")
    for before, after in itertools.pairwise(disruptive(injected)):
        if float(after["started"]) < float(before["ended"]):
            lines.append(f"{after['kind']} began before {before['kind']} had ended")
    return lines


def unexplained_endings(
    releases: Sequence[Mapping[str, Any]], injected: Sequence[Mapping[str, Any]]
) -> list[str]:
    """One line per driven release (as ``bench/chaos/check.py`` lists them) that ended off plan without a
    disruptive fault to explain it. It must end as such a fault makes one end (:data:`FAULT_ENDINGS`), and
    a fault that can must have begun before it ended: a kill or a broken queue of a service its reason
    names, the coordinator killed when it names missed heartbeats, or a fault on every connection (the
    broker cut, a node stopped). That fault need not be one planned for the release: a kill or a cut hits
    every release in flight."""
    lines = []
    for release in releases:
        if release["state"] == release["planned"]:
            continue
        reason, ended = str(release.get("reason")), release.get("ended")
        ending = f"{release['state']}: {reason}"
        if not ending.startswith(FAULT_ENDINGS) or ended is None:
            lines.append(f"{release['id']} ended {ending}, not as a fault makes a release end")
        elif not any(float(f["started"]) < ended and _may_end(f, reason) for f in disruptive(injected)):
            lines.append(f"{release['id']} ended {ending}, and no fault that could began before")
    return lines


def _may_end(fault: Mapping[str, Any], reason: str) -> bool:
    """Whether ``fault`` can make a release end for ``reason`` (which names the services at fault)."""
    if fault["kind"] in _ON_ONE_SERVICE:
        service = re.escape(str(fault.get("service")))
        return re.search(rf"(?<![\w-]){service}(?![\w-])", reason) is not None
    if fault["kind"] == "kill_coordinator":  # heartbeats go unread while it restarts; nothing else stops
        return "missed heartbeats" in reason
    return True  # the broker cut, a node stopped: every connection goes


def failed_by_instance_kills(
    releases: Sequence[Mapping[str, Any]], injected: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The driven releases that failed when only the kill of a task-service instance can explain it: with
    several instances per service, the coordinator sends the work of a killed instance to another one, so
    such a kill alone must never fail a release."""
    failed = []
    for release in releases:
        reason, ended = str(release.get("reason")), release.get("ended")
        if release["state"] != "failed" or ended is None:
            continue
        causes = {
            f["kind"] for f in disruptive(injected) if float(f["started"]) < ended and _may_end(f, reason)
        }
        if causes == {"kill_service"}:
            failed.append(f"{release['id']} failed: {reason}")
    return failed
