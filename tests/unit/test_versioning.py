"""The version rules, with the worked examples the README shows."""

from __future__ import annotations

import pytest
import semver
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from coordinator.versioning import highest, next_final, next_tentative, sort_key
from schemas.messages import ReleaseInfo


def test_first_release_is_0_0_1() -> None:
    assert next_tentative(None) == "0.0.1"


def test_worked_examples() -> None:
    # tentative: last *created* release's version with patch + 1, whatever its state
    assert next_tentative("0.0.1") == "0.0.2"
    assert next_tentative("0.1.0") == "0.1.1"  # the last created release was published as 0.1.0
    # final: highest final so far, minor or major bump
    assert next_final(None, is_major=False) == "0.1.0"
    assert next_final("0.1.0", is_major=False) == "0.2.0"
    assert next_final("0.2.0", is_major=True) == "1.0.0"
    assert next_final("1.0.0", is_major=False) == "1.1.0"


def test_sort_key_orders_like_semver() -> None:
    versions = ["0.10.0", "0.9.0", "1.0.0", "0.0.12", "0.0.2"]
    assert sorted(versions, key=sort_key) == sorted(versions, key=semver.Version.parse)
    assert highest(versions) == "1.0.0"
    assert highest([]) is None


@settings(max_examples=300, deadline=None)
@given(script=st.lists(st.tuples(st.sampled_from(["create", "publish"]), st.booleans(), st.integers(0, 50))))
def test_versions_stay_unique_and_final_versions_increase(script: list[tuple[str, bool, int]]) -> None:
    """Simulate a store: releases created and published in any interleaving (several staged at once)."""
    created: list[dict[str, object]] = []
    finals: list[str] = []
    for op, is_major, pick in script:
        if op == "create":
            last = created[-1] if created else None
            version = None if last is None else str(last["final"] or last["tentative"])
            created.append({"tentative": next_tentative(version), "final": None, "is_major": is_major})
        else:
            unpublished = [r for r in created if r["final"] is None]
            if not unpublished:
                continue
            release = unpublished[pick % len(unpublished)]
            release["final"] = next_final(highest(finals), is_major=bool(release["is_major"]))
            finals.append(str(release["final"]))
    tentatives = [str(r["tentative"]) for r in created]
    assert len(set(tentatives)) == len(tentatives)
    assert finals == sorted(finals, key=semver.Version.parse)
    assert len(set(finals)) == len(finals)
    assert set(finals).isdisjoint(tentatives)


def test_a_version_that_is_not_semantic_is_refused_every_time_it_is_read() -> None:
    """Versions are checked once and the answer cached: a bad one must still be refused every time (an
    exception is never cached), and a good one accepted."""
    for _ in range(3):
        with pytest.raises(ValidationError, match="tentative_version"):
            ReleaseInfo(id="RE_AAAAAAAA", name="x", studies=("SD_A",), tentative_version="1.2")
        info = ReleaseInfo(id="RE_AAAAAAAA", name="x", studies=("SD_A",), tentative_version="1.2.3")
        assert info.tentative_version == "1.2.3"
