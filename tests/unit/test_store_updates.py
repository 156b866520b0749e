"""The compare-and-set writes only what changed: one task, not the whole release."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.store._mongo_docs import changed_fields

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_only_changed_fields_are_set() -> None:
    before = {"_id": "RE_1", "state": "running", "revision": 3, "name": "n", "outbox": [1], "journal": [2]}
    after = {**before, "revision": 4, "outbox": [], "journal": []}
    assert changed_fields(before, after) == {"revision": 4}


def test_a_mapping_is_set_key_by_key() -> None:
    tasks = {"portal": {"state": "running"}, "search-index": {"state": "running"}}
    before = {"tasks": tasks, "entered": {"waiting": T0}}
    after = {
        "tasks": {**tasks, "portal": {"state": "staged"}},
        "entered": {"waiting": T0, "running": T0},
    }
    assert changed_fields(before, after) == {
        "tasks.portal": {"state": "staged"},
        "entered.running": T0,
    }


def test_a_mapping_that_loses_a_key_or_has_path_like_keys_is_set_whole() -> None:
    before = {"tags": {"a": 1, "b": 2}, "odd": {"x": 1}}
    after = {"tags": {"a": 1}, "odd": {"x": 1, "y.z": 2}}
    assert changed_fields(before, after) == {"tags": {"a": 1}, "odd": {"x": 1, "y.z": 2}}


def test_a_new_field_is_set() -> None:
    assert changed_fields({}, {"final_version": "2.0.0"}) == {"final_version": "2.0.0"}
