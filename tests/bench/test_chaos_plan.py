"""The chaos run's plan is fixed by its seed, and its end checks (bench/chaos_plan.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.chaos import FAULTS, Chaos, parse
from bench.chaos_plan import (
    STEPS,
    Plan,
    PlannedFault,
    failed_by_instance_kills,
    faults_off_plan,
    kept_data,
    make_plan,
    misplaced_faults,
    outcome_figures,
    steps_of,
    to_discard,
    unexplained_endings,
    unplanned_ends,
)

GAP = (0.7, 1.5)


def test_one_seed_gives_one_list_of_fault_release_and_step_and_another_seed_another() -> None:
    first = make_plan(7, FAULTS, FAULTS, releases=20, fault_gap=GAP)
    again = make_plan(7, FAULTS, FAULTS, releases=20, fault_gap=GAP)
    assert [f.key for f in again.faults] == [f.key for f in first.faults]
    assert again == first  # the pauses and the cancels too
    assert [f.key for f in make_plan(8, FAULTS, FAULTS, releases=20, fault_gap=GAP).faults] != [
        f.key for f in first.faults
    ]
    assert sorted(f.kind for f in first.faults[: len(FAULTS)]) == sorted(FAULTS)  # every kind in round one
    assert len(first.faults) == 20  # one per release: every release is hit once
    assert sorted(f.release for f in first.faults) == list(range(20))
    assert all(f.step in steps_of(f.kind) for f in first.faults)
    assert {f.step for f in first.faults if f.kind == "spoofed"} == {"processing"}
    assert all(GAP[0] <= f.pause <= GAP[1] for f in first.faults)
    assert len(first.cancels) == 3  # 15 % of the releases
    kind, release, step = first.faults[0].key
    assert first.describe()[0].startswith(
        f"plan (seed 7): 20 faults (kind@release/step): {kind}@{release}/{step}"
    )


def test_with_fewer_releases_than_kinds_every_kind_is_planned_on_releases_spread_evenly() -> None:
    plan = make_plan(7, FAULTS, FAULTS, releases=4, fault_gap=GAP)
    assert sorted(f.kind for f in plan.faults) == sorted(FAULTS)
    hits = Counter(f.release for f in plan.faults)
    assert set(hits) == set(range(4))
    assert max(hits.values()) - min(hits.values()) <= 1
    assert len(plan.cancels) == 1
    steps = [STEPS.index(f.step) for _, f in plan.of(0)]
    assert steps == sorted(steps)  # a release's faults in the order of its steps


def test_a_plan_needs_a_release() -> None:
    with pytest.raises(ValueError, match="at least one release, not 0"):
        make_plan(7, FAULTS, FAULTS, releases=0, fault_gap=GAP)


def test_the_run_takes_its_plan_from_the_seed_alone() -> None:
    argv = ["--releases", "4", "--services", "3", "--seed", "7", "--fault-gap", "0.7", "1.5"]
    one, two = Chaos(parse(argv)), Chaos(parse(argv))
    assert one.hex != two.hex  # two runs (their own names), one plan
    assert one.plan == two.plan
    assert one.plan.keys() == two.plan.keys()
    assert one.plan.faults[0].kind in FAULTS


def test_the_faults_a_run_tried_are_compared_with_its_plan() -> None:
    plan = Plan(
        7, (PlannedFault("duplicate", 0, "staged", 1.0), PlannedFault("stale", 1, "ending", 1.0)), frozenset()
    )
    tried = [
        {"kind": "duplicate", "release": 0, "step": "staged", "applied": True},
        {"kind": "kill_service", "release": 1, "step": "created", "applied": True},
    ]
    assert faults_off_plan(plan, tried) == [
        "planned, never tried: stale@1/ending",
        "tried, not planned: kill_service@1/created",
    ]
    assert faults_off_plan(plan, [*tried[:1], {"kind": "stale", "release": 1, "step": "ending"}]) == []


def released(state: str, *entered: str) -> dict[str, object]:
    return {"state": state, "entered": dict.fromkeys(entered, 0.0)}


def test_staged_data_of_a_canceled_or_failed_release_must_be_discarded_after_it_was_staged() -> None:
    releases = {
        "R1": released("canceled", "running", "staged"),
        "R2": released("failed", "running"),
        "R3": released("failed", "running", "staged", "publishing"),  # failed in publication: kept by design
        "R4": released("published", "running", "staged", "publishing"),
    }
    effects = {
        ("R1", "a"): {"staged": 1.0, "discarded": 2.0},
        ("R1", "b"): {"staged": 1.0},  # never discarded
        ("R2", "a"): {"discarded": 1.0, "staged": 2.0},  # staged after the discard
        ("R2", "b"): {"discarded": 1.0},  # nothing staged
        ("R3", "a"): {"staged": 1.0},
        ("R4", "a"): {"staged": 1.0, "published": 2.0},
    }
    assert kept_data(releases, effects) == [("R1", "b"), ("R2", "a")]
    assert to_discard(releases, effects) == [("R1", "a"), ("R1", "b"), ("R2", "a")]


def test_outcomes_are_counted_against_the_plan() -> None:
    planned = {"R1": "published", "R2": "canceled", "R3": "published", "R4": "published"}
    releases = {"R1": released("published"), "R2": released("canceled"), "R3": released("failed")}
    releases["R3"]["state_reason"] = "portal failed during processing"
    assert unplanned_ends(planned, releases) == [
        "R3 (planned published) ended failed: portal failed during processing",
        "R4 (planned published) ended lost",
    ]
    assert outcome_figures(planned, releases) == {
        "releases planned to be published": 3,
        "releases planned to be canceled": 1,
        "releases ended as planned": 2,
    }


def fault(kind: str, started: float, ended: float, **extra: object) -> dict[str, object]:
    """A record of an applied fault planned for release 0 at processing, seen running."""
    record = {"kind": kind, "release": 0, "step": "processing", "release_id": "R0", "seen": "running"}
    return record | {"applied": True, "started": started, "ended": ended, **extra}


def test_a_fault_must_land_on_its_release_at_or_after_its_step_and_disruptive_ones_take_turns() -> None:
    numbers = {"R0": 0, "R1": 1}
    landed = [
        fault("duplicate", 1.0, 1.1),
        fault("kill_service", 2.0, 3.0, service="s1", step="created", seen="publish answered"),
        fault("broker_outage", 3.5, 4.0, seen="failed"),  # its last attempt: the release had ended
        fault("malformed", 3.6, 3.7),  # a message: it needs no turn
    ]
    assert misplaced_faults(landed, numbers) == []
    elsewhere = fault("stale", 5.0, 5.1, release_id="R1")
    early = fault("oversize", 5.0, 5.1, step="staged")  # seen running: before its step
    overlapping = fault("kill_coordinator", 3.9, 4.5, step="created")
    unknown = fault("spoofed", 5.0, 5.1, seen="somewhere")
    assert misplaced_faults([*landed, elsewhere, early, overlapping, unknown], numbers) == [
        "stale@0/processing on R1 (running): not the plan's release",
        "oversize@0/staged on R0 (running): before its step",
        "spoofed@0/processing on R0 (somewhere): at no step a release has",
        "kill_coordinator began before broker_outage had ended",
    ]
    assert misplaced_faults([fault("kill_service", 1.0, 2.0, applied=False), overlapping], numbers) == []


def ended(state: str, reason: str, at: float | None, planned: str = "published") -> dict[str, object]:
    return {"id": "R9", "number": 0, "planned": planned, "state": state, "reason": reason, "ended": at}


def test_a_release_that_ended_off_plan_needs_a_fault_begun_before_that_could_end_it_so() -> None:
    unhealthy = "unhealthy at initialization: s1 (no consumer on its queue: start it)"
    silent = "no progress during processing for 15 s from: s2, s3 (a running task reports progress)"
    kill_s1 = fault("kill_service", 10.0, 11.0, service="s1")
    assert unexplained_endings([ended("canceled", unhealthy, 12.0)], [kill_s1]) == []
    assert unexplained_endings([ended("failed", silent, 30.0)], [kill_s1 | {"service": "s3"}]) == []
    assert unexplained_endings([ended("canceled", unhealthy, 12.0)], [fault("broker_outage", 5.0, 6.0)]) == []
    assert (
        unexplained_endings([ended("published", "", 12.0), ended("canceled", "", 3.0, "canceled")], []) == []
    )
    cases = [
        ([ended("canceled", unhealthy, 9.0)], [kill_s1]),  # the kill began after the release ended
        ([ended("canceled", unhealthy, 12.0)], [kill_s1 | {"service": "s2"}]),  # another service
        ([ended("canceled", unhealthy.replace("s1", "s10"), 12.0)], [kill_s1]),  # a name that contains it
        ([ended("canceled", unhealthy, 12.0)], [kill_s1 | {"applied": False}]),  # it found nothing to do
        ([ended("canceled", unhealthy, 12.0)], [fault("duplicate", 5.0, 6.0)]),  # a message changes nothing
        ([ended("canceled", unhealthy, 12.0)], [fault("kill_coordinator", 5.0, 6.0)]),  # heartbeats aside
    ]
    for releases, faults in cases:
        assert unexplained_endings(releases, faults) == [
            f"R9 ended canceled: {releases[0]['reason']}, and no fault that could began before"
        ], (releases, faults)
    missed = "unhealthy at initialization: s2 (missed heartbeats (the last 9s ago): is it stuck?)"
    assert unexplained_endings([ended("canceled", missed, 12.0)], [fault("kill_coordinator", 5.0, 6.0)]) == []
    assert unexplained_endings([ended("failed", "portal failed: disk full", 12.0)], [kill_s1]) == [
        "R9 ended failed: portal failed: disk full, not as a fault makes a release end"
    ]
    assert unexplained_endings([ended("waiting", "", None)], [kill_s1]) == [
        "R9 ended waiting: , not as a fault makes a release end"
    ]


def test_several_instances_per_service_have_their_own_process_and_journal() -> None:
    one = Chaos(parse(["--services", "2"]))
    assert one.instances(one.services[0]) == [one.services[0]]
    two = Chaos(parse(["--services", "2", "--instances", "2"]))
    service = two.services[1]
    assert two.instances(service) == [f"{service}#1", f"{service}#2"]
    assert two.plan.keys() == Chaos(parse(["--services", "2", "--seed", str(two.config.seed)])).plan.keys()


def test_instances_must_be_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--instances", "0"])
    assert "--instances must be 1 or more, not 0" in capsys.readouterr().err


def test_a_release_failed_when_only_an_instance_kill_explains_it_is_named() -> None:
    """With several instances per service the work of a killed one moves on: such a failure is a violation
    (``bench/chaos/check.py`` counts these lines when the run has more than one instance per service)."""
    silent = "no progress during processing for 15 s from: s1 (a running task reports progress)"
    kill_s1 = fault("kill_service", 10.0, 11.0, service="s1")
    assert failed_by_instance_kills([ended("failed", silent, 30.0)], [kill_s1]) == [f"R9 failed: {silent}"]
    explained_otherwise = [kill_s1, fault("broker_outage", 12.0, 13.0)]  # every connection went too
    assert failed_by_instance_kills([ended("failed", silent, 30.0)], explained_otherwise) == []
    assert failed_by_instance_kills([ended("failed", silent, 9.0)], [kill_s1]) == []  # killed after it ended
    assert failed_by_instance_kills([ended("failed", silent, 30.0)], [kill_s1 | {"service": "s2"}]) == []
    assert failed_by_instance_kills([ended("canceled", silent, 30.0)], [kill_s1]) == []
