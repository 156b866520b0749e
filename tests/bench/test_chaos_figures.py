"""The recovery figures of ``bench.chaos --broker-fault node-stop`` (pure arithmetic on stored events)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bench.chaos_cluster import (
    NodeStop,
    coordinator_switches,
    delays_to_next_transition,
    node_order,
    recovery_figures,
    transitions_by_release,
)


def event(release: str, kind: str, at: float) -> dict[str, object]:
    return {"release_id": release, "kind": kind, "at": datetime.fromtimestamp(at, UTC)}


EVENTS = [
    event("A", "created", 100),
    event("A", "transition", 101),
    event("A", "accepted", 102),  # not a transition: does not count
    event("A", "transition", 110),
    event("B", "created", 105),
    event("B", "transition", 130),
    event("C", "created", 200),
    event("C", "transition", 201),
]


def test_the_delay_to_the_next_transition_of_each_release_in_flight() -> None:
    transitions = transitions_by_release(EVENTS)
    assert transitions == {"A": [100, 101, 110], "B": [105, 130], "C": [200, 201]}
    assert sorted(delays_to_next_transition(106, transitions)) == [4, 24]  # A and B in flight; C not yet
    assert delays_to_next_transition(150, transitions) == []  # nothing in flight


def test_recovery_is_measured_after_node_stops_and_against_the_quiet_moments() -> None:
    figures = recovery_figures([NodeStop(106, 1, "node_stop_coordinator")], EVENTS, driven=["A", "B", "C"])
    assert figures["node stops"] == 1
    assert figures["releases in flight at a node stop (pairs measured)"] == 2
    assert figures["seconds to the next transition after a node stop, p50"] == 14  # median of 4 and 24
    # Baseline moments are 101..199 s less the 30 s after the stop: in flight then were A (at 101..109)
    # and B (101..129), but 106..135 are excluded.
    assert figures["seconds to the next transition baseline, no node stop, p50"] > 0
    undriven = recovery_figures([NodeStop(106, 1, "x")], EVENTS, driven=["A"])
    assert undriven["releases in flight at a node stop (pairs measured)"] == 1


def test_the_coordinators_switch_time_comes_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "coordinator.log"
    lines = [
        {"event": "active", "timestamp": "2026-01-01T00:00:00Z"},
        {"event": "broker connection lost; reconnecting", "timestamp": "2026-01-01T00:00:10Z"},
        {"event": "broker node", "timestamp": "2026-01-01T00:00:10.2Z"},
        {"event": "active", "timestamp": "2026-01-01T00:00:10.5Z"},
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    assert coordinator_switches(log) == [0.5]
    assert coordinator_switches(tmp_path / "missing.log") == []


def test_processes_are_spread_over_the_nodes() -> None:
    assert [node_order(i)[0] for i in range(4)] == [1, 2, 3, 1]
    assert node_order(1) == [2, 3, 1]
