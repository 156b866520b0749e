"""A coordinator whose sessions keep failing (its store is down, say) retries ever more slowly."""

from __future__ import annotations

from coordinator.sweeper import backoff


def test_failed_sessions_back_off_to_thirty_seconds() -> None:
    assert [backoff(n) for n in range(9)] == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
